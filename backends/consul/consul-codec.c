/* Consul backend: keys, URL paths, JSON bodies and answers (no I/O); see
 * consul-codec.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "backends/consul/consul-codec.h"
#include "backends/http/base64.h"

/* ---- keys and paths ---- */

char *dlock__consul_lock_key(const char *prefix, const char *key, size_t keylen) {
  /* `consul lock P` keeps its lock in P/.lock, so dlock's key maps onto
   * the very key that command contends for. */
  return dlock__escape_slash(prefix ? prefix : DLOCK__CONSUL_DEFAULT_PREFIX, key, keylen,
                             "/.lock");
}

size_t dlock__consul_key_of(const char *prefix, const char *lockkey, size_t len, char *out) {
  static const char tail[] = "/.lock";
  const size_t tl = sizeof tail - 1;
  if (!prefix)
    prefix = DLOCK__CONSUL_DEFAULT_PREFIX;
  size_t pl = strlen(prefix), n = 0;
  if (!lockkey || len < pl + tl + 1 || memcmp(lockkey, prefix, pl) != 0 ||
      memcmp(lockkey + len - tl, tail, tl) != 0)
    return 0;
  size_t end = len - tl;
  for (size_t i = pl; i < end; i++) {
    char c = lockkey[i];
    /* The escape leaves no '/' of its own and writes '%' only as the
     * start of %25 or %2F: anything else was not written by it, and
     * decoding it anyway would name a key whose lock lives elsewhere. */
    if (c == '/' || c == '\0')
      return 0;
    if (c == '%') {
      if (i + 2 >= end || lockkey[i + 1] != '2' || (lockkey[i + 2] != '5' && lockkey[i + 2] != 'F'))
        return 0;
      c = lockkey[i + 2] == '5' ? '%' : '/';
      i += 2;
    }
    if (n == DLOCK_KEY_MAX)
      return 0;
    out[n++] = c;
  }
  out[n] = '\0';
  return n;
}

static int url_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '_' || c == '~';
}

/* The agent reads the decoded path (net/http's URL.Path), but its mux
 * redirects (307) a path with "//", "." or ".." segments before that; '/'
 * and '.' go as %2F and %2E, which are decoded after routing, so no
 * prefix or key can make segments of its own. */
static char *kv_path_n(const char *key, size_t kl, const char *query) {
  static const char head[] = "/v1/kv/";
  static const char hex[] = "0123456789ABCDEF";
  if (!query)
    query = "";
  size_t ql = strlen(query), el = 0;
  for (size_t i = 0; i < kl; i++)
    el += url_unreserved((unsigned char)key[i]) ? 1 : 3;
  char *s = malloc(sizeof head - 1 + el + ql + 1);
  if (!s)
    return NULL;
  memcpy(s, head, sizeof head - 1);
  char *w = s + sizeof head - 1;
  for (size_t i = 0; i < kl; i++) {
    unsigned char c = (unsigned char)key[i];
    if (url_unreserved(c)) {
      *w++ = (char)c;
    } else {
      *w++ = '%';
      *w++ = hex[c >> 4];
      *w++ = hex[c & 15];
    }
  }
  memcpy(w, query, ql + 1);
  return s;
}

char *dlock__consul_kv_path(const char *key, const char *query) {
  return kv_path_n(key, strlen(key), query);
}

size_t dlock__consul_printable_prefix(const char *key) {
  size_t n = 0;
  while (key[n] >= 0x20 && key[n] <= 0x7e)
    n++;
  return n;
}

char *dlock__consul_watch_path(const char *key, int whole, const char *params) {
  char *q = NULL;
  if (asprintf(&q, "?%s%s", whole ? "" : "keys&separator=/&", params ? params : "") < 0)
    return NULL;
  char *s = kv_path_n(key, whole ? strlen(key) : dlock__consul_printable_prefix(key), q);
  free(q);
  return s;
}

