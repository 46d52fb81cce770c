/* dlock-history checker: the rules of HISTORY.md over parsed records.
 *
 * What an acquisition is known to have believed.  Its real belief runs from
 * the moment acquire returned to the last moment dlock_lock_state() said
 * HELD (LOST is final, so it is one stretch).  G's mono is read after
 * acquire returned and O's before the call, so [G, latest O HELD] lies
 * inside the real belief, and two such intervals that overlap prove two
 * holders at once.  A W is no belief: a worker stopped between its O and
 * its W writes past its lease without the library being wrong, which is
 * what fencing is for.  An acquisition with no O HELD is not known to have
 * believed at G's time either (a pause may fall between the return and the
 * clock read), only at one unknown instant of [R, G]; it is caught only
 * when a known interval holds all of [R, G].
 *
 * Each rule sorts once and sweeps: nothing here is quadratic in the number
 * of acquisitions except in the count of violations it reports. */
#include "history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000LL

struct ent {
  uint32_t key;
  uint32_t a;
  int64_t t;
};

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "dlock-history: out of memory\n");
    exit(2);
  }
  return p;
}

static int cmp_ent(const void *pa, const void *pb) {
  const struct ent *x = pa, *y = pb;
  if (x->key != y->key)
    return x->key < y->key ? -1 : 1;
  if (x->t != y->t)
    return x->t < y->t ? -1 : 1;
  return (x->a > y->a) - (x->a < y->a);
}

static void vpush(struct vlist *l, struct viol v) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 64;
    struct viol *nv = realloc(l->v, l->cap * sizeof(*nv));
    if (!nv) {
      fprintf(stderr, "dlock-history: out of memory\n");
      exit(2);
    }
    l->v = nv;
  }
  l->v[l->n++] = v;
}

static struct viol viol_new(enum viol_kind kind, uint32_t key, int64_t t) {
  return (struct viol){.kind = kind, .key = key, .x = NONE, .y = NONE, .att = NONE,
                       .att2 = NONE, .fault = NONE, .t = t, .t2 = T_NONE_LO};
}

/* The end of what x is known to have believed since its grant, or
 * T_NONE_LO when only the instant of its grant is known. */
static int64_t belief_last(const struct acq *x) {
  return (x->flags & A_HELD) ? x->held_last : T_NONE_LO;
}

/* One thread asking again for a key it holds gets the same handle back
 * (reentrancy is per client and thread): one lease, one token. */
static int reentrant(const struct acq *x, const struct acq *y) {
  return x->pid == y->pid && x->tid == y->tid && x->token == y->token;
}

/* Granted acquisitions as (key, grant time). */
static struct ent *granted(const struct hist *h, size_t *n) {
  struct ent *e = xmalloc((size_t)(h->nacq ? h->nacq : 1) * sizeof(*e));
  size_t k = 0;
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (x->flags & A_G)
      e[k++] = (struct ent){.key = x->key, .a = a, .t = x->g};
  }
  *n = k;
  return e;
}

/* ---- rule a ---- */

struct live {
  uint32_t a;
  int64_t b0, b1;
};

