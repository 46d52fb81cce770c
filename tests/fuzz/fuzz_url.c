/* The URL parser and its accessors, on any bytes.  Beyond memory safety it
 * checks what callers rely on: the accessors stay in range, the secrets
 * come longest first, every parameter reads back through each typed
 * accessor with DLOCK_EINVAL as the only failure and a message that
 * shows the value only when it is not secret, and the redacted URL
 * parses again to itself.  The backends' own readers of a parsed URL (zk
 * connect string, libpq conninfo) run on it too. */
#include <strings.h>

#include "fuzz.h"

#include "core/internal.h"
#ifdef DLOCK_HAVE_ZOOKEEPER
#include "backends/zookeeper/zk-codec.h"
#endif
#ifdef DLOCK_HAVE_POSTGRES
#include "backends/postgres/pg-codec.h"
#endif

/* Names whose values are secret: url.c's secret_name. */
static int secret_name(const char *name) {
  static const char *const words[] = {"pass", "pwd", "token", "secret", "key", "auth", "cred"};
  for (size_t w = 0; w < sizeof words / sizeof *words; w++)
    if (strcasestr(name, words[w]))
      return 1;
  return 0;
}

/* A typed accessor's message about parameter NAME is exactly its
 * template with the value shown, or "***" for a secret parameter: so no
 * secret reaches it. */
static void check_message(const char *name, const char *value, const char *expect) {
  char want[512];
  snprintf(want, sizeof want, "invalid URL parameter %s='%s': %s", name,
           secret_name(name) ? "***" : value, expect);
  if (strcmp(dlock_client_errmsg(NULL), want) != 0)
    fuzz_fail("message \"%s\", expected \"%s\"", dlock_client_errmsg(NULL), want);
}

static void check_accessors(dlock_url *u, const char *s) {
  FUZZ_CHECK(strcmp(dlock_url_string(u), s) == 0, "dlock_url_string differs from the input");
  const char *sch = dlock_url_scheme(u);
  FUZZ_CHECK(sch && sch[0], "no scheme");
  for (const char *p = sch; *p; p++)
    FUZZ_CHECK(!(*p >= 'A' && *p <= 'Z'), "scheme \"%s\" not lower-case", sch);
  size_t nh = dlock_url_host_count(u);
  FUZZ_CHECK(nh <= 32, "%zu hosts", nh);
  for (size_t i = 0; i < nh; i++) {
    const char *h = dlock_url_host(u, i);
    FUZZ_CHECK(h && h[0], "host %zu empty", i);
    int port = dlock_url_port(u, i);
    FUZZ_CHECK(port >= 0 && port <= 65535, "port %d", port);
  }
  FUZZ_CHECK(dlock_url_host(u, nh) == NULL && dlock_url_port(u, nh) == 0,
             "host past the end");
  FUZZ_CHECK(dlock_url_path(u) != NULL, "no path");
  FUZZ_CHECK(dlock_url_redacted(u) != NULL, "no redacted form");
  if (dlock_url_password(u))
    FUZZ_CHECK(dlock_url_user(u) != NULL, "password without user");
  size_t prev = SIZE_MAX;
  const char *sec;
  for (size_t i = 0; (sec = dlock__url_secret(u, i)) != NULL; i++) {
    size_t l = strlen(sec);
    FUZZ_CHECK(l > 0 && l <= prev, "secret %zu out of order or empty", i);
    prev = l;
  }

  size_t np = dlock_url_param_count(u);
  for (size_t i = 0; i < np; i++) {
    const char *name = NULL, *value = NULL, *again = NULL;
    int claimed = -1;
    FUZZ_CHECK(dlock_url_param_at(u, i, &name, &value, &claimed) == 1, "param_at %zu", i);
    FUZZ_CHECK(name && value && name[0] && (claimed == 0 || claimed == 1), "param %zu malformed", i);
    /* duplicates are refused, so a name finds its own value */
    FUZZ_CHECK(dlock_url_param(u, name, &again) == 1 && again == value, "param '%s'", name);
    int64_t ms;
    int rc = dlock_url_param_duration(u, name, 0, &ms);
    FUZZ_CHECK(rc == 0 || rc == DLOCK_EINVAL, "duration rc %d", rc);
    if (rc == 0)
      FUZZ_CHECK(ms >= 0 && ms <= DLOCK__DURATION_MAX_MS, "duration %lld", (long long)ms);
    else
      check_message(name, value, "expected a non-negative duration such as 500ms, 15s or 2m");
    long long n;
    rc = dlock_url_param_int(u, name, 0, -1000, 1000, &n);
    FUZZ_CHECK(rc == 0 ? n >= -1000 && n <= 1000 : rc == DLOCK_EINVAL, "int rc %d", rc);
    if (rc)
      check_message(name, value, "expected an integer in [-1000, 1000]");
    int b;
    rc = dlock_url_param_bool(u, name, 0, &b);
    FUZZ_CHECK(rc == 0 ? b == 0 || b == 1 : rc == DLOCK_EINVAL, "bool rc %d", rc);
    if (rc)
      check_message(name, value, "expected true or false");
  }
  FUZZ_CHECK(dlock_url_param_at(u, np, NULL, NULL, NULL) == 0, "param past the end");
  FUZZ_CHECK(dlock__url_check_unused(u) == 0, "a read parameter counted as unused");
}

/* The redacted form is a URL like the original with "***" for secrets: it
 * parses, and redacting it again changes nothing. */
static void check_redacted_again(const dlock_url *u) {
  const char *red = dlock_url_redacted(u);
  dlock_url *r = NULL;
  int rc = dlock__url_parse(red, &r);
  if (rc == DLOCK_ENOMEM)
    return;
  FUZZ_CHECK(rc == 0, "redacted URL \"%s\" does not parse: %s", red, dlock_client_errmsg(NULL));
  FUZZ_CHECK(strcmp(dlock_url_redacted(r), red) == 0, "redacting \"%s\" again gives \"%s\"",
             red, dlock_url_redacted(r));
  FUZZ_CHECK(dlock_url_host_count(r) == dlock_url_host_count(u) &&
                 dlock_url_param_count(r) == dlock_url_param_count(u),
             "redacted URL has another shape");
  dlock__url_free(r);
}

static void check_backends(dlock_url *u) {
#ifdef DLOCK_HAVE_ZOOKEEPER
  char *cs = NULL;
  if (dlock__zk_connect_string(u, &cs) == 0) {
    FUZZ_CHECK(cs && dlock_url_host_count(u) > 0, "zk connect string without hosts");
    free(cs);
  }
#endif
#ifdef DLOCK_HAVE_POSTGRES
  int rc = 0;
  char *ci = dlock__pg_conninfo(u, NULL, NULL, 0, &rc);
  free(ci);
#endif
  (void)u;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fuzz_strndup(data, size);
  dlock_url *u = NULL;
  int rc = dlock__url_parse(s, &u);
  if (rc == 0) {
    check_accessors(u, s);
    check_redacted_again(u);
    check_backends(u);
    dlock__url_free(u);
  } else {
    FUZZ_CHECK(rc == DLOCK_EINVAL || rc == DLOCK_ENOMEM, "parse rc %d", rc);
    FUZZ_CHECK(u == NULL, "output set on failure");
  }
  free(s);
  return 0;
}
