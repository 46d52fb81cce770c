/* URL parsing, redaction, durations and parameters: no servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static dlock_url *parse_ok(const char *s) {
  dlock_url *u = NULL;
  int rc = dlock__url_parse(s, &u);
  if (rc != 0)
    fail_msg("parse(%s) = %d: %s", s, rc, dlock_client_errmsg(NULL));
  return u;
}

static void parse_bad(const char *s, const char *mention) {
  dlock_url *u = (dlock_url *)0x1;
  int rc = dlock__url_parse(s, &u);
  if (rc != DLOCK_EINVAL)
    fail_msg("parse(%s) = %d, want DLOCK_EINVAL", s ? s : "(null)", rc);
  assert_ptr_equal(u, (dlock_url *)0x1);
  if (mention && !strstr(dlock_client_errmsg(NULL), mention))
    fail_msg("'%s' does not mention '%s'", dlock_client_errmsg(NULL), mention);
  assert_null(strstr(dlock_client_errmsg(NULL), "hunter2"));
  assert_null(strstr(dlock_client_errmsg(NULL), "ter2"));
}

static void test_redis_url(void **state) {
  (void)state;
  dlock_url *u = parse_ok("redis://alice:p%40ss@127.0.0.1:6390/2?ttl=15s&prefix=app%3A");
  assert_string_equal(dlock_url_scheme(u), "redis");
  assert_string_equal(dlock_url_user(u), "alice");
  assert_string_equal(dlock_url_password(u), "p@ss");
  assert_int_equal(dlock_url_host_count(u), 1);
  assert_string_equal(dlock_url_host(u, 0), "127.0.0.1");
  assert_int_equal(dlock_url_port(u, 0), 6390);
  assert_string_equal(dlock_url_path(u), "/2");
  const char *v;
  assert_int_equal(dlock_url_param(u, "prefix", &v), 1);
  assert_string_equal(v, "app:");
  /* ttl was never read */
  assert_int_equal(dlock__url_check_unused(u), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "'ttl'"));
  int64_t ms;
  assert_int_equal(dlock_url_param_duration(u, "ttl", 1, &ms), 0);
  assert_int_equal(ms, 15000);
  assert_int_equal(dlock__url_check_unused(u), 0);
  assert_null(strstr(dlock_url_redacted(u), "p%40ss"));
  assert_non_null(strstr(dlock_url_redacted(u), "alice:***@"));
  dlock__url_free(u);
}

static void test_multi_host(void **state) {
  (void)state;
  dlock_url *u = parse_ok("zk://h1:2181,h2:2182,[::1]:2183/chroot/x");
  assert_int_equal(dlock_url_host_count(u), 3);
  assert_string_equal(dlock_url_host(u, 0), "h1");
  assert_int_equal(dlock_url_port(u, 0), 2181);
  assert_string_equal(dlock_url_host(u, 1), "h2");
  assert_int_equal(dlock_url_port(u, 1), 2182);
  assert_string_equal(dlock_url_host(u, 2), "[::1]");
  assert_int_equal(dlock_url_port(u, 2), 2183);
  assert_string_equal(dlock_url_path(u), "/chroot/x");
  assert_null(dlock_url_host(u, 3));
  dlock__url_free(u);
}

static void test_file_and_mem(void **state) {
  (void)state;
  dlock_url *u = parse_ok("file:///var/lib/dlock?sync=false");
  assert_string_equal(dlock_url_scheme(u), "file");
  assert_int_equal(dlock_url_host_count(u), 0);
  assert_string_equal(dlock_url_path(u), "/var/lib/dlock");
  int b = 1;
  assert_int_equal(dlock_url_param_bool(u, "sync", 1, &b), 0);
  assert_int_equal(b, 0);
  dlock__url_free(u);
  u = parse_ok("redis+unix:///var/run/redis/redis.sock?db=2");
  assert_int_equal(dlock_url_host_count(u), 0);
  assert_string_equal(dlock_url_path(u), "/var/run/redis/redis.sock");
  dlock__url_free(u);
  u = parse_ok("redis+unix://:pw@/tmp/x.sock");
  assert_int_equal(dlock_url_host_count(u), 0);
  assert_string_equal(dlock_url_password(u), "pw");
  assert_string_equal(dlock_url_path(u), "/tmp/x.sock");
  dlock__url_free(u);
  u = parse_ok("file://localhost/srv/locks");
  assert_int_equal(dlock_url_host_count(u), 0);
  assert_string_equal(dlock_url_path(u), "/srv/locks");
  dlock__url_free(u);
  u = parse_ok("mem://");
  assert_int_equal(dlock_url_host_count(u), 0);
  assert_string_equal(dlock_url_path(u), "");
  dlock__url_free(u);
  u = parse_ok("MEM://ns");
  assert_string_equal(dlock_url_scheme(u), "mem");
  assert_string_equal(dlock_url_host(u, 0), "ns");
  dlock__url_free(u);
}