static void rule_a(const struct hist *h, struct result *res) {
  struct ent *e = xmalloc((size_t)(h->nacq ? h->nacq : 1) * sizeof(*e));
  size_t n = 0;
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (!(x->flags & A_G))
      continue;
    int64_t last = belief_last(x);
    e[n++] = (struct ent){.key = x->key, .a = a, .t = last == T_NONE_LO ? x->r : x->g};
  }
  qsort(e, n, sizeof(*e), cmp_ent);
  struct live *act = NULL;
  size_t nact = 0, capact = 0;
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && e[i].key != e[i - 1].key)
      nact = 0;
    const struct acq *y = &h->acq[e[i].a];
    int64_t y_last = belief_last(y);
    int64_t start = e[i].t;
    /* nothing that ended by this start can overlap it or anything later */
    for (size_t j = 0; j < nact;) {
      if (act[j].b1 <= start)
        act[j] = act[--nact];
      else
        j++;
    }
    for (size_t j = 0; j < nact; j++) {
      const struct acq *x = &h->acq[act[j].a];
      if (reentrant(x, y))
        continue;
      if (y_last != T_NONE_LO) {
        if (act[j].b0 < y_last && y->g < act[j].b1) {
          struct viol v = viol_new(V_OVERLAP, y->key, y->g);
          v.x = act[j].a;
          v.y = e[i].a;
          vpush(&res->rule[RULE_A], v);
        }
      } else if (act[j].b0 < y->r && y->g < act[j].b1) {
        struct viol v = viol_new(V_OVERLAP_POINT, y->key, y->g);
        v.x = act[j].a;
        v.y = e[i].a;
        vpush(&res->rule[RULE_A], v);
      }
    }
    if (y_last != T_NONE_LO) {
      if (nact == capact) {
        capact = capact ? capact * 2 : 16;
        struct live *na = realloc(act, capact * sizeof(*na));
        if (!na) {
          fprintf(stderr, "dlock-history: out of memory\n");
          exit(2);
        }
        act = na;
      }
      act[nact++] = (struct live){e[i].a, y->g, y_last};
    }
  }
  free(act);
  free(e);
  res->overlaps = res->rule[RULE_A].n;
}

/* ---- rule b ---- */

struct tokent {
  uint32_t key;
  uint32_t a;
  uint64_t token;
  int64_t pid;
  uint64_t tid;
  int64_t g;
};

static int cmp_tokent(const void *pa, const void *pb) {
  const struct tokent *x = pa, *y = pb;
  if (x->key != y->key)
    return x->key < y->key ? -1 : 1;
  if (x->token != y->token)
    return x->token < y->token ? -1 : 1;
  if (x->pid != y->pid)
    return x->pid < y->pid ? -1 : 1;
  if (x->tid != y->tid)
    return x->tid < y->tid ? -1 : 1;
  if (x->g != y->g)
    return x->g < y->g ? -1 : 1;
  return (x->a > y->a) - (x->a < y->a);
}

static int cmp_tokent_g(const void *pa, const void *pb) {
  const struct tokent *x = pa, *y = pb;
  if (x->g != y->g)
    return x->g < y->g ? -1 : 1;
  return (x->a > y->a) - (x->a < y->a);
}

/* Two grants of one token are one lease only when the later is a reentrant
 * acquire made while the earlier was still in the same thread's hands. */
static void rule_b_dups(const struct hist *h, struct result *res) {
  struct tokent *t = xmalloc((size_t)(h->nacq ? h->nacq : 1) * sizeof(*t));
  size_t n = 0;
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (x->flags & A_G)
      t[n++] = (struct tokent){x->key, a, x->token, x->pid, x->tid, x->g};
  }
  qsort(t, n, sizeof(*t), cmp_tokent);
  struct tokent *fresh = xmalloc((n ? n : 1) * sizeof(*fresh));
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && t[j].key == t[i].key && t[j].token == t[i].token)
      j++;
    if (j - i > 1) {
      size_t nf = 0;
      int64_t held_until = T_NONE_LO;
      for (size_t k = i; k < j; k++) {
        const struct acq *x = &h->acq[t[k].a];
        int same_thread = k > i && t[k].pid == t[k - 1].pid && t[k].tid == t[k - 1].tid;
        if (!same_thread)
          held_until = T_NONE_LO;
        if (!same_thread || x->r > held_until)
          fresh[nf++] = t[k];
        if (x->last_event > held_until)
          held_until = x->last_event;
      }
      qsort(fresh, nf, sizeof(*fresh), cmp_tokent_g);
      for (size_t k = 1; k < nf; k++) {
        struct viol v = viol_new(V_DUP, fresh[k].key, fresh[k].g);
        v.x = fresh[k - 1].a;
        v.y = fresh[k].a;
        vpush(&res->rule[RULE_B], v);
      }
    }
    i = j;
  }
  free(fresh);
  free(t);
}

/* Strictly lower than some token granted before it was asked for; an equal
 * token is left to the duplicate check, which knows reentrancy. */
