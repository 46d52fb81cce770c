/* dlock run: hold a lock while a command runs, and the guardian that
 * stops the command if dlock run itself dies. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dlock/dlock.h"

extern char **environ;

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

/* Written by on_lost (library thread), read by the main loop. */
static int lost_pipe[2] = {-1, -1};

static void on_lost(const char *key, uint64_t token, void *arg) {
  (void)key, (void)token, (void)arg;
  /* Must not block: the pipe is non-blocking, and one byte already queued
   * is as good as another. */
  int saved = errno;
  ssize_t n = write(lost_pipe[1], "L", 1);
  (void)n;
  errno = saved;
}

struct acquire_job {
  dlock_client *c;
  const char *key;
  dlock_options opts;
  dlock_lock *lock;
  int rc;
  char msg[512];
  int done_fd;
};

/* The acquire runs on its own thread so the main thread can keep reading
 * signals: a blocking wait must stay interruptible by ^C. */
static void *acquire_main(void *arg) {
  struct acquire_job *j = arg;
  j->rc = dlock_acquire(j->c, j->key, &j->opts, &j->lock);
  if (j->rc < 0) /* the message is per thread: copy it for the main thread */
    snprintf(j->msg, sizeof j->msg, "%s", dlock_client_errmsg(j->c));
  ssize_t n = write(j->done_fd, "D", 1);
  (void)n;
  return NULL;
}

/* --metrics-textfile: the run so far, and where it goes (NULL: nowhere). */
static struct cli_run_report report;
static const char *report_path;
static dlock_client *report_client;

static void report_finish(int code) {
  if (!report_path)
    return;
  report.end_ns = cli_now_ns();
  if (!report.wait_end_ns) /* killed while waiting, or never got that far */
    report.wait_end_ns = report.end_ns;
  report.exit_code = code;
  report.lost = code == CLI_EXIT_LOST;
  if (report_client && dlock_metrics_get(report_client, &report.metrics) == 0)
    report.have_metrics = 1;
  cli_textfile_write(report_path, &report);
  report_path = NULL; /* once */
}

/* Die of SIG the way the caller expects (a shell sees "killed by SIGINT"). */
static _Noreturn void die_of_signal(int sig) {
  report_finish(128 + sig);
  sigset_t s;
  signal(sig, SIG_DFL);
  sigemptyset(&s);
  sigaddset(&s, sig);
  raise(sig);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  _exit(128 + sig);
}

/* Job control: ^Z must stop the whole job, not leave COMMAND running
 * while we, and the renewals, sit stopped and the lock runs out. */
static void stop_self(void) { kill(getpid(), SIGSTOP); }

static void drain(int fd) {
  char buf[64];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

/* Environment for the command: ours, minus stale DLOCK_* from an outer
 * `dlock run`, plus this lock's.  Built before fork because the child of a
 * threaded process may only call async-signal-safe functions. */
static char **build_env(const char *key, uint64_t token, const char *url, const char *secret_var) {
  size_t slen = secret_var ? strlen(secret_var) : 0;
  size_t n = 0;
  for (char **e = environ; *e; e++)
    n++;
  char **env = calloc(n + 4, sizeof *env);
  if (!env)
    return NULL;
  size_t k = 0;
  for (char **e = environ; *e; e++)
    if (strncmp(*e, "DLOCK_KEY=", 10) != 0 && strncmp(*e, "DLOCK_TOKEN=", 12) != 0 &&
        strncmp(*e, "DLOCK_URL=", 10) != 0 &&
        /* --url-env's variable: the secret must not reach COMMAND. */
        !(secret_var && strncmp(*e, secret_var, slen) == 0 && (*e)[slen] == '='))
      env[k++] = *e;
  char *mine[3] = {NULL, NULL, NULL};
  if (asprintf(&mine[0], "DLOCK_KEY=%s", key) < 0)
    mine[0] = NULL;
  if (asprintf(&mine[1], "DLOCK_TOKEN=%" PRIu64, token) < 0)
    mine[1] = NULL;
  if (asprintf(&mine[2], "DLOCK_URL=%s", url) < 0)
    mine[2] = NULL;
  if (!mine[0] || !mine[1] || !mine[2]) {
    free(mine[0]), free(mine[1]), free(mine[2]);
    free(env);
    return NULL;
  }
  env[k++] = mine[0];
  env[k++] = mine[1];
  env[k++] = mine[2];
  env[k] = NULL;
  return env;
}

static void free_env(char **env) {
  if (!env)
    return;
  /* Only the last three entries are ours; they follow the inherited ones. */
  size_t n = 0;
  while (env[n])
    n++;
  for (size_t i = n >= 3 ? n - 3 : 0; i < n; i++)
    free(env[i]);
  free(env);
}

static int exit_status_of(int st) {
  if (WIFEXITED(st))
    return WEXITSTATUS(st);
  if (WIFSIGNALED(st))
    return 128 + WTERMSIG(st);
  return CLI_EXIT_INTERNAL;
}

/* File descriptors our caller handed us, sorted.  Every other descriptor
 * belongs to the library (sockets, lock files), and COMMAND must not inherit
 * those: a store that ties a lock to its connection would keep the lock
 * alive for as long as COMMAND, or anything it leaves behind, runs. */
static int *caller_fds;
static size_t n_caller_fds;

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static int is_caller_fd(int fd) {
  return bsearch(&fd, caller_fds, n_caller_fds, sizeof *caller_fds, cmp_int) != NULL;
}

/* Calls FN on every open descriptor but the directory's own. */
static int each_fd(void (*fn)(int fd, void *arg), void *arg) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end != '\0' || fd == dirfd(d))
      continue;
    fn((int)fd, arg);
  }
  closedir(d);
  return 0;
}

struct fd_list {
  int *v;
  size_t n, cap;
  int oom;
};

static void collect_fd(int fd, void *arg) {
  struct fd_list *l = arg;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    int *nv = realloc(l->v, nc * sizeof *nv);
    if (!nv) {
      l->oom = 1;
      return;
    }
    l->v = nv;
    l->cap = nc;
  }
  l->v[l->n++] = fd;
}

/* Before the library opens anything. */
static void snapshot_caller_fds(void) {
  struct fd_list l = {NULL, 0, 0, 0};
  if (each_fd(collect_fd, &l) < 0 || l.oom) {
    /* Without the list nothing can be told apart; mark nothing. */
    free(l.v);
    return;
  }
  qsort(l.v, l.n, sizeof *l.v, cmp_int);
  caller_fds = l.v;
  n_caller_fds = l.n;
}

static void mark_cloexec(int fd, void *arg) {
  (void)arg;
  if (fd > 2 && !is_caller_fd(fd)) {
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC))
      fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  }
}

