/* Removing what a run made, per store, through the store's own client.
 *
 * Every key of a run starts with conf_key("") ("conf-<run id>/"); each
 * backend maps a key to its store's names by escaping it byte by byte, so
 * the names of all of a run's keys start with the name of that prefix, and
 * one prefix delete in the backend's layout takes them all:
 *   redis     <prefix>lock:{K} and <prefix>fence:{K}   SCAN MATCH + UNLINK
 *   etcd      <prefix>esc(K)/<lease>                   deleterange
 *   consul    <prefix>esc(K) (and `consul lock`'s K/.lock)  txn delete-tree
 *   zookeeper <root>/esc(K)/...                        recursive delete
 *   postgres  lease rows name = K                       DELETE by prefix
 *   file      <dir>/esc(K)[.d/...].lock                 unlink, rmdir
 * Keys that cannot start with the prefix (a leading control byte) are
 * given to conf_note_key() and forgotten one by one.  Beside keys, some
 * store cases make things of their own (ACL users, a ZooKeeper root,
 * tables of another prefix, sessions); those are named after the run id
 * and removed here too. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/file/file-path.h"
#include "faults.h"
#include "internal.h"

static pthread_mutex_t noted_mu = PTHREAD_MUTEX_INITIALIZER;
static char **noted;
static size_t n_noted, cap_noted;

void conf_note_key(const char *key) {
  pthread_mutex_lock(&noted_mu);
  for (size_t i = 0; i < n_noted; i++)
    if (strcmp(noted[i], key) == 0) {
      pthread_mutex_unlock(&noted_mu);
      return;
    }
  if (n_noted == cap_noted) {
    size_t cap = cap_noted ? 2 * cap_noted : 32;
    char **p = realloc(noted, cap * sizeof *p);
    if (p) {
      noted = p;
      cap_noted = cap;
    }
  }
  char *k = n_noted < cap_noted ? strdup(key) : NULL;
  if (k)
    noted[n_noted++] = k;
  else
    fprintf(stderr, "cleanup: out of memory noting a key; it may be left behind\n");
  pthread_mutex_unlock(&noted_mu);
}

/* The run's prefix, "conf-<run id>/". */
static const char *run_prefix(void) {
  static char p[128];
  snprintf(p, sizeof p, "%s", conf_key(""));
  return p;
}

/* The name under which the store of URL keeps every key that starts with
 * the run's prefix, from NAME_OF (the store's name for one key): what the
 * names of two such keys have in common, so that whatever the layout adds
 * after a key (Consul's "/.lock" of `consul lock`) is left out.  Malloc'd,
 * NULL when out of memory. */
static char *run_prefix_name(const char *url, char *(*name_of)(const char *url, const char *key)) {
  char ka[160], kb[160];
  snprintf(ka, sizeof ka, "%sa", run_prefix());
  snprintf(kb, sizeof kb, "%sb", run_prefix());
  char *a = name_of(url, ka), *b = name_of(url, kb);
  if (a && b) {
    size_t n = 0;
    while (a[n] && a[n] == b[n])
      n++;
    a[n] = '\0';
  }
  free(b);
  if (!b) {
    free(a);
    return NULL;
  }
  return a;
}

/* ---- file:// ---- */

/* The part of a file:// directory that did not exist when the run began
 * (the backend makes it): its topmost missing ancestor, removed at the end
 * if empty by then. */
static char file_made_top[PATH_MAX];
/* Whether the directory's fencing counter was there before the run. */
static bool file_fence_was_there;

static void file_begin(const char *dir) {
  file_made_top[0] = '\0';
  char fence[PATH_MAX];
  snprintf(fence, sizeof fence, "%s/.fence", dir);
  file_fence_was_there = access(fence, F_OK) == 0;
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s", dir);
  struct stat st;
  while (p[0] && strcmp(p, "/") != 0 && stat(p, &st) != 0 && errno == ENOENT) {
    snprintf(file_made_top, sizeof file_made_top, "%s", p);
    char *slash = strrchr(p, '/');
    if (!slash)
      break;
    *slash = '\0';
  }
}

static int remove_tree(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? 0 : -1;
  if (!S_ISDIR(st.st_mode))
    return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
  DIR *d = opendir(path);
  if (!d)
    return -1;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    if (remove_tree(sub) < 0)
      rc = -1;
  }
  closedir(d);
  if (rmdir(path) != 0 && errno != ENOENT)
    rc = -1;
  return rc;
}