static void rule_b_order(const struct hist *h, const struct ent *byg, size_t n,
                         struct result *res) {
  uint64_t *pmax = xmalloc((n ? n : 1) * sizeof(*pmax));
  uint32_t *parg = xmalloc((n ? n : 1) * sizeof(*parg));
  for (size_t lo = 0; lo < n;) {
    size_t hi = lo;
    while (hi < n && byg[hi].key == byg[lo].key)
      hi++;
    for (size_t i = lo; i < hi; i++) {
      const struct acq *x = &h->acq[byg[i].a];
      if (i == lo || x->token > pmax[i - 1]) {
        pmax[i] = x->token;
        parg[i] = byg[i].a;
      } else {
        pmax[i] = pmax[i - 1];
        parg[i] = parg[i - 1];
      }
    }
    for (size_t i = lo; i < hi; i++) {
      const struct acq *y = &h->acq[byg[i].a];
      size_t a = lo, b = hi; /* first grant at or after y's request */
      while (a < b) {
        size_t mid = (a + b) / 2;
        if (byg[mid].t < y->r)
          a = mid + 1;
        else
          b = mid;
      }
      if (a > lo && pmax[a - 1] > y->token) {
        struct viol v = viol_new(V_ORDER, y->key, y->g);
        v.x = parg[a - 1];
        v.y = byg[i].a;
        vpush(&res->rule[RULE_B], v);
      }
    }
    lo = hi;
  }
  free(pmax);
  free(parg);
}

/* ---- rule c ---- */

static void rule_c(const struct hist *h, struct result *res) {
  uint64_t *top = xmalloc((h->nkeys ? h->nkeys : 1) * sizeof(*top));
  uint32_t *top_att = xmalloc((h->nkeys ? h->nkeys : 1) * sizeof(*top_att));
  for (uint32_t k = 0; k < h->nkeys; k++)
    top_att[k] = NONE;
  for (uint32_t i = 0; i < h->natt; i++) {
    const struct attempt *a = &h->att[i];
    if (!a->accepted) {
      res->writes_rejected++;
      continue;
    }
    res->writes_accepted++;
    uint32_t x = hist_find(h, a->pid, a->tid, a->seq);
    const struct acq *xa = x == NONE ? NULL : &h->acq[x];
    if (!xa || !(xa->flags & A_G) || xa->key != a->key || xa->token != a->token) {
      struct viol v = viol_new(V_UNGRANTED, a->key, a->mono);
      v.att = i;
      v.x = x;
      vpush(&res->rule[RULE_C], v);
    }
    if (top_att[a->key] != NONE && a->token < top[a->key]) {
      struct viol v = viol_new(V_DOWN, a->key, a->mono);
      v.att = i;
      v.att2 = top_att[a->key];
      vpush(&res->rule[RULE_C], v);
    } else if (top_att[a->key] == NONE || a->token > top[a->key]) {
      top[a->key] = a->token;
      top_att[a->key] = i;
    }
  }
  free(top);
  free(top_att);
}

/* ---- faults: rules d, e and loss detection ---- */

struct pidrange {
  size_t lo, hi;
};

static int cmp_pident(const void *pa, const void *pb) {
  const struct ent *x = pa, *y = pb;
  if (x->t != y->t) /* t holds the pid here */
    return x->t < y->t ? -1 : 1;
  return (x->a > y->a) - (x->a < y->a);
}

/* The acquisitions of pid (all of them for pid 0) in a by-pid array. */
static struct pidrange pid_range(const struct ent *bypid, size_t n, int64_t pid) {
  if (pid == 0)
    return (struct pidrange){0, n};
  size_t a = 0, b = n;
  while (a < b) {
    size_t mid = (a + b) / 2;
    if (bypid[mid].t < pid)
      a = mid + 1;
    else
      b = mid;
  }
  size_t lo = a;
  b = n;
  while (a < b) {
    size_t mid = (a + b) / 2;
    if (bypid[mid].t <= pid)
      a = mid + 1;
    else
      b = mid;
  }
  return (struct pidrange){lo, a};
}

