/* dlock-example-transfer: transaction coordination over two resources.
 *
 *   dlock-example-transfer [URL] init DIR ACCOUNTS BALANCE
 *   dlock-example-transfer [URL] run DIR COUNT
 *   dlock-example-transfer [URL] stale DIR
 *   dlock-example-transfer [URL] audit DIR
 *
 * A transfer moves money from one account to another: two resources, each
 * guarded by its own lock.  Three things make it safe:
 *
 * 1. Fixed lock order.  Every transfer takes the two account locks in the
 *    same global order (by account number), whichever way the money moves.
 *    Without it, A->B taking A then B while B->A takes B then A can leave
 *    each holding one lock and waiting forever for the other.
 *
 * 2. Both locks held across read, compute and write.  The balances are read
 *    under the locks, so no other transfer can slip in between the read and
 *    the write and have its update overwritten (the sum would drift).
 *
 * 3. Fencing tokens.  A lock is a lease: a process paused (GC, swap, SIGSTOP,
 *    a slow disk) past its ttl wakes up believing it still holds the lock
 *    while the store has handed it to someone else.  Checking
 *    dlock_lock_state() before writing narrows that window but cannot close
 *    it (the pause can fall between the check and the write).  So every write
 *    carries the lock's fencing token and the resource itself refuses a token
 *    smaller than the highest it has accepted.  "stale" shows it: it takes the
 *    locks, pauses past their ttl, lets another client do a transfer, then
 *    tries its now stale write, which the account refuses.
 *
 * What fencing does not give: atomicity across the two resources.  If a lock
 * were lost between the two writes, the first account could take the debit
 * and the second refuse the credit.  This program checks both locks just
 * before writing and reports such a half-done transfer loudly; a real system
 * would keep both balances in one store with a transaction, or log the
 * transfer first and apply it idempotently.
 *
 * The accounts are files in DIR (one per account: balance, highest token
 * accepted, writes refused), updated under flock(2) and replaced with
 * rename(2).  In a real system they would be rows in another service; what
 * matters is that the resource, not the writer, compares the tokens.  Keep
 * one DIR to one lock store: tokens of different stores do not compare.
 *
 * URL defaults to file:///tmp/dlock-examples/locks.  init (which creates DIR
 * if missing) and audit do not use the lock store. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dlock/dlock.h>

#define DEFAULT_URL "file:///tmp/dlock-examples/locks"
#define ACCOUNTS_MAX 100
/* How long a transfer waits for each account lock before giving up.  Long
 * enough for any queue of transfers ahead of it; a deadlock (which the lock
 * order rules out) would show up as this timeout. */
#define LOCK_WAIT_MS 30000
/* The transfer's own work between reading and writing.  It widens the window
 * in which a missing or broken lock would let two transfers interleave, so
 * that the audit would catch it. */
#define WORK_US 2000
/* ttl of the stale writer's locks: short, so that its pause outlasts it. */
#define STALE_TTL_MS 2000

static const char *prog = "dlock-example-transfer";

_Noreturn static void usage(void) {
  fprintf(stderr,
          "usage: %s [URL] init DIR ACCOUNTS BALANCE\n"
          "       %s [URL] run DIR COUNT\n"
          "       %s [URL] stale DIR\n"
          "       %s [URL] audit DIR\n"
          "URL (default %s) names the lock store; DIR holds the accounts.\n",
          prog, prog, prog, prog, DEFAULT_URL);
  exit(2);
}

/* Parse a whole decimal number in [min, max]; anything else is a usage error. */
static long long parse_num(const char *s, long long min, long long max, const char *what) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) {
    fprintf(stderr, "%s: %s must be a number from %lld to %lld, not '%s'\n", prog, what, min,
            max, s);
    usage();
  }
  return v;
}

/* Print a failed dlock call: the code's text and the library's message for
 * this thread (which never contains a secret from the URL). */
static void dlock_fail(const char *what, int rc) {
  fprintf(stderr, "%s: %s: %s: %s\n", prog, what, dlock_strerror(rc), dlock_client_errmsg(NULL));
}

/* ---- the resource: accounts that check fencing tokens ---- */

