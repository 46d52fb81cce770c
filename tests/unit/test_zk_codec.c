/* Unit tests for the ZooKeeper naming (no server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/zookeeper/zk-codec.h"
#include "internal.h"

#define GUID_A "0123456789abcdef0123456789abcdef"
#define GUID_B "ffffffffffffffffffffffffffffffff"
#define GUID_C "00000000000000000000000000000001"

static char *esc(const char *k) {
  static char buf[2048];
  size_t n = dlock__zk_escape(k, strlen(k), buf, sizeof buf);
  assert_int_equal(n, strlen(buf));
  return buf;
}

static void test_escape_exact(void **state) {
  (void)state;
  assert_string_equal(esc("jobs/42"), "jobs%2F42");
  assert_string_equal(esc("a.b_c-D9"), "a.b_c-D9");
  assert_string_equal(esc("a b%"), "a%20b%25");
  assert_string_equal(esc("."), "%2E");
  assert_string_equal(esc(".."), "%2E%2E");
  assert_string_equal(esc("..."), "...");
  assert_string_equal(esc("\xc3\xbc"), "%C3%BC");
  assert_string_equal(esc("zookeeper"), "zookeeper");
  /* Truncation still reports the full length and terminates. */
  char small[4];
  assert_int_equal(dlock__zk_escape("a/b", 3, small, sizeof small), 5);
  assert_string_equal(small, "a");
}

/* A buffer too small for the whole escape gets the longest prefix of whole
 * escapes, terminated right after it: never a byte left unwritten before the
 * NUL, never a byte past OUTSZ. */
static void test_escape_short_buffer(void **state) {
  (void)state;
  static const char *keys[] = {"a/b", "/ab", "ab/", "a/b/c", "..", ".", "a\xc3\xbc", "abc"};
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
    const char *key = keys[k];
    char full[64];
    size_t need = dlock__zk_escape(key, strlen(key), full, sizeof full);
    for (size_t sz = 0; sz <= need + 1; sz++) {
      char buf[64];
      memset(buf, '#', sizeof buf);
      assert_int_equal(dlock__zk_escape(key, strlen(key), buf, sz), need);
      for (size_t i = sz; i < sizeof buf; i++)
        if (buf[i] != '#')
          fail_msg("'%s' into %zu bytes wrote byte %zu", key, sz, i);
      if (sz == 0)
        continue;
      size_t got = strnlen(buf, sz);
      if (got == sz)
        fail_msg("'%s' into %zu bytes is not terminated", key, sz);
      /* A prefix of the full escape, cut only between escapes. */
      assert_memory_equal(buf, full, got);
      assert_true(got == need || full[got] == '%' || (unsigned char)full[got] < 0x80);
      assert_true(got >= need || got + 3 >= sz);
      for (size_t i = 0; i < got; i++)
        assert_true(buf[i] != '#');
    }
  }
  /* "a/b" into 4: "a" and the NUL; not "a", two stale bytes, NUL. */
  char b4[4] = {'#', '#', '#', '#'};
  dlock__zk_escape("a/b", 3, b4, sizeof b4);
  assert_string_equal(b4, "a");
}

static void test_node_data(void **state) {
  (void)state;
  char d[DLOCK__ZK_DATA_MAX], label[128];
  int64_t t = 0;
  size_t n = dlock__zk_node_data("host:42", 2000, d);
  assert_int_equal(n, 12);
  assert_memory_equal(d, "host:42\0" "2000", 12);
  dlock__zk_parse_data(d, n, label, sizeof label, &t);
  assert_string_equal(label, "host:42");
  assert_int_equal(t, 2000);
  /* The layout before the timeout was added: the label alone. */
  dlock__zk_parse_data("old label", 9, label, sizeof label, &t);
  assert_string_equal(label, "old label");
  assert_int_equal(t, -1);
  dlock__zk_parse_data(NULL, 0, label, sizeof label, &t);
  assert_string_equal(label, "");
  assert_int_equal(t, -1);
  /* A 127-byte label (the longest the core allows) and the largest ttl. */
  char lab[128];
  memset(lab, 'x', 127);
  lab[127] = '\0';
  n = dlock__zk_node_data(lab, 30LL * 24 * 3600 * 1000, d);
  assert_true(n <= sizeof d);
  dlock__zk_parse_data(d, n, label, sizeof label, &t);
  assert_string_equal(label, lab);
  assert_int_equal(t, 30LL * 24 * 3600 * 1000);
  /* No timeout: nothing after the label. */
  assert_int_equal(dlock__zk_node_data("x", 0, d), 1);
  /* Malformed or hostile tails: no timeout, no overflow. */
  static const struct {
    const char *data;
    size_t len;
  } bad[] = {
      {"x\0", 2},          {"x\0-5", 4},       {"x\0" "12a", 5},
      {"x\0" "0", 3},      {"x\0" "1\0" "2", 5}, {"x\0" "99999999999999999999", 22},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    t = 0;
    dlock__zk_parse_data(bad[i].data, bad[i].len, label, sizeof label, &t);
    assert_string_equal(label, "x");
    assert_int_equal(t, -1);
  }
  /* A label longer than the room is cut, and terminated. */
  char tiny[4];
  dlock__zk_parse_data("abcdef", 6, tiny, sizeof tiny, &t);
  assert_string_equal(tiny, "abc");
}

