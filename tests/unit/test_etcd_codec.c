/* etcd codec without a server: key layout, base64, the JSON bodies sent to
 * the v3 gateway and the decoding of its answers.
 *
 * The answers below were captured from etcd 3.4.23's gateway (curl against
 * a throwaway server, bodies built by this codec); the few marked
 * "from source" could not be provoked on one machine and carry the text of
 * etcd 3.4's rpctypes/error.go instead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "backends/etcd/etcd-codec.h"

/* Too big for a double: a lease that went through one comes back changed. */
#define BIG_LEASE INT64_C(7587862073247400200)
#define BIG_LEASE_S "7587862073247400200"
#define BIG_LEASE_HEX "694d805a78920108"

#define HDR(rev)                                                                           \
  "{\"cluster_id\":\"2709362113014280803\",\"member_id\":\"2803394119270166707\","         \
  "\"revision\":\"" rev "\",\"raft_term\":\"2\"}"

/* ---- helpers ---- */

static void assert_msg_has(const char *needle) {
  const char *m = dlock_client_errmsg(NULL);
  assert_non_null(m);
  if (!strstr(m, needle))
    fail_msg("message \"%s\" lacks \"%s\"", m, needle);
}

/* Decode base64 that must be well-formed; the result is freed by the
 * caller. */
static char *unb64(const char *s, size_t *n) {
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(dlock__b64_decode("etcd", s, strlen(s), &out, &len), 0);
  if (n)
    *n = len;
  return out;
}

static const cJSON *item(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!v)
    fail_msg("no \"%s\" in %s", name, o && o->string ? o->string : "object");
  return v;
}

static const char *str(const cJSON *o, const char *name) {
  const cJSON *v = item(o, name);
  if (!cJSON_IsString(v))
    fail_msg("\"%s\" is not a string", name);
  return v->valuestring;
}

/* A bytes field must decode to exactly WANT. */
static void assert_b64_field(const cJSON *o, const char *name, const char *want, size_t wantlen) {
  size_t n;
  char *d = unb64(str(o, name), &n);
  assert_int_equal(n, wantlen);
  assert_memory_equal(d, want, wantlen);
  free(d);
}

static void assert_b64_str(const cJSON *o, const char *name, const char *want) {
  assert_b64_field(o, name, want, strlen(want));
}

/* Parse a generated body; the raw text must hold 64-bit numbers only as
 * strings, which is what this check looks for besides well-formedness. */
static cJSON *parse_body(char *body) {
  assert_non_null(body);
  cJSON *j = cJSON_Parse(body);
  assert_non_null(j);
  assert_true(cJSON_IsObject(j));
  free(body);
  return j;
}

/* The one object inside arr[i], which must be {"NAME":{...}}. */
static const cJSON *op(const cJSON *arr, int i, const char *name) {
  const cJSON *o = cJSON_GetArrayItem(arr, i);
  assert_non_null(o);
  assert_int_equal(cJSON_GetArraySize(o), 1);
  const cJSON *inner = item(o, name);
  assert_true(cJSON_IsObject(inner));
  return inner;
}

/* A request_range over the queue NAME/ with the sort and limit of "first". */
static void assert_first_range(const cJSON *r, const char *name) {
  char start[256], end[256];
  size_t n = (size_t)snprintf(start, sizeof start, "%s/", name);
  size_t en = dlock__etcd_prefix_end(start, n, end);
  assert_b64_field(r, "key", start, n);
  assert_b64_field(r, "range_end", end, en);
  assert_string_equal(str(r, "sort_target"), "CREATE");
  assert_string_equal(str(r, "limit"), "1");
}

static void assert_compare(const cJSON *c, const char *key, const char *rev) {
  assert_b64_str(c, "key", key);
  assert_null(cJSON_GetObjectItemCaseSensitive(c, "range_end"));
  assert_string_equal(str(c, "target"), "CREATE");
  assert_string_equal(str(c, "result"), "EQUAL");
  assert_string_equal(str(c, "create_revision"), rev);
}

static int list_size(const cJSON *j, const char *name) {
  return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, name));
}

/* ---- keys ---- */

static char *name_of(const char *prefix, const char *key) {
  char *n = dlock__etcd_lock_name(prefix, key, strlen(key));
  assert_non_null(n);
  return n;
}

static void lock_name_escapes(void **state) {
  (void)state;
  static const struct {
    const char *prefix, *key, *want;
  } cases[] = {
      {"dlock/", "build", "dlock/build"},
      {"dlock/", "a/b", "dlock/a%2Fb"},
      {"dlock/", "100%", "dlock/100%25"},
      {"dlock/", "%2F", "dlock/%252F"},
      {"dlock/", "/", "dlock/%2F"},
      {"dlock/", "a b.c_d-é", "dlock/a b.c_d-é"},
      {"app/locks/", "x", "app/locks/x"}, /* the prefix is copied as it is */
      {"%/", "k", "%/k"},
      {"", "k/", "k%2F"},
      {NULL, "k", DLOCK__ETCD_DEFAULT_PREFIX "k"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *n = name_of(cases[i].prefix, cases[i].key);
    assert_string_equal(n, cases[i].want);
    free(n);
  }
  /* Bytes after an embedded NUL are part of the key. */
  char *n = dlock__etcd_lock_name("p/", "a\0/", 3);
  assert_memory_equal(n, "p/a\0%2F", 8);
  free(n);
}

/* A lock's queue is the range NAME "/"; no name may sit inside another's. */
static void lock_names_never_nest(void **state) {
  (void)state;
  static const char *const keys[] = {"a", "a/b", "a/", "/a", "a%2Fb", "a%b", "a/b/c", "ab",
                                     "a%", "%", "/", "//", "a%252Fb", "b/a"};
  size_t nk = sizeof keys / sizeof keys[0];
  char *q[sizeof keys / sizeof keys[0]];
  for (size_t i = 0; i < nk; i++) {
    char *n = name_of("dlock/", keys[i]);
    if (asprintf(&q[i], "%s/", n) < 0)
      fail();
    free(n);
  }
  for (size_t i = 0; i < nk; i++)
    for (size_t j = 0; j < nk; j++)
      if (i != j && strncmp(q[i], q[j], strlen(q[i])) == 0)
        fail_msg("queue of '%s' (%s) holds that of '%s' (%s)", keys[i], q[i], keys[j], q[j]);
  for (size_t i = 0; i < nk; i++)
    free(q[i]);
}

static void lock_key_hex(void **state) {
  (void)state;
  char *k = dlock__etcd_lock_key("dlock/x", BIG_LEASE);
  assert_string_equal(k, "dlock/x/" BIG_LEASE_HEX);
  free(k);
  /* etcdctl lock dlock/build held lease 8121012722899278674 under this
   * key (read back from the server). */
  k = dlock__etcd_lock_key("dlock/build", INT64_C(8121012722899278674));
  assert_string_equal(k, "dlock/build/70b3a20b64d6db52");
  free(k);
  k = dlock__etcd_lock_key("n", 1);
  assert_string_equal(k, "n/1");
  free(k);
  k = dlock__etcd_lock_key("n", 0xabcdef);
  assert_string_equal(k, "n/abcdef");
  free(k);
  k = dlock__etcd_lock_key("n", INT64_MAX);
  assert_string_equal(k, "n/7fffffffffffffff");
  free(k);
}

static void assert_prefix_end(const char *p, size_t n, const char *want, size_t wantlen) {
  char out[64];
  memset(out, 0x5a, sizeof out);
  size_t got = dlock__etcd_prefix_end(p, n, out);
  assert_int_equal(got, wantlen);
  assert_memory_equal(out, want, wantlen);
  /* Nothing past the result (and never past N for a non-empty P). */
  for (size_t i = got; i < sizeof out; i++)
    assert_int_equal((unsigned char)out[i], 0x5a);
  if (n)
    assert_true(got <= n);
}

static void prefix_end_cases(void **state) {
  (void)state;
  assert_prefix_end("abc", 3, "abd", 3);
  assert_prefix_end("dlock/x/", 8, "dlock/x0", 8);
  assert_prefix_end("a\xff", 2, "b", 1);
  assert_prefix_end("a\xff\xff\xff", 4, "b", 1);
  assert_prefix_end("\x01\xfe\xff", 3, "\x01\xff", 2);
  assert_prefix_end("\x7f", 1, "\x80", 1);
  assert_prefix_end("\xff", 1, "\0", 1);
  assert_prefix_end("\xff\xff\xff", 3, "\0", 1);
  assert_prefix_end("", 0, "\0", 1);
  /* Only N bytes of P count. */
  assert_prefix_end("ab\xff", 2, "ac", 2);
}

/* Byte order, as etcd sorts keys. */
static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c ? c : (an > bn) - (an < bn);
}

/* Every key starting with P lies in [P, end); the keys around them do not. */
static void prefix_end_bounds_keys(void **state) {
  (void)state;
  static const char p[] = "q\xff/";
  char end[8];
  size_t en = dlock__etcd_prefix_end(p, 3, end);
  static const char *const inside[] = {"q\xff/", "q\xff/a", "q\xff/\xff\xff", "q\xff/\x01"};
  static const char *const outside[] = {"q\xff\x30", "r", "q\xff", "q\xff.", "q\xff\xff"};
  for (size_t i = 0; i < sizeof inside / sizeof inside[0]; i++) {
    size_t l = strlen(inside[i]);
    assert_true(bytes_cmp(inside[i], l, p, 3) >= 0);
    assert_true(bytes_cmp(inside[i], l, end, en) < 0);
  }
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
    size_t l = strlen(outside[i]);
    assert_true(bytes_cmp(outside[i], l, p, 3) < 0 || bytes_cmp(outside[i], l, end, en) >= 0);
  }
}

