/* file:// lock records, as read back from a lock file anyone could have
 * written.  Checked against a reading of the format apart from the
 * parser: lines cut at '\n' (empty ones skipped, a NUL ends the record),
 * the first "dlock-file 1", every "token " line a plain decimal that fits
 * 64 bits, the last one the counter.  A record that parses formats and
 * parses back to itself (labels lose their line breaks).  The same bytes
 * read as a path below a store's directory: a key read from it is one
 * whose own path names a lock file (".lock"), no NUL in it. */
#include <errno.h>

#include "fuzz.h"

#include "backends/file/file-path.h"

/* 1 and *TOKEN when the record is well-formed, else 0. */
static int reference(const char *buf, size_t len, uint64_t *token) {
  const char *nul = memchr(buf, '\0', len);
  const char *end = nul ? nul : buf + len;
  int line_no = 0, have = 0;
  for (const char *p = buf; p < end;) {
    const char *e = memchr(p, '\n', (size_t)(end - p));
    if (!e)
      e = end;
    size_t n = (size_t)(e - p);
    if (n) {
      if (line_no++ == 0) {
        if (n != 12 || memcmp(p, "dlock-file 1", 12) != 0)
          return 0;
      } else if (n >= 6 && memcmp(p, "token ", 6) == 0) {
        uint64_t v = 0;
        if (n == 6)
          return 0;
        for (size_t i = 6; i < n; i++) {
          if (p[i] < '0' || p[i] > '9')
            return 0;
          unsigned d = (unsigned)(p[i] - '0');
          if (v > (UINT64_MAX - d) / 10)
            return 0;
          v = v * 10 + d;
        }
        *token = v;
        have = 1;
      }
    }
    p = e + 1;
  }
  return have;
}

static void path_key(const char *buf, size_t size) {
  char key[4200];
  int n = dlock__file_path_key(buf, size, key, sizeof key);
  if (n < 0)
    return;
  FUZZ_CHECK((size_t)n == strlen(key) && n > 0, "path key length %d", n);
  FUZZ_CHECK(size > 5 && memcmp(buf + size - 5, ".lock", 5) == 0, "key from a non-lock file");
  char back[8192];
  int m = dlock__file_key_path("/d", key, (size_t)n, back, sizeof back);
  FUZZ_CHECK(m > 0, "a key read from a path has no path (%d)", m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  path_key(buf, size);
  dlock__file_record r;
  int rc = dlock__file_record_parse(buf, size, &r);
  FUZZ_CHECK(rc == 0 || rc == DLOCK_EBACKEND, "rc %d", rc);
  if (size == 0) {
    FUZZ_CHECK(rc == 0 && r.token == 0, "an empty file is not a fresh counter");
    return 0;
  }
  uint64_t want = 0;
  int ok = size < 512 && reference(buf, size, &want);
  if (ok != (rc == 0))
    fuzz_fail("parser %s a record the format %s", rc ? "refuses" : "accepts",
              ok ? "allows" : "forbids");
  if (rc < 0)
    return 0;
  FUZZ_CHECK(r.token == want, "token %llu, the record says %llu", (unsigned long long)r.token,
             (unsigned long long)want);
  FUZZ_CHECK(memchr(r.owner, '\0', sizeof r.owner) && memchr(r.label, '\0', sizeof r.label),
             "unterminated field");

  char out[512];
  int n = dlock__file_record_format(&r, out, sizeof out);
  FUZZ_CHECK(n > 0, "a parsed record does not format");
  dlock__file_record back;
  FUZZ_CHECK(dlock__file_record_parse(out, (size_t)n, &back) == 0, "formatted record refused");
  FUZZ_CHECK(back.token == r.token && back.pid == r.pid && strcmp(back.owner, r.owner) == 0,
             "record changed through format and parse");
  for (char *p = r.label; *p; p++)
    if (*p == '\r')
      *p = ' ';
  FUZZ_CHECK(strcmp(back.label, r.label) == 0, "label changed through format and parse");
  return 0;
}
