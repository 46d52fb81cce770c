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
            {"10", 10},     {"0", 0},       {"1h", 3600000}, {".5s", 500},
            {"0.0005s", 1}, {"3200000000000", 3200000000000}};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    int64_t ms = -1;
    assert_int_equal(dlock__parse_duration(ok[i].s, &ms), 0);
    assert_int_equal(ms, ok[i].ms);
  }
  const char *bad[] = {"",       "-1s",   "abc",  "5x",    "5 s",   "nan",  "1e300s", "s",
                       "0x10",   "0X1p4", "1e3",  "1E3s",  "+5s",   " 5s",  "5s ",    "inf",
                       "infinity", "5.",  ".",    "1..2s", "5ss",   "5S",   "5\n",
                       "99999999999999999999", "3200000000001", "900000h"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int64_t ms = 0;
    if (dlock__parse_duration(bad[i], &ms) != DLOCK_EINVAL)
      fail_msg("'%s' accepted", bad[i]);
  }
  /* The command line's reading: a bare number is seconds. */
  int64_t ms = 0;
  assert_int_equal(dlock__duration_parse("15", 1000, &ms), 0);
  assert_int_equal(ms, 15000);
  assert_int_equal(dlock__duration_parse("0x10", 1000, &ms), DLOCK_EINVAL);
  /* ?ttl=0x10 is refused, not read as 16 ms. */
  dlock_client *c;
  assert_int_equal(dlock_open("mem://?ttl=0x10", &c), DLOCK_EINVAL);
  assert_int_equal(dlock_open("mem://?ttl=1e4", &c), DLOCK_EINVAL);
}

/* The public reading is the internal one: the same answers, a message on
 * failure, and *ms left alone then. */
static void test_duration_public(void **state) {
  (void)state;
  const char *in[] = {"15", "15s", "1.5", "250ms", ".5m", "0", "3200000000", "3200000001",
                      "0x10", "-1", "", "5 s"};
  for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
    int64_t want = -1, got = -1;
    int rc = dlock__duration_parse(in[i], 1000, &want);
    assert_int_equal(dlock_duration_parse(in[i], 1000, &got), rc);
    assert_int_equal(got, want);
    if (rc < 0)
      assert_non_null(strstr(dlock_client_errmsg(NULL), "invalid duration"));
  }
  int64_t ms = 7;
  assert_int_equal(dlock_duration_parse("15", 1, &ms), 0);
  assert_int_equal(ms, 15);
  assert_int_equal(dlock_duration_parse("1h", 1000, &ms), 0);
  assert_int_equal(ms, 3600000);
  assert_int_equal(dlock_duration_parse("3200000000000", 1, &ms), 0);
  assert_int_equal(ms, DLOCK_DURATION_MAX_MS);
  ms = 7;
  int64_t bare[] = {0, -1, INT64_MIN, DLOCK_DURATION_MAX_MS + 1};
  for (size_t i = 0; i < sizeof bare / sizeof *bare; i++)
    assert_int_equal(dlock_duration_parse("1", bare[i], &ms), DLOCK_EINVAL);
  assert_int_equal(dlock_duration_parse(NULL, 1, &ms), DLOCK_EINVAL);
  assert_int_equal(ms, 7);
  assert_int_equal(dlock_duration_parse("1s", 1, NULL), DLOCK_EINVAL);
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

/* The redactor and the parser used to cut a URL in different places: the
 * redactor took the last '@' of the whole string for the end of the
 * userinfo, the parser the last '@' of the authority.  An '@' in a query
 * value then made the redactor hide the wrong part and show a secret
 * parameter, or the tail of one. */
