/* Redis fault injection for the conformance suite: delete a lock behind the
 * client's back, from a connection of our own, the way an operator's DEL or
 * an eviction would. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "backends/redis/redis-codec.h"
#include "internal.h"

/* Delete the lock key of KEY on the Redis named by URL (honouring its
 * userinfo, /db or ?db=, and ?prefix=).  0 if the key existed and is gone,
 * -1 otherwise (with a line on stderr saying why). */
#include "faults.h"

/* One command, checked for an error reply; the reply is freed. */
static int run(redisContext *c, int argc, const char **argv, const size_t *lens,
               long long *integer) {
  redisReply *r = redisCommandArgv(c, argc, argv, lens);
  if (!r) {
    fprintf(stderr, "faults_redis: %s: %s\n", argv[0], c->errstr);
    return -1;
  }
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "faults_redis: %s: %s\n", argv[0], r->str);
    rc = -1;
  } else if (integer) {
    if (r->type == REDIS_REPLY_INTEGER)
      *integer = r->integer;
    else
      rc = -1;
  }
  freeReplyObject(r);
  return rc;
}

static redisContext *connect_url(dlock_url *u, long long *db) {
  const struct timeval tv = {2, 0};
  const char *scheme = dlock_url_scheme(u);
  const char *path = dlock_url_path(u);
  redisContext *c;
  *db = 0;
  if (strcmp(scheme, "redis+unix") == 0) {
    if (dlock_url_param_int(u, "db", 0, 0, INT_MAX, db) < 0)
      return NULL;
    c = redisConnectUnixWithTimeout(path, tv);
  } else {
    if (dlock_url_host_count(u) != 1)
      return NULL;
    char host[256];
    const char *h = dlock_url_host(u, 0);
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
      h++;
      hl -= 2;
    }
    if (hl == 0 || hl >= sizeof host)
      return NULL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    int port = dlock_url_port(u, 0);
    const char *p = path[0] == '/' ? path + 1 : path;
    if (*p)
      *db = strtoll(p, NULL, 10);
    c = redisConnectWithTimeout(host, port ? port : 6379, tv);
  }
  if (!c || c->err) {
    fprintf(stderr, "faults_redis: connect: %s\n", c ? c->errstr : "out of memory");
    redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  return c;
}

redisContext *conf_redis_connect(const char *url, char **prefix_out) {
  dlock_url *u = NULL;
  if (prefix_out)
    *prefix_out = NULL;
  if (dlock__url_parse(url, &u) < 0)
    return NULL;
  long long db = 0;
  redisContext *c = connect_url(u, &db);
  if (!c)
    goto fail;
  const char *user = dlock_url_user(u), *pass = dlock_url_password(u);
  if ((user && *user) || pass) {
    const char *argv[3] = {"AUTH", NULL, NULL};
    size_t lens[3] = {4, 0, 0};
    int argc = 1;
    if (user && *user) {
      argv[argc] = user;
      lens[argc++] = strlen(user);
    }
    argv[argc] = pass ? pass : "";
    lens[argc] = strlen(argv[argc]);
    argc++;
    if (run(c, argc, argv, lens, NULL) < 0)
      goto fail;
  }
  if (db != 0) {
    char dbs[24];
    snprintf(dbs, sizeof dbs, "%lld", db);
    const char *argv[2] = {"SELECT", dbs};
    size_t lens[2] = {6, strlen(dbs)};
    if (run(c, 2, argv, lens, NULL) < 0)
      goto fail;
  }

  const char *prefix = NULL;
  if (prefix_out && dlock_url_param(u, "prefix", &prefix) && !(*prefix_out = strdup(prefix)))
    goto fail;
  dlock__url_free(u);
  return c;
fail:
  redisFree(c);
  dlock__url_free(u);
  return NULL;
}

static int redis_delete(const char *url, const char *key, int forget) {
  int rc = -1;
  char *lk = NULL, *fk = NULL, *prefix = NULL;
  redisContext *c = conf_redis_connect(url, &prefix);
  if (!c)
    return -1;
  size_t lklen = 0, fklen = 0;
  lk = dlock__redis_key(prefix, DLOCK__REDIS_KEY_LOCK, key, strlen(key), &lklen);
  fk = dlock__redis_key(prefix, DLOCK__REDIS_KEY_FENCE, key, strlen(key), &fklen);
  if (!lk || !fk)
    goto out;
  /* forget: the store loses everything about the key, fence counter
   * included, as a restart without persistence or a FLUSHDB would. */
  const char *argv[3] = {"DEL", lk, fk};
  size_t lens[3] = {3, lklen, fklen};
  long long n = 0;
  if (run(c, forget ? 3 : 2, argv, lens, &n) < 0)
    goto out;
  if (n < 1) {
    fprintf(stderr, "faults_redis: %s was not there to delete\n", forget ? fk : lk);
    goto out;
  }
  rc = 0;
out:
  free(lk);
  free(fk);
  free(prefix);
  redisFree(c);
  return rc;
}

int conf_redis_break_lock(const char *url, const char *key) {
  return redis_delete(url, key, 0);
}

int conf_redis_forget_key(const char *url, const char *key) {
  return redis_delete(url, key, 1);
}
