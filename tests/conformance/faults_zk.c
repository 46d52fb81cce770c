/* ZooKeeper fault injection for the conformance suite: a session of our own
 * deletes lock nodes behind the client's back, the way an operator's
 * `deleteall` or another misbehaving client would. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The synchronous API is declared only for the multi-threaded library. */
#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backends/zookeeper/zk-codec.h"
#include "faults.h"
#include "internal.h"

/* For zk_cases.c: a raw session on URL's ensemble (resuming session CID
 * when given), and KEY's lock dir in *dir when DIR is given.  Close with
 * conf_zk_close. */
zhandle_t *conf_zk_open(const char *url, const char *key, const clientid_t *cid, char **dir,
                        watcher_fn extra, void *extra_ctx);
void conf_zk_close(zhandle_t *zh);

struct conn {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int connected;
  watcher_fn extra;
  void *extra_ctx;
};

static void conn_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
  struct conn *c = ctx;
  if (type != ZOO_SESSION_EVENT) {
    if (c->extra)
      c->extra(zh, type, state, path, c->extra_ctx);
    return;
  }
  pthread_mutex_lock(&c->mu);
  if (state == ZOO_CONNECTED_STATE)
    c->connected = 1;
  else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE)
    c->connected = -1;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static void fault_log(const char *m) { (void)m; }

/* A session on the ensemble named by URL, logged in as its userinfo says;
 * *dir gets KEY's lock dir.  NULL (and a line on stderr) on failure.  The
 * conn must stay alive until zookeeper_close. */
static zhandle_t *open_for_key(const char *url, const char *key, struct conn *c, char **dir,
                               const clientid_t *cid) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0) {
    fprintf(stderr, "faults_zk: bad URL: %s\n", dlock_client_errmsg(NULL));
    return NULL;
  }
  char *hosts = NULL, *root = NULL;
  const char *prefix = NULL;
  dlock_url_param(u, "prefix", &prefix);
  zhandle_t *zh = NULL;
  if (dlock__zk_connect_string(u, &hosts) < 0 ||
      dlock__zk_root(dlock_url_path(u), prefix, &root) < 0) {
    fprintf(stderr, "faults_zk: %s\n", dlock_client_errmsg(NULL));
    goto out;
  }
  if (dir)
    *dir = dlock__zk_lock_dir(root, key, strlen(key));
  zh = zookeeper_init2(hosts, conn_watcher, 10000, cid, c, 0, fault_log);
  if (!zh)
    goto out;
  struct timespec ts;
  dlock__ns_to_timespec(dlock__now_ns() + 10000000000LL, &ts);
  pthread_mutex_lock(&c->mu);
  while (c->connected == 0)
    if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0)
      break;
  int ok = c->connected == 1;
  pthread_mutex_unlock(&c->mu);
  if (ok && dlock_url_user(u)) {
    char cred[512];
    snprintf(cred, sizeof cred, "%s:%s", dlock_url_user(u),
             dlock_url_password(u) ? dlock_url_password(u) : "");
    /* The synchronous calls below queue behind the login. */
    ok = zoo_add_auth(zh, "digest", cred, (int)strlen(cred), NULL, NULL) == ZOK;
  }
  if (!ok) {
    fprintf(stderr, "faults_zk: no session with %s\n", hosts);
    zookeeper_close(zh);
    zh = NULL;
  }
out:
  if (!zh && dir) {
    free(*dir);
    *dir = NULL;
  }
  free(hosts);
  free(root);
  dlock__url_free(u);
  return zh;
}

static void conn_init(struct conn *c) {
  pthread_mutex_init(&c->mu, NULL);
  dlock__cond_init(&c->cv);
  c->connected = 0;
}

static void conn_destroy(struct conn *c) {
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

/* Delete DIR's queue entries: all of them, or only the first (the holder). */
static int delete_entries(zhandle_t *zh, const char *dir, int only_first) {
  struct String_vector sv = {0, NULL};
  int rc = zoo_get_children(zh, dir, 0, &sv);
  if (rc != ZOK) {
    fprintf(stderr, "faults_zk: list %s: %s\n", dir, zerror(rc));
    return -1;
  }
  int ret = 0;
  dlock__zk_child *kids = calloc((size_t)sv.count + 1, sizeof *kids);
  size_t n = kids ? dlock__zk_sort_children((const char *const *)sv.data, (size_t)sv.count, kids)
                  : 0;
  if (only_first && n == 0) {
    fprintf(stderr, "faults_zk: nobody holds %s\n", dir);
    ret = -1;
  }
  for (int32_t i = 0; i < sv.count && ret == 0; i++) {
    const char *name = only_first ? kids[0].name : sv.data[i];
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rc = zoo_delete(zh, path, -1);
    if (rc != ZOK && rc != ZNONODE) {
      fprintf(stderr, "faults_zk: delete %s: %s\n", path, zerror(rc));
      ret = -1;
    }
    if (only_first)
      break;
  }
  free(kids);
  deallocate_String_vector(&sv);
  return ret;
}

/* FORGET: every entry and the dir itself, as if the key never existed;
 * otherwise only the holder's entry. */
static int zk_delete(const char *url, const char *key, int forget) {
  struct conn c;
  conn_init(&c);
  char *dir = NULL;
  zhandle_t *zh = open_for_key(url, key, &c, &dir, NULL);
  int rc = -1;
  if (zh) {
    rc = delete_entries(zh, dir, !forget);
    if (rc == 0 && forget) {
      int d = zoo_delete(zh, dir, -1);
      if (d != ZOK && d != ZNONODE) {
        fprintf(stderr, "faults_zk: delete %s: %s\n", dir, zerror(d));
        rc = -1;
      }
    }
    zookeeper_close(zh);
  }
  free(dir);
  conn_destroy(&c);
  return rc;
}

int conf_zk_break_lock(const char *url, const char *key) { return zk_delete(url, key, 0); }

int conf_zk_forget_key(const char *url, const char *key) { return zk_delete(url, key, 1); }

zhandle_t *conf_zk_open(const char *url, const char *key, const clientid_t *cid, char **dir,
                        watcher_fn extra, void *extra_ctx) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  conn_init(c);
  c->extra = extra;
  c->extra_ctx = extra_ctx;
  zhandle_t *zh = open_for_key(url, key ? key : "x", c, dir, cid);
  if (!zh) {
    conn_destroy(c);
    free(c);
  }
  return zh;
}

void conf_zk_close(zhandle_t *zh) {
  struct conn *c = (struct conn *)zoo_get_context(zh);
  zookeeper_close(zh);
  conn_destroy(c);
  free(c);
}
