/* The application's log function, and messages made safe for it. */
#include <stdarg.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>

#include "dlock/log.h"
#include "internal.h"

/* Read on every message from any thread, written rarely: the function and
 * its argument change together under the write lock, and calls hold the
 * read lock, so that once dlock_set_log() returns no call to the old
 * function is still running (its argument may be freed).  The level alone
 * is read without it to keep a silent library free of locking. */
static pthread_rwlock_t log_mu = PTHREAD_RWLOCK_INITIALIZER;
static dlock_log_fn log_fn;
static void *log_arg;
static atomic_int log_level; /* 0: off */

int dlock_set_log(dlock_log_fn fn, void *arg, int max_level) {
  if (fn && (max_level < DLOCK_LOG_ERROR || max_level > DLOCK_LOG_DEBUG))
    return dlock_seterr(DLOCK_EINVAL, "dlock_set_log: level %d is not in [%d, %d]", max_level,
                        DLOCK_LOG_ERROR, DLOCK_LOG_DEBUG);
  pthread_rwlock_wrlock(&log_mu);
  log_fn = fn;
  log_arg = arg;
  atomic_store(&log_level, fn ? max_level : 0);
  pthread_rwlock_unlock(&log_mu);
  return 0;
}

const char *dlock_log_level_name(int level) {
  switch (level) {
  case DLOCK_LOG_ERROR: return "error";
  case DLOCK_LOG_WARN: return "warn";
  case DLOCK_LOG_INFO: return "info";
  case DLOCK_LOG_DEBUG: return "debug";
  default: return "?";
  }
}

bool dlock__log_on(int level) { return level >= 1 && level <= atomic_load(&log_level); }

void dlock__vlog(const dlock_client *c, int level, const char *fmt, va_list ap) {
  if (!dlock__log_on(level))
    return;
  char msg[512];
  int n = c ? snprintf(msg, sizeof msg, "%s: ", c->redacted ? c->redacted : "?") : 0;
  if (n < 0 || (size_t)n >= sizeof msg)
    n = 0;
  int m = vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
  bool cut = m < 0 || (size_t)m >= sizeof msg - (size_t)n;
  /* The text may quote a store's message, which may quote the URL. */
  if (c)
    dlock__scrub(c->url, msg, sizeof msg, &cut);
  pthread_rwlock_rdlock(&log_mu);
  if (log_fn && level <= atomic_load(&log_level))
    log_fn((dlock_log_level)level, msg, log_arg);
  pthread_rwlock_unlock(&log_mu);
}

void dlock__log(const dlock_client *c, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dlock__vlog(c, level, fmt, ap);
  va_end(ap);
}
