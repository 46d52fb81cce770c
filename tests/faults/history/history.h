/* dlock-history: the records of a fault run's history, as the parser builds
 * them and the checker reads them.  The format and the rules are in
 * tests/faults/HISTORY.md.
 *
 * Every line naming an acquisition (pid tid seq) is folded into one
 * `struct acq` as it is read, whatever file it came from and in whatever
 * order the files are given, so memory grows with acquisitions rather than
 * with lines.  Lines that name no acquisition by its id (L, A, X, M) are
 * kept as they are and resolved once everything has been read. */
#ifndef DLOCK_HISTORY_H
#define DLOCK_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define NONE UINT32_MAX
#define T_NONE_LO INT64_MIN /* "no such event" for a latest-time field */
#define T_NONE_HI INT64_MAX /* "no such event" for an earliest-time field */

struct where {
  uint32_t file; /* index into hist.files */
  uint32_t line; /* 1-based */
};

enum {
  A_R = 1u << 0,
  A_G = 1u << 1,
  A_N = 1u << 2,
  A_E = 1u << 3,
  A_O = 1u << 4,    /* any O line, whatever its state */
  A_HELD = 1u << 5, /* an O line with state 1 */
  A_W = 1u << 6
};

struct acq {
  int64_t pid;
  uint64_t tid, seq;
  uint32_t key;
  uint32_t flags;
  int64_t r, g, n, e; /* mono of R, G, N, E */
  uint64_t token;
  int64_t ttl_ms, rem_ms;
  int64_t held_last;  /* latest O state 1 */
  int64_t last_event; /* latest mono of any line of it */
  int64_t ended;      /* earliest E, O state 2 or 3, or L: belief over */
  int64_t first_loss; /* earliest O state 2 or L */
  int64_t use_first;  /* earliest O, W or E */
  int64_t fault_start; /* checker: latest fault that found it held */
  struct where at_g;   /* its G line, or its first line if none */
  struct where at_use; /* its first O, W or E line */
};

struct loss { /* an L line: on_lost names the lock by pid, key and token */
  int64_t pid;
  uint32_t key;
  uint64_t token;
  int64_t mono;
  struct where at;
};

struct attempt { /* an A line, in the resource's decision order */
  uint32_t key;
  int accepted;
  uint64_t token;
  int64_t pid;
  uint64_t tid, seq;
  int64_t mono;
  struct where at;
};

enum fault_kind {
  K_PAUSE,
  K_KILL,
  K_KILL_RUN,
  K_LATENCY,
  K_RESET,
  K_BLACKHOLE,
  K_DROP_REPLIES,
  K_DROP_REQUESTS,
  K_RESTART,
  K_RESTART_FAST, /* a restart after which the store has forgotten its locks */
  K_MEMBER_KILL,
  K_COUNT
};

struct fault {
  enum fault_kind kind;
  int64_t victim; /* 0: the store, so every client */
  uint32_t key;   /* NONE for "-" */
  int64_t start, end;
  struct where at;
};

struct proc { /* an M line */
  int64_t pid;
  int64_t ttl_ms;
};

struct hist {
  const char **files; /* names for messages; not owned */
  uint32_t nfiles;

  struct acq *acq;
  uint32_t nacq, capacq;
  uint32_t *acq_slots; /* open addressing over (pid, tid, seq) */
  uint32_t acq_mask;

  char *keybuf; /* interned keys, NUL-terminated, by offset */
  size_t keylen, keycap;
  uint32_t *key_off;
  uint32_t nkeys, capkeys;
  uint32_t *key_slots;
  uint32_t key_mask;

  struct loss *loss;
  uint32_t nloss, caploss;
  struct attempt *att;
  uint32_t natt, capatt;
  struct fault *fault;
  uint32_t nfault, capfault;
  struct proc *proc;
  uint32_t nproc, capproc;

  int64_t t_first, t_last; /* earliest and latest mono anywhere */
  uint32_t truncated;      /* files whose last line had no newline */
  char err[512];
};

/* Parser (parse.c): no I/O.  Each returns 0, or -1 with hist.err set to
 * "FILE:LINE: why". */
void hist_init(struct hist *h, const char **files, uint32_t nfiles);
void hist_free(struct hist *h);
/* One file's whole content.  A last line without its newline is the
 * partial write of a killed writer: it is skipped, and *truncated says so. */
int hist_feed(struct hist *h, uint32_t file, const char *buf, size_t len, int *truncated);
/* Cross-line checks that need every file read. */
int hist_finish(struct hist *h);
const char *hist_key(const struct hist *h, uint32_t key);
uint32_t hist_find(const struct hist *h, int64_t pid, uint64_t tid, uint64_t seq);
const char *fault_kind_name(enum fault_kind k);

/* Checker (check.c). */
enum rule { RULE_A, RULE_B, RULE_C, RULE_D, RULE_E, RULE_COUNT };

enum viol_kind {
  V_OVERLAP,       /* a: x and y believed at once */
  V_OVERLAP_POINT, /* a: y was granted inside x's belief */
  V_ORDER,         /* b: x granted before y asked, x.token > y.token */
  V_DUP,           /* b: x and y hold distinct leases with one token */
  V_DOWN,          /* c: att went below the token of att2 */
  V_UNGRANTED,     /* c: att's acquisition was not granted that token */
  V_VALIDITY,      /* d: x believed at t past fault's start + ttl */
  V_RECOVERY       /* e: no grant of key within the bound after fault */
};

struct viol {
  enum viol_kind kind;
  uint32_t key;
  uint32_t x, y;     /* acquisitions, or NONE */
  uint32_t att, att2; /* A lines, or NONE */
  uint32_t fault;    /* or NONE */
  int64_t t;         /* when it happened, for ordering the report */
  int64_t t2;        /* d: the bound; e: first grant after the kill or T_NONE_LO */
  int why;           /* e, not failed: 0 the history ended, 1 nobody asked */
};

struct vlist {
  struct viol *v;
  size_t n, cap;
};

struct stats {
  size_t count;
  int64_t p50, max; /* ns */
};

struct check_opts {
  int64_t recover_bound_ns; /* < 0: not given */
  int lossy_store;
};

struct result {
  uint64_t acquisitions, failed_acquires;
  uint64_t writes_accepted, writes_rejected;
  uint64_t overlaps;
  uint64_t kills;
  /* Faults on one process (rule d's kinds), and those that found it
   * holding a lock: a fault that hit no holder tested nothing. */
  uint64_t faults, faults_hit;
  struct vlist rule[RULE_COUNT];
  struct stats loss_detect, recovery;
  uint64_t recoveries_unfinished;
  struct vlist unfinished; /* V_RECOVERY entries that were not failed */
};

int check_run(struct hist *h, const struct check_opts *o, struct result *res);
void result_free(struct result *res);
/* Whether the rule's violations fail the run under these options. */
int rule_fails(enum rule r, const struct check_opts *o);

#endif
