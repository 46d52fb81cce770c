/* Redis codec without a server: keys, values, and replies decoded from raw
 * RESP bytes run through hiredis's own reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "backends/redis/redis-codec.h"

#define OWNER "0123456789abcdef0123456789abcdef"

/* RESP bytes -> one reply tree; fails the test if the reader rejects them. */
static redisReply *parse_n(const char *resp, size_t len) {
  redisReader *rd = redisReaderCreate();
  assert_non_null(rd);
  assert_int_equal(redisReaderFeed(rd, resp, len), REDIS_OK);
  void *v = NULL;
  assert_int_equal(redisReaderGetReply(rd, &v), REDIS_OK);
  assert_non_null(v);
  redisReaderFree(rd);
  return v;
}

static redisReply *parse(const char *resp) {
  return parse_n(resp, strlen(resp));
}

static void assert_msg_has(const char *needle) {
  const char *m = dlock_client_errmsg(NULL);
  if (!strstr(m, needle))
    fail_msg("message \"%s\" lacks \"%s\"", m, needle);
}

static void assert_msg_lacks(const char *needle) {
  const char *m = dlock_client_errmsg(NULL);
  if (strstr(m, needle))
    fail_msg("message \"%s\" contains \"%s\"", m, needle);
}

/* ---- keys ---- */

static void key_default_prefix(void **state) {
  (void)state;
  size_t n = 0;
  char *k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_LOCK, "jobs/42", 7, &n);
  assert_non_null(k);
  assert_string_equal(k, "dlock:lock:{jobs/42}");
  assert_int_equal(n, strlen("dlock:lock:{jobs/42}"));
  free(k);
  k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_FENCE, "jobs/42", 7, &n);
  assert_string_equal(k, "dlock:fence:{jobs/42}");
  assert_int_equal(n, 21);
  free(k);
  k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_CHAN, "jobs/42", 7, &n);
  assert_string_equal(k, "dlock:lockch:{jobs/42}");
  assert_int_equal(n, 22);
  free(k);
}

static void key_custom_and_empty_prefix(void **state) {
  (void)state;
  size_t n = 0;
  char *k = dlock__redis_key("app:v2:", DLOCK__REDIS_KEY_LOCK, "x", 1, &n);
  assert_string_equal(k, "app:v2:lock:{x}");
  assert_int_equal(n, 15);
  free(k);
  k = dlock__redis_key("", DLOCK__REDIS_KEY_FENCE, "x", 1, &n);
  assert_string_equal(k, "fence:{x}");
  assert_int_equal(n, 9);
  free(k);
}

static void key_binary_and_odd(void **state) {
  (void)state;
  /* Only KEYLEN counts: an embedded NUL and bytes after it are kept. */
  static const char bin[] = {'a', '\0', 'b', (char)0xff};
  size_t n = 0;
  char *k = dlock__redis_key("p:", DLOCK__REDIS_KEY_LOCK, bin, sizeof bin, &n);
  assert_non_null(k);
  static const char want[] = "p:lock:{a\0b\xff}";
  assert_int_equal(n, sizeof want - 1);
  assert_memory_equal(k, want, n);
  assert_int_equal(k[n], '\0');
  free(k);

  k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_LOCK, "a}b{c", 5, &n);
  assert_string_equal(k, "dlock:lock:{a}b{c}");
  free(k);
  k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_LOCK, "d\xc3\xa9j\xc3\xa0 vu", 9, &n);
  assert_string_equal(k, "dlock:lock:{d\xc3\xa9j\xc3\xa0 vu}");
  free(k);
  k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_LOCK, "with space\r\n", 12, &n);
  assert_string_equal(k, "dlock:lock:{with space\r\n}");
  free(k);

  /* A 512-byte key (the longest accepted) is copied whole. */
  char big[512];
  memset(big, 'k', sizeof big);
  k = dlock__redis_key(NULL, DLOCK__REDIS_KEY_CHAN, big, sizeof big, &n);
  assert_int_equal(n, strlen("dlock:lockch:{") + 512 + 1);
  assert_memory_equal(k + 14, big, 512);
  assert_int_equal(k[n - 1], '}');
  free(k);
}

static void key_kinds_never_collide(void **state) {
  (void)state;
  /* "lock:{" vs "lockch:{": a key starting with "ch:{" must not make the
   * lock key of one equal the channel of another. */
  size_t a, b;
  char *lk = dlock__redis_key(NULL, DLOCK__REDIS_KEY_LOCK, "ch:{x}", 6, &a);
  char *ck = dlock__redis_key(NULL, DLOCK__REDIS_KEY_CHAN, "x}", 2, &b);
  assert_string_equal(lk, "dlock:lock:{ch:{x}}");
  assert_string_equal(ck, "dlock:lockch:{x}}");
  assert_string_not_equal(lk, ck);
  free(lk);
  free(ck);
}

