/* Durations as URLs and the command line spell them.  Checked against the
 * rules in internal.h: a result is within [0, DLOCK__DURATION_MAX_MS]; a
 * bare number means BARE_MS each, so "N" with 1000 is "Ns" and "N" with 1
 * is "Nms"; a unit scales exactly (60 s to the minute); and the accepted
 * texts are digits, an optional fraction with digits, and a known unit. */
#include "fuzz.h"

#include "core/internal.h"

static int64_t parse_or(const char *s, int64_t bare, int *ok) {
  int64_t ms = -1;
  int rc = dlock__duration_parse(s, bare, &ms);
  FUZZ_CHECK(rc == 0 || rc == DLOCK_EINVAL, "rc %d for \"%s\"", rc, s);
  *ok = rc == 0;
  if (rc == 0)
    FUZZ_CHECK(ms >= 0 && ms <= DLOCK__DURATION_MAX_MS, "\"%s\" gives %lld", s, (long long)ms);
  return rc == 0 ? ms : -1;
}

/* The grammar, checked apart from the parser. */
static int well_formed(const char *s) {
  const char *p = s;
  int digits = 0;
  while (*p >= '0' && *p <= '9')
    p++, digits++;
  if (*p == '.') {
    int f = 0;
    for (p++; *p >= '0' && *p <= '9'; p++)
      f++;
    if (!f)
      return 0;
    digits += f;
  }
  if (!digits)
    return 0;
  return !*p || !strcmp(p, "ms") || !strcmp(p, "s") || !strcmp(p, "m") || !strcmp(p, "h");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fuzz_strndup(data, size);
  int ok1, okk, okms, oks, okm;
  int64_t v1 = parse_or(s, 1, &ok1);
  int64_t vk = parse_or(s, 1000, &okk);
  if (ok1 || okk)
    FUZZ_CHECK(well_formed(s), "\"%s\" accepted", s);
  size_t n = strlen(s);
  char *t = malloc(n + 3);
  if (!t)
    abort();
  memcpy(t, s, n + 1);
  int bare = n && s[n - 1] >= '0' && s[n - 1] <= '9';
  if (bare) {
    memcpy(t + n, "ms", 3);
    int64_t vms = parse_or(t, 7, &okms);
    FUZZ_CHECK(okms == ok1 && vms == v1, "\"%s\" with bare ms and \"%s\" differ", s, t);
    memcpy(t + n, "s", 2);
    int64_t vs = parse_or(t, 7, &oks);
    FUZZ_CHECK(oks == okk && vs == vk, "\"%s\" with bare s and \"%s\" differ", s, t);
    memcpy(t + n, "m", 2);
    int64_t vm = parse_or(t, 7, &okm);
    /* a minute is 60 s to the millisecond once rounding is out of it */
    if (okm && oks && !strchr(s, '.'))
      FUZZ_CHECK(vm == vs * 60, "\"%s\" is %lld, not 60 x %lld", t, (long long)vm,
                 (long long)vs);
    if (okm)
      FUZZ_CHECK(oks, "\"%s\" accepted but \"%ss\" not", t, s);
  } else if (ok1 || okk) {
    FUZZ_CHECK(ok1 && okk && v1 == vk, "\"%s\" has a unit yet depends on the bare unit", s);
  }
  free(t);
  free(s);
  return 0;
}
