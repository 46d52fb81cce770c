/* Shared by the libFuzzer harnesses: an oracle failure aborts (libFuzzer
 * then saves the input as a crash), and small helpers to carve fields out
 * of one input.  Header-only so every harness stays one file. */
#ifndef DLOCK_FUZZ_H
#define DLOCK_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle failure: say which, then abort so the input is kept. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void fuzz_fail(const char *fmt,
                                                                               ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz oracle failed: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

#define FUZZ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond))                                                               \
      fuzz_fail(__VA_ARGS__);                                                  \
  } while (0)

/* A malloc'd NUL-terminated copy of N bytes (the decoders that take a C
 * string see everything up to the first NUL). */
__attribute__((unused)) static char *fuzz_strndup(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s)
    abort();
  if (n)
    memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* A malloc'd copy of N bytes with no NUL after it, so that a decoder
 * reading past N is caught by ASan. */
__attribute__((unused)) static char *fuzz_memdup(const void *p, size_t n) {
  char *s = malloc(n ? n : 1);
  if (!s)
    abort();
  if (n)
    memcpy(s, p, n);
  return s;
}

/* Cursor over the input, handing out fields cut at SEP. */
typedef struct fuzz_fields {
  const uint8_t *p;
  size_t n;
} fuzz_fields;

/* The next field (up to SEP or the end) into *F and *FN; 0 once the input
 * is used up. */
__attribute__((unused)) static int fuzz_next(fuzz_fields *c, uint8_t sep, const uint8_t **f,
                                             size_t *fn) {
  if (!c->p)
    return 0;
  const uint8_t *e = c->n ? memchr(c->p, sep, c->n) : NULL;
  *f = c->p;
  if (e) {
    *fn = (size_t)(e - c->p);
    c->n -= *fn + 1;
    c->p = e + 1;
  } else {
    *fn = c->n;
    c->p = NULL;
    c->n = 0;
  }
  return 1;
}

/* Occurrences of NEEDLE (NN bytes, NN > 0) in HAY, overlapping ones
 * included. */
__attribute__((unused)) static size_t fuzz_count(const char *hay, size_t hn, const char *needle,
                                                 size_t nn) {
  size_t c = 0;
  for (const char *p = hay; nn && (size_t)(hay + hn - p) >= nn;) {
    const char *q = memmem(p, (size_t)(hay + hn - p), needle, nn);
    if (!q)
      break;
    c++;
    p = q + 1;
  }
  return c;
}

#endif