typedef struct account {
  long long balance;
  uint64_t token;    /* highest fencing token accepted so far */
  long long refused; /* writes refused for carrying a smaller token */
} account;

static void account_path(char *buf, size_t len, const char *dir, int n, const char *suffix) {
  snprintf(buf, len, "%s/acct-%d%s", dir, n, suffix);
}

static int account_read(const char *dir, int n, account *a) {
  char path[PATH_MAX];
  account_path(path, sizeof path, dir, n, "");
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return -1;
  }
  int ok = fscanf(f, "%lld %" SCNu64 " %lld", &a->balance, &a->token, &a->refused) == 3;
  fclose(f);
  if (!ok)
    fprintf(stderr, "%s: %s: not an account file\n", prog, path);
  return ok ? 0 : -1;
}

/* Replace the account file: a new file renamed over the old one, so readers
 * see either the old or the new contents, never a mix. */
static int account_store(const char *dir, int n, const account *a) {
  char path[PATH_MAX], tmp[PATH_MAX];
  account_path(path, sizeof path, dir, n, "");
  account_path(tmp, sizeof tmp, dir, n, ".tmp");
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fprintf(stderr, "%s: %s: %s\n", prog, tmp, strerror(errno));
    return -1;
  }
  fprintf(f, "%lld %" PRIu64 " %lld\n", a->balance, a->token, a->refused);
  if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, tmp, strerror(errno));
    fclose(f);
    return -1;
  }
  fclose(f);
  if (rename(tmp, path) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return -1;
  }
  return 0;
}

/* The resource's own serialisation: flock on a companion file, local to this
 * machine, held only for the compare-and-replace.  It is not the distributed
 * lock and does not replace it: it only makes "compare the token, then
 * write" one step, as a row lock would in a database. */
static int account_guard(const char *dir, int n) {
  char path[PATH_MAX];
  account_path(path, sizeof path, dir, n, ".flock");
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || flock(fd, LOCK_EX) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* Write BALANCE with fencing TOKEN.  1 = accepted, 0 = refused (a newer
 * holder has written), -1 = I/O error. */
static int account_write(const char *dir, int n, long long balance, uint64_t token) {
  int fd = account_guard(dir, n);
  if (fd < 0)
    return -1;
  account a;
  int rc = account_read(dir, n, &a);
  if (rc == 0) {
    if (token < a.token) {
      /* A writer with a newer lock has been here: this one's lock expired
       * and its view of the balance is out of date.  Count the refusal so
       * the audit can show it. */
      a.refused++;
      rc = account_store(dir, n, &a) == 0 ? 0 : -1;
    } else {
      a.balance = balance;
      a.token = token;
      rc = account_store(dir, n, &a) == 0 ? 1 : -1;
    }
  }
  close(fd);
  return rc;
}

static int accounts_count(const char *dir) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/accounts", dir);
  FILE *f = fopen(path, "r");
  int n = 0;
  if (!f || fscanf(f, "%d", &n) != 1 || n < 2 || n > ACCOUNTS_MAX) {
    fprintf(stderr, "%s: %s: %s (run init first)\n", prog, path,
            f ? "not an accounts file" : strerror(errno));
    n = -1;
  }
  if (f)
    fclose(f);
  return n;
}

/* ---- the lock side ---- */

/* on_lost runs on the library's renew thread and must not block: it only
 * notes the loss.  The writing code looks at dlock_lock_state() itself. */
static atomic_int losses;

static void on_lost(const char *key, uint64_t token, void *arg) {
  (void)key;
  (void)token;
  (void)arg;
  atomic_fetch_add(&losses, 1);
}

/* The lock key names the resource it guards: "account:" + the account file's
 * absolute path, so that two copies of the bank in different directories
 * never share locks. */
static int account_key(char *buf, size_t len, const char *dir, int n) {
  char real[PATH_MAX];
  if (!realpath(dir, real)) {
    fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
    return -1;
  }
  int w = snprintf(buf, len, "account:%s/acct-%d", real, n);
  if (w < 0 || (size_t)w >= len || w > DLOCK_KEY_MAX) {
    fprintf(stderr, "%s: %s: path too long for a lock key\n", prog, real);
    return -1;
  }
  return 0;
}

