/* etcd gRPC answers: the input is one message body (what follows the
 * 5-byte prefix) and goes through every protobuf decoder; it is also a
 * received stream's bytes for the framer, and header values for the
 * status, message and timeout helpers.  Checked: numbers land within the
 * bounds etcd-codec.h promises (revisions 0..DLOCK__ETCD_REV_MAX, a txn's
 * at least 1; counts non-negative; TTLs at most DLOCK__ETCD_TTL_MAX_S),
 * decoded keys and values are NUL-terminated at their length, outputs stay
 * as documented on failure, a frame never reaches past the input, and a
 * txn request built from the input's bytes frames itself exactly. */
#include <inttypes.h>

#include "fuzz.h"

#include "backends/etcd/etcd-grpc-codec.h"

#define REV_OK(r) ((r) >= 0 && (r) <= DLOCK__ETCD_REV_MAX)

static void check_txn(const uint8_t *b, size_t n) {
  dlock__etcd_txn t;
  memset(&t, 0x5a, sizeof t);
  int rc = dlock__grpc_parse_txn(b, n, &t);
  if (rc == 0) {
    FUZZ_CHECK(t.revision >= 1 && t.revision <= DLOCK__ETCD_REV_MAX, "txn revision %" PRId64,
               t.revision);
    FUZZ_CHECK(t.succeeded == 0 || t.succeeded == 1, "succeeded %d", t.succeeded);
    for (size_t i = 0; i < t.nres; i++) {
      const dlock__etcd_opres *o = &t.res[i];
      FUZZ_CHECK(o->op >= DLOCK__ETCD_OP_RANGE && o->op <= DLOCK__ETCD_OP_DELETE, "op %d",
                 (int)o->op);
      FUZZ_CHECK(o->count >= 0 && o->deleted >= 0, "negative count");
      for (size_t j = 0; j < o->nkvs; j++) {
        const dlock__etcd_kv *kv = &o->kvs[j];
        if (kv->key)
          FUZZ_CHECK(kv->key[kv->keylen] == '\0', "kv key not terminated at its length");
        FUZZ_CHECK(kv->value && kv->value[kv->valuelen] == '\0', "kv value");
        FUZZ_CHECK(REV_OK(kv->create_revision) && REV_OK(kv->mod_revision), "kv revisions");
        FUZZ_CHECK(kv->version >= 0, "kv version");
      }
    }
  } else {
    FUZZ_CHECK(rc == DLOCK_EBACKEND || rc == DLOCK_ENOMEM, "txn rc %d", rc);
    FUZZ_CHECK(t.nres == 0 && !t.res, "txn results left on failure");
  }
  dlock__etcd_txn_free(&t);
}

static void check_leases(const uint8_t *b, size_t n) {
  int64_t id = 11, ttl = 22;
  int rc = dlock__grpc_parse_grant(b, n, &id, &ttl);
  if (rc == 0)
    FUZZ_CHECK(id > 0 && ttl > 0 && ttl <= DLOCK__ETCD_TTL_MAX_S, "grant %" PRId64 " %" PRId64,
               id, ttl);
  else
    FUZZ_CHECK(rc < 0 && id == 11 && ttl == 22, "grant output touched on failure");

  rc = dlock__grpc_parse_keepalive(b, n, &id, &ttl);
  if (rc == 0)
    FUZZ_CHECK(ttl >= 0 && ttl <= DLOCK__ETCD_TTL_MAX_S, "keepalive ttl %" PRId64, ttl);
  else
    FUZZ_CHECK(rc < 0 && ttl == 0, "keepalive ttl %" PRId64 " on failure", ttl);

  int64_t ms = 33;
  rc = dlock__grpc_parse_timetolive(b, n, &ms);
  if (rc == 0)
    FUZZ_CHECK(ms == -1 || (ms >= 0 && ms <= DLOCK__ETCD_TTL_MAX_S * 1000),
               "timetolive %" PRId64, ms);
  else
    FUZZ_CHECK(rc < 0 && ms == -1, "timetolive %" PRId64 " on failure", ms);

  char *tok = (char *)1;
  rc = dlock__grpc_parse_auth(b, n, &tok);
  if (rc == 0) {
    FUZZ_CHECK(tok && tok[0] && !strpbrk(tok, "\r\n"), "auth token");
    free(tok);
  } else {
    FUZZ_CHECK(rc < 0 && tok == NULL, "auth token on failure");
  }
  int64_t rev = 5;
  rc = dlock__grpc_parse_header(b, n, &rev);
  FUZZ_CHECK(rc == 0 ? REV_OK(rev) : rc < 0 && rev == 0, "header revision %" PRId64, rev);
}

