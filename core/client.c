/* Clients and lock handles: validation, reentrancy, dispatch to the backend.
 *
 * Every backend call goes through this file, renew.c or giveback.c;
 * nothing else calls ops->x.  A lock handle has at most one backend call
 * in flight at a time (the `inflight` flag, waited on under c->mu), so a
 * renewal or give-back on the core's threads never races a release from
 * the caller. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_TTL_MS 15000
#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_TIMEOUT_MS 5000

void dlock__lock_free(struct dlock_lock *l) {
  free(l); /* the backend's state, key and label live in the same block */
}

int64_t dlock__margin_ns(const dlock_client *c, int64_t ttl_ms) {
  /* Allow for clock-rate drift between us and the store (1%) plus a floor
   * for scheduling jitter, as Redlock's validity rule does. */
  return (ttl_ms / 100 + c->margin_floor_ms) * 1000000;
}

int64_t dlock__validity_deadline(const dlock_client *c, int64_t sent_ns, int64_t ttl_ms) {
  if (!(c->bc.caps & DLOCK_CAP_SERVER_TTL))
    return INT64_MAX;
  return sent_ns + ttl_ms * 1000000 - dlock__margin_ns(c, ttl_ms);
}

void dlock__mark_lost(dlock_client *c, struct dlock_lock *l, const char *why) {
  if (l->state != DLOCK_HELD)
    return;
  l->state = DLOCK_LOST;
  dlock__log(c, DLOCK_LOG_ERROR, "lock '%s' (token %llu) lost: %s", l->key,
             (unsigned long long)l->bl.token, why);
  atomic_fetch_add(&c->metrics.lost, 1);
  if (l->on_lost)
    l->lost_pending = true; /* the renew thread delivers it */
  dlock__renew_kick(c);
}

/* A lease so short that the safety margin eats most of it would be lost
 * before its first renewal. */
static int check_ttl(const dlock_client *c, int64_t ttl_ms, const char *what) {
  if (!(c->bc.caps & DLOCK_CAP_SERVER_TTL))
    return 0;
  int64_t margin_ms = dlock__margin_ns(c, ttl_ms) / 1000000;
  if (3 * margin_ms >= ttl_ms)
    return dlock_seterr(DLOCK_EINVAL,
                        "%s of %lld ms is too short: it must exceed three times the "
                        "safety margin (%lld ms)",
                        what, (long long)ttl_ms, (long long)margin_ms);
  return 0;
}

static const struct {
  const char *name;
  unsigned bit;
} cap_names[] = {
    {"fencing", DLOCK_CAP_FENCING},         {"native_wait", DLOCK_CAP_NATIVE_WAIT},
    {"fair", DLOCK_CAP_FAIR},               {"loss_detect", DLOCK_CAP_LOSS_DETECT},
    {"server_ttl", DLOCK_CAP_SERVER_TTL},   {"cross_host", DLOCK_CAP_CROSS_HOST},
    {"cross_process", DLOCK_CAP_CROSS_PROCESS}, {"holder_info", DLOCK_CAP_HOLDER_INFO},
    {"list", DLOCK_CAP_LIST},               {"break", DLOCK_CAP_BREAK},
};

/* ?require=fencing,cross_host: refuse at open a store that lacks what the
 * caller's correctness depends on, instead of discovering it in production. */
static int check_required(dlock_client *c, const char *list) {
  const char *p = list;
  while (*p) {
    size_t n = strcspn(p, ",");
    size_t i;
    for (i = 0; i < sizeof cap_names / sizeof *cap_names; i++)
      if (strlen(cap_names[i].name) == n && strncmp(cap_names[i].name, p, n) == 0)
        break;
    if (i == sizeof cap_names / sizeof *cap_names)
      return dlock_seterr(DLOCK_EINVAL,
                          "invalid URL parameter require: unknown capability '%.*s' (known: "
                          "fencing, native_wait, fair, loss_detect, server_ttl, cross_host, "
                          "cross_process, holder_info)",
                          (int)n, p);
    if (!(c->bc.caps & cap_names[i].bit))
      return dlock_seterr(DLOCK_ENOTSUP, "backend '%s' does not provide '%s' (required by URL)",
                          c->ops->name, cap_names[i].name);
    p += n;
    if (*p == ',')
      p++;
  }
  return 0;
}

#define CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

void dlock_backend_lock_lost(dlock_backend_client *bc, dlock_backend_lock *bl) {
  if (!bc || !bl)
    return;
  dlock_client *c = CONTAINER_OF(bc, dlock_client, bc);
  struct dlock_lock *l = CONTAINER_OF(bl, struct dlock_lock, bl);
  pthread_mutex_lock(&c->mu);
  if (l->state == 0)
    l->lost_early = true; /* acquire is still running: it decides */
  else
    dlock__mark_lost(c, l, "the store reported it gone");
  pthread_mutex_unlock(&c->mu);
}

void dlock_backend_all_lost(dlock_backend_client *bc) {
  if (!bc)
    return;
  dlock_client *c = CONTAINER_OF(bc, dlock_client, bc);
  pthread_mutex_lock(&c->mu);
  for (struct dlock_lock *l = c->head; l; l = l->next) {
    if (l->state == 0)
      l->lost_early = true;
    else
      dlock__mark_lost(c, l, "the store ended the session that carried it");
  }
  pthread_mutex_unlock(&c->mu);
}

void dlock_backend_log(dlock_backend_client *bc, int level, const char *fmt, ...) {
  if (!bc || !fmt || !dlock__log_on(level))
    return;
  va_list ap;
  va_start(ap, fmt);
  dlock__vlog(CONTAINER_OF(bc, dlock_client, bc), level, fmt, ap);
  va_end(ap);
}