static int is_d_kind(enum fault_kind k) {
  return k == K_PAUSE || k == K_KILL || k == K_KILL_RUN || k == K_LATENCY || k == K_BLACKHOLE ||
         k == K_DROP_REPLIES || k == K_DROP_REQUESTS;
}

static int is_kill(enum fault_kind k) {
  return k == K_KILL || k == K_KILL_RUN;
}

/* A fault on the store (victim 0) reaches every client, but only the one
 * key when it names one; a fault on a process reaches all its keys. */
static int reaches(const struct fault *f, const struct acq *x) {
  return f->victim != 0 || f->key == NONE || f->key == x->key;
}

/* d: whatever the lease was, it came from a request sent before the fault;
 * during a window at least a ttl long no later request can extend it, so
 * by the validity rule it ended by start + ttl.  A kill never heals. */
static void rule_d(const struct hist *h, const struct ent *bypid, size_t n, struct result *res) {
  for (uint32_t fi = 0; fi < h->nfault; fi++) {
    const struct fault *f = &h->fault[fi];
    if (!is_d_kind(f->kind))
      continue;
    struct pidrange r = pid_range(bypid, n, f->victim);
    int hit = 0;
    for (size_t i = r.lo; i < r.hi; i++) {
      const struct acq *x = &h->acq[bypid[i].a];
      if (x->g < f->start && x->ended >= f->start && reaches(f, x))
        hit = 1;
      if (x->g >= f->start || x->rem_ms < 0 || x->ttl_ms <= 0 || !reaches(f, x))
        continue;
      int64_t ttl = x->ttl_ms * NS_PER_MS;
      if (!is_kill(f->kind) && f->end - f->start < ttl)
        continue;
      int64_t last = belief_last(x);
      int64_t bound = f->start + ttl;
      if (last != T_NONE_LO && last > bound) {
        struct viol v = viol_new(V_VALIDITY, x->key, last);
        v.x = bypid[i].a;
        v.fault = fi;
        v.t2 = bound;
        vpush(&res->rule[RULE_D], v);
      }
    }
    if (f->victim != 0) {
      res->faults++;
      res->faults_hit += (uint64_t)hit;
    }
  }
}

static int cmp_i64(const void *pa, const void *pb) {
  int64_t x = *(const int64_t *)pa, y = *(const int64_t *)pb;
  return (x > y) - (x < y);
}

static void stats_of(int64_t *s, size_t n, struct stats *out) {
  out->count = n;
  out->p50 = out->max = 0;
  if (n == 0)
    return;
  qsort(s, n, sizeof(*s), cmp_i64);
  out->p50 = s[(n - 1) / 2];
  out->max = s[n - 1];
}

/* Loss detection: each acquisition lost after a fault found it held is
 * charged to the latest such fault before the loss. */
static void loss_detection(struct hist *h, const struct ent *bypid, size_t n, struct result *res) {
  for (uint32_t fi = 0; fi < h->nfault; fi++) {
    const struct fault *f = &h->fault[fi];
    if (is_kill(f->kind))
      continue;
    struct pidrange r = pid_range(bypid, n, f->victim);
    for (size_t i = r.lo; i < r.hi; i++) {
      struct acq *x = &h->acq[bypid[i].a];
      if (x->g < f->start && x->ended >= f->start && reaches(f, x) &&
          x->first_loss != T_NONE_HI && f->start > x->fault_start)
        x->fault_start = f->start;
    }
  }
  int64_t *s = xmalloc((size_t)(h->nacq ? h->nacq : 1) * sizeof(*s));
  size_t ns = 0;
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (x->fault_start != T_NONE_LO)
      s[ns++] = x->first_loss - x->fault_start;
  }
  stats_of(s, ns, &res->loss_detect);
  free(s);
}

struct heldkey {
  uint32_t key;
  uint32_t a; /* NONE: named by the X line only */
  int64_t g;
};

/* The first grant of key after t by a pid other than v, or NONE. */
static uint32_t grant_after(const struct hist *h, const struct ent *byg, size_t lo, size_t hi,
                            int64_t t, int64_t v) {
  size_t a = lo, b = hi;
  while (a < b) {
    size_t mid = (a + b) / 2;
    if (byg[mid].t <= t)
      a = mid + 1;
    else
      b = mid;
  }
  for (; a < hi; a++)
    if (h->acq[byg[a].a].pid != v)
      return byg[a].a;
  return NONE;
}

