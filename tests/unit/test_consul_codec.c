/* Consul codec without an agent: key layout, URL paths, the JSON bodies
 * sent to the HTTP API and the decoding of its answers.
 *
 * The answers below were captured from Consul 1.21.0 (a single server,
 * not -dev, so compact JSON; one -dev answer shows the indented form),
 * with curl sending the bodies this codec builds.  Session IDs, indexes
 * and messages are the agent's own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "backends/consul/consul-codec.h"

#define FLAG_TEXT "3304740253564472344"
#define SID_A "ef931e56-3e32-cc54-f447-fdd4277f0ed5"
#define SID_B "170b20e5-6f12-91c6-cbd3-f79248dabd0c"
#define OWNER "0123456789abcdef0123456789abcdef"

/* ---- captured answers ---- */

/* PUT /v1/session/create with dlock__consul_req_session("dlock host:42", 15, 1500). */
static const char fx_session_create[] = "{\"ID\":\"" SID_A "\"}";

/* PUT /v1/session/renew/<id>; GET /v1/session/info/<id> gives the same,
 * which is how "no checks" was confirmed: NodeChecks [] and no Checks. */
static const char fx_renew[] =
    "[{\"ID\":\"" SID_A "\",\"Name\":\"dlock host:42\",\"Node\":\"codec\",\"LockDelay\":1500000000,"
    "\"Behavior\":\"release\",\"TTL\":\"15s\",\"NodeChecks\":[],\"ServiceChecks\":null,"
    "\"CreateIndex\":18,\"ModifyIndex\":18}]";

/* The same from a -dev agent, which indents every answer. */
static const char fx_renew_dev[] =
    "[\n    {\n        \"ID\": \"ad74af35-46f2-045b-d9c3-251b0e4445fc\",\n"
    "        \"Name\": \"dlock test\",\n        \"Node\": \"vm\",\n"
    "        \"LockDelay\": 1500000000,\n        \"Behavior\": \"release\",\n"
    "        \"TTL\": \"15s\",\n        \"NodeChecks\": [],\n        \"ServiceChecks\": null,\n"
    "        \"CreateIndex\": 23,\n        \"ModifyIndex\": 23\n    }\n]";

/* Renewing a destroyed session: 404, text/plain. */
static const char fx_renew_404[] = "Session id '" SID_B "' not found";

/* PUT /v1/txn, dlock__consul_req_lock("dlock/build%2Fx/.lock", SID_A,
 * OWNER "\nhost:42"): the lock result has no value, the get has it. */
static const char fx_txn_lock_200[] =
    "{\"Results\":[{\"KV\":{\"LockIndex\":1,\"Key\":\"dlock/build%2Fx/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":null,\"Session\":\"" SID_A "\",\"CreateIndex\":21,\"ModifyIndex\":21}},"
    "{\"KV\":{\"LockIndex\":1,\"Key\":\"dlock/build%2Fx/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYKaG9zdDo0Mg==\",\"Session\":\"" SID_A
    "\",\"CreateIndex\":21,\"ModifyIndex\":21}}],\"Errors\":null}";

/* The same body with SID_B while SID_A holds the key: 409. */
static const char fx_txn_lock_409[] =
    "{\"Results\":null,\"Errors\":[{\"OpIndex\":0,\"What\":\"failed to lock key "
    "\\\"dlock/build%2Fx/.lock\\\", lock is already held\"}]}";

/* SID_B's session destroyed while holding (LockDelay 1500ms); SID_A at
 * once after. */
static const char fx_txn_lock_delay[] =
    "{\"Results\":null,\"Errors\":[{\"OpIndex\":0,\"What\":\"failed to lock key "
    "\\\"dlock/build%2Fx/.lock\\\" due to lock delay\"}]}";

/* Locking with a session the agent does not know. */
static const char fx_txn_lock_invalid[] =
    "{\"Results\":null,\"Errors\":[{\"OpIndex\":0,\"What\":\"invalid session "
    "\\\"00000000-0000-0000-0000-000000000000\\\"\"}]}";

/* The 409 of a -dev agent. */
static const char fx_txn_lock_409_dev[] =
    "{\n    \"Results\": null,\n    \"Errors\": [\n        {\n            \"OpIndex\": 0,\n"
    "            \"What\": \"failed to lock key \\\"dlock/build/.lock\\\", lock is already "
    "held\"\n        }\n    ]\n}";

/* dlock__consul_req_check of the held key against SID_A (a read-only txn,
 * which carries query metadata too), then against SID_B. */
static const char fx_txn_check_200[] =
    "{\"Results\":[{\"KV\":{\"LockIndex\":1,\"Key\":\"dlock/build%2Fx/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":null,\"Session\":\"" SID_A "\",\"CreateIndex\":21,\"ModifyIndex\":21}}],"
    "\"Errors\":null,\"Index\":1,\"LastContact\":0,\"KnownLeader\":true,\"ConsistencyLevel\":\"\","
    "\"NotModified\":false,\"Backend\":0,\"ResultsFilteredByACLs\":false}";

static const char fx_txn_check_409[] =
    "{\"Results\":null,\"Errors\":[{\"OpIndex\":0,\"What\":\"failed session check for key "
    "\\\"dlock/build%2Fx/.lock\\\", current session \\\"" SID_A "\\\" != \\\"" SID_B "\\\"\"}],"
    "\"Index\":1,\"LastContact\":0,\"KnownLeader\":true,\"ConsistencyLevel\":\"\","
    "\"NotModified\":false,\"Backend\":0,\"ResultsFilteredByACLs\":false}";

/* Three checks: held by SID_A (passes), held by SID_A but checked against
 * SID_B, and a key that does not exist.  Every failure is listed. */
static const char fx_txn_check3_409[] =
    "{\"Results\":null,\"Errors\":[{\"OpIndex\":1,\"What\":\"failed session check for key "
    "\\\"dlock/é ✓?#/.lock\\\", current session \\\"" SID_A "\\\" != \\\"" SID_B "\\\"\"},"
    "{\"OpIndex\":2,\"What\":\"failed to check session, key \\\"dlock/gone/.lock\\\" doesn't "
    "exist\"}],\"Index\":1,\"LastContact\":0,\"KnownLeader\":true,\"ConsistencyLevel\":\"\","
    "\"NotModified\":false,\"Backend\":0,\"ResultsFilteredByACLs\":false}";

/* More operations than the agent takes: 413, text/plain. */
static const char fx_txn_413[] = "Transaction contains too many operations (129 > 128)";

/* GET /v1/kv/dlock/build%252Fx/.lock while held. */
static const char fx_kv_held[] =
    "[{\"LockIndex\":1,\"Key\":\"dlock/build%2Fx/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYKaG9zdDo0Mg==\",\"Session\":\"" SID_A
    "\",\"CreateIndex\":21,\"ModifyIndex\":21}]";

/* After PUT ?release=SID_A&flags=FLAG (body empty): no Session, null Value. */
static const char fx_kv_released[] =
    "[{\"LockIndex\":1,\"Key\":\"dlock/build%2Fx/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":null,\"CreateIndex\":21,\"ModifyIndex\":25}]";

/* After the holder's session was destroyed: the value stays. */
static const char fx_kv_after_destroy[] =
    "[{\"LockIndex\":2,\"Key\":\"dlock/build%2Fx/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":\"eAp5\",\"CreateIndex\":21,\"ModifyIndex\":27}]";

/* `consul lock dlock/ctest sleep 3` holding its key. */
static const char fx_kv_consul_lock[] =
    "[{\"LockIndex\":1,\"Key\":\"dlock/ctest/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":null,\"Session\":\"56aa8900-0e3a-4f3b-7d6a-698b4af78186\",\"CreateIndex\":29,"
    "\"ModifyIndex\":29}]";

/* GET /v1/kv/dlock/%C3%A9%20%E2%9C%93%3F%23/.lock, the key locked by a txn
 * under its raw name: the path reaches the same key. */
static const char fx_kv_unicode[] =
    "[{\"LockIndex\":1,\"Key\":\"dlock/é ✓?#/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":\"bwps\",\"Session\":\"" SID_A "\",\"CreateIndex\":23,\"ModifyIndex\":23}]";

/* A key after PUT ?release= without flags: the agent writes Flags 0. */
static const char fx_kv_flags_zero[] =
    "[{\"LockIndex\":1,\"Key\":\"dlock/build/.lock\",\"Flags\":0,\"Value\":null,"
    "\"CreateIndex\":47,\"ModifyIndex\":52}]";

/* The txns a release, an inspect and a waiter send, for the key
 * "ctest/a\u200bb/.lock" (U+200B, which the agent refuses in a /v1/kv/
 * path) locked by SID_A: dlock__consul_req_get (get-tree) while held, with
 * a key "ctest/a\u200bb/.lockx" beside it; dlock__consul_req_unlock with
 * SID_B (409), then with SID_A (200: the entry as the unlock left it);
 * get-tree of a key that does not exist. */