/* DIR's escaped name of KEY's first path component, without ".lock". */
static int file_name_of(const char *dir, const char *key, char *out, size_t outsz) {
  char path[PATH_MAX];
  if (dlock__file_key_path(dir, key, strlen(key), path, sizeof path) < 0)
    return -1;
  size_t dl = strlen(dir);
  const char *name = path + dl + (path[dl] == '/');
  size_t n = strcspn(name, "/");
  if (n >= 5 && name[n] == '\0' && strcmp(name + n - 5, ".lock") == 0)
    n -= 5;
  snprintf(out, outsz, "%.*s", (int)n, name);
  return 0;
}

static int file_cleanup(const char *dir) {
  char pre[256];
  if (file_name_of(dir, run_prefix(), pre, sizeof pre) < 0)
    return -1;
  int rc = 0;
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (strncmp(e->d_name, pre, strlen(pre)) != 0)
        continue;
      char sub[PATH_MAX];
      snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
      if (remove_tree(sub) < 0) {
        fprintf(stderr, "cleanup: cannot remove %s: %s\n", sub, strerror(errno));
        rc = -1;
      }
    }
    closedir(d);
  }
  /* A noted key's file, and the ".d" directories a long one is split
   * into, each removed once it is empty. */
  for (size_t i = 0; i < n_noted; i++) {
    char path[PATH_MAX];
    if (dlock__file_key_path(dir, noted[i], strlen(noted[i]), path, sizeof path) < 0)
      continue;
    if (unlink(path) != 0 && errno != ENOENT) {
      fprintf(stderr, "cleanup: cannot remove %s: %s\n", path, strerror(errno));
      rc = -1;
    }
    size_t dl = strlen(dir);
    for (char *slash = strrchr(path, '/'); slash && (size_t)(slash - path) > dl;
         slash = strrchr(path, '/')) {
      *slash = '\0';
      if (rmdir(path) != 0)
        break;
    }
  }
  /* The counter the run's first lock made: the directory had no lock
   * whose token it could set back. */
  if (!file_fence_was_there) {
    char fence[PATH_MAX];
    snprintf(fence, sizeof fence, "%s/.fence", dir);
    unlink(fence);
  }
  if (file_made_top[0]) {
    /* Up from DIR to what the run made, as far as each is empty. */
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    while (strlen(p) >= strlen(file_made_top) && rmdir(p) == 0) {
      char *slash = strrchr(p, '/');
      if (!slash || slash == p)
        break;
      *slash = '\0';
    }
  }
  return rc;
}

/* ---- Redis ---- */

#ifdef DLOCK_HAVE_REDIS
#include <hiredis/hiredis.h>

#include "backends/redis/redis-codec.h"

/* S with Redis glob's special characters escaped. */
static void glob_escape(const char *s, char *out, size_t outsz) {
  size_t o = 0;
  for (; *s && o + 2 < outsz; s++) {
    if (strchr("*?[]\\", *s))
      out[o++] = '\\';
    out[o++] = *s;
  }
  out[o] = '\0';
}

static int redis_unlink(redisContext *rc, const char *key, size_t len) {
  redisReply *r = redisCommand(rc, "UNLINK %b", key, len);
  if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "unknown command")) {
    freeReplyObject(r);
    r = redisCommand(rc, "DEL %b", key, len);
  }
  int ok = r && r->type == REDIS_REPLY_INTEGER;
  if (!ok)
    fprintf(stderr, "cleanup: UNLINK: %s\n", r ? r->str : rc->errstr);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

