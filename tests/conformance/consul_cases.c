/* Cases only Consul has: locks shared with `consul lock`, the lock-delay
 * that follows a destroyed session, a session destroyed from outside, one
 * session renewal per period for many locks, a short-ttl lock given back
 * by the client while its session lives on, the ACL token kept out of
 * every message, waits on keys the agent refuses in a path, and breaking
 * a lock: a `consul lock` holder's, and one of a client whose session
 * carries other locks. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "backends/consul/consul-codec.h"
#include "dlock/admin.h"
#include "dlock/dlock.h"
#include "event.h"
#include "faults.h"
#include "internal.h"
#include "many.h"

extern char **environ;

static const char *c_url;

static int64_t now_ms(void) { return dlock__now_ns() / 1000000; }

static dlock_client *open_url(const char *url) {
  dlock_client *c = NULL;
  int rc = dlock_open(url, &c);
  if (rc != 0)
    fail_msg("dlock_open: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
  return c;
}

#define ASSERT_RC(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    if (rc_ != (want))                                                         \
      fail_msg("%s = %s (%d), want %s: %s", #expr, dlock_err_name(rc_), rc_,   \
               dlock_err_name(want), dlock_client_errmsg(NULL));               \
  } while (0)

static struct dlock_consul_stats stats_of(dlock_client *c) {
  struct dlock_consul_stats s;
  ASSERT_RC(dlock_control(c, NULL, DLOCK_CONSUL_CTL_STATS, &s), 0);
  return s;
}

/* The session under held lock L (NULL: the client's default one). */
static void session_of(dlock_client *c, dlock_lock *l, char id[DLOCK_CONSUL_SESSION_MAX]) {
  ASSERT_RC(dlock_control(c, l, DLOCK_CONSUL_CTL_SESSION, id), 0);
  assert_true(id[0] != '\0');
}

static dlock_options opts(int64_t ttl_ms, int64_t wait_ms, int auto_renew) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = ttl_ms;
  o.wait_ms = wait_ms;
  o.auto_renew = auto_renew;
  return o;
}

/* Some conditions can only be seen by asking: the store's keys and
 * sessions, a client's counters.  The waits below ask again after this
 * pause, each until its own bound; the pause only keeps them from
 * spinning. */
static void pause_between_looks(long ms) {
  struct timespec ts = {ms / 1000, ms % 1000 * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

__attribute__((format(printf, 1, 2))) static char *dupf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0)
    fail_msg("out of memory");
  return s;
}

/* BASE with parameter NAME set to VALUE (replacing any NAME= it has), in
 * a static buffer. */
static const char *url_set(const char *base, const char *name, const char *value) {
  static _Thread_local char buf[4096];
  const char *q = strchr(base, '?');
  size_t n = strlen(name);
  int w = snprintf(buf, sizeof buf, "%.*s?", (int)(q ? q - base : (ptrdiff_t)strlen(base)), base);
  for (const char *p = q ? q + 1 : NULL; p && *p;) {
    size_t len = strcspn(p, "&");
    if (!(len > n && strncmp(p, name, n) == 0 && p[n] == '='))
      w += snprintf(buf + w, sizeof buf - (size_t)w, "%.*s&", (int)len, p);
    p += len + (p[len] == '&');
  }
  snprintf(buf + w, sizeof buf - (size_t)w, "%s=%s", name, value);
  return buf;
}

/* KEY's lock key at the store: 1 (and *kv), or 0 when it does not exist. */
static int kv_get(const char *key, dlock__consul_kv *kv) {
  int rc = conf_consul_get(c_url, key, kv);
  if (rc < 0)
    fail_msg("cannot read the lock key of '%s' at the store", key);
  return rc;
}

/* The session holding KEY's lock key ("" when none) and its ModifyIndex. */
static uint64_t holder_of(const char *key, char sid[DLOCK_CONSUL_SESSION_MAX]) {
  dlock__consul_kv kv;
  int found = kv_get(key, &kv);
  snprintf(sid, DLOCK_CONSUL_SESSION_MAX, "%s", found ? kv.session : "");
  uint64_t idx = found ? kv.modify_index : 0;
  dlock__consul_kv_free(&kv);
  return idx;
}

/* The ID of the live session named NAME, in ID ("" when none). */
static void session_named(const char *name, char id[DLOCK_CONSUL_SESSION_MAX]) {
  char *answer = NULL;
  int st = conf_consul_request(c_url, "GET", "/v1/session/list?consistent", NULL, &answer);
  if (st != 200)
    fail_msg("session list: HTTP %d: %s", st, answer ? answer : "");
  cJSON *j = cJSON_Parse(answer);
  free(answer);
  id[0] = '\0';
  const cJSON *s;
  cJSON_ArrayForEach(s, j) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(s, "Name");
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(s, "ID");
    if (cJSON_IsString(n) && cJSON_IsString(i) && strcmp(n->valuestring, name) == 0)
      snprintf(id, DLOCK_CONSUL_SESSION_MAX, "%s", i->valuestring);
  }
  cJSON_Delete(j);
}

/* Session ID's TTL as the agent reports it, in ms (-1: unknown session). */
static int64_t session_ttl_ms(const char *id) {
  char path[160], *answer = NULL;
  snprintf(path, sizeof path, "/v1/session/info/%s?consistent", id);
  int st = conf_consul_request(c_url, "GET", path, NULL, &answer);
  if (st != 200)
    fail_msg("session info: HTTP %d: %s", st, answer ? answer : "");
  cJSON *j = cJSON_Parse(answer);
  free(answer);
  const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, 0), "TTL");
  int64_t ms = cJSON_IsString(ttl) ? dlock__consul_duration_ms(ttl->valuestring) : -1;
  cJSON_Delete(j);
  return ms;
}

/* ---- `consul lock` as a separate process ---- */

struct clock {
  pid_t pid;
  int in;  /* its stdin: the child command reads it until we close it */
  int out; /* its stdout: its -verbose lines and the child's */
  char buf[4096];
  size_t len;
};

/* Whatever a failed case leaves running is stopped by cl_teardown. */
static struct clock g_cl = {.pid = -1, .in = -1, .out = -1};

/* The child `consul lock` runs once it holds the lock: says so, then
 * waits for its stdin to end. */
#define CL_CHILD "echo HELD; cat >/dev/null; echo DONE"

static const char *consul_bin(const char *name) {
  const char *bin = getenv("DLOCK_TEST_CONSUL");
  if (bin && *bin)
    return bin;
  if (getenv("DLOCK_CONFORMANCE_STRICT"))
    fail_msg("DLOCK_TEST_CONSUL is not set: CI must run the `consul lock` case %s "
             "(scripts/test sets it)", name);
  printf("# SKIPPED %s: DLOCK_TEST_CONSUL (the consul binary) is not set "
         "(scripts/test sets it)\n", name);
  skip();
  return NULL;
}