#define ZWSP "\xe2\x80\x8b"
static const char fx_txn_get_held[] =
    "{\"Results\":[{\"KV\":{\"LockIndex\":1,\"Key\":\"ctest/a" ZWSP "b/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":\"eAp5\",\"Session\":\"" SID_A "\",\"CreateIndex\":5176,\"ModifyIndex\":5176}},"
    "{\"KV\":{\"LockIndex\":0,\"Key\":\"ctest/a" ZWSP "b/.lockx\",\"Flags\":0,\"Value\":\"eA==\","
    "\"CreateIndex\":5180,\"ModifyIndex\":5180}}],\"Errors\":null,\"Index\":1,\"LastContact\":0,"
    "\"KnownLeader\":true,\"ConsistencyLevel\":\"\",\"NotModified\":false,\"Backend\":0,"
    "\"ResultsFilteredByACLs\":false}";
static const char fx_txn_unlock_409[] =
    "{\"Results\":null,\"Errors\":[{\"OpIndex\":0,\"What\":\"failed to unlock key "
    "\\\"ctest/a\\u200bb/.lock\\\", lock isn't held, or is held by another session\"}]}";
static const char fx_txn_unlock_200[] =
    "{\"Results\":[{\"KV\":{\"LockIndex\":1,\"Key\":\"ctest/a" ZWSP "b/.lock\",\"Flags\":" FLAG_TEXT
    ",\"Value\":null,\"CreateIndex\":5176,\"ModifyIndex\":5178}}],\"Errors\":null}";
static const char fx_txn_get_none[] =
    "{\"Results\":[],\"Errors\":null,\"Index\":1,\"LastContact\":0,\"KnownLeader\":true,"
    "\"ConsistencyLevel\":\"\",\"NotModified\":false,\"Backend\":0,\"ResultsFilteredByACLs\":false}";

/* base64 of bytes 0..255 and 1..255, from coreutils' base64. */
static const char b64_all256[] =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQk"
    "NERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWG"
    "h4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIyc"
    "rLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==";
static const char b64_1to255[] =
    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0"
    "RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9gYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaH"
    "iImKi4yNjo+QkZKTlJWWl5iZmpucnZ6foKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr/AwcLDxMXGx8jJys"
    "vMzc7P0NHS09TV1tfY2drb3N3e3+Dh4uPk5ebn6Onq6+zt7u/w8fLz9PX29/j5+vv8/f7/";

/* ---- helpers ---- */

static void assert_msg_has(const char *needle) {
  const char *m = dlock_client_errmsg(NULL);
  assert_non_null(m);
  if (!strstr(m, needle))
    fail_msg("message \"%s\" lacks \"%s\"", m, needle);
}

static const cJSON *item(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!v)
    fail_msg("no \"%s\"", name);
  return v;
}

static const char *str(const cJSON *o, const char *name) {
  const cJSON *v = item(o, name);
  if (!cJSON_IsString(v))
    fail_msg("\"%s\" is not a string", name);
  return v->valuestring;
}

static cJSON *parse_body(const char *body) {
  assert_non_null(body);
  cJSON *j = cJSON_Parse(body);
  if (!j)
    fail_msg("not JSON: %s", body);
  return j;
}

/* The "KV" object of txn operation I, which must be its only member. */
static const cJSON *txn_op(const cJSON *arr, int i) {
  const cJSON *o = cJSON_GetArrayItem(arr, i);
  assert_non_null(o);
  assert_int_equal(cJSON_GetArraySize(o), 1);
  const cJSON *kv = item(o, "KV");
  assert_true(cJSON_IsObject(kv));
  return kv;
}

/* Wrap base64 text B64 as a GET /v1/kv answer and decode it. */
static int kv_with_value(const char *b64, dlock__consul_kv *kv) {
  char *body = NULL;
  if (asprintf(&body, "[{\"Key\":\"k\",\"Flags\":0,\"Value\":\"%s\"}]", b64) < 0)
    fail();
  int rc = dlock__consul_parse_kv(body, strlen(body), kv);
  free(body);
  return rc;
}

static void parse_txn_ok(int status, const char *body, dlock__consul_txn *t) {
  int rc = dlock__consul_parse_txn(status, body, strlen(body), t);
  if (rc != 0)
    fail_msg("txn answer refused (%d): %s", rc, dlock_client_errmsg(NULL));
}

/* ---- keys and paths ---- */

static char *lock_key(const char *prefix, const char *key) {
  char *k = dlock__consul_lock_key(prefix, key, strlen(key));
  assert_non_null(k);
  return k;
}

static void lock_key_escapes(void **state) {
  (void)state;
  static const struct {
    const char *prefix, *key, *want;
  } cases[] = {
      {"dlock/", "build", "dlock/build/.lock"},
      {"dlock/", "build/x", "dlock/build%2Fx/.lock"},
      {"dlock/", "100%", "dlock/100%25/.lock"},
      {"dlock/", "%2F", "dlock/%252F/.lock"},
      {"dlock/", "/", "dlock/%2F/.lock"},
      {"dlock/", "é ✓?#", "dlock/é ✓?#/.lock"},
      {"dlock/", ".lock", "dlock/.lock/.lock"},
      {"app/locks/", "x", "app/locks/x/.lock"}, /* the prefix is taken as it is */
      {"", "k", "k/.lock"},
      {NULL, "k", DLOCK__CONSUL_DEFAULT_PREFIX "k/.lock"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *k = lock_key(cases[i].prefix, cases[i].key);
    assert_string_equal(k, cases[i].want);
    free(k);
  }
  /* KEYLEN counts, not a NUL. */
  char *k = dlock__consul_lock_key("p/", "a/bc", 3);
  assert_string_equal(k, "p/a%2Fb/.lock");
  free(k);
}

/* `consul lock` treats PREFIX/ as the lock's directory; one key's lock key
 * must never fall inside another key's directory. */
static void lock_keys_never_nest(void **state) {
  (void)state;
  static const char *const keys[] = {"a",  "a/b", "a/",   "/a",    "a%2Fb",   "a%b",  "a/b/c",
                                     "ab", "a%",  "%",    "/",     "//",      "b/a", "a/.lock",
                                     ".lock", "a%252Fb", "a/b/.lock"};
  size_t nk = sizeof keys / sizeof keys[0];
  char *lk[sizeof keys / sizeof keys[0]];
  char *dir[sizeof keys / sizeof keys[0]];
  for (size_t i = 0; i < nk; i++) {
    lk[i] = lock_key("dlock/", keys[i]);
    size_t n = strlen(lk[i]);
    assert_true(n > 6 && strcmp(lk[i] + n - 6, "/.lock") == 0);
    dir[i] = strndup(lk[i], n - 5); /* keeps the '/' */
    assert_non_null(dir[i]);
  }
  for (size_t i = 0; i < nk; i++)
    for (size_t j = 0; j < nk; j++) {
      if (i == j)
        continue;
      if (strcmp(lk[i], lk[j]) == 0)
        fail_msg("'%s' and '%s' share %s", keys[i], keys[j], lk[i]);
      if (strncmp(lk[j], dir[i], strlen(dir[i])) == 0)
        fail_msg("lock key of '%s' (%s) is inside the directory of '%s' (%s)", keys[j], lk[j],
                 keys[i], dir[i]);
    }
  /* The pair the layout exists for, spelt out. */
  char *a = lock_key("dlock/", "a"), *ab = lock_key("dlock/", "a/b");
  assert_string_equal(a, "dlock/a/.lock");
  assert_string_equal(ab, "dlock/a%2Fb/.lock");
  assert_false(strncmp(ab, "dlock/a/", 8) == 0);
  free(a);
  free(ab);
  for (size_t i = 0; i < nk; i++) {
    free(lk[i]);
    free(dir[i]);
  }
}

/* '.' is unreserved too, and '/' a path's own separator, but both go
 * encoded: the agent redirects "//", "." and ".." path segments. */
static int unreserved(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '_' || c == '~';
}

/* Every byte value (NUL cannot be in a C string) in the middle of a key. */
static void kv_path_every_byte(void **state) {
  (void)state;
  static const char hex[] = "0123456789ABCDEF";
  int kept = 0;
  for (int c = 1; c < 256; c++) {
    char key[4] = {'k', (char)c, 'z', '\0'};
    char want[32];
    if (unreserved(c)) {
      snprintf(want, sizeof want, "/v1/kv/k%cz", c);
      kept++;
    } else {
      snprintf(want, sizeof want, "/v1/kv/k%%%c%cz", hex[c >> 4], hex[c & 15]);
    }
    char *p = dlock__consul_kv_path(key, "");
    assert_non_null(p);
    if (strcmp(p, want) != 0)
      fail_msg("byte 0x%02x: %s, want %s", c, p, want);
    free(p);
  }
  /* 26+26+10 alphanumerics and "-_~". */
  assert_int_equal(kept, 65);
}

/* A path decoder as the agent's (Go's url.PathUnescape) works. */
static char *path_unescape(const char *p) {
  char *out = malloc(strlen(p) + 1), *w = out;
  assert_non_null(out);
  for (; *p; p++) {
    if (*p == '%') {
      unsigned v;
      assert_int_equal(sscanf(p + 1, "%2X", &v), 1);
      *w++ = (char)v;
      p += 2;
    } else {
      *w++ = *p;
    }
  }
  *w = '\0';
  return out;
}

static void kv_path_round_trip(void **state) {
  (void)state;
  /* Keys checked against the agent: written through this path, read back
   * by their raw name in a txn (and the other way round). */
  static const char *const keys[] = {
      "dlock/build/.lock", "dlock/build%2Fx/.lock", "dlock/é ✓?#/.lock", "rt/a b",
      "rt/100%",           "rt/q?x=1",              "rt/h#frag",         "rt/+plus",
      "rt/semi;colon",     "rt/amp&eq=",            "rt/quote\"back\\",  "rt/~tilde_-.",
      "rt/x:y@z!$'()*,",   "rt/a%252Fb",            "rt/trail/",         "rt/.../x",
  };
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    char *p = dlock__consul_kv_path(keys[i], "");
    assert_non_null(p);
    assert_memory_equal(p, "/v1/kv/", 7);
    /* Nothing a URL parser would split on, nor a space, nor a segment. */
    assert_null(strpbrk(p + 7, "?#& \"\\+;/."));
    char *back = path_unescape(p + 7);
    assert_string_equal(back, keys[i]);
    free(back);
    free(p);
  }
  char *p = dlock__consul_kv_path("dlock/é ✓?#/.lock", "");
  assert_string_equal(p, "/v1/kv/dlock%2F%C3%A9%20%E2%9C%93%3F%23%2F%2Elock");
  free(p);
  p = dlock__consul_kv_path("dlock/build%2Fx/.lock", "?release=" SID_A "&flags=" FLAG_TEXT);
  assert_string_equal(p, "/v1/kv/dlock%2Fbuild%252Fx%2F%2Elock?release=" SID_A "&flags=" FLAG_TEXT);
  free(p);
  p = dlock__consul_kv_path("dlock/../.lock", "");
  assert_string_equal(p, "/v1/kv/dlock%2F%2E%2E%2F%2Elock");
  free(p);
  /* A prefix with an empty segment: "//" in a path is redirected. */
  p = dlock__consul_kv_path("a//b/.lock", "");
  assert_string_equal(p, "/v1/kv/a%2F%2Fb%2F%2Elock");
  free(p);
  p = dlock__consul_kv_path("", "?keys");
  assert_string_equal(p, "/v1/kv/?keys");
  free(p);
}

