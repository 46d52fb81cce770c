/* etcd's gRPC codec without a server: the protobuf of the requests dlock
 * sends (read back field by field by a small reader of the test's own),
 * the decoding of answers (captured from etcd 3.4.23's gRPC API with curl
 * --http2-prior-knowledge, and built here field by field for the cases a
 * server does not send), and gRPC's framing, timeout, status and
 * message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/etcd/etcd-grpc-codec.h"

#define BIG_LEASE INT64_C(7587862073247400200)

/* ---- a protobuf writer and reader of the test's own ---- */

typedef struct pb {
  uint8_t d[4096];
  size_t n;
} pb;

static void w_raw(pb *b, const void *p, size_t n) {
  assert_true(b->n + n <= sizeof b->d);
  memcpy(b->d + b->n, p, n);
  b->n += n;
}

static void w_varint(pb *b, uint64_t v) {
  while (v >= 0x80) {
    uint8_t c = (uint8_t)(v | 0x80);
    w_raw(b, &c, 1);
    v >>= 7;
  }
  uint8_t c = (uint8_t)v;
  w_raw(b, &c, 1);
}

static void w_int(pb *b, unsigned field, int64_t v) {
  w_varint(b, (uint64_t)field << 3);
  w_varint(b, (uint64_t)v);
}

static void w_bytes(pb *b, unsigned field, const void *p, size_t n) {
  w_varint(b, (uint64_t)field << 3 | 2);
  w_varint(b, n);
  w_raw(b, p, n);
}

static void w_str(pb *b, unsigned field, const char *s) { w_bytes(b, field, s, strlen(s)); }

static void w_sub(pb *b, unsigned field, const pb *sub) { w_bytes(b, field, sub->d, sub->n); }

static void w_header(pb *b, int64_t rev) {
  pb h = {.n = 0};
  w_int(&h, 1, 2709362113014280803);
  w_int(&h, 2, 2803394119270166707);
  w_int(&h, 3, rev);
  w_int(&h, 4, 2);
  w_sub(b, 1, &h);
}

/* One field read back: number, wire type, value or bytes. */
typedef struct rfield {
  unsigned num, wt;
  uint64_t v;
  const uint8_t *p;
  size_t n;
} rfield;

static uint64_t r_varint(const uint8_t **p, const uint8_t *end) {
  uint64_t x = 0;
  for (int s = 0; s < 64; s += 7) {
    assert_true(*p < end);
    uint8_t c = *(*p)++;
    x |= (uint64_t)(c & 0x7f) << s;
    if (!(c & 0x80))
      return x;
  }
  fail_msg("varint too long");
  return 0;
}

/* Every field of the message M (N bytes), at most MAX. */
static size_t r_fields(const uint8_t *m, size_t n, rfield *out, size_t max) {
  const uint8_t *p = m, *end = m + n;
  size_t k = 0;
  while (p < end) {
    assert_true(k < max);
    uint64_t tag = r_varint(&p, end);
    rfield *f = &out[k++];
    f->num = (unsigned)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    if (f->wt == 0) {
      f->v = r_varint(&p, end);
    } else if (f->wt == 2) {
      f->n = (size_t)r_varint(&p, end);
      assert_true(f->n <= (size_t)(end - p));
      f->p = p;
      p += f->n;
    } else {
      fail_msg("wire type %u in a request", f->wt);
    }
  }
  return k;
}

/* The one field numbered NUM among F (K of them). */
static const rfield *r_get(const rfield *f, size_t k, unsigned num) {
  const rfield *hit = NULL;
  for (size_t i = 0; i < k; i++)
    if (f[i].num == num) {
      if (hit)
        fail_msg("field %u twice", num);
      hit = &f[i];
    }
  if (!hit)
    fail_msg("no field %u", num);
  return hit;
}

static int r_has(const rfield *f, size_t k, unsigned num) {
  for (size_t i = 0; i < k; i++)
    if (f[i].num == num)
      return 1;
  return 0;
}

static void assert_field_bytes(const rfield *f, const char *want, size_t n) {
  assert_int_equal(f->wt, 2);
  assert_int_equal(f->n, n);
  assert_memory_equal(f->p, want, n);
}

/* A request's body after its prefix, which must be "not compressed" and
 * its exact length. */
static const uint8_t *body_of(const dlock__grpc_buf *b, size_t *n) {
  assert_false(b->bad);
  assert_true(b->len >= 5);
  assert_int_equal(b->data[0], 0);
  size_t len = (size_t)b->data[1] << 24 | (size_t)b->data[2] << 16 | (size_t)b->data[3] << 8 |
               b->data[4];
  assert_int_equal(len, b->len - 5);
  *n = len;
  return b->data + 5;
}

/* ---- requests ---- */

