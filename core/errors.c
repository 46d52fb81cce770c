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

/* Scrubs BUF (SIZE bytes, at most sizeof errbuf) of U's secrets; *CUT
 * says whether the text in it was cut to fit, and is updated. */
void dlock__scrub(const dlock_url *u, char *buf, size_t size, bool *cut) {
  const char *sec = dlock__url_secret(u, 0);
  if (!sec || !buf[0])
    return;
  if (size > sizeof errbuf) { /* too long to mark: nothing rather than a secret */
    buf[0] = '\0';
    return;
  }
  /* Every byte that belongs to a secret is marked on the message as it is,
   * before anything is replaced: a replacement made first could break up
   * another secret's occurrence (they may overlap) and leave its other
   * bytes unfound. */
  size_t len = strlen(buf);
  unsigned char mark[sizeof errbuf];
  memset(mark, 0, len);
  bool any = false;
  for (size_t i = 0; (sec = dlock__url_secret(u, i)) != NULL; i++) {
    size_t n = strlen(sec);
    if (n == 0)
      continue;
    for (const char *q = buf; (q = strstr(q, sec)) != NULL; q++) {
      size_t at = (size_t)(q - buf);
      mark[at] |= 2;
      for (size_t j = at; j < at + n; j++)
        mark[j] |= 1;
      any = true;
    }
    /* A message cut short may end in the first bytes of a secret, which
     * no search for the whole secret finds. */
    if (*cut)
      for (size_t k = n - 1 < len ? n - 1 : len; k > 0; k--)
        if (memcmp(buf + len - k, sec, k) == 0) {
          mark[len - k] |= 2;
          for (size_t j = len - k; j < len; j++)
            mark[j] |= 1;
          any = true;
          break;
        }
  }
  if (!any)
    return;
  /* One "***" per occurrence, so a short secret costs readability, never
   * secrecy; each can triple a one-byte secret. */
  char out[3 * sizeof errbuf];
  size_t o = 0;
  for (size_t j = 0; j < len; j++) {
    if (!(mark[j] & 1)) {
      out[o++] = buf[j];
    } else if ((mark[j] & 2) || j == 0 || !(mark[j - 1] & 1)) {
      memcpy(out + o, "***", 3);
      o += 3;
    }
  }
  /* Cutting now can only shorten a "***" or end in bytes of no secret. */
  if (o >= size) {
    o = size - 1;
    *cut = true;
  }
  memcpy(buf, out, o);
  buf[o] = '\0';
  /* A secret with a '*' in it can be spelt again by a "***" and the text
   * beside it: then the message goes. */
  for (size_t i = 0; (sec = dlock__url_secret(u, i)) != NULL; i++)
    if (*sec && strchr(sec, '*') && strstr(buf, sec)) {
      snprintf(buf, size, "(message withheld: it would show a secret)");
      *cut = false;
      break;
    }
}

void dlock__err_scrub(const dlock_url *u) { dlock__scrub(u, errbuf, sizeof errbuf, &errcut); }

const char *dlock_client_errmsg(const dlock_client *c) {
  (void)c;
  return errbuf;
}

const char *dlock_version(void) { return DLOCK_VERSION_STRING; }