static void test_escape_no_collisions(void **state) {
  (void)state;
  static const char *keys[] = {"a/b", "a%2Fb", "a%2fb", "a.b", "a_b", "a-b", "a b", "A/B",
                               "a//b", "a/b/", "/a/b", ".", "..", "%2E", "%2E%2E", "a.lock",
                               "\xc3\xbc", "u\xcc\x88", "{x}", ":", "_c_", "a\\b"};
  size_t n = sizeof keys / sizeof *keys;
  char out[64][256];
  for (size_t i = 0; i < n; i++) {
    dlock__zk_escape(keys[i], strlen(keys[i]), out[i], sizeof out[i]);
    assert_null(strchr(out[i], '/'));
    assert_string_not_equal(out[i], ".");
    assert_string_not_equal(out[i], "..");
    for (size_t j = 0; j < i; j++)
      if (strcmp(out[i], out[j]) == 0)
        fail_msg("'%s' and '%s' both map to '%s'", keys[i], keys[j], out[i]);
  }
}

static void test_root(void **state) {
  (void)state;
  char *r = NULL;
  assert_int_equal(dlock__zk_root("", NULL, &r), 0);
  assert_string_equal(r, "/dlock");
  free(r);
  assert_int_equal(dlock__zk_root("/app/", "/locks/", &r), 0);
  assert_string_equal(r, "/app/locks");
  free(r);
  assert_int_equal(dlock__zk_root("/", "/x", &r), 0);
  assert_string_equal(r, "/x");
  free(r);
  r = NULL;
  assert_int_equal(dlock__zk_root("", "locks", &r), DLOCK_EINVAL);
  assert_int_equal(dlock__zk_root("", "/a//b", &r), DLOCK_EINVAL);
  assert_int_equal(dlock__zk_root("/a/../b", NULL, &r), DLOCK_EINVAL);
  assert_int_equal(dlock__zk_root("", "/", &r), DLOCK_EINVAL);
  assert_null(r);
  /* What ZooKeeper's PathUtils refuses is refused here, at open, and not
   * by the server at the first acquire. */
  static const char *bad[] = {
      "/a\x01",            "/a\x7f",          "/a\xc2\x80", "/a\xc2\x9f",  /* U+0080, U+009F */
      "/a\xed\x9f\xbf\xee\x80\x80", /* U+D7FF, then U+E000 (private use) */
      "/a\xef\xa3\xbf", /* U+F8FF */
      "/a\xef\xbf\xb0", /* U+FFF0 */
      "/a\xef\xbf\xbf", /* U+FFFF */
      "/a\xed\xa0\x80", /* an encoded surrogate */
      "/a\xc0\xaf",      /* overlong '/' */
      "/a\xf0\x9f\x94\x92", /* U+1F512: a surrogate pair in Java's UTF-16 */
      "/a\xff",           "/a\xc3",          "/./b",       "/a/..",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (dlock__zk_root("", bad[i], &r) != DLOCK_EINVAL)
      fail_msg("prefix %zu accepted", i);
    if (dlock__zk_root(bad[i], NULL, &r) != DLOCK_EINVAL)
      fail_msg("chroot %zu accepted", i);
  }
  static const char *good[] = {
      "/\xc2\xa0",       /* U+00A0 */
      "/\xed\x9f\xbf",  /* U+D7FF */
      "/\xef\xa4\x80",  /* U+F900 */
      "/\xef\xbf\xaf",  /* U+FFEF */
      "/...",           "/a.b/c-d_e",
  };
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    if (dlock__zk_root("", good[i], &r) != 0)
      fail_msg("prefix %zu refused: %s", i, dlock_client_errmsg(NULL));
    free(r);
  }
}

static void test_paths(void **state) {
  (void)state;
  char *d = dlock__zk_lock_dir("/dlock", "jobs/42", 7);
  assert_string_equal(d, "/dlock/jobs%2F42");
  char *p = dlock__zk_node_prefix(d, GUID_A);
  assert_string_equal(p, "/dlock/jobs%2F42/_c_" GUID_A "-lock-");
  free(p);
  free(d);
  /* A key with an embedded NUL-free binary tail keeps every byte. */
  d = dlock__zk_lock_dir("/r", "a\x01", 2);
  assert_string_equal(d, "/r/a%01");
  free(d);
}