static int redis_cleanup(const char *url) {
  char *prefix = NULL;
  redisContext *rc = conf_redis_connect(url, &prefix);
  if (!rc) {
    free(prefix);
    return -1;
  }
  int ret = 0;
  const char *p = prefix ? prefix : DLOCK__REDIS_DEFAULT_PREFIX;
  static const dlock__redis_keykind kinds[] = {DLOCK__REDIS_KEY_LOCK, DLOCK__REDIS_KEY_FENCE};
  for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
    size_t len;
    char *name = dlock__redis_key(p, kinds[k], run_prefix(), strlen(run_prefix()), &len);
    if (!name)
      return -1;
    name[len - 1] = '\0'; /* no closing '}': the run's prefix is open-ended */
    char pat[1024];
    glob_escape(name, pat, sizeof pat - 1);
    strcat(pat, "*");
    free(name);
    char cursor[32] = "0";
    do {
      redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
      if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        fprintf(stderr, "cleanup: SCAN: %s\n", r && r->str ? r->str : rc->errstr);
        freeReplyObject(r);
        ret = -1;
        break;
      }
      snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
      for (size_t i = 0; i < r->element[1]->elements; i++)
        if (redis_unlink(rc, r->element[1]->element[i]->str, r->element[1]->element[i]->len) < 0)
          ret = -1;
      freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
  }
  for (size_t i = 0; i < n_noted; i++)
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
      size_t len;
      char *name = dlock__redis_key(p, kinds[k], noted[i], strlen(noted[i]), &len);
      if (name && redis_unlink(rc, name, len) < 0)
        ret = -1;
      free(name);
    }
  /* ACL users of this run (r3, r4), left only when such a case failed
   * half-way; a server that does not let us list users has none of ours. */
  redisReply *r = redisCommand(rc, "ACL USERS");
  if (r && r->type == REDIS_REPLY_ARRAY)
    for (size_t i = 0; i < r->elements; i++)
      if (r->element[i]->type == REDIS_REPLY_STRING && strstr(r->element[i]->str, conf_run_id))
        freeReplyObject(redisCommand(rc, "ACL DELUSER %s", r->element[i]->str));
  freeReplyObject(r);
  free(prefix);
  redisFree(rc);
  return ret;
}
#endif

/* ---- ZooKeeper ---- */

#ifdef DLOCK_HAVE_ZOOKEEPER
#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backends/zookeeper/zk-codec.h"

zhandle_t *conf_zk_open(const char *url, const char *key, const clientid_t *cid, char **dir,
                        watcher_fn extra, void *extra_ctx);
void conf_zk_close(zhandle_t *zh);

/* Whether the backend's root existed when the run began. */
static int zk_root_was_there = -1;

/* The root of URL's lock dirs (*root) and the escaped run prefix (*pre),
 * from the lock dir of the run's prefix. */
static zhandle_t *zk_open_root(const char *url, char **root, const char **pre) {
  char *dir = NULL;
  zhandle_t *zh = conf_zk_open(url, run_prefix(), NULL, &dir, NULL, NULL);
  if (!zh || !dir) {
    free(dir);
    if (zh)
      conf_zk_close(zh);
    return NULL;
  }
  char *slash = strrchr(dir, '/');
  *slash = '\0';
  *root = dir;
  *pre = slash + 1;
  return zh;
}

static int zk_delete_tree(zhandle_t *zh, const char *path) {
  struct String_vector sv = {0, NULL};
  int rc = zoo_get_children(zh, path, 0, &sv);
  if (rc == ZNONODE)
    return 0;
  if (rc != ZOK) {
    fprintf(stderr, "cleanup: list %s: %s\n", path, zerror(rc));
    return -1;
  }
  int ret = 0;
  for (int32_t i = 0; i < sv.count; i++) {
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", path, sv.data[i]);
    if (zk_delete_tree(zh, sub) < 0)
      ret = -1;
  }
  deallocate_String_vector(&sv);
  rc = zoo_delete(zh, path, -1);
  if (rc != ZOK && rc != ZNONODE) {
    fprintf(stderr, "cleanup: delete %s: %s\n", path, zerror(rc));
    ret = -1;
  }
  return ret;
}

static void zk_begin(const char *url) {
  char *root = NULL;
  const char *pre;
  zhandle_t *zh = zk_open_root(url, &root, &pre);
  if (!zh)
    return;
  struct Stat st;
  zk_root_was_there = zoo_exists(zh, root, 0, &st) == ZOK;
  free(root);
  conf_zk_close(zh);
}

static int zk_cleanup(const char *url) {
  char *root = NULL;
  const char *pre;
  zhandle_t *zh = zk_open_root(url, &root, &pre);
  if (!zh)
    return -1;
  int ret = 0;
  struct String_vector sv = {0, NULL};
  int rc = zoo_get_children(zh, root, 0, &sv);
  if (rc == ZOK) {
    for (int32_t i = 0; i < sv.count; i++) {
      if (strncmp(sv.data[i], pre, strlen(pre)) != 0)
        continue;
      char sub[4096];
      snprintf(sub, sizeof sub, "%s/%s", root, sv.data[i]);
      if (zk_delete_tree(zh, sub) < 0)
        ret = -1;
    }
    deallocate_String_vector(&sv);
  } else if (rc != ZNONODE) {
    fprintf(stderr, "cleanup: list %s: %s\n", root, zerror(rc));
    ret = -1;
  }
  for (size_t i = 0; i < n_noted; i++) {
    char *dir = dlock__zk_lock_dir(root, noted[i], strlen(noted[i]));
    if (dir && zk_delete_tree(zh, dir) < 0)
      ret = -1;
    free(dir);
  }
  /* z8's own root, outside the backend's (it removes it when it passes). */
  char z8[128];
  snprintf(z8, sizeof z8, "/dlock-z8-%s", conf_run_id);
  if (zk_delete_tree(zh, z8) < 0)
    ret = -1;
  /* The root itself when the run made it and nothing else is in it. */
  if (zk_root_was_there == 0) {
    rc = zoo_delete(zh, root, -1);
    if (rc != ZOK && rc != ZNONODE && rc != ZNOTEMPTY)
      fprintf(stderr, "cleanup: delete %s: %s\n", root, zerror(rc));
  }
  free(root);
  conf_zk_close(zh);
  return ret;
}
#endif