static int read_common_params(dlock_client *c) {
  dlock_url *u = c->url;
  dlock_backend_client *bc = &c->bc;
  int rc;
  if ((rc = dlock_url_param_duration(u, "ttl", DEFAULT_TTL_MS, &bc->default_ttl_ms)) < 0 ||
      (rc = dlock_url_param_duration(u, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_MS,
                                     &bc->connect_timeout_ms)) < 0 ||
      (rc = dlock_url_param_duration(u, "timeout", DEFAULT_TIMEOUT_MS, &bc->timeout_ms)) < 0 ||
      (rc = dlock_url_param_duration(u, "retry_initial", 10, &c->retry_initial_ms)) < 0 ||
      (rc = dlock_url_param_duration(u, "retry_max", 1000, &c->retry_max_ms)) < 0 ||
      (rc = dlock_url_param_duration(u, "margin", 2, &c->margin_floor_ms)) < 0)
    return rc;
  if (bc->default_ttl_ms <= 0 || bc->default_ttl_ms > DLOCK_TTL_MAX_MS)
    return dlock_seterr(DLOCK_EINVAL, "invalid URL parameter ttl: must be positive and at "
                                      "most 30 days");
  if (bc->connect_timeout_ms <= 0 || bc->timeout_ms <= 0)
    return dlock_seterr(DLOCK_EINVAL, "invalid URL parameter: timeouts must be positive");
  if (c->retry_initial_ms <= 0 || c->retry_max_ms < c->retry_initial_ms)
    return dlock_seterr(DLOCK_EINVAL,
                        "invalid URL parameters: need 0 < retry_initial <= retry_max");
  long long mult, jitter;
  if ((rc = dlock_url_param_int(u, "retry_multiplier", 2, 1, 16, &mult)) < 0 ||
      (rc = dlock_url_param_int(u, "retry_jitter", 50, 0, 100, &jitter)) < 0)
    return rc;
  c->retry_multiplier = (double)mult;
  c->retry_jitter = (double)jitter / 100.0;
  /* Claimed now, checked after the backend's open() has settled its caps. */
  c->require = NULL;
  dlock_url_param(u, "require", &c->require);
  const char *prefix;
  if (dlock_url_param(u, "prefix", &prefix)) {
    if (!*prefix || strlen(prefix) > 256)
      return dlock_seterr(DLOCK_EINVAL, "invalid URL parameter prefix: 1..256 bytes");
    bc->prefix = prefix;
  }
  return 0;
}

static int default_label(char *buf, size_t len) {
  char host[64];
  if (gethostname(host, sizeof host) != 0)
    strcpy(host, "unknown");
  host[sizeof host - 1] = '\0';
  return snprintf(buf, len, "%s:%ld", host, (long)getpid());
}

/* dlock_open once the URL parsed; U is the client's or freed here. */
static int open_client(dlock_url *u, dlock_client **out) {
  int rc;
  const dlock_backend_ops *ops = dlock__registry_find(dlock_url_scheme(u));
  if (!ops) {
    char known[256];
    dlock__registry_schemes(known, sizeof known);
    rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': unknown scheme '%s' (this library knows: %s)",
                      dlock_url_redacted(u), dlock_url_scheme(u), known);
    dlock__err_scrub(u);
    dlock__url_free(u);
    return rc;
  }
  if ((rc = dlock__ops_check(ops)) < 0) {
    dlock__url_free(u);
    return rc;
  }
  dlock_client *c = calloc(1, sizeof *c);
  if (!c) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory"); /* while U, the scope, lives */
    dlock__url_free(u);
    return rc;
  }
  c->ops = ops;
  c->url = u;
  c->table_size = 64;
  c->table = calloc(c->table_size, sizeof *c->table);
  c->redacted = strdup(dlock_url_redacted(u));
  if (ops->client_size)
    c->bc.priv = calloc(1, ops->client_size);
  c->bc.caps = ops->caps & ~(DLOCK_CAP_LIST | DLOCK_CAP_BREAK);
  /* What an older backend's struct does not have, it cannot do. */
  if (ops->version >= 2 && ops->list)
    c->bc.caps |= ops->caps & DLOCK_CAP_LIST;
  if (ops->version >= 2 && ops->force_release)
    c->bc.caps |= ops->caps & DLOCK_CAP_BREAK;
  if (!c->table || !c->redacted || (ops->client_size && !c->bc.priv)) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto fail;
  }
  pthread_mutex_init(&c->mu, NULL);
  if (dlock__cond_init(&c->cv) < 0 || dlock__cond_init(&c->renew_cv) < 0 ||
      dlock__cond_init(&c->gb_cv) < 0) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = read_common_params(c)) < 0)
    goto fail;
  default_label(c->default_label, sizeof c->default_label);
  c->renew_wake_ns = INT64_MIN; /* not started: it scans everything first */
  if ((rc = check_ttl(c, c->bc.default_ttl_ms, "URL parameter ttl")) < 0)
    goto fail;
  if ((rc = ops->open(&c->bc, u)) < 0)
    goto fail;
  /* After open: what a store guarantees can depend on its URL. */
  if ((rc = dlock__url_check_unused(u)) < 0 ||
      (c->require && (rc = check_required(c, c->require)) < 0)) {
    ops->close(&c->bc);
    goto fail;
  }
  *out = c;
  return 0;
fail:
  /* The message may quote what a store library said about the URL. */
  dlock__err_scrub(u);
  free(c->bc.priv);
  free(c->table);
  free(c->redacted);
  dlock__url_free(u);
  free(c);
  return rc;
}

int dlock_open(const char *url, dlock_client **out) {
  dlock__clear_err();
  if (!url || !out)
    return dlock_seterr(DLOCK_EINVAL, "dlock_open: NULL argument");
  dlock_url *u = NULL;
  int rc = dlock__url_parse(url, &u);
  if (rc < 0)
    return rc;
  /* Restored before U can be freed. */
  const dlock_url *was = dlock__err_scope(u);
  rc = open_client(u, out);
  dlock__err_scope(was);
  return rc;
}

