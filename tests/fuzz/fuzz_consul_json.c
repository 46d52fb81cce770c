/* Consul agent answers: the input is one body and goes through every
 * decoder, and is also read as an X-Consul-Index header line, a duration
 * and a "true"/"false" answer.  Checked: decoded keys and values are
 * NUL-terminated at their length, sessions and messages fit their
 * buffers, a 409 names at least one failed operation,
 * txn_find returns the result it was asked for, indexes are what
 * consul-codec.h allows (a header index at least 1 and exactly the digits
 * of the line), durations and TTLs are -1 or non-negative, a session list
 * sets only the TTLs of the IDs it was asked about.  The input is also read
 * as a lock key: one that dlock__consul_key_of takes back to a key is
 * exactly that key's lock key (under the default prefix and under one of
 * its own), so a listed lock is the one an inspect or a break reaches. */
#include <inttypes.h>

#include "fuzz.h"

#include "backends/consul/consul-codec.h"

static void check_kv(const dlock__consul_kv *kv) {
  if (kv->key)
    FUZZ_CHECK(kv->key[kv->keylen] == '\0', "key not terminated at its length");
  FUZZ_CHECK(kv->value && kv->value[kv->valuelen] == '\0', "value");
  FUZZ_CHECK(memchr(kv->session, '\0', sizeof kv->session), "session");
  FUZZ_CHECK(kv->lock_flag == 0 || kv->lock_flag == 1, "lock_flag");
  FUZZ_CHECK(!kv->lock_flag || kv->has_flags, "lock flag without flags");
  char owner[40], label[16];
  dlock__consul_value_split(kv->value, kv->valuelen, owner, sizeof owner, label, sizeof label);
  FUZZ_CHECK(memchr(owner, '\0', sizeof owner) && memchr(label, '\0', sizeof label),
             "value_split");
}

static void check_txn(const char *b, size_t n, int status) {
  dlock__consul_txn t;
  memset(&t, 0x5a, sizeof t);
  int rc = dlock__consul_parse_txn(status, b, n, &t);
  if (rc == 0) {
    FUZZ_CHECK(status == 200 || status == 409, "txn of HTTP %d parsed", status);
    FUZZ_CHECK(memchr(t.msg, '\0', sizeof t.msg), "txn message");
    for (size_t i = 0; i < t.nresults; i++) {
      FUZZ_CHECK(t.found[i] == 0 || t.found[i] == 1, "found");
      if (!t.found[i])
        continue;
      check_kv(&t.results[i]);
      if (t.results[i].key && strlen(t.results[i].key) == t.results[i].keylen) {
        const dlock__consul_kv *f = dlock__consul_txn_find(&t, t.results[i].key);
        FUZZ_CHECK(f && f->key && strcmp(f->key, t.results[i].key) == 0, "txn_find");
      }
    }
    if (status == 409)
      FUZZ_CHECK(t.nerr > 0, "a conflict without a failed operation");
    /* -1: an index that names no operation */
    for (size_t i = 0; i < t.nerr; i++)
      FUZZ_CHECK(t.err_op[i] >= -1, "failed operation %d", t.err_op[i]);
    const dlock__consul_kv *none = dlock__consul_txn_find(&t, "");
    FUZZ_CHECK(!none || (none->key && none->key[0] == '\0'), "txn_find of \"\"");
  } else {
    FUZZ_CHECK(rc == DLOCK_EBACKEND || rc == DLOCK_ENOMEM, "txn rc %d", rc);
  }
  dlock__consul_txn_free(&t);
}

static void check_reads(const char *b, size_t n) {
  dlock__consul_kv kv;
  memset(&kv, 0, sizeof kv);
  if (dlock__consul_parse_kv(b, n, &kv) == 0)
    check_kv(&kv);
  dlock__consul_kv_free(&kv);

  char id[DLOCK_CONSUL_SESSION_MAX];
  memset(id, 'x', sizeof id);
  if (dlock__consul_parse_session(b, n, id) == 0)
    FUZZ_CHECK(memchr(id, '\0', sizeof id) && id[0], "session id");

  int64_t ttl = 5;
  int rc = dlock__consul_parse_renew(b, n, &ttl);
  if (rc == 0)
    FUZZ_CHECK(ttl == -1 || ttl >= 0, "renew ttl %" PRId64, ttl);

  int v = dlock__consul_parse_bool(b, n);
  FUZZ_CHECK(v >= -1 && v <= 1, "bool %d", v);
}