/* ---- values ---- */

/* The layout the acquire script writes: owner ":" token ":" label. */
static char *mkvalue(const char *owner, uint64_t token, const char *label, size_t *n) {
  char *v = NULL;
  int len = asprintf(&v, "%s:%llu:%s", owner, (unsigned long long)token, label);
  assert_true(len > 0);
  *n = (size_t)len;
  return v;
}


static void value_parse_ok(void **state) {
  (void)state;
  dlock__redis_value_parts p;
  const char *s = OWNER ":42:host:1234:extra";
  assert_int_equal(dlock__redis_value_parse(s, strlen(s), &p), 0);
  assert_int_equal(p.owner_len, 32);
  assert_memory_equal(p.owner, OWNER, 32);
  assert_int_equal(p.token, 42);
  assert_int_equal(p.label_len, strlen("host:1234:extra"));
  assert_memory_equal(p.label, "host:1234:extra", p.label_len);

  s = OWNER ":7:";
  assert_int_equal(dlock__redis_value_parse(s, strlen(s), &p), 0);
  assert_int_equal(p.token, 7);
  assert_int_equal(p.label_len, 0);

  s = OWNER ":18446744073709551615:x";
  assert_int_equal(dlock__redis_value_parse(s, strlen(s), &p), 0);
  assert_true(p.token == UINT64_MAX);
}

static void value_round_trip(void **state) {
  (void)state;
  size_t n;
  char *v = mkvalue(OWNER, 9001, "a:b::c:", &n);
  dlock__redis_value_parts p;
  assert_int_equal(dlock__redis_value_parse(v, n, &p), 0);
  assert_int_equal(p.token, 9001);
  assert_int_equal(p.owner_len, 32);
  assert_int_equal(p.label_len, 7);
  assert_memory_equal(p.label, "a:b::c:", 7);
  free(v);
}

static void value_parse_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "nocolon",
      ":42:label",                 /* empty owner */
      OWNER ":42",                 /* no second ':' */
      OWNER "::label",             /* empty token */
      OWNER ":4x2:label",          /* not a number */
      OWNER ":+42:label",          /* sign */
      OWNER ":-1:label",           /* sign */
      OWNER ":18446744073709551616:l", /* 2^64 */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dlock__redis_value_parts p;
    memset(&p, 0x5a, sizeof p);
    if (dlock__redis_value_parse(bad[i], strlen(bad[i]), &p) != DLOCK_EINVAL)
      fail_msg("accepted \"%s\"", bad[i]);
  }
  /* The length bounds the parse: a valid tail past LEN is not seen. */
  const char *s = OWNER ":42:label";
  dlock__redis_value_parts p;
  assert_int_equal(dlock__redis_value_parse(s, 35, &p), DLOCK_EINVAL);
}

static void parse_u64(void **state) {
  (void)state;
  uint64_t v = 5;
  assert_int_equal(dlock__redis_parse_u64("0", 1, &v), 0);
  assert_true(v == 0);
  assert_int_equal(dlock__redis_parse_u64("18446744073709551615", 20, &v), 0);
  assert_true(v == UINT64_MAX);
  assert_int_equal(dlock__redis_parse_u64("18446744073709551616", 20, &v), -1);
  assert_int_equal(dlock__redis_parse_u64("99999999999999999999", 20, &v), -1);
  assert_int_equal(dlock__redis_parse_u64("", 0, &v), -1);
  assert_int_equal(dlock__redis_parse_u64(" 1", 2, &v), -1);
  assert_int_equal(dlock__redis_parse_u64("12", 1, &v), 0);
  assert_true(v == 1);
}

/* ---- scripts ---- */

static void scripts_present(void **state) {
  (void)state;
  const char *a = dlock__redis_script(DLOCK__REDIS_ACQUIRE);
  assert_non_null(strstr(a, "INCR"));
  assert_non_null(strstr(a, "'PX'"));
  assert_non_null(strstr(a, "PTTL"));
  assert_non_null(strstr(dlock__redis_script(DLOCK__REDIS_RELEASE), "PUBLISH"));
  assert_non_null(strstr(dlock__redis_script(DLOCK__REDIS_RELEASE), "DEL"));
  assert_non_null(strstr(dlock__redis_script(DLOCK__REDIS_RENEW), "PEXPIRE"));
  assert_non_null(strstr(dlock__redis_script(DLOCK__REDIS_INSPECT), "PTTL"));
  assert_null(dlock__redis_script(DLOCK__REDIS_NSCRIPTS));
  assert_string_equal(dlock__redis_script_name(DLOCK__REDIS_RENEW), "renew");
}

