/* etcd over gRPC: protobuf messages and gRPC framing (no I/O); see
 * etcd-grpc-codec.h.  Field numbers are those of etcd 3.4's rpc.proto and
 * kv.proto. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/etcd/etcd-grpc-codec.h"

/* ---- writing ---- */

void dlock__grpc_buf_free(dlock__grpc_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

static void put_raw(dlock__grpc_buf *b, const void *p, size_t n) {
  if (b->bad)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
      b->bad = true;
      return;
    }
    b->data = d;
    b->cap = cap;
  }
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void put_varint(dlock__grpc_buf *b, uint64_t v) {
  uint8_t t[10];
  size_t n = 0;
  do {
    t[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v)
      t[n] |= 0x80;
    n++;
  } while (v);
  put_raw(b, t, n);
}

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static void put_tag(dlock__grpc_buf *b, unsigned field, unsigned wt) {
  put_varint(b, (uint64_t)field << 3 | wt);
}

/* An int64 or enum field; proto3 leaves out zeros, except in a oneof,
 * where being there is what says which member is set (ALWAYS). */
static void put_int(dlock__grpc_buf *b, unsigned field, int64_t v, bool always) {
  if (!v && !always)
    return;
  put_tag(b, field, WT_VARINT);
  put_varint(b, (uint64_t)v);
}

static void put_bytes(dlock__grpc_buf *b, unsigned field, const void *p, size_t n) {
  if (!n)
    return;
  put_tag(b, field, WT_LEN);
  put_varint(b, n);
  put_raw(b, p, n);
}

/* Nested messages are written in place: a length field of five bytes (a
 * varint padded with continuation bits, which decoders must take) is
 * reserved and filled once the body is known, so nothing is copied. */
static size_t sub_begin(dlock__grpc_buf *b, unsigned field) {
  put_tag(b, field, WT_LEN);
  size_t at = b->len;
  put_raw(b, "\x80\x80\x80\x80\x00", 5);
  return at;
}

static void sub_end(dlock__grpc_buf *b, size_t at) {
  if (b->bad)
    return;
  uint64_t n = b->len - at - 5;
  for (int i = 0; i < 5; i++) {
    b->data[at + (size_t)i] = (uint8_t)((n >> (7 * i)) & 0x7f) | (i < 4 ? 0x80 : 0);
  }
}

/* Every request is one gRPC message: a prefix of a zero byte (not
 * compressed) and the body's length, big-endian. */
static void msg_begin(dlock__grpc_buf *b) {
  b->len = 0;
  b->bad = false;
  put_raw(b, "\0\0\0\0\0", 5);
}

static void msg_end(dlock__grpc_buf *b) {
  if (b->bad)
    return;
  uint32_t n = (uint32_t)(b->len - 5);
  b->data[1] = (uint8_t)(n >> 24);
  b->data[2] = (uint8_t)(n >> 16);
  b->data[3] = (uint8_t)(n >> 8);
  b->data[4] = (uint8_t)n;
}

/* Compare: result 1 (EQUAL = 0, left out), target 2 (VERSION 0, CREATE
 * 1, MOD 2, VALUE 3), key 3, oneof create_revision 5 / mod_revision 6 /
 * value 7, range_end 64. */
static void put_cmp(dlock__grpc_buf *b, const dlock__etcd_cmp *c) {
  size_t at = sub_begin(b, 1);
  put_int(b, 2, c->target == DLOCK__ETCD_CMP_CREATE ? 1 : c->target == DLOCK__ETCD_CMP_MOD ? 2 : 3,
          false);
  put_bytes(b, 3, c->key, c->keylen);
  if (c->target == DLOCK__ETCD_CMP_CREATE)
    put_int(b, 5, c->rev, true);
  else if (c->target == DLOCK__ETCD_CMP_MOD)
    put_int(b, 6, c->rev, true);
  else {
    /* A oneof's empty bytes are still written, or the compare would have
     * no target value. */
    put_tag(b, 7, WT_LEN);
    put_varint(b, c->valuelen);
    put_raw(b, c->value, c->valuelen);
  }
  if (c->end)
    put_bytes(b, 64, c->end, c->endlen);
  sub_end(b, at);
}

/* RequestOp (oneof): request_range 1, request_put 2, request_delete_range
 * 3.  RangeRequest: key 1, range_end 2, limit 3, revision 4, sort_order 5
 * (ASCEND 1, DESCEND 2), sort_target 6 (CREATE 2), keys_only 8,
 * max_create_revision 13.  PutRequest: key 1, value 2, lease 3.
 * DeleteRangeRequest: key 1, range_end 2. */
