/* etcd v3 gateway answers: the input is one body (or one watch-stream
 * line) and goes through every decoder.  Checked: numbers land within the
 * bounds etcd-codec.h promises (revisions 0..DLOCK__ETCD_REV_MAX, a txn's
 * at least 1; counts non-negative; TTLs at most DLOCK__ETCD_TTL_MAX_S),
 * decoded keys and values are NUL-terminated at their length, messages
 * fit their buffers, outputs stay as documented on failure, and base64
 * that decodes encodes back to the same bytes.  The input is also a store
 * key as a listing meets it: one that names a dlock key encodes back from
 * that key, a dlock key's holder key decodes back to it, and the listing's
 * and the break's request bodies are JSON for any bytes. */
#include <inttypes.h>

#include <cjson/cJSON.h>

#include "etcd_oracles.h"

static void check_txn(const char *b, size_t n) {
  dlock__etcd_txn t;
  memset(&t, 0x5a, sizeof t);
  etcd_check_txn(dlock__etcd_parse_txn(b, n, &t), &t);
}

static void check_leases(const char *b, size_t n) {
  int64_t id = 11, ttl = 22;
  etcd_check_grant(dlock__etcd_parse_grant(b, n, &id, &ttl), id, ttl);

  char msg[64];
  int rc = dlock__etcd_parse_keepalive(b, n, &ttl, msg, sizeof msg);
  FUZZ_CHECK(memchr(msg, '\0', sizeof msg), "keepalive message");
  etcd_check_keepalive(rc, ttl);
  char tiny[1] = {'x'};
  (void)dlock__etcd_parse_keepalive(b, n, &ttl, tiny, sizeof tiny);
  FUZZ_CHECK(tiny[0] == '\0', "keepalive message of one byte");

  int64_t ms = 33;
  int rc0;
  etcd_check_timetolive(dlock__etcd_parse_timetolive(b, n, &ms, NULL), ms);
  dlock__etcd_keys ks = {0};
  ms = 33;
  rc0 = dlock__etcd_parse_timetolive(b, n, &ms, &ks);
  etcd_check_timetolive(rc0, ms);
  etcd_check_lease_keys(rc0, &ks);

  char *tok = (char *)1;
  rc = dlock__etcd_parse_auth(b, n, &tok);
  etcd_check_auth(rc, tok);
}

static void check_errors(const char *b, size_t n, int status, size_t msglen) {
  char msg[300];
  memset(msg, 'x', sizeof msg);
  enum dlock__etcd_fault f = dlock__etcd_error(status, b, n, msg, msglen);
  FUZZ_CHECK(f >= DLOCK__ETCD_F_NONE && f <= DLOCK__ETCD_F_OTHER, "fault %d", (int)f);
  if (msglen)
    FUZZ_CHECK(memchr(msg, '\0', msglen), "error message overruns %zu bytes", msglen);
  for (size_t i = msglen; i < sizeof msg; i++)
    FUZZ_CHECK(msg[i] == 'x', "error message written past %zu bytes", msglen);
  int code = dlock__etcd_fault_code(f);
  FUZZ_CHECK(f == DLOCK__ETCD_F_NONE ? code <= 0 : code < 0, "fault code %d", code);
}

static void check_watch(const char *b, size_t n) {
  dlock__etcd_watch_ev ev;
  memset(&ev, 0x5a, sizeof ev);
  etcd_check_watch(dlock__etcd_parse_watch(b, n, &ev), &ev);
}

static void check_b64(const char *b, size_t n) {
  char *out = NULL;
  size_t ol = 0;
  int rc = dlock__b64_decode("etcd", b, n, &out, &ol);
  if (rc != 0) {
    FUZZ_CHECK(rc == DLOCK_EBACKEND || rc == DLOCK_ENOMEM, "unb64 rc %d", rc);
    return;
  }
  FUZZ_CHECK(out && out[ol] == '\0' && ol <= n, "unb64 output");
  char *enc = dlock__b64_encode(out, ol);
  FUZZ_CHECK(enc, "b64");
  char *again = NULL;
  size_t al = 0;
  FUZZ_CHECK(dlock__b64_decode("etcd", enc, strlen(enc), &again, &al) == 0 && al == ol &&
                 memcmp(again, out, ol) == 0,
             "base64 does not round-trip");
  free(again);
  free(enc);
  free(out);
}

