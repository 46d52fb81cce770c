/* Error table and per-thread messages. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Per thread rather than per client: a client is shared by many threads and
 * each needs to read the reason for its own failure. */
static _Thread_local char errbuf[512];
/* The message in errbuf was cut to fit. */
static _Thread_local bool errcut;
/* The URL whose secrets every message of this thread is scrubbed of as it
 * is made, so that no copy of a message into a smaller buffer can cut a
 * secret where the final scrub would no longer find it. */
static _Thread_local const dlock_url *scope;

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
  int n = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  errcut = n < 0 || (size_t)n >= sizeof errbuf;
  if (scope)
    dlock__err_scrub(scope);
  return code;
}

const dlock_url *dlock__err_scope(const dlock_url *u) {
  const dlock_url *was = scope;
  scope = u;
  return was;
}

void dlock__clear_err(void) {
  errbuf[0] = '\0';
  errcut = false;
}

void dlock__err_scrub(const dlock_url *u) {
  const char *sec = dlock__url_secret(u, 0);
  if (!sec || !errbuf[0])
    return;
  /* Each replacement can triple a one-byte secret. */
  char out[3 * sizeof errbuf];
  for (size_t i = 0; (sec = dlock__url_secret(u, i)) != NULL; i++) {
    const char *p = errbuf, *q = strstr(p, sec);
    if (!q)
      continue;
    size_t n = strlen(sec), o = 0;
    for (; q; p = q + n, q = strstr(p, sec)) {
      memcpy(out + o, p, (size_t)(q - p));
      o += (size_t)(q - p);
      memcpy(out + o, "***", 3);
      o += 3;
    }
    size_t rest = strlen(p);
    memcpy(out + o, p, rest);
    o += rest;
    if (o >= sizeof errbuf) {
      o = sizeof errbuf - 1;
      errcut = true;
    }
    memcpy(errbuf, out, o);
    errbuf[o] = '\0';
  }
  if (!errcut)
    return;
  /* A message cut short may end in the first bytes of a secret, which no
   * search for the whole secret finds. */
  size_t len = strlen(errbuf);
  for (size_t i = 0; (sec = dlock__url_secret(u, i)) != NULL; i++) {
    size_t n = strlen(sec);
    for (size_t k = n - 1 < len ? n - 1 : len; k > 0; k--) {
      if (memcmp(errbuf + len - k, sec, k) == 0) {
        size_t at = len - k;
        if (at > sizeof errbuf - 4)
          at = sizeof errbuf - 4;
        memcpy(errbuf + at, "***", 4);
        len = at + 3;
        break;
      }
    }
  }
}

const char *dlock_client_errmsg(const dlock_client *c) {
  (void)c;
  return errbuf;
}

const char *dlock_version(void) { return DLOCK_VERSION_STRING; }