void dlock_close(dlock_client *c) {
  if (!c)
    return;
  /* What the store says while we close is left in the thread's message. */
  const dlock_url *was = dlock__err_scope(c->url);
  dlock__renew_stop(c);
  dlock__giveback_stop(c);
  /* Locks the caller never released: give them back so others need not
   * wait for the TTL. */
  bool reachable = true;
  struct dlock_lock *unreleased = NULL;
  while (c->head) {
    struct dlock_lock *l = c->head;
    dlock__table_remove(c, l);
    /* Once the store stops answering, the rest expire on their own; waiting
     * a timeout per lock would make close take minutes.  A give-back the
     * store already left unanswered is not asked again (its grant expires
     * within a ttl), but says nothing of the store now: the others are. */
    bool unanswered = (l->giveback || l->owed) && l->giveback_tries > 0;
    if (l->returned || l->watch) {
      /* Given back already: nothing left at the store, or only a late
       * grant for the client's session, which the backend's close ends. */
      dlock__lock_free(l);
      continue;
    }
    if (reachable && !unanswered &&
        (l->state == DLOCK_HELD || l->state == DLOCK_LOST || l->giveback) &&
        dlock_err_is_transient(c->ops->release(&c->bc, &l->bl)))
      reachable = false;
    if (reachable && !unanswered) {
      dlock__lock_free(l);
    } else {
      /* Never released: the backend may still know it until close(). */
      l->next = unreleased;
      unreleased = l;
    }
  }
  c->ops->close(&c->bc);
  while (unreleased) {
    struct dlock_lock *l = unreleased;
    unreleased = l->next;
    dlock__lock_free(l);
  }
  pthread_cond_destroy(&c->cv);
  pthread_cond_destroy(&c->renew_cv);
  pthread_cond_destroy(&c->gb_cv);
  pthread_mutex_destroy(&c->mu);
  free(c->bc.priv);
  free(c->table);
  free(c->redacted);
  dlock__err_scope(was);
  dlock__url_free(c->url);
  free(c);
}

static int check_opts(const dlock_options *o) {
  if (o->ttl_ms < 0 || o->ttl_ms > DLOCK_TTL_MAX_MS)
    return dlock_seterr(DLOCK_EINVAL,
                        "ttl_ms must be in [0, 30 days] (0 = client default), got %lld",
                        (long long)o->ttl_ms);
  if (o->wait_ms < -1 || o->wait_ms > DLOCK_WAIT_MAX_MS)
    return dlock_seterr(DLOCK_EINVAL,
                        "wait_ms must be >= 0 and at most 100 years, or -1 to wait forever");
  if (o->owner_label && strnlen(o->owner_label, 128) >= 128)
    return dlock_seterr(DLOCK_EINVAL, "owner_label is longer than 127 bytes");
  return 0;
}