static void test_redact_at_in_query(void **state) {
  (void)state;
  char buf[256];
  struct {
    const char *in, *out;
  } cases[] = {
      {"etcd://h:2379/?prefix=team@x&password=hunter2", "etcd://h:2379/?prefix=team@x&password=***"},
      {"redis://h?passwd=user:hunter2@x", "redis://h?passwd=***"},
      {"redis://h?passwd=user:hunter2@x&ttl=1s", "redis://h?passwd=***&ttl=1s"},
      {"redis://u:pw@h/0?prefix=a@b&token=hunter2", "redis://u:***@h/0?prefix=a@b&token=***"},
      {"zk://h:2181/chroot@x?secret=hunter2", "zk://h:2181/chroot@x?secret=***"},
      {"redis://u:hun%40ter2@h:1/0?x=a@b", "redis://u:***@h:1/0?x=a@b"},
      {"redis://u:a@b@h:1", "redis://u:***@h:1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int n = dlock_url_redact(cases[i].in, buf, sizeof buf);
    if (strcmp(buf, cases[i].out) != 0)
      fail_msg("redact(%s) = %s, want %s", cases[i].in, buf, cases[i].out);
    assert_int_equal(n, (int)strlen(cases[i].out));
    dlock_url *u = parse_ok(cases[i].in);
    assert_string_equal(dlock_url_redacted(u), cases[i].out);
    dlock__url_free(u);
  }
  /* and the parser reads them the same way */
  dlock_url *u = parse_ok("etcd://h:2379/?prefix=team@x&password=hunter2");
  assert_null(dlock_url_user(u));
  assert_string_equal(dlock_url_host(u, 0), "h");
  assert_int_equal(dlock_url_port(u, 0), 2379);
  const char *v;
  assert_int_equal(dlock_url_param(u, "prefix", &v), 1);
  assert_string_equal(v, "team@x");
  dlock__url_free(u);
  u = parse_ok("redis://u:a@b@h:1");
  assert_string_equal(dlock_url_password(u), "a@b");
  assert_string_equal(dlock_url_host(u, 0), "h");
  dlock__url_free(u);
}

/* A URL that does not parse is redacted loosely, and there the first ':'
 * and the last '@' were taken for the userinfo wherever they stood: with
 * both inside the query, what came before the ':' (the start of a secret
 * value) and everything after the '@' (later values) were shown. */
static void test_redact_loose_query(void **state) {
  (void)state;
  char buf[256];
  struct {
    const char *in, *out;
  } cases[] = {
      /* %zz keeps each from parsing */
      {"redis://h/?token=hunter22:x@y&z=%zz", "redis://h/?token=***:***@***&z=***"},
      {"redis://h/?a=1:x@y&token=hunter22&z=%zz", "redis://h/?a=***:***@***&token=***&z=***"},
      {"redis://h?to:ken=hunter22@x&pw=hunter22%zz", "redis://h?to:***@***&pw=***"},
      /* a '?' in the user name still leaves the password hidden */
      {"redis://u?x:hunter22@h/0%zz", "redis://u?x:***@***"},
      {"redis://u:pa?ss@h/0?token=hunter22%zz", "redis://u:***@***"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int n = dlock_url_redact(cases[i].in, buf, sizeof buf);
    if (strcmp(buf, cases[i].out) != 0)
      fail_msg("redact(%s) = %s, want %s", cases[i].in, buf, cases[i].out);
    assert_int_equal(n, (int)strlen(cases[i].out));
    assert_null(strstr(buf, "hunter"));
  }
}

/* Secret parameters are recognised by their decoded name, and a name
 * that does not decode to printable text is refused without quoting the
 * value. */
static void test_secret_names_decoded(void **state) {
  (void)state;
  char buf[256];
  const char *masked[] = {
      "redis://h?pass%77ord=hunter2", "redis://h?%70assword=hunter2", "redis://h?PassWord=hunter2",
      "redis://h?sslpassword=hunter2", "redis://h?token=hunter2",      "redis://h?x_Secret=hunter2",
      "redis://h?passfile=hunter2",   "redis://h?api%5Fkey=hunter2",  "redis://h?%74oken=hunter2",
  };
  for (size_t i = 0; i < sizeof masked / sizeof *masked; i++) {
    dlock_url_redact(masked[i], buf, sizeof buf);
    if (strstr(buf, "hunter2") || !strstr(buf, "=***"))
      fail_msg("redact(%s) = %s", masked[i], buf);
    dlock_url *u = parse_ok(masked[i]);
    assert_null(strstr(dlock_url_redacted(u), "hunter2"));
    dlock__url_free(u);
  }
  const char *refused[] = {
      "redis://h?%00password=hunter2", "redis://h?pass%00word=hunter2",
      "redis://h?%0Apassword=hunter2", "redis://h?password%7F=hunter2",
      "redis://h?%zzpassword=hunter2", "redis://h?password%=hunter2",
      "redis://h?x=1&%00token=hunter2&y=2",
  };
  for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
    parse_bad(refused[i], "parameter name");
    dlock_url_redact(refused[i], buf, sizeof buf);
    if (strstr(buf, "hunter2"))
      fail_msg("redact(%s) = %s", refused[i], buf);
  }
  /* The value of a secret parameter is not quoted when it is malformed. */
  dlock__clear_err();
  dlock_url *u = parse_ok("redis://h?token=hunter2&api_key=hunter2x&ttl=1s");
  long long n;
  assert_int_equal(dlock_url_param_int(u, "token", 0, 0, 10, &n), DLOCK_EINVAL);
  assert_null(strstr(dlock_client_errmsg(NULL), "hunter2"));
  int64_t ms;
  assert_int_equal(dlock_url_param_duration(u, "api_key", 0, &ms), DLOCK_EINVAL);
  assert_null(strstr(dlock_client_errmsg(NULL), "hunter2"));
  int b;
  assert_int_equal(dlock_url_param_bool(u, "token", 0, &b), DLOCK_EINVAL);
  assert_null(strstr(dlock_client_errmsg(NULL), "hunter2"));
  dlock__url_free(u);
}

/* A part that does not decode is an error, not a part left out: the
 * client would have connected without AUTH, to db 0 or outside its
 * chroot.  The message names the part, never its value. */
static void test_undecodable_parts(void **state) {
  (void)state;
  struct {
    const char *url, *mention;
  } cases[] = {
      {"redis://:pa%0Ahunter2@h", "password"},
      {"redis://u:p%zzhunter2@h", "password"},
      {"redis://u:hunter2%@h", "password"},
      {"redis://u:hunter2%4@h", "password"},
      {"redis://u:hunter2%00x@h", "password"},
      {"redis://u%0A:hunter2@h", "user name"},
      {"redis://u%zz:hunter2@h", "user name"},
      {"redis://h/%01", "path"},
      {"redis://h/1%zz", "path"},
      {"zk://u:hunter2@h:2181/chroot%01x", "path"},
      {"zk://h:2181/chroot%1Fx", "path"},
      {"redis://h%0A:1", "host 1"},
      {"redis://h%zz:1", "host 1"},
      {"zk://h1,h%00:2", "host 2"},
      {"redis://h?prefix=%0A", "parameter 'prefix'"},
      {"redis://h?prefix=100%", "parameter 'prefix'"},
      {"redis://h?token=hunter2%0A", "parameter 'token'"},
      {"redis://h?token=hunter2%zz", "parameter 'token'"},
      {"postgres://dlock:p%zzhunter2@127.0.0.1:1/dlock", "password"},
  };
  char buf[256];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    parse_bad(cases[i].url, cases[i].mention);
    dlock_url_redact(cases[i].url, buf, sizeof buf);
    if (strstr(buf, "ter2"))
      fail_msg("redact(%s) = %s", cases[i].url, buf);
  }
  /* The same through dlock_open: refused before any connection. */
  const char *opened[] = {
      "redis://:pa%0Ass@127.0.0.1:1",
      "redis://127.0.0.1:1/%01",
      "zk://127.0.0.1:1/chroot%01?connect_timeout=100ms&timeout=200ms",
      "postgres://dlock:p%zzhunter2@127.0.0.1:1/dlock",
      "mem://ns/%0A",
  };
  for (size_t i = 0; i < sizeof opened / sizeof *opened; i++) {
    dlock_client *c = (dlock_client *)0x1;
    int rc = dlock_open(opened[i], &c);
    if (rc != DLOCK_EINVAL)
      fail_msg("open(%s) = %s: %s", opened[i], dlock_err_name(rc), dlock_client_errmsg(NULL));
    assert_ptr_equal(c, (dlock_client *)0x1);
    assert_null(strstr(dlock_client_errmsg(NULL), "ter2"));
    assert_null(strstr(dlock_client_errmsg(NULL), "pa%0Ass"));
  }
  /* Well-formed escapes still decode. */
  dlock_url *u = parse_ok("zk://u:p%25%20w@h:2181/a%2Fb%C3%A9?prefix=x%26y");
  assert_string_equal(dlock_url_password(u), "p% w");
  assert_string_equal(dlock_url_path(u), "/a/b\xc3\xa9");
  const char *v;
  assert_int_equal(dlock_url_param(u, "prefix", &v), 1);
  assert_string_equal(v, "x&y");
  dlock__url_free(u);
}