static void txn_try_request(void **state) {
  (void)state;
  dlock__etcd_txreq *t = dlock__etcd_tx_try("dlock/x", "dlock/x/694d805a78920108", BIG_LEASE,
                                            "o\nl");
  assert_non_null(t);
  dlock__grpc_buf b = {0};
  dlock__grpc_req_txn(&b, t);
  free(t);
  size_t n;
  const uint8_t *m = body_of(&b, &n);
  rfield top[8], c[8], op[4], in[12];
  size_t k = r_fields(m, n, top, 8);
  assert_int_equal(k, 3);

  /* Nobody queued: create_revision 0 over the queue range, the oneof's
   * zero written all the same. */
  const rfield *cmp = r_get(top, k, 1);
  size_t kc = r_fields(cmp->p, cmp->n, c, 8);
  assert_int_equal(r_get(c, kc, 2)->v, 1); /* CREATE */
  assert_false(r_has(c, kc, 1));           /* EQUAL is 0 */
  assert_field_bytes(r_get(c, kc, 3), "dlock/x/", 8);
  assert_field_bytes(r_get(c, kc, 64), "dlock/x0", 8);
  assert_int_equal(r_get(c, kc, 5)->wt, 0);
  assert_int_equal(r_get(c, kc, 5)->v, 0);

  const rfield *ok = r_get(top, k, 2);
  size_t ko = r_fields(ok->p, ok->n, op, 4);
  const rfield *put = r_get(op, ko, 2);
  size_t ki = r_fields(put->p, put->n, in, 12);
  assert_field_bytes(r_get(in, ki, 1), "dlock/x/694d805a78920108", 24);
  assert_field_bytes(r_get(in, ki, 2), "o\nl", 3);
  assert_int_equal((int64_t)r_get(in, ki, 3)->v, BIG_LEASE);

  const rfield *fail = r_get(top, k, 3);
  ko = r_fields(fail->p, fail->n, op, 4);
  const rfield *rng = r_get(op, ko, 1);
  ki = r_fields(rng->p, rng->n, in, 12);
  assert_field_bytes(r_get(in, ki, 1), "dlock/x/", 8);
  assert_field_bytes(r_get(in, ki, 2), "dlock/x0", 8);
  assert_int_equal(r_get(in, ki, 3)->v, 1); /* limit */
  assert_int_equal(r_get(in, ki, 5)->v, 1); /* ASCEND */
  assert_int_equal(r_get(in, ki, 6)->v, 2); /* CREATE */
  assert_false(r_has(in, ki, 8));
  assert_false(r_has(in, ki, 13));
  dlock__grpc_buf_free(&b);
}

static void txn_queue_and_check_requests(void **state) {
  (void)state;
  /* The predecessor: youngest created before REV, keys only. */
  dlock__etcd_txreq *t = dlock__etcd_tx_queue("dlock/x", "dlock/x/1f", 8123456789012LL);
  dlock__grpc_buf b = {0};
  dlock__grpc_req_txn(&b, t);
  free(t);
  size_t n;
  const uint8_t *m = body_of(&b, &n);
  rfield top[8], op[4], in[12], c[8];
  size_t k = r_fields(m, n, top, 8);
  assert_int_equal(k, 3); /* a compare, two successes, no failure */
  size_t kc = r_fields(top[0].p, top[0].n, c, 8);
  assert_int_equal(r_get(c, kc, 5)->v, 8123456789012ULL);
  assert_false(r_has(c, kc, 64));
  assert_int_equal(top[2].num, 2);
  size_t ko = r_fields(top[2].p, top[2].n, op, 4);
  const rfield *rng = r_get(op, ko, 1);
  size_t ki = r_fields(rng->p, rng->n, in, 12);
  assert_int_equal(r_get(in, ki, 5)->v, 2);  /* DESCEND */
  assert_int_equal(r_get(in, ki, 8)->v, 1);  /* keys_only */
  assert_int_equal(r_get(in, ki, 13)->v, 8123456789011ULL);

  /* A break compares mod_revision too; a value compare carries the
   * value in field 7, even an empty one. */
  t = dlock__etcd_tx_break("dlock/x", "dlock/x/1f", 5, 9);
  dlock__grpc_req_txn(&b, t);
  free(t);
  m = body_of(&b, &n);
  k = r_fields(m, n, top, 8);
  assert_int_equal(k, 4);
  kc = r_fields(top[1].p, top[1].n, c, 8);
  assert_int_equal(r_get(c, kc, 2)->v, 2); /* MOD */
  assert_int_equal(r_get(c, kc, 6)->v, 9);
  ko = r_fields(top[2].p, top[2].n, op, 4);
  const rfield *del = r_get(op, ko, 3);
  ki = r_fields(del->p, del->n, in, 12);
  assert_int_equal(ki, 1);

  t = dlock__etcd_tx_release_value("dlock/x/1f", "");
  dlock__grpc_req_txn(&b, t);
  free(t);
  m = body_of(&b, &n);
  k = r_fields(m, n, top, 8);
  kc = r_fields(top[0].p, top[0].n, c, 8);
  assert_int_equal(r_get(c, kc, 2)->v, 3); /* VALUE */
  assert_field_bytes(r_get(c, kc, 7), "", 0);

  /* A page at a revision. */
  t = dlock__etcd_tx_page("a", 1, "b", 1, 77, 500);
  dlock__grpc_req_txn(&b, t);
  free(t);
  m = body_of(&b, &n);
  k = r_fields(m, n, top, 8);
  ko = r_fields(top[0].p, top[0].n, op, 4);
  rng = r_get(op, ko, 1);
  ki = r_fields(rng->p, rng->n, in, 12);
  assert_int_equal(r_get(in, ki, 3)->v, 500);
  assert_int_equal(r_get(in, ki, 4)->v, 77);
  assert_false(r_has(in, ki, 5));
  dlock__grpc_buf_free(&b);
}