char *dlock__consul_value(const char *owner, const char *label) {
  char *s = NULL;
  if (asprintf(&s, "%s\n%s", owner ? owner : "", label ? label : "") < 0)
    return NULL;
  return s;
}

/* Answers land in fixed buffers: a longer text is cut, never overrun. */
static void put_trunc(char *dst, size_t dstlen, const char *src, size_t n) {
  if (dstlen == 0)
    return;
  size_t m = n < dstlen - 1 ? n : dstlen - 1;
  if (m)
    memcpy(dst, src, m);
  dst[m] = '\0';
}

void dlock__consul_value_split(const char *v, size_t n, char *owner, size_t ownerlen,
                               char *label, size_t labellen) {
  const char *nl = v && n ? memchr(v, '\n', n) : NULL;
  if (!nl) {
    put_trunc(owner, ownerlen, "", 0);
    put_trunc(label, labellen, "", 0);
    return;
  }
  size_t ol = (size_t)(nl - v);
  put_trunc(owner, ownerlen, v, ol);
  put_trunc(label, labellen, nl + 1, n - ol - 1);
}

/* ---- request bodies ---- */

/* As in the other JSON codecs: the helpers accept a NULL parent and then
 * fail, so a body is assembled without a check per call and out of memory
 * is noticed once, when it is finished. */

static int add_str(cJSON *o, const char *name, const char *v) {
  return o && cJSON_AddStringToObject(o, name, v ? v : "") ? 0 : -1;
}

/* NAME: V followed by UNIT, the form Go's time.ParseDuration reads. */
static int add_duration(cJSON *o, const char *name, int64_t v, const char *unit) {
  char b[32];
  snprintf(b, sizeof b, "%" PRId64 "%s", v, unit);
  return add_str(o, name, b);
}

static char *finish(cJSON *root, int bad) {
  char *s = bad || !root ? NULL : cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return s;
}

/* Append {"KV":{"Verb":VERB,"Key":KEY}} to the txn ARR; the inner object,
 * or NULL. */
static cJSON *txn_kv(cJSON *arr, const char *verb, const char *key) {
  if (!arr)
    return NULL;
  cJSON *op = cJSON_CreateObject();
  if (!op || !cJSON_AddItemToArray(arr, op)) {
    cJSON_Delete(op);
    return NULL;
  }
  cJSON *kv = cJSON_AddObjectToObject(op, "KV");
  if (add_str(kv, "Verb", verb) || add_str(kv, "Key", key))
    return NULL;
  return kv;
}

char *dlock__consul_req_session(const char *name, int64_t ttl_s, int64_t lock_delay_ms) {
  cJSON *root = cJSON_CreateObject();
  int bad = add_str(root, "Name", name) | add_duration(root, "TTL", ttl_s, "s") |
            add_duration(root, "LockDelay", lock_delay_ms, "ms") |
            add_str(root, "Behavior", "release");
  /* Left out, the agent ties the session to its node's serfHealth check
   * too, and a flapping agent drops the lock of a holder that keeps
   * renewing.  "Checks" is the field every version reads; 1.7 and later
   * turn an empty one into empty NodeChecks as well (1.21 checked). */
  if (!root || !cJSON_AddArrayToObject(root, "Checks"))
    bad = -1;
  return finish(root, bad);
}

/* The lock flag from its decimal text, as `consul lock` writes it: a
 * double would turn it into 3304740253564472320, which `consul lock`
 * takes for a foreign key.  -1 when out of memory. */
static int add_lock_flag(cJSON *kv) {
  char flag[24];
  snprintf(flag, sizeof flag, "%llu", (unsigned long long)DLOCK__CONSUL_LOCK_FLAG);
  cJSON *raw = kv ? cJSON_CreateRaw(flag) : NULL;
  if (!raw || !cJSON_AddItemToObject(kv, "Flags", raw)) {
    cJSON_Delete(raw);
    return -1;
  }
  return 0;
}