static void test_parse_node(void **state) {
  (void)state;
  char g[DLOCK__ZK_GUID_LEN + 1];
  int64_t seq = -1;
  assert_int_equal(dlock__zk_parse_node("_c_" GUID_A "-lock-0000000042", g, &seq), 0);
  assert_string_equal(g, GUID_A);
  assert_int_equal(seq, 42);
  assert_int_equal(dlock__zk_parse_node("_c_" GUID_B "-lock-2147483647", g, &seq), 0);
  assert_int_equal(seq, 2147483647);
  static const char *bad[] = {
      "",
      "lock-0000000001",
      "_c_" GUID_A "-lock-000000001",       /* 9 digits */
      "_c_" GUID_A "-lock-00000000001",     /* 11 digits */
      "_c_" GUID_A "-lock--000000001",      /* wrapped counter */
      "_c_" GUID_A "-lock-00000000x1",
      "_c_0123456789ABCDEF0123456789ABCDEF-lock-0000000001", /* upper-case hex */
      "_c_0123456789abcdef0123456789abcde-lock-00000000001", /* short guid */
      "_x_" GUID_A "-lock-0000000001",
      "_c_" GUID_A "-lokc-0000000001",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (dlock__zk_parse_node(bad[i], g, &seq) == 0)
      fail_msg("'%s' parsed", bad[i]);
}

static void test_sort_and_predecessor(void **state) {
  (void)state;
  const char *names[] = {
      "_c_" GUID_B "-lock-0000000010", "garbage", "_c_" GUID_A "-lock-0000000002",
      "_c_" GUID_C "-lock-0000000009", "_c_" GUID_A "-lock-00000000zz", NULL,
  };
  dlock__zk_child kids[6];
  size_t n = dlock__zk_sort_children(names, 6, kids);
  assert_int_equal(n, 3);
  assert_int_equal(kids[0].seq, 2);
  assert_string_equal(kids[0].guid, GUID_A);
  assert_int_equal(kids[1].seq, 9);
  assert_int_equal(kids[2].seq, 10);
  assert_ptr_equal(kids[2].name, names[0]);
  assert_int_equal(dlock__zk_find(kids, n, GUID_C), 1);
  assert_int_equal(dlock__zk_predecessor(kids, n, GUID_A), -1);
  assert_int_equal(dlock__zk_predecessor(kids, n, GUID_C), 0);
  assert_int_equal(dlock__zk_predecessor(kids, n, GUID_B), 1);
  assert_int_equal(dlock__zk_predecessor(kids, n, "nope"), -2);
  /* Sequence order, not name order: 0000000100 after 0000000099. */
  const char *two[] = {"_c_" GUID_A "-lock-0000000100", "_c_" GUID_B "-lock-0000000099"};
  n = dlock__zk_sort_children(two, 2, kids);
  assert_int_equal(n, 2);
  assert_string_equal(kids[0].guid, GUID_B);
  /* Another recipe's node in our dir keeps its place in the queue. */
  const char *mixed[] = {"_c_" GUID_A "-lock-0000000007",
                         "_c_1b4e28ba-2fa1-11d2-883f-0016d3cca427-lock-0000000005"};
  n = dlock__zk_sort_children(mixed, 2, kids);
  assert_int_equal(n, 2);
  assert_string_equal(kids[0].guid, "");
  assert_int_equal(kids[0].seq, 5);
  assert_int_equal(dlock__zk_predecessor(kids, n, GUID_A), 0);
  assert_int_equal(dlock__zk_sort_children(names, 0, kids), 0);
}

static void test_connect_string(void **state) {
  (void)state;
  dlock_url *u;
  char *s = NULL;
  assert_int_equal(dlock__url_parse("zk://u:pw@h1:2182,h2,10.0.0.3:7/chroot", &u), 0);
  assert_int_equal(dlock__zk_connect_string(u, &s), 0);
  assert_string_equal(s, "h1:2182,h2:2181,10.0.0.3:7");
  assert_null(strstr(s, "pw"));
  free(s);
  dlock__url_free(u);
}

/* A lock dir's name reads back as its key, and only names esc() writes
 * read back at all: dlock_list must not take another's node for a lock. */
static void test_unescape(void **state) {
  (void)state;
  static const char *const keys[] = {"jobs/42", "a.b_c-D9", "a b%", ".", "..", "...",
                                     "\xc3\xbc", "zookeeper"};
  char key[64];
  size_t kl;
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    assert_int_equal(dlock__zk_unescape(esc(keys[i]), key, sizeof key, &kl), 0);
    assert_int_equal(kl, strlen(keys[i]));
    assert_memory_equal(key, keys[i], kl);
  }
  static const char *const foreign[] = {"", "jobs%2f42", "%61", "a+b", "%2", "%ZZ", ".", ".."};
  for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++)
    if (dlock__zk_unescape(foreign[i], key, sizeof key, &kl) != -1)
      fail_msg("'%s' read back as a key", foreign[i]);
  /* A key longer than the room is no key of this reader's. */
  assert_int_equal(dlock__zk_unescape("abcdef", key, 3, &kl), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escape_exact), cmocka_unit_test(test_escape_no_collisions),
      cmocka_unit_test(test_escape_short_buffer), cmocka_unit_test(test_node_data),
      cmocka_unit_test(test_root),         cmocka_unit_test(test_paths),
      cmocka_unit_test(test_parse_node),   cmocka_unit_test(test_sort_and_predecessor),
      cmocka_unit_test(test_connect_string), cmocka_unit_test(test_unescape),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