/* `consul lock -name=NAME PREFIX CL_CHILD` against the agent of c_url,
 * over its TLS files.  The ACL token goes through the environment (the
 * command line is readable by anyone); the caller's other CONSUL_*
 * variables are dropped so that only the URL says where to go. */
static void cl_start(struct clock *e, const char *bin, const char *prefix, const char *name) {
  dlock_url *u;
  if (dlock__url_parse(c_url, &u) < 0)
    fail_msg("bad URL: %s", dlock_client_errmsg(NULL));
  char *addr = conf_consul_agent_addr(c_url, 0);
  assert_non_null(addr);
  char *argv[16], *own[16];
  size_t na = 0, no = 0;
  argv[na++] = (char *)bin;
  argv[na++] = "lock";
  argv[na++] = own[no++] = dupf("-http-addr=%s", addr);
  static const char *const files[][2] = {
      {"cacert", "-ca-file"}, {"cert", "-client-cert"}, {"key", "-client-key"}};
  for (size_t i = 0; i < 3; i++) {
    const char *v;
    if (dlock_url_param(u, files[i][0], &v))
      argv[na++] = own[no++] = dupf("%s=%s", files[i][1], v);
  }
  argv[na++] = "-verbose";
  argv[na++] = "-pass-stdin";
  argv[na++] = own[no++] = dupf("-name=%s", name);
  argv[na++] = (char *)prefix;
  argv[na++] = CL_CHILD;
  argv[na] = NULL;

  const char *tok = NULL;
  if (!dlock_url_param(u, "token", &tok))
    tok = getenv("CONSUL_HTTP_TOKEN");
  size_t ne = 0;
  while (environ[ne])
    ne++;
  char **env = calloc(ne + 4, sizeof *env);
  assert_non_null(env);
  size_t m = 0;
  for (size_t i = 0; i < ne; i++)
    if (strncmp(environ[i], "CONSUL_", 7) != 0 && strncmp(environ[i], "SHELL=", 6) != 0)
      env[m++] = environ[i];
  env[m++] = "SHELL=/bin/sh";
  if (tok && *tok)
    env[m++] = own[no++] = dupf("CONSUL_HTTP_TOKEN=%s", tok);
  env[m] = NULL;

  int in[2], out[2];
  assert_int_equal(pipe2(in, O_CLOEXEC), 0);
  assert_int_equal(pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  fflush(NULL);
  int rc = posix_spawnp(&e->pid, bin, &fa, NULL, argv, env);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  for (size_t i = 0; i < no; i++)
    free(own[i]);
  free(env);
  free(addr);
  dlock__url_free(u);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    e->pid = -1;
    fail_msg("cannot run %s: %s", bin, strerror(rc));
  }
  e->in = in[1];
  e->out = out[0];
  e->len = 0;
}

/* The next non-empty line it prints: 1, 0 when none came within
 * TIMEOUT_MS, -1 when its output ended. */
static int cl_line(struct clock *e, char *line, size_t size, int64_t timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  for (;;) {
    char *nl;
    while ((nl = memchr(e->buf, '\n', e->len))) {
      size_t n = (size_t)(nl - e->buf);
      snprintf(line, size, "%.*s", (int)n, e->buf);
      memmove(e->buf, nl + 1, e->len - n - 1);
      e->len -= n + 1;
      if (n)
        return 1;
    }
    int64_t left = end - now_ms();
    struct pollfd pfd = {.fd = e->out, .events = POLLIN};
    int r = poll(&pfd, 1, left > 0 ? (int)left : 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0)
      return 0;
    if (e->len == sizeof e->buf)
      e->len = 0;
    ssize_t got = read(e->out, e->buf + e->len, sizeof e->buf - e->len);
    if (got <= 0)
      return -1;
    e->len += (size_t)got;
  }
}

/* Read lines until one starts with WANT (copied into LINE): 1, 0 on
 * timeout, -1 when the output ended first.  Every line is echoed. */
static int cl_expect(struct clock *e, const char *want, char *line, size_t size,
                     int64_t timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  int r;
  while ((r = cl_line(e, line, size, end - now_ms())) == 1) {
    printf("# consul lock: %s\n", line);
    if (strncmp(line, want, strlen(want)) == 0)
      return 1;
  }
  return r;
}

/* Wait for it to exit (after closing its stdin, or a signal): its exit
 * status, or -1 if it had to be killed after 20 s. */