static void value_round_trip(void **state) {
  (void)state;
  char owner[33], label[16];
  char *v = dlock__etcd_value("0123456789abcdef0123456789abcdef", "host:42");
  assert_string_equal(v, "0123456789abcdef0123456789abcdef\nhost:42");
  dlock__etcd_value_split(v, strlen(v), owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "0123456789abcdef0123456789abcdef");
  assert_string_equal(label, "host:42");
  free(v);

  /* etcdctl's holder stores nothing. */
  strcpy(owner, "x");
  strcpy(label, "y");
  dlock__etcd_value_split("", 0, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  assert_string_equal(label, "");
  strcpy(owner, "x");
  strcpy(label, "y");
  dlock__etcd_value_split("no newline", 10, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  assert_string_equal(label, "");

  /* The first newline splits; the label keeps later ones. */
  dlock__etcd_value_split("o\nl1\nl2", 7, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "o");
  assert_string_equal(label, "l1\nl2");
  /* Empty label. */
  dlock__etcd_value_split("o\n", 2, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "o");
  assert_string_equal(label, "");
  /* N bounds the value, which need not be terminated. */
  dlock__etcd_value_split("own\nlabel-and-more", 9, owner, sizeof owner, label, sizeof label);
  assert_string_equal(label, "label");
  /* Truncated to the buffers. */
  char o4[4], l4[4];
  dlock__etcd_value_split("abcdef\nghijkl", 13, o4, sizeof o4, l4, sizeof l4);
  assert_string_equal(o4, "abc");
  assert_string_equal(l4, "ghi");
}

/* ---- base64 ---- */

static void b64_vectors(void **state) {
  (void)state;
  /* RFC 4648, section 10. */
  static const char *const v[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                     {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                     {"foobar", "Zm9vYmFy"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char *e = dlock__b64_encode(v[i][0], strlen(v[i][0]));
    assert_string_equal(e, v[i][1]);
    free(e);
    size_t n;
    char *d = unb64(v[i][1], &n);
    assert_int_equal(n, strlen(v[i][0]));
    assert_string_equal(d, v[i][0]); /* also checks the NUL after the data */
    free(d);
  }
  /* Both non-alphanumeric digits of the standard alphabet. */
  char *e = dlock__b64_encode("\xfb\xff\xbf", 3);
  assert_string_equal(e, "+/+/");
  free(e);
  /* Keys as the server sent them. */
  char *d = unb64("ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl", NULL);
  assert_string_equal(d, "dlock/q/70b3a20b64d6db0e");
  free(d);
}

static void b64_all_bytes(void **state) {
  (void)state;
  unsigned char all[256 + 3];
  for (size_t i = 0; i < sizeof all; i++)
    all[i] = (unsigned char)(255 - (i % 256));
  for (size_t len = 0; len <= sizeof all; len++) {
    char *e = dlock__b64_encode(all, len);
    assert_non_null(e);
    assert_int_equal(strlen(e), (len + 2) / 3 * 4);
    char *d = NULL;
    size_t n = 0;
    assert_int_equal(dlock__b64_decode("etcd", e, strlen(e), &d, &n), 0);
    assert_int_equal(n, len);
    assert_memory_equal(d, all, len);
    assert_int_equal(d[n], '\0');
    free(d);
    free(e);
  }
  /* Every digit value, once, in order. */
  unsigned char seq[48];
  for (int i = 0; i < 64; i += 4) {
    uint32_t v = (uint32_t)i << 18 | (uint32_t)(i + 1) << 12 | (uint32_t)(i + 2) << 6 | (uint32_t)(i + 3);
    seq[i / 4 * 3] = (unsigned char)(v >> 16);
    seq[i / 4 * 3 + 1] = (unsigned char)(v >> 8);
    seq[i / 4 * 3 + 2] = (unsigned char)v;
  }
  char *s = dlock__b64_encode(seq, sizeof seq);
  assert_string_equal(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
  free(s);
}

static void b64_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "Zg",     "Zg=",      "Z",        "Z===",     "====",      "Zm9v!",  "Zm=v",
      "Zg==Zg==", "Zm9v\n", "Zm9 v",   "Zm9v====", "Zm9vY-==",  "Zm9vY_==", "=Zm9",
      "Zm9\x80",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *out = (char *)1;
    size_t n = 99;
    int rc = dlock__b64_decode("etcd", bad[i], strlen(bad[i]), &out, &n);
    if (rc != DLOCK_EBACKEND)
      fail_msg("'%s' decoded (rc %d)", bad[i], rc);
    assert_null(out);
    assert_int_equal(n, 0);
  }
  assert_msg_has("base64");
  /* N bounds the input: a valid prefix of a longer string decodes. */
  char *out;
  size_t n;
  assert_int_equal(dlock__b64_decode("etcd", "Zm9vjunk", 4, &out, &n), 0);
  assert_string_equal(out, "foo");
  free(out);
  /* ...and N must be a multiple of 4 even when the bytes after it are
   * digits. */
  out = (char *)1;
  assert_int_equal(dlock__b64_decode("etcd", "Zm9vYmFy", 6, &out, &n), DLOCK_EBACKEND);
  assert_null(out);
  /* An embedded NUL is not a digit. */
  assert_int_equal(dlock__b64_decode("etcd", "Zm\0v", 4, &out, &n), DLOCK_EBACKEND);
}

/* ---- request bodies ---- */

static void req_lease_bodies(void **state) {
  (void)state;
  char *s = dlock__etcd_req_grant(15);
  assert_string_equal(s, "{\"TTL\":\"15\"}");
  free(s);
  s = dlock__etcd_req_lease(BIG_LEASE);
  assert_string_equal(s, "{\"ID\":\"" BIG_LEASE_S "\"}");
  free(s);
  s = dlock__etcd_req_lease(INT64_MAX);
  assert_string_equal(s, "{\"ID\":\"9223372036854775807\"}");
  free(s);
  cJSON *j = parse_body(dlock__etcd_req_timetolive(BIG_LEASE, true));
  assert_string_equal(str(j, "ID"), BIG_LEASE_S);
  assert_true(cJSON_IsTrue(item(j, "keys")));
  assert_int_equal(dlock__etcd_json_i64(j, "ID", 0), BIG_LEASE);
  cJSON_Delete(j);
  /* Without the keys: a lease of many locks would send them all. */
  s = dlock__etcd_req_timetolive(BIG_LEASE, false);
  assert_string_equal(s, "{\"ID\":\"" BIG_LEASE_S "\"}");
  free(s);
}

static void req_auth_body(void **state) {
  (void)state;
  cJSON *j = parse_body(dlock__etcd_req_auth("root", "p\"a\\s\ns/é"));
  assert_int_equal(cJSON_GetArraySize(j), 2);
  assert_string_equal(str(j, "name"), "root");
  assert_string_equal(str(j, "password"), "p\"a\\s\ns/é");
  cJSON_Delete(j);
}

static void req_try_body(void **state) {
  (void)state;
  char *raw = dlock__etcd_req_try("dlock/x", "dlock/x/" BIG_LEASE_HEX, BIG_LEASE, "o\nl");
  assert_non_null(strstr(raw, "\"lease\":\"" BIG_LEASE_S "\""));
  cJSON *j = parse_body(raw);
  assert_int_equal(list_size(j, "compare"), 1);
  assert_int_equal(list_size(j, "success"), 1);
  assert_int_equal(list_size(j, "failure"), 1);

  /* Nobody queued: every key of the queue range has create_revision 0. */
  const cJSON *c = cJSON_GetArrayItem(item(j, "compare"), 0);
  assert_b64_str(c, "key", "dlock/x/");
  assert_b64_str(c, "range_end", "dlock/x0");
  assert_string_equal(str(c, "target"), "CREATE");
  assert_string_equal(str(c, "result"), "EQUAL");
  assert_string_equal(str(c, "create_revision"), "0");

  const cJSON *p = op(item(j, "success"), 0, "request_put");
  assert_b64_str(p, "key", "dlock/x/" BIG_LEASE_HEX);
  assert_b64_str(p, "value", "o\nl");
  assert_string_equal(str(p, "lease"), BIG_LEASE_S);
  assert_int_equal(dlock__etcd_json_i64(p, "lease", 0), BIG_LEASE);

  const cJSON *r = op(item(j, "failure"), 0, "request_range");
  assert_first_range(r, "dlock/x");
  assert_string_equal(str(r, "sort_order"), "ASCEND");
  assert_null(cJSON_GetObjectItemCaseSensitive(r, "keys_only"));
  cJSON_Delete(j);
}

static void req_enqueue_body(void **state) {
  (void)state;
  cJSON *j = parse_body(dlock__etcd_req_enqueue("dlock/x", "dlock/x/1f", 31, "v"));
  assert_int_equal(list_size(j, "compare"), 1);
  assert_compare(cJSON_GetArrayItem(item(j, "compare"), 0), "dlock/x/1f", "0");
  const cJSON *ok = item(j, "success"), *ko = item(j, "failure");
  assert_int_equal(cJSON_GetArraySize(ok), 2);
  const cJSON *p = op(ok, 0, "request_put");
  assert_b64_str(p, "key", "dlock/x/1f");
  assert_b64_str(p, "value", "v");
  assert_string_equal(str(p, "lease"), "31");
  const cJSON *r = op(ok, 1, "request_range");
  assert_first_range(r, "dlock/x");
  assert_string_equal(str(r, "sort_order"), "ASCEND");
  assert_int_equal(cJSON_GetArraySize(ko), 2);
  r = op(ko, 0, "request_range");
  assert_b64_str(r, "key", "dlock/x/1f");
  assert_null(cJSON_GetObjectItemCaseSensitive(r, "range_end"));
  assert_null(cJSON_GetObjectItemCaseSensitive(r, "keys_only"));
  assert_first_range(op(ko, 1, "request_range"), "dlock/x");
  cJSON_Delete(j);
}

static void req_queue_body(void **state) {
  (void)state;
  cJSON *j = parse_body(dlock__etcd_req_queue("dlock/x", "dlock/x/1f", 8123456789012LL));
  assert_compare(cJSON_GetArrayItem(item(j, "compare"), 0), "dlock/x/1f", "8123456789012");
  const cJSON *ok = item(j, "success");
  assert_int_equal(cJSON_GetArraySize(ok), 2);
  const cJSON *first = op(ok, 0, "request_range");
  assert_first_range(first, "dlock/x");
  assert_string_equal(str(first, "sort_order"), "ASCEND");
  assert_null(cJSON_GetObjectItemCaseSensitive(first, "max_create_revision"));
  const cJSON *pred = op(ok, 1, "request_range");
  assert_first_range(pred, "dlock/x");
  assert_string_equal(str(pred, "sort_order"), "DESCEND");
  assert_string_equal(str(pred, "max_create_revision"), "8123456789011");
  assert_true(cJSON_IsTrue(item(pred, "keys_only")));
  assert_int_equal(list_size(j, "failure"), 0);
  cJSON_Delete(j);
}

static void req_release_move_bodies(void **state) {
  (void)state;
  cJSON *j = parse_body(dlock__etcd_req_release("dlock/x/1f", 42));
  assert_compare(cJSON_GetArrayItem(item(j, "compare"), 0), "dlock/x/1f", "42");
  assert_int_equal(list_size(j, "success"), 1);
  const cJSON *d = op(item(j, "success"), 0, "request_delete_range");
  assert_b64_str(d, "key", "dlock/x/1f");
  assert_null(cJSON_GetObjectItemCaseSensitive(d, "range_end"));
  assert_int_equal(list_size(j, "failure"), 0);
  cJSON_Delete(j);

  /* An unanswered put's key goes only while it holds that attempt's value. */
  j = parse_body(dlock__etcd_req_release_value("dlock/x/1f", "o\nold"));
  assert_int_equal(list_size(j, "compare"), 1);
  const cJSON *c = cJSON_GetArrayItem(item(j, "compare"), 0);
  assert_b64_str(c, "key", "dlock/x/1f");
  assert_null(cJSON_GetObjectItemCaseSensitive(c, "range_end"));
  assert_string_equal(str(c, "target"), "VALUE");
  assert_string_equal(str(c, "result"), "EQUAL");
  assert_b64_str(c, "value", "o\nold");
  d = op(item(j, "success"), 0, "request_delete_range");
  assert_b64_str(d, "key", "dlock/x/1f");
  assert_null(cJSON_GetObjectItemCaseSensitive(d, "range_end"));
  assert_int_equal(list_size(j, "success"), 1);
  assert_int_equal(list_size(j, "failure"), 0);
  cJSON_Delete(j);

  j = parse_body(dlock__etcd_req_move("dlock/x/1f", 42, BIG_LEASE, "o\nnew"));
  assert_compare(cJSON_GetArrayItem(item(j, "compare"), 0), "dlock/x/1f", "42");
  assert_int_equal(list_size(j, "success"), 1);
  const cJSON *p = op(item(j, "success"), 0, "request_put");
  assert_b64_str(p, "key", "dlock/x/1f");
  assert_b64_str(p, "value", "o\nnew");
  assert_string_equal(str(p, "lease"), BIG_LEASE_S);
  assert_int_equal(list_size(j, "failure"), 0);
  cJSON_Delete(j);
}

static void req_check_body(void **state) {
  (void)state;
  const char *keys[] = {"dlock/a/1", "dlock/b/2", "dlock/c/3"};
  const int64_t revs[] = {5, INT64_C(9007199254740993), 7}; /* 2^53 + 1: not a double */
  cJSON *j = parse_body(dlock__etcd_req_check(keys, revs, 3));
  const cJSON *cmp = item(j, "compare"), *ko = item(j, "failure");
  assert_int_equal(cJSON_GetArraySize(cmp), 3);
  assert_int_equal(cJSON_GetArraySize(ko), 3);
  assert_int_equal(list_size(j, "success"), 0);
  assert_compare(cJSON_GetArrayItem(cmp, 0), "dlock/a/1", "5");
  assert_compare(cJSON_GetArrayItem(cmp, 1), "dlock/b/2", "9007199254740993");
  assert_compare(cJSON_GetArrayItem(cmp, 2), "dlock/c/3", "7");
  for (int i = 0; i < 3; i++) {
    const cJSON *r = op(ko, i, "request_range");
    assert_b64_str(r, "key", keys[i]);
    assert_true(cJSON_IsTrue(item(r, "keys_only")));
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "range_end"));
  }
  cJSON_Delete(j);
}

static void req_first_delete_all_bodies(void **state) {
  (void)state;
  cJSON *j = parse_body(dlock__etcd_req_first("dlock/x"));
  assert_int_equal(list_size(j, "compare"), 0);
  assert_int_equal(list_size(j, "success"), 1);
  const cJSON *r = op(item(j, "success"), 0, "request_range");
  assert_first_range(r, "dlock/x");
  assert_string_equal(str(r, "sort_order"), "ASCEND");
  assert_null(cJSON_GetObjectItemCaseSensitive(r, "keys_only")); /* inspect wants values */
  cJSON_Delete(j);

  j = parse_body(dlock__etcd_req_delete_all("dlock/x"));
  assert_int_equal(list_size(j, "compare"), 0);
  const cJSON *d = op(item(j, "success"), 0, "request_delete_range");
  assert_b64_str(d, "key", "dlock/x/");
  assert_b64_str(d, "range_end", "dlock/x0");
  cJSON_Delete(j);
}

static void req_watch_body(void **state) {
  (void)state;
  cJSON *j = parse_body(dlock__etcd_req_watch("dlock/x/1f", 9007199254740993LL));
  assert_int_equal(cJSON_GetArraySize(j), 1);
  const cJSON *c = item(j, "create_request");
  assert_b64_str(c, "key", "dlock/x/1f");
  assert_null(cJSON_GetObjectItemCaseSensitive(c, "range_end"));
  assert_string_equal(str(c, "start_revision"), "9007199254740993");
  const cJSON *f = item(c, "filters");
  assert_int_equal(cJSON_GetArraySize(f), 1);
  assert_string_equal(cJSON_GetArrayItem(f, 0)->valuestring, "NOPUT");
  cJSON_Delete(j);
}

/* Names and keys with bytes JSON must escape survive as bytes. */
static void req_binary_keys(void **state) {
  (void)state;
  const char name[] = "p/\"\\\x01\xff";
  cJSON *j = parse_body(dlock__etcd_req_try(name, "p/\"\\\x01\xff/a", 1, "\xfe"));
  const cJSON *c = cJSON_GetArrayItem(item(j, "compare"), 0);
  assert_b64_str(c, "key", "p/\"\\\x01\xff/");
  assert_b64_str(c, "range_end", "p/\"\\\x01\xff" "0");
  assert_b64_str(op(item(j, "success"), 0, "request_put"), "value", "\xfe");
  cJSON_Delete(j);
}

/* ---- answers: txn ---- */

/* try on an empty queue (succeeded, one put). */
static const char TXN_TRY_OK[] =
    "{\"header\":" HDR("4") ",\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":"
    "{\"revision\":\"4\"}}}]}";

/* try while dlock/q/70b3a20b64d6db0e holds the lock: no "succeeded". */
static const char TXN_TRY_BUSY[] =
    "{\"header\":" HDR("4") ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":"
    "\"4\"},\"kvs\":[{\"key\":\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\",\"create_revision\":\"4\","
    "\"mod_revision\":\"4\",\"version\":\"1\",\"value\":\"YWFhYQpsYWIx\",\"lease\":"
    "\"8121012722899278606\"}],\"count\":\"1\"}}]}";

/* enqueue behind that holder: put, then the first key (two queued). */
static const char TXN_ENQUEUE_OK[] =
    "{\"header\":" HDR("5") ",\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":"
    "{\"revision\":\"5\"}}},{\"response_range\":{\"header\":{\"revision\":\"5\"},\"kvs\":[{"
    "\"key\":\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\",\"create_revision\":\"4\",\"mod_revision\":"
    "\"4\",\"version\":\"1\",\"value\":\"YWFhYQpsYWIx\",\"lease\":\"8121012722899278606\"}],"
    "\"more\":true,\"count\":\"2\"}}]}";

/* queue for the second key: first is the holder, predecessor (keys_only)
 * too.  "count" is that of the whole range, not of the filtered one. */
static const char TXN_QUEUE_WAIT[] =
    "{\"header\":" HDR("5") ",\"succeeded\":true,\"responses\":[{\"response_range\":{\"header\":"
    "{\"revision\":\"5\"},\"kvs\":[{\"key\":\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\","
    "\"create_revision\":\"4\",\"mod_revision\":\"4\",\"version\":\"1\",\"value\":"
    "\"YWFhYQpsYWIx\",\"lease\":\"8121012722899278606\"}],\"more\":true,\"count\":\"2\"}},{"
    "\"response_range\":{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":"
    "\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\",\"create_revision\":\"4\",\"mod_revision\":\"4\","
    "\"version\":\"1\",\"lease\":\"8121012722899278606\"}],\"count\":\"2\"}}]}";

/* queue for the holder itself: no predecessor, yet count "2". */
static const char TXN_QUEUE_HEAD[] =
    "{\"header\":" HDR("5") ",\"succeeded\":true,\"responses\":[{\"response_range\":{\"header\":"
    "{\"revision\":\"5\"},\"kvs\":[{\"key\":\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\","
    "\"create_revision\":\"4\",\"mod_revision\":\"4\",\"version\":\"1\",\"value\":"
    "\"YWFhYQpsYWIx\",\"lease\":\"8121012722899278606\"}],\"more\":true,\"count\":\"2\"}},{"
    "\"response_range\":{\"header\":{\"revision\":\"5\"},\"count\":\"2\"}}]}";

/* A failed txn with an empty failure list: the header alone. */
static const char TXN_BARE_FAIL[] = "{\"header\":" HDR("5") "}";

/* check of [holder@4, second@6 (really 5), missing@7]. */
static const char TXN_CHECK_BAD[] =
    "{\"header\":" HDR("5") ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":"
    "\"5\"},\"kvs\":[{\"key\":\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\",\"create_revision\":\"4\","
    "\"mod_revision\":\"4\",\"version\":\"1\",\"lease\":\"8121012722899278606\"}],\"count\":"
    "\"1\"}},{\"response_range\":{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":"
    "\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjEw\",\"create_revision\":\"5\",\"mod_revision\":\"5\","
    "\"version\":\"1\",\"lease\":\"8121012722899278608\"}],\"count\":\"1\"}},{"
    "\"response_range\":{\"header\":{\"revision\":\"5\"}}}]}";

static const char TXN_CHECK_OK[] = "{\"header\":" HDR("5") ",\"succeeded\":true}";

static const char TXN_RELEASE_OK[] =
    "{\"header\":" HDR("8") ",\"succeeded\":true,\"responses\":[{\"response_delete_range\":{"
    "\"header\":{\"revision\":\"8\"},\"deleted\":\"1\"}}]}";

static const char TXN_DELETE_ALL[] =
    "{\"header\":" HDR("11") ",\"succeeded\":true,\"responses\":[{\"response_delete_range\":{"
    "\"header\":{\"revision\":\"11\"},\"deleted\":\"2\"}}]}";

static const char TXN_FIRST_EMPTY[] =
    "{\"header\":" HDR("6") ",\"succeeded\":true,\"responses\":[{\"response_range\":{"
    "\"header\":{\"revision\":\"6\"}}}]}";

/* first while `etcdctl lock dlock/build` holds it: no value. */
static const char TXN_FIRST_ETCDCTL[] =
    "{\"header\":" HDR("14") ",\"succeeded\":true,\"responses\":[{\"response_range\":{"
    "\"header\":{\"revision\":\"14\"},\"kvs\":[{\"key\":"
    "\"ZGxvY2svYnVpbGQvNzBiM2EyMGI2NGQ2ZGI2Mg==\",\"create_revision\":\"14\","
    "\"mod_revision\":\"14\",\"version\":\"1\",\"lease\":\"8121012722899278690\"}],"
    "\"count\":\"1\"}}]}";

static void parse(const char *body, dlock__etcd_txn *t) {
  assert_int_equal(dlock__etcd_parse_txn(body, strlen(body), t), 0);
}

static void assert_holder_kv(const dlock__etcd_kv *kv) {
  assert_int_equal(kv->keylen, strlen("dlock/q/70b3a20b64d6db0e"));
  assert_string_equal(kv->key, "dlock/q/70b3a20b64d6db0e");
  assert_int_equal(kv->create_revision, 4);
  assert_int_equal(kv->mod_revision, 4);
  assert_int_equal(kv->version, 1);
  assert_int_equal(kv->lease, INT64_C(8121012722899278606));
}

static void txn_try(void **state) {
  (void)state;
  dlock__etcd_txn t;
  parse(TXN_TRY_OK, &t);
  assert_int_equal(t.revision, 4);
  assert_true(t.succeeded);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_PUT);
  assert_int_equal(t.res[0].nkvs, 0);
  dlock__etcd_txn_free(&t);

  parse(TXN_TRY_BUSY, &t);
  assert_false(t.succeeded);
  assert_int_equal(t.revision, 4);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[0].count, 1);
  assert_int_equal(t.res[0].nkvs, 1);
  const dlock__etcd_kv *kv = &t.res[0].kvs[0];
  assert_holder_kv(kv);
  assert_int_equal(kv->valuelen, 9);
  assert_string_equal(kv->value, "aaaa\nlab1");
  char owner[33], label[16];
  dlock__etcd_value_split(kv->value, kv->valuelen, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "aaaa");
  assert_string_equal(label, "lab1");
  dlock__etcd_txn_free(&t);
  assert_null(t.res);
  assert_int_equal(t.nres, 0);
}