static void value_round_trip(void **state) {
  (void)state;
  char owner[33], label[16];
  char *v = dlock__consul_value(OWNER, "host:42");
  assert_string_equal(v, OWNER "\nhost:42");
  dlock__consul_value_split(v, strlen(v), owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, OWNER);
  assert_string_equal(label, "host:42");
  free(v);
  v = dlock__consul_value("o", NULL);
  assert_string_equal(v, "o\n");
  free(v);

  /* `consul lock` writes no value; parse_kv gives "" for it. */
  strcpy(owner, "x");
  strcpy(label, "y");
  dlock__consul_value_split("", 0, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  assert_string_equal(label, "");
  strcpy(owner, "x");
  strcpy(label, "y");
  dlock__consul_value_split(NULL, 0, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  assert_string_equal(label, "");
  strcpy(owner, "x");
  dlock__consul_value_split("no newline", 10, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  assert_string_equal(label, "");

  /* The first newline splits; the label keeps later ones. */
  dlock__consul_value_split("o\nl1\nl2", 7, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "o");
  assert_string_equal(label, "l1\nl2");
  dlock__consul_value_split("\nl", 2, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  assert_string_equal(label, "l");
  /* N bounds the value, which need not be terminated. */
  dlock__consul_value_split("own\nlabel-and-more", 9, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "own");
  assert_string_equal(label, "label");
  /* A newline past N does not count. */
  strcpy(owner, "x");
  dlock__consul_value_split("own\nl", 3, owner, sizeof owner, label, sizeof label);
  assert_string_equal(owner, "");
  /* Truncated to the buffers. */
  char o4[4], l4[4];
  dlock__consul_value_split("abcdef\nghijkl", 13, o4, sizeof o4, l4, sizeof l4);
  assert_string_equal(o4, "abc");
  assert_string_equal(l4, "ghi");
}

/* ---- request bodies ---- */

static void req_session_body(void **state) {
  (void)state;
  /* The exact body the agent was given; session/info then showed
   * "NodeChecks":[] and LockDelay 1500000000. */
  char *s = dlock__consul_req_session("dlock test", 15, 1500);
  assert_string_equal(s, "{\"Name\":\"dlock test\",\"TTL\":\"15s\",\"LockDelay\":\"1500ms\","
                         "\"Behavior\":\"release\",\"Checks\":[]}");
  cJSON *j = parse_body(s);
  free(s);
  assert_int_equal(cJSON_GetArraySize(j), 5);
  const cJSON *checks = item(j, "Checks");
  assert_true(cJSON_IsArray(checks));
  assert_int_equal(cJSON_GetArraySize(checks), 0);
  assert_null(cJSON_GetObjectItemCaseSensitive(j, "NodeChecks"));
  assert_string_equal(str(j, "Behavior"), "release");
  cJSON_Delete(j);

  /* Names are escaped; the agent's TTL bounds are its own business. */
  j = parse_body(s = dlock__consul_req_session("q\"b\\s\nn/é", 86400, 0));
  free(s);
  assert_string_equal(str(j, "Name"), "q\"b\\s\nn/é");
  assert_string_equal(str(j, "TTL"), "86400s");
  assert_string_equal(str(j, "LockDelay"), "0ms");
  assert_int_equal(dlock__consul_duration_ms(str(j, "TTL")), 86400000);
  assert_int_equal(dlock__consul_duration_ms(str(j, "LockDelay")), 0);
  cJSON_Delete(j);
  j = parse_body(s = dlock__consul_req_session("", 10, 60000));
  free(s);
  assert_string_equal(str(j, "Name"), "");
  assert_string_equal(str(j, "LockDelay"), "60000ms");
  cJSON_Delete(j);
}

static void req_lock_body(void **state) {
  (void)state;
  char *raw = dlock__consul_req_lock("dlock/build%2Fx/.lock", SID_A, OWNER "\nhost:42");
  assert_non_null(raw);
  /* The flag as digits: through a double it would end in ...320. */
  static const char flags_text[] = "\"Flags\":" FLAG_TEXT;
  const char *f = strstr(raw, flags_text);
  assert_non_null(f);
  char after = f[sizeof flags_text - 1];
  assert_false(after >= '0' && after <= '9');
  assert_null(strstr(f + 1, "\"Flags\""));
  assert_null(strstr(raw, "e+18"));

  cJSON *j = parse_body(raw);
  free(raw);
  assert_true(cJSON_IsArray(j));
  assert_int_equal(cJSON_GetArraySize(j), 2);
  const cJSON *lock = txn_op(j, 0);
  assert_int_equal(cJSON_GetArraySize(lock), 5);
  assert_string_equal(str(lock, "Verb"), "lock");
  assert_string_equal(str(lock, "Key"), "dlock/build%2Fx/.lock");
  assert_string_equal(str(lock, "Session"), SID_A);
  assert_string_equal(str(lock, "Value"),
                      "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYKaG9zdDo0Mg==");
  const cJSON *flags = item(lock, "Flags");
  assert_true(cJSON_IsNumber(flags));
  assert_true(flags->valuedouble == (double)DLOCK__CONSUL_LOCK_FLAG);
  const cJSON *get = txn_op(j, 1);
  assert_int_equal(cJSON_GetArraySize(get), 2);
  assert_string_equal(str(get, "Verb"), "get");
  assert_string_equal(str(get, "Key"), "dlock/build%2Fx/.lock");
  cJSON_Delete(j);

  /* Keys and values that need JSON escaping. */
  j = parse_body(raw = dlock__consul_req_lock("dlock/q\"\\\t✓/.lock", "s", "o\nl"));
  free(raw);
  assert_string_equal(str(txn_op(j, 0), "Key"), "dlock/q\"\\\t✓/.lock");
  assert_string_equal(str(txn_op(j, 1), "Key"), "dlock/q\"\\\t✓/.lock");
  assert_string_equal(str(txn_op(j, 0), "Value"), "bwps");
  cJSON_Delete(j);
  j = parse_body(raw = dlock__consul_req_lock("k", "s", ""));
  free(raw);
  assert_string_equal(str(txn_op(j, 0), "Value"), "");
  cJSON_Delete(j);
}

static void req_check_body(void **state) {
  (void)state;
  const char *keys[DLOCK__CONSUL_TXN_MAX + 1], *sids[DLOCK__CONSUL_TXN_MAX + 1];
  char kb[DLOCK__CONSUL_TXN_MAX + 1][16];
  for (size_t i = 0; i <= DLOCK__CONSUL_TXN_MAX; i++) {
    snprintf(kb[i], sizeof kb[i], "k%zu/.lock", i);
    keys[i] = kb[i];
    sids[i] = i % 2 ? SID_A : SID_B;
  }
  char *raw = dlock__consul_req_check(keys, sids, 3);
  cJSON *j = parse_body(raw);
  free(raw);
  assert_int_equal(cJSON_GetArraySize(j), 3);
  for (int i = 0; i < 3; i++) {
    const cJSON *c = txn_op(j, i);
    assert_int_equal(cJSON_GetArraySize(c), 3);
    assert_string_equal(str(c, "Verb"), "check-session");
    assert_string_equal(str(c, "Key"), keys[i]);
    assert_string_equal(str(c, "Session"), sids[i]);
  }
  cJSON_Delete(j);

  raw = dlock__consul_req_check(keys, sids, DLOCK__CONSUL_TXN_MAX);
  j = parse_body(raw);
  free(raw);
  assert_int_equal(cJSON_GetArraySize(j), DLOCK__CONSUL_TXN_MAX);
  assert_string_equal(str(txn_op(j, DLOCK__CONSUL_TXN_MAX - 1), "Key"),
                      keys[DLOCK__CONSUL_TXN_MAX - 1]);
  cJSON_Delete(j);
  /* Past the limit there is no body rather than a shorter one. */
  assert_null(dlock__consul_req_check(keys, sids, DLOCK__CONSUL_TXN_MAX + 1));
  /* The agent answers an empty txn with 200 and no results. */
  raw = dlock__consul_req_check(keys, sids, 0);
  assert_string_equal(raw, "[]");
  free(raw);
}

/* ---- base64, through the bodies and answers that carry it ---- */

static void b64_all_bytes(void **state) {
  (void)state;
  /* Encoding: a value holding every byte but NUL. */
  char all[256];
  for (int i = 1; i < 256; i++)
    all[i - 1] = (char)i;
  all[255] = '\0';
  char *raw = dlock__consul_req_lock("k", "s", all);
  cJSON *j = parse_body(raw);
  free(raw);
  assert_string_equal(str(txn_op(j, 0), "Value"), b64_1to255);
  cJSON_Delete(j);

  /* Decoding: every byte, NUL included. */
  dlock__consul_kv kv;
  assert_int_equal(kv_with_value(b64_all256, &kv), 0);
  assert_int_equal(kv.valuelen, 256);
  for (int i = 0; i < 256; i++)
    assert_int_equal((unsigned char)kv.value[i], i);
  assert_int_equal(kv.value[256], '\0');
  dlock__consul_kv_free(&kv);

  /* Each padding length, both ways: what req_lock writes, parse_kv reads. */
  const char *const vals[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xff\xfe",
                                     "+/?>", all + 250};
  static const char *const enc[] = {"",     "Zg==",     "Zm8=",     "Zm9v",  "Zm9vYg==",
                                    "Zm9vYmE=", "Zm9vYmFy", "//4=", "Ky8/Pg==", "+/z9/v8="};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    j = parse_body(raw = dlock__consul_req_lock("k", "s", vals[i]));
    free(raw);
    const char *e = str(txn_op(j, 0), "Value");
    assert_string_equal(e, enc[i]);
    assert_int_equal(kv_with_value(e, &kv), 0);
    assert_int_equal(kv.valuelen, strlen(vals[i]));
    assert_string_equal(kv.value, vals[i]);
    dlock__consul_kv_free(&kv);
    cJSON_Delete(j);
  }
}

static void b64_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "Zg",       "Zg=",      "Z",        "Z===",     "====",     "Zm9v!",     "Zm=v",
      "Zg==Zg==", "Zm9v\\n",  "Zm9 v",    "Zm9v====", "Zm9vY-==", "Zm9vY_==",  "=Zm9",
      "Zm9\\u0000", "\\u00e9AAA",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dlock__consul_kv kv;
    int rc = kv_with_value(bad[i], &kv);
    if (rc != DLOCK_EBACKEND)
      fail_msg("'%s' decoded (rc %d)", bad[i], rc);
    assert_null(kv.value);
    assert_int_equal(kv.valuelen, 0);
    assert_msg_has("base64");
    dlock__consul_kv_free(&kv);
  }
  /* Inside a txn answer too, and the answer is still freeable. */
  static const char body[] = "{\"Results\":[{\"KV\":{\"Key\":\"a\",\"Value\":\"bwps\"}},"
                             "{\"KV\":{\"Key\":\"b\",\"Value\":\"b!ps\"}}],\"Errors\":null}";
  dlock__consul_txn t;
  assert_int_equal(dlock__consul_parse_txn(200, body, strlen(body), &t), DLOCK_EBACKEND);
  assert_msg_has("base64");
  dlock__consul_txn_free(&t);
  assert_null(t.results);
  assert_int_equal(t.nresults, 0);
}

/* ---- txn answers ---- */

static void assert_held_kv(const dlock__consul_kv *kv) {
  assert_string_equal(kv->key, "dlock/build%2Fx/.lock");
  assert_string_equal(kv->session, SID_A);
  assert_int_equal(kv->create_index, 21);
  assert_int_equal(kv->modify_index, 21);
  assert_int_equal(kv->lock_index, 1);
  assert_true(kv->lock_flag);
  assert_true(kv->has_flags);
}

static void txn_lock_taken(void **state) {
  (void)state;
  dlock__consul_txn t;
  parse_txn_ok(200, fx_txn_lock_200, &t);
  assert_int_equal(t.nresults, 2);
  assert_int_equal(t.nerr, 0);
  assert_null(t.err_op);
  assert_true(t.found[0]);
  assert_true(t.found[1]);
  assert_held_kv(&t.results[0]);
  assert_held_kv(&t.results[1]);
  /* The lock result comes without its value. */
  assert_non_null(t.results[0].value);
  assert_string_equal(t.results[0].value, "");
  assert_int_equal(t.results[0].valuelen, 0);
  assert_int_equal(t.results[1].valuelen, 32 + 1 + 7);
  char owner[33], label[64];
  dlock__consul_value_split(t.results[1].value, t.results[1].valuelen, owner, sizeof owner,
                            label, sizeof label);
  assert_string_equal(owner, OWNER);
  assert_string_equal(label, "host:42");
  dlock__consul_txn_free(&t);
  assert_null(t.results);
  assert_int_equal(t.nresults, 0);
  /* Freeing twice is harmless. */
  dlock__consul_txn_free(&t);
  dlock__consul_txn_free(NULL);
}

static void txn_lock_conflicts(void **state) {
  (void)state;
  static const struct {
    const char *body, *msg;
  } cases[] = {
      {fx_txn_lock_409, "failed to lock key \"dlock/build%2Fx/.lock\", lock is already held"},
      {fx_txn_lock_delay, "failed to lock key \"dlock/build%2Fx/.lock\" due to lock delay"},
      {fx_txn_lock_invalid, "invalid session \"00000000-0000-0000-0000-000000000000\""},
      {fx_txn_lock_409_dev, "failed to lock key \"dlock/build/.lock\", lock is already held"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dlock__consul_txn t;
    memset(&t, 0x5a, sizeof t);
    parse_txn_ok(409, cases[i].body, &t);
    assert_int_equal(t.nresults, 0);
    assert_null(t.results);
    assert_null(t.found);
    assert_int_equal(t.nerr, 1);
    assert_int_equal(t.err_op[0], 0);
    assert_string_equal(t.msg, cases[i].msg);
    dlock__consul_txn_free(&t);
  }
}

static void txn_checks(void **state) {
  (void)state;
  dlock__consul_txn t;
  parse_txn_ok(200, fx_txn_check_200, &t);
  assert_int_equal(t.nresults, 1);
  assert_int_equal(t.nerr, 0);
  assert_true(t.found[0]);
  assert_held_kv(&t.results[0]);
  assert_string_equal(t.results[0].value, "");
  assert_string_equal(t.msg, "");
  dlock__consul_txn_free(&t);

  parse_txn_ok(409, fx_txn_check_409, &t);
  assert_int_equal(t.nresults, 0);
  assert_int_equal(t.nerr, 1);
  assert_int_equal(t.err_op[0], 0);
  assert_string_equal(t.msg, "failed session check for key \"dlock/build%2Fx/.lock\", current "
                             "session \"" SID_A "\" != \"" SID_B "\"");
  dlock__consul_txn_free(&t);

  /* Every failed operation, in order; MSG is the first one's. */
  parse_txn_ok(409, fx_txn_check3_409, &t);
  assert_int_equal(t.nerr, 2);
  assert_int_equal(t.err_op[0], 1);
  assert_int_equal(t.err_op[1], 2);
  assert_string_equal(t.msg, "failed session check for key \"dlock/é ✓?#/.lock\", current "
                             "session \"" SID_A "\" != \"" SID_B "\"");
  dlock__consul_txn_free(&t);

  /* An empty transaction. */
  static const char empty[] = "{\"Results\":[],\"Errors\":null,\"Index\":1,\"KnownLeader\":true}";
  parse_txn_ok(200, empty, &t);
  assert_int_equal(t.nresults, 0);
  assert_int_equal(t.nerr, 0);
  dlock__consul_txn_free(&t);

  /* A result that is not a KV leaves its slot empty. */
  static const char mixed[] =
      "{\"Results\":[{\"Node\":{\"Node\":\"n\"}},{\"KV\":{\"Key\":\"k\",\"Value\":\"bwps\","
      "\"Flags\":0}}],\"Errors\":null}";
  parse_txn_ok(200, mixed, &t);
  assert_int_equal(t.nresults, 2);
  assert_false(t.found[0]);
  assert_true(t.found[1]);
  assert_string_equal(t.results[1].key, "k");
  assert_string_equal(t.results[1].value, "o\nl");
  assert_string_equal(t.results[1].session, "");
  assert_false(t.results[1].has_flags);
  dlock__consul_txn_free(&t);

  /* A long message is cut, not overrun. */
  char big[600];
  int n = snprintf(big, sizeof big, "{\"Results\":null,\"Errors\":[{\"OpIndex\":3,\"What\":\"");
  memset(big + n, 'w', 400);
  strcpy(big + n + 400, "\"}]}");
  parse_txn_ok(409, big, &t);
  assert_int_equal(t.err_op[0], 3);
  assert_int_equal(strlen(t.msg), sizeof t.msg - 1);
  dlock__consul_txn_free(&t);

  /* An operation index that is not a whole number names no operation
   * (truncated, 0.5 would blame operation 0). */
  static const char frac[] =
      "{\"Results\":null,\"Errors\":[{\"OpIndex\":0.5,\"What\":\"x\"},{\"OpIndex\":-1,"
      "\"What\":\"y\"},{\"OpIndex\":1e300,\"What\":\"z\"},{\"OpIndex\":\"1\",\"What\":\"w\"},"
      "{\"OpIndex\":2,\"What\":\"v\"}]}";
  parse_txn_ok(409, frac, &t);
  assert_int_equal(t.nerr, 5);
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(t.err_op[i], -1);
  assert_int_equal(t.err_op[4], 2);
  dlock__consul_txn_free(&t);
}

/* What release, inspect and a waiter send and read for keys the agent
 * refuses in a path. */
static void txn_unlock_and_get(void **state) {
  (void)state;
  const char *key = "ctest/a" ZWSP "b/.lock";
  char *raw = dlock__consul_req_unlock(key, SID_A);
  assert_non_null(raw);
  /* The flag as digits, exactly: a double would change it. */
  assert_string_equal(raw, "[{\"KV\":{\"Verb\":\"unlock\",\"Key\":\"ctest/a" ZWSP
                           "b/.lock\",\"Session\":\"" SID_A "\",\"Flags\":" FLAG_TEXT "}}]");
  free(raw);
  raw = dlock__consul_req_get(key);
  assert_string_equal(raw, "[{\"KV\":{\"Verb\":\"get-tree\",\"Key\":\"ctest/a" ZWSP "b/.lock\"}}]");
  free(raw);
  /* Control bytes go into the body as JSON escapes, which the agent reads
   * back to the same key. */
  raw = dlock__consul_req_get("k\x01\x1f\x7f/.lock");
  assert_string_equal(raw, "[{\"KV\":{\"Verb\":\"get-tree\",\"Key\":\"k\\u0001\\u001f\x7f/.lock\"}}]");
  free(raw);

  dlock__consul_txn t;
  parse_txn_ok(200, fx_txn_get_held, &t);
  assert_int_equal(t.nresults, 2);
  const dlock__consul_kv *kv = dlock__consul_txn_find(&t, key);
  assert_non_null(kv);
  assert_ptr_equal(kv, &t.results[0]);
  assert_string_equal(kv->session, SID_A);
  assert_string_equal(kv->value, "x\ny");
  assert_int_equal(kv->modify_index, 5176);
  /* The tree holds keys that only start with KEY; they are not KEY. */
  assert_ptr_equal(dlock__consul_txn_find(&t, "ctest/a" ZWSP "b/.lockx"), &t.results[1]);
  assert_null(dlock__consul_txn_find(&t, "ctest/a" ZWSP "b/.loc"));
  assert_null(dlock__consul_txn_find(&t, "ctest/a" ZWSP "b/.lockxx"));
  dlock__consul_txn_free(&t);
  parse_txn_ok(200, fx_txn_get_none, &t);
  assert_null(dlock__consul_txn_find(&t, key));
  dlock__consul_txn_free(&t);

  parse_txn_ok(409, fx_txn_unlock_409, &t);
  assert_int_equal(t.nerr, 1);
  assert_int_equal(t.err_op[0], 0);
  assert_non_null(strstr(t.msg, "lock isn't held"));
  dlock__consul_txn_free(&t);
  parse_txn_ok(200, fx_txn_unlock_200, &t);
  kv = dlock__consul_txn_find(&t, key);
  assert_non_null(kv);
  assert_string_equal(kv->session, "");
  assert_true(kv->lock_flag); /* the unlock kept the flag */
  assert_int_equal(kv->modify_index, 5178);
  dlock__consul_txn_free(&t);
}

/* Where a waiter blocks: the key's path, or a listing of its printable
 * prefix. */
static void watch_paths(void **state) {
  (void)state;
  assert_int_equal(dlock__consul_printable_prefix("dlock/a b~/.lock"), 16);
  assert_int_equal(dlock__consul_printable_prefix("dlock/a" ZWSP "b/.lock"), 7);
  assert_int_equal(dlock__consul_printable_prefix("dlock/a\x01" "b"), 7);
  assert_int_equal(dlock__consul_printable_prefix("dlock/a\x7f" "b"), 7);
  assert_int_equal(dlock__consul_printable_prefix("dlock/\xc3\xa9"), 6);
  assert_int_equal(dlock__consul_printable_prefix("\x1f"), 0);
  assert_int_equal(dlock__consul_printable_prefix(""), 0);
  char *p = dlock__consul_watch_path("dlock/a" ZWSP "b/.lock", 1, "index=7&wait=100ms");
  assert_string_equal(p, "/v1/kv/dlock%2Fa%E2%80%8Bb%2F%2Elock?index=7&wait=100ms");
  free(p);
  p = dlock__consul_watch_path("dlock/a" ZWSP "b/.lock", 0, "index=7&wait=100ms");
  assert_string_equal(p, "/v1/kv/dlock%2Fa?keys&separator=/&index=7&wait=100ms");
  free(p);
  p = dlock__consul_watch_path("dlock/x.y/.lock", 0, "consistent");
  assert_string_equal(p, "/v1/kv/dlock%2Fx%2Ey%2F%2Elock?keys&separator=/&consistent");
  free(p);
  /* Nothing printable at all: the whole store is the prefix. */
  p = dlock__consul_watch_path(ZWSP "/.lock", 0, "consistent");
  assert_string_equal(p, "/v1/kv/?keys&separator=/&consistent");
  free(p);
}

/* X-Consul-Index as libcurl hands it over: a header line with its CRLF
 * and no NUL. */
static int header_index(const char *line, uint64_t *v) {
  /* A copy without the NUL, so that reading past N shows under ASan. */
  size_t n = strlen(line);
  char *b = malloc(n ? n : 1);
  assert_non_null(b);
  memcpy(b, line, n);
  int rc = dlock__consul_header_index(b, n, v);
  free(b);
  return rc;
}

static void index_header(void **state) {
  (void)state;
  static const struct {
    const char *line;
    uint64_t want;
  } good[] = {
      {"X-Consul-Index: 5180\r\n", 5180},
      {"x-consul-index:5180", 5180},
      {"X-CONSUL-INDEX: \t42 \t\r\n", 42},
      {"X-Consul-Index: 1\r\n", 1},
      {"X-Consul-Index: 9007199254740993\r\n", UINT64_C(9007199254740993)},
      {"X-Consul-Index: 18446744073709551615\r\n", UINT64_MAX},
      {"X-Consul-Index: 0018\r\n", 18},
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    uint64_t v = 0;
    int rc = header_index(good[i].line, &v);
    if (rc != 1 || v != good[i].want)
      fail_msg("'%s': rc %d, %llu", good[i].line, rc, (unsigned long long)v);
  }
  static const char *const bad[] = {
      "X-Consul-Index: -1\r\n",
      "X-Consul-Index: +5\r\n",
      "X-Consul-Index: \r\n",
      "X-Consul-Index:",
      "X-Consul-Index:    \t\r\n",
      "X-Consul-Index: 0\r\n",
      "X-Consul-Index: 18446744073709551616\r\n",
      "X-Consul-Index: 99999999999999999999999\r\n",
      "X-Consul-Index: 12a\r\n",
      "X-Consul-Index: 1 2\r\n",
      "X-Consul-Index: 0x10\r\n",
      "X-Consul-Index: 1e3\r\n",
      "X-Consul-Index: 5,6\r\n",
      "X-Consul-Index: \"5\"\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 77;
    int rc = header_index(bad[i], &v);
    if (rc != DLOCK_EBACKEND || v != 77)
      fail_msg("'%s': rc %d, %llu", bad[i], rc, (unsigned long long)v);
    assert_msg_has("X-Consul-Index");
  }
  static const char *const other[] = {
      "X-Consul-Knownleader: true\r\n", "X-Consul-Indexes: 5\r\n", "X-Consul-Index 5\r\n",
      "HTTP/1.1 200 OK\r\n", "\r\n", "", "X-Consul-Inde",
  };
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
    uint64_t v = 77;
    if (header_index(other[i], &v) != 0 || v != 77)
      fail_msg("'%s' taken for the index", other[i]);
  }
  /* N bounds the line: the digits after it are not read. */
  static const char longer[] = "X-Consul-Index: 12345";
  uint64_t v = 0;
  assert_int_equal(dlock__consul_header_index(longer, strlen(longer) - 3, &v), 1);
  assert_int_equal(v, 12);
  assert_int_equal(dlock__consul_header_index(NULL, 0, &v), 0);
}

static void txn_rejects(void **state) {
  (void)state;
  static const struct {
    int status;
    const char *body, *msg;
  } cases[] = {
      {413, fx_txn_413, "too many operations (129 > 128)"},
      {500, "rpc error making call: No cluster leader\n", "No cluster leader"},
      {403, "Permission denied", "403"},
      {200, "", "txn"},
      {200, "<html>bad gateway</html>", "<html>"},
      {200, "[]", "txn"},
      {200, "{\"Results\":{},\"Errors\":null}", "txn"},
      {200, "{\"Results\":null,\"Errors\":{}}", "txn"},
      {200, "{\"Results\":[{\"KV\":{\"Key\":\"k\",\"Value\":7}}],\"Errors\":null}", "Value"},
      {200, "{\"Results\":[{\"KV\":[]}],\"Errors\":null}", "not an object"},
      {409, "{\"Results\":null,\"Errors\":null}", "conflict"},
      {409, "{\"Results\":null,\"Errors\":[]}", "conflict"},
      {409, "{\"Results\":null,\"Errors\":[{\"OpIndex\":0", "txn"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dlock__consul_txn t;
    int rc = dlock__consul_parse_txn(cases[i].status, cases[i].body, strlen(cases[i].body), &t);
    if (rc != DLOCK_EBACKEND)
      fail_msg("case %zu accepted (rc %d)", i, rc);
    assert_msg_has(cases[i].msg);
    dlock__consul_txn_free(&t);
  }
  /* No body at all. */
  dlock__consul_txn t;
  assert_int_equal(dlock__consul_parse_txn(502, NULL, 0, &t), DLOCK_EBACKEND);
  assert_msg_has("HTTP 502");
  assert_int_equal(dlock__consul_parse_txn(200, NULL, 0, &t), DLOCK_EBACKEND);
  /* LEN bounds the body: a cut-off answer is refused. */
  assert_int_equal(dlock__consul_parse_txn(200, fx_txn_lock_200, strlen(fx_txn_lock_200) - 2, &t),
                   DLOCK_EBACKEND);
  dlock__consul_txn_free(&t);
}

/* ---- KV answers ---- */

static void kv_answers(void **state) {
  (void)state;
  dlock__consul_kv kv;
  assert_int_equal(dlock__consul_parse_kv(fx_kv_held, strlen(fx_kv_held), &kv), 0);
  assert_held_kv(&kv);
  assert_int_equal(kv.valuelen, 40);
  assert_string_equal(kv.value, OWNER "\nhost:42");
  dlock__consul_kv_free(&kv);
  assert_null(kv.value);
  dlock__consul_kv_free(&kv);

  /* Released: no Session member at all, null Value. */
  assert_int_equal(dlock__consul_parse_kv(fx_kv_released, strlen(fx_kv_released), &kv), 0);
  assert_string_equal(kv.session, "");
  assert_string_equal(kv.value, "");
  assert_int_equal(kv.valuelen, 0);
  assert_int_equal(kv.modify_index, 25);
  assert_true(kv.lock_flag);
  dlock__consul_kv_free(&kv);

  assert_int_equal(dlock__consul_parse_kv(fx_kv_after_destroy, strlen(fx_kv_after_destroy), &kv),
                   0);
  assert_string_equal(kv.session, "");
  assert_string_equal(kv.value, "x\ny");
  assert_int_equal(kv.lock_index, 2);
  dlock__consul_kv_free(&kv);

  /* `consul lock`'s own key: same flag, no value. */
  assert_int_equal(dlock__consul_parse_kv(fx_kv_consul_lock, strlen(fx_kv_consul_lock), &kv), 0);
  assert_string_equal(kv.key, "dlock/ctest/.lock");
  assert_string_equal(kv.session, "56aa8900-0e3a-4f3b-7d6a-698b4af78186");
  assert_true(kv.lock_flag);
  assert_string_equal(kv.value, "");
  dlock__consul_kv_free(&kv);

  assert_int_equal(dlock__consul_parse_kv(fx_kv_unicode, strlen(fx_kv_unicode), &kv), 0);
  assert_string_equal(kv.key, "dlock/é ✓?#/.lock");
  assert_string_equal(kv.value, "o\nl");
  dlock__consul_kv_free(&kv);

  assert_int_equal(dlock__consul_parse_kv(fx_kv_flags_zero, strlen(fx_kv_flags_zero), &kv), 0);
  assert_false(kv.lock_flag);
  assert_false(kv.has_flags);
  dlock__consul_kv_free(&kv);
}

static void kv_flags(void **state) {
  (void)state;
  static const struct {
    const char *flags;
    int lock_flag, has_flags;
  } cases[] = {
      {FLAG_TEXT, 1, 1},
      /* The same double: the contract's accepted imprecision. */
      {"3304740253564472320", 1, 1},
      {"3304740253564471000", 0, 1},
      {"1", 0, 1},
      {"0", 0, 0},
      {"18446744073709551615", 0, 1},
      {"\"" FLAG_TEXT "\"", 0, 0}, /* not a number */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *body = NULL;
    if (asprintf(&body, "[{\"Key\":\"k\",\"Flags\":%s}]", cases[i].flags) < 0)
      fail();
    dlock__consul_kv kv;
    assert_int_equal(dlock__consul_parse_kv(body, strlen(body), &kv), 0);
    if (kv.lock_flag != cases[i].lock_flag || kv.has_flags != cases[i].has_flags)
      fail_msg("Flags %s: lock_flag %d has_flags %d", cases[i].flags, kv.lock_flag,
               kv.has_flags);
    dlock__consul_kv_free(&kv);
    free(body);
  }
}

static void kv_fields(void **state) {
  (void)state;
  dlock__consul_kv kv;
  /* Absent members: all zero, value "". */
  static const char bare[] = "[{}]";
  assert_int_equal(dlock__consul_parse_kv(bare, strlen(bare), &kv), 0);
  assert_null(kv.key);
  assert_string_equal(kv.session, "");
  assert_string_equal(kv.value, "");
  assert_int_equal(kv.create_index + kv.modify_index + kv.lock_index, 0);
  assert_false(kv.has_flags);
  dlock__consul_kv_free(&kv);

  /* Indexes past 2^32, the last one a double holds exactly, and negative. */
  static const char idx[] = "[{\"CreateIndex\":4294967297,\"ModifyIndex\":9007199254740991,"
                            "\"LockIndex\":-1}]";
  assert_int_equal(dlock__consul_parse_kv(idx, strlen(idx), &kv), 0);
  assert_int_equal(kv.create_index, UINT64_C(4294967297));
  assert_int_equal(kv.modify_index, UINT64_C(9007199254740991));
  assert_int_equal(kv.lock_index, 0);
  dlock__consul_kv_free(&kv);
  /* From 2^53 on a double stands for several indexes: 2^53 + 1 reads as
   * 2^53, and a token one below the real one would pass for an older
   * holder's.  None of them is taken. */
  static const char big[] = "[{\"CreateIndex\":9007199254740992,\"ModifyIndex\":9007199254740993,"
                            "\"LockIndex\":18446744073709551615}]";
  assert_int_equal(dlock__consul_parse_kv(big, strlen(big), &kv), 0);
  assert_int_equal(kv.create_index + kv.modify_index + kv.lock_index, 0);
  dlock__consul_kv_free(&kv);
  static const char frac[] = "[{\"CreateIndex\":1.5,\"ModifyIndex\":\"7\",\"LockIndex\":1e300}]";
  assert_int_equal(dlock__consul_parse_kv(frac, strlen(frac), &kv), 0);
  assert_int_equal(kv.create_index + kv.modify_index + kv.lock_index, 0);
  dlock__consul_kv_free(&kv);

  /* Keys come back whole however long: the lock key of a 512-byte key of
   * '/' is over 1.5 KB, and a cut one would match another key. */
  char *body = malloc(5000);
  assert_non_null(body);
  int n = snprintf(body, 5000, "[{\"Key\":\"");
  memset(body + n, 'k', 4000);
  strcpy(body + n + 4000, "\"}]");
  assert_int_equal(dlock__consul_parse_kv(body, strlen(body), &kv), 0);
  assert_int_equal(strlen(kv.key), 4000);
  assert_int_equal(kv.keylen, 4000);
  dlock__consul_kv_free(&kv);
  free(body);

  /* Sessions are UUIDs; one that does not fit is refused, not cut. */
  char sess[DLOCK_CONSUL_SESSION_MAX + 1];
  memset(sess, 's', DLOCK_CONSUL_SESSION_MAX - 1);
  sess[DLOCK_CONSUL_SESSION_MAX - 1] = '\0';
  if (asprintf(&body, "[{\"Session\":\"%s\"}]", sess) < 0)
    fail();
  assert_int_equal(dlock__consul_parse_kv(body, strlen(body), &kv), 0);
  assert_string_equal(kv.session, sess);
  dlock__consul_kv_free(&kv);
  free(body);
  strcat(sess, "s");
  if (asprintf(&body, "[{\"Session\":\"%s\"}]", sess) < 0)
    fail();
  assert_int_equal(dlock__consul_parse_kv(body, strlen(body), &kv), DLOCK_EBACKEND);
  assert_msg_has("session");
  dlock__consul_kv_free(&kv);
  free(body);
}

static void kv_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "null",
      "[]",
      "{}",
      "{\"Key\":\"k\"}",
      "[{\"Key\":\"a\"},{\"Key\":\"b\"}]",
      "[1]",
      "[{\"Key\":\"k\",\"Value\":7}]",
      "[{\"Key\":\"k\",\"Value\":\"bwps\"",
      "Session id 'x' not found",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dlock__consul_kv kv;
    memset(&kv, 0x5a, sizeof kv);
    int rc = dlock__consul_parse_kv(bad[i], strlen(bad[i]), &kv);
    if (rc != DLOCK_EBACKEND)
      fail_msg("'%s' accepted (rc %d)", bad[i], rc);
    assert_null(kv.value);
    dlock__consul_kv_free(&kv);
  }
  dlock__consul_kv kv;
  assert_int_equal(dlock__consul_parse_kv(NULL, 0, &kv), DLOCK_EBACKEND);
  dlock__consul_kv_free(&kv);
}

