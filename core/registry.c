/* Backends by URL scheme: the built-ins, then those registered at run time. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const dlock_backend_ops *const builtins[] = {
    &dlock__mem_ops,
    &dlock__file_ops,
#ifdef DLOCK_HAVE_REDIS
    &dlock__redis_ops,
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
    &dlock__zk_ops,
#endif
#ifdef DLOCK_HAVE_POSTGRES
    &dlock__pg_ops,
#endif
#ifdef DLOCK_HAVE_ETCD
    &dlock__etcd_ops,
#endif
#ifdef DLOCK_HAVE_CONSUL
    &dlock__consul_ops,
#endif
    NULL,
};

#define EXTRA_MAX 32
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const dlock_backend_ops *extra[EXTRA_MAX];
static size_t nextra;

static bool has_scheme(const dlock_backend_ops *ops, const char *scheme) {
  for (const char *const *s = ops->schemes; *s; s++)
    if (strcmp(*s, scheme) == 0)
      return true;
  return false;
}

int dlock__ops_check(const dlock_backend_ops *ops) {
  if (!ops)
    return dlock_seterr(DLOCK_EINVAL, "backend ops is NULL");
  if (ops->version < 1 || ops->version > DLOCK_BACKEND_VERSION)
    return dlock_seterr(DLOCK_EINVAL, "backend '%s': unsupported ops version %u",
                        ops->name ? ops->name : "?", ops->version);
  if (!ops->name || !ops->schemes || !ops->schemes[0])
    return dlock_seterr(DLOCK_EINVAL, "backend ops lacks a name or schemes");
  if (!ops->open || !ops->close || !ops->try_acquire || (!ops->renew && !ops->renew_many) ||
      !ops->release)
    return dlock_seterr(DLOCK_EINVAL,
                        "backend '%s': open, close, try_acquire, renew (or renew_many) and "
                        "release are required",
                        ops->name);
  return 0;
}

const dlock_backend_ops *dlock__registry_find(const char *scheme) {
  for (size_t i = 0; builtins[i]; i++)
    if (has_scheme(builtins[i], scheme))
      return builtins[i];
  const dlock_backend_ops *found = NULL;
  pthread_mutex_lock(&reg_mu);
  for (size_t i = 0; i < nextra && !found; i++)
    if (has_scheme(extra[i], scheme))
      found = extra[i];
  pthread_mutex_unlock(&reg_mu);
  return found;
}

/* Appends every scheme of OPS to BUF as ", name"; cut short, never
 * overrun, when BUF is full. */
static void append_schemes(const dlock_backend_ops *ops, char *buf, size_t len, size_t *used) {
  for (const char *const *s = ops->schemes; *s; s++) {
    int n = snprintf(buf + *used, len - *used, "%s%s", *used ? ", " : "", *s);
    if (n < 0 || (size_t)n >= len - *used) {
      buf[*used] = '\0';
      return;
    }
    *used += (size_t)n;
  }
}

void dlock__registry_schemes(char *buf, size_t len) {
  size_t used = 0;
  if (len == 0)
    return;
  buf[0] = '\0';
  for (size_t i = 0; builtins[i]; i++)
    append_schemes(builtins[i], buf, len, &used);
  pthread_mutex_lock(&reg_mu);
  for (size_t i = 0; i < nextra; i++)
    append_schemes(extra[i], buf, len, &used);
  pthread_mutex_unlock(&reg_mu);
}

int dlock_backend_register(const dlock_backend_ops *ops) {
  int rc = dlock__ops_check(ops);
  if (rc < 0)
    return rc;
  for (const char *const *s = ops->schemes; *s; s++)
    if (dlock__registry_find(*s))
      return dlock_seterr(DLOCK_EINVAL, "scheme '%s' is already registered", *s);
  pthread_mutex_lock(&reg_mu);
  if (nextra >= EXTRA_MAX) {
    pthread_mutex_unlock(&reg_mu);
    return dlock_seterr(DLOCK_ENOMEM, "too many registered backends");
  }
  extra[nextra++] = ops;
  pthread_mutex_unlock(&reg_mu);
  return 0;
}
