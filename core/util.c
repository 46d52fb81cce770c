/* Clock, randomness and key validation. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Validity deadlines count on CLOCK_BOOTTIME: CLOCK_MONOTONIC stops while
 * the machine is suspended, and a lease at the store does not, so a client
 * resumed after the ttl would still say HELD.  Like CLOCK_MONOTONIC, it is
 * never stepped. */
int64_t dlock__now_ns(void) { return clock_ns(CLOCK_BOOTTIME); }

int64_t dlock_backend_now_ns(void) { return dlock__now_ns(); }

int64_t dlock_backend_deadline(const dlock_backend_client *bc, int64_t deadline_ns) {
  int64_t own = dlock__now_ns() + (bc ? bc->timeout_ms : 5000) * 1000000;
  return deadline_ns < 0 || deadline_ns > own ? own : deadline_ns;
}

/* Condition variables and clock_nanosleep cannot wait on CLOCK_BOOTTIME, so
 * an instant on it becomes the same distance from now on CLOCK_MONOTONIC.
 * A suspend during the wait makes it end late, never early; whoever wakes
 * then reads CLOCK_BOOTTIME again. */
void dlock__ns_to_timespec(int64_t ns, struct timespec *ts) {
  int64_t boot = clock_ns(CLOCK_BOOTTIME), mono = clock_ns(CLOCK_MONOTONIC);
  int64_t left = ns - boot;
  int64_t at;
  if (left <= 0)
    at = mono;
  else if (left > INT64_MAX - mono)
    at = INT64_MAX;
  else
    at = mono + left;
  ts->tv_sec = (time_t)(at / 1000000000);
  ts->tv_nsec = (long)(at % 1000000000);
}

int dlock__cond_init(pthread_cond_t *cv) {
  pthread_condattr_t a;
  if (pthread_condattr_init(&a) != 0)
    return DLOCK_ENOMEM;
  /* Deadlines are monotonic: a wall-clock step must not shorten or stretch
   * a wait. */
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
  return rc == 0 ? 0 : DLOCK_ENOMEM;
}

int dlock_backend_cond_init(pthread_cond_t *cv) {
  if (!cv)
    return dlock_seterr(DLOCK_EINVAL, "dlock_backend_cond_init: no condition variable");
  return dlock__cond_init(cv) == 0 ? 0 : dlock_seterr(DLOCK_ENOMEM, "out of memory");
}

int dlock_backend_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns) {
  if (!cv || !mu)
    return dlock_seterr(DLOCK_EINVAL, "dlock_backend_cond_wait: needs a condition variable "
                        "and its mutex");
  if (deadline_ns < 0) {
    pthread_cond_wait(cv, mu);
    return 0;
  }
  if (dlock__now_ns() >= deadline_ns)
    return DLOCK_ETIMEDOUT;
  struct timespec ts;
  dlock__ns_to_timespec(deadline_ns, &ts);
  pthread_cond_timedwait(cv, mu, &ts);
  return 0;
}

static int getrandom_all(unsigned char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(buf + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return dlock_seterr(DLOCK_EBACKEND, "getrandom failed: %s", strerror(errno));
    }
    got += (size_t)r;
  }
  return 0;
}

/* Owner tokens are drawn from a per-thread buffer refilled 256 bytes at a
 * time, which takes a syscall off most acquisitions.  A forked child must
 * never reuse its parent's buffered bytes (two processes would then share
 * owner tokens), so fork empties the buffer of the thread that forks, the
 * only thread the child has. */
static _Thread_local unsigned char rpool[256];
static _Thread_local size_t rpool_left;
static pthread_once_t rpool_once = PTHREAD_ONCE_INIT;

static void rpool_forget(void) {
  memset(rpool, 0, sizeof rpool);
  rpool_left = 0;
}

static void rpool_init(void) { pthread_atfork(NULL, NULL, rpool_forget); }

static int fill_random(unsigned char *buf, size_t n) {
  if (n > sizeof rpool)
    return getrandom_all(buf, n);
  pthread_once(&rpool_once, rpool_init);
  if (rpool_left < n) {
    int rc = getrandom_all(rpool, sizeof rpool);
    if (rc < 0)
      return rc;
    rpool_left = sizeof rpool;
  }
  unsigned char *src = rpool + (sizeof rpool - rpool_left);
  memcpy(buf, src, n);
  memset(src, 0, n); /* handed out once */
  rpool_left -= n;
  return 0;
}

int dlock__random_hex(char *out, size_t nbytes) {
  unsigned char buf[64];
  static const char hex[] = "0123456789abcdef";
  if (nbytes > sizeof buf)
    return DLOCK_EINVAL;
  int rc = fill_random(buf, nbytes);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < nbytes; i++) {
    out[2 * i] = hex[buf[i] >> 4];
    out[2 * i + 1] = hex[buf[i] & 15];
  }
  out[2 * nbytes] = '\0';
  return 0;
}

uint64_t dlock__thread_serial(void) {
  static _Atomic uint64_t next = 1;
  static _Thread_local uint64_t mine;
  if (!mine)
    mine = atomic_fetch_add(&next, 1);
  return mine;
}

uint64_t dlock__random_below(uint64_t n) {
  uint64_t v = 0;
  if (n == 0 || fill_random((unsigned char *)&v, sizeof v) < 0)
    return 0;
  return v % n;
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return 0;
    }
    if (i + len > n)
      return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

int dlock__key_check(const char *key, size_t *len) {
  if (!key)
    return dlock_seterr(DLOCK_EINVAL, "key is NULL");
  size_t n = strnlen(key, DLOCK_KEY_MAX + 1);
  if (n == 0)
    return dlock_seterr(DLOCK_EINVAL, "key is empty");
  if (n > DLOCK_KEY_MAX)
    return dlock_seterr(DLOCK_EINVAL, "key is longer than %d bytes", DLOCK_KEY_MAX);
  if (!utf8_valid((const unsigned char *)key, n))
    return dlock_seterr(DLOCK_EINVAL, "key is not valid UTF-8");
  if (len)
    *len = n;
  return 0;
}

char *dlock__escape_slash(const char *prefix, const char *key, size_t keylen,
                          const char *suffix) {
  size_t pl = strlen(prefix), sl = strlen(suffix), el = 0;
  for (size_t i = 0; i < keylen; i++)
    el += key[i] == '%' || key[i] == '/' ? 3 : 1;
  char *s = malloc(pl + el + sl + 1);
  if (!s)
    return NULL;
  memcpy(s, prefix, pl);
  char *w = s + pl;
  for (size_t i = 0; i < keylen; i++) {
    if (key[i] == '%' || key[i] == '/') {
      memcpy(w, key[i] == '%' ? "%25" : "%2F", 3);
      w += 3;
    } else {
      *w++ = key[i];
    }
  }
  memcpy(w, suffix, sl + 1);
  return s;
}
