/* dlock-history parser: history text to records (no I/O).
 *
 * The format is strict on purpose (one space between fields, exact field
 * counts, known letters and words): a workload that drifts from the
 * contract should stop the run with a file:line, not be read in some
 * lenient way that the rules were not written for. */
#include "history.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 12

struct slice {
  const char *p;
  size_t n;
};

static const char *const kind_names[K_COUNT] = {
    [K_PAUSE] = "pause",
    [K_KILL] = "kill",
    [K_KILL_RUN] = "kill-run",
    [K_LATENCY] = "latency",
    [K_RESET] = "reset",
    [K_BLACKHOLE] = "blackhole",
    [K_DROP_REPLIES] = "drop-replies",
    [K_DROP_REQUESTS] = "drop-requests",
    [K_RESTART] = "restart",
    [K_RESTART_FAST] = "restart-fast",
    [K_MEMBER_KILL] = "member-kill",
};

const char *fault_kind_name(enum fault_kind k) {
  return (unsigned)k < K_COUNT ? kind_names[k] : "?";
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fprintf(stderr, "dlock-history: out of memory\n");
    exit(2);
  }
  return q;
}

/* Grows *arr so that index `need` fits. */
static void grow(void **arr, uint32_t *cap, uint32_t need, size_t elem) {
  if (need < *cap)
    return;
  uint32_t c = *cap ? *cap : 64;
  while (c <= need)
    c *= 2;
  *arr = xrealloc(*arr, (size_t)c * elem);
  *cap = c;
}

static int fail(struct hist *h, struct where at, const char *fmt, ...) {
  int off = snprintf(h->err, sizeof(h->err), "%s:%u: ", h->files[at.file], at.line);
  if (off < 0 || (size_t)off >= sizeof(h->err))
    return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->err + off, sizeof(h->err) - (size_t)off, fmt, ap);
  va_end(ap);
  return -1;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t x = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++)
    x = (x ^ (unsigned char)p[i]) * 0x100000001b3ULL;
  return mix(x);
}

static uint64_t hash_id(int64_t pid, uint64_t tid, uint64_t seq) {
  return mix((uint64_t)pid * 0x9e3779b97f4a7c15ULL ^ mix(tid + 0x632be59bd9b4e019ULL) ^
             mix(seq ^ 0x85ebca6b0c0fULL));
}

void hist_init(struct hist *h, const char **files, uint32_t nfiles) {
  memset(h, 0, sizeof(*h));
  h->files = files;
  h->nfiles = nfiles;
  h->acq_mask = 1023;
  h->acq_slots = xrealloc(NULL, (h->acq_mask + 1) * sizeof(uint32_t));
  memset(h->acq_slots, 0xff, (h->acq_mask + 1) * sizeof(uint32_t));
  h->key_mask = 255;
  h->key_slots = xrealloc(NULL, (h->key_mask + 1) * sizeof(uint32_t));
  memset(h->key_slots, 0xff, (h->key_mask + 1) * sizeof(uint32_t));
  h->t_first = T_NONE_HI;
  h->t_last = T_NONE_LO;
}

void hist_free(struct hist *h) {
  free(h->acq);
  free(h->acq_slots);
  free(h->keybuf);
  free(h->key_off);
  free(h->key_slots);
  free(h->loss);
  free(h->att);
  free(h->fault);
  free(h->proc);
  memset(h, 0, sizeof(*h));
}

const char *hist_key(const struct hist *h, uint32_t key) {
  return key == NONE ? "-" : h->keybuf + h->key_off[key];
}