char *dlock__consul_req_lock(const char *key, const char *session, const char *value) {
  cJSON *root = cJSON_CreateArray();
  cJSON *lock = txn_kv(root, "lock", key);
  if (!value)
    value = "";
  char *b64 = dlock__b64_encode(value, strlen(value));
  int bad = (b64 ? 0 : -1) | add_str(lock, "Value", b64) | add_str(lock, "Session", session);
  free(b64);
  bad |= add_lock_flag(lock);
  /* The lock result comes back without its value, so the key is read
   * again in the same transaction. */
  if (!txn_kv(root, "get", key))
    bad = -1;
  return finish(root, bad);
}

char *dlock__consul_req_unlock(const char *key, const char *session) {
  cJSON *root = cJSON_CreateArray();
  cJSON *kv = txn_kv(root, "unlock", key);
  return finish(root, add_str(kv, "Session", session) | add_lock_flag(kv));
}

char *dlock__consul_req_release_at(const char *key, const char *session, uint64_t index) {
  if (!index)
    return NULL;
  cJSON *root = cJSON_CreateArray();
  /* delete-cas of a key that is gone succeeds: the check-session first
   * makes a release of a lock already lost fail, as it must. */
  int bad = add_str(txn_kv(root, "check-session", key), "Session", session);
  /* From its decimal text, as the flag: exact whatever its size. */
  char digits[24];
  snprintf(digits, sizeof digits, "%" PRIu64, index);
  cJSON *del = txn_kv(root, "delete-cas", key);
  cJSON *raw = del ? cJSON_CreateRaw(digits) : NULL;
  if (!raw || !cJSON_AddItemToObject(del, "Index", raw)) {
    cJSON_Delete(raw);
    bad = -1;
  }
  return finish(root, bad);
}

char *dlock__consul_req_get(const char *key) {
  cJSON *root = cJSON_CreateArray();
  return finish(root, txn_kv(root, "get-tree", key) ? 0 : -1);
}

char *dlock__consul_req_check(const char *const *keys, const char *const *sessions, size_t n) {
  /* The agent refuses the whole transaction beyond its limit; better no
   * body than one that checks fewer keys than asked. */
  if (n > DLOCK__CONSUL_TXN_MAX)
    return NULL;
  cJSON *root = cJSON_CreateArray();
  int bad = 0;
  for (size_t i = 0; i < n; i++)
    bad |= add_str(txn_kv(root, "check-session", keys[i]), "Session", sessions[i]);
  return finish(root, bad);
}

/* ---- answers ---- */

/* Messages about an unexpected body quote its start: enough to tell an
 * ACL refusal or a proxy's page from a truncated answer. */
#define QUOTE_LEN 120

static int not_answer(const char *what, const char *body, size_t len) {
  int n = len > QUOTE_LEN ? QUOTE_LEN : (int)len;
  return dlock_seterr(DLOCK_EBACKEND, "consul: not a %s answer: %.*s", what, n,
                      body ? body : "");
}

static cJSON *parse_json(const char *body, size_t len) {
  return body && len ? cJSON_ParseWithLength(body, len) : NULL;
}

static const char *get_str(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

/* Every whole number below 2^53 is a double, and the decimal text of one
 * reads back as exactly that double; at and above, a double may stand for
 * several numbers, and a token must not be a neighbour of the real one. */
#define EXACT_MAX 9007199254740992.0 /* 2^53 */

/* A Raft index; 0 when absent or not a whole number in [0, 2^53).  Every
 * use of an index treats 0 as "none": a lock answered without one is
 * refused, a holder shown without one has an unknown token. */
static uint64_t get_index(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!cJSON_IsNumber(v))
    return 0;
  double d = v->valuedouble;
  /* Written so that NaN fails too. */
  if (!(d >= 0 && d < EXACT_MAX))
    return 0;
  uint64_t x = (uint64_t)d;
  return (double)x == d ? x : 0;
}