static void small_requests(void **state) {
  (void)state;
  dlock__grpc_buf b = {0};
  /* Every byte of a watch request: the nested message's length is a
   * padded five-byte varint. */
  dlock__grpc_req_watch(&b, "k", 5);
  static const uint8_t want[] = {0,    0,    0,    0,    14,   0x0a, 0x88, 0x80, 0x80, 0x80,
                                 0x00, 0x0a, 0x01, 'k',  0x18, 0x05, 0x2a, 0x01, 0x00};
  assert_int_equal(b.len, sizeof want);
  assert_memory_equal(b.data, want, sizeof want);

  size_t n;
  rfield f[4];
  dlock__grpc_req_grant(&b, 15);
  const uint8_t *m = body_of(&b, &n);
  assert_int_equal(r_fields(m, n, f, 4), 1);
  assert_int_equal(r_get(f, 1, 1)->v, 15);

  dlock__grpc_req_lease(&b, BIG_LEASE);
  m = body_of(&b, &n);
  assert_int_equal(r_fields(m, n, f, 4), 1);
  assert_int_equal((int64_t)r_get(f, 1, 1)->v, BIG_LEASE);

  dlock__grpc_req_timetolive(&b, 3, true);
  m = body_of(&b, &n);
  assert_int_equal(r_fields(m, n, f, 4), 2);
  assert_int_equal(r_get(f, 2, 2)->v, 1);
  dlock__grpc_req_timetolive(&b, 3, false);
  m = body_of(&b, &n);
  assert_int_equal(r_fields(m, n, f, 4), 1);
  assert_int_equal(r_get(f, 1, 1)->v, 3);

  dlock__grpc_req_auth(&b, "root", "p\"a\\s\ns/\xc3\xa9");
  m = body_of(&b, &n);
  assert_int_equal(r_fields(m, n, f, 4), 2);
  assert_field_bytes(r_get(f, 2, 1), "root", 4);
  assert_field_bytes(r_get(f, 2, 2), "p\"a\\s\ns/\xc3\xa9", 10);

  dlock__grpc_req_status(&b);
  assert_int_equal(b.len, 5);
  assert_memory_equal(b.data, "\0\0\0\0\0", 5);
  dlock__grpc_buf_free(&b);
}

/* ---- framing ---- */

static void frames(void **state) {
  (void)state;
  const uint8_t two[] = {0, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 0, 0};
  const uint8_t *m;
  size_t n, used;
  assert_int_equal(dlock__grpc_frame(two, 4, &m, &n, &used), 0);
  assert_int_equal(dlock__grpc_frame(two, 6, &m, &n, &used), 0);
  assert_int_equal(dlock__grpc_frame(two, sizeof two, &m, &n, &used), 1);
  assert_int_equal(n, 2);
  assert_int_equal(used, 7);
  assert_memory_equal(m, "ab", 2);
  /* The second: empty, complete. */
  assert_int_equal(dlock__grpc_frame(two + used, sizeof two - used, &m, &n, &used), 1);
  assert_int_equal(n, 0);
  assert_int_equal(used, 5);
  const uint8_t compressed[] = {1, 0, 0, 0, 0};
  assert_int_equal(dlock__grpc_frame(compressed, 5, &m, &n, &used), -1);
  const uint8_t huge[] = {0, 0, 0x40, 0, 1};
  assert_int_equal(dlock__grpc_frame(huge, 5, &m, &n, &used), -1);
  const uint8_t max[] = {0, 0, 0x40, 0, 0};
  assert_int_equal(dlock__grpc_frame(max, 5, &m, &n, &used), 0);
}

/* A unary answer is exactly one message: anything after it, a whole
 * second one or the start of one, is no answer of etcd's (it used to be
 * accepted, read through a pointer the rest of the stream had moved). */
static void unary_answers(void **state) {
  (void)state;
  size_t at = 99, n = 99;
  assert_int_equal(dlock__grpc_unary(NULL, 0, &at, &n), 0);
  const uint8_t one[] = {0, 0, 0, 0, 2, 'a', 'b'};
  assert_int_equal(dlock__grpc_unary(one, sizeof one, &at, &n), 1);
  assert_int_equal(at, 5);
  assert_int_equal(n, 2);
  const uint8_t empty[] = {0, 0, 0, 0, 0};
  assert_int_equal(dlock__grpc_unary(empty, sizeof empty, &at, &n), 1);
  assert_int_equal(n, 0);
  const uint8_t two[] = {0, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 0, 0};
  assert_int_equal(dlock__grpc_unary(two, sizeof two, &at, &n), -1);
  const uint8_t and_part[] = {0, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 3, 0xe8, 'x'};
  assert_int_equal(dlock__grpc_unary(and_part, sizeof and_part, &at, &n), -1);
  assert_int_equal(dlock__grpc_unary(one, sizeof one - 1, &at, &n), -1); /* cut short */
  const uint8_t compressed[] = {1, 0, 0, 0, 0};
  assert_int_equal(dlock__grpc_unary(compressed, sizeof compressed, &at, &n), -1);
}