static void sleep_until(int64_t until_ns) {
  struct timespec ts;
  dlock__ns_to_timespec(until_ns, &ts);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

/* For stores that cannot notify: retry with exponential backoff and jitter,
 * never sleeping past the holder's known expiry or our deadline. */
static int poll_acquire(dlock_client *c, dlock_backend_lock *bl, int64_t deadline,
                        bool *waited_out) {
  double interval = (double)c->retry_initial_ms;
  for (;;) {
    bl->holder_ttl_ms = -1;
    int rc = c->ops->try_acquire(&c->bc, bl);
    if (rc != DLOCK_EBUSY)
      return rc;
    int64_t now = dlock__now_ns();
    if (deadline >= 0 && now >= deadline) {
      *waited_out = true;
      return dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for lock '%s'", bl->key);
    }
    double jit = c->retry_jitter * (double)dlock__random_below(1000) / 1000.0;
    int64_t wait_ns = (int64_t)(interval * (1.0 - jit) * 1e6);
    if (bl->holder_ttl_ms >= 0 && bl->holder_ttl_ms * 1000000 + 1000000 < wait_ns)
      wait_ns = bl->holder_ttl_ms * 1000000 + 1000000;
    int64_t until = now + wait_ns;
    if (deadline >= 0 && until > deadline)
      until = deadline;
    sleep_until(until);
    interval *= c->retry_multiplier;
    if (interval > (double)c->retry_max_ms)
      interval = (double)c->retry_max_ms;
  }
}

/* One try at the store: a single request for WAIT_MS 0, else a wait until
 * DEADLINE.  *WAITED_OUT tells a DLOCK_ETIMEDOUT that means "the wait ran
 * out" (the backend cleaned up after itself) from a request timeout. */
static int attempt_once(dlock_client *c, dlock_backend_lock *bl, int64_t wait_ms,
                        int64_t deadline, bool *waited_out) {
  int rc;
  *waited_out = false;
  if (wait_ms == 0)
    return c->ops->try_acquire(&c->bc, bl);
  if (deadline >= 0 && dlock__now_ns() >= deadline) {
    /* The last attempt of a wait that failed before, made at its deadline:
     * one request, so that a store still away says so instead of a wait
     * cut short at once. */
    rc = c->ops->try_acquire(&c->bc, bl);
    if (rc == DLOCK_EBUSY) {
      *waited_out = true;
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for lock '%s'", bl->key);
    }
    return rc;
  }
  if (!c->ops->acquire)
    return poll_acquire(c, bl, deadline, waited_out);
  rc = c->ops->acquire(&c->bc, bl, deadline);
  if (rc == DLOCK_ETIMEDOUT && deadline >= 0 && dlock__now_ns() >= deadline)
    *waited_out = true;
  return rc;
}

/* A handle for KEY, not yet in the table: zeroed backend state, the
 * backend's view pointing at the handle's own copies.  NULL when out of
 * memory. */
static struct dlock_lock *lock_new(dlock_client *c, const char *key, size_t keylen,
                                   const char *label, uint64_t thread) {
  /* One block: the handle, the backend's state (aligned for any type),
   * then the key and label.  Separate allocations cost a chunk header
   * and rounding each, about 60 bytes a held lock. */
  const size_t align = _Alignof(max_align_t);
  size_t at_priv = (sizeof(struct dlock_lock) + align - 1) / align * align;
  size_t at_key = at_priv + c->ops->lock_size, labellen = strlen(label);
  struct dlock_lock *l = calloc(1, at_key + keylen + 1 + labellen + 1);
  if (!l)
    return NULL;
  char *base = (char *)l;
  l->client = c;
  l->bl.priv = c->ops->lock_size ? base + at_priv : NULL;
  l->key = memcpy(base + at_key, key, keylen); /* calloc wrote the NULs */
  l->label = memcpy(base + at_key + keylen + 1, label, labellen);
  l->thread = thread;
  l->bl.key = l->key;
  l->bl.keylen = keylen;
  l->bl.owner = l->owner;
  l->bl.label = l->label;
  return l;
}

/* Why an attempt is given back, for the log. */
static const char unanswered_why[] = "the store may have granted it to a request that went unanswered";

/* A copy of L's unanswered attempt (its owner and backend state) to be
 * given back in the background, or with ANSWERED (given back already)
 * watched there, while L goes on under a new owner.  False when out of
 * memory: the attempt's state then stays L's. */
static bool giveback_copy(dlock_client *c, const struct dlock_lock *l, bool answered) {
  struct dlock_lock *g = lock_new(c, l->key, l->bl.keylen, l->label, l->thread);
  if (!g)
    return false;
  memcpy(g->owner, l->owner, sizeof g->owner);
  if (c->ops->lock_size)
    memcpy(g->bl.priv, l->bl.priv, c->ops->lock_size);
  g->bl.ttl_ms = l->bl.ttl_ms;
  g->bl.sent_ns = l->bl.sent_ns;
  g->late_until_ns = l->late_until_ns;
  pthread_mutex_lock(&c->mu);
  dlock__table_add(c, g);
  int rc = answered ? dlock__giveback_watch(c, g) : 0;
  if (rc < 0)
    dlock__table_remove(c, g);
  pthread_mutex_unlock(&c->mu);
  if (!answered)
    dlock__giveback(c, g, unanswered_why);
  else if (rc < 0)
    dlock__lock_free(g); /* nobody to look again */
  return true;
}

/* Attempts until one is answered or the deadline passes.  A blocking
 * acquire rides out transient failures (a reset connection, a request
 * timeout, a failover) with the client's backoff, as a caller who asked to
 * wait 30 s expects; a try (WAIT_MS 0) makes one attempt.  *MAYBE_GRANTED
 * is set when the last attempt failed after its request may have reached
 * the store (the backend had stamped bl->sent_ns), so the store may hold
 * the lock for its owner. */
static int attempt_until(dlock_client *c, struct dlock_lock *l, int64_t wait_ms,
                         int64_t deadline, bool *maybe_granted) {
  dlock_backend_lock *bl = &l->bl;
  double backoff = (double)c->retry_initial_ms;
  int retries = 0;
  for (;;) {
    bl->holder_ttl_ms = -1;
    bl->sent_ns = 0;
    bl->token = 0;
    bool waited_out;
    int64_t start = dlock__now_ns();
    int rc = attempt_once(c, bl, wait_ms, deadline, &waited_out);
    if (rc == 0 && bl->sent_ns == 0)
      bl->sent_ns = start;
    bool transient = rc == DLOCK_ECONN || (rc == DLOCK_ETIMEDOUT && !waited_out);
    /* A store that carries out requests late: sent_ns left set says the
     * attempt's last request went unanswered, also at the wait's end. */
    *maybe_granted = (transient || (rc == DLOCK_ETIMEDOUT && c->bc.late_ms > 0)) &&
                     bl->sent_ns != 0;
    l->late_until_ns =
        *maybe_granted && c->bc.late_ms > 0 ? dlock__now_ns() + c->bc.late_ms * 1000000 : 0;
    if (rc == 0 || wait_ms == 0 || !transient)
      return rc;
    if (deadline >= 0 && dlock__now_ns() >= deadline) {
      if (retries) {
        char last[400];
        snprintf(last, sizeof last, "%s", dlock_client_errmsg(NULL));
        dlock_seterr(rc, "%s (the last of %d attempts until the deadline)", last, retries + 1);
      }
      return rc;
    }
    char why[512];
    snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
    if (*maybe_granted) {
      /* Give back what the unanswered attempt may have won before asking
       * again; if the store is still away, on the give-back thread under the
       * old owner, so that it can never touch the next attempt's grant. */
      bool moved = true;
      if (dlock_err_is_transient(c->ops->release(&c->bc, bl))) {
        moved = giveback_copy(c, l, false); /* counted there */
      } else {
        atomic_fetch_add(&c->metrics.giveback, 1);
        dlock__log(c, DLOCK_LOG_INFO, "gave back what an unanswered acquire of '%s' may have won",
                   l->key);
        if (l->late_until_ns)
          moved = giveback_copy(c, l, true);
      }
      /* Out of memory for the copy: no next attempt; the commit hands this
       * one on. */
      if (!moved)
        return dlock_seterr(rc, "%s", why);
      *maybe_granted = false; /* given back, or handed on: not again */
    }
    dlock_seterr(rc, "%s", why);
    if (c->ops->lock_size)
      memset(bl->priv, 0, c->ops->lock_size);
    /* The give-back may have used up the wait: one operation past the
     * deadline at most, not two. */
    if (deadline >= 0 && dlock__now_ns() >= deadline)
      return rc;
    /* Every attempt is a new acquisition with an identity of its own. */
    if (dlock__random_hex(l->owner, 16) < 0)
      return rc;
    /* The last pause ends at the deadline, with one more attempt there. */
    double jit = c->retry_jitter * (double)dlock__random_below(1000) / 1000.0;
    int64_t until = dlock__now_ns() + (int64_t)(backoff * (1.0 - jit) * 1e6);
    if (deadline >= 0 && until > deadline)
      until = deadline;
    dlock__log(c, DLOCK_LOG_WARN, "acquire of '%s' failed (%s: %s); attempt %d, next in %lld ms",
               l->key, dlock_err_name(rc), why, retries + 2,
               (long long)((until - dlock__now_ns()) / 1000000));
    sleep_until(until);
    retries++;
    atomic_fetch_add(&c->metrics.acquire_retries, 1);
    pthread_mutex_lock(&c->mu);
    l->lost_early = false; /* a report about the abandoned attempt */
    pthread_mutex_unlock(&c->mu);
    backoff *= c->retry_multiplier;
    if (backoff > (double)c->retry_max_ms)
      backoff = (double)c->retry_max_ms;
  }
}

/* One acquisition on its way from acquire_reserve through acquire_at_store
 * to acquire_commit. */
struct acquire {
  dlock_client *c;
  const dlock_options *opts; /* the caller's, or the defaults */
  const char *key;
  int64_t wait_ms;           /* 0 for a try */
  int64_t ttl_ms;            /* asked for; once granted, what the store granted */
  int64_t t0;                /* when the call began */
  int64_t deadline;          /* of the wait, -1 for none */
  bool reentered;            /* L is the thread's own handle, held once more */
  struct dlock_lock *l;
  int64_t answered_ns;       /* when the store's answer was in */
  bool maybe_granted;        /* a failure after which the store may hold L */
};

/* Reserve: check the arguments, then take this client's place for KEY.
 * The calling thread's own valid handle is held once more and put in *OUT
 * (A->reentered); its lost one is refused until released.  Behind another
 * thread of the client that holds or is acquiring KEY, or an unanswered
 * attempt still being given back, the caller queues here, on c->cv, until
 * that entry is gone or the wait runs out (a try fails at once).
 *
 * Guarantees, on 0 without A->reentered: A->l is a new entry of KEY in the
 * key table, of state 0, with a fresh owner.  While it is there no other
 * acquire of this client on KEY passes this step, the renew thread leaves
 * it alone, and a loss the backend reports only marks it lost_early; it
 * is for acquire_commit to settle.  On failure the table is as it was and
 * the result is counted (but for a NULL client or OUT). */
static int acquire_reserve(dlock_client *c, const char *key, const dlock_options *opts,
                           dlock_lock **out, bool try_only, struct acquire *a) {
  static const dlock_options defaults = DLOCK_OPTIONS_INIT;
  size_t keylen;
  int rc;
  if (!c || !out)
    return dlock_seterr(DLOCK_EINVAL, "NULL client or output pointer");
  if (!opts)
    opts = &defaults;
  if ((rc = dlock__key_check(key, &keylen)) < 0 || (rc = check_opts(opts)) < 0 ||
      (opts->ttl_ms && (rc = check_ttl(c, opts->ttl_ms, "ttl_ms")) < 0)) {
    dlock__metrics_acquire_result(&c->metrics, DLOCK_EINVAL);
    return rc;
  }
  int64_t wait_ms = try_only ? 0 : opts->wait_ms;
  int64_t t0 = dlock__now_ns();
  int64_t deadline = wait_ms < 0 ? -1 : t0 + wait_ms * 1000000;
  *a = (struct acquire){.c = c, .opts = opts, .key = key, .wait_ms = wait_ms,
                        .ttl_ms = opts->ttl_ms ? opts->ttl_ms : c->bc.default_ttl_ms,
                        .t0 = t0, .deadline = deadline};
  uint64_t self = dlock__thread_serial();
  struct dlock_lock *l;

  pthread_mutex_lock(&c->mu);
  while ((l = dlock__table_find_for(c, key, self)) != NULL) {
    if (l->thread == self && l->state != 0) {
      if (l->state == DLOCK_HELD && dlock__now_ns() < l->valid_until_ns) {
        l->holds++;
        pthread_mutex_unlock(&c->mu);
        *out = l;
        dlock__metrics_acquire_result(&c->metrics, 0);
        a->reentered = true;
        return 0;
      }
      pthread_mutex_unlock(&c->mu);
      dlock__metrics_acquire_result(&c->metrics, DLOCK_ELOST);
      return dlock_seterr(DLOCK_ELOST,
                          "this thread still has a lost handle for '%s': release it first", key);
    }
    if (l->watch) {
      /* An attempt given back earlier is being looked at again: one
       * request, which a try waits for too, and a wait until its end. */
      if (dlock_backend_cond_wait(&c->cv, &c->mu, wait_ms == 0 ? -1 : deadline) ==
          DLOCK_ETIMEDOUT) {
        pthread_mutex_unlock(&c->mu);
        dlock__metrics_acquire_result(&c->metrics, DLOCK_ETIMEDOUT);
        return dlock_seterr(DLOCK_ETIMEDOUT,
                            "timed out waiting for lock '%s': an earlier attempt of this client "
                            "is being given back",
                            key);
      }
      continue;
    }
    /* Another thread of this client holds or is acquiring the key.  Queue
     * here, not at the store: stores that tie locks to a session would grant
     * it to us a second time.  A give-back left over when no thread could
     * start gets one now. */
    if (l->giveback && !c->gb_started && dlock__giveback_start(c) == 0)
      dlock__giveback_kick(c);
    if (wait_ms == 0) {
      bool gb = l->giveback;
      pthread_mutex_unlock(&c->mu);
      dlock__metrics_acquire_result(&c->metrics, DLOCK_EBUSY);
      if (gb)
        return dlock_seterr(DLOCK_EBUSY,
                            "'%s' may still be held for this client by an attempt that got "
                            "no answer; it is being given back",
                            key);
      return dlock_seterr(DLOCK_EBUSY, "'%s' is held by another thread of this client", key);
    }
    if (deadline < 0) {
      pthread_cond_wait(&c->cv, &c->mu);
    } else {
      struct timespec ts;
      dlock__ns_to_timespec(deadline, &ts);
      if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT &&
          (l = dlock__table_find(c, key)) != NULL) {
        bool gb = l->giveback;
        pthread_mutex_unlock(&c->mu);
        dlock__metrics_acquire_result(&c->metrics, DLOCK_ETIMEDOUT);
        if (gb)
          return dlock_seterr(DLOCK_ETIMEDOUT,
                              "timed out waiting for lock '%s': an earlier attempt of this "
                              "client got no answer and is still being given back",
                              key);
        return dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for lock '%s'", key);
      }
    }
  }
  char lbuf[128];
  snprintf(lbuf, sizeof lbuf, "%s", opts->owner_label ? opts->owner_label : c->default_label);
  l = lock_new(c, key, keylen, lbuf, self);
  if (!l || (rc = dlock__random_hex(l->owner, 16)) < 0) {
    pthread_mutex_unlock(&c->mu);
    dlock__lock_free(l);
    dlock__metrics_acquire_result(&c->metrics, DLOCK_ENOMEM);
    return rc < 0 ? rc : dlock_seterr(DLOCK_ENOMEM, "out of memory");
  }
  l->holds = 1;
  l->state = 0;
  dlock__table_add(c, l);
  pthread_mutex_unlock(&c->mu);
  a->l = l;
  return 0;
}

