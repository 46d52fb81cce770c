/* dlock-example-cron: a periodic job that runs once per period, cluster-wide.
 *
 *   dlock-example-cron [URL] [--periods K] [--start UNIX_S] [--work-ms MS]
 *                      [--dir DIR] JOB PERIOD_S
 *
 * Start it on every node (as many as you like, as often as you like): each
 * period of PERIOD_S seconds, the job's work runs on exactly one of them.
 *
 * Time is cut into slots: slot S is the period starting at S * PERIOD_S on
 * the wall clock, the same on every node (keep the clocks in sync, e.g. with
 * NTP).  At the start of each slot every node tries (without waiting) the
 * lock "cron/JOB/S".  One wins and runs the work; the others see DLOCK_EBUSY
 * and sit the slot out.
 *
 * Why a key per slot rather than one per job: a node that starts late, or
 * whose clock is a little behind, still asks for the right slot; and the
 * lock's fencing token then identifies one run of one slot.
 *
 * Why the winner holds the lock to the end of the slot, although its work
 * took a fraction of it: released early, the key would be free again, and a
 * node arriving late in the same slot would win it and run the slot a second
 * time.  Held to the end, every node of the slot meets a taken lock; after
 * the end nobody asks for that slot any more.  A node that wakes up more than
 * half a period late skips the slot instead (the clocks may disagree by that
 * much at most).
 *
 * The work here is simulated (--work-ms) and its result is recorded in a run
 * ledger, DIR/JOB.runs, one line per run: slot, fencing token, pid.  The
 * ledger is the job's resource and is fenced: it refuses a record for a slot
 * that already has one with a larger token, i.e. from a node whose lock had
 * expired (a long pause) and been taken by another.  It is written under
 * flock(2), so lines from several nodes on one machine never mix.
 *
 * The cost of a key per slot: whatever a store keeps of a key after its
 * release (docs/backends.md says, per store, what and for how long) is kept
 * for every slot.  For very short periods, one key per job, with the ledger
 * naming the last slot run (read and written under the lock), keeps that to
 * one key.
 *
 * --periods K runs K slots and exits (0 = forever); --start UNIX_S starts at
 * the first slot beginning at or after that time (default: now), so that
 * nodes started a moment apart still cover the same slots.
 *
 * URL defaults to file:///tmp/dlock-examples/locks, DIR to /tmp/dlock-examples
 * (created if missing). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h> /* isfinite */
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
#define DEFAULT_DIR "/tmp/dlock-examples"
#define JOB_MAX 100

static const char *prog = "dlock-example-cron";

_Noreturn static void usage(void) {
  fprintf(stderr,
          "usage: %s [URL] [--periods K] [--start UNIX_S] [--work-ms MS] [--dir DIR]\n"
          "       %*s JOB PERIOD_S\n"
          "Runs JOB's work once per PERIOD_S seconds (0.1 to 86400) across every node\n"
          "that runs this.  URL defaults to %s,\n"
          "DIR (the run ledger) to %s.  JOB is 1-%d characters of\n"
          "A-Z a-z 0-9 . _ -.  --periods 0 (default) runs forever.\n",
          prog, (int)strlen(prog), "", DEFAULT_URL, DEFAULT_DIR, JOB_MAX);
  exit(2);
}

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

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until a wall-clock time: the schedule is in wall-clock time, shared
 * by every node. */
