/* RESP replies: the input is fed to hiredis's reader (in two pieces, cut
 * where its first byte says, as a socket may split it) and every reply
 * tree it yields goes through every decoder of the codec.  Checked: each
 * decoder either fills its output with values in its documented range or
 * fails with a negative code leaving the output untouched; the AUTH reply
 * never quotes the password; lock values split back into what they were
 * made of.  The input is also tried as a lock value and as a number. */
#include <inttypes.h>

#include <errno.h>

#include "fuzz.h"

#include "backends/redis/redis-codec.h"

#define SECRET "s3cr3t-pw"
#define MAX_REPLIES 16

/* Reference for dlock__redis_parse_u64, by other means than the code it
 * checks: digits only (strspn), and strtoull's own range check. */
static int ref_u64(const char *s, size_t n, uint64_t *out) {
  char *c = fuzz_strndup(s, n);
  int rc = -1;
  if (n > 0 && strspn(c, "0123456789") == n) {
    errno = 0;
    unsigned long long v = strtoull(c, NULL, 10);
    if (errno != ERANGE && v <= UINT64_MAX) {
      *out = (uint64_t)v;
      rc = 0;
    }
  }
  free(c);
  return rc;
}

static void check_u64(const char *s, size_t n) {
  uint64_t a = 7, b = 7;
  int ra = dlock__redis_parse_u64(s, n, &a), rb = ref_u64(s, n, &b);
  FUZZ_CHECK(ra == rb && a == b, "parse_u64 of \"%.*s\": %d %" PRIu64 ", expected %d %" PRIu64,
             (int)n, s, ra, a, rb, b);
}

static void check_value(const char *v, size_t n) {
  dlock__redis_value_parts vp;
  memset(&vp, 0xa5, sizeof vp);
  if (dlock__redis_value_parse(v, n, &vp) < 0)
    return;
  FUZZ_CHECK(vp.owner == v && vp.owner_len >= 1 && !memchr(v, ':', vp.owner_len) &&
                 v[vp.owner_len] == ':',
             "value owner");
  const char *t = v + vp.owner_len + 1;
  const char *colon = memchr(t, ':', n - vp.owner_len - 1);
  FUZZ_CHECK(colon, "value without a second ':'");
  uint64_t tok;
  FUZZ_CHECK(ref_u64(t, (size_t)(colon - t), &tok) == 0 && tok == vp.token, "value token");
  FUZZ_CHECK(vp.label == colon + 1 && vp.label_len == (size_t)(v + n - colon - 1),
             "value label");
}

static void check_text(const char *s, size_t n, const char *what) {
  FUZZ_CHECK(memchr(s, '\0', n) != NULL, "%s not terminated", what);
}