/* ---- sessions ---- */

static void session_create(void **state) {
  (void)state;
  char id[DLOCK_CONSUL_SESSION_MAX];
  assert_int_equal(dlock__consul_parse_session(fx_session_create, strlen(fx_session_create), id),
                   0);
  assert_string_equal(id, SID_A);
  static const char dev[] = "{\n    \"ID\": \"da84b7b9-0b76-c475-96f7-f15f412ab143\"\n}";
  assert_int_equal(dlock__consul_parse_session(dev, strlen(dev), id), 0);
  assert_string_equal(id, "da84b7b9-0b76-c475-96f7-f15f412ab143");

  char body[128];
  char longid[DLOCK_CONSUL_SESSION_MAX + 1];
  memset(longid, 'a', DLOCK_CONSUL_SESSION_MAX - 1);
  longid[DLOCK_CONSUL_SESSION_MAX - 1] = '\0';
  snprintf(body, sizeof body, "{\"ID\":\"%s\"}", longid);
  assert_int_equal(dlock__consul_parse_session(body, strlen(body), id), 0);
  assert_string_equal(id, longid);

  strcat(longid, "a");
  snprintf(body, sizeof body, "{\"ID\":\"%s\"}", longid);
  const char *const bad[] = {
      body,
      "",
      "{}",
      "{\"ID\":\"\"}",
      "{\"ID\":7}",
      "[{\"ID\":\"" SID_A "\"}]",
      "Invalid Session TTL '9000000000', must be between [10s=24h0m0s]",
      "Request decode failed: time: invalid duration \"abc\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    strcpy(id, "untouched");
    int rc = dlock__consul_parse_session(bad[i], strlen(bad[i]), id);
    if (rc != DLOCK_EBACKEND)
      fail_msg("'%s' accepted (rc %d)", bad[i], rc);
    assert_string_equal(id, "untouched");
  }
  assert_msg_has("session create");
}