/* IDs in strcmp order, as dlock__consul_parse_session_ttls wants them;
 * the seeds list sessions with some of them. */
static const char *const session_ids[] = {
    "00000000-0000-0000-0000-000000000001",
    "5f2c1bde-0a7e-4a8f-9a55-1c5a2b3c4d5e",
    "adf4238a-882b-9ddc-4a9d-5b6758e4159e",
};

static void check_session_ttls(const char *b, size_t n) {
  const size_t ni = sizeof session_ids / sizeof *session_ids;
  int64_t ttls[sizeof session_ids / sizeof *session_ids];
  for (size_t i = 0; i < ni; i++)
    ttls[i] = -7;
  int rc = dlock__consul_parse_session_ttls(b, n, session_ids, ni, ttls);
  FUZZ_CHECK(rc == 0 || rc == DLOCK_EBACKEND, "session ttls rc %d", rc);
  for (size_t i = 0; i < ni; i++)
    FUZZ_CHECK(ttls[i] == -7 || ttls[i] == -1 || ttls[i] >= 0, "session ttl %" PRId64, ttls[i]);
  FUZZ_CHECK(dlock__consul_parse_session_ttls(b, n, NULL, 0, NULL) == rc,
             "session ttls answered differently without IDs");
}

static void check_key_of_under(const char *prefix, const char *b, size_t n) {
  char key[DLOCK_KEY_MAX + 1];
  memset(key, 'x', sizeof key);
  size_t kl = dlock__consul_key_of(prefix, b, n, key);
  if (kl == 0)
    return;
  FUZZ_CHECK(kl <= DLOCK_KEY_MAX && key[kl] == '\0', "key_of length %zu", kl);
  char *again = dlock__consul_lock_key(prefix, key, kl);
  FUZZ_CHECK(again && strlen(again) == n && memcmp(again, b, n) == 0,
             "key_of gave a key whose lock key is another");
  free(again);
}

static void check_key_of(const char *b, size_t n) {
  check_key_of_under(NULL, b, n);
  /* A prefix that is the input's start: whatever follows is read as a key. */
  size_t pl = n < 12 ? n / 2 : 6;
  char prefix[8];
  memcpy(prefix, b, pl);
  prefix[pl] = '\0';
  if (strlen(prefix) == pl)
    check_key_of_under(prefix, b, n);
}

/* What dlock__consul_header_index should say about LINE. */
static int ref_index(const char *line, size_t n, uint64_t *out) {
  static const char name[] = "x-consul-index:";
  if (n < 15 || strncasecmp(line, name, 15) != 0)
    return 0;
  size_t i = 15, e = n;
  while (i < e && (line[i] == ' ' || line[i] == '\t'))
    i++;
  while (e > i && strchr("\r\n \t", line[e - 1]) && line[e - 1])
    e--;
  uint64_t v = 0;
  if (i == e)
    return -1;
  for (; i < e; i++) {
    if (line[i] < '0' || line[i] > '9')
      return -1;
    unsigned d = (unsigned)(line[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  if (!v)
    return -1;
  *out = v;
  return 1;
}

static void check_header(const char *b, size_t n) {
  uint64_t idx = 0, want = 0;
  int rc = dlock__consul_header_index(b, n, &idx), ref = ref_index(b, n, &want);
  FUZZ_CHECK(rc == 0 || rc == 1 || rc == DLOCK_EBACKEND, "header rc %d", rc);
  FUZZ_CHECK((rc < 0 ? -1 : rc) == ref, "header index rc %d, expected %d", rc, ref);
  if (rc == 1)
    FUZZ_CHECK(idx == want && idx >= 1, "header index %" PRIu64 ", expected %" PRIu64, idx,
               want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *b = fuzz_memdup(data, size);
  check_txn(b, size, 200);
  check_txn(b, size, 409);
  check_txn(b, size, 500);
  check_reads(b, size);
  check_header(b, size);
  check_session_ttls(b, size);
  check_key_of(b, size);
  char *s = fuzz_strndup(data, size);
  int64_t ms = dlock__consul_duration_ms(s);
  FUZZ_CHECK(ms == -1 || ms >= 0, "duration %" PRId64, ms);
  free(s);
  free(b);
  return 0;
}