static void txn_enqueue_and_queue(void **state) {
  (void)state;
  dlock__etcd_txn t;
  parse(TXN_ENQUEUE_OK, &t);
  assert_true(t.succeeded);
  assert_int_equal(t.revision, 5);
  assert_int_equal(t.nres, 2);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_PUT);
  assert_int_equal(t.res[1].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[1].count, 2);
  assert_int_equal(t.res[1].nkvs, 1);
  assert_holder_kv(&t.res[1].kvs[0]);
  dlock__etcd_txn_free(&t);

  parse(TXN_QUEUE_WAIT, &t);
  assert_int_equal(t.nres, 2);
  assert_int_equal(t.res[1].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[1].nkvs, 1);
  assert_holder_kv(&t.res[1].kvs[0]);
  /* keys_only: no value, which reads as "". */
  assert_non_null(t.res[1].kvs[0].value);
  assert_string_equal(t.res[1].kvs[0].value, "");
  assert_int_equal(t.res[1].kvs[0].valuelen, 0);
  dlock__etcd_txn_free(&t);

  parse(TXN_QUEUE_HEAD, &t);
  assert_true(t.succeeded);
  assert_int_equal(t.nres, 2);
  assert_int_equal(t.res[1].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[1].nkvs, 0);
  assert_null(t.res[1].kvs);
  assert_int_equal(t.res[1].count, 2); /* the server's count ignores max_create_revision */
  dlock__etcd_txn_free(&t);

  parse(TXN_BARE_FAIL, &t);
  assert_false(t.succeeded);
  assert_int_equal(t.revision, 5);
  assert_int_equal(t.nres, 0);
  dlock__etcd_txn_free(&t);
}