/* dlock__err_scrub() hides the URL's secrets in whatever message a store
 * library produced, in every form the URL carried them. */
static void test_err_scrub(void **state) {
  (void)state;
  dlock_url *u = parse_ok("postgres://dlock:hun%40ter2@h/db?sslpassword=k%2By&mode=lease");
  dlock_seterr(DLOCK_ECONN, "a hun%%40ter2 b hun@ter2 c hun%%40ter2hun@ter2 d k%%2By e k+y f "
               "k%%2By g dlock mode=lease");
  dlock__err_scrub(u);
  assert_string_equal(dlock_client_errmsg(NULL),
                      "a *** b *** c ****** d *** e *** f *** g dlock mode=lease");
  /* Nothing to hide: the message stays as it is. */
  dlock_seterr(DLOCK_ECONN, "k+y hun@ter2");
  dlock_url *plain = parse_ok("postgres://dlock@h/db?mode=lease");
  dlock__err_scrub(plain);
  assert_string_equal(dlock_client_errmsg(NULL), "k+y hun@ter2");
  dlock__url_free(plain);
  dlock__err_scrub(NULL);
  assert_string_equal(dlock_client_errmsg(NULL), "k+y hun@ter2");
  /* A message cut to fit may end in the first bytes of a secret. */
  char fill[600];
  memset(fill, 'x', sizeof fill);
  fill[511 - 5] = '\0';
  dlock_seterr(DLOCK_ECONN, "%s hun@ter2 and more", fill);
  assert_int_equal(strlen(dlock_client_errmsg(NULL)), 511);
  assert_non_null(strstr(dlock_client_errmsg(NULL), " hun@"));
  dlock__err_scrub(u);
  assert_null(strstr(dlock_client_errmsg(NULL), "hun@"));
  assert_non_null(strstr(dlock_client_errmsg(NULL), "x ***"));
  /* The cut end is the start of one secret and ends in the first bytes of
   * another ("hu" of hun%40x inside zzhu...): all of it goes. */
  dlock_url *two = parse_ok("postgres://dlock:hun%40x@h/db?sslpassword=zzhun");
  dlock_seterr(DLOCK_ECONN, "%s zzhun and more", fill);
  dlock__err_scrub(two);
  assert_null(strstr(dlock_client_errmsg(NULL), "zz"));
  assert_non_null(strstr(dlock_client_errmsg(NULL), "x ***"));
  dlock__url_free(two);
  /* A short secret inside the cut start of a longer one ("cd" in abcd...
   * of abcdefgh) is no reason to leave the rest of it. */
  dlock_url *inner = parse_ok("postgres://dlock:cd@h/db?sslpassword=abcdefgh");
  dlock_seterr(DLOCK_ECONN, "%s abcdefgh and more", fill);
  dlock__err_scrub(inner);
  assert_null(strstr(dlock_client_errmsg(NULL), " ab"));
  assert_non_null(strstr(dlock_client_errmsg(NULL), "x ***"));
  /* Occurrences inside others hide every byte of each, one "***" apiece. */
  dlock_seterr(DLOCK_ECONN, "[abcdefghcd]");
  dlock__err_scrub(inner);
  assert_string_equal(dlock_client_errmsg(NULL), "[*********]");
  dlock__url_free(inner);
  /* "***" beside the text must not spell a secret that has a '*'. */
  dlock_url *star = parse_ok("postgres://dlock:ab%2A@h/db?sslpassword=zz");
  dlock_seterr(DLOCK_ECONN, "abzz");
  dlock__err_scrub(star);
  assert_null(strstr(dlock_client_errmsg(NULL), "ab*"));
  dlock__url_free(star);
  /* ... but one that fitted is left alone. */
  dlock_seterr(DLOCK_ECONN, "ends with hun");
  dlock__err_scrub(u);
  assert_string_equal(dlock_client_errmsg(NULL), "ends with hun");
  /* Short secrets cost readability, never secrecy; the result fits. */
  dlock_url *tiny = parse_ok("redis://:e@h");
  memset(fill, 'e', sizeof fill);
  fill[sizeof fill - 1] = '\0';
  dlock_seterr(DLOCK_ECONN, "%s", fill);
  dlock__err_scrub(tiny);
  assert_null(strchr(dlock_client_errmsg(NULL), 'e'));
  assert_int_equal(strlen(dlock_client_errmsg(NULL)), 511);
  dlock__url_free(tiny);
  dlock__url_free(u);
}