static int open_store(const char *url, dlock_client **out) {
  char shown[1024];
  dlock_url_redact(url, shown, sizeof shown); /* never print a password */
  int rc = dlock_open(url, out);
  if (rc < 0) {
    fprintf(stderr, "%s: cannot open %s: %s: %s\n", prog, shown, dlock_strerror(rc),
            dlock_client_errmsg(NULL));
    if (rc == DLOCK_EINVAL)
      exit(2); /* a bad URL is a usage error */
    return -1;
  }
  /* The pattern needs tokens that grow, and locks seen by other processes:
   * refuse a store without them rather than run unsafely. */
  unsigned need = DLOCK_CAP_FENCING | DLOCK_CAP_CROSS_PROCESS;
  if ((dlock_client_caps(*out) & need) != need) {
    fprintf(stderr, "%s: %s has no fencing tokens or no locks across processes\n", prog, shown);
    dlock_close(*out);
    return -1;
  }
  return 0;
}

/* Release, reporting anything but a clean release.  DLOCK_ELOST means the
 * lock had expired under us: the handle is freed anyway. */
static int release(dlock_lock *l, const char *key) {
  int rc = dlock_release(l);
  if (rc == DLOCK_ELOST)
    fprintf(stderr, "%s: %s had been lost before its release\n", prog, key);
  else if (rc < 0)
    dlock_fail("release", rc);
  return rc;
}

typedef struct pair {
  int first, second; /* account numbers, first < second: the lock order */
  char key[2][DLOCK_KEY_MAX + 64];
  dlock_lock *lock[2];
} pair;

/* Lock both accounts, always the lower-numbered first. */
static int lock_pair(dlock_client *c, const char *dir, int a, int b, const dlock_options *o,
                     pair *p) {
  p->first = a < b ? a : b;
  p->second = a < b ? b : a;
  p->lock[0] = p->lock[1] = NULL;
  if (account_key(p->key[0], sizeof p->key[0], dir, p->first) < 0 ||
      account_key(p->key[1], sizeof p->key[1], dir, p->second) < 0)
    return -1;
  for (int i = 0; i < 2; i++) {
    int rc = dlock_acquire(c, p->key[i], o, &p->lock[i]);
    if (rc < 0) {
      dlock_fail(p->key[i], rc);
      if (i == 1)
        release(p->lock[0], p->key[0]);
      p->lock[0] = NULL;
      return -1;
    }
  }
  return 0;
}

/* Release in the reverse order (any order is safe; this one is the habit). */
static int unlock_pair(pair *p) {
  int rc = 0;
  for (int i = 1; i >= 0; i--) {
    if (p->lock[i] && release(p->lock[i], p->key[i]) < 0)
      rc = -1;
    p->lock[i] = NULL;
  }
  return rc;
}

static uint64_t token_of(const pair *p, int account_no) {
  return dlock_lock_token(p->lock[account_no == p->first ? 0 : 1]);
}

/* One transfer of AMOUNT from account FROM to account TO under the locks.
 * 1 = done, 0 = skipped (not enough money), -1 = failed. */
