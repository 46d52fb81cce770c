/* dlock_list and dlock_break (dlock/admin.h): argument checks and dispatch
 * to the backend's version-2 operations. */
#include <string.h>

#include "dlock/admin.h"
#include "internal.h"

struct list_walk {
  dlock_list_fn fn;
  void *arg;
};

/* Keys reach the caller NUL-terminated and only if a caller could have
 * taken them: a store's name that is not a valid key (someone else's data
 * under the prefix) is not a lock of ours. */
static int emit_one(void *ud, const char *key, size_t keylen, const dlock_info *info) {
  struct list_walk *w = ud;
  char buf[DLOCK_KEY_MAX + 1];
  size_t len;
  if (keylen == 0 || keylen > DLOCK_KEY_MAX || memchr(key, '\0', keylen))
    return 0;
  memcpy(buf, key, keylen);
  buf[keylen] = '\0';
  if (dlock__key_check(buf, &len) < 0) {
    dlock__clear_err();
    return 0;
  }
  dlock_info copy = *info;
  copy.held = 1;
  copy.owner[sizeof copy.owner - 1] = '\0';
  copy.label[sizeof copy.label - 1] = '\0';
  return w->fn(w->arg, buf, &copy);
}

static int list_locks(dlock_client *c, const char *prefix, dlock_list_fn fn, void *arg) {
  dlock__clear_err();
  if (!c || !fn)
    return dlock_seterr(DLOCK_EINVAL, "dlock_list: NULL argument");
  if (!prefix)
    prefix = "";
  size_t plen = strlen(prefix);
  if (plen > DLOCK_KEY_MAX)
    return dlock_seterr(DLOCK_EINVAL, "dlock_list: prefix longer than %d bytes", DLOCK_KEY_MAX);
  /* Asked even where the URL's mode cleared DLOCK_CAP_LIST: the backend
   * says why better than this could. */
  if (c->ops->version < 2 || !c->ops->list)
    return dlock_seterr(DLOCK_ENOTSUP, "backend '%s' cannot list its locks", c->ops->name);
  struct list_walk w = {fn, arg};
  return c->ops->list(&c->bc, prefix, plen, emit_one, &w);
}

/* A lock of this very client that the store just released for an
 * operator: it is lost now, not at its next renewal. */
static void mark_own_broken(dlock_client *c, const char *key, const dlock_info *broken) {
  pthread_mutex_lock(&c->mu);
  for (struct dlock_lock *l = dlock__table_find(c, key); l; l = l->hnext) {
    /* HELD only: an acquire still running writes its owner and token
     * without c->mu; its lock learns of the break at its first renewal. */
    if (strcmp(l->key, key) != 0 || l->state != DLOCK_HELD ||
        !((broken->owner[0] && strcmp(l->owner, broken->owner) == 0) ||
          (!broken->owner[0] && broken->token && l->bl.token == broken->token)))
      continue;
    dlock__mark_lost(c, l, "an operator broke it");
  }
  pthread_mutex_unlock(&c->mu);
}

static int break_lock(dlock_client *c, const char *key, const dlock_info *holder,
                      dlock_info *broken) {
  dlock__clear_err();
  size_t keylen;
  int rc;
  if (!c)
    return dlock_seterr(DLOCK_EINVAL, "dlock_break: NULL client");
  if ((rc = dlock__key_check(key, &keylen)) < 0)
    return rc;
  if (c->ops->version < 2 || !c->ops->force_release)
    return dlock_seterr(DLOCK_ENOTSUP, "backend '%s' cannot break locks", c->ops->name);
  dlock_info want, got;
  memset(&want, 0, sizeof want);
  memset(&got, 0, sizeof got);
  got.ttl_ms = -1;
  if (holder && !holder->owner[0] && !holder->token && !holder->label[0]) {
    /* Nothing to tell a holder by.  What was looked at was free: whoever
     * holds KEY now came later.  Or it was held by one the store could
     * not name (yet): refused, not taken for "anyone". */
    if (holder->held)
      return dlock_seterr(DLOCK_EBUSY,
                          "dlock_break: the holder named has no owner, token or label to be "
                          "told by (inspect it again): '%s' not broken",
                          key);
    if (broken)
      *broken = got;
    return 0;
  }
  /* A label alone tells holders apart only where the store names them by
   * nothing else (no DLOCK_CAP_HOLDER_INFO: PostgreSQL advisory locks);
   * elsewhere the backend would take it for "anyone". */
  if (holder && !holder->owner[0] && !holder->token && (c->bc.caps & DLOCK_CAP_HOLDER_INFO))
    return dlock_seterr(DLOCK_EBUSY,
                        "dlock_break: the holder named has only a label, which this store does "
                        "not tell holders by (inspect it again): '%s' not broken",
                        key);
  if (holder) {
    want.token = holder->token;
    memcpy(want.owner, holder->owner, sizeof want.owner - 1);
    /* Where the store names a holder by neither (PostgreSQL advisory
     * locks: the server session), inspect's label is what was seen. */
    memcpy(want.label, holder->label, sizeof want.label - 1);
  }
  rc = c->ops->force_release(&c->bc, key, keylen, &want, &got);
  if (rc < 0)
    return rc;
  got.owner[sizeof got.owner - 1] = '\0';
  got.label[sizeof got.label - 1] = '\0';
  if (got.held) {
    dlock__log(c, DLOCK_LOG_WARN, "lock '%s' (token %llu, holder '%s') broken", key,
               (unsigned long long)got.token, got.label);
    mark_own_broken(c, key, &got);
  }
  if (broken)
    *broken = got;
  return 0;
}

int dlock_list(dlock_client *c, const char *prefix, dlock_list_fn fn, void *arg) {
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, list_locks(c, prefix, fn, arg));
}

int dlock_break(dlock_client *c, const char *key, const dlock_info *holder, dlock_info *broken) {
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, break_lock(c, key, holder, broken));
}