/* libpq, handed the caller's URL, quoted its pieces back: a password it
 * could not decode, or a value it rejected.  Neither reaches the caller;
 * no server is needed for libpq to fail this way. */
static void test_pg_messages_hide_secrets(void **state) {
  (void)state;
  const char *urls[] = {
      /* refused by the core before libpq sees it */
      "postgres://dlock:p%zzS3CRETPW@127.0.0.1:1/dlock",
      /* libpq: invalid integer value "S3CRETPW" for connection option "port" */
      "postgres://dlock:S3CRETPW@127.0.0.1:1/dlock?port=S3CRETPW",
      /* libpq: invalid URI query parameter: "S3CRETPW" */
      "postgres://dlock:S3CRETPW@127.0.0.1:1/dlock?S3CRETPW=1",
      /* libpq: invalid sslmode value: "S3CRETPW" */
      "postgres://dlock@127.0.0.1:1/dlock?sslmode=S3CRETPW&sslpassword=S3CRETPW",
      /* libpq split at the first '@': host "S3CRETPW@127.0.0.1" */
      "postgres://dlock:x@S3CRETPW@127.0.0.1:1/dlock?connect_timeout=200ms",
  };
  for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
    dlock_client *c = NULL;
    int rc = dlock_open(urls[i], &c);
    if (rc == 0)
      dlock_close(c);
    assert_true(rc < 0);
    if (strstr(dlock_client_errmsg(NULL), "S3CRETPW"))
      fail_msg("open(%s): %s", urls[i], dlock_client_errmsg(NULL));
  }
}

