/* Key mappers of every store: key -> the name the store sees.  The input
 * is two keys split at its first NUL (keys cannot hold one); each valid
 * key is mapped by every store built in and each name decoded back by the
 * layout its codec documents, so a name that lost or changed a byte
 * (truncation, a missing escape) fails; two different keys must never
 * share a name, nor one key's name lie under another's where the store
 * nests names (etcd holder keys, file directories).  Mappers that write
 * into a caller's buffer are also given buffers too small: they must fail
 * or stop at a whole escape, never return a shorter name as if whole. */
#include <limits.h>

#include "fuzz.h"

#include "core/internal.h"
#include "backends/file/file-path.h"
#ifdef DLOCK_HAVE_REDIS
#include "backends/redis/redis-codec.h"
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
#include "backends/zookeeper/zk-codec.h"
#endif
#ifdef DLOCK_HAVE_POSTGRES
#include "backends/postgres/pg-codec.h"
#endif
#ifdef DLOCK_HAVE_ETCD
#include "backends/etcd/etcd-codec.h"
#endif
#ifdef DLOCK_HAVE_CONSUL
#include "backends/consul/consul-codec.h"
#endif

typedef struct key {
  const char *p;
  size_t n;
} key;

static int hexv(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* S (N bytes) with every "%XX" (upper-case hex) decoded into OUT; bytes
 * outside KEEP must be escaped (KEEP NULL: anything else passes as is
 * except ESCAPED, which must be; both NULL: S is the key verbatim).
 * Returns the length, or -1. */
static long unescape(const char *s, size_t n, int (*keep)(unsigned char), const char *escaped,
                     char *out) {
  size_t o = 0;
  if (!keep && !escaped) {
    memcpy(out, s, n);
    return (long)n;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '%') {
      if (i + 2 >= n || hexv(s[i + 1]) < 0 || hexv(s[i + 2]) < 0)
        return -1;
      out[o++] = (char)(hexv(s[i + 1]) << 4 | hexv(s[i + 2]));
      i += 2;
    } else if (keep ? !keep(c) : strchr(escaped, c) != NULL) {
      return -1;
    } else {
      out[o++] = (char)c;
    }
  }
  return (long)o;
}

/* NAME must be HEAD, then the escaped form of K, then TAIL. */
static void check_round_trip(const char *store, const char *name, const char *head,
                             const char *tail, const key *k, int (*keep)(unsigned char),
                             const char *escaped) {
  FUZZ_CHECK(name != NULL, "%s: no name", store);
  size_t nl = strlen(name), hl = strlen(head), tl = strlen(tail);
  FUZZ_CHECK(nl >= hl + tl && memcmp(name, head, hl) == 0 &&
                 memcmp(name + nl - tl, tail, tl) == 0,
             "%s: name \"%s\" is not \"%s\"...\"%s\"", store, name, head, tail);
  char *back = malloc(nl + 1);
  if (!back)
    abort();
  long bl = unescape(name + hl, nl - hl - tl, keep, escaped, back);
  FUZZ_CHECK(bl == (long)k->n && memcmp(back, k->p, k->n) == 0,
             "%s: name \"%s\" does not decode to its key", store, name);
  free(back);
}

static void check_distinct(const char *store, const char *a, size_t al, const char *b,
                           size_t bl) {
  FUZZ_CHECK(al != bl || memcmp(a, b, al) != 0, "%s: two keys share the name \"%.*s\"", store,
             (int)al, a);
}

/* A must not be a directory holding B: "A/" begins B. */
static void check_not_under(const char *store, const char *a, const char *b) {
  size_t al = strlen(a);
  FUZZ_CHECK(!(strncmp(a, b, al) == 0 && b[al] == '/'), "%s: \"%s\" lies under \"%s\"", store,
             b, a);
}