static void timeouts(void **state) {
  (void)state;
  char t[12];
  dlock__grpc_timeout(1, t);
  assert_string_equal(t, "1u");
  dlock__grpc_timeout(-5, t);
  assert_string_equal(t, "1u");
  dlock__grpc_timeout(1500, t);
  assert_string_equal(t, "2u");
  dlock__grpc_timeout(99999999000, t);
  assert_string_equal(t, "99999999u");
  dlock__grpc_timeout(99999999001, t);
  assert_string_equal(t, "100000m");
  dlock__grpc_timeout(INT64_C(5000000000000000), t); /* 58 days */
  assert_string_equal(t, "5000000S");
  dlock__grpc_timeout(INT64_MAX, t);
  assert_string_equal(t, "2562048H");
}

static void statuses_and_messages(void **state) {
  (void)state;
  assert_int_equal(dlock__grpc_status("0", 1), 0);
  assert_int_equal(dlock__grpc_status("14", 2), 14);
  assert_int_equal(dlock__grpc_status("", 0), -1);
  assert_int_equal(dlock__grpc_status("1x", 2), -1);
  assert_int_equal(dlock__grpc_status("-1", 2), -1);
  assert_int_equal(dlock__grpc_status("1234", 4), -1);
  char m[32];
  const char *v = "etcdserver%3A no leader";
  dlock__grpc_message(v, strlen(v), m, sizeof m);
  assert_string_equal(m, "etcdserver: no leader");
  v = "100%zz%4";
  dlock__grpc_message(v, strlen(v), m, sizeof m);
  assert_string_equal(m, "100%zz%4");
  v = "a%0Ab\r";
  dlock__grpc_message(v, strlen(v), m, sizeof m);
  assert_string_equal(m, "a?b?");
  v = "0123456789";
  dlock__grpc_message(v, strlen(v), m, 5);
  assert_string_equal(m, "0123");

  /* The status and message etcd 3.4 sends for these, from its
   * rpctypes/error.go. */
  assert_int_equal(dlock__etcd_grpc_fault(14, "etcdserver: no leader"), DLOCK__ETCD_F_RETRY);
  assert_int_equal(dlock__etcd_grpc_fault(5, "etcdserver: requested lease not found"),
                   DLOCK__ETCD_F_LEASE_GONE);
  assert_int_equal(dlock__etcd_grpc_fault(3, "etcdserver: too many operations in txn request"),
                   DLOCK__ETCD_F_INVALID);
  assert_int_equal(dlock__etcd_grpc_fault(3, "etcdserver: authentication failed, invalid user "
                                             "ID or password"),
                   DLOCK__ETCD_F_AUTH);
  assert_int_equal(dlock__etcd_grpc_fault(3, "etcdserver: invalid auth token"),
                   DLOCK__ETCD_F_REAUTH);
  assert_int_equal(dlock__etcd_grpc_fault(16, ""), DLOCK__ETCD_F_REAUTH);
  assert_int_equal(dlock__etcd_grpc_fault(4, "context deadline exceeded"), DLOCK__ETCD_F_RETRY);
  assert_int_equal(dlock__etcd_grpc_fault(13, "something else"), DLOCK__ETCD_F_OTHER);
  assert_int_equal(dlock__etcd_grpc_fault(99, "x"), DLOCK__ETCD_F_OTHER);
}

/* ---- answers ---- */

static void kv_of(pb *out, const char *key, int64_t create, int64_t mod, const char *value,
                  int64_t lease) {
  out->n = 0;
  w_str(out, 1, key);
  w_int(out, 2, create);
  w_int(out, 3, mod);
  w_int(out, 4, 1);
  if (value)
    w_str(out, 5, value);
  if (lease)
    w_int(out, 6, lease);
}

static void txn_answer(void **state) {
  (void)state;
  pb m = {.n = 0}, put = {.n = 0}, op1 = {.n = 0}, rng = {.n = 0}, op2 = {.n = 0},
     kv = {.n = 0};
  w_header(&m, 42);
  w_int(&m, 2, 1);
  w_header(&put, 42);
  w_sub(&op1, 2, &put);
  w_sub(&m, 3, &op1);
  w_header(&rng, 42);
  kv_of(&kv, "dlock/x/1f", 7, 8, "o\nl", BIG_LEASE);
  w_sub(&rng, 2, &kv);
  kv_of(&kv, "dlock/x/20", 9, 9, NULL, 0);
  w_sub(&rng, 2, &kv);
  w_int(&rng, 4, 3);
  w_sub(&op2, 1, &rng);
  w_sub(&m, 3, &op2);
  /* A field of a later etcd, and one of each skippable wire type. */
  w_int(&m, 99, 5);
  w_raw(&m, "\x99\x06" "12345678" "\x9d\x06" "1234", 2 + 8 + 2 + 4);

  dlock__etcd_txn t;
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), 0);
  assert_int_equal(t.revision, 42);
  assert_int_equal(t.succeeded, 1);
  assert_int_equal(t.nres, 2);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_PUT);
  assert_int_equal(t.res[1].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[1].count, 3);
  assert_int_equal(t.res[1].nkvs, 2);
  const dlock__etcd_kv *k = &t.res[1].kvs[0];
  assert_string_equal(k->key, "dlock/x/1f");
  assert_int_equal(k->keylen, 10);
  assert_string_equal(k->value, "o\nl");
  assert_int_equal(k->create_revision, 7);
  assert_int_equal(k->mod_revision, 8);
  assert_int_equal(k->lease, BIG_LEASE);
  /* Absent value: "", as the gateway codec gives. */
  assert_string_equal(t.res[1].kvs[1].value, "");
  assert_int_equal(t.res[1].kvs[1].valuelen, 0);
  dlock__etcd_txn_free(&t);

  /* Every cut of it is malformed, never a crash, a leak or half an
   * answer. */
  for (size_t cut = 0; cut < m.n; cut++) {
    int rc = dlock__grpc_parse_txn(m.d, cut, &t);
    if (rc == 0) {
      /* A cut between whole fields is a shorter answer. */
      assert_true(t.revision == 42);
    } else {
      assert_int_equal(rc, DLOCK_EBACKEND);
      assert_int_equal(t.nres, 0);
      assert_null(t.res);
    }
    dlock__etcd_txn_free(&t);
  }
}