/* At the store, without c->mu: ask for A->l as the caller asked, with one
 * try_acquire, the backend's own wait, or the core's polling and retries
 * with backoff (attempt_until).
 *
 * Guarantees: 0 only for a grant still valid when the answer was in
 * (A->answered_ns), A->ttl_ms then being the lease to count on: the one
 * asked for, or less where the store granted less.  A grant that came too
 * late is released here.  Otherwise a negative code with its message, and
 * A->maybe_granted says whether the store may hold the lock for A->l's
 * owner all the same (the last request went unanswered). */
static int acquire_at_store(struct acquire *a) {
  dlock_client *c = a->c;
  dlock_backend_lock *bl = &a->l->bl;
  bl->ttl_ms = a->ttl_ms;
  int rc = attempt_until(c, a->l, a->wait_ms, a->deadline, &a->maybe_granted);
  a->answered_ns = dlock__now_ns();
  /* The store may grant less than was asked (a ZooKeeper server clamps the
   * session timeout): deadline and renewals count what it granted. */
  if (rc == 0 && bl->ttl_ms > 0 && bl->ttl_ms < a->ttl_ms)
    a->ttl_ms = bl->ttl_ms;
  if (rc == 0 && dlock__validity_deadline(c, bl->sent_ns, a->ttl_ms) <= a->answered_ns) {
    /* Granted so late that the lease may already be gone: never hand out
     * a handle that is not valid.  A session that keeps it past its ttl
     * gets it back later if the store does not answer now. */
    if (dlock_err_is_transient(c->ops->release(&c->bc, bl)) && c->bc.give_back_expired)
      a->maybe_granted = true;
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "lock '%s' was granted after its ttl had run out",
                      a->key);
  }
  if (rc > 0)
    rc = dlock_seterr(DLOCK_EBACKEND, "backend returned an invalid result");
  return rc;
}