static void put_op(dlock__grpc_buf *b, unsigned field, const dlock__etcd_reqop *op) {
  size_t at = sub_begin(b, field);
  size_t in = sub_begin(b, op->op == DLOCK__ETCD_OP_RANGE ? 1 : op->op == DLOCK__ETCD_OP_PUT ? 2
                                                                                             : 3);
  put_bytes(b, 1, op->key, op->keylen);
  if (op->op == DLOCK__ETCD_OP_PUT) {
    put_bytes(b, 2, op->value, op->valuelen);
    put_int(b, 3, op->lease, false);
  } else {
    if (op->end)
      put_bytes(b, 2, op->end, op->endlen);
  }
  if (op->op == DLOCK__ETCD_OP_RANGE) {
    put_int(b, 3, op->limit, false);
    put_int(b, 4, op->revision, false);
    if (op->sort != DLOCK__ETCD_SORT_NONE) {
      put_int(b, 5, op->sort == DLOCK__ETCD_SORT_CREATE_DESCEND ? 2 : 1, false);
      put_int(b, 6, 2, false);
    }
    put_int(b, 8, op->keys_only ? 1 : 0, false);
    put_int(b, 13, op->max_create_revision, false);
  }
  sub_end(b, in);
  sub_end(b, at);
}

/* TxnRequest: compare 1, success 2, failure 3. */
void dlock__grpc_req_txn(dlock__grpc_buf *b, const dlock__etcd_txreq *t) {
  msg_begin(b);
  for (size_t i = 0; i < t->ncmp; i++)
    put_cmp(b, &t->cmp[i]);
  for (size_t i = 0; i < t->nok; i++)
    put_op(b, 2, &t->ok[i]);
  for (size_t i = 0; i < t->nko; i++)
    put_op(b, 3, &t->ko[i]);
  msg_end(b);
}

/* LeaseGrantRequest: TTL 1 (ID 2 left to the server). */
void dlock__grpc_req_grant(dlock__grpc_buf *b, int64_t ttl_s) {
  msg_begin(b);
  put_int(b, 1, ttl_s, false);
  msg_end(b);
}

void dlock__grpc_req_lease(dlock__grpc_buf *b, int64_t lease) {
  msg_begin(b);
  put_int(b, 1, lease, false);
  msg_end(b);
}

/* LeaseTimeToLiveRequest: ID 1, keys 2. */
void dlock__grpc_req_timetolive(dlock__grpc_buf *b, int64_t lease, bool keys) {
  msg_begin(b);
  put_int(b, 1, lease, false);
  put_int(b, 2, keys, false);
  msg_end(b);
}

/* AuthenticateRequest: name 1, password 2. */
void dlock__grpc_req_auth(dlock__grpc_buf *b, const char *user, const char *password) {
  msg_begin(b);
  put_bytes(b, 1, user ? user : "", user ? strlen(user) : 0);
  put_bytes(b, 2, password ? password : "", password ? strlen(password) : 0);
  msg_end(b);
}

void dlock__grpc_req_status(dlock__grpc_buf *b) {
  msg_begin(b);
  msg_end(b);
}

/* WatchRequest: create_request 1.  WatchCreateRequest: key 1,
 * start_revision 3, filters 5 (packed enums; NOPUT = 0). */
void dlock__grpc_req_watch(dlock__grpc_buf *b, const char *key, int64_t start_rev) {
  msg_begin(b);
  size_t at = sub_begin(b, 1);
  put_bytes(b, 1, key, strlen(key));
  put_int(b, 3, start_rev, false);
  put_bytes(b, 5, "\0", 1);
  sub_end(b, at);
  msg_end(b);
}

/* ---- framing ---- */

int dlock__grpc_frame(const uint8_t *in, size_t n, const uint8_t **msg, size_t *msglen,
                      size_t *used) {
  if (n < 5)
    return 0;
  uint32_t len = (uint32_t)in[1] << 24 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 8 | in[4];
  if (in[0] != 0 || len > DLOCK__GRPC_MSG_MAX)
    return -1;
  if (n - 5 < len)
    return 0;
  *msg = in + 5;
  *msglen = len;
  *used = 5 + (size_t)len;
  return 1;
}

