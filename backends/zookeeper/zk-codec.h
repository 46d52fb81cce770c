/* ZooKeeper naming for dlock: znode paths, lock node names, ordering of a
 * lock queue and the connect string.  Nothing here does I/O, so all of it is
 * unit-tested without a server.
 *
 * Layout, for root R (chroot from the URL path + ?prefix=, default
 * "/dlock") and key K:
 *   R "/" esc(K)                          the lock dir (a container node)
 *   R "/" esc(K) "/_c_" GUID "-lock-" SEQ  one acquisition's queue entry,
 *                                          ephemeral sequential, data =
 *                                          label NUL session-timeout-ms
 * esc() keeps [A-Za-z0-9_.-] and writes every other byte as %XX, so a key
 * is always exactly one path component and distinct keys give distinct
 * components; names made only of dots ("." and "..") are escaped too,
 * since ZooKeeper refuses them.
 */
#ifndef DLOCK_ZK_CODEC_H
#define DLOCK_ZK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend-util.h"
#include "dlock/zk.h"

#define DLOCK__ZK_DEFAULT_ROOT "/dlock"
#define DLOCK__ZK_DEFAULT_PORT 2181
/* Digits ZooKeeper appends to a sequential node's name. */
#define DLOCK__ZK_SEQ_DIGITS 10
/* Length of an owner GUID (bl->owner). */
#define DLOCK__ZK_GUID_LEN 32

/* Root under which lock dirs live: CHROOT ("" or NULL for none) joined with
 * PREFIX (NULL = the default).  Both must be absolute paths without empty,
 * "." or ".." components; a trailing '/' is dropped.  *out is malloc'd.
 * 0, DLOCK_EINVAL with a message, or DLOCK_ENOMEM. */
DLOCK__HIDDEN int dlock__zk_root(const char *chroot, const char *prefix, char **out);

/* esc(KEY) into OUT.  Returns the length it needs without the NUL,
 * whatever OUTSZ is (at most 3 * KEYLEN).  When OUTSZ is too small, OUT
 * gets the longest prefix of whole escapes that fits, NUL-terminated
 * right after it; OUTSZ 0 writes nothing. */
DLOCK__HIDDEN size_t dlock__zk_escape(const char *key, size_t keylen, char *out, size_t outsz);

/* The key whose esc() is NAME (a lock dir's name under the root), into
 * KEY (KEYSZ bytes of room, no NUL added), its length in *KEYLEN.  0, or
 * -1 for a name esc() writes for no key at all: an empty one, a byte esc()
 * would have escaped, an escape it would not have written (lower-case
 * hex, a byte it keeps, except in the all-dots names), or a key longer
 * than KEYSZ.  So a name decodes only to the one key that maps to it, and
 * another's node under the root is never taken for a lock. */
DLOCK__HIDDEN int dlock__zk_unescape(const char *name, char *key, size_t keysz, size_t *keylen);

/* ROOT "/" esc(KEY), malloc'd; NULL when out of memory. */
DLOCK__HIDDEN char *dlock__zk_lock_dir(const char *root, const char *key, size_t keylen);

/* DIR "/_c_" GUID "-lock-": the path handed to a sequential create. */
DLOCK__HIDDEN char *dlock__zk_node_prefix(const char *dir, const char *guid);

/* Split a queue entry's name (the last path component).  GUID gets the
 * owner (DLOCK__ZK_GUID_LEN hex digits + NUL), *SEQ the sequence number.
 * 0, or -1 for a name that is not ours. */
DLOCK__HIDDEN int dlock__zk_parse_node(const char *name, char guid[DLOCK__ZK_GUID_LEN + 1],
                                       int64_t *seq);

typedef struct dlock__zk_child {
  const char *name; /* points into the input */
  int64_t seq;
  char guid[DLOCK__ZK_GUID_LEN + 1];
} dlock__zk_child;

/* The well-formed names among NAMES[0..N), sorted by sequence number (the
 * queue order), into OUT (room for N).  Returns how many. */
DLOCK__HIDDEN size_t dlock__zk_sort_children(const char *const *names, size_t n,
                                             dlock__zk_child *out);

/* Index of GUID's entry in sorted KIDS, or -1. */
DLOCK__HIDDEN long dlock__zk_find(const dlock__zk_child *kids, size_t n, const char *guid);

/* Whom GUID waits for: the index of the entry just before it in sorted
 * KIDS; -1 when GUID is first (it holds the lock); -2 when GUID is not in
 * the queue at all. */
DLOCK__HIDDEN long dlock__zk_predecessor(const dlock__zk_child *kids, size_t n,
                                         const char *guid);

/* Room for a node's data: a label (< 128 bytes), a NUL, a decimal. */
#define DLOCK__ZK_DATA_MAX 160

/* A queue entry's data: LABEL (cut at 127 bytes), a NUL, then TIMEOUT_MS
 * in decimal when it is positive.  Dlock before this layout stored the
 * label alone, which readers of either kind still see as the label.
 * Returns the length written (no terminating NUL counted). */
DLOCK__HIDDEN size_t dlock__zk_node_data(const char *label, int64_t timeout_ms,
                                         char out[DLOCK__ZK_DATA_MAX]);

/* Split DATA[0..LEN) (a node's data, not NUL-terminated) into the label
 * (NUL-terminated in LABEL, cut to fit LABELSZ > 0) and *TIMEOUT_MS (-1
 * when absent or malformed). */
DLOCK__HIDDEN void dlock__zk_parse_data(const char *data, size_t len, char *label,
                                        size_t labelsz, int64_t *timeout_ms);

/* "h1:p1,h2:p2" from URL's hosts (port DLOCK__ZK_DEFAULT_PORT when absent),
 * malloc'd.  0, DLOCK_EINVAL with a message (no hosts), or DLOCK_ENOMEM. */
DLOCK__HIDDEN int dlock__zk_connect_string(const dlock_url *url, char **out);

#endif