static int cl_wait(struct clock *e) {
  if (e->pid < 0)
    return -1;
  char line[512];
  int r;
  int64_t end = now_ms() + 20000;
  while ((r = cl_line(e, line, sizeof line, end - now_ms())) == 1)
    printf("# consul lock: %s\n", line);
  if (r == 0)
    kill(e->pid, SIGKILL);
  int st = 0;
  while (waitpid(e->pid, &st, 0) < 0 && errno == EINTR)
    ;
  if (e->in >= 0)
    close(e->in);
  close(e->out);
  e->pid = -1;
  e->in = e->out = -1;
  if (r == 0)
    return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Let its child end: `consul lock` then releases the lock and exits. */
static int cl_finish(struct clock *e) {
  if (e->in >= 0) {
    close(e->in);
    e->in = -1;
  }
  return cl_wait(e);
}

static int cl_teardown(void **state) {
  (void)state;
  if (g_cl.pid > 0) {
    /* SIGTERM: it ends its child and gives the lock back. */
    kill(g_cl.pid, SIGTERM);
    cl_wait(&g_cl);
  }
  return 0;
}

/* ---- a: dlock and `consul lock` exclude each other ---- */

struct waiter {
  dlock_client *c;
  const char *key;
  int64_t ttl_ms, wait_ms;
  bool hold; /* keep the lock until GATE */
  int rc, release_rc;
  uint64_t token;
  char sid[DLOCK_CONSUL_SESSION_MAX]; /* the session it holds the lock with */
  int64_t got_ms;
  struct event done, gate, released;
};

static void waiter_init(struct waiter *w, dlock_client *c, const char *key, int64_t wait_ms,
                        bool hold) {
  *w = (struct waiter){.c = c, .key = key, .ttl_ms = 10000, .wait_ms = wait_ms, .hold = hold};
  event_init(&w->done);
  event_init(&w->gate);
  event_init(&w->released);
}

/* Acquires, notes the token, releases (when told to, if it holds). */
static void *waiter_main(void *arg) {
  struct waiter *w = arg;
  dlock_options o = opts(w->ttl_ms, w->wait_ms, 1);
  dlock_lock *l;
  w->rc = dlock_acquire(w->c, w->key, &o, &l);
  w->got_ms = now_ms();
  if (w->rc == 0) {
    w->token = dlock_lock_token(l);
    if (dlock_control(w->c, l, DLOCK_CONSUL_CTL_SESSION, w->sid) != 0)
      w->sid[0] = '\0';
  }
  event_signal(&w->done);
  if (w->rc == 0) {
    if (w->hold)
      event_wait(&w->gate, 1, 120000);
    w->release_rc = dlock_release(l);
  }
  event_signal(&w->released);
  return NULL;
}

/* Until client C's blocking-query count grows (it waits on the store, not
 * in a retry loop) while W is still waiting.  The backend counts a query
 * when it returns, so this takes one blocking round (a third of W's ttl)
 * at most; counted when sent, it would take none. */
static void wait_blocking(dlock_client *c, const struct dlock_consul_stats *s0,
                          struct waiter *w) {
  for (int64_t end = now_ms() + 20000;;) {
    struct dlock_consul_stats s = stats_of(c);
    if (event_wait(&w->done, 1, 0) != 0)
      fail_msg("the waiter returned %s before the key was free: %s", dlock_err_name(w->rc),
               dlock_client_errmsg(NULL));
    if (s.blocking > s0->blocking)
      return;
    if (now_ms() > end)
      fail_msg("the waiter sent no blocking query within 20 s");
    pause_between_looks(20);
  }
}

static void a_consul_lock_interop(void **state) {
  (void)state;
  const char *bin = consul_bin("a_consul_lock_interop");
  static char k[256]; /* the waiter thread reads it */
  char line[1024], name[128], ctl_sid[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
  snprintf(k, sizeof k, "%s", conf_key("a1"));
  snprintf(name, sizeof name, "dlock-conformance %s a1", conf_run_id);
  char *lock_key = conf_consul_lock_key(c_url, k);
  assert_non_null(lock_key);
  /* `consul lock PREFIX` keeps its lock in PREFIX/.lock. */
  size_t pl = strlen(lock_key) - strlen("/.lock");
  assert_string_equal(lock_key + pl, "/.lock");
  char *prefix = dupf("%.*s", (int)pl, lock_key);
  dlock_client *c = open_url(c_url), *wc = open_url(c_url);
  dlock_options o = opts(10000, 0, 1);
  dlock_lock *l;

  /* `consul lock` first: it runs its child once it holds the lock. */
  cl_start(&g_cl, bin, prefix, name);
  char want[1200];
  snprintf(want, sizeof want, "Setting up lock at path: %s", lock_key);
  if (cl_expect(&g_cl, "Setting up lock at path:", line, sizeof line, 20000) != 1)
    fail_msg("consul lock %s said nothing of its lock path within 20 s", prefix);
  assert_string_equal(line, want); /* the very key dlock uses */
  if (cl_expect(&g_cl, "HELD", line, sizeof line, 20000) != 1)
    fail_msg("consul lock %s did not run its command within 20 s", prefix);
  session_named(name, ctl_sid);
  assert_true(ctl_sid[0] != '\0');
  uint64_t ctl_index = holder_of(k, sid);
  assert_string_equal(sid, ctl_sid);
  ASSERT_RC(dlock_try_acquire(c, k, &o, &l), DLOCK_EBUSY);
  dlock_info info;
  ASSERT_RC(dlock_inspect(c, k, &info), 0);
  assert_int_equal(info.held, 1);
  assert_int_equal(info.token, ctl_index);
  assert_string_equal(info.owner, ""); /* consul lock stores no owner */

  /* A dlock waiter, blocked on the key, gets it once the command ends.
   * It keeps the lock until consul lock has exited, so that what consul
   * lock finds when it cleans up is always a held key (it leaves it be). */
  static struct waiter w;
  waiter_init(&w, wc, k, 30000, true);
  struct dlock_consul_stats ws0 = stats_of(wc);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
  wait_blocking(wc, &ws0, &w);
  assert_int_equal(event_wait(&w.done, 1, 0), 0);
  holder_of(k, sid);
  assert_string_equal(sid, ctl_sid);
  int64_t t0 = now_ms();
  if (close(g_cl.in) == 0)
    g_cl.in = -1;
  assert_int_equal(event_wait(&w.done, 1, 20000), 1);
  ASSERT_RC(w.rc, 0);
  struct dlock_consul_stats ws1 = stats_of(wc);
  printf("# dlock waiter got the lock %lld ms after consul lock's command was let end "
         "(lock-delays seen: %llu)\n",
         (long long)(w.got_ms - t0), (unsigned long long)(ws1.lock_delays - ws0.lock_delays));
  assert_true(w.token > ctl_index);
  /* consul lock releases before it destroys its session: no lock-delay. */
  assert_int_equal(ws1.lock_delays, ws0.lock_delays);
  assert_true(w.got_ms - t0 < 10000);
  assert_int_equal(cl_wait(&g_cl), 0);
  /* It left the key to its holder. */
  holder_of(k, sid);
  assert_true(w.sid[0] != '\0');
  assert_string_equal(sid, w.sid);
  event_signal(&w.gate);
  assert_int_equal(event_wait(&w.released, 1, 20000), 1);
  pthread_join(th, NULL);
  ASSERT_RC(w.release_rc, 0);
  /* What a release leaves must still be a key `consul lock` accepts (it
   * refuses one whose Flags are not its own).  Checked again at the end,
   * after consul lock has shown what it does with it. */
  dlock__consul_kv kv;
  bool flags_kept = true;
  if (kv_get(k, &kv)) {
    printf("# after dlock's release the lock key has Flags %s, session '%s'\n",
           kv.lock_flag ? "= consul lock's" : kv.has_flags ? "= something else" : "0",
           kv.session);
    flags_kept = kv.lock_flag;
  }
  dlock__consul_kv_free(&kv);

  /* Now dlock first: `consul lock` waits, and runs its command only once
   * dlock lets go. */
  ASSERT_RC(dlock_try_acquire(c, k, &o, &l), 0);
  uint64_t tok = dlock_lock_token(l);
  char mine[DLOCK_CONSUL_SESSION_MAX];
  session_of(c, l, mine);
  snprintf(name, sizeof name, "dlock-conformance %s a2", conf_run_id);
  cl_start(&g_cl, bin, prefix, name);
  if (cl_expect(&g_cl, "Attempting lock acquisition", line, sizeof line, 20000) != 1)
    fail_msg("consul lock %s did not start to acquire within 20 s", prefix);
  /* Its session exists once it is in its acquire loop. */
  for (int64_t end = now_ms() + 20000;;) {
    session_named(name, ctl_sid);
    if (ctl_sid[0])
      break;
    if (now_ms() > end)
      fail_msg("consul lock created no session within 20 s");
    pause_between_looks(20);
  }
  int r = cl_line(&g_cl, line, sizeof line, 1000);
  if (r != 0)
    fail_msg("consul lock %s while dlock holds the lock: '%s'",
             r < 0 ? "exited" : "printed", r < 0 ? "" : line);
  holder_of(k, sid);
  assert_string_equal(sid, mine);
  ASSERT_RC(dlock_lock_state(l), DLOCK_HELD);
  ASSERT_RC(dlock_release(l), 0);
  r = cl_expect(&g_cl, "HELD", line, sizeof line, 20000);
  if (r != 1) {
    bool flag = false;
    if (kv_get(k, &kv))
      flag = kv.lock_flag;
    dlock__consul_kv_free(&kv);
    fail_msg("consul lock %s instead of running its command after dlock's release (the "
             "released key has %s Flags)",
             r < 0 ? "exited" : "waited 20 s", flag ? "consul lock's" : "other");
  }
  ctl_index = holder_of(k, sid);
  assert_string_equal(sid, ctl_sid);
  assert_true(ctl_index > tok);
  ASSERT_RC(dlock_try_acquire(c, k, &o, &l), DLOCK_EBUSY);
  assert_int_equal(cl_finish(&g_cl), 0);
  /* Given back, not left in a lock-delay: free at once. */
  ASSERT_RC(dlock_try_acquire(c, k, &o, &l), 0);
  assert_true(dlock_lock_token(l) > ctl_index);
  ASSERT_RC(dlock_release(l), 0);
  if (!flags_kept)
    fail_msg("dlock's release left the lock key without consul lock's Flags");
  dlock_close(wc);
  dlock_close(c);
  free(prefix);
  free(lock_key);
}

/* ---- b: the lock-delay of a destroyed session is waited out ---- */

static void b_lock_delay(void **state) {
  (void)state;
  static char k[256]; /* the waiter thread reads it */
  snprintf(k, sizeof k, "%s", conf_key("b1"));
  const int64_t delay = 3000, ttl = 10000;
  dlock_client *a = open_url(url_set(c_url, "lock_delay", "3s"));
  dlock_client *b = open_url(c_url);
  struct event lost;
  event_init(&lost);
  dlock_options o = opts(ttl, 0, 1);
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *la;
  ASSERT_RC(dlock_try_acquire(a, k, &o, &la), 0);
  uint64_t tok = dlock_lock_token(la);
  char sa[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
  session_of(a, la, sa);
  holder_of(k, sid);
  assert_string_equal(sid, sa);

  static struct waiter w;
  waiter_init(&w, b, k, 20000, false);
  struct dlock_consul_stats s0 = stats_of(b);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
  wait_blocking(b, &s0, &w);

  int64_t t0 = now_ms();
  assert_int_equal(conf_consul_break_lock(c_url, k), 0);
  /* A's next renewal finds its session gone. */
  assert_int_equal(event_wait(&lost, 1, ttl + 500), 1);
  printf("# A told of the loss %lld ms after its session was destroyed\n",
         (long long)(now_ms() - t0));
  ASSERT_RC(dlock_lock_state(la), DLOCK_LOST);
  assert_int_equal(event_wait(&w.done, 1, 20000), 1);
  pthread_join(th, NULL);
  ASSERT_RC(w.rc, 0);
  int64_t el = w.got_ms - t0;
  struct dlock_consul_stats s1 = stats_of(b);
  printf("# B got the lock %lld ms after the destroy (lock-delay %lld ms; %llu lock-delays "
         "seen)\n",
         (long long)el, (long long)delay, (unsigned long long)(s1.lock_delays - s0.lock_delays));
  /* Not before the lock-delay (a little slack: it runs from the servers'
   * invalidation, which follows our t0), and not the 15 s default. */
  assert_true(el >= delay - 500);
  assert_true(el < 15000);
  assert_true(s1.lock_delays >= s0.lock_delays + 1);
  assert_true(w.token > tok);
  ASSERT_RC(dlock_release(la), DLOCK_ELOST);
  dlock_close(a);
  dlock_close(b);
}

/* ---- c: the session destroyed from outside ---- */

static void c_session_destroyed(void **state) {
  (void)state;
  const int64_t ttl = 3000;
  char k[256], k2[256];
  snprintf(k, sizeof k, "%s", conf_key("c1"));
  snprintf(k2, sizeof k2, "%s", conf_key("c1-other"));
  dlock_client *c = open_url(c_url);
  struct event lost;
  event_init(&lost);
  dlock_options o = opts(ttl, 0, 1);
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l, *l2;
  ASSERT_RC(dlock_try_acquire(c, k, &o, &l), 0);
  uint64_t tok = dlock_lock_token(l);
  char s[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
  session_of(c, l, s);
  assert_int_equal(holder_of(k, sid), tok); /* the token is the key's ModifyIndex */
  assert_string_equal(sid, s);
  struct dlock_consul_stats s0 = stats_of(c);

  int64_t t0 = now_ms();
  assert_int_equal(conf_consul_destroy_session(c_url, s), 0);
  /* The next renewal, a third of a ttl away, finds it gone. */
  assert_int_equal(event_wait(&lost, 1, ttl + 500), 1);
  printf("# loss reported %lld ms after the session was destroyed (ttl %lld ms)\n",
         (long long)(now_ms() - t0), (long long)ttl);
  assert_int_equal(lost.token, tok);
  ASSERT_RC(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(event_wait(&lost, 2, ttl), 1); /* once */
  assert_int_equal(conf_consul_session_alive(c_url, s), 0);
  ASSERT_RC(dlock_release(l), DLOCK_ELOST);

  /* The same client goes on, on a session of its own making: at once for
   * another key, after the lock-delay for this one. */
  o.on_lost = NULL;
  ASSERT_RC(dlock_try_acquire(c, k2, &o, &l2), 0);
  dlock_options w = opts(ttl, conf_lock_delay_ms(c_url) + 10000, 1);
  ASSERT_RC(dlock_acquire(c, k, &w, &l), 0);
  struct dlock_consul_stats s1 = stats_of(c);
  assert_true(s1.sessions > s0.sessions);
  char s2[DLOCK_CONSUL_SESSION_MAX];
  session_of(c, l, s2);
  assert_string_not_equal(s2, s);
  holder_of(k, sid);
  assert_string_equal(sid, s2);
  assert_true(dlock_lock_token(l) > tok);
  ASSERT_RC(dlock_lock_state(l), DLOCK_HELD);
  ASSERT_RC(dlock_renew(l, 0), 0);
  ASSERT_RC(dlock_release(l2), 0);
  ASSERT_RC(dlock_release(l), 0);
  dlock_close(c);
}

/* ---- d: one session renewal per period for many locks ---- */

#define SHARED 100

static void d_one_renewal_per_period(void **state) {
  (void)state;
  const int64_t ttl = 3000, period = ttl / 3;
  dlock_client *c = open_url(c_url);
  dlock_lock **ls = calloc(SHARED, sizeof *ls);
  assert_non_null(ls);
  dlock_options o = opts(ttl, 0, 1);
  char k[64];
  int64_t start = now_ms();
  for (int i = 0; i < SHARED; i++) {
    snprintf(k, sizeof k, "d/%d", i);
    ASSERT_RC(dlock_try_acquire(c, conf_key(k), &o, &ls[i]), 0);
  }
  char s0id[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
  session_of(c, ls[0], s0id);
  for (int i = 1; i < SHARED; i++) {
    session_of(c, ls[i], sid);
    if (strcmp(sid, s0id) != 0)
      fail_msg("lock %d rides on session %s, lock 0 on %s", i, sid, s0id);
  }
  /* A 3 s ttl gets Consul's 10 s minimum for its session. */
  int64_t sttl = session_ttl_ms(s0id);
  printf("# the session of %d locks of ttl %lld ms has TTL %lld ms\n", SHARED, (long long)ttl,
         (long long)sttl);
  assert_int_equal(sttl, 10000);
  struct dlock_consul_stats s0 = stats_of(c);
  dlock_metrics m0, m;
  dlock_metrics_get(c, &m0);
  int64_t t0 = now_ms();
  /* Every lock renewed three times, and past its first ttl: only the
   * renewals can have kept them. */
  for (;;) {
    dlock_metrics_get(c, &m);
    if (m.renew_ok - m0.renew_ok >= 3 * SHARED && now_ms() - start > ttl + period)
      break;
    if (now_ms() - t0 > 30000)
      fail_msg("%llu renewals in 30 s, want %d", (unsigned long long)(m.renew_ok - m0.renew_ok),
               3 * SHARED);
    pause_between_looks(20);
  }
  int64_t t1 = now_ms();
  struct dlock_consul_stats s1 = stats_of(c);
  int64_t periods = (t1 - t0) / period + 1;
  uint64_t sent = s1.renewals - s0.renewals;
  printf("# %d locks, %lld ms (%lld renew periods): %llu session renewals, %llu lock renewals\n",
         SHARED, (long long)(t1 - t0), (long long)periods, (unsigned long long)sent,
         (unsigned long long)(m.renew_ok - m0.renew_ok));
  assert_true(sent >= 2);
  assert_true(sent <= (uint64_t)(2 * periods + 2));
  assert_int_equal(s1.sessions, s0.sessions);
  assert_int_equal(m.lost, m0.lost);
  for (int i = 0; i < SHARED; i++)
    if (dlock_lock_state(ls[i]) != DLOCK_HELD)
      fail_msg("lock %d not held after %lld ms", i, (long long)(t1 - start));
  dlock_client *b = open_url(c_url);
  for (int i = 0; i < SHARED; i += 17) {
    dlock_lock *lb;
    snprintf(k, sizeof k, "d/%d", i);
    ASSERT_RC(dlock_try_acquire(b, conf_key(k), &o, &lb), DLOCK_EBUSY);
    holder_of(conf_key(k), sid);
    assert_string_equal(sid, s0id);
  }
  dlock_close(b);
  for (int i = 0; i < SHARED; i++)
    ASSERT_RC(dlock_release(ls[i]), 0);
  free(ls);
  dlock_close(c);
}

/* ---- e: a short ttl not renewed is given back while its session lives ---- */

static void e_short_ttl_given_back(void **state) {
  (void)state;
  const int64_t ttl = 1000;
  char k[256], k2[256];
  snprintf(k, sizeof k, "%s", conf_key("e1"));
  snprintf(k2, sizeof k2, "%s", conf_key("e1-renewed"));
  dlock_client *a = open_url(c_url), *b = open_url(c_url);
  struct event lost;
  event_init(&lost);
  dlock_options once = opts(ttl, 0, 0), kept = opts(ttl, 0, 1);
  once.on_lost = event_on_lost;
  once.on_lost_arg = &lost;
  dlock_lock *l, *l2, *lb;
  int64_t t0 = now_ms();
  ASSERT_RC(dlock_try_acquire(a, k, &once, &l), 0);
  ASSERT_RC(dlock_try_acquire(a, k2, &kept, &l2), 0);
  uint64_t tok = dlock_lock_token(l);
  char s1[DLOCK_CONSUL_SESSION_MAX], s2[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
  session_of(a, l, s1);
  session_of(a, l2, s2);
  assert_string_equal(s1, s2); /* one session, kept alive by K2's renewals */
  dlock_options t = opts(30000, 0, 1);
  ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
  struct dlock_consul_stats sb0 = stats_of(b);

  dlock_options w = opts(30000, 10000, 1);
  ASSERT_RC(dlock_acquire(b, k, &w, &lb), 0);
  int64_t el = now_ms() - t0;
  printf("# the unrenewed %lld ms lock was free %lld ms after it was taken\n", (long long)ttl,
         (long long)el);
  assert_true(el < ttl + 4000);
  assert_true(dlock_lock_token(lb) > tok);
  /* Given back by the client (a release), not left to a lock-delay. */
  struct dlock_consul_stats sb1 = stats_of(b);
  assert_int_equal(sb1.lock_delays, sb0.lock_delays);
  /* The client had said so (once), before it gave the key back. */
  assert_int_equal(event_wait(&lost, 1, 2000), 1);
  ASSERT_RC(dlock_lock_state(l), DLOCK_LOST);
  /* The session lives on, holding K2. */
  ASSERT_RC(dlock_lock_state(l2), DLOCK_HELD);
  assert_int_equal(conf_consul_session_alive(c_url, s1), 1);
  holder_of(k2, sid);
  assert_string_equal(sid, s1);
  ASSERT_RC(dlock_release(lb), 0);
  ASSERT_RC(dlock_release(l), DLOCK_ELOST);
  ASSERT_RC(dlock_release(l2), 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- g: keys the agent refuses in a path still wait on the store ---- */

/* The agent answers 400 to a /v1/kv/ path holding a character Go does not
 * deem printable, so such a key cannot be waited on at its own path.  Its
 * lock key keeps its name (the same layout as every other key), and a
 * waiter blocks on a listing of its printable prefix: one blocking query
 * per change there, not a lock attempt per pause.  A key whose path is
 * several KB blocks at that path. */
static void g_refused_path_waits(void **state) {
  (void)state;
  static char keys[4][DLOCK_KEY_MAX + 1]; /* the waiter thread reads them */
  snprintf(keys[0], sizeof keys[0], "%s\xe2\x80\x8b", conf_key("g1")); /* U+200B */
  snprintf(keys[1], sizeof keys[1], "%s\x01x", conf_key("g2"));
  /* Nothing printable before it: the prefix is the client's own. */
  snprintf(keys[2], sizeof keys[2], "\xe2\x80\xa8%s", conf_key("g3")); /* U+2028 */
  conf_note_key(keys[2]);
  /* And a key the agent takes whose path is long: 512 bytes, mostly '/',
   * each of which is %2F in the lock key and %252F in its path. */
  int n = snprintf(keys[3], sizeof keys[3], "%s/", conf_key("g4"));
  memset(keys[3] + n, '/', DLOCK_KEY_MAX - (size_t)n);
  keys[3][DLOCK_KEY_MAX] = '\0';
  dlock_client *a = open_url(c_url), *b = open_url(c_url);
  for (size_t i = 0; i < 4; i++) {
    const char *k = keys[i];
    dlock_options o = opts(30000, 0, 1);
    dlock_lock *l;
    ASSERT_RC(dlock_try_acquire(a, k, &o, &l), 0);
    /* Held at the store under its raw name, by A's session. */
    char mine[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
    session_of(a, l, mine);
    uint64_t idx = holder_of(k, sid);
    assert_string_equal(sid, mine);
    assert_int_equal(idx, dlock_lock_token(l));

    static struct waiter w;
    waiter_init(&w, b, k, 30000, false);
    struct dlock_consul_stats s0 = stats_of(b);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    wait_blocking(b, &s0, &w);
    /* A second held: no further lock attempts, it sits in its query. */
    struct dlock_consul_stats s1 = stats_of(b);
    assert_int_equal(event_wait(&w.done, 1, 1000), 0);
    struct dlock_consul_stats s2 = stats_of(b);
    printf("# key %zu: %llu lock attempts and %llu blocking queries while held for 1 s\n", i,
           (unsigned long long)(s2.locks - s1.locks),
           (unsigned long long)(s2.blocking - s1.blocking));
    assert_true(s2.locks - s1.locks <= 1);
    int64_t t0 = now_ms();
    ASSERT_RC(dlock_release(l), 0);
    assert_int_equal(event_wait(&w.done, 1, 20000), 1);
    ASSERT_RC(w.rc, 0);
    printf("# key %zu: the waiter got it %lld ms after the release\n", i,
           (long long)(w.got_ms - t0));
    assert_true(w.got_ms - t0 < 1000);
    assert_int_equal(event_wait(&w.released, 1, 20000), 1);
    pthread_join(th, NULL);
    ASSERT_RC(w.release_rc, 0);
    holder_of(k, sid);
    assert_string_equal(sid, "");
  }
  dlock_close(a);
  dlock_close(b);
}

/* ---- f: the ACL token is never shown ---- */

#define SECRET "s3cr3t-consul-f-token"

static void no_secret(const char *what, const char *text) {
  if (strstr(text, SECRET))
    fail_msg("%s shows the token: %s", what, text);
}

static void f_token_hidden(void **state) {
  (void)state;
  char url[4096];
  snprintf(url, sizeof url, "%s", url_set(c_url, "token", SECRET));
  dlock_client *c = NULL;
  int rc = dlock_open(url, &c);
  no_secret("the open error", dlock_client_errmsg(NULL));
  /* An agent with ACLs may refuse an unknown token: that is an answer too. */
  if (rc == DLOCK_EAUTH) {
    printf("# the agent refused the made-up token: %s\n", dlock_client_errmsg(NULL));
  } else {
    ASSERT_RC(rc, 0);
    printf("# dlock_client_url: %s\n", dlock_client_url(c));
    no_secret("dlock_client_url", dlock_client_url(c));
    assert_non_null(strstr(dlock_client_url(c), "token="));
    dlock_options o = opts(30000, 0, 1);
    dlock_lock *l, *lh;
    ASSERT_RC(dlock_try_acquire(c, "", &o, &l), DLOCK_EINVAL);
    no_secret("an EINVAL message", dlock_client_errmsg(NULL));
    dlock_client *h = open_url(c_url);
    char k[256];
    snprintf(k, sizeof k, "%s", conf_key("f1"));
    ASSERT_RC(dlock_try_acquire(h, k, &o, &lh), 0);
    ASSERT_RC(dlock_try_acquire(c, k, &o, &l), DLOCK_EBUSY);
    no_secret("an EBUSY message", dlock_client_errmsg(NULL));
    dlock_options w = opts(30000, 300, 1);
    ASSERT_RC(dlock_acquire(c, k, &w, &l), DLOCK_ETIMEDOUT);
    no_secret("an ETIMEDOUT message", dlock_client_errmsg(NULL));
    ASSERT_RC(dlock_release(lh), 0);
    /* Waiting, not trying: the timed-out wait's last lock txn may have
     * been cut short by its deadline, and the client then keeps the key
     * until that attempt is given back. */
    dlock_options again = opts(30000, 20000, 1);
    ASSERT_RC(dlock_acquire(c, k, &again, &l), 0);
    ASSERT_RC(dlock_release(l), 0);
    ASSERT_RC(dlock_control(c, NULL, 0x6399, &o), DLOCK_ENOTSUP);
    no_secret("an ENOTSUP message", dlock_client_errmsg(NULL));
    dlock_close(h);
    dlock_close(c);
  }
  char redacted[4096];
  dlock_url_redact(url, redacted, sizeof redacted);
  no_secret("dlock_url_redact", redacted);

  /* Refused URLs: an unknown parameter, a malformed token, nobody
   * listening. */
  c = (dlock_client *)0x1;
  ASSERT_RC(dlock_open(conf_url_with(url, "bogus_f=1"), &c), DLOCK_EINVAL);
  no_secret("the unknown-parameter message", dlock_client_errmsg(NULL));
  assert_non_null(strstr(dlock_client_errmsg(NULL), "bogus_f"));
  ASSERT_RC(dlock_open(url_set(c_url, "token", SECRET "%0A"), &c), DLOCK_EINVAL);
  no_secret("the malformed-token message", dlock_client_errmsg(NULL));
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
  char dead[512];
  snprintf(dead, sizeof dead, "consul://127.0.0.1:%d?token=%s&connect_timeout=1s&timeout=1s",
           ntohs(sa.sin_port), SECRET);
  close(s);
  ASSERT_RC(dlock_open(dead, &c), DLOCK_ECONN);
  no_secret("the ECONN message", dlock_client_errmsg(NULL));
  assert_ptr_equal(c, (dlock_client *)0x1);
}

/* ---- h, i: breaking a lock ---- */

#define LISTED_MAX 8

struct listed {
  int n;
  char keys[LISTED_MAX][DLOCK_KEY_MAX + 1];
  dlock_info infos[LISTED_MAX];
};

static int note_listed(void *arg, const char *key, const dlock_info *info) {
  struct listed *ls = arg;
  if (ls->n == LISTED_MAX)
    fail_msg("dlock_list reported more than %d locks", LISTED_MAX);
  snprintf(ls->keys[ls->n], sizeof ls->keys[ls->n], "%s", key);
  ls->infos[ls->n++] = *info;
  return 0;
}

/* What LS says of KEY; fails the case when it does not report KEY. */
static const dlock_info *listed_info(const struct listed *ls, const char *key) {
  for (int i = 0; i < ls->n; i++)
    if (strcmp(ls->keys[i], key) == 0)
      return &ls->infos[i];
  fail_msg("dlock_list did not report '%s'", key);
  return NULL;
}

/* A `consul lock` holder is listed as the store shows it (no owner, no
 * label) and broken by its token.  The break deletes the key rather than
 * ending the holder's session: the key is free at once, with no
 * lock-delay, `consul lock` sees its lock gone and ends its command, and
 * what it does on its way out (give back with its session, destroy that
 * session, clean up a key that is not in use) leaves the new holder
 * alone. */
static void h_break_consul_lock(void **state) {
  (void)state;
  const char *bin = consul_bin("h_break_consul_lock");
  char k[256], line[1024], name[128], ctl_sid[DLOCK_CONSUL_SESSION_MAX],
      sid[DLOCK_CONSUL_SESSION_MAX], mine[DLOCK_CONSUL_SESSION_MAX];
  snprintf(k, sizeof k, "%s", conf_key("h1"));
  snprintf(name, sizeof name, "dlock-conformance %s h1", conf_run_id);
  char *lock_key = conf_consul_lock_key(c_url, k);
  assert_non_null(lock_key);
  char *prefix = dupf("%.*s", (int)(strlen(lock_key) - strlen("/.lock")), lock_key);
  dlock_client *c = open_url(c_url);
  cl_start(&g_cl, bin, prefix, name);
  if (cl_expect(&g_cl, "HELD", line, sizeof line, 20000) != 1)
    fail_msg("consul lock %s did not run its command within 20 s", prefix);
  session_named(name, ctl_sid);
  assert_true(ctl_sid[0] != '\0');
  uint64_t ctl_index = holder_of(k, sid);
  assert_string_equal(sid, ctl_sid);

  struct listed ls = {0};
  ASSERT_RC(dlock_list(c, k, note_listed, &ls), 0);
  assert_int_equal(ls.n, 1);
  const dlock_info *li = listed_info(&ls, k);
  assert_int_equal(li->held, 1);
  assert_int_equal(li->token, ctl_index);
  assert_string_equal(li->owner, "");
  assert_string_equal(li->label, "");
  assert_int_equal(li->ttl_ms, session_ttl_ms(ctl_sid));

  /* Named by its token, as it has no owner. */
  dlock_info h, got;
  memset(&h, 0, sizeof h);
  h.token = ctl_index + 1;
  ASSERT_RC(dlock_break(c, k, &h, &got), DLOCK_EBUSY);
  holder_of(k, sid);
  assert_string_equal(sid, ctl_sid);
  h.token = ctl_index;
  struct dlock_consul_stats s0 = stats_of(c);
  int64_t t0 = now_ms();
  ASSERT_RC(dlock_break(c, k, &h, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, ctl_index);
  assert_string_equal(got.owner, "");
  dlock_options o = opts(10000, 0, 1);
  dlock_lock *l;
  ASSERT_RC(dlock_try_acquire(c, k, &o, &l), 0);
  assert_true(dlock_lock_token(l) > ctl_index);
  assert_int_equal(stats_of(c).lock_delays, s0.lock_delays);
  session_of(c, l, mine);

  if (cl_expect(&g_cl, "Lock lost", line, sizeof line, 20000) != 1)
    fail_msg("consul lock did not see its lock broken within 20 s");
  printf("# consul lock saw its lock broken %lld ms after the break\n",
         (long long)(now_ms() - t0));
  int st = cl_wait(&g_cl);
  printf("# consul lock exited with status %d\n", st);
  assert_true(st >= 0);
  holder_of(k, sid);
  assert_string_equal(sid, mine);
  ASSERT_RC(dlock_lock_state(l), DLOCK_HELD);
  ASSERT_RC(dlock_renew(l, 0), 0);
  ASSERT_RC(dlock_release(l), 0);
  dlock_close(c);
  free(prefix);
  free(lock_key);
}

/* One session carries all of a client's locks of a ttl: breaking one of
 * them must not end it.  The broken lock turns LOST at the next renewal
 * (a third of its ttl), the client's other locks stay held and renew, a
 * waiter blocked on the key gets it as after a release (at once, with no
 * lock-delay), and the broken client's late release fails without
 * touching the waiter's lock.  One of the keys is one the agent refuses
 * in a /v1/kv/ path: listing and breaking go through txns. */
static void i_break_keeps_the_session(void **state) {
  (void)state;
  const int64_t ttl = 3000;
  static char k1[300]; /* the waiter thread reads it */
  char k2[300], k3[300], pre[256];
  snprintf(pre, sizeof pre, "%s", conf_key("i/"));
  snprintf(k1, sizeof k1, "%sone", pre);
  snprintf(k2, sizeof k2, "%stwo", pre);
  snprintf(k3, sizeof k3, "%sthree\xe2\x80\x8b", pre); /* U+200B */
  dlock_client *a = open_url(c_url), *b = open_url(c_url), *wc = open_url(c_url);
  struct event lost1, lost2, lost3;
  event_init(&lost1);
  event_init(&lost2);
  event_init(&lost3);
  dlock_options o = opts(ttl, 0, 1);
  o.owner_label = "i holder";
  dlock_lock *l1, *l2, *l3;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost1;
  ASSERT_RC(dlock_try_acquire(a, k1, &o, &l1), 0);
  o.on_lost_arg = &lost2;
  ASSERT_RC(dlock_try_acquire(a, k2, &o, &l2), 0);
  o.on_lost_arg = &lost3;
  ASSERT_RC(dlock_try_acquire(a, k3, &o, &l3), 0);
  uint64_t tok1 = dlock_lock_token(l1), tok3 = dlock_lock_token(l3);
  char sa[DLOCK_CONSUL_SESSION_MAX], sid[DLOCK_CONSUL_SESSION_MAX];
  session_of(a, l1, sa);
  session_of(a, l2, sid);
  assert_string_equal(sid, sa);
  session_of(a, l3, sid);
  assert_string_equal(sid, sa);

  struct listed ls = {0};
  ASSERT_RC(dlock_list(b, pre, note_listed, &ls), 0);
  assert_int_equal(ls.n, 3);
  dlock_lock *mine[3] = {l1, l2, l3};
  const char *keys[3] = {k1, k2, k3};
  for (int i = 0; i < 3; i++) {
    const dlock_info *li = listed_info(&ls, keys[i]);
    dlock_info in;
    ASSERT_RC(dlock_inspect(b, keys[i], &in), 0);
    assert_int_equal(li->token, dlock_lock_token(mine[i]));
    assert_string_equal(li->owner, dlock_lock_owner(mine[i]));
    assert_string_equal(li->label, "i holder");
    assert_int_equal(li->ttl_ms, in.ttl_ms); /* the session's TTL, as inspect says */
    assert_true(li->ttl_ms >= ttl);
  }

  static struct waiter w;
  waiter_init(&w, wc, k1, 20000, true);
  struct dlock_consul_stats ws0 = stats_of(wc);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
  wait_blocking(wc, &ws0, &w);

  dlock_info seen, got;
  ASSERT_RC(dlock_inspect(b, k1, &seen), 0);
  int64_t t0 = now_ms();
  ASSERT_RC(dlock_break(b, k1, &seen, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, tok1);
  assert_string_equal(got.owner, dlock_lock_owner(l1));
  assert_string_equal(got.label, "i holder");
  assert_int_equal(event_wait(&w.done, 1, 10000), 1);
  ASSERT_RC(w.rc, 0);
  printf("# the waiter got the broken lock %lld ms after the break\n",
         (long long)(w.got_ms - t0));
  /* Far below the default 15 s lock-delay a session's end would start;
   * that none started at all is the count below. */
  assert_true(w.got_ms - t0 < 5000);
  assert_int_equal(stats_of(wc).lock_delays, ws0.lock_delays);
  assert_true(w.token > tok1);

  assert_int_equal(event_wait(&lost1, 1, ttl + 1000), 1);
  int64_t el = now_ms() - t0;
  printf("# the broken holder saw the loss %lld ms after the break (ttl %lld ms)\n",
         (long long)el, (long long)ttl);
  assert_true(el < ttl + 1000);
  assert_int_equal(lost1.token, tok1);
  ASSERT_RC(dlock_lock_state(l1), DLOCK_LOST);
  /* The session lives on with the client's other locks. */
  assert_int_equal(conf_consul_session_alive(c_url, sa), 1);
  ASSERT_RC(dlock_renew(l2, 0), 0);
  ASSERT_RC(dlock_renew(l3, 0), 0);
  holder_of(k2, sid);
  assert_string_equal(sid, sa);
  holder_of(k3, sid);
  assert_string_equal(sid, sa);
  assert_int_equal(event_wait(&lost2, 1, 0), 0);
  assert_int_equal(event_wait(&lost3, 1, 0), 0);

  /* The late release and a break of the holder looked at before leave
   * the waiter's lock alone. */
  ASSERT_RC(dlock_release(l1), DLOCK_ELOST);
  ASSERT_RC(dlock_break(b, k1, &seen, &got), DLOCK_EBUSY);
  holder_of(k1, sid);
  assert_true(w.sid[0] != '\0');
  assert_string_equal(sid, w.sid);

  /* By token alone, on the key refused in a path. */
  dlock_info h;
  memset(&h, 0, sizeof h);
  h.token = tok3 + 1;
  ASSERT_RC(dlock_break(b, k3, &h, &got), DLOCK_EBUSY);
  h.token = tok3;
  ASSERT_RC(dlock_break(b, k3, &h, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, tok3);
  assert_string_equal(got.owner, dlock_lock_owner(l3));
  assert_int_equal(event_wait(&lost3, 1, ttl + 1000), 1);
  ASSERT_RC(dlock_release(l3), DLOCK_ELOST);
  ASSERT_RC(dlock_break(b, k3, NULL, &got), 0);
  assert_int_equal(got.held, 0);
  ASSERT_RC(dlock_lock_state(l2), DLOCK_HELD);
  ASSERT_RC(dlock_renew(l2, 0), 0);

  event_signal(&w.gate);
  assert_int_equal(event_wait(&w.released, 1, 20000), 1);
  pthread_join(th, NULL);
  ASSERT_RC(w.release_rc, 0);
  ASSERT_RC(dlock_release(l2), 0);
  struct listed after = {0};
  ASSERT_RC(dlock_list(b, pre, note_listed, &after), 0);
  assert_int_equal(after.n, 0);
  dlock_close(a);
  dlock_close(b);
  dlock_close(wc);
}

/* Cases of faults_consul.c. */
extern const char *conf_consul_url;
void conf_consul_stale_give_back(void **state);
void conf_consul_renew_404_catching_up(void **state);
void conf_consul_late_grant_given_back(void **state);
void conf_consul_release_after_key_gone(void **state);

/* ---- j: many locks, checked by one read of the tree ---- */

/* One in ten with a key the agent would refuse in a path. */
static void j_name(int i, char *buf, size_t len) {
  snprintf(buf, len, i % 10 ? "j/%d" : "j/%d\xe2\x80\x8b", i);
}

static void j_lose(const char *key) { assert_int_equal(conf_consul_forget_key(c_url, key), 0); }

static void j_counts(dlock_client *c, uint64_t *bulk, uint64_t *txns) {
  struct dlock_consul_checks k;
  ASSERT_RC(dlock_control(c, NULL, DLOCK_CONSUL_CTL_CHECKS, &k), 0);
  *bulk = k.trees;
  *txns = k.txns;
}

/* Key checks only for the two locks a tree did not show held: in one txn
 * the pass that found them, or in the pass after a tree read that failed. */
static uint64_t j_max_txns(uint64_t bulk) { return bulk; }

/* Past a few check txns' worth of locks, a renew pass reads the prefix's
 * tree once instead: a key deleted from outside, or taken by another
 * session after that, must still turn its lock LOST within a ttl, and
 * only that lock. */
static void j_many_locks_checked_by_tree(void **state) {
  (void)state;
  const struct conf_many m = {c_url, 300, 3000, j_name, j_lose, j_counts, "tree reads",
                              j_max_txns};
  conf_many_two_lost(&m);
}

const struct conf_case *conf_consul_cases(const char *url, size_t *n) {
  c_url = url;
  conf_consul_url = url;
  static const struct conf_case cases[] = {
      {"a_consul_lock_interop",
       "dlock and `consul lock` exclude each other",
       a_consul_lock_interop, cl_teardown, 0},
      {"b_lock_delay",
       "an acquisition waits out the lock-delay of a destroyed session",
       b_lock_delay, NULL, 0},
      {"c_session_destroyed",
       "a destroyed session turns its locks LOST",
       c_session_destroyed, NULL, 0},
      {"d_one_renewal_per_period",
       "one session renewal per period for many locks",
       d_one_renewal_per_period, NULL, 0},
      {"e_short_ttl_given_back",
       "a ttl under the session minimum is given back as asked",
       e_short_ttl_given_back, NULL, 0},
      {"f_token_hidden", "the ACL token never appears in messages", f_token_hidden, NULL, 0},
      {"g_refused_path_waits",
       "keys the agent refuses in a path still wait and wake",
       g_refused_path_waits, NULL, 0},
      {"h_break_consul_lock",
       "breaking a `consul lock` holder frees the key at once and ends its command",
       h_break_consul_lock, cl_teardown, 0},
      {"i_break_keeps_the_session",
       "a break turns one lock LOST and leaves its session's others held",
       i_break_keeps_the_session, NULL, 0},
      {"j_many_locks_checked_by_tree",
       "with many locks, a key deleted or taken from outside turns only its lock LOST",
       j_many_locks_checked_by_tree, NULL, 0},
      {"conf_consul_stale_give_back",
       "a give-back the agent carries out late does not free a later lock",
       conf_consul_stale_give_back, NULL, 0},
      {"conf_consul_renew_404_catching_up",
       "a renewal answered 404 by a leader still applying its log keeps the lock",
       conf_consul_renew_404_catching_up, NULL, 0},
      {"conf_consul_late_grant_given_back",
       "a grant the agent carries out after its client gave up is given back",
       conf_consul_late_grant_given_back, NULL, 0},
      {"conf_consul_release_after_key_gone",
       "a release whose key is already gone reports the lock lost",
       conf_consul_release_after_key_gone, NULL, 0},
  };
  *n = sizeof cases / sizeof *cases;
  return cases;
}