/* Commit: settle A->l by RC, what acquire_at_store returned, and count the
 * outcome once.
 *
 * Guarantees: on 0, *OUT is A->l, HELD from A->answered_ns, its validity
 * deadline and first renewal counted from when its request left and its
 * options applied, with the renew thread running and woken if this lock is
 * due before it would look again.  A grant the backend reported lost in
 * the meantime (lost_early) is released and fails DLOCK_ELOST.  A failure
 * after which the store may hold the lock goes to the give-back, whose
 * entry keeps KEY reserved until it is done.  Any other failure removes
 * the entry and wakes those queued on KEY.  *OUT is untouched on failure. */
static int acquire_commit(struct acquire *a, int rc, dlock_lock **out) {
  dlock_client *c = a->c;
  struct dlock_lock *l = a->l;
  dlock_backend_lock *bl = &l->bl;
  const dlock_options *opts = a->opts;
  if (rc < 0 && a->maybe_granted) {
    /* The request may have reached the store and only the reply been lost:
     * give back by owner whatever we might hold, so it does not sit there
     * for a whole ttl.  In the background, so that a failed attempt costs
     * the caller one request timeout, not two. */
    dlock__metrics_acquire_result(&c->metrics, rc);
    char why[512];
    snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
    dlock__giveback(c, l, unanswered_why);
    return dlock_seterr(rc, "%s", why);
  }

  bool kick = false;
  pthread_mutex_lock(&c->mu);
  if (rc == 0 && l->lost_early) {
    /* The store took it back between granting it and our return: a handle
     * that is lost before the caller sees it is no grant at all. */
    pthread_mutex_unlock(&c->mu);
    int brc = c->ops->release(&c->bc, bl);
    rc = dlock_seterr(DLOCK_ELOST, "lock '%s' was lost while it was being acquired", a->key);
    if (dlock_err_is_transient(brc) && c->bc.give_back_expired) {
      dlock__metrics_acquire_result(&c->metrics, rc);
      dlock__giveback(c, l, "the store did not answer its release");
      return dlock_seterr(rc, "lock '%s' was lost while it was being acquired", a->key);
    }
    pthread_mutex_lock(&c->mu);
  }
  if (rc == 0) {
    l->state = DLOCK_HELD;
    l->acquired_ns = a->answered_ns;
    l->valid_until_ns = dlock__validity_deadline(c, bl->sent_ns, a->ttl_ms);
    l->next_renew_ns = bl->sent_ns + a->ttl_ms * 1000000 / 3;
    l->auto_renew = opts->auto_renew != 0;
    l->on_lost = opts->on_lost;
    l->on_lost_arg = opts->on_lost_arg;
    atomic_fetch_add(&c->metrics.held_now, 1);
    int64_t due = l->valid_until_ns;
    if (l->auto_renew && l->next_renew_ns < due)
      due = l->next_renew_ns;
    kick = due < c->renew_wake_ns;
  } else {
    dlock__table_remove(c, l);
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);

  dlock__metrics_acquire_result(&c->metrics, rc);
  if (rc < 0) {
    dlock__lock_free(l);
    return rc;
  }
  dlock__hist_add(&c->metrics.acquire_wait, a->answered_ns - a->t0);
  if ((rc = dlock__renew_start(c)) < 0) {
    dlock_release(l);
    return rc;
  }
  if (kick)
    dlock__renew_kick(c);
  *out = l;
  return 0;
}