static void decode_all(const redisReply *r) {
  dlock__redis_acquire_result a, a0;
  memset(&a, 0x5a, sizeof a);
  a0 = a;
  int rc = dlock__redis_decode_acquire(r, &a);
  if (rc == 0) {
    FUZZ_CHECK(a.acquired == 0 || a.acquired == 1, "acquired %d", a.acquired);
    if (a.acquired)
      FUZZ_CHECK(a.token >= 1 && a.token <= INT64_MAX, "token %" PRIu64, a.token);
    else
      FUZZ_CHECK(a.pttl >= -1, "pttl %" PRId64, a.pttl);
  } else {
    FUZZ_CHECK(rc < 0 && memcmp(&a, &a0, sizeof a) == 0, "acquire output touched on failure");
  }

  int flag = 42;
  rc = dlock__redis_decode_flag(r, "release", &flag);
  FUZZ_CHECK(rc == 0 ? flag == 0 || flag == 1 : rc < 0 && flag == 42, "flag");

  dlock_info info, info0;
  memset(&info, 0x5a, sizeof info);
  info0 = info;
  rc = dlock__redis_decode_inspect(r, &info);
  if (rc == 0) {
    FUZZ_CHECK(info.held == 0 || info.held == 1, "held %d", info.held);
    FUZZ_CHECK(info.ttl_ms >= -1, "ttl %" PRId64, info.ttl_ms);
    check_text(info.owner, sizeof info.owner, "owner");
    check_text(info.label, sizeof info.label, "label");
    if (!info.held)
      FUZZ_CHECK(info.owner[0] == '\0' && info.label[0] == '\0', "free key with an owner");
  } else {
    FUZZ_CHECK(rc < 0 && memcmp(&info, &info0, sizeof info) == 0,
               "inspect output touched on failure");
  }

  int st = 42;
  memset(&info, 0x5a, sizeof info);
  rc = dlock__redis_decode_break(r, &st, &info);
  if (rc == 0) {
    FUZZ_CHECK(st >= 0 && st <= 2 && info.held == (st != 0), "break status %d held %d", st,
               info.held);
    check_text(info.owner, sizeof info.owner, "owner");
    check_text(info.label, sizeof info.label, "label");
  } else {
    FUZZ_CHECK(rc < 0 && st == 42 && memcmp(&info, &info0, sizeof info) == 0,
               "break output touched on failure");
  }
  for (size_t i = 0; i < 3; i++) {
    memset(&info, 0x5a, sizeof info);
    rc = dlock__redis_decode_list(r, i, &info);
    FUZZ_CHECK(rc == 0 ? info.held == 0 || info.held == 1
                       : rc < 0 && memcmp(&info, &info0, sizeof info) == 0,
               "list entry %zu", i);
  }

  rc = dlock__redis_decode_ok(r, "SELECT");
  FUZZ_CHECK(rc <= 0, "ok rc %d", rc);
  rc = dlock__redis_decode_auth(r, SECRET);
  FUZZ_CHECK(rc == 0 || rc == DLOCK_EAUTH || rc == DLOCK_EBACKEND, "auth rc %d", rc);
  if (rc < 0)
    FUZZ_CHECK(!strstr(dlock_client_errmsg(NULL), SECRET), "AUTH message shows the password");

  char sha[41];
  memset(sha, 'z', sizeof sha);
  rc = dlock__redis_decode_sha(r, sha);
  if (rc == 0) {
    FUZZ_CHECK(sha[40] == '\0' && strlen(sha) == 40, "sha length");
    for (int i = 0; i < 40; i++)
      FUZZ_CHECK(strchr("0123456789abcdefABCDEF", sha[i]), "sha not hex");
  } else {
    FUZZ_CHECK(rc < 0, "sha rc %d", rc);
  }

  long long count = -7;
  rc = dlock__redis_decode_push(r, &count);
  FUZZ_CHECK(rc < 0 || rc == DLOCK__REDIS_PUSH_MESSAGE || rc == DLOCK__REDIS_PUSH_SUBSCRIBE ||
                 rc == DLOCK__REDIS_PUSH_UNSUBSCRIBE,
             "push kind %d", rc);
  rc = dlock__redis_decode_push(r, NULL);
  (void)dlock__redis_is_noscript(r);
  rc = dlock__redis_reply_error(r, "fuzz");
  FUZZ_CHECK(rc == DLOCK_EAUTH || rc == DLOCK_EBACKEND, "reply_error rc %d", rc);

  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
      r->type == REDIS_REPLY_ERROR) {
    check_value(r->str, r->len);
    check_u64(r->str, r->len);
  }
  if (r->type == REDIS_REPLY_ARRAY)
    for (size_t i = 0; i < r->elements; i++)
      if (r->element[i])
        decode_all(r->element[i]);
}

/* hiredis 0.14's reader allocates an aggregate's element array as soon as
 * it reads the count (1.x bounds it with maxelements), so "*2000000000"
 * asks for 16 GB; that is the library's, and inputs declaring more than
 * this many elements are skipped. */
#define MAX_ELEMENTS 65536

static int huge_aggregate(const uint8_t *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if ((i == 0 || d[i - 1] == '\n') && strchr("*%~>|", d[i]) && d[i]) {
      unsigned long long v = 0;
      for (size_t j = i + 1; j < n && d[j] >= '0' && d[j] <= '9' && v <= MAX_ELEMENTS; j++)
        v = v * 10 + (d[j] - '0');
      if (v > MAX_ELEMENTS)
        return 1;
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_value((const char *)data, size);
  check_u64((const char *)data, size);
  if (huge_aggregate(data, size))
    return 0;
  redisReader *rd = redisReaderCreate();
  if (!rd)
    return 0;
  size_t cut = size ? data[0] % (size + 1) : 0;
  const char *piece[2] = {(const char *)data, (const char *)data + cut};
  size_t plen[2] = {cut, size - cut};
  int replies = 0;
  for (int p = 0; p < 2; p++) {
    if (redisReaderFeed(rd, piece[p], plen[p]) != REDIS_OK)
      break;
    void *v = NULL;
    int rc = REDIS_OK;
    while (replies < MAX_REPLIES && (rc = redisReaderGetReply(rd, &v)) == REDIS_OK && v) {
      decode_all(v);
      freeReplyObject(v);
      replies++;
      v = NULL;
    }
    if (rc != REDIS_OK)
      break;
  }
  redisReaderFree(rd);
  return 0;
}