void dlock__consul_kv_free(dlock__consul_kv *kv) {
  if (!kv)
    return;
  free(kv->key);
  kv->key = NULL;
  kv->keylen = 0;
  free(kv->value);
  kv->value = NULL;
  kv->valuelen = 0;
}

static int kv_from_json(const cJSON *j, dlock__consul_kv *kv) {
  memset(kv, 0, sizeof *kv);
  if (!cJSON_IsObject(j))
    return dlock_seterr(DLOCK_EBACKEND, "consul: a KV entry is not an object");
  const char *key = get_str(j, "Key");
  if (key && !(kv->key = strdup(key)))
    return dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  kv->keylen = key ? strlen(key) : 0;
  const char *session = get_str(j, "Session");
  if (session && strlen(session) >= sizeof kv->session)
    return dlock_seterr(DLOCK_EBACKEND, "consul: session ID too long: %.80s", session);
  if (session)
    put_trunc(kv->session, sizeof kv->session, session, strlen(session));
  kv->create_index = get_index(j, "CreateIndex");
  kv->modify_index = get_index(j, "ModifyIndex");
  kv->lock_index = get_index(j, "LockIndex");
  const cJSON *flags = cJSON_GetObjectItemCaseSensitive(j, "Flags");
  if (cJSON_IsNumber(flags)) {
    kv->lock_flag = flags->valuedouble == (double)DLOCK__CONSUL_LOCK_FLAG;
    kv->has_flags = flags->valuedouble != 0;
  }
  const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "Value");
  if (val && !cJSON_IsNull(val) && !cJSON_IsString(val))
    return dlock_seterr(DLOCK_EBACKEND, "consul: KV \"Value\" is not a string");
  const char *b64 = cJSON_IsString(val) && val->valuestring ? val->valuestring : "";
  return dlock__b64_decode("consul", b64, strlen(b64), &kv->value, &kv->valuelen);
}

int dlock__consul_parse_kv(const char *body, size_t len, dlock__consul_kv *kv) {
  memset(kv, 0, sizeof *kv);
  cJSON *root = parse_json(body, len);
  int rc;
  if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) != 1)
    rc = not_answer("KV", body, len);
  else
    rc = kv_from_json(cJSON_GetArrayItem(root, 0), kv);
  cJSON_Delete(root);
  if (rc < 0)
    dlock__consul_kv_free(kv);
  return rc;
}

void dlock__consul_txn_free(dlock__consul_txn *t) {
  if (!t)
    return;
  for (size_t i = 0; i < t->nresults; i++)
    dlock__consul_kv_free(&t->results[i]);
  free(t->results);
  free(t->found);
  free(t->err_op);
  memset(t, 0, sizeof *t);
}

static int txn_results(const cJSON *res, dlock__consul_txn *t) {
  size_t n = (size_t)cJSON_GetArraySize(res);
  if (n == 0)
    return 0;
  t->results = calloc(n, sizeof *t->results);
  t->found = calloc(n, sizeof *t->found);
  if (!t->results || !t->found)
    return dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  const cJSON *r;
  cJSON_ArrayForEach(r, res) {
    size_t i = t->nresults++;
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(r, "KV");
    /* Node, service and check operations answer under other names; the
     * slot stays empty rather than failing the whole answer. */
    if (!kv || cJSON_IsNull(kv))
      continue;
    int rc = kv_from_json(kv, &t->results[i]);
    if (rc < 0)
      return rc;
    t->found[i] = 1;
  }
  return 0;
}

