/* Base64 for the JSON stores; see base64.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/http/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *dlock__b64_encode(const void *data, size_t len) {
  const unsigned char *d = data;
  char *out = malloc((len + 2) / 3 * 4 + 1);
  if (!out)
    return NULL;
  char *w = out;
  for (size_t i = 0; i < len; i += 3) {
    size_t left = len - i;
    uint32_t g = (uint32_t)d[i] << 16;
    if (left > 1)
      g |= (uint32_t)d[i + 1] << 8;
    if (left > 2)
      g |= d[i + 2];
    w[0] = alphabet[g >> 18 & 63];
    w[1] = alphabet[g >> 12 & 63];
    w[2] = left > 1 ? alphabet[g >> 6 & 63] : '=';
    w[3] = left > 2 ? alphabet[g & 63] : '=';
    w += 4;
  }
  *w = '\0';
  return out;
}

static int digit(unsigned char c) {
  const char *p = c ? strchr(alphabet, c) : NULL;
  return p ? (int)(p - alphabet) : -1;
}

int dlock__b64_decode(const char *who, const char *s, size_t n, char **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  if (n % 4)
    return dlock_seterr(DLOCK_EBACKEND, "%s: malformed base64 (length %zu)", who, n);
  size_t pad = 0;
  while (pad < 2 && pad < n && s[n - 1 - pad] == '=')
    pad++;
  unsigned char *d = malloc(n / 4 * 3 + 1);
  if (!d)
    return dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", who);
  size_t len = 0;
  for (size_t i = 0; i < n; i += 4) {
    /* Padding counts only in the last group; an '=' anywhere else is no
     * digit and is refused. */
    size_t digits = i + 4 == n ? 4 - pad : 4;
    uint32_t g = 0;
    for (size_t j = 0; j < 4; j++) {
      int x = j < digits ? digit((unsigned char)s[i + j]) : 0;
      if (x < 0) {
        free(d);
        return dlock_seterr(DLOCK_EBACKEND, "%s: malformed base64 (byte %zu)", who, i + j);
      }
      g = g << 6 | (uint32_t)x;
    }
    d[len++] = (unsigned char)(g >> 16);
    if (digits > 2)
      d[len++] = (unsigned char)(g >> 8);
    if (digits > 3)
      d[len++] = (unsigned char)g;
  }
  d[len] = '\0';
  *out = (char *)d;
  *outlen = len;
  return 0;
}
