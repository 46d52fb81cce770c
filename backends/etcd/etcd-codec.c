/* etcd backend: keys, base64, JSON bodies and answers (no I/O); see
 * etcd-codec.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backends/etcd/etcd-codec.h"

/* ---- keys ---- */

char *dlock__etcd_lock_name(const char *prefix, const char *key, size_t keylen) {
  /* The client's prefix is NULL when the URL sets none. */
  return dlock__escape_slash(prefix ? prefix : DLOCK__ETCD_DEFAULT_PREFIX, key, keylen, "");
}

char *dlock__etcd_lock_key(const char *name, int64_t lease) {
  /* Go's %x of an int64 writes a sign and the magnitude; the negation is
   * done unsigned so INT64_MIN does not overflow. */
  uint64_t mag = lease < 0 ? 0 - (uint64_t)lease : (uint64_t)lease;
  char *s = NULL;
  if (asprintf(&s, "%s/%s%" PRIx64, name, lease < 0 ? "-" : "", mag) < 0)
    return NULL;
  return s;
}

size_t dlock__etcd_prefix_end(const char *p, size_t n, char *out) {
  for (size_t i = n; i-- > 0;) {
    if ((unsigned char)p[i] != 0xff) {
      memcpy(out, p, i);
      out[i] = (char)((unsigned char)p[i] + 1);
      return i + 1;
    }
  }
  out[0] = '\0';
  return 1;
}

int dlock__etcd_key_of(const char *prefix, const char *store_key, size_t n, char *out,
                       size_t *outlen) {
  size_t pl = strlen(prefix);
  if (n <= pl || memcmp(store_key, prefix, pl) != 0)
    return 0;
  const char *name = store_key + pl;
  const char *slash = memchr(name, '/', n - pl);
  if (!slash || slash == name)
    return 0;
  size_t o = 0;
  for (const char *p = name; p < slash; p++) {
    char c = *p;
    if (c == '%') {
      /* Only what dlock__escape_slash writes: any other form would decode
       * to a key whose name is not this one. */
      if (slash - p < 3 || p[1] != '2' || (p[2] != '5' && p[2] != 'F'))
        return 0;
      c = p[2] == '5' ? '%' : '/';
      p += 2;
    }
    if (o == DLOCK_KEY_MAX)
      return 0;
    out[o++] = c;
  }
  out[o] = '\0';
  *outlen = o;
  return 1;
}

char *dlock__etcd_value(const char *owner, const char *label) {
  char *s = NULL;
  if (asprintf(&s, "%s\n%s", owner, label ? label : "") < 0)
    return NULL;
  return s;
}