static uint32_t key_intern(struct hist *h, struct slice s) {
  uint64_t hv = hash_bytes(s.p, s.n);
  uint32_t i = (uint32_t)hv & h->key_mask;
  for (;; i = (i + 1) & h->key_mask) {
    uint32_t k = h->key_slots[i];
    if (k == NONE)
      break;
    const char *ks = h->keybuf + h->key_off[k];
    if (strncmp(ks, s.p, s.n) == 0 && ks[s.n] == '\0')
      return k;
  }
  uint32_t id = h->nkeys++;
  grow((void **)&h->key_off, &h->capkeys, id, sizeof(uint32_t));
  while (h->keylen + s.n + 1 > h->keycap) {
    h->keycap = h->keycap ? h->keycap * 2 : 4096;
    h->keybuf = xrealloc(h->keybuf, h->keycap);
  }
  h->key_off[id] = (uint32_t)h->keylen;
  memcpy(h->keybuf + h->keylen, s.p, s.n);
  h->keybuf[h->keylen + s.n] = '\0';
  h->keylen += s.n + 1;
  h->key_slots[i] = id;
  if (h->nkeys * 2 > h->key_mask) {
    uint32_t mask = h->key_mask * 2 + 1;
    uint32_t *slots = xrealloc(NULL, (mask + 1) * sizeof(uint32_t));
    memset(slots, 0xff, (mask + 1) * sizeof(uint32_t));
    for (uint32_t k = 0; k < h->nkeys; k++) {
      const char *ks = h->keybuf + h->key_off[k];
      uint32_t j = (uint32_t)hash_bytes(ks, strlen(ks)) & mask;
      while (slots[j] != NONE)
        j = (j + 1) & mask;
      slots[j] = k;
    }
    free(h->key_slots);
    h->key_slots = slots;
    h->key_mask = mask;
  }
  return id;
}

static void acq_rehash(struct hist *h) {
  uint32_t mask = h->acq_mask * 2 + 1;
  uint32_t *slots = xrealloc(NULL, ((size_t)mask + 1) * sizeof(uint32_t));
  memset(slots, 0xff, ((size_t)mask + 1) * sizeof(uint32_t));
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    uint32_t j = (uint32_t)hash_id(x->pid, x->tid, x->seq) & mask;
    while (slots[j] != NONE)
      j = (j + 1) & mask;
    slots[j] = a;
  }
  free(h->acq_slots);
  h->acq_slots = slots;
  h->acq_mask = mask;
}

uint32_t hist_find(const struct hist *h, int64_t pid, uint64_t tid, uint64_t seq) {
  uint32_t i = (uint32_t)hash_id(pid, tid, seq) & h->acq_mask;
  for (;; i = (i + 1) & h->acq_mask) {
    uint32_t a = h->acq_slots[i];
    if (a == NONE)
      return NONE;
    const struct acq *x = &h->acq[a];
    if (x->pid == pid && x->tid == tid && x->seq == seq)
      return a;
  }
}

/* The acquisition named by pid tid seq, created on its first mention. */
static struct acq *acq_get(struct hist *h, int64_t pid, uint64_t tid, uint64_t seq, uint32_t key,
                           struct where at, const char *line_kind) {
  uint32_t i = (uint32_t)hash_id(pid, tid, seq) & h->acq_mask;
  for (;; i = (i + 1) & h->acq_mask) {
    uint32_t a = h->acq_slots[i];
    if (a == NONE)
      break;
    struct acq *x = &h->acq[a];
    if (x->pid == pid && x->tid == tid && x->seq == seq) {
      if (x->key != key) {
        fail(h, at, "%s line names acquisition %lld %llu %llu with key %s, but it is on key %s",
             line_kind, (long long)pid, (unsigned long long)tid, (unsigned long long)seq,
             hist_key(h, key), hist_key(h, x->key));
        return NULL;
      }
      return x;
    }
  }
  uint32_t a = h->nacq++;
  grow((void **)&h->acq, &h->capacq, a, sizeof(struct acq));
  struct acq *x = &h->acq[a];
  memset(x, 0, sizeof(*x));
  x->pid = pid;
  x->tid = tid;
  x->seq = seq;
  x->key = key;
  x->held_last = x->last_event = T_NONE_LO;
  x->ended = x->first_loss = x->use_first = T_NONE_HI;
  x->fault_start = T_NONE_LO;
  x->at_g = at;
  x->at_use.line = 0;
  h->acq_slots[i] = a;
  if (h->nacq * 2 > h->acq_mask)
    acq_rehash(h);
  return x;
}