static void txn_answer_bounds(void **state) {
  (void)state;
  dlock__etcd_txn t;
  pb m = {.n = 0};
  /* No header, or a revision of 0: not a txn answer. */
  w_int(&m, 2, 1);
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), DLOCK_EBACKEND);
  m.n = 0;
  w_header(&m, 0);
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), DLOCK_EBACKEND);
  /* A negative create_revision (ten bytes on the wire). */
  pb rng = {.n = 0}, op = {.n = 0}, kv = {.n = 0};
  m.n = 0;
  w_header(&m, 5);
  kv_of(&kv, "a", -1, 1, "v", 0);
  w_sub(&rng, 2, &kv);
  w_sub(&op, 1, &rng);
  w_sub(&m, 3, &op);
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), DLOCK_EBACKEND);
  /* The revision after the largest one a token can be. */
  m.n = 0;
  w_header(&m, INT64_MAX);
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), DLOCK_EBACKEND);
  /* A group, a varint of eleven bytes, a length past the end, field 0. */
  static const char *const junk[] = {"\x0b", "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
                                     "\x1a\x05\x00", "\x00\x01"};
  static const size_t junklen[] = {1, 12, 3, 2};
  for (size_t i = 0; i < 4; i++) {
    m.n = 0;
    w_header(&m, 5);
    w_raw(&m, junk[i], junklen[i]);
    assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), DLOCK_EBACKEND);
    assert_null(t.res);
  }
  /* Two members of a ResponseOp's oneof. */
  pb two = {.n = 0}, empty = {.n = 0};
  w_sub(&two, 1, &empty);
  w_sub(&two, 2, &empty);
  m.n = 0;
  w_header(&m, 5);
  w_sub(&m, 3, &two);
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), DLOCK_EBACKEND);
  /* An empty range response is a range of no keys. */
  pb r0 = {.n = 0};
  w_sub(&r0, 1, &empty);
  m.n = 0;
  w_header(&m, 5);
  w_sub(&m, 3, &r0);
  assert_int_equal(dlock__grpc_parse_txn(m.d, m.n, &t), 0);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[0].nkvs, 0);
  assert_int_equal(t.succeeded, 0);
  dlock__etcd_txn_free(&t);
}