/* ---- replies ---- */

static void acquire_ok(void **state) {
  (void)state;
  redisReply *r = parse("*2\r\n:1\r\n:42\r\n");
  dlock__redis_acquire_result res = {0, 0, 0};
  assert_int_equal(dlock__redis_decode_acquire(r, &res), 0);
  assert_int_equal(res.acquired, 1);
  assert_true(res.token == 42);
  freeReplyObject(r);

  r = parse("*2\r\n:1\r\n:9007199254740992\r\n");
  assert_int_equal(dlock__redis_decode_acquire(r, &res), 0);
  assert_true(res.token == 9007199254740992ull);
  freeReplyObject(r);
}

static void acquire_busy(void **state) {
  (void)state;
  redisReply *r = parse("*2\r\n:0\r\n:1234\r\n");
  dlock__redis_acquire_result res = {7, 7, 7};
  assert_int_equal(dlock__redis_decode_acquire(r, &res), 0);
  assert_int_equal(res.acquired, 0);
  assert_int_equal(res.pttl, 1234);
  assert_true(res.token == 0);
  freeReplyObject(r);

  /* A holder without expiry: PTTL -1 is reported as unknown. */
  r = parse("*2\r\n:0\r\n:-1\r\n");
  assert_int_equal(dlock__redis_decode_acquire(r, &res), 0);
  assert_int_equal(res.acquired, 0);
  assert_int_equal(res.pttl, -1);
  freeReplyObject(r);
}

static void acquire_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      ":1\r\n",                       /* not an array */
      "*1\r\n:1\r\n",                 /* too short */
      "*3\r\n:1\r\n:2\r\n:3\r\n",     /* too long */
      "*2\r\n$1\r\n1\r\n:42\r\n",     /* string status */
      "*2\r\n:1\r\n$2\r\n42\r\n",     /* string token */
      "*2\r\n:1\r\n:0\r\n",           /* token 0 */
      "*2\r\n:1\r\n:-5\r\n",          /* negative token */
      "*2\r\n:2\r\n:5\r\n",           /* status 2 */
      "$-1\r\n",                      /* nil */
      "*-1\r\n",                      /* nil array */
      "*0\r\n",                       /* empty array */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    redisReply *r = parse(bad[i]);
    dlock__redis_acquire_result res = {9, 9, 9};
    int rc = dlock__redis_decode_acquire(r, &res);
    if (rc != DLOCK_EBACKEND)
      fail_msg("reply %zu: got %d", i, rc);
    assert_msg_has("redis: acquire: unexpected reply");
    /* Untouched on failure. */
    assert_int_equal(res.acquired, 9);
    assert_true(res.token == 9);
    assert_int_equal(res.pttl, 9);
    freeReplyObject(r);
  }
}

static void acquire_error_reply(void **state) {
  (void)state;
  redisReply *r = parse("-OOM command not allowed when used memory > 'maxmemory'.\r\n");
  dlock__redis_acquire_result res;
  assert_int_equal(dlock__redis_decode_acquire(r, &res), DLOCK_EBACKEND);
  assert_msg_has("redis: acquire: OOM command not allowed");
  freeReplyObject(r);

  r = parse("-NOAUTH Authentication required.\r\n");
  assert_int_equal(dlock__redis_decode_acquire(r, &res), DLOCK_EAUTH);
  assert_msg_has("NOAUTH Authentication required.");
  freeReplyObject(r);

  r = parse("-NOPERM this user has no permissions to run the 'evalsha' command\r\n");
  assert_int_equal(dlock__redis_decode_acquire(r, &res), DLOCK_EAUTH);
  freeReplyObject(r);
}

static void noscript(void **state) {
  (void)state;
  redisReply *r = parse("-NOSCRIPT No matching script. Please use EVAL.\r\n");
  assert_int_equal(dlock__redis_is_noscript(r), 1);
  freeReplyObject(r);
  r = parse("-NOSCRIPT\r\n");
  assert_int_equal(dlock__redis_is_noscript(r), 1);
  freeReplyObject(r);
  r = parse("-NOSCRIPTS nope\r\n");
  assert_int_equal(dlock__redis_is_noscript(r), 0);
  freeReplyObject(r);
  r = parse("-ERR NOSCRIPT\r\n");
  assert_int_equal(dlock__redis_is_noscript(r), 0);
  freeReplyObject(r);
  r = parse("$8\r\nNOSCRIPT\r\n");
  assert_int_equal(dlock__redis_is_noscript(r), 0);
  freeReplyObject(r);
  assert_int_equal(dlock__redis_is_noscript(NULL), 0);
}

