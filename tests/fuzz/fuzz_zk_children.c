/* ZooKeeper child lists and node data.  The input is a list of child
 * names separated by NUL bytes (a name cannot hold one) as a lock dir's
 * listing would give them, and is also read as one node's data.  Checked:
 * the sorted queue holds exactly the names that end in a 10-digit
 * sequence number, in ascending order, each of ours carrying the GUID its
 * name spells; an entry of ours rebuilds to its own name; the predecessor
 * of each entry is the one before it; node data splits into a label that
 * fits its buffer and a timeout that is -1 or positive, and what
 * dlock__zk_node_data writes splits back into what it was made of; a
 * name that decodes to a key (a lock dir's name, as list reads it) is
 * what dlock__zk_escape writes for that key, so no two names are one
 * key. */
#include <inttypes.h>

#include "fuzz.h"

#include "backends/zookeeper/zk-codec.h"

#define MAX_KIDS 256

/* Ends in ten digits: a sequential node of any recipe. */
static int sequential(const char *name) {
  size_t n = strlen(name);
  if (n < DLOCK__ZK_SEQ_DIGITS)
    return 0;
  for (size_t i = n - DLOCK__ZK_SEQ_DIGITS; i < n; i++)
    if (name[i] < '0' || name[i] > '9')
      return 0;
  return 1;
}

static void check_children(const uint8_t *data, size_t size) {
  char *copy = fuzz_strndup(data, size);
  const char *names[MAX_KIDS];
  size_t n = 0, want = 0;
  for (size_t off = 0; off <= size && n < MAX_KIDS;) {
    names[n] = copy + off;
    want += sequential(names[n]);
    off += strlen(names[n]) + 1;
    n++;
  }
  dlock__zk_child *kids = calloc(n ? n : 1, sizeof *kids);
  if (!kids)
    abort();
  size_t k = dlock__zk_sort_children(names, n, kids);
  FUZZ_CHECK(k == want, "%zu entries sorted, %zu names are sequential", k, want);
  for (size_t i = 0; i < k; i++) {
    FUZZ_CHECK(kids[i].name >= copy && kids[i].name <= copy + size, "name not from the input");
    FUZZ_CHECK(i == 0 || kids[i - 1].seq <= kids[i].seq, "queue out of order at %zu", i);
    FUZZ_CHECK(kids[i].seq >= 0 && kids[i].seq <= INT64_C(9999999999), "seq %" PRId64,
               kids[i].seq);
    char guid[DLOCK__ZK_GUID_LEN + 1];
    int64_t seq;
    int ours = dlock__zk_parse_node(kids[i].name, guid, &seq) == 0;
    FUZZ_CHECK(ours == (kids[i].guid[0] != '\0'), "GUID of \"%s\"", kids[i].name);
    if (ours) {
      FUZZ_CHECK(seq == kids[i].seq && strcmp(guid, kids[i].guid) == 0, "entry differs");
      char *prefix = dlock__zk_node_prefix("/d", guid);
      FUZZ_CHECK(prefix, "node prefix");
      char *rebuilt = NULL;
      if (asprintf(&rebuilt, "%s%010" PRId64, prefix, seq) < 0)
        abort();
      FUZZ_CHECK(strcmp(rebuilt + 3, kids[i].name) == 0, "\"%s\" rebuilds as \"%s\"",
                 kids[i].name, rebuilt + 3);
      free(rebuilt);
      free(prefix);
      long at = dlock__zk_find(kids, k, guid);
      FUZZ_CHECK(at >= 0 && at <= (long)i && strcmp(kids[at].guid, guid) == 0, "find");
      FUZZ_CHECK(dlock__zk_predecessor(kids, k, guid) == at - 1, "predecessor");
    }
  }
  free(kids);
  free(copy);
}

static void check_dir_names(const uint8_t *data, size_t size) {
  char *copy = fuzz_strndup(data, size);
  for (size_t off = 0; off <= size;) {
    const char *name = copy + off;
    size_t nl = strlen(name);
    char key[600];
    size_t keylen = 0;
    size_t keysz = size ? 1 + data[0] % sizeof key : sizeof key;
    if (dlock__zk_unescape(name, key, keysz, &keylen) == 0) {
      FUZZ_CHECK(keylen > 0 && keylen <= keysz && keylen <= nl, "\"%s\" decodes to %zu bytes",
                 name, keylen);
      char esc[3 * sizeof key + 1];
      size_t el = dlock__zk_escape(key, keylen, esc, sizeof esc);
      FUZZ_CHECK(el == nl && strcmp(esc, name) == 0, "\"%s\" decodes to a key escaped as \"%s\"",
                 name, esc);
    }
    off += nl + 1;
  }
  free(copy);
}

static void check_data(const uint8_t *data, size_t size) {
  char *b = fuzz_memdup(data, size);
  size_t labelsz = size ? 1 + data[0] % 140 : 1;
  char label[141];
  memset(label, 'x', sizeof label);
  int64_t to = 0;
  dlock__zk_parse_data(b, size, label, labelsz, &to);
  FUZZ_CHECK(memchr(label, '\0', labelsz), "label overruns its buffer");
  for (size_t i = labelsz; i < sizeof label; i++)
    FUZZ_CHECK(label[i] == 'x', "label written past %zu bytes", labelsz);
  FUZZ_CHECK(to == -1 || to > 0, "timeout %" PRId64, to);
  FUZZ_CHECK(strlen(label) <= size && memcmp(label, b, strlen(label)) == 0,
             "label is not the data's start");

  /* written and read back */
  char out[DLOCK__ZK_DATA_MAX];
  char *lab = fuzz_strndup(data, size);
  int64_t want = to > 0 ? to : (int64_t)size * 1000;
  size_t n = dlock__zk_node_data(lab, want, out);
  FUZZ_CHECK(n <= DLOCK__ZK_DATA_MAX, "node data %zu bytes", n);
  char back[128];
  int64_t got = 0;
  dlock__zk_parse_data(out, n, back, sizeof back, &got);
  size_t ll = strlen(lab) < 127 ? strlen(lab) : 127;
  FUZZ_CHECK(strlen(back) == ll && memcmp(back, lab, ll) == 0, "label round trip");
  FUZZ_CHECK(got == (want > 0 ? want : -1), "timeout %" PRId64 " read back as %" PRId64, want,
             got);
  free(lab);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_children(data, size);
  check_dir_names(data, size);
  check_data(data, size);
  return 0;
}