static void txn_check_release_first(void **state) {
  (void)state;
  dlock__etcd_txn t;
  parse(TXN_CHECK_OK, &t);
  assert_true(t.succeeded);
  assert_int_equal(t.nres, 0);
  dlock__etcd_txn_free(&t);

  parse(TXN_CHECK_BAD, &t);
  assert_false(t.succeeded);
  assert_int_equal(t.nres, 3);
  assert_int_equal(t.res[0].nkvs, 1);
  assert_int_equal(t.res[0].kvs[0].create_revision, 4);
  assert_int_equal(t.res[1].nkvs, 1);
  assert_string_equal(t.res[1].kvs[0].key, "dlock/q/70b3a20b64d6db10");
  assert_int_equal(t.res[1].kvs[0].create_revision, 5);
  assert_int_equal(t.res[1].kvs[0].lease, INT64_C(8121012722899278608));
  assert_int_equal(t.res[2].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[2].nkvs, 0);
  assert_int_equal(t.res[2].count, 0);
  dlock__etcd_txn_free(&t);

  parse(TXN_RELEASE_OK, &t);
  assert_true(t.succeeded);
  assert_int_equal(t.revision, 8);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_DELETE);
  assert_int_equal(t.res[0].deleted, 1);
  dlock__etcd_txn_free(&t);

  parse(TXN_DELETE_ALL, &t);
  assert_int_equal(t.res[0].deleted, 2);
  dlock__etcd_txn_free(&t);

  parse(TXN_FIRST_EMPTY, &t);
  assert_true(t.succeeded);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[0].nkvs, 0);
  assert_int_equal(t.res[0].count, 0);
  dlock__etcd_txn_free(&t);

  parse(TXN_FIRST_ETCDCTL, &t);
  assert_int_equal(t.res[0].nkvs, 1);
  assert_string_equal(t.res[0].kvs[0].key, "dlock/build/70b3a20b64d6db62");
  assert_string_equal(t.res[0].kvs[0].value, "");
  assert_int_equal(t.res[0].kvs[0].lease, INT64_C(8121012722899278690));
  char owner[33] = "x", label[8] = "y";
  dlock__etcd_value_split(t.res[0].kvs[0].value, t.res[0].kvs[0].valuelen, owner, sizeof owner,
                          label, sizeof label);
  assert_string_equal(owner, "");
  dlock__etcd_txn_free(&t);
}