static int transfer(dlock_client *c, const char *dir, int from, int to, long long amount) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = LOCK_WAIT_MS;
  o.on_lost = on_lost;
  pair p;
  if (lock_pair(c, dir, from, to, &o, &p) < 0)
    return -1;
  int result = -1;
  account af, at;
  if (account_read(dir, from, &af) < 0 || account_read(dir, to, &at) < 0)
    goto out;
  if (af.balance < amount) {
    result = 0;
    goto out;
  }
  usleep(WORK_US);
  /* Last look before writing: a lock lost while we worked means another
   * transfer may already have changed these balances. */
  if (dlock_lock_state(p.lock[0]) != DLOCK_HELD || dlock_lock_state(p.lock[1]) != DLOCK_HELD) {
    fprintf(stderr, "%s: lost a lock before writing; transfer %d->%d abandoned\n", prog, from,
            to);
    goto out;
  }
  /* Write in the lock order, each with the token of its own account's lock
   * (tokens are per key, so each resource compares tokens of its own key). */
  int n[2] = {p.first, p.second};
  long long v[2];
  v[0] = n[0] == from ? af.balance - amount : at.balance + amount;
  v[1] = n[1] == from ? af.balance - amount : at.balance + amount;
  for (int i = 0; i < 2; i++) {
    int w = account_write(dir, n[i], v[i], token_of(&p, n[i]));
    if (w == 1)
      continue;
    if (w == 0 && i == 0)
      fprintf(stderr, "%s: acct-%d refused token %" PRIu64 "; transfer abandoned, nothing written\n",
              prog, n[0], token_of(&p, n[0]));
    else if (w == 0)
      fprintf(stderr, "%s: HALF-DONE TRANSFER: acct-%d was written but acct-%d refused token %" PRIu64
              "; the accounts need repair\n", prog, n[0], n[1], token_of(&p, n[1]));
    goto out;
  }
  result = 1;
out:
  if (unlock_pair(&p) < 0 && result == 1)
    result = -1; /* written, but the lock had been lost: say so in the exit status */
  return result;
}

/* ---- commands ---- */

static int cmd_init(const char *dir, int count, long long balance) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
    return 1;
  }
  for (int i = 0; i < count; i++) {
    account a = {balance, 0, 0};
    if (account_store(dir, i, &a) < 0)
      return 1;
  }
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/accounts", dir);
  FILE *f = fopen(path, "w");
  if (!f || fprintf(f, "%d\n", count) < 0 || fclose(f) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return 1;
  }
  printf("%d accounts of %lld in %s\n", count, balance, dir);
  return 0;
}