static void session_renew(void **state) {
  (void)state;
  int64_t ttl = 0;
  assert_int_equal(dlock__consul_parse_renew(fx_renew, strlen(fx_renew), &ttl), 0);
  assert_int_equal(ttl, 15000);
  ttl = 0;
  assert_int_equal(dlock__consul_parse_renew(fx_renew_dev, strlen(fx_renew_dev), &ttl), 0);
  assert_int_equal(ttl, 15000);

  /* The TTL is echoed as the session was created: "86400s", not "24h0m0s". */
  static const char day[] = "[{\"ID\":\"x\",\"TTL\":\"86400s\"}]";
  assert_int_equal(dlock__consul_parse_renew(day, strlen(day), &ttl), 0);
  assert_int_equal(ttl, 86400000);
  static const char go[] = "[{\"ID\":\"x\",\"TTL\":\"1m0s\"}]";
  assert_int_equal(dlock__consul_parse_renew(go, strlen(go), &ttl), 0);
  assert_int_equal(ttl, 60000);
  /* A session without a TTL (or one not understood) still renews. */
  static const char none[] = "[{\"ID\":\"x\",\"TTL\":\"\"}]";
  assert_int_equal(dlock__consul_parse_renew(none, strlen(none), &ttl), 0);
  assert_int_equal(ttl, -1);
  static const char absent[] = "[{\"ID\":\"x\"}]";
  ttl = 0;
  assert_int_equal(dlock__consul_parse_renew(absent, strlen(absent), &ttl), 0);
  assert_int_equal(ttl, -1);

  static const char *const bad[] = {
      fx_renew_404, "", "null", "[]", "{}", "[{}]", "[{\"ID\":\"a\"},{\"ID\":\"b\"}]", "[7]",
      "Missing session",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ttl = 0;
    int rc = dlock__consul_parse_renew(bad[i], strlen(bad[i]), &ttl);
    if (rc != DLOCK_EBACKEND)
      fail_msg("'%s' accepted (rc %d)", bad[i], rc);
    assert_int_equal(ttl, -1);
  }
  assert_msg_has("renew");
}

