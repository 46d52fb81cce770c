/* ZooKeeper naming for dlock; see zk-codec.h for the layout. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/zookeeper/zk-codec.h"

#define NODE_HEAD "_c_"
#define NODE_MID "-lock-"

/* Length of the UTF-8 sequence at P (at most N bytes) and its code point,
 * or 0 when it is not well-formed (overlong, surrogate, past U+10FFFF). */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp) {
  if (p[0] < 0x80) {
    *cp = p[0];
    return 1;
  }
  size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 0;
  if (len == 0 || len > n || p[0] > 0xf4)
    return 0;
  uint32_t v = p[0] & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    v = v << 6 | (p[i] & 0x3f);
  }
  static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
    return 0;
  *cp = v;
  return len;
}

/* A path ZooKeeper accepts as a node we may create: "/a/b", no empty
 * components, none that is "." or "..", and none of the code points its
 * PathUtils.validatePath refuses (U+0000-U+001F, U+007F-U+009F,
 * U+D800-U+F8FF, U+FFF0-U+FFFF; it looks at UTF-16 units, so every code
 * point past U+FFFF, a surrogate pair, is refused too), nor bytes that are
 * not UTF-8 (the server decodes them as U+FFFD, which it also refuses). */
static int valid_abs_path(const char *p, size_t len) {
  if (len == 0 || p[0] != '/')
    return 0;
  size_t i = 1;
  while (i <= len) {
    size_t j = i;
    while (j < len && p[j] != '/')
      j++;
    size_t n = j - i;
    if (n == 0 || (n == 1 && p[i] == '.') || (n == 2 && p[i] == '.' && p[i + 1] == '.'))
      return 0;
    for (size_t k = i; k < j;) {
      uint32_t cp;
      size_t l = utf8_next((const unsigned char *)p + k, j - k, &cp);
      if (l == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0xd800 && cp <= 0xf8ff) ||
          cp >= 0xfff0)
        return 0;
      k += l;
    }
    i = j + 1;
  }
  return 1;
}

/* Normalise one of the root's parts: NULL/""/"/" is empty; otherwise it must
 * be absolute and is kept without trailing slashes. */
static int root_part(const char *what, const char *s, size_t *len) {
  size_t n = s ? strlen(s) : 0;
  while (n > 0 && s[n - 1] == '/')
    n--;
  *len = n;
  if (n == 0)
    return 0;
  if (!valid_abs_path(s, n))
    return dlock_seterr(DLOCK_EINVAL,
                        "zk: invalid %s '%s': want an absolute path like /a/b of UTF-8 "
                        "without empty, '.' or '..' components or characters ZooKeeper "
                        "refuses (controls, U+007F-U+009F, U+D800-U+F8FF, from U+FFF0 on)",
                        what, s);
  return 0;
}

int dlock__zk_root(const char *chroot, const char *prefix, char **out) {
  size_t cl, pl;
  int rc;
  if ((rc = root_part("chroot (URL path)", chroot, &cl)) < 0)
    return rc;
  if (!prefix)
    prefix = DLOCK__ZK_DEFAULT_ROOT;
  if ((rc = root_part("prefix", prefix, &pl)) < 0)
    return rc;
  /* Lock dirs directly under "/" would share the namespace with
   * /zookeeper and whatever else lives there. */
  if (cl + pl == 0)
    return dlock_seterr(DLOCK_EINVAL, "zk: the lock root cannot be '/'; set ?prefix=/name");
  char *r = malloc(cl + pl + 1);
  if (!r)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  memcpy(r, chroot, cl);
  memcpy(r + cl, prefix, pl);
  r[cl + pl] = '\0';
  *out = r;
  return 0;
}

static int keep_byte(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-' || c == '.';
}