static int cmd_run(const char *url, const char *dir, long long count) {
  int accounts = accounts_count(dir);
  if (accounts < 0)
    return 1;
  dlock_client *c;
  if (open_store(url, &c) < 0)
    return 1;
  unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
  long long done = 0, skipped = 0, failed = 0;
  for (long long i = 0; i < count; i++) {
    /* Random pairs in random directions: half the time the money flows
     * against the lock order, which is what would deadlock without it. */
    int from = rand_r(&seed) % accounts;
    int to = rand_r(&seed) % (accounts - 1);
    if (to >= from)
      to++;
    int r = transfer(c, dir, from, to, 1 + rand_r(&seed) % 50);
    if (r == 1)
      done++;
    else if (r == 0)
      skipped++;
    else
      failed++;
  }
  dlock_close(c);
  printf("transfers done %lld skipped %lld failed %lld lost %d\n", done, skipped, failed,
         atomic_load(&losses));
  return failed ? 1 : 0;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* The stale writer.  Exit 0 when its write was refused (fencing worked),
 * 1 when it was accepted or something failed. */
static int cmd_stale(const char *url, const char *dir) {
  if (accounts_count(dir) < 0)
    return 1;
  dlock_client *c;
  if (open_store(url, &c) < 0)
    return 1;
  int rc = 1;
  /* No auto-renew and a short ttl: this writer is about to stall, and a
   * stalled process renews nothing. */
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = LOCK_WAIT_MS;
  o.ttl_ms = STALE_TTL_MS;
  o.auto_renew = 0;
  o.on_lost = on_lost;
  pair p;
  if (lock_pair(c, dir, 0, 1, &o, &p) < 0)
    goto out;
  account a0;
  if (account_read(dir, 0, &a0) < 0) {
    unlock_pair(&p);
    goto out;
  }
  uint64_t token = dlock_lock_token(p.lock[0]);
  printf("stale writer: holds acct-0 (token %" PRIu64 ") and acct-1, read acct-0 = %lld, "
         "plans to write %lld\n", token, a0.balance, a0.balance - 1);

  if (dlock_client_caps(c) & DLOCK_CAP_SERVER_TTL) {
    /* The pause: longer than what is left of the locks' validity. */
    int64_t left = dlock_lock_remaining_ms(p.lock[0]);
    int64_t left1 = dlock_lock_remaining_ms(p.lock[1]);
    if (left1 > left)
      left = left1;
    printf("stale writer: pausing %lld ms, past the locks' ttl\n", (long long)left + 500);
    sleep_ms(left + 500);
    if (dlock_lock_state(p.lock[0]) != DLOCK_LOST || dlock_lock_state(p.lock[1]) != DLOCK_LOST) {
      fprintf(stderr, "%s: the locks outlived their ttl\n", prog);
      unlock_pair(&p);
      goto out;
    }
    printf("stale writer: dlock_lock_state says LOST (on_lost ran %d times)\n",
           atomic_load(&losses));
  } else {
    /* This store never expires a lock (file:// locks last as long as the
     * process): a pause cannot lose them, so let go here to stand in for the
     * expiry, and keep the token as a stalled process would. */
    printf("stale writer: this store does not expire locks; releasing them to stand in for an "
           "expiry\n");
    if (unlock_pair(&p) < 0)
      goto out;
  }

  /* Meanwhile another node (a second client: its own connections, its own
   * session) takes the locks, with newer tokens, and moves money. */
  dlock_client *other;
  if (open_store(url, &other) < 0) {
    unlock_pair(&p);
    goto out;
  }
  int r = transfer(other, dir, 1, 0, 1);
  if (r == 0) /* acct-1 was empty: move it the other way */
    r = transfer(other, dir, 0, 1, 1);
  dlock_close(other);
  if (r != 1) {
    fprintf(stderr, "%s: the other node's transfer did not happen\n", prog);
    unlock_pair(&p);
    goto out;
  }
  printf("stale writer: another client moved 1 between acct-0 and acct-1 meanwhile\n");

  /* A careful writer checks dlock_lock_state() here and stops; but the pause
   * could as well have come just after that check.  Write anyway, as such a
   * writer would, and let the resource decide. */
  int w = account_write(dir, 0, a0.balance - 1, token);
  if (w == 0) {
    printf("stale writer: acct-0 refused the stale token %" PRIu64 ": write rejected, nothing "
           "changed\n", token);
    rc = 0;
  } else if (w == 1) {
    fprintf(stderr, "%s: acct-0 ACCEPTED the stale token %" PRIu64 "\n", prog, token);
  }
  /* The releases report DLOCK_ELOST, as expected after the pause. */
  for (int i = 1; i >= 0; i--)
    if (p.lock[i] && dlock_release(p.lock[i]) != DLOCK_ELOST)
      fprintf(stderr, "%s: releasing the expired %s did not say lost\n", prog, p.key[i]);
out:
  dlock_close(c);
  return rc;
}

static int cmd_audit(const char *dir) {
  int n = accounts_count(dir);
  if (n < 0)
    return 1;
  long long total = 0, refused = 0;
  for (int i = 0; i < n; i++) {
    account a;
    if (account_read(dir, i, &a) < 0)
      return 1;
    printf("acct-%d balance %lld token %" PRIu64 " refused %lld\n", i, a.balance, a.token,
           a.refused);
    total += a.balance;
    refused += a.refused;
  }
  printf("total %lld refused %lld\n", total, refused);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with stderr's, even in a file */
  int i = 1;
  const char *url = DEFAULT_URL;
  /* The URL is optional: an argument with "://" in it is one. */
  if (i < argc && strstr(argv[i], "://"))
    url = argv[i++];
  if (argc - i < 2)
    usage();
  const char *cmd = argv[i], *dir = argv[i + 1];
  int rest = argc - i - 2;
  char **arg = argv + i + 2;
  if (!strcmp(cmd, "init") && rest == 2)
    return cmd_init(dir, (int)parse_num(arg[0], 2, ACCOUNTS_MAX, "ACCOUNTS"),
                    parse_num(arg[1], 0, 1000000000, "BALANCE"));
  if (!strcmp(cmd, "run") && rest == 1)
    return cmd_run(url, dir, parse_num(arg[0], 0, 1000000, "COUNT"));
  if (!strcmp(cmd, "stale") && rest == 0)
    return cmd_stale(url, dir);
  if (!strcmp(cmd, "audit") && rest == 0)
    return cmd_audit(dir);
  usage();
}