static void test_bad_urls(void **state) {
  (void)state;
  parse_bad(NULL, NULL);
  parse_bad("", "empty");
  parse_bad("redis:/x", "scheme://");
  parse_bad("://x", NULL);
  parse_bad("1redis://x", "scheme");
  parse_bad("redis://h:99999", "port");
  parse_bad("redis://u:hunter2@h:99999", "port");
  parse_bad("redis://u:hun#ter2@h", NULL);
  parse_bad("redis://u:hun/ter2@h:1", NULL);
  parse_bad("redis:/u:hunter2@h", NULL);
  parse_bad("redis://h1:1,,h2:2", "empty host");
  parse_bad("redis://,h2:2", "empty host");
  parse_bad("redis://h?a=1&a=2", "twice");
  parse_bad("redis://h?=1", "empty parameter");
  parse_bad("redis://h/x#frag", "fragment");
  parse_bad("redis://h/x y", "space");
  parse_bad("redis://h/\x01", NULL);
  parse_bad("redis://h?a=%00", "percent");
  char big[9000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  memcpy(big, "redis://", 8);
  parse_bad(big, "longer");
}

static void test_redact(void **state) {
  (void)state;
  char buf[256];
  int n = dlock_url_redact("redis://u:hunter2@h:1/0?token=abc&ttl=1s&Password=x", buf,
                           sizeof buf);
  assert_string_equal(buf, "redis://u:***@h:1/0?token=***&ttl=1s&Password=***");
  assert_int_equal(n, (int)strlen(buf));
  dlock_url_redact("redis://u@h/0", buf, sizeof buf);
  assert_string_equal(buf, "redis://u@h/0");
  dlock_url_redact("not a url:hunter2@x", buf, sizeof buf);
  assert_string_equal(buf, "not a url:hunter2@x"); /* no authority: nothing to hide */
  dlock_url_redact("etcd://a:b@h1:1,h2:2/?x=1", buf, sizeof buf);
  assert_string_equal(buf, "etcd://a:***@h1:1,h2:2/?x=1");
  /* Truncation reports the full length and stays terminated. */
  char small[8];
  n = dlock_url_redact("redis://u:pw@host", small, sizeof small);
  assert_int_equal(n, (int)strlen("redis://u:***@host"));
  assert_int_equal(strlen(small), 7);
  assert_int_equal(dlock_url_redact(NULL, buf, sizeof buf), DLOCK_EINVAL);
  /* passwords with characters that end an authority, or no "://" at all */
  const char *leaky[] = {
      "redis://user:hun#ter2@h/0", "redis://user:hun/ter2@h/0", "redis://user:hun?ter2@h/0",
      "redis:/user:hunter2@h",    "redis://h/0?passwd=hunter2", "redis://h/0?pass%77ord=hunter2",
      "redis://h/0?api_KEY=hunter2&x=1", "redis://u:hunter2@h1:1,h2:2/0",
  };
  for (size_t i = 0; i < sizeof leaky / sizeof *leaky; i++) {
    dlock_url_redact(leaky[i], buf, sizeof buf);
    if (strstr(buf, "ter2"))
      fail_msg("redact(%s) = %s", leaky[i], buf);
  }
  dlock_url_redact("redis://user:pa/ss@h/0", buf, sizeof buf);
  assert_string_equal(buf, "redis://user:***@h/0");
  dlock_url_redact("redis://h:1/0?ttl=1s&api_KEY=x", buf, sizeof buf);
  assert_string_equal(buf, "redis://h:1/0?ttl=1s&api_KEY=***");
}

static void test_durations(void **state) {
  (void)state;
  struct {
    const char *s;
    int64_t ms;
  } ok[] = {{"15s", 15000}, {"250ms", 250}, {"2m", 120000}, {"1.5s", 1500},
            {"10", 10},     {"0", 0},       {"1h", 3600000}};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    int64_t ms = -1;
    assert_int_equal(dlock__parse_duration(ok[i].s, &ms), 0);
    assert_int_equal(ms, ok[i].ms);
  }
  const char *bad[] = {"", "-1s", "abc", "5x", "5 s", "nan", "1e300s", "s"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int64_t ms = 0;
    if (dlock__parse_duration(bad[i], &ms) != DLOCK_EINVAL)
      fail_msg("'%s' accepted", bad[i]);
  }
}

