/* dlock-example-cache: cache-stampede protection.
 *
 *   dlock-example-cache [URL] [--wait-ms MS] [--compute-ms MS] [--max-age-ms MS] DIR KEY
 *   dlock-example-cache --invalidate DIR KEY
 *
 * When a popular cache entry expires, every reader that notices at the same
 * moment would recompute it: the expensive query runs M times at once, right
 * when the system is busiest (a "stampede").  With one lock per cache entry,
 * the first reader to take it recomputes; the others wait a short, bounded
 * time (wait_ms) for the new value and, if it is not ready by then, serve the
 * stale one.  Nobody waits long, the slow computation runs once.
 *
 * The pieces, in the order a reader meets them:
 * - A fresh entry is served without touching the lock store at all: the lock
 *   costs something only when the entry has expired.
 * - An expired entry: dlock_acquire(wait_ms).  Whoever gets the lock looks at
 *   the entry again (double-checked), because the lock may have come free
 *   only because someone else just finished the recompute; only if it is
 *   still expired does it recompute.
 * - DLOCK_ETIMEDOUT: the bound ran out while someone else recomputes: serve
 *   the stale value.  A store that cannot be reached is treated the same way:
 *   a cache should degrade to stale data, not to an error.
 * - The write of the new value carries the lock's fencing token and the entry
 *   keeps the token of its writer: a recompute whose lock expired mid-way
 *   (a long pause) cannot overwrite a newer value written under a later lock.
 *
 * The cache is a file per entry in DIR (KEY.entry: expiry time, writer's
 * token, value), replaced with rename(2) under flock(2).  The value is a
 * generation number, one more at each recompute; each recompute also appends
 * a line to KEY.recomputes, so a run can count them.  --invalidate marks the
 * entry expired and keeps its value, as a write to the source data would.
 * Keep one DIR to one lock store: tokens of different stores do not compare.
 *
 * Each read prints one line: the value, where it came from (fresh,
 * recomputed, waited: another reader's new value after a wait, stale) and how
 * long this reader waited.
 *
 * URL defaults to file:///tmp/dlock-examples/locks; DIR is created if missing. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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
/* A reader that finds no value at all has nothing stale to fall back on, so
 * it waits for the first computation, up to this long. */
#define COLD_WAIT_MS 60000
#define KEY_NAME_MAX 100

static const char *prog = "dlock-example-cache";

_Noreturn static void usage(void) {
  fprintf(stderr,
          "usage: %s [URL] [--wait-ms MS] [--compute-ms MS] [--max-age-ms MS] DIR KEY\n"
          "       %s --invalidate DIR KEY\n"
          "URL (default %s) names the lock store; DIR holds the cache; KEY is 1-%d\n"
          "characters of A-Z a-z 0-9 . _ -.  --wait-ms (default 500) bounds the wait for\n"
          "another reader's recompute, --compute-ms (default 2000) is the recompute's\n"
          "duration, --max-age-ms (default 60000) how long a new value stays fresh.\n",
          prog, prog, DEFAULT_URL, KEY_NAME_MAX);
  exit(2);
}

static long long parse_ms(const char *s, long long max, const char *what) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > max) {
    fprintf(stderr, "%s: %s must be a number of ms from 0 to %lld, not '%s'\n", prog, what, max,
            s);
    usage();
  }
  return v;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Expiry times are wall-clock: they are shared by processes (and, with a
 * shared directory, machines) that have no common monotonic clock. */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- the cache: one file per entry ---- */

typedef struct entry {
  int64_t expires_ms; /* wall clock; 0 = invalidated */
  uint64_t token;     /* fencing token of the recompute that wrote it */
  long long value;    /* the generation number */
} entry;

static const char *dir, *name;

static void path_of(char *buf, size_t len, const char *suffix) {
  snprintf(buf, len, "%s/%s%s", dir, name, suffix);
}

/* 1 = read, 0 = no entry yet, -1 = error. */
static int entry_read(entry *e) {
  char path[PATH_MAX];
  path_of(path, sizeof path, ".entry");
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno == ENOENT)
      return 0;
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return -1;
  }
  int ok = fscanf(f, "%" SCNd64 " %" SCNu64 " %lld", &e->expires_ms, &e->token, &e->value) == 3;
  fclose(f);
  if (!ok)
    fprintf(stderr, "%s: %s: not a cache entry\n", prog, path);
  return ok ? 1 : -1;
}

/* Serialise writers of this entry on this machine for one compare-and-
 * replace; the distributed lock is what decides who recomputes. */