/* Many URL shapes, each carrying one secret (written plainly or
 * percent-encoded), on every scheme: neither the redacted URL nor any
 * message dlock_open gives shows the secret or a piece of it (a secret
 * starts with Zq9 and ends with Kx7, which no message contains otherwise).
 * The stores are unreachable (port 1), so every open fails somewhere. */
static void test_secret_sweep(void **state) {
  (void)state;
  static const char *const schemes[] = {"redis", "zk", "postgres", "etcd", "consul",
                                        "file",  "mem", "nosuch"};
  static const char *const secrets[] = {"Zq9s3cr3tKx7", "Zq9%40s%3A3%2Fcr%3F3t%26Kx7",
                                        "Zq9%25%2B%23Kx7"};
  /* %1$s scheme, %2$s secret */
  static const char *const shapes[] = {
      "%1$s://user:%2$s@127.0.0.1:1/0?connect_timeout=100ms&timeout=200ms",
      "%1$s://user:%2$s@127.0.0.1:1/0?connect_timeout=100ms&timeout=200ms&bogus=1",
      "%1$s://:%2$s@127.0.0.1:1?connect_timeout=100ms&timeout=200ms",
      "%1$s://user:%2$s@[::1]:1/?connect_timeout=100ms&timeout=200ms",
      "%1$s://user:%2$s@127.0.0.1:1,127.0.0.1:2/x?connect_timeout=100ms&timeout=200ms",
      "%1$s://user:%2$s@127.0.0.1:99999",
      "%1$s://user:%2$s@127.0.0.1:1,,h",
      "%1$s://user:%2$s@127.0.0.1:1/x#frag",
      "%1$s://user:%2$s@127.0.0.1:1/%%01",
      "%1$s://user:%2$s@127.0.0.1:1/?ttl=bogus",
      "%1$s://user:%2$s@127.0.0.1:1/?ttl=1s&ttl=2s",
      "%1$s://user:%2$s%%zz@127.0.0.1:1",
      "%1$s://user:%2$s%%0A@127.0.0.1:1",
      "%1$s://user:%2$s@@127.0.0.1:1",
      "%1$s://user:%2$s@x@127.0.0.1:1?connect_timeout=100ms&timeout=200ms",
      "%1$s://user:%2$s/x@127.0.0.1:1",
      "%1$s://user:%2$s?x@127.0.0.1:1",
      "%1$s://user:%2$s#x@127.0.0.1:1",
      "%1$s:/user:%2$s@127.0.0.1:1",
      "%1$s:user:%2$s@127.0.0.1:1",
      "%1$s://127.0.0.1:1/?password=%2$s&connect_timeout=100ms&timeout=200ms",
      "%1$s://127.0.0.1:1?token=%2$s&connect_timeout=100ms&timeout=200ms",
      "%1$s://127.0.0.1:1/?secret=%2$s&ttl=bogus",
      "%1$s://127.0.0.1:1/?sslpassword=%2$s&bogus=1&connect_timeout=100ms&timeout=200ms",
      "%1$s://127.0.0.1:1/?pass%%77ord=%2$s",
      "%1$s://127.0.0.1:1/?%%00password=%2$s",
      "%1$s://127.0.0.1:1/?PassWord=%2$s&x=%%zz",
      "%1$s://127.0.0.1:1/?api_key=%2$s&token=%2$s",
      "%1$s://127.0.0.1:1/?prefix=team@x&password=%2$s&connect_timeout=100ms&timeout=200ms",
      "%1$s://127.0.0.1:1?passwd=user:%2$s@x&connect_timeout=100ms&timeout=200ms",
      "%1$s://127.0.0.1:99999?passwd=user:%2$s@x",
      "%1$s://127.0.0.1:1/?password=%2$s&password=%2$s",
      "%1$s://127.0.0.1:1/?token=%2$s%%0A",
      "%1$s://127.0.0.1:1/?token=%2$s&=1",
      "%1$s://u:%2$s@127.0.0.1:1/?token=%2$s&sslmode=bogus&connect_timeout=100ms&timeout=200ms",
  };
  char url[512], buf[1024];
  for (size_t s = 0; s < sizeof schemes / sizeof *schemes; s++) {
    for (size_t k = 0; k < sizeof secrets / sizeof *secrets; k++) {
      for (size_t h = 0; h < sizeof shapes / sizeof *shapes; h++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(url, sizeof url, shapes[h], schemes[s], secrets[k]);
#pragma GCC diagnostic pop
        /* Short timeouts keep the unreachable stores from taking seconds
         * each (a parameter is added only where it changes no shape). */
        if (!strchr(url, '#') && !strstr(url, "timeout="))
          snprintf(url + strlen(url), sizeof url - strlen(url), "%sconnect_timeout=100ms&"
                   "timeout=200ms", strchr(url, '?') ? "&" : "?");
        dlock_url_redact(url, buf, sizeof buf);
        if (strstr(buf, "Zq9") || strstr(buf, "Kx7"))
          fail_msg("redact(%s) = %s", url, buf);
        dlock_url *u = NULL;
        if (dlock__url_parse(url, &u) == 0) {
          if (strstr(dlock_url_redacted(u), "Zq9") || strstr(dlock_url_redacted(u), "Kx7"))
            fail_msg("redacted(%s) = %s", url, dlock_url_redacted(u));
          dlock__url_free(u);
        } else if (strstr(dlock_client_errmsg(NULL), "Zq9") ||
                   strstr(dlock_client_errmsg(NULL), "Kx7")) {
          fail_msg("parse(%s): %s", url, dlock_client_errmsg(NULL));
        }
        dlock_client *c = NULL;
        int rc = dlock_open(url, &c);
        const char *m = rc == 0 ? dlock_client_url(c) : dlock_client_errmsg(NULL);
        if (strstr(m, "Zq9") || strstr(m, "Kx7"))
          fail_msg("open(%s) = %s: %s", url, dlock_err_name(rc), m);
        if (rc == 0)
          dlock_close(c);
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_redis_url), cmocka_unit_test(test_multi_host),
      cmocka_unit_test(test_file_and_mem), cmocka_unit_test(test_bad_urls),
      cmocka_unit_test(test_redact),    cmocka_unit_test(test_durations),
      cmocka_unit_test(test_duration_public),
      cmocka_unit_test(test_params),    cmocka_unit_test(test_random_passwords),
      cmocka_unit_test(test_redact_at_in_query), cmocka_unit_test(test_redact_loose_query),
      cmocka_unit_test(test_secret_names_decoded),
      cmocka_unit_test(test_undecodable_parts), cmocka_unit_test(test_err_scrub),
      cmocka_unit_test(test_pg_messages_hide_secrets), cmocka_unit_test(test_secret_sweep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