/* Someone other than v was asking for key at some moment of (t0, t1]; a
 * request with no outcome is taken to last while its process wrote. */
static int demand(const struct hist *h, const int64_t *pid_last, uint32_t key, int64_t v,
                  int64_t t0, int64_t t1) {
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (x->key != key || x->pid == v || !(x->flags & A_R) || x->r >= t1)
      continue;
    int64_t done = (x->flags & A_G) ? x->g : (x->flags & A_N) ? x->n : pid_last[a];
    if (done > t0)
      return 1;
  }
  return 0;
}

/* HELD with room for one more entry beyond its N. */
static struct heldkey *held_room(struct heldkey *held, size_t n, size_t *cap) {
  if (n < *cap)
    return held;
  *cap = *cap ? *cap * 2 : 8;
  struct heldkey *nh = realloc(held, *cap * sizeof(*nh));
  if (!nh) {
    fprintf(stderr, "dlock-history: out of memory\n");
    exit(2);
  }
  return nh;
}

static void rule_e(struct hist *h, const struct check_opts *o, const struct ent *byg, size_t ng,
                   const struct ent *bypid, size_t np, struct result *res) {
  /* per-key ranges of the by-grant array */
  size_t *klo = xmalloc(((size_t)h->nkeys + 1) * sizeof(*klo));
  for (uint32_t k = 0; k <= h->nkeys; k++)
    klo[k] = ng;
  for (size_t i = ng; i-- > 0;)
    klo[byg[i].key] = i;
  for (uint32_t k = h->nkeys; k-- > 0;)
    if (klo[k] == ng)
      klo[k] = klo[k + 1];
  /* the last mono of each acquisition's process, for pending requests */
  int64_t *pid_last = xmalloc((size_t)(h->nacq ? h->nacq : 1) * sizeof(*pid_last));
  {
    struct ent *all = xmalloc((size_t)(h->nacq ? h->nacq : 1) * sizeof(*all));
    for (uint32_t a = 0; a < h->nacq; a++)
      all[a] = (struct ent){0, a, h->acq[a].pid};
    qsort(all, h->nacq, sizeof(*all), cmp_pident);
    for (size_t i = 0; i < h->nacq;) {
      size_t j = i;
      int64_t m = T_NONE_LO;
      while (j < h->nacq && all[j].t == all[i].t) {
        if (h->acq[all[j].a].last_event > m)
          m = h->acq[all[j].a].last_event;
        j++;
      }
      for (size_t k = i; k < j; k++)
        pid_last[all[k].a] = m;
      i = j;
    }
    free(all);
  }
  int64_t *s = xmalloc(((size_t)h->nfault + 1) * 4 * sizeof(*s));
  size_t ns = 0, caps = ((size_t)h->nfault + 1) * 4;
  struct heldkey *held = NULL;
  size_t capheld = 0;
  for (uint32_t fi = 0; fi < h->nfault; fi++) {
    const struct fault *f = &h->fault[fi];
    if (!is_kill(f->kind))
      continue;
    res->kills++;
    int64_t k_t = f->start, v = f->victim;
    size_t nheld = 0;
    struct pidrange r = v ? pid_range(bypid, np, v) : (struct pidrange){0, 0};
    for (size_t i = r.lo; i < r.hi; i++) {
      const struct acq *x = &h->acq[bypid[i].a];
      if (x->g >= k_t || x->ended < k_t)
        continue;
      size_t j = 0;
      while (j < nheld && held[j].key != x->key)
        j++;
      if (j == nheld) {
        held = held_room(held, nheld, &capheld);
        held[nheld++] = (struct heldkey){x->key, bypid[i].a, x->g};
      } else if (x->g > held[j].g) {
        held[j].a = bypid[i].a;
        held[j].g = x->g;
      }
    }
    /* a grant to someone else after the victim's own means the lock had
     * already moved on (or rule a has it), so no recovery is owed */
    for (size_t j = 0; j < nheld;) {
      size_t lo = klo[held[j].key], hi = klo[held[j].key + 1];
      uint32_t other = grant_after(h, byg, lo, hi, held[j].g, v);
      if (other != NONE && h->acq[other].g < k_t)
        held[j] = held[--nheld];
      else
        j++;
    }
    if (f->key != NONE) {
      size_t j = 0;
      while (j < nheld && held[j].key != f->key)
        j++;
      if (j == nheld) {
        held = held_room(held, nheld, &capheld);
        held[nheld++] = (struct heldkey){f->key, NONE, k_t};
      }
    }
    for (size_t j = 0; j < nheld; j++) {
      uint32_t key = held[j].key;
      uint32_t next = grant_after(h, byg, klo[key], klo[key + 1], k_t, v);
      int64_t until = k_t + o->recover_bound_ns;
      if (next != NONE) {
        if (ns == caps) {
          caps *= 2;
          int64_t *n2 = realloc(s, caps * sizeof(*s));
          if (!n2) {
            fprintf(stderr, "dlock-history: out of memory\n");
            exit(2);
          }
          s = n2;
        }
        s[ns++] = h->acq[next].g - k_t;
        if (h->acq[next].g <= until)
          continue;
      }
      struct viol vi = viol_new(V_RECOVERY, key, k_t);
      vi.x = held[j].a;
      vi.fault = fi;
      vi.t2 = next == NONE ? T_NONE_LO : h->acq[next].g;
      if (next == NONE && h->t_last < until) {
        vi.why = 0;
        vpush(&res->unfinished, vi);
      } else if (!demand(h, pid_last, key, v, k_t, until)) {
        vi.why = 1;
        vpush(&res->unfinished, vi);
      } else {
        vpush(&res->rule[RULE_E], vi);
      }
    }
  }
  res->recoveries_unfinished = res->unfinished.n;
  stats_of(s, ns, &res->recovery);
  free(s);
  free(held);
  free(pid_last);
  free(klo);
}

