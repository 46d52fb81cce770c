/* Dispatch of conf_break_lock() by URL scheme. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backends/file/file-path.h"
#include "dlock/consul.h"
#include "dlock/mem.h"
#include "dlock/zk.h"
#include "faults.h"
#include "internal.h"

/* Unlink KEY's lock file: 0, or -1 (errno says why). */
static int unlink_file(const char *url, const char *key) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0)
    return -1;
  char path[PATH_MAX];
  int rc = dlock__file_key_path(dlock_url_path(u), key, strlen(key), path, sizeof path);
  dlock__url_free(u);
  if (rc < 0)
    return -1;
  return unlink(path) == 0 ? 0 : -1;
}

static int break_file(const char *url, const char *key) { return unlink_file(url, key); }

/* A released key may have no file left: forgotten already. */
static int forget_file(const char *url, const char *key) {
  return unlink_file(url, key) == 0 || errno == ENOENT ? 0 : -1;
}

static int break_mem(const char *url, const char *key) {
  dlock_client *c;
  if (dlock_open(url, &c) < 0)
    return -1;
  int rc = dlock_control(c, NULL, DLOCK_MEM_CTL_EVICT, (void *)key);
  dlock_close(c);
  return rc == 0 ? 0 : -1;
}

static int forget_mem(const char *url, const char *key) {
  (void)url;
  (void)key;
  return 1; /* in-process counters cannot be lost from outside */
}

/* Per store: delete the holder behind its back, and forget the key
 * entirely (fencing counter included). */
static const struct {
  const char *prefix;
  int (*break_lock)(const char *url, const char *key);
  int (*forget_key)(const char *url, const char *key);
} injectors[] = {
    {"file:", break_file, forget_file}, /* the counter lives in the file */
    {"mem:", break_mem, forget_mem},
#ifdef DLOCK_HAVE_REDIS
    {"redis", conf_redis_break_lock, conf_redis_forget_key},
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
    {"zk:", conf_zk_break_lock, conf_zk_forget_key},
#endif
#ifdef DLOCK_HAVE_POSTGRES
    {"postgres", conf_pg_break_lock, conf_pg_forget_key}, /* and postgresql: */
#endif
#ifdef DLOCK_HAVE_ETCD
    {"etcd", conf_etcd_break_lock, conf_etcd_forget_key}, /* and etcd+https, etcd+grpc(s): */
#endif
#ifdef DLOCK_HAVE_CONSUL
    {"consul", conf_consul_break_lock, conf_consul_forget_key}, /* and consul+https: */
#endif
};

static int find_injector(const char *url) {
  for (size_t i = 0; i < sizeof injectors / sizeof *injectors; i++)
    if (strncmp(url, injectors[i].prefix, strlen(injectors[i].prefix)) == 0)
      return (int)i;
  fprintf(stderr, "conformance: no fault injector for %s\n", url);
  return -1;
}

int conf_break_lock(const char *url, const char *key) {
  int i = find_injector(url);
  return i < 0 ? -1 : injectors[i].break_lock(url, key);
}

int conf_forget_key(const char *url, const char *key) {
  int i = find_injector(url);
  return i < 0 ? -1 : injectors[i].forget_key(url, key);
}

/* Consul: a session's TTL is at least 10 s, the servers invalidate it only
 * after twice that without a renewal, and its keys then stay unavailable
 * for the session's lock-delay; 10 s of slack on top, as for the others. */
#define CONSUL_SESSION_TTL_MIN_MS 10000

int64_t conf_lock_delay_ms(const char *url) {
  if (strncmp(url, "consul", 6) != 0)
    return 0;
#if defined(DLOCK_HAVE_CONSUL) && defined(DLOCK_CONSUL_CTL_LOCK_DELAY)
  dlock_client *c;
  int64_t ms = -1;
  if (dlock_open(url, &c) == 0) {
    if (dlock_control(c, NULL, DLOCK_CONSUL_CTL_LOCK_DELAY, &ms) != 0)
      ms = -1;
    dlock_close(c);
  }
  if (ms >= 0)
    return ms;
#endif
#ifdef DLOCK_HAVE_CONSUL
  /* Until the client tells: what its URL parser makes of ?lock_delay=,
   * with the backend's default. */
  return conf_consul_lock_delay_ms(url);
#else
  return 0;
#endif
}

/* ZooKeeper: a lock lasts as long as its session, whose timeout the
 * server negotiates within its own limits (2 to 20 ticks by default); the
 * client says what it got for a session of ttl TTL_MS. */
static int64_t zk_session_ms(const char *url, int64_t ttl_ms) {
  int64_t got = -1;
#if defined(DLOCK_HAVE_ZOOKEEPER) && defined(DLOCK_ZK_CTL_SESSION_TIMEOUT)
  char extra[64];
  snprintf(extra, sizeof extra, "ttl=%lldms", (long long)ttl_ms);
  dlock_client *c;
  if (dlock_open(conf_url_with(url, extra), &c) == 0) {
    if (dlock_control(c, NULL, DLOCK_ZK_CTL_SESSION_TIMEOUT, &got) != 0)
      got = -1;
    dlock_close(c);
  }
#else
  (void)url;
#endif
  return got > ttl_ms ? got : ttl_ms;
}

int64_t conf_orphan_bound_ms(const char *url, int64_t ttl_ms) {
  if (strncmp(url, "zk:", 3) == 0)
    return zk_session_ms(url, ttl_ms) + 10000;
  if (strncmp(url, "consul", 6) != 0)
    return ttl_ms + 10000;
  int64_t ttl = ttl_ms > CONSUL_SESSION_TTL_MIN_MS ? ttl_ms : CONSUL_SESSION_TTL_MIN_MS;
  return 2 * ttl + conf_lock_delay_ms(url) + 10000;
}

const char *conf_run_id = "";

const char *conf_key(const char *name) {
  static _Thread_local char buf[256];
  snprintf(buf, sizeof buf, "conf-%s/%s", conf_run_id, name);
  return buf;
}

bool conf_in_prefix(const char *key) {
  char p[128];
  int n = snprintf(p, sizeof p, "conf-%s/", conf_run_id);
  return strncmp(key, p, (size_t)n) == 0;
}

char *conf_url_with(const char *base, const char *extra) {
  static _Thread_local char buf[4096];
  snprintf(buf, sizeof buf, "%s%s%s", base, strchr(base, '?') ? "&" : "?", extra);
  return buf;
}

const char *conf_pg_run_prefix(void) {
  static _Thread_local char buf[64];
  snprintf(buf, sizeof buf, "conf_%s", conf_run_id);
  for (char *p = buf; *p; p++)
    if (*p == '-')
      *p = '_';
  return buf;
}