size_t dlock__zk_escape(const char *key, size_t keylen, char *out, size_t outsz) {
  static const char hex[] = "0123456789ABCDEF";
  int all_dots = keylen <= 2;
  for (size_t i = 0; i < keylen && all_dots; i++)
    all_dots = key[i] == '.';
  size_t n = 0;     /* length of the whole escape */
  size_t w = 0;     /* bytes written: whole units only, so no gap before the NUL */
  int full = outsz == 0;
  for (size_t i = 0; i < keylen; i++) {
    unsigned char c = (unsigned char)key[i];
    char unit[3];
    size_t ul;
    if (keep_byte(c) && !all_dots) {
      unit[0] = (char)c;
      ul = 1;
    } else {
      unit[0] = '%';
      unit[1] = hex[c >> 4];
      unit[2] = hex[c & 15];
      ul = 3;
    }
    n += ul;
    if (!full && w + ul < outsz) {
      memcpy(out + w, unit, ul);
      w += ul;
    } else {
      full = 1;
    }
  }
  if (outsz)
    out[w] = '\0';
  return n;
}

static int upper_hex(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int dlock__zk_unescape(const char *name, char *key, size_t keysz, size_t *keylen) {
  size_t n = 0;
  bool literal = false;      /* a byte written as itself */
  bool kept_escaped = false; /* a byte esc() keeps, written as %XX */
  for (const char *p = name; *p; n++) {
    if (n == keysz)
      return -1;
    unsigned char c = (unsigned char)*p;
    if (c == '%') {
      int hi = upper_hex(p[1]), lo = hi < 0 ? -1 : upper_hex(p[2]);
      if (lo < 0)
        return -1;
      c = (unsigned char)(hi << 4 | lo);
      kept_escaped |= keep_byte(c);
      p += 3;
    } else {
      if (!keep_byte(c))
        return -1;
      literal = true;
      p++;
    }
    key[n] = (char)c;
  }
  if (n == 0)
    return -1;
  bool all_dots = n <= 2;
  for (size_t i = 0; i < n && all_dots; i++)
    all_dots = key[i] == '.';
  /* esc() writes "." and ".." as escapes only, every other key with its
   * kept bytes as themselves. */
  if (all_dots ? literal : kept_escaped)
    return -1;
  *keylen = n;
  return 0;
}

char *dlock__zk_lock_dir(const char *root, const char *key, size_t keylen) {
  size_t rl = strlen(root);
  size_t el = dlock__zk_escape(key, keylen, NULL, 0);
  char *p = malloc(rl + 1 + el + 1);
  if (!p)
    return NULL;
  memcpy(p, root, rl);
  p[rl] = '/';
  dlock__zk_escape(key, keylen, p + rl + 1, el + 1);
  return p;
}

char *dlock__zk_node_prefix(const char *dir, const char *guid) {
  size_t n = strlen(dir) + strlen(guid) + sizeof "/" NODE_HEAD NODE_MID;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/" NODE_HEAD "%s" NODE_MID, dir, guid);
  return p;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

int dlock__zk_parse_node(const char *name, char guid[DLOCK__ZK_GUID_LEN + 1], int64_t *seq) {
  const size_t hl = sizeof NODE_HEAD - 1, ml = sizeof NODE_MID - 1;
  if (strlen(name) != hl + DLOCK__ZK_GUID_LEN + ml + DLOCK__ZK_SEQ_DIGITS)
    return -1;
  if (memcmp(name, NODE_HEAD, hl) != 0 ||
      memcmp(name + hl + DLOCK__ZK_GUID_LEN, NODE_MID, ml) != 0)
    return -1;
  for (size_t i = 0; i < DLOCK__ZK_GUID_LEN; i++)
    if (!is_hex(name[hl + i]))
      return -1;
  /* ZooKeeper prints the parent's cversion with %010d; the counter only
   * goes negative after 2^31 children of one dir, which we refuse to guess
   * an order for. */
  const char *d = name + hl + DLOCK__ZK_GUID_LEN + ml;
  int64_t v = 0;
  for (size_t i = 0; i < DLOCK__ZK_SEQ_DIGITS; i++) {
    if (d[i] < '0' || d[i] > '9')
      return -1;
    v = v * 10 + (d[i] - '0');
  }
  memcpy(guid, name + hl, DLOCK__ZK_GUID_LEN);
  guid[DLOCK__ZK_GUID_LEN] = '\0';
  *seq = v;
  return 0;
}

static int by_seq(const void *a, const void *b) {
  const dlock__zk_child *x = a, *y = b;
  if (x->seq != y->seq)
    return x->seq < y->seq ? -1 : 1;
  /* Equal numbers cannot come from one dir; keep the order total anyway. */
  return strcmp(x->name, y->name);
}

/* Any sequential node ends in the parent's 10-digit counter.  A node of
 * another recipe (Curator writes "_c_<uuid>-lock-<seq>" with dashes in the
 * uuid) in our lock dir still holds its place in the queue: skipping it
 * would let both of us think we hold the lock. */
static int parse_foreign(const char *name, int64_t *seq) {
  size_t len = strlen(name);
  if (len < DLOCK__ZK_SEQ_DIGITS)
    return -1;
  const char *d = name + len - DLOCK__ZK_SEQ_DIGITS;
  int64_t v = 0;
  for (size_t i = 0; i < DLOCK__ZK_SEQ_DIGITS; i++) {
    if (d[i] < '0' || d[i] > '9')
      return -1;
    v = v * 10 + (d[i] - '0');
  }
  *seq = v;
  return 0;
}

size_t dlock__zk_sort_children(const char *const *names, size_t n, dlock__zk_child *out) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (!names[i])
      continue;
    if (dlock__zk_parse_node(names[i], out[k].guid, &out[k].seq) < 0) {
      if (parse_foreign(names[i], &out[k].seq) < 0)
        continue; /* not a queue entry at all */
      out[k].guid[0] = '\0'; /* never equal to one of ours */
    }
    out[k].name = names[i];
    k++;
  }
  if (k > 1)
    qsort(out, k, sizeof *out, by_seq);
  return k;
}