static void flag(void **state) {
  (void)state;
  int v = 7;
  redisReply *r = parse(":1\r\n");
  assert_int_equal(dlock__redis_decode_flag(r, "release", &v), 0);
  assert_int_equal(v, 1);
  freeReplyObject(r);
  r = parse(":0\r\n");
  assert_int_equal(dlock__redis_decode_flag(r, "release", &v), 0);
  assert_int_equal(v, 0);
  freeReplyObject(r);

  v = 7;
  r = parse(":2\r\n");
  assert_int_equal(dlock__redis_decode_flag(r, "renew", &v), DLOCK_EBACKEND);
  assert_msg_has("redis: renew: unexpected reply");
  assert_int_equal(v, 7);
  freeReplyObject(r);
  r = parse("$1\r\n1\r\n");
  assert_int_equal(dlock__redis_decode_flag(r, "renew", &v), DLOCK_EBACKEND);
  assert_msg_has("string");
  freeReplyObject(r);
  r = parse("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  assert_int_equal(dlock__redis_decode_flag(r, "release", &v), DLOCK_EBACKEND);
  assert_msg_has("redis: release: WRONGTYPE Operation against a key");
  assert_int_equal(v, 7);
  freeReplyObject(r);
}

static void inspect_held(void **state) {
  (void)state;
  const char *val = OWNER ":7:web:1";
  char resp[256];
  snprintf(resp, sizeof resp, "*3\r\n$%zu\r\n%s\r\n:5000\r\n$1\r\n7\r\n", strlen(val), val);
  redisReply *r = parse(resp);
  dlock_info info;
  memset(&info, 0x5a, sizeof info);
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_int_equal(info.held, 1);
  assert_true(info.token == 7);
  assert_int_equal(info.ttl_ms, 5000);
  assert_string_equal(info.owner, OWNER);
  assert_string_equal(info.label, "web:1");
  freeReplyObject(r);

  /* The value's token wins over the counter (which may have moved on). */
  snprintf(resp, sizeof resp, "*3\r\n$%zu\r\n%s\r\n:-1\r\n$2\r\n99\r\n", strlen(val), val);
  r = parse(resp);
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_true(info.token == 7);
  assert_int_equal(info.ttl_ms, -1);
  freeReplyObject(r);
}

static void inspect_free(void **state) {
  (void)state;
  dlock_info info;
  memset(&info, 0x5a, sizeof info);
  redisReply *r = parse("*3\r\n$-1\r\n:-2\r\n$2\r\n12\r\n");
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_int_equal(info.held, 0);
  assert_true(info.token == 12);
  assert_int_equal(info.ttl_ms, -1);
  assert_string_equal(info.owner, "");
  assert_string_equal(info.label, "");
  freeReplyObject(r);

  r = parse("*3\r\n$-1\r\n:-2\r\n$-1\r\n");
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_int_equal(info.held, 0);
  assert_true(info.token == 0);
  freeReplyObject(r);
}

static void inspect_foreign(void **state) {
  (void)state;
  dlock_info info;
  redisReply *r = parse("*3\r\n$5\r\nhello\r\n:250\r\n$1\r\n3\r\n");
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_int_equal(info.held, 1);
  assert_true(info.token == 3);
  assert_int_equal(info.ttl_ms, 250);
  assert_string_equal(info.owner, "");
  assert_string_equal(info.label, "");
  freeReplyObject(r);

  /* A counter overwritten with junk is unknown, not an error. */
  r = parse("*3\r\n$-1\r\n:-2\r\n$3\r\nabc\r\n");
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_true(info.token == 0);
  freeReplyObject(r);
}

static void inspect_truncates_label(void **state) {
  (void)state;
  /* 100 two-byte characters: 200 bytes do not fit in label[128]; the copy
   * stops at a character boundary (126 bytes), never mid-sequence. */
  char label[201];
  for (int i = 0; i < 100; i++) {
    label[2 * i] = (char)0xc3;
    label[2 * i + 1] = (char)0xa9;
  }
  label[200] = '\0';
  size_t vlen;
  char *val = mkvalue(OWNER, 5, label, &vlen);
  char *resp = malloc(vlen + 64);
  assert_non_null(resp);
  int n = snprintf(resp, vlen + 64, "*3\r\n$%zu\r\n", vlen);
  memcpy(resp + n, val, vlen);
  n += (int)vlen;
  n += snprintf(resp + n, 64, "\r\n:10\r\n$1\r\n5\r\n");
  redisReply *r = parse_n(resp, (size_t)n);
  dlock_info info;
  assert_int_equal(dlock__redis_decode_inspect(r, &info), 0);
  assert_int_equal(strlen(info.label), 126);
  assert_memory_equal(info.label, label, 126);
  assert_true(info.token == 5);
  freeReplyObject(r);
  free(resp);
  free(val);
}

static void inspect_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "*2\r\n$-1\r\n:-2\r\n",
      "*3\r\n:1\r\n:-2\r\n$-1\r\n",          /* value is an integer */
      "*3\r\n$-1\r\n$2\r\n10\r\n$-1\r\n",    /* ttl is a string */
      "*3\r\n$-1\r\n:-2\r\n:5\r\n",          /* fence is an integer */
      ":1\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    redisReply *r = parse(bad[i]);
    dlock_info info;
    memset(&info, 0x5a, sizeof info);
    int rc = dlock__redis_decode_inspect(r, &info);
    if (rc != DLOCK_EBACKEND)
      fail_msg("reply %zu: got %d", i, rc);
    assert_msg_has("redis: inspect: unexpected reply");
    assert_int_equal(info.held, 0x5a5a5a5a);
    freeReplyObject(r);
  }
  redisReply *r = parse("-BUSY Redis is busy running a script.\r\n");
  dlock_info info;
  assert_int_equal(dlock__redis_decode_inspect(r, &info), DLOCK_EBACKEND);
  assert_msg_has("redis: inspect: BUSY Redis is busy");
  freeReplyObject(r);
}