/* ---- PostgreSQL ---- */

#ifdef DLOCK_HAVE_POSTGRES
static int pg_cleanup_one(const char *url);

/* The store under test, and the server behind the pooler where p1 takes a
 * lease of its own. */
static int pg_cleanup(const char *url) {
  int ret = pg_cleanup_one(url);
  const char *pb = getenv("DLOCK_TEST_PGBOUNCER_URL");
  if (pb && *pb && pg_cleanup_one(pb) < 0)
    ret = -1;
  return ret;
}

static int pg_cleanup_one(const char *url) {
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(url, &lease, &names);
  if (!pg)
    return -1;
  int ret = 0;
  /* In advisory mode too: the URL's table may be there from a lease-mode
   * run, and a row of this run in it is this run's to remove. */
  (void)lease;
  PGresult *t = PQexecParams(pg, "SELECT to_regclass($1) IS NOT NULL", 1, NULL,
                             (const char *const[]){names.table}, NULL, NULL, 0);
  bool have_table = PQresultStatus(t) == PGRES_TUPLES_OK && PQntuples(t) == 1 &&
                    strcmp(PQgetvalue(t, 0, 0), "t") == 0;
  PQclear(t);
  if (have_table) {
    char sql[512], n[16];
    const char *pre = run_prefix();
    snprintf(n, sizeof n, "%zu", strlen(pre));
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE left(name, $2::int) = $1", names.table);
    const char *params[2] = {pre, n};
    PGresult *r = PQexecParams(pg, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      fprintf(stderr, "cleanup: %s: %s", sql, PQerrorMessage(pg));
      ret = -1;
    }
    PQclear(r);
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE name = $1", names.table);
    for (size_t i = 0; i < n_noted; i++) {
      const char *p1[1] = {noted[i]};
      r = PQexecParams(pg, sql, 1, NULL, p1, NULL, NULL, 0);
      if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "cleanup: %s: %s", sql, PQerrorMessage(pg));
        ret = -1;
      }
      PQclear(r);
    }
  }
  /* The schema of the run's own prefix (p1, p5), left only when a case
   * failed half-way. */
  char sql[512];
  const char *prefix = conf_pg_run_prefix();
  snprintf(sql, sizeof sql,
           "SET client_min_messages TO warning; DROP TABLE IF EXISTS %s_lease; "
           "DROP SEQUENCE IF EXISTS %s_fence",
           prefix, prefix);
  PGresult *r = PQexec(pg, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    fprintf(stderr, "cleanup: %s: %s", sql, PQerrorMessage(pg));
    ret = -1;
  }
  PQclear(r);
  PQfinish(pg);
  return ret;
}
#endif

/* ---- etcd ---- */

#ifdef DLOCK_HAVE_ETCD
static int etcd_cleanup(const char *url) {
  char *name = run_prefix_name(url, conf_etcd_lock_name);
  if (!name)
    return -1;
  size_t n = strlen(name);
  char *end = malloc(n + 1);
  char *k64 = dlock__b64_encode(name, n);
  char *e64 = end ? dlock__b64_encode(end, dlock__etcd_prefix_end(name, n, end)) : NULL;
  int ret = -1;
  if (k64 && e64) {
    size_t bl = strlen(k64) + strlen(e64) + 64;
    char *body = malloc(bl);
    if (body) {
      snprintf(body, bl, "{\"key\":\"%s\",\"range_end\":\"%s\"}", k64, e64);
      char *answer = NULL;
      int st = conf_etcd_post(url, "/v3/kv/deleterange", body, &answer);
      if (st == 200)
        ret = 0;
      else
        fprintf(stderr, "cleanup: deleterange %s: HTTP %d: %s\n", name, st,
                answer ? answer : "");
      free(answer);
      free(body);
    }
  }
  free(k64);
  free(e64);
  free(end);
  free(name);
  for (size_t i = 0; i < n_noted; i++)
    if (conf_etcd_forget_key(url, noted[i]) < 0)
      ret = -1;
  return ret;
}
#endif