/* In the child between fork and exec: the same, without the race against
 * library threads opening descriptors meanwhile (the child has none). */
static void child_cloexec_library_fds(void) {
#ifdef CLOSE_RANGE_CLOEXEC
  if (!caller_fds)
    return;
  unsigned lo = 3;
  for (size_t i = 0; i < n_caller_fds; i++) {
    unsigned fd = (unsigned)caller_fds[i];
    if (fd < lo)
      continue;
    if (fd > lo)
      close_range(lo, fd - 1, CLOSE_RANGE_CLOEXEC);
    lo = fd + 1;
  }
  close_range(lo, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
}

struct run_opts {
  int64_t wait_ms, ttl_ms, grace_ms;
  const char *label;
  int foreground;
  int conflict_code; /* -E */
  int verbose;
  int64_t progress_ms;
  const char *metrics_path;
  const char *url, *key;
  struct cli_url src;
  char **command;
};

static const char duration_hint[] =
    "expected seconds, or a duration such as 500ms, 15s, 2m or 1h";

static int run_parse(int argc, char **argv, struct run_opts *ro) {
  const char *pos[2];
  int npos = 0, nowait = 0, have_wait = 0, have_progress = 0, i;
  ro->wait_ms = -1;
  ro->ttl_ms = 0;
  ro->grace_ms = 10000;
  ro->label = NULL;
  ro->foreground = 0;
  ro->conflict_code = CLI_EXIT_CONFLICT;
  ro->verbose = 0;
  ro->progress_ms = 5000;
  ro->metrics_path = NULL;
  ro->command = NULL;
  memset(&ro->src, 0, sizeof ro->src);
  for (i = 0; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    int m;
    if (strcmp(a, "--") == 0) {
      ro->command = argv + i + 1;
      break;
    }
    if (!cli_is_option(a)) {
      if (npos == 2)
        return cli_usage_error("run", "unexpected argument '%s' (missing '--' before COMMAND?)", a);
      pos[npos++] = a;
      continue;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      cli_help(stdout, "run");
      return -1;
    }
    if ((m = cli_match(argc, argv, &i, "run", "-w", "--wait", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_duration_ms(v, &ro->wait_ms) < 0)
        return cli_usage_error("run", "invalid wait time '%s' (%s)", v, duration_hint);
      have_wait = 1;
    } else if ((m = cli_match(argc, argv, &i, "run", "-n", "--nowait", NULL)) != 0) {
      nowait = 1;
    } else if ((m = cli_match(argc, argv, &i, "run", NULL, "--ttl", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_duration_ms(v, &ro->ttl_ms) < 0 || ro->ttl_ms <= 0)
        return cli_usage_error("run", "invalid ttl '%s' (%s)", v, duration_hint);
    } else if ((m = cli_match(argc, argv, &i, "run", NULL, "--grace", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_duration_ms(v, &ro->grace_ms) < 0)
        return cli_usage_error("run", "invalid grace period '%s' (%s)", v, duration_hint);
    } else if ((m = cli_match(argc, argv, &i, "run", NULL, "--label", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      ro->label = v;
    } else if ((m = cli_match(argc, argv, &i, "run", NULL, "--foreground", NULL)) != 0) {
      ro->foreground = 1;
    } else if ((m = cli_match(argc, argv, &i, "run", "-E", "--conflict-exit-code", &v)) != 0) {
      long e;
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_long(v, 0, 255, &e) < 0)
        return cli_usage_error("run", "invalid conflict exit code '%s' (0..255)", v);
      ro->conflict_code = (int)e;
    } else if ((m = cli_match(argc, argv, &i, "run", "-v", "--verbose", NULL)) != 0) {
      ro->verbose = 1;
    } else if ((m = cli_match(argc, argv, &i, "run", NULL, "--progress", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_duration_ms(v, &ro->progress_ms) < 0 || ro->progress_ms < 100)
        return cli_usage_error("run", "invalid progress interval '%s' (at least 0.1 s; %s)", v,
                               duration_hint);
      have_progress = 1;
    } else if ((m = cli_match(argc, argv, &i, "run", NULL, "--metrics-textfile", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      ro->metrics_path = v;
    } else if ((m = cli_url_match(argc, argv, &i, "run", &ro->src)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
    } else {
      return cli_usage_error("run", "unknown option '%s'", a);
    }
  }
  if (nowait && have_wait)
    return cli_usage_error("run", "-n and -w exclude each other");
  if (nowait)
    ro->wait_ms = 0;
  int from_src = ro->src.file || ro->src.env;
  if (npos < (from_src ? 1 : 2))
    return cli_usage_error("run", "%s",
                           npos == 0 && !from_src ? "missing URL and KEY" : "missing KEY");
  if (!ro->command)
    return cli_usage_error("run", "missing '--' before COMMAND");
  if (!ro->command[0])
    return cli_usage_error("run", "missing COMMAND after '--'");
  ro->key = pos[npos - 1];
  if (have_progress)
    ro->verbose = 1;
  if (ro->metrics_path) {
    int code = cli_textfile_check("run", ro->metrics_path);
    if (code)
      return code;
  }
  return cli_url_get("run", &ro->src, npos == 2 ? pos[0] : NULL, &ro->url);
}

/* Acquire on a helper thread while the main thread watches SFD.  Returns 0
 * with *out set, or an exit code (which -E may make 0: see run_acquire).  A
 * forwarded signal arriving meanwhile kills us with that signal: there is
 * no command to pass it to yet. */
static int acquire_wait(dlock_client *c, const struct run_opts *ro, int sfd, dlock_lock **out) {
  struct acquire_job job;
  int done[2];
  memset(&job, 0, sizeof job);
  if (pipe2(done, O_CLOEXEC) < 0) {
    fprintf(stderr, "dlock: pipe: %s\n", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = ro->ttl_ms;
  o.wait_ms = ro->wait_ms;
  o.auto_renew = 1;
  o.on_lost = on_lost;
  o.owner_label = ro->label;
  job.c = c;
  job.key = ro->key;
  job.opts = o;
  job.done_fd = done[1];
  pthread_t th;
  int64_t start = cli_now_ns();
  int err = pthread_create(&th, NULL, acquire_main, &job);
  if (err != 0) {
    fprintf(stderr, "dlock: cannot start a thread: %s\n", strerror(err));
    close(done[0]), close(done[1]);
    return CLI_EXIT_INTERNAL;
  }
  /* Nothing to report on a try: it answers at once. */
  struct cli_progress *progress = NULL;
  if (ro->verbose && ro->wait_ms != 0 &&
      cli_progress_start(&progress, c, ro->key, ro->progress_ms, start) < 0)
    fprintf(stderr, "dlock: cannot start the progress reports; waiting without them\n");
  for (;;) {
    struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = done[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "dlock: poll: %s\n", strerror(errno));
      _exit(CLI_EXIT_INTERNAL); /* the acquire thread still uses the client */
    }
    if (p[1].revents & (POLLIN | POLLHUP))
      break;
    if (p[0].revents & POLLIN) {
      /* The acquire cannot be cancelled; should it succeed after we are
       * gone, the lock stays until its ttl runs out. */
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if ((int)si.ssi_signo == SIGTSTP)
          stop_self();
        else if ((int)si.ssi_signo != SIGCHLD)
          die_of_signal((int)si.ssi_signo);
      }
    }
  }
  pthread_join(th, NULL);
  cli_progress_stop(progress);
  close(done[0]), close(done[1]);
  report.wait_end_ns = cli_now_ns();
  if (job.rc == 0) {
    report.acquired = 1;
    report.acquired_ns = report.wait_end_ns;
    report.token = dlock_lock_token(job.lock);
  }
  /* Interrupted while the acquire was returning: don't start COMMAND only
   * to signal it, and don't leave the lock behind. */
  struct signalfd_siginfo si;
  while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
    if ((int)si.ssi_signo == SIGCHLD)
      continue;
    if ((int)si.ssi_signo == SIGTSTP) {
      stop_self();
      continue;
    }
    if (job.rc == 0)
      dlock_release(job.lock);
    dlock_close(c);
    die_of_signal((int)si.ssi_signo);
  }
  if (job.rc == 0) {
    if (ro->verbose) {
      fprintf(stderr, "dlock: acquired '");
      cli_print_safe(stderr, ro->key);
      fprintf(stderr, "' (token %" PRIu64 ") after %.3f s\n", dlock_lock_token(job.lock),
              (double)(report.wait_end_ns - start) / 1e9);
    }
    *out = job.lock;
    return 0;
  }
  if (job.rc == DLOCK_EBUSY || (job.rc == DLOCK_ETIMEDOUT && ro->wait_ms > 0)) {
    /* Naming the holder saves the user a `dlock status`. */
    dlock_info info;
    memset(&info, 0, sizeof info);
    int irc = dlock_inspect(c, ro->key, &info);
    if (job.rc == DLOCK_ETIMEDOUT && irc < 0 && irc != DLOCK_ENOTSUP) {
      /* The library's ETIMEDOUT cannot say whether the store answered
       * "held" until the end or stopped answering; a store that does not
       * answer now is the likelier story, and the operator's to fix. */
      char what[700];
      snprintf(what, sizeof what, "cannot acquire '%s' within %.3g s; the store", ro->key,
               (double)ro->wait_ms / 1000);
      return cli_fail(irc, what, dlock_client_errmsg(c));
    }
    fprintf(stderr, "dlock: lock '");
    cli_print_safe(stderr, ro->key);
    fprintf(stderr, "' is held");
    if (irc == 0 && info.held) {
      info.label[sizeof info.label - 1] = '\0';
      if (info.label[0]) {
        fputs(" by ", stderr);
        cli_print_safe(stderr, info.label);
      }
      if (info.token)
        fprintf(stderr, " (token %" PRIu64 ")", info.token);
    }
    if (job.rc == DLOCK_ETIMEDOUT)
      fprintf(stderr, "; gave up after %.3g s", (double)ro->wait_ms / 1000);
    fputc('\n', stderr);
    return ro->conflict_code;
  }
  char what[600];
  snprintf(what, sizeof what, "cannot acquire '%s'", ro->key);
  return cli_fail(job.rc, what, job.msg);
}

/* 0 with *out set, or -1 with *code the exit code. */
static int run_acquire(dlock_client *c, const struct run_opts *ro, int sfd, dlock_lock **out,
                       int *code) {
  *out = NULL;
  *code = acquire_wait(c, ro, sfd, out);
  return *out ? 0 : -1;
}

/* ---- the guardian ----
 *
 * COMMAND must not outlive `dlock run` unprotected, however dlock run ends
 * (SIGKILL, the OOM killer, a crash).  So dlock run forks, once it holds the
 * lock, a guardian process that starts COMMAND as its own child and:
 *
 *  - is a child subreaper, so whatever COMMAND starts stays below it even
 *    after leaving COMMAND's process group or daemonizing;
 *  - learns that dlock run died from end-of-file on a pipe whose only write
 *    end dlock run holds (PR_SET_PDEATHSIG is the backup), then sends SIGTERM
 *    (and SIGCONT) to COMMAND's process group and every descendant at once,
 *    SIGKILL to whatever is left after the grace period, and exits only when
 *    nothing is left;
 *  - holds, until then, the copies fork gave it of dlock run's descriptors:
 *    the file:// lock's open file description and the store connections.  A
 *    store that frees a lock the moment its holder's descriptors close
 *    (file://, PostgreSQL advisory locks) therefore keeps it until COMMAND and
 *    everything it started are gone.
 *
 * It also reports COMMAND's stops and exit to dlock run (it is COMMAND's
 * parent now), and runs the same stop sequence when dlock run asks (the lock
 * was lost).  On a normal end dlock run tells it to exit and reaps it before
 * releasing the lock, so an explicit release frees the lock at once, as
 * before.  It keeps none of the caller's descriptors: a caller reading
 * dlock run's output to its end waits for COMMAND, never for the guardian.
 *
 * The guardian is a fork of a threaded process and never execs (that would
 * close the store's descriptors): from fork on it makes system calls only. */

enum {
  GM_PID = 'P',        /* COMMAND started: val = its pid */
  GM_FORK_FAILED = 'F', /* val = errno */
  GM_EXPIRED = 'L',    /* the lock's deadline passed before COMMAND started */
  GM_STOPPED = 'S',    /* val = wait status */
  GM_CONTINUED = 'C',
  GM_EXITED = 'E' /* val = wait status */
};
struct guard_msg {
  int32_t type, val;
};

/* Requests to the guardian, one byte each; end-of-file means dlock run died. */
#define GUARD_EXIT 'X' /* COMMAND is done: exit now */
#define GUARD_STOP 'T' /* lock lost: SIGTERM, SIGKILL after the grace period */
#define GUARD_KILL 'K' /* SIGKILL now */

/* dlock run's end of the link. */
struct guardian {
  pid_t pid, cmd;
  int ctl; /* requests, write end */
  int st;  /* reports, read end */
};

/* The lock's validity deadline on CLOCK_BOOTTIME (one clock for every
 * process), INT64_MAX for stores without expiry.  A page shared with the
 * guardian, mapped before it is forked: dlock run rewrites it as renewals
 * push the deadline on, so the guardian knows how long COMMAND may run
 * under the lock even when dlock run can no longer tell it (stopped,
 * wedged, killed). */
static int64_t *run_deadline;

static int64_t deadline_get(void) {
  return run_deadline ? __atomic_load_n(run_deadline, __ATOMIC_ACQUIRE) : INT64_MAX;
}

/* With dlock run alive but silent as the deadline nears (stopped, wedged),
 * COMMAND gets SIGTERM this much before it (or --grace before it, if
 * shorter), just enough to act on, and SIGKILL at it. */
#define GUARD_LATE_KILL_MS 500

/* The guardian's own state (a separate process: globals are its own). */
static struct {
  pid_t parent, cmd;
  int foreground, ctl, st, sig;
  int cmd_done, group_gone;
  int exit_pending; /* COMMAND's exit not yet reported (the pipe was full) */
  int exit_status;
} gd;

/* Set from DLOCK_TEST_PROC_SCAN before fork: walk the process tree through
 * /proc/[pid]/stat as on kernels without /proc/PID/task/TID/children, so
 * that the fallback is tested on kernels with it. */
static int gd_force_scan;

#define GUARD_MAX_PIDS 4096
static pid_t gd_tree[GUARD_MAX_PIDS];
static size_t gd_ntree;

static char *put_str(char *p, const char *s) {
  while (*s)
    *p++ = *s++;
  return p;
}

static char *put_num(char *p, long v) {
  char t[24];
  int n = 0;
  do
    t[n++] = (char)('0' + v % 10);
  while ((v /= 10) > 0);
  while (n)
    *p++ = t[--n];
  return p;
}

static void guard_report(int type, int val) {
  struct guard_msg m = {type, val};
  /* Non-blocking, and EPIPE once dlock run is gone: neither may stop us.
   * A stop or continue report may be lost to a full pipe (dlock run not
   * reading, being stopped itself); COMMAND's exit may not: dlock run would
   * wait for it forever.  It is kept and sent again (guard_flush_exit). */
  ssize_t n = write(gd.st, &m, sizeof m);
  if (type == GM_EXITED && n < 0 && errno == EAGAIN) {
    gd.exit_pending = 1;
    gd.exit_status = val;
  }
}

/* Sends a pending exit report; BLOCK waits for room (only once nothing of
 * COMMAND is left, when waiting stops nothing but us). */
static void guard_flush_exit(int block) {
  while (gd.exit_pending) {
    struct guard_msg m = {GM_EXITED, gd.exit_status};
    ssize_t n = write(gd.st, &m, sizeof m);
    if (n == (ssize_t)sizeof m || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      gd.exit_pending = 0; /* sent, or dlock run is gone (EPIPE) */
      return;
    }
    if (!block)
      return;
    struct pollfd p = {.fd = gd.st, .events = POLLOUT};
    poll(&p, 1, -1);
  }
}

/* Appends the children of thread TID of PID (threads fork too). */
static void guard_add_task_children(pid_t pid, long tid) {
  char path[96], *p = path;
  p = put_str(p, "/proc/");
  p = put_num(p, pid);
  p = put_str(p, "/task/");
  p = put_num(p, tid);
  p = put_str(p, "/children");
  *p = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  char buf[4096];
  long cur = -1;
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i <= r; i++) {
      if (i < r && buf[i] >= '0' && buf[i] <= '9') {
        cur = (cur < 0 ? 0 : cur * 10) + (buf[i] - '0');
      } else if (cur >= 0 && (i < r || r < (ssize_t)sizeof buf)) {
        if (gd_ntree < GUARD_MAX_PIDS)
          gd_tree[gd_ntree++] = (pid_t)cur;
        cur = -1;
      }
    }
  }
  close(fd);
}

struct guard_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

/* FN(number, name, ARG) for each entry of DIR named by a decimal number,
 * with system calls only, like everything the guardian does. */
static void guard_each_number(const char *dir, void (*fn)(long, const char *, void *),
                              void *arg) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return;
  char buf[4096] __attribute__((aligned(8)));
  long n;
  while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
    for (long off = 0; off < n;) {
      struct guard_dirent64 *d = (struct guard_dirent64 *)(buf + off);
      off += d->d_reclen;
      long num = 0;
      const char *s = d->d_name;
      if (*s < '0' || *s > '9')
        continue;
      for (; *s >= '0' && *s <= '9'; s++)
        num = num * 10 + (*s - '0');
      if (!*s)
        fn(num, d->d_name, arg);
    }
  }
  close(fd);
}

static void guard_task_found(long tid, const char *name, void *arg) {
  (void)name;
  guard_add_task_children(*(pid_t *)arg, tid);
}

static void guard_add_children(pid_t pid) {
  char path[48], *p = path;
  p = put_str(p, "/proc/");
  p = put_num(p, pid);
  p = put_str(p, "/task");
  *p = '\0';
  guard_each_number(path, guard_task_found, &pid);
}

static int guard_in_tree(pid_t pid, pid_t self) {
  if (pid == self)
    return 1;
  for (size_t i = 0; i < gd_ntree; i++)
    if (gd_tree[i] == pid)
      return 1;
  return 0;
}

/* The parent of process NAME (a /proc entry) from its stat line, or -1. */
static pid_t guard_ppid_of(const char *name) {
  char path[48], *p = put_str(path, "/proc/");
  p = put_str(p, name);
  p = put_str(p, "/stat");
  *p = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  /* "pid (comm) state ppid ...": comm may hold anything, ')' included, so
   * the last ')' ends it. */
  char *e = NULL;
  for (char *q = buf; *q; q++)
    if (*q == ')')
      e = q;
  if (!e || e[1] != ' ' || !e[2] || e[3] != ' ')
    return -1;
  long v = -1;
  for (p = e + 4; *p >= '0' && *p <= '9'; p++)
    v = (v < 0 ? 0 : v * 10) + (*p - '0');
  return (pid_t)v;
}

struct guard_scan {
  pid_t self;
  int added;
};

static void guard_process_found(long pid, const char *name, void *arg) {
  struct guard_scan *sc = arg;
  if (guard_in_tree((pid_t)pid, sc->self))
    return;
  pid_t pp = guard_ppid_of(name);
  if (pp > 0 && guard_in_tree(pp, sc->self) && gd_ntree < GUARD_MAX_PIDS) {
    gd_tree[gd_ntree++] = (pid_t)pid;
    sc->added = 1;
  }
}

/* Without /proc/PID/task/TID/children (a kernel built without
 * CONFIG_PROC_CHILDREN): every process whose parent is in the tree joins
 * it, pass after pass over /proc until one adds nobody. */
static void guard_scan_proc(pid_t self) {
  struct guard_scan sc = {.self = self, .added = 0};
  do {
    sc.added = 0;
    guard_each_number("/proc", guard_process_found, &sc);
  } while (sc.added);
}

/* Every descendant, read before any is signalled: a process killed first
 * would hand its children to us before we had read them. */
static void guard_collect(void) {
  pid_t self = getpid();
  gd_ntree = 0;
  char path[64], *p = put_str(path, "/proc/");
  p = put_num(p, self);
  p = put_str(p, "/task/");
  p = put_num(p, self);
  p = put_str(p, "/children");
  *p = '\0';
  if (gd_force_scan || access(path, R_OK) < 0) {
    guard_scan_proc(self);
    return;
  }
  guard_add_children(self);
  for (size_t i = 0; i < gd_ntree; i++)
    guard_add_children(gd_tree[i]);
}

static void guard_check_group(void) {
  /* COMMAND's pid names its group only while a member lives (a zombie
   * counts): once it is empty the number may be reused, so never signal it
   * again. */
  if (!gd.foreground && gd.cmd_done && !gd.group_gone && kill(-gd.cmd, 0) < 0 && errno == ESRCH)
    gd.group_gone = 1;
}

static void guard_signal_all(int sig, int sig2) {
  guard_collect();
  guard_check_group();
  int group = !gd.foreground && !gd.group_gone;
  if (group) {
    kill(-gd.cmd, sig);
    if (sig2)
      kill(-gd.cmd, sig2);
  }
  for (size_t i = 0; i < gd_ntree; i++) {
    /* Members of the group were signalled with it: once is enough. */
    if (group && getpgid(gd_tree[i]) == gd.cmd)
      continue;
    kill(gd_tree[i], sig);
    if (sig2)
      kill(gd_tree[i], sig2);
  }
}

/* Reaps children, reporting COMMAND's changes.  0 once we have none. */
static int guard_reap(void) {
  for (;;) {
    int st;
    pid_t w = waitpid(-1, &st, WNOHANG | WUNTRACED | WCONTINUED);
    if (w > 0) {
      if (w == gd.cmd && !gd.cmd_done) {
        if (WIFSTOPPED(st)) {
          guard_report(GM_STOPPED, st);
        } else if (WIFCONTINUED(st)) {
          guard_report(GM_CONTINUED, 0);
        } else {
          gd.cmd_done = 1;
          guard_report(GM_EXITED, st);
        }
      }
      continue;
    }
    if (w == 0)
      return 1;
    if (errno == EINTR)
      continue;
    return 0; /* ECHILD */
  }
}

static void guard_drain_signals(void) {
  struct signalfd_siginfo si;
  while (read(gd.sig, &si, sizeof si) == (ssize_t)sizeof si) {
  }
}

/* SIGTERM to everything, SIGKILL at KILL_AT (CLOCK_BOOTTIME ns; at once
 * if that is past), and exit once nothing is left. */
static _Noreturn void guard_stop_all(int64_t kill_at) {
  int killing = kill_at <= cli_now_ns();
  guard_signal_all(killing ? SIGKILL : SIGTERM, killing ? 0 : SIGCONT);
  for (;;) {
    int left = guard_reap();
    guard_check_group();
    guard_flush_exit(0);
    if (!left && (gd.foreground || gd.group_gone)) {
      guard_flush_exit(1);
      _exit(0);
    }
    int64_t now = cli_now_ns();
    if (!killing && now >= kill_at)
      killing = 1;
    if (killing)
      guard_signal_all(SIGKILL, 0);
    /* Woken by SIGCHLD; the cap catches descendants that are not our
     * children exiting, and the grace period's end. */
    int timeout = 100;
    if (killing)
      timeout = 20;
    else if ((kill_at - now) / 1000000 + 1 < timeout)
      timeout = (int)((kill_at - now) / 1000000 + 1);
    struct pollfd p[3] = {{.fd = gd.sig, .events = POLLIN},
                          {.fd = gd.st, .events = gd.exit_pending ? POLLOUT : 0},
                          {.fd = gd.ctl, .events = POLLIN}};
    if (poll(p, gd.ctl >= 0 ? 3 : 2, timeout) > 0) {
      if (p[0].revents & POLLIN)
        guard_drain_signals();
      if (gd.ctl >= 0 && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
        char c;
        ssize_t n = read(gd.ctl, &c, 1);
        if (n == 0 && !killing) {
          /* dlock run died while we were stopping (a lost lock): the
           * grace period ends at the deadline at the latest. */
          int64_t dl = deadline_get();
          if (dl < kill_at)
            kill_at = dl;
        }
        if (n == 1 && c == GUARD_KILL && !killing) {
          killing = 1;
          guard_signal_all(SIGKILL, 0);
        } else if (n <= 0) {
          close(gd.ctl);
          gd.ctl = -1;
        }
      }
    }
  }
}

static int guard_parent_died(void) { return getppid() != gd.parent; }

/* When dlock run died: SIGKILL after the grace period, but by the lock's
 * deadline, when another client may take it. */
static int64_t guard_kill_at_death(int64_t grace_ms) {
  int64_t at = cli_now_ns() + grace_ms * 1000000, dl = deadline_get();
  return dl < at ? dl : at;
}

/* The guardian process; ep is COMMAND's exec-error pipe, ctl and st the
 * link to dlock run (both pairs whole: we close dlock run's ends). */
static _Noreturn void guardian_main(const struct run_opts *ro, char **env,
                                    const sigset_t *child_mask, int ep[2], int ctl[2], int st[2],
                                    pid_t parent) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  close(ctl[1]);
  close(st[0]);
  gd.parent = parent;
  gd.foreground = ro->foreground;
  gd.ctl = ctl[0];
  gd.st = st[1];
  fcntl(gd.st, F_SETFL, O_NONBLOCK);
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  prctl(PR_SET_PDEATHSIG, SIGUSR1);
  /* dlock run may have died before PR_SET_PDEATHSIG took (no signal comes
   * then), or been stopped past the deadline: start no COMMAND that nothing
   * would stop, nor one that would run without the lock. */
  if (guard_parent_died())
    _exit(CLI_EXIT_INTERNAL);
  if (deadline_get() <= cli_now_ns()) {
    guard_report(GM_EXPIRED, 0);
    _exit(CLI_EXIT_LOST);
  }
  pid_t pid = fork();
  if (pid < 0) {
    guard_report(GM_FORK_FAILED, errno);
    _exit(CLI_EXIT_INTERNAL);
  }
  if (pid == 0) {
    if (!ro->foreground)
      setpgid(0, 0);
    sigprocmask(SIG_SETMASK, child_mask, NULL);
    child_cloexec_library_fds();
    execvpe(ro->command[0], ro->command, env);
    int e = errno;
    ssize_t n = write(ep[1], &e, sizeof e);
    (void)n;
    _exit(e == ENOENT || e == ENOTDIR ? CLI_EXIT_NOT_FOUND : CLI_EXIT_CANNOT_RUN);
  }
  gd.cmd = pid;
  /* Here too: whichever of us runs first, the group exists before anyone
   * could signal it. */
  if (!ro->foreground)
    setpgid(pid, pid);
  /* Out of dlock run's group: a ^C or a kill of the whole job must not
   * take the guardian with it. */
  setpgid(0, 0);
  close(ep[0]);
  close(ep[1]);
  guard_report(GM_PID, pid);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd <= 2; fd++) {
    if (null >= 0)
      dup2(null, fd);
    else
      close(fd);
  }
  if (null > 2)
    close(null);
  for (size_t i = 0; i < n_caller_fds; i++)
    if (caller_fds[i] > 2)
      close(caller_fds[i]);
  sigset_t mine;
  sigemptyset(&mine);
  sigaddset(&mine, SIGCHLD);
  sigaddset(&mine, SIGUSR1);
  gd.sig = signalfd(-1, &mine, SFD_NONBLOCK | SFD_CLOEXEC);
  if (gd.sig < 0 || guard_parent_died())
    guard_stop_all(guard_kill_at_death(ro->grace_ms));
  int64_t late_ms = ro->grace_ms < GUARD_LATE_KILL_MS ? ro->grace_ms : GUARD_LATE_KILL_MS;
  for (;;) {
    /* Asleep until the deadline at most: dlock run moves it on long before
     * it comes (it rereads the lock's validity a few times per renewal), so
     * reaching it means dlock run is alive but stopped or wedged, or the
     * lock expired unrenewed.  Either way the lock may be someone else's
     * now, and nobody but us can stop COMMAND. */
    int64_t now = cli_now_ns(), dl = deadline_get();
    /* SIGTERM ahead of the deadline by the short grace, SIGKILL at it: the
     * deadline is when the store may already have handed the lock on. */
    int64_t term_at = dl == INT64_MAX ? INT64_MAX : dl - late_ms * 1000000;
    if (term_at <= now)
      guard_stop_all(dl > now ? dl : now);
    int timeout = -1;
    if (term_at != INT64_MAX)
      timeout = (term_at - now) / 1000000 >= INT_MAX ? INT_MAX
                                                     : (int)((term_at - now) / 1000000 + 1);
    struct pollfd p[3] = {{.fd = gd.ctl, .events = POLLIN},
                          {.fd = gd.sig, .events = POLLIN},
                          {.fd = gd.st, .events = gd.exit_pending ? POLLOUT : 0}};
    if (poll(p, 3, timeout) < 0)
      continue;
    if (p[1].revents & POLLIN) {
      guard_drain_signals();
      if (guard_parent_died())
        guard_stop_all(guard_kill_at_death(ro->grace_ms));
    }
    guard_reap();
    guard_flush_exit(0);
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char c;
      ssize_t n = read(gd.ctl, &c, 1);
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n == 1 && c == GUARD_EXIT)
        _exit(0);
      /* A request to stop, or end-of-file: dlock run died. */
      if (n == 1 && c == GUARD_KILL)
        guard_stop_all(0);
      else if (n == 1)
        guard_stop_all(cli_now_ns() + ro->grace_ms * 1000000);
      else
        guard_stop_all(guard_kill_at_death(ro->grace_ms));
    }
  }
}