static void lease_answers(void **state) {
  (void)state;
  pb m = {.n = 0};
  int64_t id = 0, ttl = 0;
  w_header(&m, 3);
  w_int(&m, 2, BIG_LEASE);
  w_int(&m, 3, 15);
  assert_int_equal(dlock__grpc_parse_grant(m.d, m.n, &id, &ttl), 0);
  assert_int_equal(id, BIG_LEASE);
  assert_int_equal(ttl, 15);
  assert_int_equal(dlock__grpc_parse_keepalive(m.d, m.n, &id, &ttl), 0);
  assert_int_equal(id, BIG_LEASE);
  assert_int_equal(ttl, 15);
  assert_int_equal(dlock__grpc_parse_timetolive(m.d, m.n, &ttl, NULL), 0);
  assert_int_equal(ttl, 15000);

  /* A grant refused in its error field, or without an ID. */
  pb e = m;
  w_str(&e, 4, "lease already exists");
  assert_int_equal(dlock__grpc_parse_grant(e.d, e.n, &id, &ttl), DLOCK_EBACKEND);
  pb noid = {.n = 0};
  w_header(&noid, 3);
  w_int(&noid, 3, 15);
  assert_int_equal(dlock__grpc_parse_grant(noid.d, noid.n, &id, &ttl), DLOCK_EBACKEND);

  /* A keepalive of a lease that is gone: TTL 0, left out. */
  pb gone = {.n = 0};
  w_header(&gone, 3);
  w_int(&gone, 2, 7);
  assert_int_equal(dlock__grpc_parse_keepalive(gone.d, gone.n, &id, &ttl), 0);
  assert_int_equal(id, 7);
  assert_int_equal(ttl, 0);
  /* TimeToLive of a lease that is gone: -1. */
  pb neg = {.n = 0};
  w_header(&neg, 3);
  w_int(&neg, 3, -1);
  assert_int_equal(dlock__grpc_parse_timetolive(neg.d, neg.n, &ttl, NULL), 0);
  assert_int_equal(ttl, -1);
  /* With its keys (repeated bytes, field 5), one with a NUL byte left out;
   * keys of the wrong wire type are no answer. */
  pb withkeys = {.n = 0};
  w_header(&withkeys, 3);
  w_int(&withkeys, 3, 9);
  w_str(&withkeys, 5, "d/b/1");
  w_str(&withkeys, 5, "d/a/1");
  w_bytes(&withkeys, 5, "d/\0x", 4);
  w_int(&withkeys, 4, 10);
  dlock__etcd_keys ks = {0};
  assert_int_equal(dlock__grpc_parse_timetolive(withkeys.d, withkeys.n, &ttl, &ks), 0);
  assert_int_equal(ttl, 9000);
  assert_int_equal(ks.n, 2);
  assert_true(dlock__etcd_keys_has(&ks, "d/a/1"));
  assert_true(dlock__etcd_keys_has(&ks, "d/b/1"));
  assert_false(dlock__etcd_keys_has(&ks, "d/"));
  dlock__etcd_keys_free(&ks);
  assert_int_equal(dlock__grpc_parse_timetolive(withkeys.d, withkeys.n, &ttl, NULL), 0);
  w_int(&withkeys, 5, 1);
  assert_int_equal(dlock__grpc_parse_timetolive(withkeys.d, withkeys.n, &ttl, &ks),
                   DLOCK_EBACKEND);
  assert_int_equal(ttl, -1);
  assert_true(ks.n == 0 && !ks.buf && !ks.k);
  /* Its last key cut short (the declared length runs past the end): no
   * answer, and the keys are left empty. */
  withkeys.n -= 2;
  w_str(&withkeys, 5, "d/c/1");
  withkeys.n -= 1;
  assert_int_equal(dlock__grpc_parse_timetolive(withkeys.d, withkeys.n, &ttl, &ks),
                   DLOCK_EBACKEND);
  assert_int_equal(ttl, -1);
  assert_true(ks.n == 0 && !ks.buf && !ks.k);
  /* Past MaxLeaseTTL: no answer etcd gives. */
  pb big = {.n = 0};
  w_header(&big, 3);
  w_int(&big, 3, DLOCK__ETCD_TTL_MAX_S + 1);
  assert_int_equal(dlock__grpc_parse_timetolive(big.d, big.n, &ttl, NULL), DLOCK_EBACKEND);
  assert_int_equal(ttl, -1);
  assert_int_equal(dlock__grpc_parse_keepalive(big.d, big.n, &id, &ttl), DLOCK_EBACKEND);
  /* Without a header. */
  pb bare = {.n = 0};
  w_int(&bare, 3, 5);
  assert_int_equal(dlock__grpc_parse_keepalive(bare.d, bare.n, &id, &ttl), DLOCK_EBACKEND);
  int64_t rev;
  assert_int_equal(dlock__grpc_parse_header(m.d, m.n, &rev), 0);
  assert_int_equal(rev, 3);
  assert_int_equal(dlock__grpc_parse_header(bare.d, bare.n, &rev), DLOCK_EBACKEND);
  /* A header read, then junk: no revision handed out. */
  pb junk = m;
  w_raw(&junk, "\x0b", 1);
  rev = 99;
  assert_int_equal(dlock__grpc_parse_header(junk.d, junk.n, &rev), DLOCK_EBACKEND);
  assert_int_equal(rev, 0);
}

static void auth_answer(void **state) {
  (void)state;
  pb m = {.n = 0};
  char *tok = NULL;
  w_header(&m, 3);
  w_str(&m, 2, "hYlaSdUgeBLotXjo.17");
  assert_int_equal(dlock__grpc_parse_auth(m.d, m.n, &tok), 0);
  assert_string_equal(tok, "hYlaSdUgeBLotXjo.17");
  free(tok);
  /* A token that would break the header it goes in. */
  pb bad = {.n = 0};
  w_header(&bad, 3);
  w_str(&bad, 2, "a\r\nx-evil: 1");
  assert_int_equal(dlock__grpc_parse_auth(bad.d, bad.n, &tok), DLOCK_EBACKEND);
  assert_null(tok);
  pb none = {.n = 0};
  w_header(&none, 3);
  assert_int_equal(dlock__grpc_parse_auth(none.d, none.n, &tok), DLOCK_EBACKEND);
  assert_null(tok);
}