void dlock__grpc_timeout(int64_t ns, char *out) {
  /* Units from the finest; the first whose count fits 8 digits. */
  static const struct {
    int64_t ns;
    char unit;
  } units[] = {{1000, 'u'}, {1000000, 'm'}, {1000000000, 'S'}, {60000000000, 'M'},
               {3600000000000, 'H'}};
  if (ns < 1000)
    ns = 1000;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    int64_t v = ns / units[i].ns + (ns % units[i].ns != 0);
    if (v <= 99999999 || i == sizeof units / sizeof units[0] - 1) {
      if (v > 99999999)
        v = 99999999;
      snprintf(out, 12, "%d%c", (int)v, units[i].unit);
      return;
    }
  }
}

int dlock__grpc_status(const char *v, size_t n) {
  if (n == 0 || n > 3)
    return -1;
  int code = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    code = code * 10 + (v[i] - '0');
  }
  return code;
}

void dlock__grpc_message(const char *v, size_t n, char *out, size_t outlen) {
  if (!outlen)
    return;
  size_t o = 0;
  for (size_t i = 0; i < n && o + 1 < outlen; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c == '%' && i + 2 < n && isxdigit((unsigned char)v[i + 1]) &&
        isxdigit((unsigned char)v[i + 2])) {
      char hex[3] = {v[i + 1], v[i + 2], '\0'};
      c = (unsigned char)strtoul(hex, NULL, 16);
      i += 2;
    }
    out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  out[o] = '\0';
}

/* ---- reading ---- */

/* A message being read: the bytes left. */
typedef struct rd {
  const uint8_t *p, *end;
} rd;

static int bad_answer(const char *what) {
  return dlock_seterr(DLOCK_EBACKEND, "etcd: malformed %s answer", what);
}

static bool get_varint(rd *r, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end)
      return false;
    uint8_t c = *r->p++;
    x |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      /* The tenth byte holds one bit: more would not fit 64. */
      if (shift == 63 && c > 1)
        return false;
      *v = x;
      return true;
    }
  }
  return false;
}

/* One field: its number, wire type, and for WT_VARINT the value, for
 * WT_LEN the bytes (SUB); other wire types are skipped over.  false at the
 * end of the message (R empty) or on malformed bytes (*BAD). */
typedef struct field {
  unsigned num, wt;
  uint64_t v;
  rd sub;
} field;

static bool next_field(rd *r, field *f, bool *bad) {
  if (r->p >= r->end)
    return false;
  uint64_t tag;
  if (!get_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > 536870911u) {
    *bad = true;
    return false;
  }
  f->num = (unsigned)(tag >> 3);
  f->wt = (unsigned)(tag & 7);
  switch (f->wt) {
  case WT_VARINT:
    if (!get_varint(r, &f->v))
      break;
    return true;
  case WT_I64:
  case WT_I32: {
    size_t k = f->wt == WT_I64 ? 8 : 4;
    if ((size_t)(r->end - r->p) < k)
      break;
    r->p += k;
    return true;
  }
  case WT_LEN: {
    uint64_t n;
    if (!get_varint(r, &n) || n > (uint64_t)(r->end - r->p))
      break;
    f->sub.p = r->p;
    f->sub.end = r->p + n;
    r->p += n;
    return true;
  }
  default: /* groups (3, 4) are in no message of etcd's */
    break;
  }
  *bad = true;
  return false;
}

/* A varint field as an int64 within [LO, HI]; a field of another wire
 * type where a number belongs is malformed too. */
static bool int_in(const field *f, int64_t lo, int64_t hi, int64_t *out) {
  if (f->wt != WT_VARINT)
    return false;
  int64_t x = (int64_t)f->v;
  if (x < lo || x > hi)
    return false;
  *out = x;
  return true;
}

/* ResponseHeader: revision 3. */
static bool read_header(rd r, int64_t *revision) {
  field f;
  bool bad = false;
  while (next_field(&r, &f, &bad))
    if (f.num == 3 && !int_in(&f, 0, DLOCK__ETCD_REV_MAX, revision))
      return false;
  return !bad;
}

/* A NUL-terminated malloc'd copy of F's bytes. */
static char *dup_bytes(const field *f, size_t *n) {
  size_t len = (size_t)(f->sub.end - f->sub.p);
  char *s = malloc(len + 1);
  if (!s)
    return NULL;
  memcpy(s, f->sub.p, len);
  s[len] = '\0';
  *n = len;
  return s;
}