long dlock__zk_find(const dlock__zk_child *kids, size_t n, const char *guid) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(kids[i].guid, guid) == 0)
      return (long)i;
  return -1;
}

long dlock__zk_predecessor(const dlock__zk_child *kids, size_t n, const char *guid) {
  long i = dlock__zk_find(kids, n, guid);
  if (i < 0)
    return -2;
  return i - 1;
}

size_t dlock__zk_node_data(const char *label, int64_t timeout_ms,
                           char out[DLOCK__ZK_DATA_MAX]) {
  size_t n = label ? strnlen(label, 127) : 0;
  if (n)
    memcpy(out, label, n);
  if (timeout_ms <= 0)
    return n;
  out[n++] = '\0';
  int d = snprintf(out + n, DLOCK__ZK_DATA_MAX - n, "%lld", (long long)timeout_ms);
  return n + (size_t)d;
}

void dlock__zk_parse_data(const char *data, size_t len, char *label, size_t labelsz,
                          int64_t *timeout_ms) {
  *timeout_ms = -1;
  if (labelsz == 0)
    return;
  const char *nul = data ? memchr(data, '\0', len) : NULL;
  size_t ll = data ? (nul ? (size_t)(nul - data) : len) : 0;
  size_t cut = ll < labelsz ? ll : labelsz - 1;
  if (cut)
    memcpy(label, data, cut);
  label[cut] = '\0';
  if (!nul)
    return;
  /* At most 18 digits: no overflow, and nothing a session could last. */
  const char *d = nul + 1, *end = data + len;
  if (d == end || end - d > 18)
    return;
  int64_t v = 0;
  for (; d < end; d++) {
    if (*d < '0' || *d > '9')
      return;
    v = v * 10 + (*d - '0');
  }
  if (v > 0)
    *timeout_ms = v;
}

int dlock__zk_connect_string(const dlock_url *url, char **out) {
  size_t nh = dlock_url_host_count(url);
  if (nh == 0)
    return dlock_seterr(DLOCK_EINVAL, "zk: the URL names no host (zk://host:port[,host:port])");
  size_t cap = 1;
  for (size_t i = 0; i < nh; i++)
    cap += strlen(dlock_url_host(url, i)) + 8;
  char *s = malloc(cap);
  if (!s)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  size_t len = 0;
  for (size_t i = 0; i < nh; i++) {
    const char *h = dlock_url_host(url, i);
    if (!h[0]) {
      free(s);
      return dlock_seterr(DLOCK_EINVAL, "zk: empty host name in the URL");
    }
    int port = dlock_url_port(url, i);
    len += (size_t)snprintf(s + len, cap - len, "%s%s:%d", i ? "," : "", h,
                            port ? port : DLOCK__ZK_DEFAULT_PORT);
  }
  *out = s;
  return 0;
}
