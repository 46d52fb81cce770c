/* dlock-faults: the processes of a fault run (see HISTORY.md).
 *
 *   dlock-faults resource LOG            the fenced resource; prints its port
 *   dlock-faults worker [opts] URL LOG   contending clients that write to it
 *   dlock-faults writer LOG              a `dlock run` COMMAND that writes
 *   dlock-faults holding LOG...          pid of a process holding a lock now
 *   dlock-faults now                     CLOCK_MONOTONIC in nanoseconds
 *
 * Everything here uses only the public API, so that a user can point the
 * workload at a deployment of their own. */
#include <dlock/dlock.h>
#include <dlock/errors.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static int64_t mono(void) { return clock_ns(CLOCK_MONOTONIC); }
static int64_t wall(void) { return clock_ns(CLOCK_REALTIME); }

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("dlock-faults: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

/* One write(2) per line on an O_APPEND descriptor: a SIGKILL leaves whole
 * lines behind, and processes sharing a file do not interleave. */
static int log_fd = -1;
static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= (int)sizeof buf - 1)
    die("history line too long");
  buf[n++] = '\n';
  if (write(log_fd, buf, (size_t)n) != n)
    die("history write: %s", strerror(errno));
}

static void open_log(const char *path) {
  log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    die("%s: %s", path, strerror(errno));
}

static long tid_self(void) { return (long)syscall(SYS_gettid); }

static uint32_t rnd(void) {
  uint32_t v;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    die("getrandom: %s", strerror(errno));
  return v;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int64_t num_arg(const char *s, const char *what) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0)
    die("%s: not a non-negative number: %s", what, s);
  return v;
}

/* ------------------------------------------------------------ connection */