static void txn_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "not json",
      "[]",
      "{}",
      /* an error answer is not a txn answer */
      "{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested "
      "lease not found\",\"code\":5}",
      "{\"header\":" HDR("5") ",\"responses\":{}}",
      "{\"header\":" HDR("5") ",\"responses\":[{\"response_txn\":{}}]}",
      "{\"header\":" HDR("5") ",\"responses\":[{\"response_range\":{\"kvs\":{}}}]}",
      "{\"header\":" HDR("5") ",\"responses\":[{\"response_range\":{\"kvs\":[1]}}]}",
      /* a bad key after a good one: the parse must free what it built */
      "{\"header\":" HDR("5") ",\"responses\":[{\"response_range\":{\"kvs\":[{\"key\":\"Zm9v\","
      "\"value\":\"YmFy\"},{\"key\":\"Zm9\"}]}}]}",
      "{\"header\":" HDR("5") ",\"responses\":[{\"response_put\":{}},{\"response_range\":{"
      "\"kvs\":[{\"key\":\"Zm9v\",\"value\":7}]}}]}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dlock__etcd_txn t;
    memset(&t, 0xff, sizeof t);
    int rc = dlock__etcd_parse_txn(bad[i], strlen(bad[i]), &t);
    if (rc != DLOCK_EBACKEND)
      fail_msg("parsed (rc %d): %s", rc, bad[i]);
    assert_int_equal(t.nres, 0);
    assert_null(t.res);
    dlock__etcd_txn_free(&t);
  }
  dlock__etcd_parse_txn("{\"error\":\"x\"}", 13, &(dlock__etcd_txn){0});
  assert_msg_has("not a txn answer");
  /* LEN bounds the body. */
  dlock__etcd_txn t;
  assert_int_equal(dlock__etcd_parse_txn(TXN_TRY_OK, 20, &t), DLOCK_EBACKEND);
  dlock__etcd_txn_free(&t);
}

/* ---- answers: lease, auth ---- */

static void grant(void **state) {
  (void)state;
  static const char ok[] = "{\"header\":" HDR("3") ",\"ID\":\"8121012722899278606\",\"TTL\":\"60\"}";
  int64_t id = 0, ttl = 0;
  assert_int_equal(dlock__etcd_parse_grant(ok, strlen(ok), &id, &ttl), 0);
  assert_int_equal(id, INT64_C(8121012722899278606));
  assert_int_equal(ttl, 60);
  /* Asked for 0 s, the server granted its minimum. */
  static const char raised[] =
      "{\"header\":" HDR("11") ",\"ID\":\"8121012722899278633\",\"TTL\":\"2\"}";
  assert_int_equal(dlock__etcd_parse_grant(raised, strlen(raised), &id, &ttl), 0);
  assert_int_equal(ttl, 2);
  assert_int_equal(id, INT64_C(8121012722899278633));

  static const char *const bad[] = {
      "",
      "{\"header\":" HDR("3") "}",
      "{\"header\":" HDR("3") ",\"ID\":\"0\",\"TTL\":\"60\"}",
      "{\"header\":" HDR("3") ",\"ID\":\"12\"}",
      "{\"error\":\"etcdserver: too large lease TTL\",\"message\":\"etcdserver: too large lease "
      "TTL\",\"code\":11}",
      "{\"header\":" HDR("3") ",\"ID\":\"12\",\"TTL\":\"5\",\"error\":\"lessor is busy\"}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    id = ttl = 77;
    if (dlock__etcd_parse_grant(bad[i], strlen(bad[i]), &id, &ttl) != DLOCK_EBACKEND)
      fail_msg("parsed: %s", bad[i]);
    assert_int_equal(id, 77);
  }
  assert_msg_has("lessor is busy");
}

static void keepalive(void **state) {
  (void)state;
  char msg[128];
  int64_t ttl = -5;
  static const char alive[] = "{\"result\":{\"header\":" HDR("2") ",\"ID\":"
                              "\"8121012722899278600\",\"TTL\":\"60\"}}\n";
  assert_int_equal(dlock__etcd_parse_keepalive(alive, strlen(alive), &ttl, msg, sizeof msg), 0);
  assert_int_equal(ttl, 60);
  /* A dead lease: TTL left out. */
  static const char dead[] = "{\"result\":{\"header\":" HDR("2") ",\"ID\":\"12345\"}}\n";
  ttl = 9;
  assert_int_equal(dlock__etcd_parse_keepalive(dead, strlen(dead), &ttl, msg, sizeof msg), 0);
  assert_int_equal(ttl, 0);
  /* The bare object; a negative TTL is gone too. */
  static const char bare[] = "{\"header\":" HDR("2") ",\"ID\":\"1\",\"TTL\":\"-1\"}";
  ttl = 9;
  assert_int_equal(dlock__etcd_parse_keepalive(bare, strlen(bare), &ttl, msg, sizeof msg), 0);
  assert_int_equal(ttl, 0);
  static const char bare_ok[] = "{\"header\":" HDR("2") ",\"ID\":\"1\",\"TTL\":\"14\"}";
  assert_int_equal(dlock__etcd_parse_keepalive(bare_ok, strlen(bare_ok), &ttl, msg, sizeof msg),
                   0);
  assert_int_equal(ttl, 14);

  /* The stream's error line (member that lost quorum; HTTP 503). */
  static const char noleader[] = "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":"
                                 "\"etcdserver: no leader\",\"http_status\":\"Service "
                                 "Unavailable\"}}";
  ttl = 9;
  assert_int_equal(
      dlock__etcd_parse_keepalive(noleader, strlen(noleader), &ttl, msg, sizeof msg),
      DLOCK_ECONN);
  assert_string_equal(msg, "etcdserver: no leader");
  assert_int_equal(ttl, 0);
  assert_msg_has("no leader");
  /* The same stream's error form for a lease it no longer knows (from
   * source: the gateway writes any stream error this way). */
  static const char gone[] = "{\"error\":{\"grpc_code\":5,\"http_code\":404,\"message\":"
                             "\"etcdserver: requested lease not found\",\"http_status\":"
                             "\"Not Found\"}}";
  assert_int_equal(dlock__etcd_parse_keepalive(gone, strlen(gone), &ttl, msg, sizeof msg),
                   DLOCK_ELOST);

  static const char *const bad[] = {"", "{}", "{\"result\":{}}", "[1]", "garbage"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (dlock__etcd_parse_keepalive(bad[i], strlen(bad[i]), &ttl, msg, sizeof msg) !=
        DLOCK_EBACKEND)
      fail_msg("parsed: %s", bad[i]);
}

static void auth(void **state) {
  (void)state;
  static const char ok[] = "{\"header\":" HDR("11") ",\"token\":\"sSTFMwvvWwOWFnwW.45\"}";
  char *tok = NULL;
  assert_int_equal(dlock__etcd_parse_auth(ok, strlen(ok), &tok), 0);
  assert_string_equal(tok, "sSTFMwvvWwOWFnwW.45");
  free(tok);
  static const char *const bad[] = {
      "",
      "{\"header\":" HDR("11") "}",
      "{\"header\":" HDR("11") ",\"token\":\"\"}",
      "{\"header\":" HDR("11") ",\"token\":5}",
      ("{\"error\":\"etcdserver: authentication failed, invalid user ID or password\",\"message\":"
       "\"etcdserver: authentication failed, invalid user ID or password\",\"code\":3}"),
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tok = (char *)1;
    if (dlock__etcd_parse_auth(bad[i], strlen(bad[i]), &tok) != DLOCK_EBACKEND)
      fail_msg("parsed: %s", bad[i]);
    assert_null(tok);
  }
}

/* ---- errors ---- */

#define UNARY(m, c) "{\"error\":\"" m "\",\"message\":\"" m "\",\"code\":" #c "}"

static void error_classes(void **state) {
  (void)state;
  static const struct {
    int status;
    const char *body;
    enum dlock__etcd_fault fault;
    const char *msg;
  } cases[] = {
      /* captured */
      {404, UNARY("etcdserver: requested lease not found", 5), DLOCK__ETCD_F_LEASE_GONE,
       "etcdserver: requested lease not found"},
      {400, UNARY("etcdserver: too many operations in txn request", 3), DLOCK__ETCD_F_INVALID,
       "etcdserver: too many operations in txn request"},
      {400, UNARY("etcdserver: duplicate key given in txn request", 3), DLOCK__ETCD_F_INVALID,
       NULL},
      {400, UNARY("etcdserver: request is too large", 3), DLOCK__ETCD_F_INVALID, NULL},
      {400, UNARY("etcdserver: too large lease TTL", 11), DLOCK__ETCD_F_INVALID, NULL},
      {400, UNARY("unexpected EOF", 3), DLOCK__ETCD_F_INVALID, "unexpected EOF"},
      /* InvalidArgument, but about the password, not the request */
      {400, UNARY("etcdserver: authentication failed, invalid user ID or password", 3),
       DLOCK__ETCD_F_AUTH, NULL},
      {400, UNARY("etcdserver: user name is empty", 3), DLOCK__ETCD_F_AUTH, NULL},
      {412, UNARY("etcdserver: authentication is not enabled", 9), DLOCK__ETCD_F_AUTH, NULL},
      {403, UNARY("etcdserver: permission denied", 7), DLOCK__ETCD_F_AUTH, NULL},
      /* both a made-up token and one past its TTL */
      {401, UNARY("etcdserver: invalid auth token", 16), DLOCK__ETCD_F_REAUTH,
       "etcdserver: invalid auth token"},
      {500, UNARY("context deadline exceeded", 2), DLOCK__ETCD_F_RETRY, NULL},
      {503, UNARY("etcdserver: request timed out", 14), DLOCK__ETCD_F_RETRY, NULL},
      {503,
       "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\","
       "\"http_status\":\"Service Unavailable\"}}",
       DLOCK__ETCD_F_RETRY, "etcdserver: no leader"},
      {500, UNARY("invalid character 'a' looking for beginning of value", 2),
       DLOCK__ETCD_F_OTHER, "invalid character 'a' looking for beginning of value"},
      {500, UNARY("illegal base64 data at input byte 0", 2), DLOCK__ETCD_F_OTHER, NULL},
      {404, "Not Found\n", DLOCK__ETCD_F_OTHER, "HTTP 404: Not Found"},
      /* from source (etcd 3.4 rpctypes/error.go, v3rpc/util.go) */
      {503, UNARY("etcdserver: leader changed", 14), DLOCK__ETCD_F_RETRY, NULL},
      {500, UNARY("etcdserver: too many requests", 2), DLOCK__ETCD_F_RETRY, NULL},
      {503, UNARY("etcdserver: request timed out, possibly due to previous leader failure", 14),
       DLOCK__ETCD_F_RETRY, NULL},
      {500, UNARY("auth: revision in header is old", 2), DLOCK__ETCD_F_REAUTH, NULL},
      {400, UNARY("etcdserver: mvcc: required revision has been compacted", 11),
       DLOCK__ETCD_F_OTHER, NULL},
      {429, UNARY("etcdserver: mvcc: database space exceeded", 8), DLOCK__ETCD_F_OTHER, NULL},
      /* codes alone */
      {503, "{\"code\":14}", DLOCK__ETCD_F_RETRY, "HTTP 503, gRPC code 14"},
      {401, "{\"code\":16,\"message\":\"bad\"}", DLOCK__ETCD_F_REAUTH, "bad"},
      {400, "{\"code\":3,\"message\":\"nope\"}", DLOCK__ETCD_F_INVALID, "nope"},
      {403, "{\"code\":7,\"message\":\"no\"}", DLOCK__ETCD_F_AUTH, NULL},
      {500, "{\"code\":2,\"message\":\"what\"}", DLOCK__ETCD_F_OTHER, NULL},
      /* a proxy's answers */
      {502, "", DLOCK__ETCD_F_RETRY, "HTTP 502"},
      {503, "<html>Service Unavailable</html>", DLOCK__ETCD_F_RETRY,
       "HTTP 503: <html>Service Unavailable</html>"},
      {504, "{}", DLOCK__ETCD_F_RETRY, NULL},
      {500, "", DLOCK__ETCD_F_RETRY, "HTTP 500"},
      {500, "upstream reset", DLOCK__ETCD_F_RETRY, NULL},
      {400, "", DLOCK__ETCD_F_OTHER, "HTTP 400"},
      {401, "", DLOCK__ETCD_F_REAUTH, "HTTP 401"},
      {403, "Forbidden", DLOCK__ETCD_F_AUTH, "HTTP 403: Forbidden"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char msg[128];
    memset(msg, 'x', sizeof msg);
    enum dlock__etcd_fault f =
        dlock__etcd_error(cases[i].status, cases[i].body, strlen(cases[i].body), msg, sizeof msg);
    if (f != cases[i].fault)
      fail_msg("case %zu (%d %s): fault %d, want %d", i, cases[i].status, cases[i].body, (int)f,
               (int)cases[i].fault);
    if (cases[i].msg)
      assert_string_equal(msg, cases[i].msg);
    else
      assert_non_null(memchr(msg, '\0', sizeof msg));
  }
  /* The message is truncated to the buffer, and a zero-sized one is left
   * alone. */
  char small[8];
  static const char lnf[] = UNARY("etcdserver: requested lease not found", 5);
  assert_int_equal(dlock__etcd_error(404, lnf, strlen(lnf), small, sizeof small),
                   DLOCK__ETCD_F_LEASE_GONE);
  assert_string_equal(small, "etcdser");
  assert_int_equal(dlock__etcd_error(404, lnf, strlen(lnf), small, 0), DLOCK__ETCD_F_LEASE_GONE);
  /* A body that is not NUL-terminated where LEN ends. */
  assert_int_equal(dlock__etcd_error(503, "Bad GatewayXXXX", 11, small, sizeof small),
                   DLOCK__ETCD_F_RETRY);
}

static void fault_codes(void **state) {
  (void)state;
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_NONE), 0);
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_REAUTH), DLOCK_EAUTH);
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_AUTH), DLOCK_EAUTH);
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_LEASE_GONE), DLOCK_ELOST);
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_RETRY), DLOCK_ECONN);
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_INVALID), DLOCK_EINVAL);
  assert_int_equal(dlock__etcd_fault_code(DLOCK__ETCD_F_OTHER), DLOCK_EBACKEND);
}