static void watch_answers(void **state) {
  (void)state;
  dlock__etcd_watch_ev ev;
  pb m = {.n = 0};
  w_header(&m, 10);
  w_int(&m, 3, 1);
  assert_int_equal(dlock__grpc_parse_watch(m.d, m.n, &ev), 0);
  assert_true(ev.created);
  assert_false(ev.canceled);
  assert_int_equal(ev.revision, 10);
  assert_int_equal(ev.watch_id, 0);
  assert_int_equal(ev.deletes, 0);

  /* Two events: a PUT (type 0, left out) and a DELETE. */
  pb e = {.n = 0}, e1 = {.n = 0}, e2 = {.n = 0}, kv = {.n = 0};
  w_header(&e, 12);
  kv_of(&kv, "k", 11, 11, "v", 0);
  w_sub(&e1, 2, &kv);
  w_sub(&e, 11, &e1);
  w_int(&e2, 1, 1);
  w_sub(&e2, 2, &kv);
  w_sub(&e, 11, &e2);
  assert_int_equal(dlock__grpc_parse_watch(e.d, e.n, &ev), 0);
  assert_int_equal(ev.deletes, 1);
  assert_int_equal(ev.revision, 12);

  /* Compacted: canceled with the oldest revision left. */
  pb c = {.n = 0};
  w_header(&c, 20);
  w_int(&c, 4, 1);
  w_int(&c, 5, 15);
  assert_int_equal(dlock__grpc_parse_watch(c.d, c.n, &ev), 0);
  assert_true(ev.canceled);
  assert_int_equal(ev.compact_revision, 15);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_NONE);

  /* Refused: created, canceled, the status in cancel_reason. */
  pb r = {.n = 0};
  w_header(&r, 20);
  w_int(&r, 2, -1);
  w_int(&r, 3, 1);
  w_int(&r, 4, 1);
  w_str(&r, 6, "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token");
  assert_int_equal(dlock__grpc_parse_watch(r.d, r.n, &ev), 0);
  assert_int_equal(ev.watch_id, -1);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_REAUTH);
  assert_non_null(strstr(ev.msg, "invalid auth token"));
  pb p = {.n = 0};
  w_header(&p, 20);
  w_int(&p, 4, 1);
  w_str(&p, 6, "rpc error: code = PermissionDenied desc = etcdserver: permission denied");
  assert_int_equal(dlock__grpc_parse_watch(p.d, p.n, &ev), 0);
  assert_int_equal(ev.fault, DLOCK__ETCD_F_AUTH);

  /* created must be a bool; no header is no answer. */
  pb b = {.n = 0};
  w_header(&b, 20);
  w_int(&b, 3, 2);
  assert_int_equal(dlock__grpc_parse_watch(b.d, b.n, &ev), DLOCK_EBACKEND);
  pb nh = {.n = 0};
  w_int(&nh, 3, 1);
  assert_int_equal(dlock__grpc_parse_watch(nh.d, nh.n, &ev), DLOCK_EBACKEND);
  assert_false(ev.created);
}

/* ---- answers captured from etcd 3.4.23 ----
 *
 * One session against a throwaway member: two leases granted (L1, L2),
 * L1's try on an empty queue, L2's try on the busy queue, L2's enqueue,
 * a keepalive of L1, a watch on L1's key from after the enqueue while
 * it was deleted, L2 revoked, its timetolive and keepalive then, and a
 * status.  Each is the message body, without its 5-byte prefix. */

#define CAP_HDR "0a1a088dd28be0bdeffddb2610dcbfa280f2fb8e803c18"
#define CAP_L1 INT64_C(2295888260512831516) /* 0x1fdca23573db581c */
#define CAP_L2 INT64_C(2295888260512831647)
#define CAP_KEY1 "dlock/capture-x/1fdca23573db581c"

/* HEX as bytes into OUT (at most MAX); returns the length. */
static size_t unhex(const char *hex, uint8_t *out, size_t max) {
  size_t n = strlen(hex) / 2;
  assert_true(n <= max);
  for (size_t i = 0; i < n; i++) {
    unsigned x;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &x), 1);
    out[i] = (uint8_t)x;
  }
  return n;
}

static void captured_leases(void **state) {
  (void)state;
  uint8_t m[512];
  int64_t id = 0, ttl = 0, ms = 0, rev = 0;
  size_t n = unhex(CAP_HDR "b4b1062004109cb0ed9ed7c6a8ee1f181e", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_grant(m, n, &id, &ttl), 0);
  assert_int_equal(id, CAP_L1);
  assert_int_equal(ttl, 30);
  n = unhex(CAP_HDR "a7b7062004109cb0ed9ed7c6a8ee1f181e", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_keepalive(m, n, &id, &ttl), 0);
  assert_int_equal(id, CAP_L1);
  assert_int_equal(ttl, 30);
  /* Revoked: the keepalive leaves TTL out, timetolive says -1. */
  n = unhex(CAP_HDR "a3ba062004109fb1ed9ed7c6a8ee1f", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_keepalive(m, n, &id, &ttl), 0);
  assert_int_equal(id, CAP_L2);
  assert_int_equal(ttl, 0);
  n = unhex(CAP_HDR "9eba062004109fb1ed9ed7c6a8ee1f18ffffffffffffffffff01", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_timetolive(m, n, &ms, NULL), 0);
  assert_int_equal(ms, -1);
  /* LeaseRevokeResponse and StatusResponse: a header (and for the
   * status, fields dlock does not read). */
  n = unhex(CAP_HDR "98ba062004", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_header(m, n, &rev), 0);
  assert_int_equal(rev, 105752);
  n = unhex(CAP_HDR "b0ba0620041206332e342e32331880809a0320dcbfa280f2fb8e803c289dc9063004389dc9"
                    "064880809a03",
            m, sizeof m);
  assert_int_equal(dlock__grpc_parse_header(m, n, &rev), 0);
  assert_int_equal(rev, 105776);
}