static void test_params(void **state) {
  (void)state;
  dlock_url *u = parse_ok("mem://?n=5&big=99&b=maybe&d=7q&empty=");
  long long n;
  assert_int_equal(dlock_url_param_int(u, "n", 0, 1, 10, &n), 0);
  assert_int_equal(n, 5);
  assert_int_equal(dlock_url_param_int(u, "big", 0, 1, 10, &n), DLOCK_EINVAL);
  assert_int_equal(dlock_url_param_int(u, "absent", 7, 1, 10, &n), 0);
  assert_int_equal(n, 7);
  int b;
  assert_int_equal(dlock_url_param_bool(u, "b", 0, &b), DLOCK_EINVAL);
  int64_t ms;
  assert_int_equal(dlock_url_param_duration(u, "d", 0, &ms), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "d='7q'"));
  const char *v;
  assert_int_equal(dlock_url_param(u, "empty", &v), 1);
  assert_string_equal(v, "");
  assert_int_equal(dlock__url_check_unused(u), 0);
  dlock__url_free(u);
}

/* Random passwords drawn from every byte a URL can carry, and random junk
 * URLs: redaction never shows the password, the parser never crashes, and
 * anything it accepts round-trips its password exactly. */
static void test_random_passwords(void **state) {
  (void)state;
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                 "-._~!$&'()*+,;=:/?#[]@%";
  unsigned seed = 12345;
  char pw[40], url[200], buf[400];
  for (int iter = 0; iter < 20000; iter++) {
    int n = 6 + (int)(rand_r(&seed) % 24);
    for (int i = 0; i < n; i++)
      pw[i] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
    pw[n] = '\0';
    /* a marker no URL syntax can produce keeps the check exact */
    memcpy(pw, "Zq9", 3);
    snprintf(url, sizeof url, "redis://user:%s@host:1/0?ttl=1s", pw);
    dlock_url_redact(url, buf, sizeof buf);
    if (strstr(buf, "Zq9"))
      fail_msg("redact(%s) = %s", url, buf);
    dlock_url *u = NULL;
    if (dlock__url_parse(url, &u) == 0) {
      assert_null(strstr(dlock_url_redacted(u), "Zq9"));
      dlock__url_free(u);
    } else {
      assert_null(strstr(dlock_client_errmsg(NULL), "Zq9"));
    }
    /* junk: random bytes after a scheme */
    int m = (int)(rand_r(&seed) % 60);
    memcpy(url, "zk://", 5);
    for (int i = 0; i < m; i++)
      url[5 + i] = (char)(1 + rand_r(&seed) % 255);
    url[5 + m] = '\0';
    if (dlock__url_parse(url, &u) == 0)
      dlock__url_free(u);
    dlock_url_redact(url, buf, sizeof buf);
  }
  /* percent-encoded passwords come back decoded */
  dlock_url *u = NULL;
  assert_int_equal(dlock__url_parse("redis://u:a%40b%2Fc%3Fd@h:1", &u), 0);
  assert_string_equal(dlock_url_password(u), "a@b/c?d");
  dlock__url_free(u);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_redis_url), cmocka_unit_test(test_multi_host),
      cmocka_unit_test(test_file_and_mem), cmocka_unit_test(test_bad_urls),
      cmocka_unit_test(test_redact),    cmocka_unit_test(test_durations),
      cmocka_unit_test(test_params),    cmocka_unit_test(test_random_passwords),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