static void guard_send(const struct guardian *g, char req) {
  /* The guardian may have exited on its own (it stopped COMMAND at the
   * lock's deadline): EPIPE then, and a SIGPIPE that must not kill us.
   * Blocked, it stays pending on this thread, and is taken back. */
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t n;
  do
    n = write(g->ctl, &req, 1);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EPIPE) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* One report; 0 at end-of-file (the guardian exited), -1 on error. */
static int guard_read(const struct guardian *g, struct guard_msg *m) {
  ssize_t n;
  do
    n = read(g->st, m, sizeof *m);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)sizeof *m)
    return 1;
  return n == 0 ? 0 : -1;
}

/* After its last report: the guardian is exiting. */
static void guard_reap_guardian(struct guardian *g) {
  int st;
  while (waitpid(g->pid, &st, 0) < 0 && errno == EINTR) {
  }
  close(g->ctl), close(g->st);
  g->ctl = g->st = -1;
}

/* Start the guardian and, through it, COMMAND.  Returns 0 with G filled,
 * or an exit code after printing why. */
static int run_spawn(const struct run_opts *ro, char **env, const sigset_t *child_mask,
                     struct guardian *g) {
  int ep[2], ctl[2], st[2];
  if (pipe2(ep, O_CLOEXEC) < 0) {
    fprintf(stderr, "dlock: pipe: %s\n", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  if (pipe2(ctl, O_CLOEXEC) < 0) {
    fprintf(stderr, "dlock: pipe: %s\n", strerror(errno));
    close(ep[0]), close(ep[1]);
    return CLI_EXIT_INTERNAL;
  }
  if (pipe2(st, O_CLOEXEC) < 0) {
    fprintf(stderr, "dlock: pipe: %s\n", strerror(errno));
    close(ep[0]), close(ep[1]), close(ctl[0]), close(ctl[1]);
    return CLI_EXIT_INTERNAL;
  }
  /* Kernels without close_range(CLOSE_RANGE_CLOEXEC) rely on this. */
  if (caller_fds)
    each_fd(mark_cloexec, NULL);
  pid_t self = getpid();
  pid_t gpid = fork();
  if (gpid < 0) {
    fprintf(stderr, "dlock: fork: %s\n", strerror(errno));
    close(ep[0]), close(ep[1]), close(ctl[0]), close(ctl[1]), close(st[0]), close(st[1]);
    return CLI_EXIT_INTERNAL;
  }
  if (gpid == 0)
    guardian_main(ro, env, child_mask, ep, ctl, st, self);
  close(ep[1]), close(ctl[0]), close(st[1]);
  g->pid = gpid;
  g->ctl = ctl[1];
  g->st = st[0];
  struct guard_msg m;
  int r = guard_read(g, &m);
  if (r <= 0 || m.type != GM_PID) {
    if (r > 0 && m.type == GM_FORK_FAILED) {
      fprintf(stderr, "dlock: fork: %s\n", strerror(m.val));
    } else if (r > 0 && m.type == GM_EXPIRED) {
      fprintf(stderr, "dlock: lock '");
      cli_print_safe(stderr, ro->key);
      fprintf(stderr, "' expired before the command started\n");
    } else {
      fprintf(stderr, "dlock: the guardian process failed to start\n");
    }
    close(ep[0]);
    guard_reap_guardian(g);
    return r > 0 && m.type == GM_EXPIRED ? CLI_EXIT_LOST : CLI_EXIT_INTERNAL;
  }
  g->cmd = (pid_t)m.val;
  int e = 0;
  ssize_t n;
  do
    n = read(ep[0], &e, sizeof e);
  while (n < 0 && errno == EINTR);
  close(ep[0]);
  if (n == (ssize_t)sizeof e) {
    while (guard_read(g, &m) > 0 && m.type != GM_EXITED) {
    }
    guard_send(g, GUARD_EXIT);
    guard_reap_guardian(g);
    fprintf(stderr, "dlock: cannot run '");
    cli_print_safe(stderr, ro->command[0]);
    fprintf(stderr, "': %s\n", strerror(e));
    return e == ENOENT || e == ENOTDIR ? CLI_EXIT_NOT_FOUND : CLI_EXIT_CANNOT_RUN;
  }
  return 0;
}

/* Tell the guardian how long the lock is valid (see run_deadline). */
static void deadline_publish(dlock_lock *l) {
  /* Now first: a pause between the two readings can only make the
   * deadline earlier, never later. */
  int64_t now = cli_now_ns();
  int64_t rem = dlock_lock_remaining_ms(l);
  if (rem == 0)
    return; /* lost: the loss path stops COMMAND, with the grace period */
  int64_t dl = rem < 0 ? INT64_MAX : now + rem * 1000000;
  __atomic_store_n(run_deadline, dl, __ATOMIC_RELEASE);
}

/* The guardian died (killed by someone): whatever COMMAND started was
 * handed to us, the next subreaper up.  SIGKILL all of it, again and again
 * as processes fork or are handed on, until we have no child left. */
static void run_kill_orphans(const struct run_opts *ro, pid_t cmd) {
  gd.cmd = cmd;
  gd.foreground = ro->foreground;
  int64_t start = cli_now_ns();
  int warned = 0;
  for (;;) {
    guard_collect();
    /* COMMAND's group is ours to signal while COMMAND is our child (a
     * zombie counts): the group then exists and its number is not reused. */
    siginfo_t si;
    si.si_pid = 0;
    if (!ro->foreground && waitid(P_PID, (id_t)cmd, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
      kill(-cmd, SIGKILL);
    int st;
    for (size_t i = 0; i < gd_ntree; i++)
      kill(gd_tree[i], SIGKILL);
    pid_t w;
    while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
    }
    if (w < 0 && errno == ECHILD && gd_ntree == 0)
      return;
    if (!warned && cli_now_ns() - start > 5000000000LL) {
      fprintf(stderr, "dlock: the command's processes survive SIGKILL (in uninterruptible "
                      "sleep?); waiting for them\n");
      warned = 1;
    }
    struct pollfd none;
    poll(&none, 0, 20);
  }
}

/* Wait for COMMAND, forwarding signals and watching the lock.  Returns the
 * exit code; the guardian has exited when it returns. */
static int run_supervise(const struct run_opts *ro, dlock_lock *l, struct guardian *g, int sfd) {
  pid_t pid = g->cmd;
  pid_t target = ro->foreground ? pid : -pid;
  int lost = 0, failed = 0, warned_stop = 0, stopped = 0, status = 0;
  int cmd_done = 0, g_done = 0, warned_slow = 0;
  int64_t stop_at = 0;

  /* Once stopping (lost lock, failure) we wait for the guardian to report
   * that nothing of COMMAND is left. */
  while (!g_done && !(cmd_done && !lost && !failed)) {
    int timeout = -1;
    if (!lost && !failed) {
      /* A safety net: the library reports loss through on_lost, but the
       * validity deadline is checked here too, without relying on it. */
      int64_t rem = dlock_lock_remaining_ms(l);
      if (rem >= 0)
        timeout = rem < 5 ? 5 : rem >= INT_MAX ? INT_MAX : (int)rem + 1;
      /* Renewals happen on a library thread, unannounced: reread the
       * validity a few times per renewal interval (a third of the ttl) so
       * that the guardian's copy of the deadline stays well ahead of it. */
      deadline_publish(l);
      if (rem > 0) {
        int every = rem / 4 < 10 ? 10 : rem / 4 > 1000 ? 1000 : (int)(rem / 4);
        if (every < timeout)
          timeout = every;
      }
    } else if (!warned_slow) {
      /* Processes in uninterruptible sleep outlive SIGKILL; the guardian
       * waits for them, keeping a file:// or PostgreSQL lock held. */
      int64_t late = stop_at + (ro->grace_ms + 5000) * 1000000 - cli_now_ns();
      timeout = late <= 0 ? 0 : late / 1000000 >= INT_MAX ? INT_MAX : (int)(late / 1000000 + 1);
      if (late <= 0) {
        fprintf(stderr, "dlock: the command's processes survive SIGKILL (in uninterruptible "
                        "sleep?); waiting for them, the lock stays held\n");
        warned_slow = 1;
        timeout = -1;
      }
    }
    struct pollfd p[3] = {{.fd = sfd, .events = POLLIN},
                          {.fd = lost_pipe[0], .events = POLLIN},
                          {.fd = g->st, .events = POLLIN}};
    int pr = poll(p, 3, timeout);
    if (pr < 0 && errno != EINTR) {
      fprintf(stderr, "dlock: poll: %s\n", strerror(errno));
      if (!failed)
        guard_send(g, GUARD_KILL);
      failed = 1;
      stop_at = cli_now_ns();
      /* Without poll, read the reports blocking until the guardian exits. */
      struct guard_msg m;
      int r;
      while ((r = guard_read(g, &m)) > 0) {
      }
      g_done = 1;
      break;
    }
    int lost_now = 0;
    if (pr > 0 && (p[0].revents & POLLIN)) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD || cmd_done)
          continue;
        /* In --foreground mode the terminal already sent it to COMMAND. */
        int from_tty = ro->foreground && si.ssi_code == SI_KERNEL;
        if (sig == SIGTSTP) {
          if (!from_tty)
            kill(target, SIGTSTP);
          stop_self();
          /* Continued ("fg", "bg"): COMMAND only goes on if the lock
           * outlived the pause; otherwise the loss path below stops it. */
          if (dlock_lock_state(l) == DLOCK_HELD)
            kill(target, SIGCONT);
          else
            stopped = 1;
          continue;
        }
        if (from_tty)
          continue;
        kill(target, sig);
        /* A stopped process would only see the signal once continued
         * (as the shell's kill does for stopped jobs). */
        if (stopped)
          kill(target, SIGCONT);
      }
    }
    if (pr > 0 && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      struct guard_msg m;
      int r = guard_read(g, &m);
      if (r <= 0) {
        g_done = 1;
      } else if (m.type == GM_STOPPED) {
        stopped = 1;
        int sig = WSTOPSIG(m.val);
        if (!warned_stop && (sig == SIGTTIN || sig == SIGTTOU)) {
          fprintf(stderr, "dlock: command stopped: it uses the terminal from its own "
                          "process group; try 'dlock run --foreground'\n");
          warned_stop = 1;
        }
      } else if (m.type == GM_CONTINUED) {
        stopped = 0;
      } else if (m.type == GM_EXITED) {
        status = m.val;
        cmd_done = 1;
      }
    }
    if (pr > 0 && (p[1].revents & POLLIN)) {
      drain(lost_pipe[0]);
      lost_now = 1;
    }
    if (!lost && !failed && !cmd_done && (lost_now || dlock_lock_state(l) != DLOCK_HELD)) {
      lost = 1;
      report.lost_ns = cli_now_ns();
      fprintf(stderr, "dlock: lock '");
      cli_print_safe(stderr, ro->key);
      fprintf(stderr, "' lost; stopping command\n");
      stop_at = cli_now_ns();
      /* The guardian sends SIGTERM (and SIGCONT, should COMMAND be
       * stopped), SIGKILL after the grace period, and reports when nothing
       * COMMAND started is left. */
      guard_send(g, GUARD_STOP);
    }
  }
  if (!g_done)
    guard_send(g, GUARD_EXIT);
  guard_reap_guardian(g);
  if (!cmd_done) {
    /* The guardian died (killed by someone): COMMAND is no longer our
     * child and nothing would stop it should we die; stop it now. */
    if (!failed)
      fprintf(stderr, "dlock: the guardian process died; stopping command\n");
    run_kill_orphans(ro, pid);
    return lost ? CLI_EXIT_LOST : CLI_EXIT_INTERNAL;
  }
  if (lost)
    return CLI_EXIT_LOST;
  if (failed)
    return CLI_EXIT_INTERNAL;
  return exit_status_of(status);
}