/* ---- watch ---- */

static void watch_ev(const char *line, dlock__etcd_watch_ev *ev) {
  memset(ev, 0x55, sizeof *ev);
  assert_int_equal(dlock__etcd_parse_watch(line, strlen(line), ev), 0);
}

static void watch_lines(void **state) {
  (void)state;
  dlock__etcd_watch_ev ev;
  /* The first watch of a stream has id 0, so "watch_id" is left out. */
  watch_ev("{\"result\":{\"header\":" HDR("6") ",\"created\":true}}\n", &ev);
  assert_true(ev.created);
  assert_false(ev.canceled);
  assert_false(ev.error);
  assert_int_equal(ev.revision, 6);
  assert_int_equal(ev.watch_id, 0);
  assert_int_equal(ev.deletes, 0);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_NONE);
  assert_string_equal(ev.msg, "");

  watch_ev("{\"result\":{\"header\":" HDR("8") ",\"events\":[{\"type\":\"DELETE\",\"kv\":{"
           "\"key\":\"ZGxvY2svcS83MGIzYTIwYjY0ZDZkYjBl\",\"mod_revision\":\"8\"}}]}}",
           &ev);
  assert_false(ev.created);
  assert_int_equal(ev.revision, 8);
  assert_int_equal(ev.deletes, 1);

  /* Without NOPUT: two puts (no "type", PUT being 0) then two deletes. */
  watch_ev("{\"result\":{\"header\":" HDR("10") ",\"events\":[{\"kv\":{\"key\":\"ZGxvY2svdy9h\","
           "\"create_revision\":\"10\",\"mod_revision\":\"10\",\"version\":\"1\",\"value\":"
           "\"eA==\"}},{\"kv\":{\"key\":\"ZGxvY2svdy9i\",\"create_revision\":\"10\","
           "\"mod_revision\":\"10\",\"version\":\"1\",\"value\":\"eA==\"}}]}}",
           &ev);
  assert_int_equal(ev.deletes, 0);
  assert_int_equal(ev.revision, 10);
  watch_ev("{\"result\":{\"header\":" HDR("11") ",\"events\":[{\"type\":\"DELETE\",\"kv\":{"
           "\"key\":\"ZGxvY2svdy9h\",\"mod_revision\":\"11\"}},{\"type\":\"DELETE\",\"kv\":{"
           "\"key\":\"ZGxvY2svdy9i\",\"mod_revision\":\"11\"}}]}}",
           &ev);
  assert_int_equal(ev.deletes, 2);

  /* start_revision compacted away: canceled, no revision in the header,
   * no cancel_reason. */
  watch_ev("{\"result\":{\"header\":{\"cluster_id\":\"2709362113014280803\",\"member_id\":"
           "\"2803394119270166707\",\"raft_term\":\"2\"},\"canceled\":true,"
           "\"compact_revision\":\"8\"}}",
           &ev);
  assert_true(ev.canceled);
  assert_false(ev.created);
  assert_false(ev.error);
  assert_int_equal(ev.compact_revision, 8);
  assert_int_equal(ev.revision, 0);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_NONE);
}

/* A refused watch is created and canceled in one line, its reason Go's
 * status text. */
static void watch_refused(void **state) {
  (void)state;
  static const struct {
    const char *reason;
    enum dlock__etcd_fault fault;
  } cases[] = {
      {"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
       DLOCK__ETCD_F_REAUTH},
      {"rpc error: code = PermissionDenied desc = etcdserver: permission denied",
       DLOCK__ETCD_F_AUTH},
      {"rpc error: code = InvalidArgument desc = etcdserver: user name is empty",
       DLOCK__ETCD_F_AUTH},
      {"rpc error: code = Unavailable desc = something new", DLOCK__ETCD_F_RETRY},
      {"rpc error: code = Unauthenticatedish desc = ?", DLOCK__ETCD_F_OTHER},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char line[512];
    snprintf(line, sizeof line,
             "{\"result\":{\"header\":" HDR("11") ",\"watch_id\":\"-1\",\"created\":true,"
                                                  "\"canceled\":true,\"cancel_reason\":\"%s\"}}",
             cases[i].reason);
    dlock__etcd_watch_ev ev;
    watch_ev(line, &ev);
    assert_true(ev.created);
    assert_true(ev.canceled);
    assert_false(ev.error);
    assert_int_equal(ev.watch_id, -1);
    assert_int_equal(ev.revision, 11);
    assert_int_equal(ev.compact_revision, 0);
    assert_string_equal(ev.msg, cases[i].reason);
    if (ev.fault != cases[i].fault)
      fail_msg("'%s': fault %d, want %d", cases[i].reason, (int)ev.fault, (int)cases[i].fault);
  }
}

