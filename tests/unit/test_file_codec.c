/* file:// key -> path mapping and lock-file records: no I/O. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/file/file-path.h"

static const char *path_of(const char *key, size_t len) {
  static char buf[PATH_MAX];
  int n = dlock__file_key_path("/d", key, len, buf, sizeof buf);
  assert_true(n > 0);
  return buf;
}

static void test_escaping(void **state) {
  (void)state;
  assert_string_equal(path_of("jobs/42", 7), "/d/jobs%2F42.lock");
  assert_string_equal(path_of("a.b", 3), "/d/a%2Eb.lock");
  assert_string_equal(path_of("..", 2), "/d/%2E%2E.lock");
  assert_string_equal(path_of("A_z-9", 5), "/d/A_z-9.lock");
  assert_string_equal(path_of("\xc3\xbc", 2), "/d/%C3%BC.lock");
  assert_string_equal(path_of("%", 1), "/d/%25.lock");
  char buf[64];
  assert_int_equal(dlock__file_key_path("/d/", "x", 1, buf, sizeof buf), 9);
  assert_string_equal(buf, "/d/x.lock");
  assert_true(dlock__file_key_path("/d", "x", 1, buf, 5) < 0);
}

static void test_long_keys_split(void **state) {
  (void)state;
  char key[512];
  memset(key, '/', sizeof key); /* every byte escapes to 3 */
  const char *p = path_of(key, sizeof key);
  /* no component longer than NAME_MAX */
  const char *c = p;
  while (*c) {
    size_t n = strcspn(c, "/");
    assert_true(n <= 255);
    c += n;
    if (*c == '/')
      c++;
  }
  assert_non_null(strstr(p, ".d/"));
  assert_true(strlen(p) < PATH_MAX);
  /* escapes are never cut across a split */
  const char *s = p;
  while ((s = strstr(s, ".d/")) != NULL) {
    assert_true(s[-3] == '%' || s[-1] != '%');
    s += 3;
  }
}

static void test_no_collisions(void **state) {
  (void)state;
  const char *keys[] = {"a/b", "a%2Fb", "a%2fb", "a.b", "a_b", "a b", "a.lock", "a.d/x",
                        "a", "a.d", "A", ".", "..", "a/b/"};
  size_t n = sizeof keys / sizeof *keys;
  char (*paths)[PATH_MAX] = calloc(n + 2, PATH_MAX);
  assert_non_null(paths);
  for (size_t i = 0; i < n; i++)
    dlock__file_key_path("/d", keys[i], strlen(keys[i]), paths[i], PATH_MAX);
  /* a key exactly one chunk long, and one a byte longer, must not turn into
   * a file and a directory of the same name */
  char k1[DLOCK__FILE_CHUNK + 1];
  memset(k1, 'x', sizeof k1);
  dlock__file_key_path("/d", k1, DLOCK__FILE_CHUNK, paths[n], PATH_MAX);
  dlock__file_key_path("/d", k1, DLOCK__FILE_CHUNK + 1, paths[n + 1], PATH_MAX);
  for (size_t i = 0; i < n + 2; i++)
    for (size_t j = i + 1; j < n + 2; j++) {
      assert_string_not_equal(paths[i], paths[j]);
      /* nor may one be a directory prefix of another */
      size_t li = strlen(paths[i]);
      assert_false(strncmp(paths[i], paths[j], li) == 0 && paths[j][li] == '/');
    }
  free(paths);
}

static void test_records(void **state) {
  (void)state;
  dlock__file_record r = {.token = 18446744073709551000ull, .pid = 4242};
  strcpy(r.owner, "0123456789abcdef0123456789abcdef");
  strcpy(r.label, "host:1\ntoken 1");
  char buf[512];
  int n = dlock__file_record_format(&r, buf, sizeof buf);
  assert_true(n > 0);
  dlock__file_record back;
  assert_int_equal(dlock__file_record_parse(buf, (size_t)n, &back), 0);
  assert_true(back.token == r.token); /* the label could not forge a token line */
  assert_string_equal(back.owner, r.owner);
  assert_int_equal(back.pid, 4242);
  assert_string_equal(back.label, "host:1 token 1");
  /* empty file = fresh counter */
  assert_int_equal(dlock__file_record_parse("", 0, &back), 0);
  assert_true(back.token == 0);
  const char *bad[] = {"garbage", "dlock-file 1\n", "dlock-file 1\ntoken -3\n",
                       "dlock-file 1\ntoken 12x\n", "dlock-file 2\ntoken 1\n",
                       "dlock-file 1\ntoken 99999999999999999999999\n",
                       /* strtoull skips blanks and then takes a sign: "  -5" read
                        * as 2^64-5, a counter that jumps to its end */
                       "dlock-file 1\ntoken  -5\n", "dlock-file 1\ntoken \t7\n",
                       "dlock-file 1\ntoken +7\n", "dlock-file 1\ntoken  0\n"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(dlock__file_record_parse(bad[i], strlen(bad[i]), &back), DLOCK_EBACKEND);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_long_keys_split),
      cmocka_unit_test(test_no_collisions),
      cmocka_unit_test(test_records),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