static int cmp_viol(const void *pa, const void *pb) {
  const struct viol *x = pa, *y = pb;
  if (x->t != y->t)
    return x->t < y->t ? -1 : 1;
  if (x->y != y->y)
    return x->y < y->y ? -1 : 1;
  return (x->x > y->x) - (x->x < y->x);
}

int rule_fails(enum rule r, const struct check_opts *o) {
  return !(r == RULE_A && o->lossy_store);
}

int check_run(struct hist *h, const struct check_opts *o, struct result *res) {
  memset(res, 0, sizeof(*res));
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (x->flags & A_G)
      res->acquisitions++;
    else if (x->flags & A_N)
      res->failed_acquires++;
  }
  rule_a(h, res);

  size_t ng;
  struct ent *byg = granted(h, &ng);
  qsort(byg, ng, sizeof(*byg), cmp_ent);
  rule_b_order(h, byg, ng, res);
  rule_b_dups(h, res);
  rule_c(h, res);

  size_t np;
  struct ent *bypid = granted(h, &np);
  for (size_t i = 0; i < np; i++)
    bypid[i].t = h->acq[bypid[i].a].pid;
  qsort(bypid, np, sizeof(*bypid), cmp_pident);
  rule_d(h, bypid, np, res);
  loss_detection(h, bypid, np, res);
  rule_e(h, o, byg, ng, bypid, np, res);
  free(bypid);
  free(byg);

  /* qsort must not be handed the NULL of an empty list. */
  for (int r = 0; r < RULE_COUNT; r++)
    if (res->rule[r].n)
      qsort(res->rule[r].v, res->rule[r].n, sizeof(struct viol), cmp_viol);
  if (res->unfinished.n)
    qsort(res->unfinished.v, res->unfinished.n, sizeof(struct viol), cmp_viol);
  return 0;
}

void result_free(struct result *res) {
  for (int r = 0; r < RULE_COUNT; r++)
    free(res->rule[r].v);
  free(res->unfinished.v);
  memset(res, 0, sizeof(*res));
}