static int txn_errors(const cJSON *errs, dlock__consul_txn *t) {
  size_t n = (size_t)cJSON_GetArraySize(errs);
  if (n == 0)
    return 0;
  t->err_op = calloc(n, sizeof *t->err_op);
  if (!t->err_op)
    return dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  const cJSON *e;
  cJSON_ArrayForEach(e, errs) {
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(e, "OpIndex");
    /* An index that is not a whole number of ours names no operation;
     * (int)0.5 would blame the first. */
    double d = cJSON_IsNumber(op) ? op->valuedouble : -1;
    t->err_op[t->nerr++] = d >= 0 && d < 1e9 && (double)(int)d == d ? (int)d : -1;
    const char *what = get_str(e, "What");
    if (t->nerr == 1 && what)
      put_trunc(t->msg, sizeof t->msg, what, strlen(what));
  }
  return 0;
}

int dlock__consul_parse_txn(int status, const char *body, size_t len, dlock__consul_txn *t) {
  memset(t, 0, sizeof *t);
  if (status != 200 && status != 409) {
    /* Refusals of the request as a whole (too many operations, ACL) come
     * as plain text, which is the best message there is. */
    int n = !body ? 0 : len > QUOTE_LEN ? QUOTE_LEN : (int)len;
    while (n > 0 && (body[n - 1] == '\n' || body[n - 1] == '\r' || body[n - 1] == ' '))
      n--;
    return dlock_seterr(DLOCK_EBACKEND, "consul: txn: HTTP %d: %.*s", status, n,
                        body ? body : "");
  }
  cJSON *root = parse_json(body, len);
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "Results");
  const cJSON *errs = cJSON_GetObjectItemCaseSensitive(root, "Errors");
  int rc;
  if (!cJSON_IsObject(root) || (res && !cJSON_IsArray(res) && !cJSON_IsNull(res)) ||
      (errs && !cJSON_IsArray(errs) && !cJSON_IsNull(errs)))
    rc = not_answer("txn", body, len);
  else if (status == 409 && cJSON_GetArraySize(errs) == 0)
    /* A conflict must say which operation failed; without that the caller
     * cannot tell a taken lock from a lost one. */
    rc = not_answer("txn conflict", body, len);
  else if ((rc = txn_results(res, t)) == 0)
    rc = txn_errors(errs, t);
  cJSON_Delete(root);
  return rc;
}

const dlock__consul_kv *dlock__consul_txn_find(const dlock__consul_txn *t, const char *key) {
  size_t kl = strlen(key);
  for (size_t i = 0; i < t->nresults; i++)
    if (t->found[i] && t->results[i].key && t->results[i].keylen == kl &&
        memcmp(t->results[i].key, key, kl) == 0)
      return &t->results[i];
  return NULL;
}

static int cmp_kv_key(const void *a, const void *b) {
  const dlock__consul_kv *x = *(const dlock__consul_kv *const *)a;
  const dlock__consul_kv *y = *(const dlock__consul_kv *const *)b;
  size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
  int c = memcmp(x->key, y->key, n);
  return c ? c : (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

int dlock__consul_tree_holds(const dlock__consul_txn *t, const char *const *keys,
                             const char *const *sessions, size_t m, int *ok) {
  for (size_t i = 0; i < m; i++)
    ok[i] = 0;
  /* Sorted here rather than trusting the agent's order: a lookup per lock
   * in a tree of many thousands must not be a scan. */
  const dlock__consul_kv **by_key = t->nresults ? malloc(t->nresults * sizeof *by_key) : NULL;
  if (t->nresults && !by_key)
    return dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  size_t n = 0;
  for (size_t i = 0; i < t->nresults; i++)
    if (t->found[i] && t->results[i].key)
      by_key[n++] = &t->results[i];
  if (n)
    qsort(by_key, n, sizeof *by_key, cmp_kv_key);
  for (size_t i = 0; i < m; i++) {
    dlock__consul_kv want = {.key = (char *)keys[i], .keylen = strlen(keys[i])};
    const dlock__consul_kv *w = &want;
    const dlock__consul_kv **hit =
        n ? bsearch(&w, by_key, n, sizeof *by_key, cmp_kv_key) : NULL;
    ok[i] = hit && sessions[i][0] && strcmp((*hit)->session, sessions[i]) == 0;
  }
  free(by_key);
  return 0;
}

int dlock__consul_parse_session(const char *body, size_t len, char *id) {
  cJSON *root = parse_json(body, len);
  const char *s = get_str(root, "ID");
  int rc = 0;
  if (!s || !s[0] || strlen(s) >= DLOCK_CONSUL_SESSION_MAX)
    rc = not_answer("session create", body, len);
  else
    memcpy(id, s, strlen(s) + 1);
  cJSON_Delete(root);
  return rc;
}

int dlock__consul_parse_renew(const char *body, size_t len, int64_t *ttl_ms) {
  *ttl_ms = -1;
  cJSON *root = parse_json(body, len);
  const cJSON *s = cJSON_GetArrayItem(root, 0);
  int rc = 0;
  if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) != 1 || !cJSON_IsObject(s) ||
      !get_str(s, "ID"))
    rc = not_answer("session renew", body, len);
  else if (get_str(s, "TTL"))
    *ttl_ms = dlock__consul_duration_ms(get_str(s, "TTL"));
  cJSON_Delete(root);
  return rc;
}