static int file_keep(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

static void file_keys(const key *k, size_t nk, unsigned cut) {
  static char path[2][PATH_MAX];
  for (size_t i = 0; i < nk; i++) {
    int n = dlock__file_key_path("/d", k[i].p, k[i].n, path[i], sizeof path[i]);
    FUZZ_CHECK(n > 0 && (size_t)n == strlen(path[i]), "file: %d", n);
    /* the chunk separators ".d/" are not part of the key */
    char *joined = malloc((size_t)n + 1);
    if (!joined)
      abort();
    size_t o = 0;
    const char *body = path[i] + 3, *end = path[i] + n - 5;
    for (const char *p = body; p < end;) {
      const char *sl = memchr(p, '/', (size_t)(end - p));
      size_t seg = sl ? (size_t)(sl - p) : (size_t)(end - p);
      if (sl) {
        FUZZ_CHECK(seg > 2 && memcmp(sl - 2, ".d", 2) == 0, "file: bad chunk in \"%s\"", path[i]);
        seg -= 2;
      }
      FUZZ_CHECK(seg <= DLOCK__FILE_CHUNK, "file: chunk longer than a component may be");
      memcpy(joined + o, p, seg);
      o += seg;
      p += seg + (sl ? 3 : 0);
    }
    joined[o] = '\0';
    char *rebuilt = NULL;
    if (asprintf(&rebuilt, "/d/%s.lock", joined) < 0)
      abort();
    check_round_trip("file", rebuilt, "/d/", ".lock", &k[i], file_keep, NULL);
    free(rebuilt);
    /* what dlock_list reads back from the directory is the key */
    char back[DLOCK_KEY_MAX + 1];
    int bl = dlock__file_path_key(path[i] + 3, strlen(path[i] + 3), back, sizeof back);
    FUZZ_CHECK(bl >= 0 && (size_t)bl == k[i].n && memcmp(back, k[i].p, k[i].n) == 0,
               "file: \"%s\" reads back as another key (%d)", path[i], bl);
    free(joined);
    /* too small a buffer is an error, not a shorter path */
    char small[PATH_MAX];
    size_t sz = (size_t)n + 1 - (cut % ((unsigned)n + 1));
    int m = dlock__file_key_path("/d", k[i].p, k[i].n, small, sz);
    if (sz > (size_t)n)
      FUZZ_CHECK(m == n && strcmp(small, path[i]) == 0, "file: path differs with room to spare");
    else
      FUZZ_CHECK(m == DLOCK_EINVAL, "file: %zu bytes for a %d-byte path gave %d", sz, n, m);
  }
  if (nk == 2) {
    check_distinct("file", path[0], strlen(path[0]), path[1], strlen(path[1]));
    /* a key's file never is another key's directory, nor inside it */
    check_not_under("file", path[0], path[1]);
    check_not_under("file", path[1], path[0]);
  }
}

#ifdef DLOCK_HAVE_REDIS
static void redis_keys(const key *k, size_t nk) {
  static const char *const kinds[] = {"lock:{", "fence:{", "lockch:{"};
  char *names[2][3] = {{0}};
  size_t lens[2][3] = {{0}};
  for (size_t i = 0; i < nk; i++)
    for (int t = 0; t < 3; t++) {
      names[i][t] = dlock__redis_key(NULL, (dlock__redis_keykind)t, k[i].p, k[i].n, &lens[i][t]);
      FUZZ_CHECK(names[i][t], "redis: no name");
      char head[32];
      snprintf(head, sizeof head, "%s%s", DLOCK__REDIS_DEFAULT_PREFIX, kinds[t]);
      FUZZ_CHECK(lens[i][t] == strlen(head) + k[i].n + 1, "redis: length %zu", lens[i][t]);
      check_round_trip("redis", names[i][t], head, "}", &k[i], NULL, NULL);
    }
  /* every kind of name of every key is a name of its own */
  for (size_t a = 0; a < nk * 3; a++)
    for (size_t b = a + 1; b < nk * 3; b++) {
      size_t ia = a / 3, ta = a % 3, ib = b / 3, tb = b % 3;
      if (ta == tb && k[ia].n == k[ib].n && memcmp(k[ia].p, k[ib].p, k[ia].n) == 0)
        continue;
      check_distinct("redis", names[ia][ta], lens[ia][ta], names[ib][tb], lens[ib][tb]);
    }
  for (size_t i = 0; i < nk; i++)
    for (int t = 0; t < 3; t++)
      free(names[i][t]);
}
#endif

#ifdef DLOCK_HAVE_ZOOKEEPER
static int zk_keep(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-' || c == '.';
}

static void zk_keys(const key *k, size_t nk, unsigned cut) {
  char *dirs[2] = {0};
  for (size_t i = 0; i < nk; i++) {
    dirs[i] = dlock__zk_lock_dir("/dlock", k[i].p, k[i].n);
    check_round_trip("zk", dirs[i], "/dlock/", "", &k[i], zk_keep, NULL);
    const char *comp = dirs[i] + 7;
    FUZZ_CHECK(strcmp(comp, ".") != 0 && strcmp(comp, "..") != 0, "zk: component \"%s\"", comp);
    /* list's way back from the name, which must not fit a short buffer */
    char back[512];
    size_t backlen = 0;
    FUZZ_CHECK(dlock__zk_unescape(comp, back, sizeof back, &backlen) == 0 && backlen == k[i].n &&
                   memcmp(back, k[i].p, backlen) == 0,
               "zk: \"%s\" does not decode to its key", comp);
    FUZZ_CHECK(dlock__zk_unescape(comp, back, k[i].n - 1, &backlen) < 0,
               "zk: \"%s\" decoded into %zu bytes", comp, k[i].n - 1);
    /* a cut escape holds whole units only */
    size_t full = dlock__zk_escape(k[i].p, k[i].n, NULL, 0);
    FUZZ_CHECK(full == strlen(comp), "zk: escape length %zu", full);
    char small[3 * 512 + 1];
    size_t sz = full + 1 - (cut % (full + 1));
    size_t again = dlock__zk_escape(k[i].p, k[i].n, small, sz);
    size_t got = strlen(small);
    FUZZ_CHECK(again == full && got < sz && memcmp(small, comp, got) == 0 &&
                   (got == full || comp[got] != '\0'),
               "zk: escape into %zu bytes", sz);
    if (got < full) {
      /* the next unit did not fit, the ones written did */
      size_t unit = comp[got] == '%' ? 3 : 1;
      FUZZ_CHECK(got + unit >= sz, "zk: escape stopped early at %zu of %zu", got, sz);
      for (size_t j = 0; j < got; j++)
        if (comp[j] == '%')
          FUZZ_CHECK(j + 2 < got, "zk: escape cut inside a unit");
    }
  }
  if (nk == 2)
    check_distinct("zk", dirs[0], strlen(dirs[0]), dirs[1], strlen(dirs[1]));
  free(dirs[0]);
  free(dirs[1]);
}
#endif

#ifdef DLOCK_HAVE_POSTGRES
static void pg_keys(const key *k, size_t nk) {
  /* Advisory keys are a full 64-bit hash: a collision is a 2^-64 event,
   * so finding one means the hash input lost part of the key. */
  if (nk == 2)
    FUZZ_CHECK(dlock__pg_advisory_key("dlock", k[0].p, k[0].n) !=
                   dlock__pg_advisory_key("dlock", k[1].p, k[1].n),
               "postgres: two keys share an advisory key");
  for (size_t i = 0; i < nk; i++) {
    int64_t a = dlock__pg_advisory_key("dlock", k[i].p, k[i].n);
    FUZZ_CHECK(a == dlock__pg_advisory_key("dlock", k[i].p, k[i].n), "postgres: unstable");
    uint32_t cls, obj;
    dlock__pg_advisory_split(a, &cls, &obj);
    FUZZ_CHECK((int64_t)((uint64_t)cls << 32 | obj) == a, "postgres: split loses bits");
  }
}
#endif

#ifdef DLOCK_HAVE_ETCD
static void etcd_keys(const key *k, size_t nk, int64_t lease) {
  char *names[2] = {0}, *holders[2] = {0};
  for (size_t i = 0; i < nk; i++) {
    names[i] = dlock__etcd_lock_name(NULL, k[i].p, k[i].n);
    check_round_trip("etcd", names[i], DLOCK__ETCD_DEFAULT_PREFIX, "", &k[i], NULL, "/");
    holders[i] = dlock__etcd_lock_key(names[i], lease);
    FUZZ_CHECK(holders[i], "etcd: no holder key");
    size_t nl = strlen(names[i]);
    FUZZ_CHECK(strncmp(holders[i], names[i], nl) == 0 && holders[i][nl] == '/' &&
                   !strchr(holders[i] + nl + 1, '/'),
               "etcd: holder key \"%s\" not one level under \"%s\"", holders[i], names[i]);
    /* the range end bounds exactly the names that begin with the prefix */
    char *end = malloc(nl + 1);
    if (!end)
      abort();
    size_t el = dlock__etcd_prefix_end(names[i], nl, end);
    FUZZ_CHECK(el >= 1 && el <= nl, "etcd: range end length %zu", el);
    FUZZ_CHECK(memcmp(end, names[i], el - 1) == 0 &&
                   (unsigned char)end[el - 1] == (unsigned char)names[i][el - 1] + 1,
               "etcd: range end of \"%s\"", names[i]);
    for (size_t j = el; j < nl; j++)
      FUZZ_CHECK((unsigned char)names[i][j] == 0xff, "etcd: range end cut too soon");
    free(end);
  }
  if (nk == 2) {
    check_distinct("etcd", names[0], strlen(names[0]), names[1], strlen(names[1]));
    check_distinct("etcd", holders[0], strlen(holders[0]), holders[1], strlen(holders[1]));
    /* one key's holders never fall in another key's range */
    check_not_under("etcd", names[0], holders[1]);
    check_not_under("etcd", names[1], holders[0]);
  }
  for (size_t i = 0; i < 2; i++) {
    free(names[i]);
    free(holders[i]);
  }
}
#endif

#ifdef DLOCK_HAVE_CONSUL
static int consul_path_keep(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '_' || c == '~';
}

static void consul_keys(const key *k, size_t nk) {
  char *names[2] = {0}, *paths[2] = {0};
  for (size_t i = 0; i < nk; i++) {
    names[i] = dlock__consul_lock_key(NULL, k[i].p, k[i].n);
    check_round_trip("consul", names[i], DLOCK__CONSUL_DEFAULT_PREFIX, "/.lock", &k[i], NULL,
                     "/");
    paths[i] = dlock__consul_kv_path(names[i], "");
    key nk2 = {names[i], strlen(names[i])};
    check_round_trip("consul path", paths[i], "/v1/kv/", "", &nk2, consul_path_keep, NULL);
    size_t pp = dlock__consul_printable_prefix(names[i]);
    for (size_t j = 0; j < pp; j++)
      FUZZ_CHECK(names[i][j] >= 0x20 && names[i][j] <= 0x7e, "consul: printable prefix");
    FUZZ_CHECK(!(names[i][pp] >= 0x20 && names[i][pp] <= 0x7e), "consul: prefix stops early");
    for (int whole = 0; whole < 2; whole++) {
      char *w = dlock__consul_watch_path(names[i], whole, "index=7&wait=100ms");
      FUZZ_CHECK(w && strncmp(w, "/v1/kv/", 7) == 0, "consul: watch path");
      free(w);
    }
  }
  if (nk == 2) {
    check_distinct("consul", names[0], strlen(names[0]), names[1], strlen(names[1]));
    check_distinct("consul path", paths[0], strlen(paths[0]), paths[1], strlen(paths[1]));
  }
  for (size_t i = 0; i < 2; i++) {
    free(names[i]);
    free(paths[i]);
  }
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fuzz_strndup(data, size);
  key k[2];
  size_t nk = 0;
  const char *nul = memchr(data, '\0', size);
  const char *parts[2] = {s, nul ? s + (nul - (const char *)data) + 1 : NULL};
  for (int i = 0; i < 2 && parts[i]; i++) {
    size_t n = 0;
    if (dlock__key_check(parts[i], &n) == 0) {
      FUZZ_CHECK(n == strlen(parts[i]) && n >= 1 && n <= DLOCK_KEY_MAX, "key_check length");
      k[nk++] = (key){parts[i], n};
    }
  }
  if (nk == 2 && k[0].n == k[1].n && memcmp(k[0].p, k[1].p, k[0].n) == 0)
    nk = 1; /* the same key twice: nothing to tell apart */
  unsigned cut = size ? data[size - 1] : 0;
  if (nk) {
    file_keys(k, nk, cut);
#ifdef DLOCK_HAVE_REDIS
    redis_keys(k, nk);
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
    zk_keys(k, nk, cut);
#endif
#ifdef DLOCK_HAVE_POSTGRES
    pg_keys(k, nk);
#endif
#ifdef DLOCK_HAVE_ETCD
    etcd_keys(k, nk, (int64_t)((uint64_t)cut * 0x9e3779b97f4a7c15ull));
#endif
#ifdef DLOCK_HAVE_CONSUL
    consul_keys(k, nk);
#endif
  }
  free(s);
  return 0;
}