static void check_watch(const uint8_t *b, size_t n) {
  dlock__etcd_watch_ev ev;
  memset(&ev, 0x5a, sizeof ev);
  int rc = dlock__grpc_parse_watch(b, n, &ev);
  if (rc == 0) {
    FUZZ_CHECK(REV_OK(ev.revision) && REV_OK(ev.compact_revision), "watch revisions");
    FUZZ_CHECK(ev.watch_id >= -1, "watch id");
    FUZZ_CHECK(memchr(ev.msg, '\0', sizeof ev.msg), "watch message");
    for (const char *p = ev.msg; *p; p++)
      FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in a watch message");
    FUZZ_CHECK(ev.fault >= DLOCK__ETCD_F_NONE && ev.fault <= DLOCK__ETCD_F_OTHER, "watch fault");
    FUZZ_CHECK(!ev.error, "a gRPC watch answer is never an error line");
  } else {
    FUZZ_CHECK(rc < 0 && !ev.created && !ev.deletes, "watch output on failure");
  }
}

static void check_framing(const uint8_t *b, size_t n) {
  const uint8_t *m = NULL;
  size_t mn = 0, used = 0, off = 0;
  int fr;
  while ((fr = dlock__grpc_frame(b + off, n - off, &m, &mn, &used)) == 1) {
    FUZZ_CHECK(used == mn + 5 && used <= n - off && m == b + off + 5, "frame bounds");
    off += used;
  }
  FUZZ_CHECK(fr == 0 || fr == -1, "frame rc %d", fr);

  char msg[40];
  memset(msg, 'x', sizeof msg);
  dlock__grpc_message((const char *)b, n, msg, 17);
  FUZZ_CHECK(memchr(msg, '\0', 17) && msg[17] == 'x', "grpc-message bounds");
  for (const char *p = msg; *p; p++)
    FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in a grpc-message");
  int code = dlock__grpc_status((const char *)b, n);
  FUZZ_CHECK(code >= -1 && code <= 999, "grpc-status %d", code);
  enum dlock__etcd_fault f = dlock__etcd_grpc_fault(code, msg);
  FUZZ_CHECK(f >= DLOCK__ETCD_F_NONE && f <= DLOCK__ETCD_F_OTHER, "fault %d", (int)f);

  int64_t ns = 0;
  memcpy(&ns, b, n < sizeof ns ? n : sizeof ns);
  char t[12];
  memset(t, 'x', sizeof t);
  dlock__grpc_timeout(ns, t);
  size_t tl = strnlen(t, sizeof t);
  FUZZ_CHECK(tl >= 2 && tl <= 9 && strchr("umSMH", t[tl - 1]), "grpc-timeout \"%.12s\"", t);
}

/* Requests carry any bytes as keys and values: the message frames itself
 * exactly, whatever they are. */
static void check_requests(const uint8_t *b, size_t n) {
  char *s = fuzz_strndup(b, n);
  size_t half = n / 2;
  dlock__etcd_txreq *t = dlock__etcd_tx_page(s, half, s + half, n - half, (int64_t)n, 500);
  FUZZ_CHECK(t, "tx_page");
  dlock__grpc_buf req = {0};
  dlock__grpc_req_txn(&req, t);
  free(t);
  t = dlock__etcd_tx_enqueue(s, s, (int64_t)n, s);
  FUZZ_CHECK(t, "tx_enqueue");
  dlock__grpc_req_txn(&req, t);
  free(t);
  FUZZ_CHECK(!req.bad && req.len >= 5, "txn request");
  const uint8_t *m;
  size_t mn, used;
  FUZZ_CHECK(dlock__grpc_frame(req.data, req.len, &m, &mn, &used) == 1 && used == req.len,
             "a request does not frame itself");
  dlock__grpc_req_watch(&req, s, (int64_t)n);
  FUZZ_CHECK(!req.bad && dlock__grpc_frame(req.data, req.len, &m, &mn, &used) == 1 &&
                 used == req.len,
             "watch request");
  dlock__grpc_buf_free(&req);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_txn(data, size);
  check_leases(data, size);
  check_watch(data, size);
  check_framing(data, size);
  check_requests(data, size);
  dlock__clear_err();
  return 0;
}