int dlock__consul_parse_session_info(const char *body, size_t len, const char *id) {
  cJSON *root = parse_json(body, len);
  int rc;
  if (cJSON_IsNull(root) || (cJSON_IsArray(root) && cJSON_GetArraySize(root) == 0)) {
    rc = 0;
  } else {
    const cJSON *s = cJSON_IsArray(root) && cJSON_GetArraySize(root) == 1
                         ? cJSON_GetArrayItem(root, 0)
                         : NULL;
    const char *sid = cJSON_IsObject(s) ? get_str(s, "ID") : NULL;
    rc = sid && strcmp(sid, id) == 0 ? 1 : not_answer("session info", body, len);
  }
  cJSON_Delete(root);
  return rc;
}

static int cmp_id(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int dlock__consul_parse_session_ttls(const char *body, size_t len, const char *const *ids,
                                     size_t n, int64_t *ttl_ms) {
  cJSON *root = parse_json(body, len);
  int rc = 0;
  if (!cJSON_IsNull(root) && !cJSON_IsArray(root)) {
    rc = not_answer("session list", body, len);
  } else {
    const cJSON *s;
    cJSON_ArrayForEach(s, root) {
      const char *id = cJSON_IsObject(s) ? get_str(s, "ID") : NULL;
      if (!id) {
        rc = not_answer("session list", body, len);
        break;
      }
      /* A cluster may list many thousands of sessions. */
      const char *const *hit = n ? bsearch(&id, ids, n, sizeof *ids, cmp_id) : NULL;
      if (hit)
        ttl_ms[hit - ids] = dlock__consul_duration_ms(get_str(s, "TTL"));
    }
  }
  cJSON_Delete(root);
  return rc;
}

/* Go's time.ParseDuration, minus negative values: a sequence of decimal
 * numbers (with an optional fraction), each followed by its unit. */
int64_t dlock__consul_duration_ms(const char *s) {
  static const struct {
    const char *name;
    uint64_t ns;
  } units[] = {
      /* "ms" before "m", or "5ms" would read as 5 minutes and junk. */
      {"ns", 1},
      {"us", 1000},
      {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
      {"\xce\xbcs", 1000}, /* U+03BC Greek mu */
      {"ms", 1000000},
      {"s", 1000000000},
      {"m", 60000000000},
      {"h", 3600000000000},
  };
  if (!s)
    return -1;
  if (*s == '+')
    s++;
  /* Go takes a lone "0" without a unit. */
  if (strcmp(s, "0") == 0)
    return 0;
  if (!*s)
    return -1;
  const uint64_t max = INT64_MAX;
  uint64_t total = 0;
  while (*s) {
    uint64_t whole = 0, frac = 0, scale = 1;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++, digits++) {
      if (whole > (max - (uint64_t)(*s - '0')) / 10)
        return -1;
      whole = whole * 10 + (uint64_t)(*s - '0');
    }
    if (*s == '.') {
      s++;
      for (; *s >= '0' && *s <= '9'; s++, digits++) {
        /* Past 18 digits a fraction cannot move the result by a ms. */
        if (scale > max / 10)
          continue;
        frac = frac * 10 + (uint64_t)(*s - '0');
        scale *= 10;
      }
    }
    if (digits == 0)
      return -1;
    size_t u = 0, nu = sizeof units / sizeof units[0];
    while (u < nu && strncmp(s, units[u].name, strlen(units[u].name)) != 0)
      u++;
    if (u == nu)
      return -1;
    s += strlen(units[u].name);
    uint64_t unit = units[u].ns;
    if (whole > max / unit)
      return -1;
    uint64_t v = whole * unit;
    /* Whole nanoseconds only, as in Go: fraction digits finer than the
     * unit divides into (a few ns at most) are dropped.  What is left
     * gives frac*(unit/scale) < unit, which cannot overflow. */
    while (unit % scale) {
      frac /= 10;
      scale /= 10;
    }
    uint64_t fv = frac * (unit / scale);
    if (v > max - fv || total > max - (v + fv))
      return -1;
    total += v + fv;
  }
  return (int64_t)(total / 1000000);
}

int dlock__consul_header_index(const char *line, size_t n, uint64_t *index) {
  static const char name[] = "x-consul-index:";
  const size_t nl = sizeof name - 1;
  if (!line || n < nl || strncasecmp(line, name, nl) != 0)
    return 0;
  const char *p = line + nl, *end = line + n;
  /* The field's own syntax (RFC 9110 5.5): blanks around the value and
   * the line's CRLF are not part of it. */
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
    end--;
  if (p == end)
    return dlock_seterr(DLOCK_EBACKEND, "consul: empty X-Consul-Index");
  uint64_t v = 0;
  for (const char *q = p; q < end; q++) {
    if (*q < '0' || *q > '9')
      return dlock_seterr(DLOCK_EBACKEND, "consul: X-Consul-Index is not a number: %.*s",
                          (int)(end - p > 40 ? 40 : end - p), p);
    unsigned d = (unsigned)(*q - '0');
    if (v > (UINT64_MAX - d) / 10)
      return dlock_seterr(DLOCK_EBACKEND, "consul: X-Consul-Index is out of range: %.*s",
                          (int)(end - p > 40 ? 40 : end - p), p);
    v = v * 10 + d;
  }
  if (v == 0)
    return dlock_seterr(DLOCK_EBACKEND, "consul: X-Consul-Index is 0");
  *index = v;
  return 1;
}

int dlock__consul_parse_bool(const char *body, size_t len) {
  if (!body)
    return -1;
  /* 1.21 writes the bare word; a newline or blanks around it (another
   * version, a proxy) change nothing. */
  while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r' || body[len - 1] == ' ' ||
                     body[len - 1] == '\t'))
    len--;
  while (len > 0 && (*body == ' ' || *body == '\t' || *body == '\n' || *body == '\r')) {
    body++;
    len--;
  }
  if (len == 4 && memcmp(body, "true", 4) == 0)
    return 1;
  if (len == 5 && memcmp(body, "false", 5) == 0)
    return 0;
  return -1;
}

int dlock__consul_pause_after_block(uint64_t seen, uint64_t got, int64_t took_ns) {
  if (got == 0)
    return 1;
  if (got != seen)
    return 0;
  /* The shortest wait block_on() asks for is 10 ms; half of it is sooner
   * than any agent that honoured it could answer. */
  return took_ns < 5000000;
}

int dlock__consul_pause_when_free(unsigned run) { return run > 1; }

int dlock__consul_pause_unchanged(const char *was_holder, uint64_t was_at, const char *holder,
                                  uint64_t at) {
  return was_at == at && strcmp(was_holder, holder) == 0;
}