static int entry_guard(void) {
  char path[PATH_MAX];
  path_of(path, sizeof path, ".flock");
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || flock(fd, LOCK_EX) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static int entry_store(const entry *e) {
  char path[PATH_MAX], tmp[PATH_MAX];
  path_of(path, sizeof path, ".entry");
  path_of(tmp, sizeof tmp, ".tmp");
  FILE *f = fopen(tmp, "w");
  if (!f || fprintf(f, "%" PRId64 " %" PRIu64 " %lld\n", e->expires_ms, e->token, e->value) < 0 ||
      fclose(f) != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Write a recomputed value, unless a recompute with a newer token already
 * has.  1 = written, 0 = refused, -1 = error. */
static int entry_write(const entry *e) {
  int fd = entry_guard();
  if (fd < 0)
    return -1;
  entry cur;
  int rc = entry_read(&cur);
  if (rc >= 0)
    rc = rc == 1 && cur.token > e->token ? 0 : entry_store(e) == 0 ? 1 : -1;
  close(fd);
  return rc;
}

static int cmd_invalidate(void) {
  int fd = entry_guard();
  if (fd < 0)
    return 1;
  entry e;
  int rc = entry_read(&e);
  if (rc == 0)
    fprintf(stderr, "%s: %s/%s has no entry to invalidate\n", prog, dir, name);
  if (rc == 1) {
    e.expires_ms = 0;
    rc = entry_store(&e) == 0 ? 2 : -1;
  }
  close(fd);
  if (rc == 2)
    printf("invalidated %s (value %lld kept for stale reads)\n", name, e.value);
  return rc == 2 ? 0 : 1;
}

/* ---- the recompute ---- */

static atomic_int lost;

/* Runs on the library's renew thread: just note it. */
static void on_lost(const char *key, uint64_t token, void *arg) {
  (void)key;
  (void)token;
  (void)arg;
  atomic_store(&lost, 1);
}

/* The slow computation, under the lock.  PREV is the value it replaces. */
static long long recompute(dlock_lock *l, const entry *prev, int have, long long compute_ms,
                           long long max_age_ms) {
  entry e;
  e.value = have ? prev->value + 1 : 1;
  e.token = dlock_lock_token(l);
  sleep_ms(compute_ms); /* the deliberately slow part */
  /* Count the recompute (O_APPEND: lines from several writers never mix). */
  char path[PATH_MAX], line[128];
  path_of(path, sizeof path, ".recomputes");
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int n = snprintf(line, sizeof line, "value %lld token %" PRIu64 " pid %ld\n", e.value, e.token,
                   (long)getpid());
  if (fd < 0 || write(fd, line, (size_t)n) != n)
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
  if (fd >= 0)
    close(fd);
  /* A lock lost during the computation means another reader may be
   * recomputing under a newer token; the fenced write below keeps the newer
   * value whichever lands last.  Our value is still a correct one to serve. */
  if (dlock_lock_state(l) != DLOCK_HELD || atomic_load(&lost))
    fprintf(stderr, "%s: lost the lock while recomputing; writing fenced by token %" PRIu64 "\n",
            prog, e.token);
  e.expires_ms = wall_ms() + max_age_ms;
  int w = entry_write(&e);
  if (w == 0)
    fprintf(stderr, "%s: a newer recompute had written; kept its value\n", prog);
  return e.value;
}

static int serve(long long value, const char *source, int64_t waited, long long bound) {
  printf("value %lld source %s waited_ms %lld bound_ms %lld\n", value, source, (long long)waited,
         bound);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with stderr's, even in a file */
  long long wait_ms = 500, compute_ms = 2000, max_age_ms = 60000;
  int invalidate = 0;
  static const struct option longopts[] = {
      {"wait-ms", required_argument, NULL, 'w'},
      {"compute-ms", required_argument, NULL, 'c'},
      {"max-age-ms", required_argument, NULL, 'm'},
      {"invalidate", no_argument, NULL, 'i'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (opt) {
    case 'w': wait_ms = parse_ms(optarg, 3600000, "--wait-ms"); break;
    case 'c': compute_ms = parse_ms(optarg, 3600000, "--compute-ms"); break;
    case 'm': max_age_ms = parse_ms(optarg, 86400000LL * 365, "--max-age-ms"); break;
    case 'i': invalidate = 1; break;
    default: usage();
    }
  }
  const char *url = DEFAULT_URL;
  /* The URL is optional: an argument with "://" in it is one. */
  if (optind < argc && strstr(argv[optind], "://"))
    url = argv[optind++];
  if (argc - optind != 2)
    usage();
  dir = argv[optind];
  name = argv[optind + 1];
  size_t len = strlen(name);
  if (len == 0 || len > KEY_NAME_MAX || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
                                                     "opqrstuvwxyz0123456789._-") != len ||
      name[0] == '.') {
    fprintf(stderr, "%s: bad KEY '%s'\n", prog, name);
    usage();
  }
  if (invalidate)
    return cmd_invalidate();
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
    return 1;
  }

  /* Open the client first, as a long-running service keeps one open: a bad
   * URL is then a usage error whatever state the entry is in.  Opening takes
   * no lock. */
  char shown[1024];
  dlock_url_redact(url, shown, sizeof shown); /* never print a password */
  dlock_client *c = NULL;
  int rc = dlock_open(url, &c);
  if (rc < 0) {
    fprintf(stderr, "%s: cannot open %s: %s: %s\n", prog, shown, dlock_strerror(rc),
            dlock_client_errmsg(NULL));
    if (rc == DLOCK_EINVAL)
      return 2;
    c = NULL; /* unreachable for now: fresh and stale values can still be served */
  } else if ((dlock_client_caps(c) & (DLOCK_CAP_FENCING | DLOCK_CAP_CROSS_PROCESS)) !=
             (DLOCK_CAP_FENCING | DLOCK_CAP_CROSS_PROCESS)) {
    /* Refuse a store that cannot do what the pattern relies on. */
    fprintf(stderr, "%s: %s has no fencing tokens or no locks across processes\n", prog, shown);
    dlock_close(c);
    return 1;
  }

  entry e;
  int have = entry_read(&e);
  if (have < 0 || (have && wall_ms() < e.expires_ms)) {
    dlock_close(c);
    /* The common case, a fresh entry: served without any lock. */
    return have < 0 ? 1 : serve(e.value, "fresh", 0, wait_ms);
  }

  /* Expired (or missing).  Everything below is the stampede's path. */
  int64_t t0 = mono_ms();
  long long bound = have ? wait_ms : COLD_WAIT_MS;
  if (!c) /* no lock store: degrade to the stale value, do not fail */
    return have ? serve(e.value, "stale", 0, bound) : 1;
  /* One lock per cache entry, named after it, so that different entries
   * are recomputed in parallel. */
  char real[PATH_MAX], key[DLOCK_KEY_MAX + 1];
  if (!realpath(dir, real)) {
    fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
    dlock_close(c);
    return 1;
  }
  int kl = snprintf(key, sizeof key, "cache:%s/%s", real, name);
  if (kl < 0 || (size_t)kl >= sizeof key) {
    fprintf(stderr, "%s: %s: path too long for a lock key\n", prog, real);
    dlock_close(c);
    return 1;
  }
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = bound;
  o.on_lost = on_lost;
  dlock_lock *l;
  rc = dlock_acquire(c, key, &o, &l);
  int64_t waited = mono_ms() - t0;
  int status = 0;
  if (rc < 0) {
    if (rc != DLOCK_ETIMEDOUT || !have)
      fprintf(stderr, "%s: %s: %s: %s\n", prog, key, dlock_strerror(rc), dlock_client_errmsg(c));
    /* The bound ran out (or the store failed): serve what there is.  It may
     * have become fresh meanwhile; look once more. */
    entry now;
    int h = entry_read(&now);
    if (h == 1)
      status = serve(now.value, wall_ms() < now.expires_ms ? "waited" : "stale", waited, bound);
    else
      status = 1; /* nothing to serve, and the error is printed */
  } else {
    /* Holding the lock.  Look again: the lock may have been free only because
     * the reader before us has just written a fresh value. */
    entry now;
    int h = entry_read(&now);
    if (h == 1 && wall_ms() < now.expires_ms) {
      status = serve(now.value, "waited", waited, bound);
    } else if (h >= 0) {
      long long v = recompute(l, &now, h, compute_ms, max_age_ms);
      status = serve(v, "recomputed", waited, bound);
    } else {
      status = 1;
    }
    rc = dlock_release(l);
    if (rc < 0) {
      /* ELOST: our lock expired before we let go; the value is still good,
       * the message tells the operator the ttl is too short for the job. */
      fprintf(stderr, "%s: release: %s: %s\n", prog, dlock_strerror(rc), dlock_client_errmsg(c));
    }
  }
  dlock_close(c);
  return status;
}
