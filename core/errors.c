/* Error table and per-thread messages. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Per thread rather than per client: a client is shared by many threads and
 * each needs to read the reason for its own failure. */
static _Thread_local char errbuf[512];

const char *dlock_strerror(int code) {
  switch (code) {
  case DLOCK_OK:
    return "success";
#define DLOCK__ERR_STR(name, val, transient, text)                             \
  case DLOCK_##name:                                                           \
    return text;
    DLOCK_ERRNO_MAP(DLOCK__ERR_STR)
#undef DLOCK__ERR_STR
  default:
    return "unknown error";
  }
}

const char *dlock_err_name(int code) {
  switch (code) {
  case DLOCK_OK:
    return "DLOCK_OK";
#define DLOCK__ERR_NAME(name, val, transient, text)                            \
  case DLOCK_##name:                                                           \
    return "DLOCK_" #name;
    DLOCK_ERRNO_MAP(DLOCK__ERR_NAME)
#undef DLOCK__ERR_NAME
  default:
    return "DLOCK_UNKNOWN";
  }
}

int dlock_err_is_transient(int code) {
  switch (code) {
#define DLOCK__ERR_TRANSIENT(name, val, transient, text)                       \
  case DLOCK_##name:                                                           \
    return transient;
    DLOCK_ERRNO_MAP(DLOCK__ERR_TRANSIENT)
#undef DLOCK__ERR_TRANSIENT
  default:
    return 0;
  }
}

int dlock_seterr(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  return code;
}

void dlock__clear_err(void) { errbuf[0] = '\0'; }

const char *dlock_client_errmsg(const dlock_client *c) {
  (void)c;
  return errbuf;
}

const char *dlock_version(void) { return DLOCK_VERSION_STRING; }
