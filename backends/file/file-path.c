/* file:// codec: see file-path.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file-path.h"

static int keep(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

int dlock__file_key_path(const char *dir, const char *key, size_t keylen, char *out,
                         size_t outlen) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0, chunk = 0;
#define PUT(ch)                                                                \
  do {                                                                         \
    if (o + 1 >= outlen)                                                       \
      return dlock_seterr(DLOCK_EINVAL, "file: lock path too long");           \
    out[o++] = (ch);                                                           \
  } while (0)
  for (const char *p = dir; *p; p++)
    PUT(*p);
  if (o == 0 || out[o - 1] != '/')
    PUT('/');
  for (size_t i = 0; i < keylen; i++) {
    unsigned char c = (unsigned char)key[i];
    size_t need = keep(c) ? 1 : 3;
    if (chunk + need > DLOCK__FILE_CHUNK) {
      PUT('.');
      PUT('d');
      PUT('/');
      chunk = 0;
    }
    if (need == 1) {
      PUT((char)c);
    } else {
      PUT('%');
      PUT(hex[c >> 4]);
      PUT(hex[c & 15]);
    }
    chunk += need;
  }
  const char *sfx = ".lock";
  for (const char *p = sfx; *p; p++)
    PUT(*p);
  out[o] = '\0';
  return (int)o;
#undef PUT
}

static int unhex(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int dlock__file_path_key(const char *rel, size_t rellen, char *out, size_t outlen) {
  static const char sfx[] = ".lock";
  const size_t sl = sizeof sfx - 1;
  if (rellen <= sl || memcmp(rel + rellen - sl, sfx, sl) != 0)
    return -1;
  size_t end = rellen - sl, o = 0, chunk = 0;
  for (size_t i = 0; i < end;) {
    unsigned char c = (unsigned char)rel[i];
    if (c == '.') {
      /* Only as a split: ".d/" after a chunk that was full enough that the
       * encoder had to split it, with more of the key after it. */
      if (i + 3 > end || rel[i + 1] != 'd' || rel[i + 2] != '/' || i + 3 == end || chunk == 0)
        return -1;
      i += 3;
      chunk = 0;
      continue;
    }
    int v;
    size_t used;
    if (c == '%') {
      int hi, lo;
      if (i + 3 > end || (hi = unhex((unsigned char)rel[i + 1])) < 0 ||
          (lo = unhex((unsigned char)rel[i + 2])) < 0)
        return -1;
      v = hi << 4 | lo;
      /* The encoder writes bytes it keeps as themselves, so "%41" is no
       * key's path, and a NUL is never in a key. */
      if (keep((unsigned char)v) || v == 0)
        return -1;
      used = 3;
    } else if (keep(c)) {
      v = c;
      used = 1;
    } else {
      return -1;
    }
    if (chunk + used > DLOCK__FILE_CHUNK || o + 1 >= outlen)
      return -1;
    out[o++] = (char)v;
    chunk += used;
    i += used;
  }
  if (o == 0)
    return -1;
  out[o] = '\0';
  return (int)o;
}

int dlock__file_record_format(const dlock__file_record *r, char *out, size_t outlen) {
  char label[128];
  size_t j = 0;
  /* One record per line: a label must not be able to forge another field. */
  for (size_t i = 0; r->label[i] && j + 1 < sizeof label; i++)
    label[j++] = (r->label[i] == '\n' || r->label[i] == '\r') ? ' ' : r->label[i];
  label[j] = '\0';
  int n = snprintf(out, outlen, "dlock-file 1\ntoken %" PRIu64 "\nowner %s\npid %ld\nlabel %s\n",
                   r->token, r->owner, r->pid, label);
  if (n < 0 || (size_t)n >= outlen)
    return dlock_seterr(DLOCK_EINVAL, "file: record too long");
  return n;
}

/* Decimal digits only, no overflow.  strtoull would also skip blanks and
 * take a sign, and "-5" after a blank then reads as 2^64-5: a counter that
 * jumps to its end. */
static int parse_token(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (!*s)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int dlock__file_record_parse(const char *buf, size_t len, dlock__file_record *r) {
  memset(r, 0, sizeof *r);
  if (len == 0)
    return 0;
  char tmp[512];
  if (len >= sizeof tmp)
    return dlock_seterr(DLOCK_EBACKEND, "file: lock file is corrupt (too long)");
  memcpy(tmp, buf, len);
  tmp[len] = '\0';
  char *save = NULL;
  char *line = strtok_r(tmp, "\n", &save);
  if (!line || strcmp(line, "dlock-file 1") != 0)
    return dlock_seterr(DLOCK_EBACKEND, "file: lock file is corrupt (bad header)");
  int have_token = 0;
  while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
    if (strncmp(line, "token ", 6) == 0) {
      uint64_t v;
      if (parse_token(line + 6, &v) < 0)
        return dlock_seterr(DLOCK_EBACKEND, "file: lock file is corrupt (bad token)");
      r->token = v;
      have_token = 1;
    } else if (strncmp(line, "owner ", 6) == 0) {
      snprintf(r->owner, sizeof r->owner, "%s", line + 6);
    } else if (strncmp(line, "pid ", 4) == 0) {
      r->pid = strtol(line + 4, NULL, 10);
    } else if (strncmp(line, "label ", 6) == 0) {
      snprintf(r->label, sizeof r->label, "%s", line + 6);
    }
  }
  if (!have_token)
    return dlock_seterr(DLOCK_EBACKEND, "file: lock file is corrupt (no token)");
  return 0;
}
