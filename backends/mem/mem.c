/* mem://[namespace]: an in-process lock store.
 *
 * The smallest complete backend: server-side TTL, fencing counter per key,
 * native waiting (a condition variable stands in for the store's
 * notification), compare-on-owner renew and release.  All clients in one
 * process that name the same namespace share one table. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlock/backend.h"
#include "dlock/mem.h"

#define NBUCKETS 1024

struct mem_entry {
  struct mem_entry *next;
  char *name;           /* namespace '\n' key */
  uint64_t fence;       /* last token handed out; survives release */
  bool held;
  char owner[33];
  char label[128];
  int64_t expires_ns;
};

static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mem_cv;
static pthread_once_t mem_once = PTHREAD_ONCE_INIT;
static struct mem_entry *buckets[NBUCKETS];

struct mem_client {
  char ns[128];
};

static void mem_init(void) { dlock_backend_cond_init(&mem_cv); }

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Under mem_mu.  Creates the entry when CREATE is set. */
static struct mem_entry *lookup(const struct mem_client *mc, const char *key, bool create) {
  char stack[DLOCK_KEY_MAX + 160];
  snprintf(stack, sizeof stack, "%s\n%s", mc->ns, key);
  uint64_t b = hash(stack) % NBUCKETS;
  for (struct mem_entry *e = buckets[b]; e; e = e->next)
    if (strcmp(e->name, stack) == 0)
      return e;
  if (!create)
    return NULL;
  struct mem_entry *e = calloc(1, sizeof *e);
  if (!e || !(e->name = strdup(stack))) {
    free(e);
    return NULL;
  }
  e->next = buckets[b];
  buckets[b] = e;
  return e;
}

static bool live(const struct mem_entry *e, int64_t now) {
  return e->held && e->expires_ns > now;
}

static int mem_open(dlock_backend_client *bc, dlock_url *url) {
  pthread_once(&mem_once, mem_init);
  struct mem_client *mc = bc->priv;
  const char *ns = dlock_url_host_count(url) ? dlock_url_host(url, 0) : "";
  if (strlen(ns) >= sizeof mc->ns)
    return dlock_seterr(DLOCK_EINVAL, "mem: namespace too long");
  const char *path = dlock_url_path(url);
  if (path[0] && strcmp(path, "/") != 0)
    return dlock_seterr(DLOCK_EINVAL, "mem: URL takes no path (mem://[namespace])");
  snprintf(mc->ns, sizeof mc->ns, "%s%s", bc->prefix ? bc->prefix : "", ns);
  return 0;
}

static void mem_close(dlock_backend_client *bc) { (void)bc; }

/* Under mem_mu. */
static int attempt(struct mem_client *mc, dlock_backend_lock *bl, struct mem_entry **held_by) {
  struct mem_entry *e = lookup(mc, bl->key, true);
  if (!e)
    return dlock_seterr(DLOCK_ENOMEM, "mem: out of memory");
  int64_t now = dlock_backend_now_ns();
  bl->sent_ns = now;
  if (live(e, now)) {
    bl->holder_ttl_ms = (e->expires_ns - now) / 1000000;
    *held_by = e;
    return DLOCK_EBUSY;
  }
  e->held = true;
  e->fence++;
  memcpy(e->owner, bl->owner, sizeof e->owner);
  snprintf(e->label, sizeof e->label, "%s", bl->label);
  e->expires_ns = now + bl->ttl_ms * 1000000;
  bl->token = e->fence;
  return 0;
}

static int mem_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  struct mem_entry *held_by = NULL;
  pthread_mutex_lock(&mem_mu);
  int rc = attempt(bc->priv, bl, &held_by);
  pthread_mutex_unlock(&mem_mu);
  if (rc == DLOCK_EBUSY)
    dlock_seterr(rc, "mem: '%s' is held", bl->key);
  return rc;
}

static int mem_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline) {
  pthread_mutex_lock(&mem_mu);
  int rc;
  for (;;) {
    struct mem_entry *held_by = NULL;
    rc = attempt(bc->priv, bl, &held_by);
    if (rc != DLOCK_EBUSY)
      break;
    int64_t now = dlock_backend_now_ns();
    if (deadline >= 0 && now >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "mem: timed out waiting for '%s'", bl->key);
      break;
    }
    /* Expiry wakes nobody, so never sleep past the holder's lease. */
    int64_t until = held_by->expires_ns;
    if (deadline >= 0 && deadline < until)
      until = deadline;
    dlock_backend_cond_wait(&mem_cv, &mem_mu, until);
  }
  pthread_mutex_unlock(&mem_mu);
  return rc;
}

/* Under mem_mu: the entry if BL still owns it. */
static struct mem_entry *owned(struct mem_client *mc, dlock_backend_lock *bl) {
  struct mem_entry *e = lookup(mc, bl->key, false);
  if (!e || !live(e, dlock_backend_now_ns()) || strcmp(e->owner, bl->owner) != 0)
    return NULL;
  return e;
}

static int mem_renew(dlock_backend_client *bc, dlock_backend_lock *bl) {
  pthread_mutex_lock(&mem_mu);
  struct mem_entry *e = owned(bc->priv, bl);
  bl->sent_ns = dlock_backend_now_ns();
  if (e)
    e->expires_ns = bl->sent_ns + bl->ttl_ms * 1000000;
  pthread_mutex_unlock(&mem_mu);
  return e ? 0 : dlock_seterr(DLOCK_ELOST, "mem: '%s' is no longer ours", bl->key);
}