/* mvccpb.KeyValue: key 1, create_revision 2, mod_revision 3, version 4,
 * value 5, lease 6.  0, -1 malformed, -2 out of memory. */
static int read_kv(rd r, dlock__etcd_kv *kv) {
  field f;
  bool bad = false;
  while (next_field(&r, &f, &bad)) {
    bool ok = true;
    switch (f.num) {
    case 1:
    case 5: {
      if (f.wt != WT_LEN)
        return -1;
      char **dst = f.num == 1 ? &kv->key : &kv->value;
      size_t *dl = f.num == 1 ? &kv->keylen : &kv->valuelen;
      free(*dst);
      if (!(*dst = dup_bytes(&f, dl)))
        return -2;
      break;
    }
    case 2:
      ok = int_in(&f, 0, DLOCK__ETCD_REV_MAX, &kv->create_revision);
      break;
    case 3:
      ok = int_in(&f, 0, DLOCK__ETCD_REV_MAX, &kv->mod_revision);
      break;
    case 4:
      ok = int_in(&f, 0, INT64_MAX, &kv->version);
      break;
    case 6:
      ok = int_in(&f, INT64_MIN, INT64_MAX, &kv->lease);
      break;
    default:
      break;
    }
    if (!ok)
      return -1;
  }
  if (bad)
    return -1;
  if (!kv->value && !(kv->value = calloc(1, 1)))
    return -2;
  return 0;
}

/* Append one zeroed element to *ARR of *N (of SIZE bytes each), growing
 * it by doubling; NULL when out of memory. */
static void *grow(void **arr, size_t *n, size_t *cap, size_t size) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 4;
    void *a = realloc(*arr, c * size);
    if (!a)
      return NULL;
    *arr = a;
    *cap = c;
  }
  void *e = (char *)*arr + *n * size;
  memset(e, 0, size);
  (*n)++;
  return e;
}

/* ResponseOp (oneof): response_range 1 (RangeResponse: kvs 2, count 4),
 * response_put 2, response_delete_range 3 (deleted 2). */
static int read_opres(rd r, dlock__etcd_opres *o) {
  field f, g;
  bool bad = false;
  while (next_field(&r, &f, &bad)) {
    if (f.num < 1 || f.num > 3)
      continue;
    if (f.wt != WT_LEN || o->op)
      return -1; /* one of the oneof, once */
    o->op = f.num == 1 ? DLOCK__ETCD_OP_RANGE : f.num == 2 ? DLOCK__ETCD_OP_PUT
                                                           : DLOCK__ETCD_OP_DELETE;
    size_t cap = 0;
    bool bad2 = false;
    while (next_field(&f.sub, &g, &bad2)) {
      if (o->op == DLOCK__ETCD_OP_RANGE && g.num == 2) {
        if (g.wt != WT_LEN)
          return -1;
        dlock__etcd_kv *kv = grow((void **)&o->kvs, &o->nkvs, &cap, sizeof *kv);
        if (!kv)
          return -2;
        int rc = read_kv(g.sub, kv);
        if (rc < 0)
          return rc;
      } else if (o->op == DLOCK__ETCD_OP_RANGE && g.num == 4) {
        if (!int_in(&g, 0, INT64_MAX, &o->count))
          return -1;
      } else if (o->op == DLOCK__ETCD_OP_DELETE && g.num == 2) {
        if (!int_in(&g, 0, INT64_MAX, &o->deleted))
          return -1;
      }
    }
    if (bad2)
      return -1;
  }
  if (bad || !o->op)
    return -1;
  return 0;
}