/* ---- scalars ---- */

static void durations(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t ms;
  } cases[] = {
      {"15s", 15000},
      {"1m0s", 60000},
      {"10ms", 10},
      {"500ms", 500},
      {"1500ms", 1500},
      {"1.5s", 1500},
      {"1h2m3.5s", 3723500},
      {"24h0m0s", 86400000},
      {"86400s", 86400000},
      {"0", 0},
      {"0s", 0},
      {"+5s", 5000},
      {"2h", 7200000},
      {"1m", 60000},
      {".5s", 500},
      {"1.s", 1000},
      {"0.0015s", 1},
      {"999us", 0},
      {"1000us", 1},
      {"1500000\xc2\xb5s", 1500},
      {"1500000\xce\xbcs", 1500},
      {"2000000ns", 2},
      {"1.999999999999999999999s", 1999},
      {"1h1h", 7200000},
      {"1ms1m", 60001},
      {"2562047h", INT64_C(2562047) * 3600000},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t got = dlock__consul_duration_ms(cases[i].s);
    if (got != cases[i].ms)
      fail_msg("\"%s\": %lld, want %lld", cases[i].s, (long long)got, (long long)cases[i].ms);
  }
  static const char *const bad[] = {
      "", "s", "15", "15x", "15 s", " 15s", "15s ", "-5s", "1.5.5s", ".s", "1e3s",
      "15S", "h", "5sm", "0x10s", "2562048h", "6000000h", "9223372036854775807h",
      "9223372036854775808ns", "99999999999999999999s", "9223372036854775807ns1ns",
      "+", "-0",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t got = dlock__consul_duration_ms(bad[i]);
    if (got != -1)
      fail_msg("\"%s\" gave %lld", bad[i], (long long)got);
  }
  assert_int_equal(dlock__consul_duration_ms(NULL), -1);
}