static int run_main(const struct run_opts *rop);

int cli_run(int argc, char **argv) {
  struct run_opts ro;
  int code = run_parse(argc, argv, &ro);
  if (code == 0)
    code = run_main(&ro);
  else if (code < 0)
    code = CLI_EXIT_OK; /* --help */
  cli_url_free(&ro.src);
  return code;
}

static int run_main(const struct run_opts *rop) {
  struct run_opts ro = *rop;
  int code;

  /* Signals are read from a signalfd; block them before the library starts
   * any thread so that every thread inherits the mask and none of them
   * takes a signal meant for the main loop. */
  sigset_t mask, oldmask;
  sigemptyset(&mask);
  for (size_t i = 0; i < sizeof forwarded_signals / sizeof forwarded_signals[0]; i++) {
    /* A signal our caller ignores (nohup, a shell's background job) stays
     * ignored, for us and for COMMAND: blocking it would make the kernel
     * queue it for the signalfd after all. */
    struct sigaction sa;
    if (sigaction(forwarded_signals[i], NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
      continue;
    sigaddset(&mask, forwarded_signals[i]);
  }
  sigaddset(&mask, SIGCHLD);
  struct sigaction tstp;
  if (sigaction(SIGTSTP, NULL, &tstp) == 0 && tstp.sa_handler != SIG_IGN)
    sigaddset(&mask, SIGTSTP);
  if (pthread_sigmask(SIG_BLOCK, &mask, &oldmask) != 0) {
    fprintf(stderr, "dlock: cannot block signals\n");
    return CLI_EXIT_INTERNAL;
  }
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    fprintf(stderr, "dlock: signalfd: %s\n", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  if (pipe2(lost_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
    fprintf(stderr, "dlock: pipe: %s\n", strerror(errno));
    close(sfd);
    return CLI_EXIT_INTERNAL;
  }

  dlock_client *c = NULL;
  dlock_lock *l = NULL;
  char **env = NULL;
  snapshot_caller_fds(); /* our own descriptors above are all close-on-exec */
  memset(&report, 0, sizeof report);
  report.key = ro.key;
  report.start_ns = cli_now_ns();
  cli_url_scheme(ro.url, report.store, sizeof report.store);
  report_path = ro.metrics_path;
  if (ro.verbose && cli_runlog_start() < 0)
    fprintf(stderr, "dlock: cannot start a thread for -v; the library's messages are not shown\n");
  if (cli_open(ro.url, &c, &code) < 0)
    goto out;
  report_client = c;
  if (run_acquire(c, &ro, sfd, &l, &code) < 0)
    goto out;
  env = build_env(ro.key, dlock_lock_token(l), dlock_client_url(c), ro.src.env);
  if (!env) {
    fprintf(stderr, "dlock: out of memory\n");
    code = CLI_EXIT_INTERNAL;
    goto out;
  }
  /* Should the guardian be killed, whatever COMMAND started comes to us
   * rather than to init, and we can still stop all of it. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
    fprintf(stderr, "dlock: prctl(PR_SET_CHILD_SUBREAPER): %s\n", strerror(errno));
    code = CLI_EXIT_INTERNAL;
    goto out;
  }
  run_deadline = mmap(NULL, sizeof *run_deadline, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (run_deadline == MAP_FAILED) {
    run_deadline = NULL;
    fprintf(stderr, "dlock: mmap: %s\n", strerror(errno));
    code = CLI_EXIT_INTERNAL;
    goto out;
  }
  *run_deadline = 0; /* stays so, "expired", if the lock is already lost */
  deadline_publish(l);
  gd_force_scan = getenv("DLOCK_TEST_PROC_SCAN") != NULL;
  struct guardian g;
  code = run_spawn(&ro, env, &oldmask, &g);
  if (code != 0)
    goto out;
  code = run_supervise(&ro, l, &g, sfd);

out:
  if (l) {
    int rc = dlock_release(l);
    if (rc == DLOCK_ELOST && code != CLI_EXIT_LOST) {
      /* The command finished, but not all of it ran under the lock. */
      fprintf(stderr, "dlock: lock '");
      cli_print_safe(stderr, ro.key);
      fprintf(stderr, "' was lost before the command finished\n");
      code = CLI_EXIT_LOST;
    } else if (rc < 0 && rc != DLOCK_ELOST) {
      char what[600];
      snprintf(what, sizeof what, "cannot release '%s' (it expires after its ttl)", ro.key);
      cli_fail(rc, what, dlock_client_errmsg(c));
    }
  }
  report_finish(code);
  report_client = NULL;
  dlock_close(c);
  cli_runlog_stop();
  free_env(env);
  if (run_deadline)
    munmap(run_deadline, sizeof *run_deadline);
  run_deadline = NULL;
  close(lost_pipe[0]), close(lost_pipe[1]);
  lost_pipe[0] = lost_pipe[1] = -1;
  close(sfd);
  free(caller_fds);
  caller_fds = NULL;
  return code;
}