static void sleep_until_ms(int64_t when) {
  struct timespec ts = {when / 1000, (when % 1000) * 1000000};
  while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void dlock_fail(const char *what, int rc) {
  fprintf(stderr, "%s: %s: %s: %s\n", prog, what, dlock_strerror(rc), dlock_client_errmsg(NULL));
}

/* ---- the run ledger: the job's fenced resource ---- */

static char ledger[PATH_MAX], ledger_guard[PATH_MAX];

/* Record that SLOT ran under TOKEN.  1 = recorded, 0 = refused (a newer
 * holder of the slot's lock recorded it), -1 = error. */
static int ledger_record(long long slot, uint64_t token) {
  int g = open(ledger_guard, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (g < 0 || flock(g, LOCK_EX) != 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, ledger_guard, strerror(errno));
    if (g >= 0)
      close(g);
    return -1;
  }
  int rc = 1;
  FILE *f = fopen(ledger, "r");
  if (f) {
    long long s;
    uint64_t t;
    long pid;
    while (fscanf(f, "slot %lld token %" SCNu64 " pid %ld\n", &s, &t, &pid) == 3) {
      if (s != slot)
        continue;
      if (t > token)
        rc = 0; /* a later holder of this slot's lock got there */
      else
        fprintf(stderr, "%s: slot %lld already ran under token %" PRIu64 " (pid %ld)\n", prog,
                slot, t, pid);
    }
    fclose(f);
  } else if (errno != ENOENT) {
    fprintf(stderr, "%s: %s: %s\n", prog, ledger, strerror(errno));
    rc = -1;
  }
  if (rc == 1) {
    f = fopen(ledger, "a");
    if (!f || fprintf(f, "slot %lld token %" PRIu64 " pid %ld\n", slot, token, (long)getpid()) < 0 ||
        fclose(f) != 0) {
      fprintf(stderr, "%s: %s: %s\n", prog, ledger, strerror(errno));
      rc = -1;
    }
  }
  close(g);
  return rc;
}

/* ---- one slot ---- */

static atomic_int lost;

/* On the library's renew thread: only note it. */
static void on_lost(const char *key, uint64_t token, void *arg) {
  (void)key;
  (void)token;
  (void)arg;
  atomic_store(&lost, 1);
}

static long long errors; /* anything that went wrong, for the exit status */

/* 1 = this node ran the slot, 0 = it did not (another node has it, or we
 * were too late, or the store failed: then errors says so). */
static int run_slot(dlock_client *c, const char *job, long long slot, int64_t period_ms,
                    long long work_ms) {
  int64_t begin = slot * period_ms, end = begin + period_ms;
  sleep_until_ms(begin);
  int64_t late = wall_ms() - begin;
  if (late > period_ms / 2) {
    printf("slot %lld: skipped, %lld ms late\n", slot, (long long)late);
    return 0;
  }
  char key[DLOCK_KEY_MAX + 1];
  snprintf(key, sizeof key, "cron/%s/%lld", job, slot);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = on_lost; /* auto_renew stays on: the hold may outlast the ttl */
  dlock_lock *l;
  int rc = dlock_try_acquire(c, key, &o, &l);
  if (rc == DLOCK_EBUSY) {
    printf("slot %lld: another node runs it\n", slot);
    return 0;
  }
  if (rc < 0) {
    /* Transient or not, this node sits the slot out; another may run it. */
    dlock_fail(key, rc);
    errors++;
    return 0;
  }
  uint64_t token = dlock_lock_token(l);

  struct timespec work = {work_ms / 1000, (work_ms % 1000) * 1000000};
  while (nanosleep(&work, &work) != 0 && errno == EINTR) {
  } /* the job's work */

  /* Lost during the work: another node may have taken the slot and run it
   * too.  The ledger's fence settles which record stands. */
  if (dlock_lock_state(l) != DLOCK_HELD)
    fprintf(stderr, "%s: slot %lld: lost the lock during the work\n", prog, slot);
  int w = ledger_record(slot, token);
  if (w == 1) {
    printf("slot %lld: ran, token %" PRIu64 "\n", slot, token);
  } else {
    if (w == 0)
      fprintf(stderr, "%s: slot %lld: the ledger refused token %" PRIu64 ", a newer holder ran it\n",
              prog, slot, token);
    errors++;
  }

  /* Hold the slot's lock until the slot is over, so that nobody late can
   * win it and run the slot again. */
  sleep_until_ms(end);
  rc = dlock_release(l);
  if (rc == DLOCK_ELOST || atomic_exchange(&lost, 0)) {
    /* Renewal failed while we held it (store away, a pause): the slot was
     * open to a late node for a while. */
    fprintf(stderr, "%s: slot %lld: the lock was lost before the slot ended\n", prog, slot);
    errors++;
  } else if (rc < 0) {
    dlock_fail("release", rc);
    errors++;
  }
  return 1; /* the work ran here, whatever the ledger said */
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with stderr's, even in a file */
  long long periods = 0, work_ms = 200;
  int64_t start_ms = -1;
  const char *dir = DEFAULT_DIR;
  static const struct option longopts[] = {
      {"periods", required_argument, NULL, 'n'},
      {"start", required_argument, NULL, 's'},
      {"work-ms", required_argument, NULL, 'w'},
      {"dir", required_argument, NULL, 'd'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (opt) {
    case 'n': periods = parse_num(optarg, 0, 1000000000, "--periods"); break;
    case 's': start_ms = parse_num(optarg, 0, 1LL << 40, "--start") * 1000; break;
    case 'w': work_ms = parse_num(optarg, 0, 86400000, "--work-ms"); break;
    case 'd': dir = optarg; break;
    default: usage();
    }
  }
  const char *url = DEFAULT_URL;
  /* The URL is optional: an argument with "://" in it is one. */
  if (optind < argc && strstr(argv[optind], "://"))
    url = argv[optind++];
  if (argc - optind != 2)
    usage();
  const char *job = argv[optind];
  size_t jl = strlen(job);
  if (jl == 0 || jl > JOB_MAX || job[0] == '.' ||
      strspn(job, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != jl) {
    fprintf(stderr, "%s: bad JOB '%s'\n", prog, job);
    usage();
  }
  char *end;
  errno = 0;
  double period_s = strtod(argv[optind + 1], &end);
  if (errno || end == argv[optind + 1] || *end || !isfinite(period_s) || period_s < 0.1 ||
      period_s > 86400) {
    fprintf(stderr, "%s: PERIOD_S must be from 0.1 to 86400 seconds, not '%s'\n", prog,
            argv[optind + 1]);
    usage();
  }
  int64_t period_ms = (int64_t)(period_s * 1000 + 0.5);
  if (work_ms >= period_ms) {
    fprintf(stderr, "%s: --work-ms must be shorter than the period\n", prog);
    usage();
  }
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
    return 1;
  }
  snprintf(ledger, sizeof ledger, "%s/%s.runs", dir, job);
  snprintf(ledger_guard, sizeof ledger_guard, "%s/%s.flock", dir, job);

  char shown[1024];
  dlock_url_redact(url, shown, sizeof shown); /* never print a password */
  dlock_client *c;
  int rc = dlock_open(url, &c);
  if (rc < 0) {
    fprintf(stderr, "%s: cannot open %s: %s: %s\n", prog, shown, dlock_strerror(rc),
            dlock_client_errmsg(NULL));
    return rc == DLOCK_EINVAL ? 2 : 1; /* a bad URL is a usage error */
  }
  unsigned need = DLOCK_CAP_FENCING | DLOCK_CAP_CROSS_PROCESS;
  if ((dlock_client_caps(c) & need) != need) {
    /* Without locks across processes every node would run the job. */
    fprintf(stderr, "%s: %s has no fencing tokens or no locks across processes\n", prog, shown);
    dlock_close(c);
    return 1;
  }

  if (start_ms < 0)
    start_ms = wall_ms();
  long long first = (start_ms + period_ms - 1) / period_ms; /* first slot at or after start */
  long long ran = 0;
  for (long long s = first; periods == 0 || s < first + periods; s++)
    ran += run_slot(c, job, s, period_ms, work_ms);
  dlock_close(c);
  printf("ran %lld of %lld slots (%lld errors) on %s\n", ran, periods, errors, shown);
  return errors ? 1 : 0;
}