static void bools(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int want;
  } cases[] = {
      {"true", 1},   {"false", 0},  {"true\n", 1},   {" false\r\n", 0}, {"TRUE", -1},
      {"1", -1},     {"", -1},      {"tru", -1},     {"truex", -1},     {"\"true\"", -1},
      {"null", -1},  {"true false", -1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int got = dlock__consul_parse_bool(cases[i].s, strlen(cases[i].s));
    if (got != cases[i].want)
      fail_msg("\"%s\": %d, want %d", cases[i].s, got, cases[i].want);
  }
  /* LEN bounds the body. */
  assert_int_equal(dlock__consul_parse_bool("truex", 4), 1);
  assert_int_equal(dlock__consul_parse_bool("false", 4), -1);
  assert_int_equal(dlock__consul_parse_bool(NULL, 0), -1);
}

/* A release conditional on the key's ModifyIndex, which also removes the
 * key: a late one cannot undo a later lock of the same session, and a
 * released name leaves nothing. */
static void txn_release_at(void **state) {
  (void)state;
  char *raw = dlock__consul_req_release_at("ctest/k/.lock", SID_A, 42);
  assert_non_null(raw);
  assert_string_equal(raw, "[{\"KV\":{\"Verb\":\"check-session\",\"Key\":\"ctest/k/.lock\","
                           "\"Session\":\"" SID_A "\"}},{\"KV\":{\"Verb\":\"delete-cas\","
                           "\"Key\":\"ctest/k/.lock\",\"Index\":42}}]");
  free(raw);
  /* An index beyond a double's 2^53 goes as its digits. */
  raw = dlock__consul_req_release_at("k/.lock", SID_A, 9007199254740993ull);
  assert_non_null(strstr(raw, "\"Index\":9007199254740993}"));
  free(raw);
  /* Without an index there is nothing safe to send. */
  assert_null(dlock__consul_req_release_at("k/.lock", SID_A, 0));
}