static int connect_port(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Send LINE, read one reply line into OUT.  0 or -1. */
static int ask(int fd, const char *line, char *out, size_t cap) {
  size_t len = strlen(line), off = 0;
  while (off < len) {
    ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    off += (size_t)n;
  }
  size_t got = 0;
  while (got + 1 < cap) {
    ssize_t n = read(fd, out + got, 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    if (out[got] == '\n') {
      out[got] = 0;
      return 0;
    }
    got++;
  }
  return -1;
}

/* -------------------------------------------------------------- resource */

/* Accepts a write only with a token at least the highest it accepted for
 * that key, and records every attempt in the order it decided it. */
struct rkey {
  char name[128];
  uint64_t top;
};

struct rclient {
  int fd;
  size_t len;
  char buf[512];
};

static struct rkey *rkeys;
static size_t nrkeys, caprkeys;

static struct rkey *rkey_get(const char *name) {
  for (size_t i = 0; i < nrkeys; i++)
    if (strcmp(rkeys[i].name, name) == 0)
      return &rkeys[i];
  if (nrkeys == caprkeys) {
    caprkeys = caprkeys ? caprkeys * 2 : 16;
    rkeys = realloc(rkeys, caprkeys * sizeof *rkeys);
    if (!rkeys)
      die("out of memory");
  }
  struct rkey *k = &rkeys[nrkeys++];
  memset(k, 0, sizeof *k);
  snprintf(k->name, sizeof k->name, "%s", name);
  return k;
}

/* "W key token pid tid seq" -> "ok" | "stale". */
static void resource_line(int fd, char *line) {
  char key[128];
  uint64_t token;
  long pid, tid, seq;
  char reply[96];
  if (sscanf(line, "W %127s %" SCNu64 " %ld %ld %ld", key, &token, &pid, &tid, &seq) == 5) {
    struct rkey *k = rkey_get(key);
    int ok = token >= k->top;
    int64_t now = mono();
    if (ok)
      k->top = token;
    logline("A %s %" PRIu64 " %ld %ld %ld %" PRId64 " %d", key, token, pid, tid, seq, now, ok);
    snprintf(reply, sizeof reply, "%s\n", ok ? "ok" : "stale");
  } else {
    snprintf(reply, sizeof reply, "err\n");
  }
  if (send(fd, reply, strlen(reply), MSG_NOSIGNAL) < 0) {
    /* The client is gone; poll sees it next. */
  }
}

static volatile sig_atomic_t stopping;
static void on_stop(int sig) {
  (void)sig;
  stopping = 1;
}

static int cmd_resource(int argc, char **argv) {
  if (argc != 1)
    die("usage: dlock-faults resource LOG");
  open_log(argv[0]);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 64) != 0 ||
      getsockname(ls, (struct sockaddr *)&a, &al) != 0)
    die("resource: %s", strerror(errno));
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  struct sigaction sa = {.sa_handler = on_stop};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  struct pollfd pf[257];
  struct rclient cl[256];
  size_t n = 0;
  while (!stopping) {
    pf[0] = (struct pollfd){.fd = ls, .events = POLLIN};
    for (size_t i = 0; i < n; i++)
      pf[i + 1] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
    if (poll(pf, n + 1, 200) < 0) {
      if (errno == EINTR)
        continue;
      die("poll: %s", strerror(errno));
    }
    for (size_t i = n; i-- > 0;) {
      if (!(pf[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      struct rclient *c = &cl[i];
      ssize_t got = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
      if (got <= 0) {
        close(c->fd);
        cl[i] = cl[--n];
        continue;
      }
      c->len += (size_t)got;
      char *nl;
      while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
        *nl = 0;
        resource_line(c->fd, c->buf);
        size_t used = (size_t)(nl - c->buf) + 1;
        memmove(c->buf, nl + 1, c->len - used);
        c->len -= used;
      }
      if (c->len == sizeof c->buf - 1) {
        close(c->fd);
        cl[i] = cl[--n];
      }
    }
    if ((pf[0].revents & POLLIN) && n < 256) {
      int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cl[n++] = (struct rclient){.fd = fd};
      }
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- worker */

struct wopts {
  const char *url;
  char **keys;
  size_t nkeys;
  int threads;
  int port;
  int64_t ttl_ms, wait_ms, hold_min, hold_max;
  int writes;
  const char *long_key;
};

static struct wopts W;
static dlock_client *client;
static long self_pid;

static void on_lost(const char *key, uint64_t token, void *arg) {
  (void)arg;
  logline("L %ld %s %" PRIu64 " %" PRId64, self_pid, key, token, mono());
}

static int resource_write(int *fd, const char *key, uint64_t token, long tid, long seq,
                          const char **result) {
  char line[256], reply[32];
  if (*fd < 0)
    *fd = connect_port(W.port);
  snprintf(line, sizeof line, "W %s %" PRIu64 " %ld %ld %ld\n", key, token, self_pid, tid, seq);
  int64_t t = mono();
  if (*fd < 0 || ask(*fd, line, reply, sizeof reply) != 0) {
    if (*fd >= 0)
      close(*fd);
    *fd = -1;
    *result = "err";
  } else {
    *result = strcmp(reply, "ok") == 0 ? "ok" : strcmp(reply, "stale") == 0 ? "stale" : "err";
  }
  logline("W %ld %ld %ld %s %" PRIu64 " %" PRId64 " %s", self_pid, tid, seq, key, token, t,
          *result);
  return 0;
}

static void *worker_thread(void *arg) {
  const char *lkey = arg;
  long tid = tid_self();
  int rfd = -1;
  for (long seq = 1; !stopping; seq++) {
    const char *key = lkey ? lkey : W.keys[rnd() % W.nkeys];
    dlock_options o = DLOCK_OPTIONS_INIT;
    o.ttl_ms = W.ttl_ms;
    o.wait_ms = W.wait_ms;
    o.on_lost = on_lost;
    dlock_lock *l = NULL;
    logline("R %ld %ld %ld %s %" PRId64 " %" PRId64, self_pid, tid, seq, key, mono(), wall());
    int rc = dlock_acquire(client, key, &o, &l);
    if (rc != 0) {
      logline("N %ld %ld %ld %s %d %" PRId64, self_pid, tid, seq, key, rc, mono());
      /* A store that is down answers at once; don't spin on it. */
      if (rc != DLOCK_ETIMEDOUT)
        sleep_ms(20 + rnd() % 30);
      continue;
    }
    int64_t g = mono(), gw = wall();
    uint64_t token = dlock_lock_token(l);
    logline("G %ld %ld %ld %s %" PRIu64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64, self_pid,
            tid, seq, key, token, W.ttl_ms, dlock_lock_remaining_ms(l), g, gw);
    int64_t hold = W.hold_min + (int64_t)(rnd() % (uint32_t)(W.hold_max - W.hold_min + 1));
    int n = 1 + (int)(rnd() % (uint32_t)W.writes);
    /* The long-key thread holds for longer than the ttl, checking every
     * tenth of it, so that a fault finds a holder who must notice the loss
     * itself (and another waiting to take over). */
    if (lkey) {
      hold = 5 * W.ttl_ms / 2;
      n = 25;
    }
    /* Asked to stop: release now rather than at the end of a long hold. */
    for (int i = 0; i < n && !(i > 0 && stopping); i++) {
      int64_t t = mono();
      int st = dlock_lock_state(l);
      logline("O %ld %ld %ld %s %d %" PRId64 " %" PRId64, self_pid, tid, seq, key, st,
              dlock_lock_remaining_ms(l), t);
      if (st != DLOCK_HELD)
        break;
      /* One write in four comes a while after its check, as after a GC
       * pause between checking and using a lock: under a pause or a cut
       * it reaches the resource late, and only fencing stops it. */
      int late = rnd() % 4 == 0;
      if (late)
        sleep_ms(hold / n);
      const char *res;
      resource_write(&rfd, key, token, tid, seq, &res);
      if (!late)
        sleep_ms(hold / n);
    }
    int64_t t = mono();
    rc = dlock_release(l);
    logline("E %ld %ld %ld %s %d %" PRId64, self_pid, tid, seq, key, rc, t);
  }
  if (rfd >= 0)
    close(rfd);
  return NULL;
}

static char **split_keys(const char *s, size_t *n) {
  char *copy = strdup(s);
  char **out = calloc(strlen(s) + 1, sizeof *out);
  if (!copy || !out)
    die("out of memory");
  *n = 0;
  for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
    out[(*n)++] = tok;
  if (*n == 0)
    die("--keys: empty");
  return out;
}

static int cmd_worker(int argc, char **argv) {
  W = (struct wopts){.threads = 2, .ttl_ms = 1000, .wait_ms = -1, .hold_min = 5, .hold_max = 60,
                     .writes = 4};
  const char *keys = "k0,k1", *url_env = NULL, *logp;
  int i = 0;
  for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    const char *o = argv[i], *v = argv[i + 1];
    if (!strcmp(o, "--keys"))
      keys = v;
    else if (!strcmp(o, "--threads"))
      W.threads = (int)num_arg(v, o);
    else if (!strcmp(o, "--port"))
      W.port = (int)num_arg(v, o);
    else if (!strcmp(o, "--ttl-ms"))
      W.ttl_ms = num_arg(v, o);
    else if (!strcmp(o, "--wait-ms"))
      W.wait_ms = num_arg(v, o);
    else if (!strcmp(o, "--long-key"))
      W.long_key = v;
    else if (!strcmp(o, "--hold-ms")) {
      char *colon = strchr(v, ':');
      if (!colon)
        die("--hold-ms MIN:MAX");
      *colon = 0;
      W.hold_min = num_arg(v, o);
      W.hold_max = num_arg(colon + 1, o);
    } else if (!strcmp(o, "--url-env"))
      url_env = v;
    else
      die("worker: unknown option %s", o);
  }
  if (argc - i != (url_env ? 1 : 2) || W.port <= 0 || W.threads < 1 || W.threads > 64 ||
      W.hold_max < W.hold_min)
    die("usage: dlock-faults worker --port P [--keys a,b] [--threads N] [--ttl-ms MS] "
        "[--wait-ms MS] [--hold-ms MIN:MAX] [--long-key KEY] {URL | --url-env VAR} LOG");
  /* --url-env keeps a password out of argv, where ps would show it. */
  W.url = url_env ? getenv(url_env) : argv[i++];
  if (!W.url)
    die("%s is not set", url_env);
  logp = argv[i];
  W.keys = split_keys(keys, &W.nkeys);
  open_log(logp);
  self_pid = (long)getpid();

  struct sigaction sa = {.sa_handler = on_stop};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* The store may be down for a while when a run starts right after a
   * restart: try until the first wait would have run out. */
  int64_t give_up = mono() + 30 * (int64_t)1000000000;
  int rc;
  while ((rc = dlock_open(W.url, &client)) != 0) {
    /* Asked to stop before the store was back: nothing to report. */
    if (stopping)
      return 0;
    if (rc != DLOCK_ECONN || mono() > give_up)
      die("open: %s", dlock_client_errmsg(NULL));
    sleep_ms(100);
  }
  logline("M %ld %s %" PRId64, self_pid, dlock_client_backend(client), W.ttl_ms);

  pthread_t th[65];
  int nth = W.threads + (W.long_key != NULL);
  for (int t = 0; t < nth; t++)
    if (pthread_create(&th[t], NULL, worker_thread,
                       t == W.threads ? (void *)W.long_key : NULL) != 0)
      die("pthread_create");
  for (int t = 0; t < nth; t++)
    pthread_join(th[t], NULL);
  dlock_close(client);
  return 0;
}

/* ---------------------------------------------------------------- writer */

/* COMMAND of `dlock run`: writes with DLOCK_TOKEN until it is killed.  Its
 * lines carry the pid of the `dlock run` it serves (DLOCK_FAULTS_RUNPID), the
 * process the runner kills. */
static int cmd_writer(int argc, char **argv) {
  if (argc != 1)
    die("usage: dlock-faults writer LOG (DLOCK_KEY, DLOCK_TOKEN, DLOCK_FAULTS_PORT, "
        "DLOCK_FAULTS_RUNPID, DLOCK_FAULTS_TTL_MS in the environment)");
  const char *key = getenv("DLOCK_KEY"), *tok = getenv("DLOCK_TOKEN");
  const char *port = getenv("DLOCK_FAULTS_PORT"), *run = getenv("DLOCK_FAULTS_RUNPID");
  const char *ttl = getenv("DLOCK_FAULTS_TTL_MS");
  if (!key || !tok || !port || !run || !ttl)
    die("writer: environment incomplete");
  open_log(argv[0]);
  W.port = (int)num_arg(port, "DLOCK_FAULTS_PORT");
  self_pid = (long)num_arg(run, "DLOCK_FAULTS_RUNPID");
  uint64_t token = (uint64_t)num_arg(tok, "DLOCK_TOKEN");
  long tid = tid_self(), seq = 1;
  signal(SIGPIPE, SIG_IGN);
  /* The grant was before this process started: its start is a safe (late)
   * grant time.  Its remaining time is unknown here; the ttl bounds it. */
  logline("R %ld %ld %ld %s %" PRId64 " %" PRId64, self_pid, tid, seq, key, mono(), wall());
  /* The runner says -1 for a store without expiry (DLOCK_FAULTS_REM_MS). */
  const char *rem = getenv("DLOCK_FAULTS_REM_MS");
  logline("G %ld %ld %ld %s %" PRIu64 " %s %s %" PRId64 " %" PRId64, self_pid, tid, seq, key,
          token, ttl, rem ? rem : ttl, mono(), wall());
  int fd = -1;
  /* Should the guardian fail to stop it, it stops by itself after a while
   * rather than write on after the run. */
  int64_t end = mono() + 60 * (int64_t)1000000000;
  while (mono() < end) {
    /* `dlock run` promises that COMMAND runs only while the lock is held:
     * being alive is this process's belief that it holds the lock. */
    logline("O %ld %ld %ld %s 1 0 %" PRId64, self_pid, tid, seq, key, mono());
    const char *res;
    resource_write(&fd, key, token, tid, seq, &res);
    sleep_ms(10);
  }
  return 1;
}

/* --------------------------------------------------------------- holding */

/* The pid of a process whose latest acquisition still stands in the
 * given worker histories (granted, and neither released nor seen lost),
 * the earliest granted; 0 if none.  The runner aims its faults at
 * it: a fault on a process that holds nothing tests nothing. */
struct open_acq {
  long pid, tid, seq;
  int open;
  int64_t g;
};

static int cmd_holding(int argc, char **argv) {
  static struct open_acq t[4096];
  size_t n = 0;
  /* --at T --pid P: only what happened before T counts, and the answer is
   * the exit status: 0 if P held a lock at T (the fault hit a holder). */
  int64_t at = INT64_MAX;
  long want = 0;
  while (argc >= 2 && argv[0][0] == '-') {
    if (!strcmp(argv[0], "--at"))
      at = num_arg(argv[1], "--at");
    else if (!strcmp(argv[0], "--pid"))
      want = (long)num_arg(argv[1], "--pid");
    else
      die("holding: unknown option %s", argv[0]);
    argc -= 2;
    argv += 2;
  }
  for (int i = 0; i < argc; i++) {
    FILE *f = fopen(argv[i], "r");
    if (!f)
      continue;
    char line[512];
    while (fgets(line, sizeof line, f)) {
      char kind = line[0], key[128];
      long pid, tid, seq;
      if ((kind != 'G' && kind != 'E' && kind != 'O') ||
          sscanf(line + 1, " %ld %ld %ld %127s", &pid, &tid, &seq, key) != 4)
        continue;
      size_t j = 0;
      while (j < n && (t[j].pid != pid || t[j].tid != tid))
        j++;
      if (j == n) {
        if (n == sizeof t / sizeof t[0])
          continue;
        t[n++] = (struct open_acq){.pid = pid, .tid = tid};
      }
      if (kind == 'G') {
        uint64_t token;
        int64_t ttl, rem, g;
        if (sscanf(line + 1, " %*d %*d %*d %*s %" SCNu64 " %" SCNd64 " %" SCNd64 " %" SCNd64,
                   &token, &ttl, &rem, &g) == 4 && g < at) {
          t[j].seq = seq;
          t[j].open = 1;
          t[j].g = g;
        }
      } else if (seq == t[j].seq) {
        int st = 1;
        int64_t when = INT64_MAX;
        if (kind == 'O')
          sscanf(line + 1, " %*d %*d %*d %*s %d %*d %" SCNd64, &st, &when);
        else
          sscanf(line + 1, " %*d %*d %*d %*s %*d %" SCNd64, &when);
        if ((kind == 'E' || st != DLOCK_HELD) && when < at)
          t[j].open = 0;
      }
    }
    fclose(f);
  }
  if (want) {
    for (size_t j = 0; j < n; j++)
      if (t[j].pid == want && t[j].open)
        return 0;
    return 1;
  }
  /* The one held longest so far: most likely a long hold, still held when
   * the fault strikes. */
  long best = 0;
  int64_t best_g = INT64_MAX;
  for (size_t j = 0; j < n; j++)
    if (t[j].open && t[j].g < best_g) {
      best = t[j].pid;
      best_g = t[j].g;
    }
  printf("%ld\n", best);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2)
    die("usage: dlock-faults resource|worker|writer|holding|now ... | --version");
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("dlock-faults %s\n", DLOCK_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "now")) {
    printf("%" PRId64 "\n", mono());
    return 0;
  }
  if (!strcmp(cmd, "resource"))
    return cmd_resource(argc - 2, argv + 2);
  if (!strcmp(cmd, "worker"))
    return cmd_worker(argc - 2, argv + 2);
  if (!strcmp(cmd, "writer"))
    return cmd_writer(argc - 2, argv + 2);
  if (!strcmp(cmd, "holding"))
    return cmd_holding(argc - 2, argv + 2);
  die("unknown command %s", cmd);
  return 2;
}