static void watch_errors(void **state) {
  (void)state;
  dlock__etcd_watch_ev ev;
  watch_ev("{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\","
           "\"http_status\":\"Service Unavailable\"}}",
           &ev);
  assert_true(ev.error);
  assert_false(ev.canceled);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_RETRY);
  assert_string_equal(ev.msg, "etcdserver: no leader");
  /* Classified by code when the message says nothing known. */
  watch_ev("{\"error\":{\"grpc_code\":16,\"http_code\":401,\"message\":\"who are you\","
           "\"http_status\":\"Unauthorized\"}}",
           &ev);
  assert_true(ev.error);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_REAUTH);
  /* A stream error carries its HTTP status in the line, not the answer. */
  watch_ev("{\"error\":{\"http_code\":503,\"message\":\"something new\"}}", &ev);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_RETRY);
  watch_ev("{\"error\":{\"http_code\":403,\"message\":\"something new\"}}", &ev);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_AUTH);
  /* Long messages are cut to the buffer. */
  char line[1024];
  char big[600];
  memset(big, 'm', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  snprintf(line, sizeof line, "{\"error\":{\"grpc_code\":2,\"message\":\"%s\"}}", big);
  watch_ev(line, &ev);
  assert_int_equal(strlen(ev.msg), sizeof ev.msg - 1);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_OTHER);

  static const char *const bad[] = {"", "{}", "{\"result\":{}}", "[]", "{\"result\":{\"header\":",
                                    "\"str\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (dlock__etcd_parse_watch(bad[i], strlen(bad[i]), &ev) != DLOCK_EBACKEND)
      fail_msg("parsed: %s", bad[i]);
}

/* ---- json_i64 ---- */

static void json_i64(void **state) {
  (void)state;
  cJSON *j = cJSON_Parse("{\"s\":\"7587862073247400200\",\"n\":123,\"neg\":\"-42\","
                         "\"max\":\"9223372036854775807\",\"min\":\"-9223372036854775808\","
                         "\"over\":\"9223372036854775808\",\"sp\":\" 1\",\"plus\":\"+1\","
                         "\"junk\":\"12a\",\"empty\":\"\",\"dash\":\"-\",\"frac\":1.5,"
                         "\"nnum\":-7,\"bignum\":1e30,\"bool\":true,\"null\":null,\"obj\":{},"
                         "\"zero\":\"0\",\"exact\":9007199254740991,\"hex\":\"0x10\","
                         "\"inexact\":9007199254740993,\"nexact\":-9007199254740993}");
  assert_non_null(j);
  assert_int_equal(dlock__etcd_json_i64(j, "s", -1), BIG_LEASE);
  assert_int_equal(dlock__etcd_json_i64(j, "n", -1), 123);
  assert_int_equal(dlock__etcd_json_i64(j, "neg", -1), -42);
  assert_int_equal(dlock__etcd_json_i64(j, "max", -1), INT64_MAX);
  assert_int_equal(dlock__etcd_json_i64(j, "min", -1), INT64_MIN);
  assert_int_equal(dlock__etcd_json_i64(j, "zero", -1), 0);
  assert_int_equal(dlock__etcd_json_i64(j, "nnum", -1), -7);
  /* Numbers only below 2^53, where a double is the number written. */
  assert_int_equal(dlock__etcd_json_i64(j, "exact", -1), INT64_C(9007199254740991));
  static const char *const defaults[] = {"over", "sp",   "plus", "junk", "empty", "dash", "frac",
                                         "bignum", "bool", "null", "obj",  "absent", "hex",
                                         "inexact", "nexact"};
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
    if (dlock__etcd_json_i64(j, defaults[i], -99) != -99)
      fail_msg("\"%s\" did not give the default", defaults[i]);
  assert_int_equal(dlock__etcd_json_i64(NULL, "s", 5), 5);
  cJSON_Delete(j);
}

/* ---- bounds on numbers in answers ---- */

/* POST /v3/lease/timetolive {"ID":..,"keys":true} on etcd 3.4, for a live
 * lease and after it was revoked. */
#define TTL_HDR                                                                            \
  "{\"cluster_id\":\"11615090033132179582\",\"member_id\":\"12250716086546946229\","       \
  "\"revision\":\"4428\",\"raft_term\":\"2\"}"
static const char fx_ttl_live[] =
    "{\"header\":" TTL_HDR ",\"ID\":\"6392193577893666525\",\"TTL\":\"59\",\"grantedTTL\":\"60\"}";
static const char fx_ttl_gone[] =
    "{\"header\":" TTL_HDR ",\"ID\":\"6392193577893666525\",\"TTL\":\"-1\"}";

static void timetolive_bounds(void **state) {
  (void)state;
  int64_t ms = 0;
  assert_int_equal(dlock__etcd_parse_timetolive(fx_ttl_live, strlen(fx_ttl_live), &ms, NULL), 0);
  assert_int_equal(ms, 59000);
  assert_int_equal(dlock__etcd_parse_timetolive(fx_ttl_gone, strlen(fx_ttl_gone), &ms, NULL), 0);
  assert_int_equal(ms, -1);
  static const struct {
    const char *ttl;
    int64_t ms;
  } good[] = {
      {NULL, 0}, /* a TTL of 0 is left out */
      {"\"0\"", 0},
      {"\"-5\"", -1},
      {"\"9000000000\"", INT64_C(9000000000000)}, /* MaxLeaseTTL */
      {"60", 60000},
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char body[512];
    snprintf(body, sizeof body, "{\"header\":" TTL_HDR ",\"ID\":\"1\"%s%s}",
             good[i].ttl ? ",\"TTL\":" : "", good[i].ttl ? good[i].ttl : "");
    ms = 7;
    if (dlock__etcd_parse_timetolive(body, strlen(body), &ms, NULL) != 0 || ms != good[i].ms)
      fail_msg("%s: %lld, want %lld", body, (long long)ms, (long long)good[i].ms);
  }
  /* 9223372036854776 s is 2^63 ms and a bit: multiplied by 1000 it would
   * overflow.  Past MaxLeaseTTL, or not an int64 as the gateway writes
   * one, it is no answer. */
  static const char *const bad[] = {
      "\"9223372036854776\"", "\"9000000001\"", "\"9223372036854775807\"",
      "\"9223372036854775808\"", "\"+5\"", "\" 5\"", "\"5 \"", "\"\"", "\"5x\"", "\"0x10\"",
      "1e300", "5.5", "true", "{}", "\"-\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char body[512];
    snprintf(body, sizeof body, "{\"header\":" TTL_HDR ",\"ID\":\"1\",\"TTL\":%s}", bad[i]);
    ms = 7;
    int rc = dlock__etcd_parse_timetolive(body, strlen(body), &ms, NULL);
    if (rc != DLOCK_EBACKEND || ms != -1)
      fail_msg("TTL %s: rc %d, %lld ms", bad[i], rc, (long long)ms);
  }
  static const char *const not_answers[] = {"", "[]", "{\"TTL\":\"5\"}", "{\"error\":\"x\"}"};
  for (size_t i = 0; i < sizeof not_answers / sizeof not_answers[0]; i++)
    assert_int_equal(dlock__etcd_parse_timetolive(not_answers[i], strlen(not_answers[i]), &ms, NULL),
                     DLOCK_EBACKEND);
  assert_int_equal(dlock__etcd_parse_timetolive(NULL, 0, &ms, NULL), DLOCK_EBACKEND);
}

/* A lease's keys, as the gateway lists them (base64), sorted into a set
 * that finds each; bad lists are no answer and leave the set empty. */
static void timetolive_keys(void **state) {
  (void)state;
  int64_t ms = 0;
  dlock__etcd_keys ks = {0};
  /* "d/b/1", "d/a/1", "d/c/1", and one with a NUL byte ("d/\0x"). */
  static const char body[] =
      "{\"header\":" TTL_HDR ",\"ID\":\"1\",\"TTL\":\"9\","
      "\"keys\":[\"ZC9iLzE=\",\"ZC9hLzE=\",\"ZC9jLzE=\",\"ZC8AeA==\"]}";
  assert_int_equal(dlock__etcd_parse_timetolive(body, strlen(body), &ms, &ks), 0);
  assert_int_equal(ms, 9000);
  assert_int_equal(ks.n, 3);
  assert_string_equal(ks.k[0], "d/a/1");
  assert_string_equal(ks.k[2], "d/c/1");
  assert_true(dlock__etcd_keys_has(&ks, "d/a/1"));
  assert_true(dlock__etcd_keys_has(&ks, "d/b/1"));
  assert_true(dlock__etcd_keys_has(&ks, "d/c/1"));
  assert_false(dlock__etcd_keys_has(&ks, "d/"));
  assert_false(dlock__etcd_keys_has(&ks, "d/b/"));
  assert_false(dlock__etcd_keys_has(&ks, "d/b/10"));
  assert_false(dlock__etcd_keys_has(&ks, NULL));
  dlock__etcd_keys_free(&ks);
  assert_false(dlock__etcd_keys_has(&ks, "d/a/1"));
  /* No keys (a lease without any, or one that is gone). */
  assert_int_equal(dlock__etcd_parse_timetolive(fx_ttl_gone, strlen(fx_ttl_gone), &ms, &ks), 0);
  assert_int_equal(ms, -1);
  assert_int_equal(ks.n, 0);
  assert_false(dlock__etcd_keys_has(&ks, "d/a/1"));
  dlock__etcd_keys_free(&ks);
  static const char *const bad[] = {"{}", "\"ZC9h\"", "[1]", "[\"ZC9iLzE=\",null]",
                                    "[\"not base64!\"]"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char b[512];
    snprintf(b, sizeof b, "{\"header\":" TTL_HDR ",\"TTL\":\"9\",\"keys\":%s}", bad[i]);
    ms = 7;
    int rc = dlock__etcd_parse_timetolive(b, strlen(b), &ms, &ks);
    if (rc != DLOCK_EBACKEND || ms != -1 || ks.n || ks.buf || ks.k)
      fail_msg("keys %s: rc %d, %lld ms, %zu keys", bad[i], rc, (long long)ms, ks.n);
  }
  /* Many keys: the set grows past its first buffer. */
  for (int i = 0; i < 3000; i++) {
    char k[64];
    snprintf(k, sizeof k, "dlock/jobs/%d/694d1f2a3b4c5d6e", i * 7919 % 3000);
    assert_int_equal(dlock__etcd_keys_add(&ks, k, strlen(k)), 0);
  }
  assert_int_equal(dlock__etcd_keys_sort(&ks), 0);
  assert_int_equal(ks.n, 3000);
  for (int i = 0; i < 3000; i++) {
    char k[64];
    snprintf(k, sizeof k, "dlock/jobs/%d/694d1f2a3b4c5d6e", i);
    if (!dlock__etcd_keys_has(&ks, k))
      fail_msg("%s not found", k);
  }
  dlock__etcd_keys_free(&ks);
}