/* The length dlock__etcd_lock_name gives KEY without its prefix (the
 * name may hold NUL bytes, so strlen cannot tell). */
static size_t escaped_len(const char *key, size_t n) {
  size_t l = 0;
  for (size_t i = 0; i < n; i++)
    l += key[i] == '%' || key[i] == '/' ? 3 : 1;
  return l;
}

static void check_key_of(const char *b, size_t n) {
  static const char pre[] = DLOCK__ETCD_DEFAULT_PREFIX;
  const size_t pl = sizeof pre - 1;
  char out[DLOCK_KEY_MAX + 1];
  size_t ol = 0;
  if (dlock__etcd_key_of(pre, b, n, out, &ol)) {
    FUZZ_CHECK(ol >= 1 && ol <= DLOCK_KEY_MAX && out[ol] == '\0', "key_of length %zu", ol);
    FUZZ_CHECK(n > pl && memcmp(b, pre, pl) == 0, "key_of outside the prefix");
    const char *slash = memchr(b + pl, '/', n - pl);
    FUZZ_CHECK(slash, "key_of without a '/'");
    size_t nl = (size_t)(slash - b);
    char *name = dlock__etcd_lock_name(NULL, out, ol);
    FUZZ_CHECK(name, "lock_name");
    FUZZ_CHECK(pl + escaped_len(out, ol) == nl && memcmp(name, b, nl) == 0,
               "key_of gives a key whose name is not the store key's");
    free(name);
  }
  /* The other way: a key's holder key, under any lease. */
  char *k = fuzz_strndup(b, n);
  size_t kl = 0;
  if (dlock__key_check(k, &kl) == 0) {
    char *name = dlock__etcd_lock_name(NULL, k, kl);
    int64_t lease = n ? (int64_t)((uint64_t)(unsigned char)b[0] * 0x9e3779b97f4a7c15ull) : 1;
    char *holder = name ? dlock__etcd_lock_key(name, lease) : NULL;
    FUZZ_CHECK(holder, "lock_key");
    ol = 0;
    FUZZ_CHECK(dlock__etcd_key_of(pre, holder, strlen(holder), out, &ol) == 1 && ol == kl &&
                   memcmp(out, k, kl) == 0,
               "the holder key \"%s\" does not decode to its key", holder);
    free(holder);
    free(name);
  }
  dlock__clear_err();
  free(k);
}

static void check_json(char *body, const char *what) {
  FUZZ_CHECK(body, "%s: no body", what);
  cJSON *j = cJSON_Parse(body);
  FUZZ_CHECK(cJSON_IsObject(j), "%s: not a JSON object", what);
  cJSON_Delete(j);
  free(body);
}

static void check_list_requests(const char *b, size_t n) {
  size_t half = n / 2;
  int64_t rev = n ? (int64_t)(unsigned char)b[n - 1] : 0;
  check_json(dlock__etcd_req_page(b, half, b + half, n - half, rev, 500), "req_page");
  char *s = fuzz_strndup(b, n);
  check_json(dlock__etcd_req_break(s, s + strlen(s) / 2, rev, rev + 1), "req_break");
  (void)dlock__etcd_compacted(s);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *b = fuzz_memdup(data, size);
  check_txn(b, size);
  check_leases(b, size);
  static const int statuses[] = {400, 401, 403, 404, 429, 500, 503};
  size_t msglen = size ? data[0] % 300 : 0;
  for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
    check_errors(b, size, statuses[i], i ? sizeof(char[300]) : msglen);
  check_errors(b, size, size > 1 ? data[1] * 4 : 0, msglen);
  check_watch(b, size);
  check_b64(b, size);
  check_key_of(b, size);
  check_list_requests(b, size);
  free(b);
  return 0;
}