/* GET /v1/session/info/<id>: whether the server knows the session. */
static void session_info(void **state) {
  (void)state;
  static const char one[] = "[{\"ID\":\"" SID_A "\",\"Name\":\"dlock\",\"TTL\":\"10s\"}]";
  assert_int_equal(dlock__consul_parse_session_info(one, sizeof one - 1, SID_A), 1);
  assert_int_equal(dlock__consul_parse_session_info("[]", 2, SID_A), 0);
  assert_int_equal(dlock__consul_parse_session_info("null", 4, SID_A), 0);
  /* Another session's record is not ours; anything else is no answer. */
  static const char other[] = "[{\"ID\":\"00000000-0000-0000-0000-000000000000\"}]";
  assert_true(dlock__consul_parse_session_info(other, sizeof other - 1, SID_A) != 1);
  assert_int_equal(dlock__consul_parse_session_info("{}", 2, SID_A), DLOCK_EBACKEND);
  assert_int_equal(dlock__consul_parse_session_info("[", 1, SID_A), DLOCK_EBACKEND);
}

/* A listing's lock keys read back as the caller's keys, other names under
 * the prefix are left out, and the sessions' TTLs are found by ID. */
static void key_of_and_session_ttls(void **state) {
  (void)state;
  static const char *const keys[] = {"jobs/42", "a%b", "x", "\xe2\x80\x8b"};
  char out[DLOCK_KEY_MAX + 1];
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    char *lk = dlock__consul_lock_key("dlock/", keys[i], strlen(keys[i]));
    assert_int_equal(dlock__consul_key_of("dlock/", lk, strlen(lk), out), strlen(keys[i]));
    assert_string_equal(out, keys[i]);
    free(lk);
  }
  static const char *const foreign[] = {"dlock/a/b/.lock", "dlock/a", "dlock/a%41/.lock",
                                        "other/a/.lock", "dlock//.lock"};
  for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++)
    if (dlock__consul_key_of("dlock/", foreign[i], strlen(foreign[i]), out) != 0)
      fail_msg("'%s' read back as a key", foreign[i]);
  const char *body = "[{\"ID\":\"a\",\"TTL\":\"15s\"},{\"ID\":\"c\",\"TTL\":\"1m0s\"},"
                     "{\"ID\":\"z\",\"TTL\":\"\"}]";
  const char *ids[] = {"a", "b", "c", "z"};
  int64_t ttl[4] = {7, 7, 7, 7};
  assert_int_equal(dlock__consul_parse_session_ttls(body, strlen(body), ids, 4, ttl), 0);
  assert_int_equal(ttl[0], 15000);
  assert_int_equal(ttl[1], 7); /* not listed: left as it was */
  assert_int_equal(ttl[2], 60000);
  assert_int_equal(ttl[3], -1);
  assert_int_equal(dlock__consul_parse_session_ttls("{}", 2, ids, 4, ttl), DLOCK_EBACKEND);
}

static const char fx_txn_tree_200[] =
    "{\"Results\":["
    "{\"KV\":{\"LockIndex\":2,\"Key\":\"dlock/z/.lock\",\"Flags\":0,\"Value\":null,"
    "\"Session\":\"" SID_A "\",\"CreateIndex\":9,\"ModifyIndex\":9}},"
    "{\"KV\":{\"LockIndex\":1,\"Key\":\"dlock/b/.lock\",\"Flags\":0,\"Value\":null,"
    "\"Session\":\"" SID_B "\",\"CreateIndex\":7,\"ModifyIndex\":7}},"
    "{\"KV\":{\"LockIndex\":1,\"Key\":\"dlock/c/.lock\",\"Flags\":0,\"Value\":null,"
    "\"CreateIndex\":5,\"ModifyIndex\":8}},"
    "{\"KV\":{\"LockIndex\":1,\"Key\":\"dlock/a/.lock\",\"Flags\":0,\"Value\":null,"
    "\"Session\":\"" SID_A "\",\"CreateIndex\":3,\"ModifyIndex\":3}}"
    "],\"Errors\":null,\"Index\":9,\"KnownLeader\":true}";

/* A renew pass reads the prefix's tree once and confirms each lock from
 * it: held only when its key is there under its own session. */
static void tree_holds(void **state) {
  (void)state;
  dlock__consul_txn t;
  parse_txn_ok(200, fx_txn_tree_200, &t);
  const char *keys[] = {"dlock/a/.lock", "dlock/b/.lock", "dlock/c/.lock", "dlock/d/.lock",
                        "dlock/a/.loc", "dlock/a/.lockx", "dlock/z/.lock", "dlock/a/.lock"};
  const char *sids[] = {SID_A, SID_A, SID_A, SID_A, SID_A, SID_A, SID_A, ""};
  int ok[8] = {7, 7, 7, 7, 7, 7, 7, 7};
  assert_int_equal(dlock__consul_tree_holds(&t, keys, sids, 8, ok), 0);
  const int want[8] = {1, 0, 0, 0, 0, 0, 1, 0};
  for (int i = 0; i < 8; i++)
    if (ok[i] != want[i])
      fail_msg("%s under %s: %d, want %d", keys[i], sids[i], ok[i], want[i]);
  dlock__consul_txn_free(&t);

  static const char empty[] = "{\"Results\":null,\"Errors\":null,\"Index\":1}";
  parse_txn_ok(200, empty, &t);
  ok[0] = 7;
  assert_int_equal(dlock__consul_tree_holds(&t, keys, sids, 1, ok), 0);
  assert_int_equal(ok[0], 0);
  dlock__consul_txn_free(&t);
}

/* The index decides whether a waiter pauses, not the time the query took:
 * a release that comes 1 ms after the waiter parks must be looked at at
 * once, where a pause of 50-100 ms used to follow it. */
static void pause_after_block(void **state) {
  (void)state;
  assert_int_equal(dlock__consul_pause_after_block(7, 8, 1000000), 0);
  assert_int_equal(dlock__consul_pause_after_block(7, 8, 0), 0);
  assert_int_equal(dlock__consul_pause_after_block(7, 1, 100), 0); /* a restored snapshot */
  assert_int_equal(dlock__consul_pause_after_block(7, 8, 60000000000), 0);
  assert_int_equal(dlock__consul_pause_after_block(7, 0, 1000000), 1);
  assert_int_equal(dlock__consul_pause_after_block(7, 0, 60000000000), 1);
  assert_int_equal(dlock__consul_pause_after_block(7, 7, 1000000), 1);
  assert_int_equal(dlock__consul_pause_after_block(7, 7, 4999999), 1);
  assert_int_equal(dlock__consul_pause_after_block(7, 7, 5000000), 0);
  assert_int_equal(dlock__consul_pause_after_block(0, 0, 1000000), 1); /* nothing to block on */
}

/* A refused lock followed by a look that finds the key free is first
 * taken for a release between the two (tried again at once: a pause of
 * 50-100 ms there was the tail of every contended handoff), and only
 * when it happens again for a lock-delay. */
static void pause_when_free(void **state) {
  (void)state;
  assert_int_equal(dlock__consul_pause_when_free(1), 0);
  assert_int_equal(dlock__consul_pause_when_free(2), 1);
  assert_int_equal(dlock__consul_pause_when_free(9), 1);
}

/* A wake-up that changed nothing about the key (another key under a
 * watched prefix was written) is followed by a pause, or a waiter would
 * send a round of requests for every write there. */
static void pause_unchanged(void **state) {
  (void)state;
  assert_int_equal(dlock__consul_pause_unchanged(SID_A, 7, SID_A, 7), 1);
  assert_int_equal(dlock__consul_pause_unchanged(SID_A, 7, SID_A, 9), 0); /* taken again */
  assert_int_equal(dlock__consul_pause_unchanged(SID_A, 7, SID_B, 7), 0);
  assert_int_equal(dlock__consul_pause_unchanged("", 0, SID_A, 7), 0);
  assert_int_equal(dlock__consul_pause_unchanged("", 0, "", 0), 1); /* nothing known, twice */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lock_key_escapes),
      cmocka_unit_test(key_of_and_session_ttls),
      cmocka_unit_test(lock_keys_never_nest),
      cmocka_unit_test(kv_path_every_byte),
      cmocka_unit_test(kv_path_round_trip),
      cmocka_unit_test(value_round_trip),
      cmocka_unit_test(req_session_body),
      cmocka_unit_test(req_lock_body),
      cmocka_unit_test(req_check_body),
      cmocka_unit_test(b64_all_bytes),
      cmocka_unit_test(b64_malformed),
      cmocka_unit_test(txn_lock_taken),
      cmocka_unit_test(txn_lock_conflicts),
      cmocka_unit_test(txn_checks),
      cmocka_unit_test(txn_rejects),
      cmocka_unit_test(txn_unlock_and_get),
      cmocka_unit_test(watch_paths),
      cmocka_unit_test(index_header),
      cmocka_unit_test(kv_answers),
      cmocka_unit_test(kv_flags),
      cmocka_unit_test(kv_fields),
      cmocka_unit_test(kv_rejects),
      cmocka_unit_test(session_create),
      cmocka_unit_test(session_renew),
      cmocka_unit_test(durations),
      cmocka_unit_test(bools),
      cmocka_unit_test(txn_release_at),
      cmocka_unit_test(session_info),
      cmocka_unit_test(pause_after_block),
      cmocka_unit_test(tree_holds),
      cmocka_unit_test(pause_when_free),
      cmocka_unit_test(pause_unchanged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