/* A txn answer: its revision is a granted lock's token, create_revision
 * a queue place. */
static int txn_with(const char *rev, const char *kv_fields, const char *range_extra) {
  char body[1024];
  snprintf(body, sizeof body,
           "{\"header\":{\"revision\":%s},\"succeeded\":true,\"responses\":[{\"response_range\":"
           "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"eA==\"%s}]%s}}]}",
           rev, kv_fields, range_extra);
  dlock__etcd_txn t;
  int rc = dlock__etcd_parse_txn(body, strlen(body), &t);
  dlock__etcd_txn_free(&t);
  return rc;
}

static void txn_bounds(void **state) {
  (void)state;
  assert_int_equal(txn_with("\"5\"", ",\"create_revision\":\"4\",\"mod_revision\":\"4\"", ""), 0);
  assert_int_equal(txn_with("\"9223372036854775806\"",
                            ",\"create_revision\":\"9223372036854775806\",\"lease\":\"-7\"",
                            ",\"count\":\"9223372036854775807\""),
                   0);
  static const char *const bad_rev[] = {
      "\"0\"", "\"-1\"", "\"9223372036854775807\"", "\"9223372036854775808\"", "\"+5\"",
      "\"\"", "\"5a\"", "null", "1e19", "-3",
  };
  for (size_t i = 0; i < sizeof bad_rev / sizeof bad_rev[0]; i++)
    if (txn_with(bad_rev[i], "", "") != DLOCK_EBACKEND)
      fail_msg("header revision %s taken", bad_rev[i]);
  static const char *const bad_kv[] = {
      ",\"create_revision\":\"-1\"", ",\"create_revision\":\"9223372036854775807\"",
      ",\"mod_revision\":\"-9\"", ",\"mod_revision\":\"x\"", ",\"version\":\"-1\"",
      ",\"lease\":\"99999999999999999999\"", ",\"create_revision\":1.5",
  };
  for (size_t i = 0; i < sizeof bad_kv / sizeof bad_kv[0]; i++)
    if (txn_with("\"5\"", bad_kv[i], "") != DLOCK_EBACKEND)
      fail_msg("kv %s taken", bad_kv[i]);
  assert_int_equal(txn_with("\"5\"", "", ",\"count\":\"-1\""), DLOCK_EBACKEND);
  static const char del[] =
      "{\"header\":{\"revision\":\"5\"},\"succeeded\":true,\"responses\":[{"
      "\"response_delete_range\":{\"header\":{\"revision\":\"5\"},\"deleted\":\"-1\"}}]}";
  dlock__etcd_txn t;
  assert_int_equal(dlock__etcd_parse_txn(del, strlen(del), &t), DLOCK_EBACKEND);
  dlock__etcd_txn_free(&t);
}

static void lease_and_watch_bounds(void **state) {
  (void)state;
  int64_t id, ttl;
  static const char grant_big[] =
      "{\"header\":" TTL_HDR ",\"ID\":\"12\",\"TTL\":\"9000000001\"}";
  assert_int_equal(dlock__etcd_parse_grant(grant_big, strlen(grant_big), &id, &ttl),
                   DLOCK_EBACKEND);
  static const char grant_max[] =
      "{\"header\":" TTL_HDR ",\"ID\":\"12\",\"TTL\":\"9000000000\"}";
  assert_int_equal(dlock__etcd_parse_grant(grant_max, strlen(grant_max), &id, &ttl), 0);
  assert_int_equal(ttl, INT64_C(9000000000));
  char msg[64];
  static const char ka_big[] =
      "{\"result\":{\"header\":" TTL_HDR ",\"ID\":\"12\",\"TTL\":\"9223372036854776\"}}";
  assert_int_equal(dlock__etcd_parse_keepalive(ka_big, strlen(ka_big), &ttl, msg, sizeof msg),
                   DLOCK_EBACKEND);
  static const char ka_junk[] = "{\"result\":{\"header\":" TTL_HDR ",\"ID\":\"12\",\"TTL\":\"1x\"}}";
  assert_int_equal(dlock__etcd_parse_keepalive(ka_junk, strlen(ka_junk), &ttl, msg, sizeof msg),
                   DLOCK_EBACKEND);
  static const char *const bad_watch[] = {
      "{\"result\":{\"header\":{\"revision\":\"-1\"},\"created\":true}}",
      "{\"result\":{\"header\":{\"revision\":\"9223372036854775807\"},\"created\":true}}",
      "{\"result\":{\"header\":{\"revision\":\"6\"},\"watch_id\":\"-2\"}}",
      "{\"result\":{\"header\":{\"revision\":\"6\"},\"watch_id\":\"1x\"}}",
      "{\"result\":{\"header\":{\"revision\":\"6\"},\"canceled\":true,"
      "\"compact_revision\":\"-4\"}}",
      "{\"result\":{\"header\":{\"revision\":\"6\"},\"canceled\":true,"
      "\"compact_revision\":\"9223372036854775807\"}}",
  };
  for (size_t i = 0; i < sizeof bad_watch / sizeof bad_watch[0]; i++) {
    dlock__etcd_watch_ev ev;
    if (dlock__etcd_parse_watch(bad_watch[i], strlen(bad_watch[i]), &ev) != DLOCK_EBACKEND)
      fail_msg("watch line taken: %s", bad_watch[i]);
  }
  /* A gRPC code past int's range must not wrap onto one that means
   * something: 2^32 + 7 is not PermissionDenied (7). */
  static const char wrap[] = "{\"error\":\"x\",\"message\":\"x\",\"code\":\"4294967303\"}";
  assert_int_equal(dlock__etcd_error(400, wrap, strlen(wrap), msg, sizeof msg),
                   DLOCK__ETCD_F_OTHER);
  static const char wrap_http[] =
      "{\"error\":{\"grpc_code\":\"4294967310\",\"http_code\":\"4294967799\",\"message\":\"x\"}}";
  dlock__etcd_watch_ev ev;
  assert_int_equal(dlock__etcd_parse_watch(wrap_http, strlen(wrap_http), &ev), 0);
  assert_true(ev.error);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_OTHER);
}

/* A listing's store keys read back as the keys whose queues they are in,
 * and keys of no queue of ours are left out. */
static void key_of_reads_names_back(void **state) {
  (void)state;
  static const char *const keys[] = {"jobs/42", "a%b", "x", "\xc3\xbc/%2F"};
  char out[DLOCK_KEY_MAX + 1];
  size_t ol;
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    char *name = dlock__etcd_lock_name("dlock/", keys[i], strlen(keys[i]));
    char *hk = dlock__etcd_lock_key(name, 0x1234abcd);
    assert_int_equal(dlock__etcd_key_of("dlock/", hk, strlen(hk), out, &ol), 1);
    assert_int_equal(ol, strlen(keys[i]));
    assert_memory_equal(out, keys[i], ol);
    free(hk);
    free(name);
  }
  static const char *const foreign[] = {"other/x/1", "dlock/x", "dlock//1", "dlock/a%41/1",
                                        "dlock/a%2f/1"};
  for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++)
    if (dlock__etcd_key_of("dlock/", foreign[i], strlen(foreign[i]), out, &ol) != 0)
      fail_msg("'%s' read back as a key", foreign[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lock_name_escapes),
      cmocka_unit_test(key_of_reads_names_back),
      cmocka_unit_test(lock_names_never_nest),
      cmocka_unit_test(lock_key_hex),
      cmocka_unit_test(prefix_end_cases),
      cmocka_unit_test(prefix_end_bounds_keys),
      cmocka_unit_test(value_round_trip),
      cmocka_unit_test(b64_vectors),
      cmocka_unit_test(b64_all_bytes),
      cmocka_unit_test(b64_malformed),
      cmocka_unit_test(req_lease_bodies),
      cmocka_unit_test(req_auth_body),
      cmocka_unit_test(req_try_body),
      cmocka_unit_test(req_enqueue_body),
      cmocka_unit_test(req_queue_body),
      cmocka_unit_test(req_release_move_bodies),
      cmocka_unit_test(req_check_body),
      cmocka_unit_test(req_first_delete_all_bodies),
      cmocka_unit_test(req_watch_body),
      cmocka_unit_test(req_binary_keys),
      cmocka_unit_test(txn_try),
      cmocka_unit_test(txn_enqueue_and_queue),
      cmocka_unit_test(txn_check_release_first),
      cmocka_unit_test(txn_rejects),
      cmocka_unit_test(grant),
      cmocka_unit_test(keepalive),
      cmocka_unit_test(auth),
      cmocka_unit_test(error_classes),
      cmocka_unit_test(fault_codes),
      cmocka_unit_test(watch_lines),
      cmocka_unit_test(watch_refused),
      cmocka_unit_test(watch_errors),
      cmocka_unit_test(json_i64),
      cmocka_unit_test(timetolive_bounds),
      cmocka_unit_test(timetolive_keys),
      cmocka_unit_test(txn_bounds),
      cmocka_unit_test(lease_and_watch_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