/* dlock_acquire and dlock_try_acquire: reserve, ask the store, commit. */
static int acquire_common(dlock_client *c, const char *key, const dlock_options *opts,
                          dlock_lock **out, bool try_only) {
  dlock__clear_err();
  struct acquire a = {0};
  int rc = acquire_reserve(c, key, opts, out, try_only, &a);
  if (rc < 0 || a.reentered)
    return rc;
  return acquire_commit(&a, acquire_at_store(&a), out);
}

/* Every public call runs inside its client's error scope: a store
 * library's text may quote the URL it was given, secrets included, and a
 * message copied into a smaller buffer could cut a secret past finding.
 * The final scrub covers text written without dlock_seterr. */
int dlock__api_end(const dlock_client *c, const dlock_url *was, int rc) {
  if (c) {
    if (rc < 0)
      dlock__err_scrub(c->url);
    dlock__err_scope(was);
  }
  return rc;
}

const dlock_url *dlock__api_begin(const dlock_client *c) {
  return c ? dlock__err_scope(c->url) : NULL;
}

int dlock_acquire(dlock_client *c, const char *key, const dlock_options *opts,
                  dlock_lock **out) {
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, acquire_common(c, key, opts, out, false));
}

int dlock_try_acquire(dlock_client *c, const char *key, const dlock_options *opts,
                      dlock_lock **out) {
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, acquire_common(c, key, opts, out, true));
}

static bool on_renew_thread(dlock_client *c) {
  return c->renew_started && pthread_equal(pthread_self(), c->renew_thread);
}

/* Under c->mu: the state a caller should see right now. */
static int effective_state(const struct dlock_lock *l) {
  if (l->state == DLOCK_HELD && dlock__now_ns() >= l->valid_until_ns)
    return DLOCK_LOST;
  return l->state;
}

static int release_lock(dlock_lock *l) {
  dlock__clear_err();
  if (!l)
    return dlock_seterr(DLOCK_EINVAL, "dlock_release: NULL lock");
  dlock_client *c = l->client;
  if (on_renew_thread(c))
    return dlock_seterr(DLOCK_EINVAL, "dlock_release called from an on_lost callback");
  pthread_mutex_lock(&c->mu);
  if (l->holds > 1) {
    l->holds--;
    pthread_mutex_unlock(&c->mu);
    return 0;
  }
  while (l->inflight)
    pthread_cond_wait(&c->cv, &c->mu);
  l->inflight = true;
  int was = effective_state(l);
  if (was == DLOCK_LOST)
    dlock__mark_lost(c, l, "its validity ran out before the release");
  /* A give-back still owed is this release now; one already answered has
   * left the backend nothing to release. */
  bool returned = l->returned;
  if (l->owed) {
    l->owed = false;
    atomic_fetch_sub(&c->metrics.giveback_pending, 1);
  }
  pthread_mutex_unlock(&c->mu);

  /* Even a lost lock gets a release: compare-and-delete is harmless if
   * someone else holds it, and frees it early if the store still had it. */
  int brc = returned ? DLOCK_ELOST : c->ops->release(&c->bc, &l->bl);
  int rc = 0;
  if (was == DLOCK_LOST) {
    rc = dlock_seterr(DLOCK_ELOST, "lock '%s' was lost before it was released", l->key);
  } else if (brc == DLOCK_ELOST || brc == DLOCK_ENOTOWNED) {
    atomic_fetch_add(&c->metrics.lost, 1);
    rc = dlock_seterr(DLOCK_ELOST, "lock '%s' was no longer held at the store", l->key);
  } else if (brc < 0) {
    rc = brc; /* the caller learns the store did not answer */
  }
  atomic_fetch_sub(&c->metrics.held_now, 1);
  atomic_fetch_add(&c->metrics.release, 1);
  dlock__hist_add(&c->metrics.hold_time, dlock__now_ns() - l->acquired_ns);

  if (!returned && c->bc.give_back_expired && dlock_err_is_transient(brc)) {
    /* The client's session would keep it: the give-back thread gives it back,
     * the entry keeping the key from this client's next acquire until
     * then, as for an unanswered attempt. */
    char why[512];
    snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
    pthread_mutex_lock(&c->mu);
    l->inflight = false;
    l->state = 0;
    l->lost_pending = false; /* released: nobody to tell */
    pthread_mutex_unlock(&c->mu);
    dlock__giveback(c, l, "the store did not answer its release");
    dlock_seterr(rc, "%s", why);
    return rc;
  }
  /* Elsewhere the store expires it on its own. */
  pthread_mutex_lock(&c->mu);
  dlock__table_remove(c, l);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  dlock__lock_free(l);
  return rc;
}