/* ---- Consul ---- */

#ifdef DLOCK_HAVE_CONSUL
#include <cjson/cJSON.h>

static int consul_delete_tree(const char *url, const char *key) {
  char *answer;
  int st = conf_consul_txn_one(url, "delete-tree", key, &answer);
  if (st != 200)
    fprintf(stderr, "cleanup: delete-tree %s: HTTP %d: %s\n", key, st, answer ? answer : "");
  free(answer);
  return st == 200 ? 0 : -1;
}

/* Sessions of this run: the clients' ("dlock <host>:<pid>", this
 * process's pid) and those the cases name after the run id. */
static int consul_sessions(const char *url) {
  char *answer = NULL;
  int st = conf_consul_request(url, "GET", "/v1/session/list", NULL, &answer);
  if (st != 200) {
    fprintf(stderr, "cleanup: session list: HTTP %d\n", st);
    free(answer);
    return -1;
  }
  char mine[32];
  snprintf(mine, sizeof mine, ":%ld", (long)getpid());
  int ret = 0;
  cJSON *list = cJSON_Parse(answer);
  cJSON *s;
  cJSON_ArrayForEach(s, list) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "Name");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(s, "ID");
    if (!cJSON_IsString(name) || !cJSON_IsString(id))
      continue;
    size_t nl = strlen(name->valuestring), ml = strlen(mine);
    bool ours = strstr(name->valuestring, conf_run_id) ||
                (strncmp(name->valuestring, "dlock ", 6) == 0 && nl > ml &&
                 strcmp(name->valuestring + nl - ml, mine) == 0);
    if (ours && conf_consul_destroy_session(url, id->valuestring) < 0)
      ret = -1;
  }
  cJSON_Delete(list);
  free(answer);
  return ret;
}

static int consul_cleanup(const char *url) {
  char *lk = run_prefix_name(url, conf_consul_lock_key);
  int ret = lk ? consul_delete_tree(url, lk) : -1;
  free(lk);
  for (size_t i = 0; i < n_noted; i++)
    if (conf_consul_forget_key(url, noted[i]) < 0)
      ret = -1;
  if (consul_sessions(url) < 0)
    ret = -1;
  return ret;
}
#endif

/* ---- dispatch ---- */

void conf_cleanup_begin(const char *url) {
  if (strncmp(url, "file:", 5) == 0) {
    dlock_url *u;
    if (dlock__url_parse(url, &u) == 0) {
      file_begin(dlock_url_path(u));
      dlock__url_free(u);
    }
  }
#ifdef DLOCK_HAVE_ZOOKEEPER
  if (strncmp(url, "zk:", 3) == 0)
    zk_begin(url);
#endif
}

int conf_cleanup(const char *url) {
  /* Cases may still note keys from threads they left behind. */
  pthread_mutex_lock(&noted_mu);
  int rc = 0;
  if (strncmp(url, "file:", 5) == 0) {
    dlock_url *u;
    rc = -1;
    if (dlock__url_parse(url, &u) == 0) {
      rc = file_cleanup(dlock_url_path(u));
      dlock__url_free(u);
    }
  }
#ifdef DLOCK_HAVE_REDIS
  if (strncmp(url, "redis", 5) == 0)
    rc = redis_cleanup(url);
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
  if (strncmp(url, "zk:", 3) == 0)
    rc = zk_cleanup(url);
#endif
#ifdef DLOCK_HAVE_POSTGRES
  if (strncmp(url, "postgres", 8) == 0)
    rc = pg_cleanup(url);
#endif
#ifdef DLOCK_HAVE_ETCD
  if (strncmp(url, "etcd", 4) == 0)
    rc = etcd_cleanup(url);
#endif
#ifdef DLOCK_HAVE_CONSUL
  if (strncmp(url, "consul", 6) == 0)
    rc = consul_cleanup(url);
#endif
  for (size_t i = 0; i < n_noted; i++)
    free(noted[i]);
  n_noted = 0;
  pthread_mutex_unlock(&noted_mu);
  return rc;
}
