/* What a decoded etcd answer must look like whichever wire it came in on:
 * the gateway's JSON (fuzz_etcd_json) or gRPC's protobuf
 * (fuzz_etcd_grpc) decode into the same structs with the same bounds
 * (etcd-codec.h).  Each check takes a decoder's return code and outputs,
 * the outputs preset by the caller as noted. */
#ifndef DLOCK_FUZZ_ETCD_ORACLES_H
#define DLOCK_FUZZ_ETCD_ORACLES_H

#include <inttypes.h>

#include "fuzz.h"

#include "backends/etcd/etcd-codec.h"

#define REV_OK(r) ((r) >= 0 && (r) <= DLOCK__ETCD_REV_MAX)

__attribute__((unused)) static void etcd_check_kv(const dlock__etcd_kv *kv) {
  if (kv->key)
    FUZZ_CHECK(kv->key[kv->keylen] == '\0', "kv key not terminated at its length");
  FUZZ_CHECK(kv->value && kv->value[kv->valuelen] == '\0', "kv value");
  FUZZ_CHECK(REV_OK(kv->create_revision) && REV_OK(kv->mod_revision),
             "kv revisions %" PRId64 " %" PRId64, kv->create_revision, kv->mod_revision);
  FUZZ_CHECK(kv->version >= 0, "kv version %" PRId64, kv->version);
  char owner[40], label[16];
  dlock__etcd_value_split(kv->value, kv->valuelen, owner, sizeof owner, label, sizeof label);
  FUZZ_CHECK(memchr(owner, '\0', sizeof owner) && memchr(label, '\0', sizeof label),
             "value_split");
}

/* T was filled with junk before the decoder; freed here. */
__attribute__((unused)) static void etcd_check_txn(int rc, dlock__etcd_txn *t) {
  if (rc == 0) {
    FUZZ_CHECK(t->revision >= 1 && t->revision <= DLOCK__ETCD_REV_MAX,
               "txn revision %" PRId64, t->revision);
    FUZZ_CHECK(t->succeeded == 0 || t->succeeded == 1, "succeeded %d", t->succeeded);
    FUZZ_CHECK(t->nres == 0 || t->res, "results");
    for (size_t i = 0; i < t->nres; i++) {
      const dlock__etcd_opres *o = &t->res[i];
      FUZZ_CHECK(o->op >= DLOCK__ETCD_OP_RANGE && o->op <= DLOCK__ETCD_OP_DELETE, "op %d",
                 (int)o->op);
      FUZZ_CHECK(o->count >= 0 && o->deleted >= 0, "negative count");
      FUZZ_CHECK(o->nkvs == 0 || o->kvs, "kvs");
      for (size_t j = 0; j < o->nkvs; j++)
        etcd_check_kv(&o->kvs[j]);
    }
  } else {
    FUZZ_CHECK(rc == DLOCK_EBACKEND || rc == DLOCK_ENOMEM, "txn rc %d", rc);
    FUZZ_CHECK(t->nres == 0 && !t->res, "txn results left on failure");
  }
  dlock__etcd_txn_free(t);
}

/* ID and TTL were 11 and 22 before the decoder. */
__attribute__((unused)) static void etcd_check_grant(int rc, int64_t id, int64_t ttl) {
  if (rc == 0)
    FUZZ_CHECK(id > 0 && ttl > 0 && ttl <= DLOCK__ETCD_TTL_MAX_S, "grant %" PRId64 " %" PRId64,
               id, ttl);
  else
    FUZZ_CHECK(rc < 0 && id == 11 && ttl == 22, "grant output touched on failure");
}

__attribute__((unused)) static void etcd_check_keepalive(int rc, int64_t ttl) {
  if (rc == 0)
    FUZZ_CHECK(ttl >= 0 && ttl <= DLOCK__ETCD_TTL_MAX_S, "keepalive ttl %" PRId64, ttl);
  else
    FUZZ_CHECK(rc < 0 && ttl == 0, "keepalive ttl %" PRId64 " on failure", ttl);
}

__attribute__((unused)) static void etcd_check_timetolive(int rc, int64_t ms) {
  if (rc == 0)
    FUZZ_CHECK(ms == -1 || (ms >= 0 && ms <= DLOCK__ETCD_TTL_MAX_S * 1000),
               "timetolive %" PRId64, ms);
  else
    FUZZ_CHECK(rc < 0 && ms == -1, "timetolive %" PRId64 " on failure", ms);
}

/* KS as a timetolive decoder left it (RC its result); freed here.  A
 * set is sorted, holds no key twice in a way bsearch misses, and finds
 * each of its keys; a failure leaves it empty. */
__attribute__((unused)) static void etcd_check_lease_keys(int rc, dlock__etcd_keys *ks) {
  if (rc < 0)
    FUZZ_CHECK(!ks->n && !ks->buf && !ks->k, "lease keys left on failure");
  for (size_t i = 0; rc == 0 && i < ks->n; i++) {
    FUZZ_CHECK(i == 0 || strcmp(ks->k[i - 1], ks->k[i]) <= 0, "lease keys out of order");
    FUZZ_CHECK(dlock__etcd_keys_has(ks, ks->k[i]), "a lease key not found");
  }
  dlock__etcd_keys_free(ks);
}

/* TOK was (char *)1 before the decoder; freed here. */
__attribute__((unused)) static void etcd_check_auth(int rc, char *tok) {
  if (rc == 0) {
    FUZZ_CHECK(tok && tok[0], "empty auth token");
    free(tok);
  } else {
    FUZZ_CHECK(rc < 0 && tok == NULL, "auth token on failure");
  }
}

/* EV was filled with junk before the decoder. */
__attribute__((unused)) static void etcd_check_watch(int rc, const dlock__etcd_watch_ev *ev) {
  if (rc == 0) {
    FUZZ_CHECK(REV_OK(ev->revision) && REV_OK(ev->compact_revision), "watch revisions");
    FUZZ_CHECK(memchr(ev->msg, '\0', sizeof ev->msg), "watch message");
    FUZZ_CHECK(ev->fault >= DLOCK__ETCD_F_NONE && ev->fault <= DLOCK__ETCD_F_OTHER,
               "watch fault");
  } else {
    FUZZ_CHECK(rc < 0 && !ev->created && !ev->deletes, "watch output on failure");
  }
}

#endif