static int renew_lock(dlock_lock *l, int64_t ttl_ms) {
  dlock__clear_err();
  if (!l)
    return dlock_seterr(DLOCK_EINVAL, "dlock_renew: NULL lock");
  if (ttl_ms < 0 || ttl_ms > DLOCK_TTL_MAX_MS)
    return dlock_seterr(DLOCK_EINVAL, "ttl_ms must be in [0, 30 days] (0 = keep the current)");
  dlock_client *c = l->client;
  if (on_renew_thread(c))
    return dlock_seterr(DLOCK_EINVAL, "dlock_renew called from an on_lost callback");
  if (ttl_ms && check_ttl(c, ttl_ms, "ttl_ms") < 0)
    return DLOCK_EINVAL;
  pthread_mutex_lock(&c->mu);
  while (l->inflight)
    pthread_cond_wait(&c->cv, &c->mu);
  if (effective_state(l) != DLOCK_HELD) {
    bool expired = l->state == DLOCK_HELD;
    dlock__mark_lost(c, l, "its validity ran out before the renewal");
    if (expired)
      dlock__owe(c, l);
    pthread_mutex_unlock(&c->mu);
    return dlock_seterr(DLOCK_ELOST, "lock '%s' was lost", l->key);
  }
  l->inflight = true;
  if (ttl_ms)
    l->bl.ttl_ms = ttl_ms;
  l->bl.io_deadline_ns = l->valid_until_ns == INT64_MAX ? 0 : l->valid_until_ns;
  pthread_mutex_unlock(&c->mu);

  l->bl.sent_ns = 0;
  int64_t start = dlock__now_ns();
  int rc = dlock__renew_one(c, &l->bl);
  int64_t sent = l->bl.sent_ns ? l->bl.sent_ns : start;

  pthread_mutex_lock(&c->mu);
  l->inflight = false;
  if (rc == 0) {
    l->valid_until_ns = dlock__validity_deadline(c, sent, l->bl.ttl_ms);
    l->next_renew_ns = sent + l->bl.ttl_ms * 1000000 / 3;
    atomic_fetch_add(&c->metrics.renew_ok, 1);
  } else {
    atomic_fetch_add(&c->metrics.renew_failed, 1);
    if (rc == DLOCK_ELOST || rc == DLOCK_ENOTOWNED) {
      dlock__mark_lost(c, l, "the store refused its renewal");
      rc = dlock_seterr(DLOCK_ELOST, "lock '%s' is no longer held at the store", l->key);
    } else {
      /* The store may have applied the new ttl before the reply got lost:
       * if that ttl was shorter, the old deadline is no longer safe. */
      int64_t maybe = dlock__validity_deadline(c, start, l->bl.ttl_ms);
      if (maybe < l->valid_until_ns)
        l->valid_until_ns = maybe;
    }
  }
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  dlock__renew_kick(c);
  return rc;
}

int dlock_lock_state(const dlock_lock *l) {
  if (!l)
    return dlock_seterr(DLOCK_EINVAL, "NULL lock");
  dlock_client *c = l->client;
  pthread_mutex_lock(&c->mu);
  int s = effective_state(l);
  pthread_mutex_unlock(&c->mu);
  return s;
}

uint64_t dlock_lock_token(const dlock_lock *l) { return l ? l->bl.token : 0; }
const char *dlock_lock_key(const dlock_lock *l) { return l ? l->key : NULL; }
const char *dlock_lock_owner(const dlock_lock *l) { return l ? l->owner : NULL; }

int dlock_lock_holds(const dlock_lock *l) {
  if (!l)
    return dlock_seterr(DLOCK_EINVAL, "NULL lock");
  pthread_mutex_lock(&l->client->mu);
  int h = l->holds;
  pthread_mutex_unlock(&l->client->mu);
  return h;
}

int64_t dlock_lock_remaining_ms(const dlock_lock *l) {
  if (!l)
    return dlock_seterr(DLOCK_EINVAL, "NULL lock");
  pthread_mutex_lock(&l->client->mu);
  int64_t until = l->valid_until_ns;
  int st = effective_state(l);
  pthread_mutex_unlock(&l->client->mu);
  if (until == INT64_MAX && st == DLOCK_HELD)
    return -1;
  if (st != DLOCK_HELD)
    return 0;
  int64_t left = (until - dlock__now_ns()) / 1000000;
  return left > 0 ? left : 0;
}

static int inspect_key(dlock_client *c, const char *key, dlock_info *info) {
  dlock__clear_err();
  size_t keylen;
  int rc;
  if (!c || !info)
    return dlock_seterr(DLOCK_EINVAL, "dlock_inspect: NULL argument");
  if ((rc = dlock__key_check(key, &keylen)) < 0)
    return rc;
  if (!c->ops->inspect)
    return dlock_seterr(DLOCK_ENOTSUP, "backend '%s' cannot inspect locks", c->ops->name);
  dlock_info tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.ttl_ms = -1;
  rc = c->ops->inspect(&c->bc, key, keylen, &tmp);
  if (rc == 0)
    *info = tmp;
  return rc;
}

static int control_op(dlock_client *c, dlock_lock *l, int op, void *arg) {
  dlock__clear_err();
  if (!c)
    return dlock_seterr(DLOCK_EINVAL, "dlock_control: NULL client");
  if (l && l->client != c)
    return dlock_seterr(DLOCK_EINVAL, "dlock_control: lock belongs to another client");
  if (!c->ops->control)
    return dlock_seterr(DLOCK_ENOTSUP, "backend '%s' has no control operations", c->ops->name);
  return c->ops->control(&c->bc, l ? &l->bl : NULL, op, arg);
}

int dlock_release(dlock_lock *l) {
  const dlock_client *c = l ? l->client : NULL; /* l is freed by the call */
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, release_lock(l));
}

int dlock_renew(dlock_lock *l, int64_t ttl_ms) {
  const dlock_client *c = l ? l->client : NULL;
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, renew_lock(l, ttl_ms));
}

int dlock_inspect(dlock_client *c, const char *key, dlock_info *info) {
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, inspect_key(c, key, info));
}

int dlock_control(dlock_client *c, dlock_lock *l, int op, void *arg) {
  const dlock_url *was = dlock__api_begin(c);
  return dlock__api_end(c, was, control_op(c, l, op, arg));
}

unsigned dlock_client_caps(const dlock_client *c) { return c ? c->bc.caps : 0; }
const char *dlock_client_backend(const dlock_client *c) { return c ? c->ops->name : NULL; }
const char *dlock_client_url(const dlock_client *c) { return c ? c->redacted : NULL; }
int64_t dlock_client_ttl_ms(const dlock_client *c) {
  return c ? c->bc.default_ttl_ms : DLOCK_EINVAL;
}