static int parse_i64(struct slice s, int64_t *out) {
  size_t i = 0;
  int neg = 0;
  if (s.n > 0 && s.p[0] == '-') {
    neg = 1;
    i = 1;
  }
  if (i == s.n || s.n - i > 19)
    return -1;
  uint64_t v = 0;
  for (; i < s.n; i++) {
    if (s.p[i] < '0' || s.p[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s.p[i] - '0');
  }
  if (v > (uint64_t)INT64_MAX)
    return -1;
  *out = neg ? -(int64_t)v : (int64_t)v;
  return 0;
}

static int parse_u64(struct slice s, uint64_t *out) {
  if (s.n == 0 || s.n > 20)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < s.n; i++) {
    if (s.p[i] < '0' || s.p[i] > '9')
      return -1;
    uint64_t d = (uint64_t)(s.p[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static int is(struct slice s, const char *word) {
  size_t n = strlen(word);
  return s.n == n && memcmp(s.p, word, n) == 0;
}

/* Reads field f[i] as a number, or fails naming the field. */
#define NUM_I64(i, var, what)                                                                      \
  do {                                                                                             \
    if (parse_i64(f[i], &(var)) < 0)                                                               \
      return fail(h, at, "%s: %s is not a number: '%.*s'", kind, what, (int)f[i].n, f[i].p);      \
  } while (0)
#define NUM_U64(i, var, what)                                                                      \
  do {                                                                                             \
    if (parse_u64(f[i], &(var)) < 0)                                                               \
      return fail(h, at, "%s: %s is not an unsigned number: '%.*s'", kind, what, (int)f[i].n,     \
                  f[i].p);                                                                         \
  } while (0)
#define MONO(i, var)                                                                               \
  do {                                                                                             \
    NUM_I64(i, var, "mono");                                                                       \
    if ((var) < 0)                                                                                 \
      return fail(h, at, "%s: mono is negative", kind);                                           \
  } while (0)

static void seen(struct hist *h, int64_t t) {
  if (t < h->t_first)
    h->t_first = t;
  if (t > h->t_last)
    h->t_last = t;
}

static void touch(struct acq *x, int64_t t) {
  if (t > x->last_event)
    x->last_event = t;
}

static void first_use(struct acq *x, struct where at, int64_t mono) {
  if (x->at_use.line == 0)
    x->at_use = at;
  if (mono < x->use_first)
    x->use_first = mono;
}

static int line_acq_event(struct hist *h, struct where at, const struct slice *f, size_t nf) {
  static const size_t want[26] = {['R' - 'A'] = 7, ['G' - 'A'] = 10, ['N' - 'A'] = 7,
                                  ['O' - 'A'] = 8, ['W' - 'A'] = 8,  ['E' - 'A'] = 7};
  char c = f[0].p[0];
  char kind[2] = {c, 0};
  if (nf != want[c - 'A'])
    return fail(h, at, "%s line has %zu fields, expected %zu", kind, nf, want[c - 'A']);
  int64_t pid;
  uint64_t tid, seq;
  NUM_I64(1, pid, "pid");
  NUM_U64(2, tid, "tid");
  NUM_U64(3, seq, "seq");
  if (pid <= 0)
    return fail(h, at, "%s: pid must be positive", kind);
  uint32_t key = key_intern(h, f[4]);
  struct acq *x = acq_get(h, pid, tid, seq, key, at, kind);
  if (!x)
    return -1;
  int64_t mono, v;
  uint64_t u;
  switch (c) {
  case 'R':
    MONO(5, mono);
    NUM_I64(6, v, "wall");
    if (x->flags & A_R)
      return fail(h, at, "second R line for acquisition %lld %llu %llu", (long long)pid,
                  (unsigned long long)tid, (unsigned long long)seq);
    x->flags |= A_R;
    x->r = mono;
    break;
  case 'G':
    NUM_U64(5, u, "token");
    NUM_I64(6, x->ttl_ms, "ttl_ms");
    NUM_I64(7, x->rem_ms, "rem");
    MONO(8, mono);
    NUM_I64(9, v, "wall");
    if (x->ttl_ms < 0)
      return fail(h, at, "G: ttl_ms is negative");
    if (x->rem_ms < -1)
      return fail(h, at, "G: rem below -1");
    if (x->flags & (A_G | A_N))
      return fail(h, at, "G line for acquisition %lld %llu %llu, which already has a %s line",
                  (long long)pid, (unsigned long long)tid, (unsigned long long)seq,
                  (x->flags & A_G) ? "G" : "N");
    x->flags |= A_G;
    x->token = u;
    x->g = mono;
    x->at_g = at;
    break;
  case 'N':
    NUM_I64(5, v, "rc");
    MONO(6, mono);
    if (x->flags & (A_G | A_N))
      return fail(h, at, "N line for acquisition %lld %llu %llu, which already has a %s line",
                  (long long)pid, (unsigned long long)tid, (unsigned long long)seq,
                  (x->flags & A_G) ? "G" : "N");
    x->flags |= A_N;
    x->n = mono;
    break;
  case 'O':
    NUM_I64(5, v, "state");
    if (v < 1 || v > 3)
      return fail(h, at, "O: state must be 1, 2 or 3");
    {
      int64_t rem;
      NUM_I64(6, rem, "rem");
    }
    MONO(7, mono);
    x->flags |= A_O;
    if (v == 1) {
      x->flags |= A_HELD;
      if (mono > x->held_last)
        x->held_last = mono;
    } else {
      if (mono < x->ended)
        x->ended = mono;
      if (v == 2 && mono < x->first_loss)
        x->first_loss = mono;
    }
    first_use(x, at, mono);
    break;
  case 'W':
    NUM_U64(5, u, "token");
    MONO(6, mono);
    if (!is(f[7], "ok") && !is(f[7], "stale") && !is(f[7], "err"))
      return fail(h, at, "W: result must be ok, stale or err");
    x->flags |= A_W;
    first_use(x, at, mono);
    break;
  case 'E':
    NUM_I64(5, v, "rc");
    MONO(6, mono);
    if (x->flags & A_E)
      return fail(h, at, "second E line for acquisition %lld %llu %llu", (long long)pid,
                  (unsigned long long)tid, (unsigned long long)seq);
    x->flags |= A_E;
    x->e = mono;
    if (mono < x->ended)
      x->ended = mono;
    first_use(x, at, mono);
    break;
  }
  touch(x, mono);
  seen(h, mono);
  return 0;
}

static int line_other(struct hist *h, struct where at, const struct slice *f, size_t nf) {
  char c = f[0].p[0];
  char kind[2] = {c, 0};
  switch (c) {
  case 'M': {
    if (nf != 4)
      return fail(h, at, "M line has %zu fields, expected 4", nf);
    struct proc p;
    NUM_I64(1, p.pid, "pid");
    NUM_I64(3, p.ttl_ms, "ttl_ms");
    if (p.pid <= 0)
      return fail(h, at, "M: pid must be positive");
    grow((void **)&h->proc, &h->capproc, h->nproc, sizeof(p));
    h->proc[h->nproc++] = p;
    return 0;
  }
  case 'L': {
    if (nf != 5)
      return fail(h, at, "L line has %zu fields, expected 5", nf);
    struct loss l = {.at = at};
    NUM_I64(1, l.pid, "pid");
    NUM_U64(3, l.token, "token");
    MONO(4, l.mono);
    l.key = key_intern(h, f[2]);
    grow((void **)&h->loss, &h->caploss, h->nloss, sizeof(l));
    h->loss[h->nloss++] = l;
    seen(h, l.mono);
    return 0;
  }
  case 'A': {
    if (nf != 8)
      return fail(h, at, "A line has %zu fields, expected 8", nf);
    struct attempt a = {.at = at};
    int64_t acc;
    NUM_U64(2, a.token, "token");
    NUM_I64(3, a.pid, "pid");
    NUM_U64(4, a.tid, "tid");
    NUM_U64(5, a.seq, "seq");
    MONO(6, a.mono);
    NUM_I64(7, acc, "accepted");
    if (acc != 0 && acc != 1)
      return fail(h, at, "A: accepted must be 0 or 1");
    a.accepted = (int)acc;
    a.key = key_intern(h, f[1]);
    grow((void **)&h->att, &h->capatt, h->natt, sizeof(a));
    h->att[h->natt++] = a;
    seen(h, a.mono);
    return 0;
  }
  case 'X': {
    if (nf != 6)
      return fail(h, at, "X line has %zu fields, expected 6", nf);
    struct fault x = {.at = at, .kind = K_COUNT};
    for (int k = 0; k < K_COUNT; k++)
      if (is(f[1], kind_names[k]))
        x.kind = (enum fault_kind)k;
    if (x.kind == K_COUNT)
      return fail(h, at, "X: unknown fault kind '%.*s'", (int)f[1].n, f[1].p);
    NUM_I64(2, x.victim, "victim");
    if (x.victim < 0)
      return fail(h, at, "X: victim is negative");
    x.key = is(f[3], "-") ? NONE : key_intern(h, f[3]);
    NUM_I64(4, x.start, "start");
    NUM_I64(5, x.end, "end");
    if (x.start < 0 || x.end < x.start)
      return fail(h, at, "X: needs 0 <= start <= end");
    grow((void **)&h->fault, &h->capfault, h->nfault, sizeof(x));
    h->fault[h->nfault++] = x;
    seen(h, x.start);
    seen(h, x.end);
    return 0;
  }
  }
  return fail(h, at, "unknown line type '%.*s'", (int)f[0].n, f[0].p);
}

static int parse_line(struct hist *h, struct where at, const char *p, size_t n) {
  if (n == 0 || p[0] == '#')
    return 0;
  struct slice f[MAX_FIELDS + 1];
  size_t nf = 0;
  size_t s = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && p[i] != ' ')
      continue;
    if (i == s)
      return fail(h, at, "empty field (fields are separated by exactly one space)");
    if (nf == MAX_FIELDS)
      return fail(h, at, "too many fields");
    f[nf].p = p + s;
    f[nf].n = i - s;
    nf++;
    s = i + 1;
  }
  if (f[0].n != 1)
    return fail(h, at, "unknown line type '%.*s'", (int)f[0].n, f[0].p);
  switch (f[0].p[0]) {
  case 'R':
  case 'G':
  case 'N':
  case 'O':
  case 'W':
  case 'E':
    return line_acq_event(h, at, f, nf);
  default:
    return line_other(h, at, f, nf);
  }
}

int hist_feed(struct hist *h, uint32_t file, const char *buf, size_t len, int *truncated) {
  struct where at = {file, 0};
  size_t s = 0;
  *truncated = 0;
  while (s < len) {
    const char *nl = memchr(buf + s, '\n', len - s);
    at.line++;
    if (!nl) {
      *truncated = 1;
      h->truncated++;
      break;
    }
    size_t e = (size_t)(nl - buf);
    if (memchr(buf + s, '\0', e - s))
      return fail(h, at, "NUL byte in line");
    if (parse_line(h, at, buf + s, e - s) < 0)
      return -1;
    s = e + 1;
  }
  return 0;
}

static int cmp_proc(const void *a, const void *b) {
  const struct proc *x = a, *y = b;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

struct lossref {
  int64_t pid;
  uint32_t key;
  uint64_t token;
  int64_t g;
  uint32_t acq;
};

static int cmp_lossref(const void *a, const void *b) {
  const struct lossref *x = a, *y = b;
  if (x->pid != y->pid)
    return x->pid < y->pid ? -1 : 1;
  if (x->key != y->key)
    return x->key < y->key ? -1 : 1;
  if (x->token != y->token)
    return x->token < y->token ? -1 : 1;
  return (x->g > y->g) - (x->g < y->g);
}

static int64_t proc_ttl(const struct hist *h, int64_t pid) {
  size_t lo = 0, hi = h->nproc;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (h->proc[mid].pid < pid)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < h->nproc && h->proc[lo].pid == pid ? h->proc[lo].ttl_ms : 0;
}

/* An L names its lock by pid, key and token: it belongs to the latest
 * acquisition with those granted no later than the callback ran. */
static int resolve_losses(struct hist *h) {
  if (h->nloss == 0)
    return 0;
  struct lossref *refs = xrealloc(NULL, (size_t)h->nacq * sizeof(*refs));
  size_t nr = 0;
  for (uint32_t a = 0; a < h->nacq; a++) {
    const struct acq *x = &h->acq[a];
    if (x->flags & A_G)
      refs[nr++] = (struct lossref){x->pid, x->key, x->token, x->g, a};
  }
  qsort(refs, nr, sizeof(*refs), cmp_lossref);
  for (uint32_t i = 0; i < h->nloss; i++) {
    const struct loss *l = &h->loss[i];
    struct lossref want = {l->pid, l->key, l->token, l->mono, 0};
    size_t lo = 0, hi = nr;
    while (lo < hi) { /* first ref greater than want */
      size_t mid = (lo + hi) / 2;
      if (cmp_lossref(&refs[mid], &want) <= 0)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo == 0 || refs[lo - 1].pid != l->pid || refs[lo - 1].key != l->key ||
        refs[lo - 1].token != l->token) {
      free(refs);
      return fail(h, l->at, "L: no acquisition of pid %lld was granted key %s with token %llu",
                  (long long)l->pid, hist_key(h, l->key), (unsigned long long)l->token);
    }
    struct acq *x = &h->acq[refs[lo - 1].acq];
    if (l->mono < x->ended)
      x->ended = l->mono;
    if (l->mono < x->first_loss)
      x->first_loss = l->mono;
    touch(x, l->mono);
  }
  free(refs);
  return 0;
}

int hist_finish(struct hist *h) {
  qsort(h->proc, h->nproc, sizeof(*h->proc), cmp_proc);
  for (uint32_t a = 0; a < h->nacq; a++) {
    struct acq *x = &h->acq[a];
    if ((x->flags & (A_G | A_N)) && !(x->flags & A_R))
      return fail(h, x->at_g, "acquisition %lld %llu %llu has an outcome but no R line",
                  (long long)x->pid, (unsigned long long)x->tid, (unsigned long long)x->seq);
    if ((x->flags & (A_O | A_W | A_E)) && !(x->flags & A_G))
      return fail(h, x->at_use, "acquisition %lld %llu %llu is used but was never granted",
                  (long long)x->pid, (unsigned long long)x->tid, (unsigned long long)x->seq);
    if ((x->flags & A_G) && x->g < x->r)
      return fail(h, x->at_g, "acquisition %lld %llu %llu granted before it was requested",
                  (long long)x->pid, (unsigned long long)x->tid, (unsigned long long)x->seq);
    if ((x->flags & A_G) && x->use_first < x->g)
      return fail(h, x->at_use, "acquisition %lld %llu %llu is used before it was granted",
                  (long long)x->pid, (unsigned long long)x->tid, (unsigned long long)x->seq);
    if ((x->flags & A_N) && x->n < x->r)
      return fail(h, x->at_g, "acquisition %lld %llu %llu failed before it was requested",
                  (long long)x->pid, (unsigned long long)x->tid, (unsigned long long)x->seq);
    if ((x->flags & A_G) && x->ttl_ms == 0)
      x->ttl_ms = proc_ttl(h, x->pid);
  }
  return resolve_losses(h);
}