static void copy_trunc(char *dst, size_t dstlen, const char *src, size_t n) {
  if (dstlen == 0)
    return;
  if (n > dstlen - 1)
    n = dstlen - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

void dlock__etcd_value_split(const char *v, size_t n, char *owner, size_t ownerlen,
                             char *label, size_t labellen) {
  const char *nl = v ? memchr(v, '\n', n) : NULL;
  if (!nl) {
    copy_trunc(owner, ownerlen, "", 0);
    copy_trunc(label, labellen, "", 0);
    return;
  }
  copy_trunc(owner, ownerlen, v, (size_t)(nl - v));
  copy_trunc(label, labellen, nl + 1, n - (size_t)(nl - v) - 1);
}

/* ---- the keys of a lease ---- */

int dlock__etcd_keys_add(dlock__etcd_keys *ks, const char *p, size_t n) {
  if (memchr(p, '\0', n))
    return 0;
  if (n + 1 > ks->cap - ks->len) {
    size_t cap = ks->cap ? ks->cap : 4096;
    while (n + 1 > cap - ks->len)
      cap *= 2;
    char *b = realloc(ks->buf, cap);
    if (!b)
      return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
    ks->buf = b;
    ks->cap = cap;
  }
  memcpy(ks->buf + ks->len, p, n);
  ks->buf[ks->len + n] = '\0';
  ks->len += n + 1;
  ks->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int dlock__etcd_keys_sort(dlock__etcd_keys *ks) {
  free(ks->k);
  ks->k = NULL;
  if (!ks->n)
    return 0;
  if (!(ks->k = malloc(ks->n * sizeof *ks->k))) {
    dlock__etcd_keys_free(ks);
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  }
  char *p = ks->buf;
  for (size_t i = 0; i < ks->n; i++, p += strlen(p) + 1)
    ks->k[i] = p;
  qsort(ks->k, ks->n, sizeof *ks->k, cmp_str);
  return 0;
}

bool dlock__etcd_keys_has(const dlock__etcd_keys *ks, const char *key) {
  return ks->k && key && bsearch(&key, ks->k, ks->n, sizeof *ks->k, cmp_str);
}

void dlock__etcd_keys_free(dlock__etcd_keys *ks) {
  free(ks->buf);
  free(ks->k);
  memset(ks, 0, sizeof *ks);
}

/* ---- request bodies ---- */

/* Builders take a NULL parent and return NULL (or -1) then, so a body is
 * built without a check after every call and out of memory shows up once,
 * at the end. */

static int add_str(cJSON *o, const char *name, const char *v) {
  return o && cJSON_AddStringToObject(o, name, v) ? 0 : -1;
}

static int add_i64(cJSON *o, const char *name, int64_t v) {
  char b[24];
  snprintf(b, sizeof b, "%" PRId64, v);
  return add_str(o, name, b);
}

static int add_bytes(cJSON *o, const char *name, const char *data, size_t len) {
  char *e = dlock__b64_encode(data, len);
  if (!e)
    return -1;
  int rc = add_str(o, name, e);
  free(e);
  return rc;
}

static int add_true(cJSON *o, const char *name) {
  return o && cJSON_AddTrueToObject(o, name) ? 0 : -1;
}

/* Append {"WHAT":{}} to ARR and return the inner object. */
static cJSON *push(cJSON *arr, const char *what) {
  if (!arr)
    return NULL;
  cJSON *o = cJSON_CreateObject();
  if (!o || !cJSON_AddItemToArray(arr, o)) {
    cJSON_Delete(o);
    return NULL;
  }
  return what ? cJSON_AddObjectToObject(o, what) : o;
}

static char *finish(cJSON *root, int bad) {
  char *s = bad || !root ? NULL : cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return s;
}

char *dlock__etcd_req_grant(int64_t ttl_s) {
  cJSON *root = cJSON_CreateObject();
  return finish(root, add_i64(root, "TTL", ttl_s));
}

char *dlock__etcd_req_lease(int64_t lease) {
  cJSON *root = cJSON_CreateObject();
  return finish(root, add_i64(root, "ID", lease));
}

char *dlock__etcd_req_timetolive(int64_t lease, bool keys) {
  cJSON *root = cJSON_CreateObject();
  return finish(root, add_i64(root, "ID", lease) | (keys ? add_true(root, "keys") : 0));
}

char *dlock__etcd_req_auth(const char *user, const char *password) {
  cJSON *root = cJSON_CreateObject();
  return finish(root, add_str(root, "name", user ? user : "") |
                          add_str(root, "password", password ? password : ""));
}

/* ---- txn descriptions ---- */

/* A description being built: room for NC compares, NOK and NKO requests
 * and a queue range of a name of up to NAMELEN bytes, in one block. */
typedef struct tx_build {
  dlock__etcd_txreq *t;
  char *spare; /* where the next queue range goes */
} tx_build;

static int tx_begin(tx_build *b, size_t nc, size_t nok, size_t nko, size_t namelen) {
  size_t sz = sizeof *b->t + nc * sizeof(dlock__etcd_cmp) +
              (nok + nko) * sizeof(dlock__etcd_reqop) + 2 * (namelen + 1);
  char *m = calloc(1, sz);
  b->t = (dlock__etcd_txreq *)m;
  if (!m)
    return -1;
  m += sizeof *b->t;
  b->t->cmp = (dlock__etcd_cmp *)m;
  m += nc * sizeof(dlock__etcd_cmp);
  b->t->ok = (dlock__etcd_reqop *)m;
  b->t->ko = b->t->ok + nok;
  b->spare = (char *)(b->t->ko + nko);
  return 0;
}

/* The range NAME/ .. prefix_end(NAME/), in the block's spare room.  A
 * txn's queue ranges are all of one name: a second one writes the same
 * bytes again. */
static void queue_range(tx_build *b, const char *name, const char **start, size_t *startlen,
                        const char **end, size_t *endlen) {
  size_t nl = strlen(name);
  char *s = b->spare, *e = s + nl + 1;
  memcpy(s, name, nl);
  s[nl] = '/';
  *start = s;
  *startlen = nl + 1;
  *endlen = dlock__etcd_prefix_end(s, nl + 1, e);
  *end = e;
}

/* create_revision of KEY (or of every key in the range NAME/ when KEY is
 * NULL) equals REV. */
static void cmp_create(tx_build *b, const char *key, const char *name, int64_t rev) {
  dlock__etcd_cmp *c = &b->t->cmp[b->t->ncmp++];
  c->target = DLOCK__ETCD_CMP_CREATE;
  c->rev = rev;
  if (key) {
    c->key = key;
    c->keylen = strlen(key);
  } else {
    queue_range(b, name, &c->key, &c->keylen, &c->end, &c->endlen);
  }
}

static dlock__etcd_reqop *op_push(tx_build *b, int failure, enum dlock__etcd_op op,
                                  const char *key) {
  dlock__etcd_reqop *o = failure ? &b->t->ko[b->t->nko++] : &b->t->ok[b->t->nok++];
  o->op = op;
  if (key) {
    o->key = key;
    o->keylen = strlen(key);
  }
  return o;
}

static void op_put(tx_build *b, int failure, const char *key, const char *value,
                   int64_t lease) {
  dlock__etcd_reqop *o = op_push(b, failure, DLOCK__ETCD_OP_PUT, key);
  o->value = value;
  o->valuelen = strlen(value);
  o->lease = lease;
}

/* The oldest key under NAME/, or with BEFORE > 0 the youngest one created
 * before revision BEFORE. */
static void op_range_first(tx_build *b, int failure, const char *name, int64_t before) {
  dlock__etcd_reqop *o = op_push(b, failure, DLOCK__ETCD_OP_RANGE, NULL);
  queue_range(b, name, &o->key, &o->keylen, &o->end, &o->endlen);
  o->sort = before > 0 ? DLOCK__ETCD_SORT_CREATE_DESCEND : DLOCK__ETCD_SORT_CREATE_ASCEND;
  o->limit = 1;
  if (before > 0) {
    o->max_create_revision = before - 1;
    o->keys_only = 1;
  }
}

dlock__etcd_txreq *dlock__etcd_tx_try(const char *name, const char *key, int64_t lease,
                                      const char *value) {
  tx_build b;
  if (tx_begin(&b, 1, 1, 1, strlen(name)) < 0)
    return NULL;
  cmp_create(&b, NULL, name, 0);
  op_put(&b, 0, key, value, lease);
  op_range_first(&b, 1, name, 0);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_enqueue(const char *name, const char *key, int64_t lease,
                                          const char *value) {
  tx_build b;
  if (tx_begin(&b, 1, 2, 2, strlen(name)) < 0)
    return NULL;
  cmp_create(&b, key, NULL, 0);
  op_put(&b, 0, key, value, lease);
  op_range_first(&b, 0, name, 0);
  op_push(&b, 1, DLOCK__ETCD_OP_RANGE, key);
  op_range_first(&b, 1, name, 0);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_queue(const char *name, const char *key, int64_t rev) {
  tx_build b;
  if (tx_begin(&b, 1, 2, 0, strlen(name)) < 0)
    return NULL;
  cmp_create(&b, key, NULL, rev);
  op_range_first(&b, 0, name, 0);
  op_range_first(&b, 0, name, rev);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_release(const char *key, int64_t rev) {
  tx_build b;
  if (tx_begin(&b, 1, 1, 0, 0) < 0)
    return NULL;
  cmp_create(&b, key, NULL, rev);
  op_push(&b, 0, DLOCK__ETCD_OP_DELETE, key);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_release_value(const char *key, const char *value) {
  tx_build b;
  if (tx_begin(&b, 1, 1, 0, 0) < 0)
    return NULL;
  dlock__etcd_cmp *c = &b.t->cmp[b.t->ncmp++];
  c->target = DLOCK__ETCD_CMP_VALUE;
  c->key = key;
  c->keylen = strlen(key);
  c->value = value;
  c->valuelen = strlen(value);
  op_push(&b, 0, DLOCK__ETCD_OP_DELETE, key);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_move(const char *key, int64_t rev, int64_t lease,
                                       const char *value) {
  tx_build b;
  if (tx_begin(&b, 1, 1, 0, 0) < 0)
    return NULL;
  cmp_create(&b, key, NULL, rev);
  op_put(&b, 0, key, value, lease);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_check(const char *const *keys, const int64_t *revs,
                                        size_t n) {
  tx_build b;
  if (tx_begin(&b, n, 0, n, 0) < 0)
    return NULL;
  for (size_t i = 0; i < n; i++)
    cmp_create(&b, keys[i], NULL, revs[i]);
  for (size_t i = 0; i < n; i++)
    op_push(&b, 1, DLOCK__ETCD_OP_RANGE, keys[i])->keys_only = 1;
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_first(const char *name) {
  tx_build b;
  if (tx_begin(&b, 0, 1, 0, strlen(name)) < 0)
    return NULL;
  op_range_first(&b, 0, name, 0);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_delete_all(const char *name) {
  tx_build b;
  if (tx_begin(&b, 0, 1, 0, strlen(name)) < 0)
    return NULL;
  dlock__etcd_reqop *o = op_push(&b, 0, DLOCK__ETCD_OP_DELETE, NULL);
  queue_range(&b, name, &o->key, &o->keylen, &o->end, &o->endlen);
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_page(const char *from, size_t fromlen, const char *end,
                                       size_t endlen, int64_t rev, int64_t limit) {
  tx_build b;
  if (tx_begin(&b, 0, 1, 0, 0) < 0)
    return NULL;
  dlock__etcd_reqop *o = op_push(&b, 0, DLOCK__ETCD_OP_RANGE, NULL);
  o->key = from;
  o->keylen = fromlen;
  o->end = end;
  o->endlen = endlen;
  o->limit = limit;
  o->revision = rev > 0 ? rev : 0;
  return b.t;
}

dlock__etcd_txreq *dlock__etcd_tx_break(const char *name, const char *key, int64_t create,
                                        int64_t mod) {
  tx_build b;
  if (tx_begin(&b, 2, 1, 1, strlen(name)) < 0)
    return NULL;
  cmp_create(&b, key, NULL, create);
  /* A put keeps create_revision: only mod_revision tells that the value
   * (the owner named) is still the one read. */
  dlock__etcd_cmp *c = &b.t->cmp[b.t->ncmp++];
  c->target = DLOCK__ETCD_CMP_MOD;
  c->key = key;
  c->keylen = strlen(key);
  c->rev = mod;
  op_push(&b, 0, DLOCK__ETCD_OP_DELETE, key);
  op_range_first(&b, 1, name, 0);
  return b.t;
}

/* ---- txn descriptions as JSON ---- */

static int json_range(cJSON *o, const char *key, size_t keylen, const char *end,
                      size_t endlen) {
  return add_bytes(o, "key", key, keylen) | (end ? add_bytes(o, "range_end", end, endlen) : 0);
}

static int json_cmp(cJSON *arr, const dlock__etcd_cmp *c) {
  static const char *const targets[] = {"", "CREATE", "MOD", "VALUE"};
  cJSON *o = push(arr, NULL);
  int bad = json_range(o, c->key, c->keylen, c->end, c->endlen) |
            add_str(o, "target", targets[c->target]) | add_str(o, "result", "EQUAL");
  if (c->target == DLOCK__ETCD_CMP_CREATE)
    bad |= add_i64(o, "create_revision", c->rev);
  else if (c->target == DLOCK__ETCD_CMP_MOD)
    bad |= add_i64(o, "mod_revision", c->rev);
  else
    bad |= add_bytes(o, "value", c->value, c->valuelen);
  return bad;
}

static int json_op(cJSON *arr, const dlock__etcd_reqop *op) {
  if (op->op == DLOCK__ETCD_OP_PUT) {
    cJSON *p = push(arr, "request_put");
    return add_bytes(p, "key", op->key, op->keylen) |
           add_bytes(p, "value", op->value, op->valuelen) |
           (op->lease ? add_i64(p, "lease", op->lease) : 0);
  }
  if (op->op == DLOCK__ETCD_OP_DELETE)
    return json_range(push(arr, "request_delete_range"), op->key, op->keylen, op->end,
                      op->endlen);
  cJSON *r = push(arr, "request_range");
  int bad = json_range(r, op->key, op->keylen, op->end, op->endlen);
  if (op->sort != DLOCK__ETCD_SORT_NONE)
    bad |= add_str(r, "sort_target", "CREATE") |
           add_str(r, "sort_order",
                   op->sort == DLOCK__ETCD_SORT_CREATE_DESCEND ? "DESCEND" : "ASCEND");
  if (op->limit)
    bad |= add_i64(r, "limit", op->limit);
  if (op->revision)
    bad |= add_i64(r, "revision", op->revision);
  if (op->max_create_revision)
    bad |= add_i64(r, "max_create_revision", op->max_create_revision);
  if (op->keys_only)
    bad |= add_true(r, "keys_only");
  return bad;
}

/* Empty lists are left out (the gateway reads a missing list as an empty
 * one). */
char *dlock__etcd_tx_json(const dlock__etcd_txreq *t) {
  if (!t)
    return NULL;
  cJSON *root = cJSON_CreateObject();
  int bad = root ? 0 : -1;
  cJSON *cmp = t->ncmp && root ? cJSON_AddArrayToObject(root, "compare") : NULL;
  for (size_t i = 0; i < t->ncmp; i++)
    bad |= json_cmp(cmp, &t->cmp[i]);
  cJSON *ok = t->nok && root ? cJSON_AddArrayToObject(root, "success") : NULL;
  for (size_t i = 0; i < t->nok; i++)
    bad |= json_op(ok, &t->ok[i]);
  cJSON *ko = t->nko && root ? cJSON_AddArrayToObject(root, "failure") : NULL;
  for (size_t i = 0; i < t->nko; i++)
    bad |= json_op(ko, &t->ko[i]);
  return finish(root, bad);
}

/* A description written as JSON at once. */
static char *json_of(dlock__etcd_txreq *t) {
  char *s = dlock__etcd_tx_json(t);
  free(t);
  return s;
}

char *dlock__etcd_req_try(const char *name, const char *key, int64_t lease,
                          const char *value) {
  return json_of(dlock__etcd_tx_try(name, key, lease, value));
}

char *dlock__etcd_req_enqueue(const char *name, const char *key, int64_t lease,
                              const char *value) {
  return json_of(dlock__etcd_tx_enqueue(name, key, lease, value));
}

char *dlock__etcd_req_queue(const char *name, const char *key, int64_t rev) {
  return json_of(dlock__etcd_tx_queue(name, key, rev));
}

char *dlock__etcd_req_release(const char *key, int64_t rev) {
  return json_of(dlock__etcd_tx_release(key, rev));
}

char *dlock__etcd_req_release_value(const char *key, const char *value) {
  return json_of(dlock__etcd_tx_release_value(key, value));
}

char *dlock__etcd_req_move(const char *key, int64_t rev, int64_t lease, const char *value) {
  return json_of(dlock__etcd_tx_move(key, rev, lease, value));
}

char *dlock__etcd_req_check(const char *const *keys, const int64_t *revs, size_t n) {
  return json_of(dlock__etcd_tx_check(keys, revs, n));
}

char *dlock__etcd_req_first(const char *name) {
  return json_of(dlock__etcd_tx_first(name));
}

char *dlock__etcd_req_delete_all(const char *name) {
  return json_of(dlock__etcd_tx_delete_all(name));
}

char *dlock__etcd_req_page(const char *from, size_t fromlen, const char *end, size_t endlen,
                           int64_t rev, int64_t limit) {
  return json_of(dlock__etcd_tx_page(from, fromlen, end, endlen, rev, limit));
}

char *dlock__etcd_req_break(const char *name, const char *key, int64_t create, int64_t mod) {
  return json_of(dlock__etcd_tx_break(name, key, create, mod));
}

char *dlock__etcd_req_watch(const char *key, int64_t start_rev) {
  cJSON *root = cJSON_CreateObject();
  cJSON *c = root ? cJSON_AddObjectToObject(root, "create_request") : NULL;
  int bad = add_bytes(c, "key", key, strlen(key)) | add_i64(c, "start_revision", start_rev);
  cJSON *f = c ? cJSON_AddArrayToObject(c, "filters") : NULL;
  cJSON *noput = cJSON_CreateString("NOPUT");
  if (!f || !noput || !cJSON_AddItemToArray(f, noput)) {
    cJSON_Delete(noput);
    bad = -1;
  }
  return finish(root, bad);
}

/* ---- answers ---- */

/* Every whole number below 2^53 is a double, and the text of one reads
 * back as exactly that double; beyond, a double stands for several
 * numbers.  The gateway writes int64 fields as strings; numbers are taken
 * only where they are exact. */
#define EXACT_MAX 9007199254740992.0 /* 2^53 */

/* NAME of OBJ: 1 with *out, 0 when absent (or null), -1 when it is there
 * but not an int64 as protobuf's JSON mapping writes one: a string of
 * decimal digits with an optional '-' (no blanks, '+', junk, leading
 * "0x" or overflow), or an exact whole JSON number. */
static int field_i64(const cJSON *obj, const char *name, int64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!v || cJSON_IsNull(v))
    return 0;
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    /* Written so that NaN fails too.  No floor(): the library does not
     * link libm. */
    if (!(d > -EXACT_MAX && d < EXACT_MAX))
      return -1;
    int64_t x = (int64_t)d;
    if ((double)x != d)
      return -1;
    *out = x;
    return 1;
  }
  if (!cJSON_IsString(v) || !v->valuestring)
    return -1;
  const char *s = v->valuestring;
  /* strtoll alone would take leading blanks, a '+' and trailing junk. */
  const char *digits = s[0] == '-' ? s + 1 : s;
  if (*digits < '0' || *digits > '9')
    return -1;
  errno = 0;
  char *end;
  long long x = strtoll(s, &end, 10);
  if (errno || *end)
    return -1;
  *out = (int64_t)x;
  return 1;
}

int64_t dlock__etcd_json_i64(const struct cJSON *obj, const char *name, int64_t def) {
  int64_t x;
  return field_i64(obj, name, &x) == 1 ? x : def;
}

/* NAME of OBJ into *out: DEF when absent; DLOCK_EBACKEND naming WHAT when
 * malformed or outside [LO, HI]. */
static int get_i64(const cJSON *obj, const char *name, int64_t lo, int64_t hi, int64_t def,
                   int64_t *out) {
  int64_t x = def;
  int f = field_i64(obj, name, &x);
  if (f < 0 || (f == 1 && (x < lo || x > hi))) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    char *t = v ? cJSON_PrintUnformatted(v) : NULL;
    int rc = dlock_seterr(DLOCK_EBACKEND, "etcd: \"%s\" out of range or malformed: %.40s", name,
                          t ? t : "?");
    free(t);
    return rc;
  }
  *out = x;
  return 0;
}

static const cJSON *obj_item(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsObject(v) ? v : NULL;
}

static cJSON *parse_obj(const char *body, size_t len) {
  cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
  if (root && !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    root = NULL;
  }
  return root;
}

/* A bytes field, decoded; ABSENT_NULL picks what a missing field gives. */
static int get_bytes(const cJSON *o, const char *name, int absent_null, char **out,
                     size_t *outlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!v) {
    *outlen = 0;
    if (absent_null) {
      *out = NULL;
      return 0;
    }
    return dlock__b64_decode("etcd", "", 0, out, outlen);
  }
  if (!cJSON_IsString(v) || !v->valuestring) {
    *out = NULL;
    *outlen = 0;
    return dlock_seterr(DLOCK_EBACKEND, "etcd: field \"%s\" is not a string", name);
  }
  return dlock__b64_decode("etcd", v->valuestring, strlen(v->valuestring), out, outlen);
}

static int parse_kv(const cJSON *j, dlock__etcd_kv *kv) {
  if (!cJSON_IsObject(j))
    return dlock_seterr(DLOCK_EBACKEND, "etcd: a key-value is not an object");
  int rc = get_bytes(j, "key", 1, &kv->key, &kv->keylen);
  if (rc == 0)
    rc = get_bytes(j, "value", 0, &kv->value, &kv->valuelen);
  /* Revisions are tokens and queue places: never negative, never so
   * large that the next one overflows.  A lease is any int64 (a client
   * may choose its own ID). */
  if (rc == 0)
    rc = get_i64(j, "create_revision", 0, DLOCK__ETCD_REV_MAX, 0, &kv->create_revision);
  if (rc == 0)
    rc = get_i64(j, "mod_revision", 0, DLOCK__ETCD_REV_MAX, 0, &kv->mod_revision);
  if (rc == 0)
    rc = get_i64(j, "version", 0, INT64_MAX, 0, &kv->version);
  if (rc == 0)
    rc = get_i64(j, "lease", INT64_MIN, INT64_MAX, 0, &kv->lease);
  return rc;
}

static int parse_opres(const cJSON *j, dlock__etcd_opres *r) {
  const cJSON *body;
  if ((body = obj_item(j, "response_range"))) {
    r->op = DLOCK__ETCD_OP_RANGE;
    int rc = get_i64(body, "count", 0, INT64_MAX, 0, &r->count);
    if (rc < 0)
      return rc;
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(body, "kvs");
    if (!kvs)
      return 0;
    if (!cJSON_IsArray(kvs))
      return dlock_seterr(DLOCK_EBACKEND, "etcd: \"kvs\" is not an array");
    int n = cJSON_GetArraySize(kvs);
    if (n == 0)
      return 0;
    r->kvs = calloc((size_t)n, sizeof *r->kvs);
    if (!r->kvs)
      return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
    const cJSON *kv;
    cJSON_ArrayForEach(kv, kvs) {
      rc = parse_kv(kv, &r->kvs[r->nkvs++]);
      if (rc < 0)
        return rc;
    }
    return 0;
  }
  if (obj_item(j, "response_put")) {
    r->op = DLOCK__ETCD_OP_PUT;
    return 0;
  }
  if ((body = obj_item(j, "response_delete_range"))) {
    r->op = DLOCK__ETCD_OP_DELETE;
    return get_i64(body, "deleted", 0, INT64_MAX, 0, &r->deleted);
  }
  return dlock_seterr(DLOCK_EBACKEND, "etcd: unexpected response in a txn answer");
}

void dlock__etcd_txn_free(dlock__etcd_txn *t) {
  if (!t)
    return;
  for (size_t i = 0; i < t->nres; i++) {
    for (size_t k = 0; k < t->res[i].nkvs; k++) {
      free(t->res[i].kvs[k].key);
      free(t->res[i].kvs[k].value);
    }
    free(t->res[i].kvs);
  }
  free(t->res);
  memset(t, 0, sizeof *t);
}

/* Messages about an unexpected body quote its start: enough to tell an
 * error page from a truncated answer without flooding the log. */
#define QUOTE_LEN 120

static int not_answer(const char *what, const char *body, size_t len) {
  int n = len > QUOTE_LEN ? QUOTE_LEN : (int)len;
  return dlock_seterr(DLOCK_EBACKEND, "etcd: not a %s answer: %.*s", what, n,
                      body ? body : "");
}

int dlock__etcd_parse_txn(const char *body, size_t len, dlock__etcd_txn *t) {
  memset(t, 0, sizeof *t);
  cJSON *root = parse_obj(body, len);
  const cJSON *hdr = obj_item(root, "header");
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "responses");
  if (!hdr || (res && !cJSON_IsArray(res))) {
    cJSON_Delete(root);
    return not_answer("txn", body, len);
  }
  /* The store's revision starts at 1 and a txn answer always carries
   * it: a granted lock's token is this number. */
  int rc = get_i64(hdr, "revision", 1, DLOCK__ETCD_REV_MAX, 0, &t->revision);
  if (rc == 0 && t->revision == 0)
    rc = not_answer("txn (no revision)", body, len);
  if (rc < 0) {
    cJSON_Delete(root);
    t->revision = 0;
    return rc;
  }
  t->succeeded = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "succeeded"));
  int n = cJSON_GetArraySize(res);
  if (n > 0) {
    t->res = calloc((size_t)n, sizeof *t->res);
    if (!t->res)
      rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
    const cJSON *r;
    cJSON_ArrayForEach(r, res) {
      if (rc < 0)
        break;
      rc = parse_opres(r, &t->res[t->nres++]);
    }
  }
  cJSON_Delete(root);
  if (rc < 0)
    dlock__etcd_txn_free(t);
  return rc;
}

int dlock__etcd_parse_grant(const char *body, size_t len, int64_t *id, int64_t *ttl_s) {
  cJSON *root = parse_obj(body, len);
  int64_t i = dlock__etcd_json_i64(root, "ID", 0);
  int64_t ttl = dlock__etcd_json_i64(root, "TTL", 0);
  /* No server grants more than its MaxLeaseTTL. */
  if (ttl > DLOCK__ETCD_TTL_MAX_S)
    ttl = 0;
  /* A refused grant may still come back as 200 with its reason in "error"
   * (LeaseGrantResponse has that field). */
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
  int rc = 0;
  if (cJSON_IsString(err) && err->valuestring[0])
    rc = dlock_seterr(DLOCK_EBACKEND, "etcd: lease grant refused: %.200s", err->valuestring);
  else if (i <= 0 || ttl <= 0)
    rc = not_answer("lease grant", body, len);
  cJSON_Delete(root);
  if (rc == 0) {
    *id = i;
    *ttl_s = ttl;
  }
  return rc;
}

int dlock__etcd_parse_auth(const char *body, size_t len, char **token) {
  *token = NULL;
  cJSON *root = parse_obj(body, len);
  const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "token");
  int rc = 0;
  if (!cJSON_IsString(tok) || !tok->valuestring[0])
    rc = not_answer("authenticate", body, len);
  else if (!(*token = strdup(tok->valuestring)))
    rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  cJSON_Delete(root);
  return rc;
}

/* ---- errors ---- */

static int has(const char *msg, const char *needle) {
  return strstr(msg, needle) != NULL;
}

/* gRPC status codes the classification looks at. */
enum {
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_DEADLINE_EXCEEDED = 4,
  GRPC_PERMISSION_DENIED = 7,
  GRPC_UNAVAILABLE = 14,
  GRPC_UNAUTHENTICATED = 16,
};

/* MSG is the server's own text (from rpctypes/error.go and auth/store.go
 * in etcd 3.4); it decides first, since one gRPC code covers several
 * meanings (InvalidArgument is both "too many operations" and a wrong
 * password). */
static enum dlock__etcd_fault classify(int http, int grpc, const char *msg, int json) {
  if (has(msg, "invalid auth token") || has(msg, "auth: revision in header is old") ||
      has(msg, "revision of auth store is old") || has(msg, "token expired"))
    return DLOCK__ETCD_F_REAUTH;
  if (has(msg, "authentication failed") || has(msg, "permission denied") ||
      has(msg, "user name is empty") || has(msg, "authentication is not enabled") ||
      has(msg, "user name not found") || has(msg, "invalid auth management") ||
      has(msg, "role is not granted") || has(msg, "permission is not granted"))
    return DLOCK__ETCD_F_AUTH;
  if (has(msg, "requested lease not found"))
    return DLOCK__ETCD_F_LEASE_GONE;
  /* "context deadline exceeded" (code 2, HTTP 500) is what a write gets
   * from a member that lost quorum: the gateway gives up before the
   * server's own "request timed out". */
  if (has(msg, "leader changed") || has(msg, "no leader") || has(msg, "not leader") ||
      has(msg, "request timed out") || has(msg, "too many requests") ||
      has(msg, "server stopped") || has(msg, "unhealthy cluster") || has(msg, "not capable") ||
      has(msg, "not supported for learner") || has(msg, "context deadline exceeded"))
    return DLOCK__ETCD_F_RETRY;
  if (has(msg, "too many operations in txn request") || has(msg, "request is too large") ||
      has(msg, "duplicate key given in txn request") || has(msg, "too large lease TTL"))
    return DLOCK__ETCD_F_INVALID;
  switch (grpc) {
  case GRPC_UNAUTHENTICATED:
    return DLOCK__ETCD_F_REAUTH;
  case GRPC_PERMISSION_DENIED:
    return DLOCK__ETCD_F_AUTH;
  case GRPC_UNAVAILABLE:
  case GRPC_DEADLINE_EXCEEDED:
    return DLOCK__ETCD_F_RETRY;
  case GRPC_INVALID_ARGUMENT:
    return DLOCK__ETCD_F_INVALID;
  default:
    break;
  }
  if (http == 502 || http == 503 || http == 504 || (http >= 500 && !json))
    return DLOCK__ETCD_F_RETRY;
  if (http == 401)
    return DLOCK__ETCD_F_REAUTH;
  if (http == 403)
    return DLOCK__ETCD_F_AUTH;
  return DLOCK__ETCD_F_OTHER;
}

static const char *str_item(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Classify a parsed error object: the unary form {"error":"..","code":N,
 * "message":".."} or the inner object of a stream's {"error":{...}}. */
static enum dlock__etcd_fault classify_obj(int http, const cJSON *o, char *msg,
                                           size_t msglen) {
  const char *m = str_item(o, "message");
  if (!m)
    m = str_item(o, "error");
  /* gRPC codes are 0..16 and HTTP statuses three digits: anything else
   * names neither (and a cast to int would wrap a large one onto a code
   * that means something). */
  int64_t g = dlock__etcd_json_i64(o, "code", -1);
  if (g < 0 || g > 16)
    g = dlock__etcd_json_i64(o, "grpc_code", -1);
  int grpc = g >= 0 && g <= 16 ? (int)g : -1;
  if (http <= 0) {
    int64_t h = dlock__etcd_json_i64(o, "http_code", 0);
    http = h >= 100 && h <= 999 ? (int)h : 0;
  }
  if (m)
    snprintf(msg, msglen, "%s", m);
  else if (grpc >= 0)
    snprintf(msg, msglen, "HTTP %d, gRPC code %d", http, grpc);
  else
    snprintf(msg, msglen, "HTTP %d", http);
  return classify(http, grpc, m ? m : "", 1);
}

enum dlock__etcd_fault dlock__etcd_error(int http_status, const char *body, size_t len,
                                         char *msg, size_t msglen) {
  if (msglen)
    msg[0] = '\0';
  cJSON *root = parse_obj(body, len);
  if (root) {
    const cJSON *inner = obj_item(root, "error");
    enum dlock__etcd_fault f = classify_obj(http_status, inner ? inner : root, msg, msglen);
    cJSON_Delete(root);
    return f;
  }
  /* Not JSON: a proxy's error page, or the body of a connection cut short.
   * Its first line says more than the status alone. */
  size_t n = 0;
  while (n < len && n < QUOTE_LEN && body[n] != '\n' && body[n] != '\r')
    n++;
  if (msglen) {
    if (n)
      snprintf(msg, msglen, "HTTP %d: %.*s", http_status, (int)n, body);
    else
      snprintf(msg, msglen, "HTTP %d", http_status);
  }
  return classify(http_status, -1, "", 0);
}

enum dlock__etcd_fault dlock__etcd_grpc_fault(int code, const char *msg) {
  return classify(0, code >= 0 && code <= 16 ? code : -1, msg ? msg : "", 1);
}

int dlock__etcd_compacted(const char *msg) {
  return msg && has(msg, "required revision has been compacted");
}

int dlock__etcd_fault_code(enum dlock__etcd_fault f) {
  switch (f) {
  case DLOCK__ETCD_F_NONE:
    return 0;
  case DLOCK__ETCD_F_REAUTH:
  case DLOCK__ETCD_F_AUTH:
    return DLOCK_EAUTH;
  case DLOCK__ETCD_F_LEASE_GONE:
    return DLOCK_ELOST;
  case DLOCK__ETCD_F_RETRY:
    return DLOCK_ECONN;
  case DLOCK__ETCD_F_INVALID:
    return DLOCK_EINVAL;
  case DLOCK__ETCD_F_OTHER:
    break;
  }
  return DLOCK_EBACKEND;
}

/* ---- streams ---- */

int dlock__etcd_parse_keepalive(const char *body, size_t len, int64_t *ttl_s, char *msg,
                                size_t msglen) {
  *ttl_s = 0;
  if (msglen)
    msg[0] = '\0';
  cJSON *root = parse_obj(body, len);
  const cJSON *err = obj_item(root, "error");
  if (err) {
    char m[256];
    enum dlock__etcd_fault f = classify_obj(0, err, m, sizeof m);
    cJSON_Delete(root);
    if (msglen)
      snprintf(msg, msglen, "%s", m);
    return dlock_seterr(dlock__etcd_fault_code(f), "etcd: lease keepalive: %s", m);
  }
  const cJSON *res = obj_item(root, "result");
  if (!res)
    res = root;
  if (!obj_item(res, "header")) {
    cJSON_Delete(root);
    return not_answer("lease keepalive", body, len);
  }
  /* Absent, 0 or negative: the lease is gone.  Past MaxLeaseTTL it is no
   * answer etcd gives. */
  int64_t ttl = 0;
  int rc = get_i64(res, "TTL", INT64_MIN, DLOCK__ETCD_TTL_MAX_S, 0, &ttl);
  cJSON_Delete(root);
  if (rc < 0)
    return rc;
  *ttl_s = ttl > 0 ? ttl : 0;
  return 0;
}

/* The "keys" of a timetolive answer (base64 strings) into KS. */
static int lease_keys(const cJSON *root, dlock__etcd_keys *ks) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "keys");
  if (!arr || cJSON_IsNull(arr))
    return 0;
  if (!cJSON_IsArray(arr))
    return dlock_seterr(DLOCK_EBACKEND, "etcd: a lease's \"keys\" is not a list");
  const cJSON *v;
  cJSON_ArrayForEach(v, arr) {
    if (!cJSON_IsString(v) || !v->valuestring)
      return dlock_seterr(DLOCK_EBACKEND, "etcd: a lease's key is not a string");
    char *k;
    size_t n;
    int rc = dlock__b64_decode("etcd", v->valuestring, strlen(v->valuestring), &k, &n);
    if (rc == 0) {
      rc = dlock__etcd_keys_add(ks, k, n);
      free(k);
    }
    if (rc < 0)
      return rc;
  }
  return dlock__etcd_keys_sort(ks);
}

int dlock__etcd_parse_timetolive(const char *body, size_t len, int64_t *ttl_ms,
                                 dlock__etcd_keys *keys) {
  *ttl_ms = -1;
  cJSON *root = parse_obj(body, len);
  if (!obj_item(root, "header")) {
    cJSON_Delete(root);
    return not_answer("lease timetolive", body, len);
  }
  /* etcd answers -1 for a lease it does not have (expired or revoked),
   * and leaves out a TTL of 0; a TTL past MaxLeaseTTL would overflow the
   * conversion to ms and is no answer etcd gives. */
  int64_t ttl = 0;
  int rc = get_i64(root, "TTL", INT64_MIN, DLOCK__ETCD_TTL_MAX_S, 0, &ttl);
  if (rc == 0 && keys)
    rc = lease_keys(root, keys);
  cJSON_Delete(root);
  if (rc < 0) {
    if (keys)
      dlock__etcd_keys_free(keys);
    return rc;
  }
  *ttl_ms = ttl < 0 ? -1 : ttl * 1000;
  return 0;
}

/* The gRPC code named in Go's status text "rpc error: code = NAME desc =
 * ...", for the names classify() looks at; -1 otherwise. */
static int reason_code(const char *reason) {
  static const struct {
    const char *name;
    int code;
  } codes[] = {
      {"InvalidArgument", GRPC_INVALID_ARGUMENT}, {"DeadlineExceeded", GRPC_DEADLINE_EXCEEDED},
      {"PermissionDenied", GRPC_PERMISSION_DENIED}, {"Unavailable", GRPC_UNAVAILABLE},
      {"Unauthenticated", GRPC_UNAUTHENTICATED},
  };
  const char *c = reason ? strstr(reason, "code = ") : NULL;
  if (!c)
    return -1;
  c += strlen("code = ");
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    size_t n = strlen(codes[i].name);
    if (strncmp(c, codes[i].name, n) == 0 && (c[n] == ' ' || c[n] == '\0'))
      return codes[i].code;
  }
  return -1;
}

enum dlock__etcd_fault dlock__etcd_reason_fault(const char *reason) {
  return classify(0, reason_code(reason), reason ? reason : "", 1);
}

int dlock__etcd_parse_watch(const char *line, size_t len, dlock__etcd_watch_ev *ev) {
  memset(ev, 0, sizeof *ev);
  cJSON *root = parse_obj(line, len);
  const cJSON *err = obj_item(root, "error");
  if (err) {
    ev->error = 1;
    ev->fault = classify_obj(0, err, ev->msg, sizeof ev->msg);
    cJSON_Delete(root);
    return 0;
  }
  const cJSON *res = obj_item(root, "result");
  const cJSON *hdr = obj_item(res, "header");
  if (!hdr) {
    cJSON_Delete(root);
    return not_answer("watch", line, len);
  }
  int rc = get_i64(hdr, "revision", 0, DLOCK__ETCD_REV_MAX, 0, &ev->revision);
  if (rc == 0)
    /* -1 is the ID of a watch refused at creation. */
    rc = get_i64(res, "watch_id", -1, INT64_MAX, 0, &ev->watch_id);
  if (rc == 0)
    rc = get_i64(res, "compact_revision", 0, DLOCK__ETCD_REV_MAX, 0, &ev->compact_revision);
  if (rc < 0) {
    cJSON_Delete(root);
    return rc;
  }
  ev->created = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "created"));
  ev->canceled = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "canceled"));
  const char *reason = str_item(res, "cancel_reason");
  if (reason)
    snprintf(ev->msg, sizeof ev->msg, "%s", reason);
  /* A watch the server refuses (bad token, no permission) does not get an
   * {"error":...} line: it comes back created and canceled at once, the
   * gRPC status only in cancel_reason.  A compaction says nothing else. */
  if (ev->canceled && !ev->compact_revision)
    ev->fault = dlock__etcd_reason_fault(reason);
  const cJSON *e;
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(res, "events")) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
    /* Names are what the gateway sends; the number is DELETE's enum value,
     * for a gateway set to write enums as integers. */
    if ((cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0) ||
        (cJSON_IsNumber(type) && type->valuedouble == 1))
      ev->deletes++;
  }
  cJSON_Delete(root);
  return 0;
}