static void captured_txns(void **state) {
  (void)state;
  uint8_t m[512];
  dlock__etcd_txn t;
  /* The try on an empty queue: granted at the txn's revision. */
  size_t n = unhex(CAP_HDR "b3b306200410011a0812060a0418b3b306", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_txn(m, n, &t), 0);
  assert_int_equal(t.revision, 104883);
  assert_int_equal(t.succeeded, 1);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_PUT);
  dlock__etcd_txn_free(&t);

  /* The second lease's try: refused, the failure's range naming the
   * holder. */
  n = unhex(CAP_HDR "d2b40620041a510a4f0a0418d2b40612450a20646c6f636b2f636170747572652d782f316664"
                    "6361323335373364623538316310b3b30618b3b30620012a0d6f776e65722d310a6c6162656c"
                    "309cb0ed9ed7c6a8ee1f2001",
            m, sizeof m);
  assert_int_equal(dlock__grpc_parse_txn(m, n, &t), 0);
  assert_int_equal(t.succeeded, 0);
  assert_int_equal(t.nres, 1);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[0].count, 1);
  assert_int_equal(t.res[0].nkvs, 1);
  const dlock__etcd_kv *kv = &t.res[0].kvs[0];
  assert_string_equal(kv->key, CAP_KEY1);
  assert_string_equal(kv->value, "owner-1\nlabel");
  assert_int_equal(kv->create_revision, 104883);
  assert_int_equal(kv->mod_revision, 104883);
  assert_int_equal(kv->version, 1);
  assert_int_equal(kv->lease, CAP_L1);
  dlock__etcd_txn_free(&t);

  /* The enqueue: put, and the first of a queue of two is L1's key. */
  n = unhex(CAP_HDR "eab506200410011a0812060a0418eab5061a530a510a0418eab50612450a20646c6f636b2f63"
                    "6170747572652d782f3166646361323335373364623538316310b3b30618b3b30620012a0d6f"
                    "776e65722d310a6c6162656c309cb0ed9ed7c6a8ee1f18012002",
            m, sizeof m);
  assert_int_equal(dlock__grpc_parse_txn(m, n, &t), 0);
  assert_int_equal(t.revision, 105194);
  assert_int_equal(t.succeeded, 1);
  assert_int_equal(t.nres, 2);
  assert_int_equal(t.res[0].op, DLOCK__ETCD_OP_PUT);
  assert_int_equal(t.res[1].op, DLOCK__ETCD_OP_RANGE);
  assert_int_equal(t.res[1].count, 2);
  assert_int_equal(t.res[1].nkvs, 1);
  assert_int_equal(t.res[1].kvs[0].create_revision, 104883);
  dlock__etcd_txn_free(&t);
}

static void captured_watch(void **state) {
  (void)state;
  uint8_t m[512];
  dlock__etcd_watch_ev ev;
  size_t n = unhex(CAP_HDR "d4b80620041801", m, sizeof m);
  assert_int_equal(dlock__grpc_parse_watch(m, n, &ev), 0);
  assert_true(ev.created);
  assert_int_equal(ev.revision, 105556);
  assert_int_equal(ev.deletes, 0);
  n = unhex(CAP_HDR "fbb80620045a2a080112260a20646c6f636b2f636170747572652d782f31666463613233353733"
                    "64623538316318fbb806",
            m, sizeof m);
  assert_int_equal(dlock__grpc_parse_watch(m, n, &ev), 0);
  assert_false(ev.created);
  assert_int_equal(ev.deletes, 1);
  assert_int_equal(ev.revision, 105595);
}

/* Refusals come as trailers-only answers (HTTP 200, grpc-status in the
 * headers): these two, as etcd 3.4.23 sent them. */
static void captured_refusals(void **state) {
  (void)state;
  char m[128];
  const char *v = "etcdserver: requested lease not found";
  dlock__grpc_message(v, strlen(v), m, sizeof m);
  assert_int_equal(dlock__etcd_grpc_fault(dlock__grpc_status("5", 1), m),
                   DLOCK__ETCD_F_LEASE_GONE);
  v = "etcdserver: too many operations in txn request";
  dlock__grpc_message(v, strlen(v), m, sizeof m);
  assert_int_equal(dlock__etcd_grpc_fault(dlock__grpc_status("3", 1), m),
                   DLOCK__ETCD_F_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(txn_try_request),
      cmocka_unit_test(txn_queue_and_check_requests),
      cmocka_unit_test(small_requests),
      cmocka_unit_test(frames),
      cmocka_unit_test(unary_answers),
      cmocka_unit_test(timeouts),
      cmocka_unit_test(statuses_and_messages),
      cmocka_unit_test(txn_answer),
      cmocka_unit_test(txn_answer_bounds),
      cmocka_unit_test(lease_answers),
      cmocka_unit_test(auth_answer),
      cmocka_unit_test(watch_answers),
      cmocka_unit_test(captured_leases),
      cmocka_unit_test(captured_txns),
      cmocka_unit_test(captured_watch),
      cmocka_unit_test(captured_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