static int mem_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  pthread_mutex_lock(&mem_mu);
  struct mem_entry *e = owned(bc->priv, bl);
  if (e) {
    e->held = false;
    pthread_cond_broadcast(&mem_cv);
  }
  pthread_mutex_unlock(&mem_mu);
  return e ? 0 : dlock_seterr(DLOCK_ELOST, "mem: '%s' is no longer ours", bl->key);
}

/* Under mem_mu: what inspect says of a live entry. */
static void describe(const struct mem_entry *e, int64_t now, dlock_info *info) {
  info->held = 1;
  info->token = e->fence;
  info->ttl_ms = (e->expires_ns - now) / 1000000;
  snprintf(info->owner, sizeof info->owner, "%s", e->owner);
  snprintf(info->label, sizeof info->label, "%s", e->label);
}

static int mem_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                       dlock_info *info) {
  (void)keylen;
  pthread_mutex_lock(&mem_mu);
  struct mem_entry *e = lookup(bc->priv, key, false);
  int64_t now = dlock_backend_now_ns();
  if (e) {
    info->token = e->fence;
    if (live(e, now))
      describe(e, now, info);
  }
  pthread_mutex_unlock(&mem_mu);
  return 0;
}

/* The table is walked under mem_mu, so EMIT gets copies taken there and is
 * called after: a callback that calls back into the library (to inspect
 * or break what it is shown) must not find the mutex held. */
static int mem_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                    dlock_backend_emit_fn emit, void *ud) {
  const struct mem_client *mc = bc->priv;
  size_t nslen = strlen(mc->ns), n = 0, cap = 0;
  struct found {
    char *key;
    dlock_info info;
  } *found = NULL;
  int rc = 0;
  pthread_mutex_lock(&mem_mu);
  int64_t now = dlock_backend_now_ns();
  for (size_t b = 0; b < NBUCKETS && rc == 0; b++)
    for (struct mem_entry *e = buckets[b]; e && rc == 0; e = e->next) {
      if (!live(e, now) || strncmp(e->name, mc->ns, nslen) != 0 || e->name[nslen] != '\n')
        continue;
      const char *key = e->name + nslen + 1;
      if (strncmp(key, prefix, prefixlen) != 0)
        continue;
      if (n == cap) {
        size_t ncap = cap ? cap * 2 : 16;
        struct found *f2 = realloc(found, ncap * sizeof *f2);
        if (!f2) {
          rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
          break;
        }
        found = f2;
        cap = ncap;
      }
      memset(&found[n].info, 0, sizeof found[n].info);
      describe(e, now, &found[n].info);
      if (!(found[n].key = strdup(key))) {
        rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
        break;
      }
      n++;
    }
  pthread_mutex_unlock(&mem_mu);
  for (size_t i = 0; i < n; i++) {
    if (rc == 0)
      rc = emit(ud, found[i].key, strlen(found[i].key), &found[i].info);
    free(found[i].key);
  }
  free(found);
  return rc;
}

static int mem_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                             const dlock_info *holder, dlock_info *broken) {
  (void)keylen;
  int rc = 0;
  pthread_mutex_lock(&mem_mu);
  struct mem_entry *e = lookup(bc->priv, key, false);
  int64_t now = dlock_backend_now_ns();
  if (e && live(e, now)) {
    if ((holder->owner[0] && strcmp(e->owner, holder->owner) != 0) ||
        (!holder->owner[0] && holder->token && e->fence != holder->token)) {
      rc = dlock_seterr(DLOCK_EBUSY, "mem: '%s' is held by another holder (token %llu)", key,
                        (unsigned long long)e->fence);
    } else {
      describe(e, now, broken);
      e->held = false;
      pthread_cond_broadcast(&mem_cv);
    }
  }
  pthread_mutex_unlock(&mem_mu);
  return rc;
}

static int mem_control(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg) {
  (void)bl;
  if (op != DLOCK_MEM_CTL_EVICT)
    return dlock_seterr(DLOCK_ENOTSUP, "mem: unknown control operation %d", op);
  if (!arg)
    return dlock_seterr(DLOCK_EINVAL, "mem: evict needs a key");
  pthread_mutex_lock(&mem_mu);
  struct mem_entry *e = lookup(bc->priv, arg, false);
  bool was = e && live(e, dlock_backend_now_ns());
  if (was) {
    e->held = false;
    pthread_cond_broadcast(&mem_cv);
  }
  pthread_mutex_unlock(&mem_mu);
  return was ? 0 : dlock_seterr(DLOCK_EINVAL, "mem: '%s' is not held", (const char *)arg);
}

static const char *const mem_schemes[] = {"mem", NULL};

const dlock_backend_ops dlock__mem_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "mem",
    .schemes = mem_schemes,
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_SERVER_TTL |
            DLOCK_CAP_HOLDER_INFO | DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(struct mem_client),
    .lock_size = 0,
    .open = mem_open,
    .close = mem_close,
    .try_acquire = mem_try_acquire,
    .acquire = mem_acquire,
    .renew = mem_renew,
    .release = mem_release,
    .renew_many = NULL,
    .inspect = mem_inspect,
    .control = mem_control,
    .list = mem_list,
    .force_release = mem_force_release,
};