static void status_ok(void **state) {
  (void)state;
  redisReply *r = parse("+OK\r\n");
  assert_int_equal(dlock__redis_decode_ok(r, "SELECT"), 0);
  freeReplyObject(r);
  r = parse("+QUEUED\r\n");
  assert_int_equal(dlock__redis_decode_ok(r, "SELECT"), DLOCK_EBACKEND);
  freeReplyObject(r);
  r = parse("$2\r\nOK\r\n");
  assert_int_equal(dlock__redis_decode_ok(r, "SELECT"), DLOCK_EBACKEND);
  freeReplyObject(r);
  r = parse("-ERR DB index is out of range\r\n");
  assert_int_equal(dlock__redis_decode_ok(r, "SELECT"), DLOCK_EBACKEND);
  assert_msg_has("redis: SELECT: ERR DB index is out of range");
  freeReplyObject(r);
}

static void auth(void **state) {
  (void)state;
  redisReply *r = parse("+OK\r\n");
  assert_int_equal(dlock__redis_decode_auth(r, "hunter2"), 0);
  freeReplyObject(r);

  r = parse("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
  assert_int_equal(dlock__redis_decode_auth(r, "hunter2"), DLOCK_EAUTH);
  assert_msg_has("WRONGPASS invalid username-password pair");
  assert_msg_lacks("hunter2");
  freeReplyObject(r);

  /* Old servers say ERR; still an authentication failure. */
  r = parse("-ERR invalid password\r\n");
  assert_int_equal(dlock__redis_decode_auth(r, "hunter2"), DLOCK_EAUTH);
  freeReplyObject(r);

  /* A reply quoting the secret is not repeated. */
  r = parse("-ERR no such user or password hunter2\r\n");
  assert_int_equal(dlock__redis_decode_auth(r, "hunter2"), DLOCK_EAUTH);
  assert_msg_lacks("hunter2");
  assert_msg_has("AUTH refused");
  freeReplyObject(r);
}

static void sha(void **state) {
  (void)state;
  char out[41] = "unchanged";
  redisReply *r = parse("$40\r\n0123456789abcdef0123456789ABCDEF01234567\r\n");
  assert_int_equal(dlock__redis_decode_sha(r, out), 0);
  assert_string_equal(out, "0123456789abcdef0123456789ABCDEF01234567");
  freeReplyObject(r);

  memcpy(out, "unchanged", 10);
  r = parse("$39\r\n0123456789abcdef0123456789abcdef0123456\r\n");
  assert_int_equal(dlock__redis_decode_sha(r, out), DLOCK_EBACKEND);
  assert_string_equal(out, "unchanged");
  freeReplyObject(r);
  r = parse("$40\r\n0123456789abcdef0123456789abcdef0123456z\r\n");
  assert_int_equal(dlock__redis_decode_sha(r, out), DLOCK_EBACKEND);
  freeReplyObject(r);
  r = parse("-ERR Error compiling script\r\n");
  assert_int_equal(dlock__redis_decode_sha(r, out), DLOCK_EBACKEND);
  assert_msg_has("redis: SCRIPT LOAD: ERR Error compiling script");
  freeReplyObject(r);
}

static void push(void **state) {
  (void)state;
  long long count = -7;
  redisReply *r = parse("*3\r\n$7\r\nmessage\r\n$14\r\ndlock:lockch:{\r\n$3\r\nabc\r\n");
  assert_int_equal(dlock__redis_decode_push(r, &count), DLOCK__REDIS_PUSH_MESSAGE);
  freeReplyObject(r);

  r = parse("*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
  assert_int_equal(dlock__redis_decode_push(r, &count), DLOCK__REDIS_PUSH_SUBSCRIBE);
  assert_int_equal(count, 1);
  freeReplyObject(r);

  r = parse("*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n");
  assert_int_equal(dlock__redis_decode_push(r, &count), DLOCK__REDIS_PUSH_UNSUBSCRIBE);
  assert_int_equal(count, 0);
  freeReplyObject(r);

  /* UNSUBSCRIBE with nothing subscribed names no channel. */
  count = 5;
  r = parse("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
  assert_int_equal(dlock__redis_decode_push(r, &count), DLOCK__REDIS_PUSH_UNSUBSCRIBE);
  assert_int_equal(count, 0);
  freeReplyObject(r);

  static const char *const bad[] = {
      "*3\r\n$4\r\npong\r\n$1\r\nc\r\n:0\r\n",
      "*2\r\n$7\r\nmessage\r\n$1\r\nc\r\n",
      "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n$1\r\n1\r\n",
      "+OK\r\n",
      "*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nx\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = parse(bad[i]);
    int rc = dlock__redis_decode_push(r, &count);
    if (rc != DLOCK_EBACKEND)
      fail_msg("reply %zu: got %d", i, rc);
    freeReplyObject(r);
  }
  r = parse("-ERR only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed\r\n");
  assert_int_equal(dlock__redis_decode_push(r, &count), DLOCK_EBACKEND);
  assert_msg_has("redis: subscription: ERR only");
  freeReplyObject(r);
}

static void long_error_is_cut(void **state) {
  (void)state;
  char resp[2100];
  memcpy(resp, "-ERR ", 5);
  memset(resp + 5, 'x', 2000);
  memcpy(resp + 2005, "\r\n", 3);
  redisReply *r = parse(resp);
  int v;
  assert_int_equal(dlock__redis_decode_flag(r, "renew", &v), DLOCK_EBACKEND);
  assert_true(strlen(dlock_client_errmsg(NULL)) < 400);
  freeReplyObject(r);
}

static void scan_pattern_and_back(void **state) {
  (void)state;
  size_t len;
  char *p = dlock__redis_scan_pattern(NULL, "jobs/", 5, &len);
  assert_string_equal(p, "dlock:lock:{jobs/*");
  assert_int_equal(len, strlen(p));
  free(p);
  /* Glob specials in the prefix and the key match only themselves. */
  p = dlock__redis_scan_pattern("a*b?[", "x\\]y", 4, &len);
  assert_string_equal(p, "a\\*b\\?\\[lock:{x\\\\\\]y*");
  free(p);
  p = dlock__redis_scan_pattern("", "", 0, &len);
  assert_string_equal(p, "lock:{*");
  free(p);

  const char *key;
  size_t kl;
  const char name[] = "dlock:lock:{a}b}";
  assert_int_equal(dlock__redis_lock_key_of(NULL, name, sizeof name - 1, &key, &kl), 0);
  assert_int_equal(kl, 3);
  assert_memory_equal(key, "a}b", 3);
  static const char *const not_locks[] = {"dlock:fence:{a}", "dlock:lock:{a", "dlock:lock:",
                                          "other:lock:{a}", "dlock:lockch:{a}"};
  for (size_t i = 0; i < sizeof not_locks / sizeof *not_locks; i++)
    assert_int_equal(
        dlock__redis_lock_key_of(NULL, not_locks[i], strlen(not_locks[i]), &key, &kl), -1);
}

static void break_replies(void **state) {
  (void)state;
  const char *val = OWNER ":9:ops";
  char resp[256];
  int st = -1;
  dlock_info info;
  redisReply *r = parse("*1\r\n:0\r\n");
  assert_int_equal(dlock__redis_decode_break(r, &st, &info), 0);
  assert_int_equal(st, 0);
  assert_int_equal(info.held, 0);
  freeReplyObject(r);
  for (int want = 1; want <= 2; want++) {
    snprintf(resp, sizeof resp, "*3\r\n:%d\r\n$%zu\r\n%s\r\n:1200\r\n", want, strlen(val), val);
    r = parse(resp);
    assert_int_equal(dlock__redis_decode_break(r, &st, &info), 0);
    assert_int_equal(st, want);
    assert_int_equal(info.held, 1);
    assert_true(info.token == 9);
    assert_int_equal(info.ttl_ms, 1200);
    assert_string_equal(info.owner, OWNER);
    assert_string_equal(info.label, "ops");
    freeReplyObject(r);
  }
  static const char *const bad[] = {"*0\r\n", "*1\r\n:1\r\n", "*3\r\n:3\r\n$1\r\nx\r\n:1\r\n",
                                    "*3\r\n:1\r\n$-1\r\n:1\r\n", ":1\r\n"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    r = parse(bad[i]);
    st = 42;
    if (dlock__redis_decode_break(r, &st, &info) != DLOCK_EBACKEND || st != 42)
      fail_msg("break reply %zu accepted", i);
    freeReplyObject(r);
  }
}

static void list_replies(void **state) {
  (void)state;
  const char *val = OWNER ":4:w";
  char resp[256];
  snprintf(resp, sizeof resp, "*4\r\n$%zu\r\n%s\r\n:800\r\n$-1\r\n:-2\r\n", strlen(val), val);
  redisReply *r = parse(resp);
  dlock_info info;
  assert_int_equal(dlock__redis_decode_list(r, 0, &info), 0);
  assert_int_equal(info.held, 1);
  assert_true(info.token == 4);
  assert_int_equal(info.ttl_ms, 800);
  assert_int_equal(dlock__redis_decode_list(r, 1, &info), 0);
  assert_int_equal(info.held, 0);
  assert_int_equal(dlock__redis_decode_list(r, 2, &info), DLOCK_EBACKEND);
  freeReplyObject(r);
}

/* ---- renew of many locks ---- */

static void renew_replies(void **state) {
  (void)state;
  unsigned char f[3] = {7, 7, 7};
  redisReply *r = parse("*3\r\n:1\r\n:0\r\n:1\r\n");
  assert_int_equal(dlock__redis_decode_renew(r, 3, f), 0);
  assert_int_equal(f[0], 1);
  assert_int_equal(f[1], 0);
  assert_int_equal(f[2], 1);
  /* One result per key sent, no more and no fewer. */
  memset(f, 7, sizeof f);
  assert_int_equal(dlock__redis_decode_renew(r, 2, f), DLOCK_EBACKEND);
  assert_msg_has("redis: renew: unexpected reply (array: not one result per lock)");
  assert_int_equal(f[0], 7);
  freeReplyObject(r);

  r = parse("*0\r\n");
  assert_int_equal(dlock__redis_decode_renew(r, 0, f), 0);
  assert_int_equal(dlock__redis_decode_renew(r, 1, f), DLOCK_EBACKEND);
  freeReplyObject(r);
}

static void renew_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      ":1\r\n",                   /* the single-lock reply */
      "*2\r\n:1\r\n:2\r\n",       /* 2 */
      "*2\r\n:1\r\n:-1\r\n",      /* -1 */
      "*2\r\n:1\r\n$1\r\n1\r\n", /* a string */
      "*2\r\n:1\r\n$-1\r\n",      /* nil */
      "*2\r\n*0\r\n:1\r\n",       /* nested */
      "*-1\r\n",                  /* nil array */
      "$-1\r\n",                  /* nil */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    redisReply *r = parse(bad[i]);
    unsigned char f[2] = {7, 7};
    if (dlock__redis_decode_renew(r, 2, f) != DLOCK_EBACKEND)
      fail_msg("reply %zu was accepted", i);
    assert_msg_has("redis: renew: unexpected reply");
    assert_int_equal(f[0], 7);
    assert_int_equal(f[1], 7);
    freeReplyObject(r);
  }
  redisReply *r = parse("-BUSY Redis is busy running a script.\r\n");
  unsigned char f[1];
  assert_int_equal(dlock__redis_decode_renew(r, 1, f), DLOCK_EBACKEND);
  assert_msg_has("redis: renew: BUSY Redis is busy");
  freeReplyObject(r);
}

/* The renew script takes its keys and (owner, ttl) pairs; the owner
 * comes with its ':' for the release script as well. */
static void renew_and_release_scripts(void **state) {
  (void)state;
  const char *renew = dlock__redis_script(DLOCK__REDIS_RENEW);
  assert_non_null(strstr(renew, "ipairs(KEYS)"));
  assert_non_null(strstr(renew, "ARGV[2 * i - 1]"));
  assert_non_null(strstr(renew, "ARGV[2 * i]"));
  assert_non_null(strstr(renew, "redis.pcall('GET'"));
  const char *rel = dlock__redis_script(DLOCK__REDIS_RELEASE);
  assert_non_null(strstr(rel, "#ARGV[1]) == ARGV[1]"));
  assert_null(strstr(rel, "ARGV[1] .. ':'"));
  /* A busy attempt writes nothing: PTTL comes before INCR. */
  const char *acq = dlock__redis_script(DLOCK__REDIS_ACQUIRE);
  assert_true(strstr(acq, "PTTL', KEYS[1]") < strstr(acq, "INCR"));
}

/* ---- request formatting ---- */

/* What hiredis makes of ARGV, as a string to compare with. */
static char *hiredis_format(int argc, const char **argv, const size_t *lens, size_t *len) {
  char *out = NULL;
  int n = redisFormatCommandArgv(&out, argc, argv, lens);
  assert_true(n >= 0);
  *len = (size_t)n;
  return out;
}

static void format_like_hiredis(void **state) {
  (void)state;
  static const char bin[] = {'a', '\0', '\r', '\n', 'b'};
  char big[1500];
  memset(big, 'x', sizeof big);
  const char *argv[] = {"EVALSHA", "0123456789012345678901234567890123456789", "2",
                        "dlock:lock:{k}", "", bin, big};
  const size_t lens[] = {7, 40, 1, 14, 0, sizeof bin, sizeof big};
  for (int argc = 0; argc <= 7; argc++) {
    size_t want_len;
    char *want = hiredis_format(argc, argv, lens, &want_len);
    char buf[2048];
    size_t n = dlock__redis_format(buf, sizeof buf, argc, argv, lens);
    assert_int_equal(n, want_len);
    assert_memory_equal(buf, want, n);
    free(want);
  }
}

/* Too small a buffer: the length is still right and nothing is written
 * past the end, so the caller can allocate and call again. */
static void format_short_buffer(void **state) {
  (void)state;
  const char *argv[] = {"SET", "key", "value"};
  const size_t lens[] = {3, 3, 5};
  size_t want_len;
  char *want = hiredis_format(3, argv, lens, &want_len);
  for (size_t cap = 0; cap < want_len; cap++) {
    char buf[64];
    memset(buf, '#', sizeof buf);
    assert_int_equal(dlock__redis_format(buf, cap, 3, argv, lens), want_len);
    for (size_t i = cap; i < sizeof buf; i++)
      if (buf[i] != '#')
        fail_msg("cap %zu: byte %zu written", cap, i);
  }
  char buf[64];
  assert_int_equal(dlock__redis_format(buf, want_len, 3, argv, lens), want_len);
  assert_memory_equal(buf, want, want_len);
  free(want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(key_default_prefix),
      cmocka_unit_test(scan_pattern_and_back),
      cmocka_unit_test(break_replies),
      cmocka_unit_test(list_replies),
      cmocka_unit_test(key_custom_and_empty_prefix),
      cmocka_unit_test(key_binary_and_odd),
      cmocka_unit_test(key_kinds_never_collide),
      cmocka_unit_test(value_parse_ok),
      cmocka_unit_test(value_round_trip),
      cmocka_unit_test(value_parse_rejects),
      cmocka_unit_test(parse_u64),
      cmocka_unit_test(scripts_present),
      cmocka_unit_test(acquire_ok),
      cmocka_unit_test(acquire_busy),
      cmocka_unit_test(acquire_malformed),
      cmocka_unit_test(acquire_error_reply),
      cmocka_unit_test(noscript),
      cmocka_unit_test(flag),
      cmocka_unit_test(inspect_held),
      cmocka_unit_test(inspect_free),
      cmocka_unit_test(inspect_foreign),
      cmocka_unit_test(inspect_truncates_label),
      cmocka_unit_test(inspect_malformed),
      cmocka_unit_test(status_ok),
      cmocka_unit_test(auth),
      cmocka_unit_test(sha),
      cmocka_unit_test(push),
      cmocka_unit_test(long_error_is_cut),
      cmocka_unit_test(renew_replies),
      cmocka_unit_test(renew_malformed),
      cmocka_unit_test(renew_and_release_scripts),
      cmocka_unit_test(format_like_hiredis),
      cmocka_unit_test(format_short_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