static int nomem(void) { return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory"); }

/* TxnResponse: header 1, succeeded 2, responses 3. */
int dlock__grpc_parse_txn(const uint8_t *m, size_t n, dlock__etcd_txn *t) {
  memset(t, 0, sizeof *t);
  rd r = {m, m + n};
  field f;
  bool bad = false, hdr = false;
  size_t cap = 0;
  int rc = 0;
  while (rc == 0 && next_field(&r, &f, &bad)) {
    if (f.num == 1) {
      hdr = f.wt == WT_LEN && read_header(f.sub, &t->revision);
      if (!hdr)
        rc = -1;
    } else if (f.num == 2) {
      int64_t s = 0;
      if (!int_in(&f, 0, 1, &s))
        rc = -1;
      t->succeeded = (int)s;
    } else if (f.num == 3) {
      dlock__etcd_opres *o =
          f.wt == WT_LEN ? grow((void **)&t->res, &t->nres, &cap, sizeof *o) : NULL;
      rc = f.wt != WT_LEN ? -1 : !o ? -2 : read_opres(f.sub, o);
    }
  }
  /* The store's revision starts at 1 and a txn answer always carries
   * it: a granted lock's token is this number. */
  if (rc == 0 && (bad || !hdr || t->revision < 1))
    rc = -1;
  if (rc < 0) {
    dlock__etcd_txn_free(t);
    return rc == -2 ? nomem() : bad_answer("txn");
  }
  return 0;
}

/* Numbered int fields of a flat answer with a header (field 1): VALS[i]
 * gets field NUMS[i] within [LO[i], HI[i]]. */
static int read_flat(const uint8_t *m, size_t n, const char *what, size_t k,
                     const unsigned *nums, const int64_t *lo, const int64_t *hi, int64_t *vals,
                     char **str, unsigned strnum) {
  rd r = {m, m + n};
  field f;
  bool bad = false, hdr = false;
  int64_t rev = 0;
  while (next_field(&r, &f, &bad)) {
    if (f.num == 1) {
      if (f.wt != WT_LEN || !read_header(f.sub, &rev))
        return bad_answer(what);
      hdr = true;
      continue;
    }
    if (str && f.num == strnum) {
      size_t len;
      if (f.wt != WT_LEN)
        return bad_answer(what);
      free(*str);
      if (!(*str = dup_bytes(&f, &len)))
        return nomem();
      continue;
    }
    for (size_t i = 0; i < k; i++)
      if (f.num == nums[i] && !int_in(&f, lo[i], hi[i], &vals[i]))
        return bad_answer(what);
  }
  if (bad || !hdr)
    return bad_answer(what);
  return 0;
}

/* LeaseGrantResponse: header 1, ID 2, TTL 3, error 4. */
int dlock__grpc_parse_grant(const uint8_t *m, size_t n, int64_t *id, int64_t *ttl_s) {
  static const unsigned nums[] = {2, 3};
  static const int64_t lo[] = {INT64_MIN, INT64_MIN}, hi[] = {INT64_MAX, INT64_MAX};
  int64_t v[2] = {0, 0};
  char *err = NULL;
  int rc = read_flat(m, n, "lease grant", 2, nums, lo, hi, v, &err, 4);
  if (rc == 0 && err && err[0])
    rc = dlock_seterr(DLOCK_EBACKEND, "etcd: lease grant refused: %.200s", err);
  else if (rc == 0 && (v[0] <= 0 || v[1] <= 0 || v[1] > DLOCK__ETCD_TTL_MAX_S))
    rc = bad_answer("lease grant");
  free(err);
  if (rc == 0) {
    *id = v[0];
    *ttl_s = v[1];
  }
  return rc;
}

/* LeaseKeepAliveResponse: header 1, ID 2, TTL 3. */
int dlock__grpc_parse_keepalive(const uint8_t *m, size_t n, int64_t *id, int64_t *ttl_s) {
  static const unsigned nums[] = {2, 3};
  static const int64_t lo[] = {INT64_MIN, INT64_MIN}, hi[] = {INT64_MAX, DLOCK__ETCD_TTL_MAX_S};
  int64_t v[2] = {0, 0};
  *ttl_s = 0;
  int rc = read_flat(m, n, "lease keepalive", 2, nums, lo, hi, v, NULL, 0);
  if (rc == 0) {
    *id = v[0];
    *ttl_s = v[1] > 0 ? v[1] : 0;
  }
  return rc;
}

/* LeaseTimeToLiveResponse: header 1, ID 2, TTL 3 (-1: no such lease),
 * grantedTTL 4, keys 5 (repeated bytes). */
int dlock__grpc_parse_timetolive(const uint8_t *m, size_t n, int64_t *ttl_ms,
                                 dlock__etcd_keys *keys) {
  static const unsigned nums[] = {3};
  static const int64_t lo[] = {INT64_MIN}, hi[] = {DLOCK__ETCD_TTL_MAX_S};
  int64_t v[1] = {0};
  *ttl_ms = -1;
  int rc = read_flat(m, n, "lease timetolive", 1, nums, lo, hi, v, NULL, 0);
  if (rc == 0 && keys) {
    rd r = {m, m + n};
    field f;
    bool bad = false;
    while (rc == 0 && next_field(&r, &f, &bad))
      if (f.num == 5)
        rc = f.wt != WT_LEN ? bad_answer("lease timetolive")
                            : dlock__etcd_keys_add(keys, (const char *)f.sub.p,
                                                   (size_t)(f.sub.end - f.sub.p));
    if (rc == 0)
      rc = dlock__etcd_keys_sort(keys);
    if (rc < 0)
      dlock__etcd_keys_free(keys);
  }
  if (rc == 0)
    *ttl_ms = v[0] < 0 ? -1 : v[0] * 1000;
  return rc;
}

/* AuthenticateResponse: header 1, token 2. */
int dlock__grpc_parse_auth(const uint8_t *m, size_t n, char **token) {
  *token = NULL;
  int rc = read_flat(m, n, "authenticate", 0, NULL, NULL, NULL, NULL, token, 2);
  if (rc == 0 && (!*token || !(*token)[0] || strlen(*token) != strcspn(*token, "\r\n")))
    rc = bad_answer("authenticate");
  if (rc < 0) {
    free(*token);
    *token = NULL;
  }
  return rc;
}

int dlock__grpc_parse_header(const uint8_t *m, size_t n, int64_t *revision) {
  *revision = 0;
  rd r = {m, m + n};
  field f;
  bool bad = false, hdr = false;
  while (next_field(&r, &f, &bad))
    if (f.num == 1) {
      if (f.wt != WT_LEN || !read_header(f.sub, revision))
        bad = true;
      hdr = true;
    }
  if (bad || !hdr) {
    *revision = 0;
    return bad_answer("status");
  }
  return 0;
}

/* WatchResponse: header 1, watch_id 2, created 3, canceled 4,
 * compact_revision 5, cancel_reason 6, events 11 (mvccpb.Event: type 1,
 * DELETE = 1). */
int dlock__grpc_parse_watch(const uint8_t *m, size_t n, dlock__etcd_watch_ev *ev) {
  memset(ev, 0, sizeof *ev);
  rd r = {m, m + n};
  field f, g;
  bool bad = false, hdr = false, ok = true;
  int64_t b;
  while (ok && next_field(&r, &f, &bad)) {
    switch (f.num) {
    case 1:
      ok = hdr = f.wt == WT_LEN && read_header(f.sub, &ev->revision);
      break;
    case 2:
      /* -1 is the ID of a watch refused at creation. */
      ok = int_in(&f, -1, INT64_MAX, &ev->watch_id);
      break;
    case 3:
    case 4:
      ok = int_in(&f, 0, 1, &b);
      if (f.num == 3)
        ev->created = (int)b;
      else
        ev->canceled = (int)b;
      break;
    case 5:
      ok = int_in(&f, 0, DLOCK__ETCD_REV_MAX, &ev->compact_revision);
      break;
    case 6: {
      /* Plain text, not percent-encoded: one line of it. */
      ok = f.wt == WT_LEN;
      size_t k = 0;
      for (const uint8_t *p = f.sub.p; ok && p < f.sub.end && k + 1 < sizeof ev->msg; p++)
        ev->msg[k++] = *p < 0x20 || *p == 0x7f ? '?' : (char)*p;
      ev->msg[k] = '\0';
      break;
    }
    case 11: {
      ok = f.wt == WT_LEN;
      bool bad2 = false;
      int64_t type = 0;
      while (ok && next_field(&f.sub, &g, &bad2))
        if (g.num == 1)
          ok = int_in(&g, 0, INT32_MAX, &type);
      ok = ok && !bad2;
      if (ok && type == 1)
        ev->deletes++;
      break;
    }
    default:
      break;
    }
  }
  if (!ok || bad || !hdr) {
    memset(ev, 0, sizeof *ev);
    return bad_answer("watch");
  }
  /* A watch the server refuses (bad token, no permission) comes back
   * created and canceled at once, the gRPC status only in cancel_reason;
   * a compaction says nothing else. */
  if (ev->canceled && !ev->compact_revision)
    ev->fault = dlock__etcd_reason_fault(ev->msg);
  return 0;
}

int dlock__grpc_unary(const uint8_t *in, size_t n, size_t *at, size_t *msglen) {
  if (n == 0)
    return 0;
  const uint8_t *m;
  size_t mn, used;
  if (dlock__grpc_frame(in, n, &m, &mn, &used) != 1 || used != n)
    return -1;
  *at = (size_t)(m - in);
  *msglen = mn;
  return 1;
}
