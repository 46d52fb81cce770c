/* Leases shared by a client's locks: the layer session stores build on.
 *
 * A store whose locks live as long as a lease or session (etcd's leases,
 * Consul's and ZooKeeper's sessions) keeps one lease per lock ttl in use,
 * however many locks ride on it, and renews the lease, not each lock.
 * This table does the bookkeeping every such backend needs in the same
 * way: finding or
 * granting the lease for a ttl, one grant at a time and one refresh in
 * flight (callers who need a confirmation at least as recent as theirs
 * share it), the send time of the last confirmation (a lock's validity
 * counts from it), reference counts, and the moment a lease is gone at the
 * store.  The backend supplies only its requests, through dlock_lease_ops.
 *
 * Locking: the table has a mutex of its own, never held while it calls
 * the backend.  A backend may call every function here under its own
 * locks, except dlock_lease_get, dlock_lease_refresh, dlock_lease_renew,
 * dlock_lease_gone and dlock_leases_free, which call into it and send
 * requests, and, when its ops have a release, dlock_lease_put, which may
 * call that; its ops may take its own locks (and LEASE_OF is called
 * without any of the table's).
 */
#ifndef DLOCK_LEASE_H
#define DLOCK_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dlock/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlock_lease dlock_lease;
typedef struct dlock_leases dlock_leases;

typedef struct dlock_lease_ops {
  const char *store; /* "etcd": the start of every message */
  const char *what;  /* "lease", "session": what the store calls one */
  size_t priv_size;  /* bytes of backend state per lease (its id), zeroed */
  /* Ask the store for a lease that keeps locks of TTL_MS, before DEADLINE
   * (dlock_backend_now_ns() clock).  Fill PRIV with what names it and set
   * *KEEP_MS to how long the store keeps it without a refresh.  0, or a
   * negative code with a message. */
  int (*grant)(dlock_backend_client *bc, void *priv, int64_t ttl_ms, int64_t deadline_ns,
               int64_t *keep_ms);
  /* Keep it alive: 0 (with *KEEP_MS as the store now says, or left alone),
   * DLOCK_ELOST when the store no longer has it, or a transient code. */
  int (*refresh)(dlock_backend_client *bc, void *priv, int64_t deadline_ns, int64_t *keep_ms);
  /* Optional: the lease is gone at the store (a refresh said DLOCK_ELOST,
   * or dlock_lease_gone was called), so every lock on it is lost and
   * whatever else the backend keeps for it can go.  Called once per lease,
   * without the table's mutex. */
  void (*gone)(dlock_backend_client *bc, dlock_lease *l);
  /* Optional: end it at the store, from dlock_leases_free, so that what it
   * still carries goes now rather than when it expires.  Returning
   * DLOCK_ECONN skips the remaining leases (the store is unreachable). */
  int (*revoke)(dlock_backend_client *bc, void *priv, int64_t deadline_ns);
  /* Optional: let go of what PRIV holds (a connection of its own, as a
   * ZooKeeper session's handle), once for every lease whose grant
   * succeeded: when the last reference to it is given back after it went
   * out of use (gone), or in dlock_leases_free after revoke.  Called
   * without the table's mutex, on the thread that gave the reference back:
   * the backend must give its last references only on threads that may
   * wait for PRIV's connection to close. */
  void (*release)(dlock_backend_client *bc, void *priv);
  /* Optional, both or neither: a refresh in two steps, so that
   * dlock_lease_renew sends the requests of all its leases before it waits
   * for any (one round trip for all, and one that the store holds back
   * delays no other).  SEND sends it: 0 with *REQ set for WAIT, or what
   * refresh would return.  WAIT waits for that request's answer until
   * DEADLINE_NS and returns what refresh would, REQ being done with
   * either way. */
  int (*refresh_send)(dlock_backend_client *bc, void *priv, void **req);
  int (*refresh_wait)(dlock_backend_client *bc, void *priv, void *req, int64_t deadline_ns,
                      int64_t *keep_ms);
  /* Set when every request the store answers on a lease keeps it alive,
   * as on a ZooKeeper session, and the backend reports those answers
   * (dlock_lease_confirm): dlock_lease_get then hands out a lease as it
   * is, since the request the lock is taken with confirms it. */
  bool confirmed_by_use;
} dlock_lease_ops;

/* A table for BC's leases; OPS must outlive it.  0, or DLOCK_EINVAL (no
 * client, or OPS lacks a name, grant or refresh, or has only one of
 * refresh_send and refresh_wait) or DLOCK_ENOMEM. */
DLOCK_EXTERN int dlock_leases_new(dlock_backend_client *bc, const dlock_lease_ops *ops,
                                  dlock_leases **out);
/* Revoke every lease the store still has (ops->revoke), release every
 * one granted (ops->release) and free them all, referenced or not: the
 * backend must hold none afterwards.  NULL is a no-op. */
DLOCK_EXTERN void dlock_leases_free(dlock_leases *t);

