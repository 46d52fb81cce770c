/* etcd gRPC answers: the input is one message body (what follows the
 * 5-byte prefix) and goes through every protobuf decoder; it is also a
 * received stream's bytes for the framer, and header values for the
 * status, message and timeout helpers.  Checked: numbers land within the
 * bounds etcd-codec.h promises (revisions 0..DLOCK__ETCD_REV_MAX, a txn's
 * at least 1; counts non-negative; TTLs at most DLOCK__ETCD_TTL_MAX_S),
 * decoded keys and values are NUL-terminated at their length, outputs stay
 * as documented on failure, a frame never reaches past the input, and a
 * txn request built from the input's bytes frames itself exactly. */
#include "etcd_oracles.h"

#include "backends/etcd/etcd-grpc-codec.h"

static void check_answers(const uint8_t *b, size_t n) {
  dlock__etcd_txn t;
  memset(&t, 0x5a, sizeof t);
  etcd_check_txn(dlock__grpc_parse_txn(b, n, &t), &t);

  int64_t id = 11, ttl = 22;
  etcd_check_grant(dlock__grpc_parse_grant(b, n, &id, &ttl), id, ttl);
  etcd_check_keepalive(dlock__grpc_parse_keepalive(b, n, &id, &ttl), ttl);
  int64_t ms = 33;
  int rc0;
  etcd_check_timetolive(dlock__grpc_parse_timetolive(b, n, &ms, NULL), ms);
  dlock__etcd_keys ks = {0};
  ms = 33;
  rc0 = dlock__grpc_parse_timetolive(b, n, &ms, &ks);
  etcd_check_timetolive(rc0, ms);
  etcd_check_lease_keys(rc0, &ks);
  char *tok = (char *)1;
  int rc = dlock__grpc_parse_auth(b, n, &tok);
  FUZZ_CHECK(rc != 0 || !strpbrk(tok, "\r\n"), "a token that would break its header");
  etcd_check_auth(rc, tok);
  int64_t rev = 5;
  rc = dlock__grpc_parse_header(b, n, &rev);
  FUZZ_CHECK(rc == 0 ? REV_OK(rev) : rc < 0 && rev == 0, "header revision %" PRId64, rev);

  dlock__etcd_watch_ev ev;
  memset(&ev, 0x5a, sizeof ev);
  rc = dlock__grpc_parse_watch(b, n, &ev);
  etcd_check_watch(rc, &ev);
  if (rc == 0) {
    FUZZ_CHECK(ev.watch_id >= -1, "watch id");
    for (const char *p = ev.msg; *p; p++)
      FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in a watch message");
    FUZZ_CHECK(!ev.error, "a gRPC watch answer is never an error line");
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
  /* One message exactly, and then it is the first frame, all of B. */
  size_t at = 0, un = 0;
  int u = dlock__grpc_unary(b, n, &at, &un);
  FUZZ_CHECK(u >= -1 && u <= 1, "unary rc %d", u);
  FUZZ_CHECK(u != 1 || (at == 5 && un + 5 == n), "unary bounds");
  FUZZ_CHECK(u != 0 || n == 0, "an empty answer only when nothing came");

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
  check_answers(data, size);
  check_framing(data, size);
  check_requests(data, size);
  dlock__clear_err();
  return 0;
}