/* The lease for locks of TTL_MS, with a reference: granted if there is
 * none, and refreshed first if its last confirmation is a third of TTL_MS
 * old (unless ops->confirmed_by_use), so that a lock taken now starts with
 * at least two thirds of its ttl.  DEADLINE_NS -1: no bound but the
 * client's request timeout on the requests it sends (a wait for another
 * thread's grant lasts as long as that grant).  DLOCK_EINVAL for a ttl of
 * 0 or less. */
DLOCK_EXTERN int dlock_lease_get(dlock_leases *t, int64_t ttl_ms, int64_t deadline_ns,
                                 dlock_lease **out);
/* Confirm L unless a refresh sent at or after SINCE_NS already did; callers
 * at the same time share one request.  0, DLOCK_ELOST when L is gone (it
 * is then dlock_lease_gone), or a transient code. */
DLOCK_EXTERN int dlock_lease_refresh(dlock_leases *t, dlock_lease *l, int64_t since_ns,
                                     int64_t deadline_ns);

/* The store answered a request on L that it answers only while L lives,
 * sent at SENT_NS (before it left): L's last confirmation moves there if
 * that is later.  For stores whose every answer keeps a lease alive. */
DLOCK_EXTERN void dlock_lease_confirm(dlock_leases *t, dlock_lease *l, int64_t sent_ns);

/* renew_many's keepalives.  Each lock BLS[i] whose RCS[i] is
 * DLOCK_LEASE_PENDING rides on the lease LEASE_OF gives for it, last
 * confirmed at *CONFIRMED_NS; every such lease is refreshed once (a
 * confirmation sent after the oldest of its locks' confirmations, by the
 * earliest of their io_deadline_ns; with ops->refresh_send, all sent
 * before any is waited for), and for those locks RCS[i] becomes 0 or the
 * refresh's code and BLS[i]->sent_ns the lease's last confirmation.
 * Other entries are left as they are.  0, or DLOCK_ENOMEM for all. */
#define DLOCK_LEASE_PENDING 1
DLOCK_EXTERN int dlock_lease_renew(dlock_leases *t, dlock_backend_lock **bls, size_t n, int *rcs,
                                   dlock_lease *(*lease_of)(dlock_backend_lock *bl,
                                                            int64_t *confirmed_ns));

/* renew_many's key checks, after dlock_lease_renew: do the store's keys
 * still name us?  The locks BLS[i] whose RCS[i] is 0 go to CHECK in
 * batches of at most MAX (BATCH[0..M), in the order of BLS), each batch
 * by the earliest io_deadline_ns among its locks (-1: none).  CHECK sets
 * BRCS[0..M): 0 while the store holds the key for the lock, DLOCK_ELOST
 * when it does not, or a transient code; or it returns a negative code
 * for the whole batch.  Those results become the locks' RCS.  0, or
 * DLOCK_EINVAL / DLOCK_ENOMEM for all (RCS then as it was). */
typedef int (*dlock_lease_check_fn)(void *ud, dlock_backend_lock *const *batch, size_t m,
                                    int64_t deadline_ns, int *brcs);
DLOCK_EXTERN int dlock_lease_check(dlock_backend_lock **bls, size_t n, int *rcs, size_t max,
                                   dlock_lease_check_fn check, void *ud);

/* Another reference to L, and giving one back (the last one of a lease
 * that is no longer in use frees it).  These and the accessors below do
 * nothing with a NULL table or lease (a NULL lease reads as dead, 0). */
DLOCK_EXTERN void dlock_lease_hold(dlock_leases *t, dlock_lease *l);
DLOCK_EXTERN void dlock_lease_put(dlock_leases *t, dlock_lease *l);
/* L is gone at the store (the backend learnt it from an answer): later
 * acquisitions get a new lease, and ops->gone is called once. */
DLOCK_EXTERN void dlock_lease_gone(dlock_leases *t, dlock_lease *l);

DLOCK_EXTERN void *dlock_lease_priv(const dlock_lease *l);
/* The lock ttl L serves. */
DLOCK_EXTERN int64_t dlock_lease_ttl_ms(const dlock_lease *l);
/* What the store last said it keeps L for. */
DLOCK_EXTERN int64_t dlock_lease_keep_ms(dlock_leases *t, const dlock_lease *l);
/* Send time of L's last confirmation (grant or refresh). */
DLOCK_EXTERN int64_t dlock_lease_fresh_ns(dlock_leases *t, const dlock_lease *l);
DLOCK_EXTERN bool dlock_lease_dead(dlock_leases *t, const dlock_lease *l);
/* Whether MATCH says yes of the state of a lease the store has (granted,
 * not gone): "is this lease id one of ours".  MATCH runs under the table's
 * mutex and must not call back into it. */
DLOCK_EXTERN bool dlock_leases_any(dlock_leases *t, bool (*match)(const void *priv, void *ud),
                                   void *ud);
/* Grants asked for and refreshes sent so far, for a backend's stats. */
DLOCK_EXTERN void dlock_leases_counts(dlock_leases *t, uint64_t *grants, uint64_t *refreshes);

#ifdef __cplusplus
}
#endif
#endif
