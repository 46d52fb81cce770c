/* PostgreSQL codec without a server: names, advisory keys, SQL text, the
 * libpq connection string and the decoding of result values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <xxhash.h>

#include "backends/postgres/pg-codec.h"
#include "internal.h"

/* The statement buffer the backend gives every statement. */
#define SQL_LEN 1400

/* Messages carry the rejected input, so a stale message from an earlier
 * failure cannot satisfy the check. */
static void assert_msg_has(const char *needle) {
  const char *m = dlock_client_errmsg(NULL);
  assert_non_null(m);
  if (!strstr(m, needle))
    fail_msg("message \"%s\" lacks \"%s\"", m, needle);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t adv(const char *prefix, const char *key) {
  return (uint64_t)dlock__pg_advisory_key(prefix, key, strlen(key));
}

/* ---- advisory keys ---- */

#define SWEEP 100000

/* Names that differ by one shifted separator or a trailing byte: the cases a
 * weak mix of prefix and key would fold together. */
static const char *const near[] = {
    "a/b", "a/b/", "/a/b", "ab", "a//b", "ab/", "/ab", "b/a", "a", "b",
    "a/b/c", "ab/c", "a/bc", "abc", "/a/b/c", "a/b/c/", "é", "e\xcc\x81", "ключ", "ключи",
    "鍵", "鍵/", "/鍵", "🔒", "🔒/a/b",
};

/* Name I of the sweep; every family starts differently, so no two collide. */
static void sweep_name(size_t i, char *buf, size_t len) {
  size_t nnear = sizeof near / sizeof near[0];
  if (i < nnear) {
    snprintf(buf, len, "%s", near[i]);
    return;
  }
  switch (i % 5) {
  case 0:
    snprintf(buf, len, "jobs/%zu", i);
    break;
  case 1:
    snprintf(buf, len, "jöbs/ключ/%zu", i);
    break;
  case 2:
    snprintf(buf, len, "q/%zu/鍵", i);
    break;
  case 3:
    snprintf(buf, len, "q%zu/", i); /* "q/N" shifted by the separator */
    break;
  default:
    snprintf(buf, len, "/q/%zu", i);
    break;
  }
}

static void advisory_keys_distinct(void **state) {
  (void)state;
  uint64_t *k = malloc(SWEEP * sizeof *k);
  uint32_t *hi = malloc(SWEEP * sizeof *hi);
  assert_non_null(k);
  assert_non_null(hi);
  char name[64];
  size_t negative = 0;
  for (size_t i = 0; i < SWEEP; i++) {
    sweep_name(i, name, sizeof name);
    int64_t v = dlock__pg_advisory_key(DLOCK__PG_DEFAULT_PREFIX, name, strlen(name));
    k[i] = (uint64_t)v;
    hi[i] = (uint32_t)(k[i] >> 32);
    negative += v < 0;
  }
  qsort(k, SWEEP, sizeof *k, cmp_u64);
  for (size_t i = 1; i < SWEEP; i++)
    if (k[i] == k[i - 1])
      fail_msg("two names share advisory key %016llx", (unsigned long long)k[i]);
  /* A key folded into 32 bits (or sign-extended from them) never sets the
   * top bit of a non-negative key and repeats the high half. */
  assert_true(negative > 0);
  assert_true(negative < SWEEP);
  qsort(hi, SWEEP, sizeof *hi, cmp_u32);
  size_t distinct_hi = 1;
  for (size_t i = 1; i < SWEEP; i++)
    distinct_hi += hi[i] != hi[i - 1];
  /* 100,000 uniform draws from 2^32 repeat about once. */
  if (distinct_hi < SWEEP - 100)
    fail_msg("only %zu distinct high halves in %d keys", distinct_hi, SWEEP);
  free(k);
  free(hi);
}

static void advisory_key_pinned(void **state) {
  (void)state;
  /* Existing locks are found by this value: it must never move. */
  static const char bytes[] = "dlock\0jobs/42";
  uint64_t want = XXH64(bytes, sizeof bytes - 1, 0);
  assert_int_equal(sizeof bytes - 1, 13);
  assert_int_equal(adv("dlock", "jobs/42"), want);
  assert_int_equal(adv(DLOCK__PG_DEFAULT_PREFIX, "jobs/42"), want);
}

/* A prepared statement's name: a fixed form that fits an identifier, the
 * same for the same text in every client, another for any other text
 * (another prefix's table, another version's statement). */
static void statement_names(void **state) {
  (void)state;
  dlock__pg_names a, b;
  assert_int_equal(dlock__pg_names_init(NULL, &a), 0);
  assert_int_equal(dlock__pg_names_init("other", &b), 0);
  char sa[SQL_LEN], sb[SQL_LEN];
  char na[DLOCK__PG_STMT_NAME_MAX], na2[DLOCK__PG_STMT_NAME_MAX], nb[DLOCK__PG_STMT_NAME_MAX];
  assert_int_equal(dlock__pg_sql(&a, DLOCK__PG_SQL_LEASE_TRY, sa, sizeof sa), 0);
  assert_int_equal(dlock__pg_sql(&b, DLOCK__PG_SQL_LEASE_TRY, sb, sizeof sb), 0);
  dlock__pg_statement_name(sa, na);
  dlock__pg_statement_name(sa, na2);
  dlock__pg_statement_name(sb, nb);
  assert_string_equal(na, na2);
  assert_string_not_equal(na, nb);
  assert_int_equal(strlen(na), 22);
  assert_memory_equal(na, "dlock_", 6);
  for (size_t i = 6; i < strlen(na); i++)
    assert_non_null(strchr("0123456789abcdef", na[i]));
  char want[DLOCK__PG_STMT_NAME_MAX];
  snprintf(want, sizeof want, "dlock_%016llx", (unsigned long long)XXH64(sa, strlen(sa), 0));
  assert_string_equal(na, want);
  /* Every statement of a client has its own name. */
  char names[DLOCK__PG_SQL_COUNT][DLOCK__PG_STMT_NAME_MAX];
  for (int i = 0; i < DLOCK__PG_SQL_COUNT; i++) {
    assert_int_equal(dlock__pg_sql(&a, (enum dlock__pg_sql)i, sa, sizeof sa), 0);
    dlock__pg_statement_name(sa, names[i]);
    for (int j = 0; j < i; j++)
      assert_string_not_equal(names[i], names[j]);
  }
}

static void advisory_key_properties(void **state) {
  (void)state;
  /* Deterministic. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(adv("dlock", "jobs/42"), adv("dlock", "jobs/42"));
  /* The length given counts, not the terminator. */
  const char *k = "jobs/42";
  assert_int_not_equal(dlock__pg_advisory_key("dlock", k, 7),
                       dlock__pg_advisory_key("dlock", k, 6));
  /* Prefixes keep their keys apart. */
  assert_int_not_equal(adv("dlock", "jobs/42"), adv("other", "jobs/42"));
  assert_int_not_equal(adv("dlock", "jobs/42"), adv("dlock2", "jobs/42"));
  assert_int_not_equal(adv("app.locks", "x"), adv("app", "locks.x"));
  /* The separator between prefix and key cannot be forged by either side. */
  assert_int_not_equal(adv("a", "b/c"), adv("a/b", "c"));
  assert_int_not_equal(adv("ab", "c"), adv("a", "bc"));
  assert_int_not_equal(adv("dlock", "jobs"), adv("dlockj", "obs"));
}

static void advisory_split_round_trip(void **state) {
  (void)state;
  const int64_t ks[] = {
      0, 1, -1, 2, -2, INT64_MAX, INT64_MIN, INT64_MIN + 1, (int64_t)0x123456789abcdef0LL,
      -(int64_t)0x123456789abcdef0LL, (int64_t)0x00000000ffffffffLL,
      (int64_t)0xffffffff00000000ULL, (int64_t)0x0000000100000000LL,
      dlock__pg_advisory_key("dlock", "jobs/42", 7), dlock__pg_advisory_key("a", "b", 1),
  };
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
    uint32_t classid = 0xdeadbeef, objid = 0xdeadbeef;
    dlock__pg_advisory_split(ks[i], &classid, &objid);
    assert_int_equal(((uint64_t)classid << 32) | objid, (uint64_t)ks[i]);
  }
  /* pg_locks shows the high half as classid. */
  uint32_t classid, objid;
  dlock__pg_advisory_split(-1, &classid, &objid);
  assert_int_equal(classid, 0xffffffffu);
  assert_int_equal(objid, 0xffffffffu);
  dlock__pg_advisory_split((int64_t)0x0000000100000002LL, &classid, &objid);
  assert_int_equal(classid, 1);
  assert_int_equal(objid, 2);
  dlock__pg_advisory_split(INT64_MIN, &classid, &objid);
  assert_int_equal(classid, 0x80000000u);
  assert_int_equal(objid, 0);
}

/* ---- names ---- */

static void names_default(void **state) {
  (void)state;
  dlock__pg_names n;
  assert_int_equal(dlock__pg_names_init(NULL, &n), 0);
  assert_string_equal(n.prefix, "dlock");
  assert_string_equal(n.sequence, "dlock_fence");
  assert_string_equal(n.table, "dlock_lease");
  assert_string_equal(n.channel, "dlock_lease");
  assert_int_equal(dlock__pg_names_init("dlock", &n), 0);
  assert_string_equal(n.sequence, "dlock_fence");
}

static void names_schema(void **state) {
  (void)state;
  dlock__pg_names n;
  assert_int_equal(dlock__pg_names_init("app.locks", &n), 0);
  assert_string_equal(n.prefix, "app.locks");
  assert_string_equal(n.sequence, "app.locks_fence");
  assert_string_equal(n.table, "app.locks_lease");
  /* NOTIFY channels are not schema-qualified. */
  assert_string_equal(n.channel, "locks_lease");
  assert_int_equal(dlock__pg_names_init("_a1._b_2", &n), 0);
  assert_string_equal(n.table, "_a1._b_2_lease");
  assert_string_equal(n.channel, "_b_2_lease");
}

static void names_longest(void **state) {
  (void)state;
  char x57[58], x58[59], both[140], want[160];
  memset(x57, 'x', 57);
  x57[57] = '\0';
  memset(x58, 'x', 58);
  x58[58] = '\0';
  dlock__pg_names n;
  /* 57 + "_lease" is PostgreSQL's 63-byte identifier limit exactly. */
  assert_int_equal(dlock__pg_names_init(x57, &n), 0);
  snprintf(want, sizeof want, "%s_fence", x57);
  assert_string_equal(n.sequence, want);
  snprintf(want, sizeof want, "%s_lease", x57);
  assert_string_equal(n.table, want);
  assert_string_equal(n.channel, want);
  assert_int_equal(strlen(n.channel), 63);
  snprintf(both, sizeof both, "%s.%s", x57, x57);
  assert_int_equal(dlock__pg_names_init(both, &n), 0);
  snprintf(want, sizeof want, "%s_lease", both);
  assert_string_equal(n.table, want);
  assert_string_equal(n.prefix, both);

  assert_int_equal(dlock__pg_names_init(x58, &n), DLOCK_EINVAL);
  assert_msg_has(x58);
  snprintf(both, sizeof both, "%s.a", x58);
  assert_int_equal(dlock__pg_names_init(both, &n), DLOCK_EINVAL);
  snprintf(both, sizeof both, "a.%s", x58);
  assert_int_equal(dlock__pg_names_init(both, &n), DLOCK_EINVAL);
}

static void names_rejected(void **state) {
  (void)state;
  static const char *const bad[] = {
      "", "Upper", "1abc", "a-b", "a.b.c", "a;drop", ".a", "a.", ".", "a b", "a'b", "a\"b",
      "éa", "a..b", "A.b", "a.B", "1.a", "a.1b",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dlock__pg_names n;
    char quoted[64];
    if (dlock__pg_names_init(bad[i], &n) != DLOCK_EINVAL)
      fail_msg("prefix \"%s\" was not rejected", bad[i]);
    const char *m = dlock_client_errmsg(NULL);
    assert_non_null(m);
    assert_true(m[0] != '\0');
    snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
    assert_msg_has(quoted);
  }
}

/* ---- statements ---- */

static void build_all(const dlock__pg_names *n) {
  for (int i = 0; i < DLOCK__PG_SQL_COUNT; i++) {
    char buf[SQL_LEN];
    memset(buf, 0, sizeof buf);
    int rc = dlock__pg_sql(n, (enum dlock__pg_sql)i, buf, sizeof buf);
    if (rc != 0)
      fail_msg("statement %d for prefix %s: rc %d (%s)", i, n->prefix, rc,
               dlock_client_errmsg(NULL));
    size_t len = strlen(buf);
    assert_true(len > 0);
    /* The size check sits exactly at the terminator: one byte less fails,
     * the exact size gives the same text. */
    char *exact = malloc(len + 1);
    assert_non_null(exact);
    assert_int_equal(dlock__pg_sql(n, (enum dlock__pg_sql)i, exact, len + 1), 0);
    assert_string_equal(exact, buf);
    assert_int_equal(dlock__pg_sql(n, (enum dlock__pg_sql)i, exact, len), DLOCK_EINVAL);
    free(exact);
  }
}

static void sql_all_build(void **state) {
  (void)state;
  dlock__pg_names n;
  assert_int_equal(dlock__pg_names_init(NULL, &n), 0);
  build_all(&n);
  assert_int_equal(dlock__pg_names_init("app.locks", &n), 0);
  build_all(&n);
  /* The longest prefix the names accept must still fit the backend's buffer. */
  char longest[140];
  memset(longest, 'x', 57);
  longest[57] = '.';
  memset(longest + 58, 'y', 57);
  longest[115] = '\0';
  assert_int_equal(dlock__pg_names_init(longest, &n), 0);
  build_all(&n);
}

static void sql_too_small(void **state) {
  (void)state;
  dlock__pg_names n;
  assert_int_equal(dlock__pg_names_init(NULL, &n), 0);
  for (int i = 0; i < DLOCK__PG_SQL_COUNT; i++) {
    char buf[10];
    assert_int_equal(dlock__pg_sql(&n, (enum dlock__pg_sql)i, buf, sizeof buf), DLOCK_EINVAL);
    assert_true(dlock_client_errmsg(NULL)[0] != '\0');
  }
}

static void sql_uses_names(void **state) {
  (void)state;
  dlock__pg_names n;
  char buf[SQL_LEN];
  assert_int_equal(dlock__pg_names_init("app.locks", &n), 0);

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_LEASE_TRY, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "app.locks_lease"));
  assert_non_null(strstr(buf, "nextval('app.locks_fence')"));

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_ADV_TRY, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "nextval('app.locks_fence')"));
  assert_non_null(strstr(buf, "pg_try_advisory_lock($1::bigint)"));

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_ADV_WAIT, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "nextval('app.locks_fence')"));

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_LEASE_RENEW, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "app.locks_lease"));

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_LEASE_RELEASE, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "app.locks_lease"));
  assert_non_null(strstr(buf, "pg_notify('locks_lease'"));

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_LEASE_INSPECT, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "app.locks_lease"));

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_LISTEN, buf, sizeof buf), 0);
  assert_string_equal(buf, "LISTEN locks_lease");

  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_SCHEMA_CHECK, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "'app.locks_fence'"));
  assert_non_null(strstr(buf, "'app.locks_lease'"));

  /* Default names land in the same places. */
  assert_int_equal(dlock__pg_names_init(NULL, &n), 0);
  assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_LEASE_TRY, buf, sizeof buf), 0);
  assert_non_null(strstr(buf, "INSERT INTO dlock_lease "));
  assert_non_null(strstr(buf, "nextval('dlock_fence')"));
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void sql_schema_is_one_transaction(void **state) {
  (void)state;
  static const char *const prefixes[] = {NULL, "app.locks"};
  for (size_t p = 0; p < 2; p++) {
    dlock__pg_names n;
    char buf[SQL_LEN];
    assert_int_equal(dlock__pg_names_init(prefixes[p], &n), 0);
    char want[200];

    assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_SCHEMA_CREATE_SEQ, buf, sizeof buf), 0);
    assert_int_equal(strncmp(buf, "BEGIN;", 6), 0);
    assert_true(ends_with(buf, "COMMIT"));
    snprintf(want, sizeof want, "CREATE SEQUENCE IF NOT EXISTS %s;", n.sequence);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "pg_advisory_xact_lock("));
    assert_null(strstr(buf, "CREATE TABLE"));

    assert_int_equal(dlock__pg_sql(&n, DLOCK__PG_SQL_SCHEMA_CREATE_LEASE, buf, sizeof buf), 0);
    assert_int_equal(strncmp(buf, "BEGIN;", 6), 0);
    assert_true(ends_with(buf, "COMMIT"));
    assert_non_null(strstr(buf, want));
    snprintf(want, sizeof want, "CREATE TABLE IF NOT EXISTS %s (", n.table);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "pg_advisory_xact_lock("));
  }
}

/* ---- connection string ---- */

/* The conninfo of URL: parse it as dlock_open does, take the parameters
 * the backend does not claim, build. */
static char *conninfo_of(const char *url) {
  static const char *const ours[] = {"mode", "ttl", "prefix"};
  dlock_url *u = NULL;
  if (dlock__url_parse(url, &u) < 0)
    fail_msg("parse(%s): %s", url, dlock_client_errmsg(NULL));
  for (size_t i = 0; i < sizeof ours / sizeof *ours; i++)
    dlock_url_param(u, ours[i], NULL);
  size_t n = dlock_url_param_count(u), m = 0;
  const char *names[16], *values[16];
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++) {
    int claimed;
    dlock_url_param_at(u, i, &names[m], &values[m], &claimed);
    if (!claimed)
      m++;
  }
  int rc = 0;
  char *s = dlock__pg_conninfo(u, names, values, m, &rc);
  if (!s)
    fail_msg("conninfo(%s) = %d: %s", url, rc, dlock_client_errmsg(NULL));
  dlock__url_free(u);
  return s;
}

static void conninfo_keeps_authority(void **state) {
  (void)state;
  char *s = conninfo_of("postgres://u:p%40ss@h1:5432,h2:5433/db?mode=lease&sslmode=require");
  /* The password stays encoded once, never twice. */
  assert_string_equal(s, "postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=require");
  free(s);
  s = conninfo_of("postgresql://[::1]:5432,h2/db");
  assert_string_equal(s, "postgresql://[::1]:5432,h2/db");
  free(s);
  s = conninfo_of("postgres://u@h/db");
  assert_string_equal(s, "postgresql://u@h/db");
  free(s);
  s = conninfo_of("postgres://:pw@h");
  assert_string_equal(s, "postgresql://:pw@h");
  free(s);
}

/* libpq ends the userinfo at the first '@' before any '/', the core at the
 * last '@' of the authority: copying the caller's authority made libpq
 * connect as another user, to a "host" made of the password's tail, and
 * quote that host in its error.  Everything is written again from what the
 * core parsed, so both read the same. */
static void conninfo_agrees_with_core(void **state) {
  (void)state;
  char *s = conninfo_of("postgres://u:hun@ter2@h:5432/db");
  assert_string_equal(s, "postgresql://u:hun%40ter2@h:5432/db");
  free(s);
  s = conninfo_of("postgres://us%3Aer:a%3Ab%2Fc%3Fd@h/d%2Fb");
  assert_string_equal(s, "postgresql://us%3Aer:a%3Ab%2Fc%3Fd@h/d%2Fb");
  free(s);
  /* What libpq reads back is what the core read. */
  s = conninfo_of("postgres://u%40x:p%40ss%3A@h1:1,h2:2/my%20db?application_name=a%40b");
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(s, &err);
  assert_non_null(opts);
  int seen = 0;
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (!o->val)
      continue;
    if (strcmp(o->keyword, "user") == 0)
      seen++, assert_string_equal(o->val, "u@x");
    if (strcmp(o->keyword, "password") == 0)
      seen++, assert_string_equal(o->val, "p@ss:");
    if (strcmp(o->keyword, "host") == 0)
      seen++, assert_string_equal(o->val, "h1,h2");
    if (strcmp(o->keyword, "port") == 0)
      seen++, assert_string_equal(o->val, "1,2");
    if (strcmp(o->keyword, "dbname") == 0)
      seen++, assert_string_equal(o->val, "my db");
    if (strcmp(o->keyword, "application_name") == 0)
      seen++, assert_string_equal(o->val, "a@b");
  }
  assert_int_equal(seen, 6);
  PQconninfoFree(opts);
  free(s);
}

static void conninfo_no_params(void **state) {
  (void)state;
  char *s = conninfo_of("postgres://u:p%40ss@h1:5432,h2:5433/db?mode=lease&ttl=5000");
  assert_string_equal(s, "postgresql://u:p%40ss@h1:5432,h2:5433/db");
  assert_null(strchr(s, '?'));
  free(s);
  s = conninfo_of("postgres://h/db");
  assert_string_equal(s, "postgresql://h/db");
  free(s);
}

static void conninfo_escapes(void **state) {
  (void)state;
  char *s = conninfo_of("postgres://h/db?application_name=a%20b%26c%3Dd"
                        "&options=-c%20x%3D1%3F%25%23&sslmode=verify-full");
  assert_string_equal(s, "postgresql://h/db?application_name=a%20b%26c%3Dd"
                         "&options=-c%20x%3D1%3F%25%23&sslmode=verify-full");
  free(s);
  /* A parameter name needing escapes is encoded the same way. */
  s = conninfo_of("postgres://h/db?a%3Db=%26");
  assert_string_equal(s, "postgresql://h/db?a%3Db=%26");
  free(s);
}

static void conninfo_hostless(void **state) {
  (void)state;
  char *s = conninfo_of("postgresql:///db");
  assert_string_equal(s, "postgresql:///db");
  free(s);
  s = conninfo_of("postgresql:///db?mode=advisory&host=/var/run/postgresql");
  assert_string_equal(s, "postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql");
  free(s);
}

static void conninfo_rejects(void **state) {
  (void)state;
  int rc = 0;
  dlock_url *u = NULL;
  assert_int_equal(dlock__url_parse("redis://h/db", &u), 0);
  assert_null(dlock__pg_conninfo(u, NULL, NULL, 0, &rc));
  assert_int_equal(rc, DLOCK_EINVAL);
  assert_true(dlock_client_errmsg(NULL)[0] != '\0');
  dlock__url_free(u);
  rc = 0;
  assert_null(dlock__pg_conninfo(NULL, NULL, NULL, 0, &rc));
  assert_int_equal(rc, DLOCK_EINVAL);
}

/* libpq quotes what it rejects; the quoted parts reach the caller only
 * when they are known not to be secret. */
static void safe_message(void **state) {
  (void)state;
  dlock_url *u = NULL;
  assert_int_equal(dlock__url_parse("postgres://dlock:S3CRETPW@db1:5432,[::1]/app?"
                                    "sslpassword=K3YPW&sslmode=require&port=S3CRETPW",
                                    &u),
                   0);
  const char *names[] = {"sslpassword", "sslmode", "port"};
  const char *values[] = {"K3YPW", "require", "S3CRETPW"};
  char b[256];
  struct {
    const char *in, *out;
  } cases[] = {
      {"invalid percent-encoded token: \"p%zzS3CRETPW\"\n",
       "invalid percent-encoded token: \"***\""},
      {"connection to server at \"db1\" (10.0.0.1), port 5432 failed: FATAL:  password "
       "authentication failed for user \"dlock\"\nmore",
       "connection to server at \"db1\" (10.0.0.1), port 5432 failed: FATAL:  password "
       "authentication failed for user \"dlock\""},
      {"connection to server at \"::1\", port 5432 failed: FATAL:  database \"app\" does not "
       "exist",
       "connection to server at \"::1\", port 5432 failed: FATAL:  database \"app\" does not "
       "exist"},
      {"invalid sslmode value: \"require\"", "invalid sslmode value: \"require\""},
      {"invalid integer value \"S3CRETPW\" for connection option \"port\"",
       "invalid integer value \"***\" for connection option \"port\""},
      {"x \"K3YPW\" y \"sslpassword\"", "x \"***\" y \"sslpassword\""},
      {"could not translate host name \"other\" to address", "could not translate host name "
                                                             "\"***\" to address"},
      {"connection to server on socket \"/run/pg/.s.PGSQL.5432\" failed",
       "connection to server on socket \"/run/pg/.s.PGSQL.5432\" failed"},
      {"unbalanced \"S3CRETPW tail", "unbalanced \"***"},
      {"", "connection failed"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    dlock__pg_safe_message(u, names, values, 3, cases[i].in, b, sizeof b);
    assert_string_equal(b, cases[i].out);
  }
  /* A small buffer cuts, never overflows. */
  char tiny[12];
  dlock__pg_safe_message(u, names, values, 3, cases[1].in, tiny, sizeof tiny);
  assert_int_equal(strlen(tiny), sizeof tiny - 1);
  dlock__url_free(u);
}

/* ---- arrays ---- */

static void text_array(void **state) {
  (void)state;
  static const char *const items[] = {"a", "b\"c", "d\\e", ""};
  char *s = dlock__pg_text_array(items, 4);
  assert_non_null(s);
  /* {"a","b\"c","d\\e",""} */
  assert_string_equal(s, "{\"a\",\"b\\\"c\",\"d\\\\e\",\"\"}");
  free(s);
  s = dlock__pg_text_array(NULL, 0);
  assert_non_null(s);
  assert_string_equal(s, "{}");
  free(s);
  /* Only quote and backslash need escaping inside quotes; commas, braces,
   * spaces and multibyte text pass through, and an all-escape item still
   * fits the buffer. */
  static const char *const more[] = {"\"\\\"\\", "x,y", "{z}", " NULL ", "鍵"};
  s = dlock__pg_text_array(more, 5);
  assert_non_null(s);
  assert_string_equal(s, "{\"\\\"\\\\\\\"\\\\\",\"x,y\",\"{z}\",\" NULL \",\"鍵\"}");
  free(s);
}

static void int_array(void **state) {
  (void)state;
  static const int64_t items[] = {1, -2, 9223372036854775807LL};
  char *s = dlock__pg_int_array(items, 3);
  assert_non_null(s);
  assert_string_equal(s, "{1,-2,9223372036854775807}");
  free(s);
  s = dlock__pg_int_array(NULL, 0);
  assert_non_null(s);
  assert_string_equal(s, "{}");
  free(s);
  /* The widest values, back to back. */
  static const int64_t wide[] = {INT64_MIN, INT64_MIN, INT64_MIN};
  s = dlock__pg_int_array(wide, 3);
  assert_non_null(s);
  assert_string_equal(s,
                      "{-9223372036854775808,-9223372036854775808,-9223372036854775808}");
  free(s);
}

/* ---- values ---- */

static void parse_i64(void **state) {
  (void)state;
  int64_t v = 7;
  assert_int_equal(dlock__pg_parse_i64("42", &v), 0);
  assert_int_equal(v, 42);
  assert_int_equal(dlock__pg_parse_i64("-9223372036854775808", &v), 0);
  assert_true(v == INT64_MIN);
  assert_int_equal(dlock__pg_parse_i64("9223372036854775807", &v), 0);
  assert_true(v == INT64_MAX);
  assert_int_equal(dlock__pg_parse_i64("0", &v), 0);
  assert_int_equal(v, 0);

  static const char *const bad[] = {"", "4x", "99999999999999999999", "-9223372036854775809",
                                    "9223372036854775808", "-", "x", "4 "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (dlock__pg_parse_i64(bad[i], &v) != DLOCK_EBACKEND)
      fail_msg("\"%s\" was accepted as an integer", bad[i]);
  assert_int_equal(dlock__pg_parse_i64(NULL, &v), DLOCK_EBACKEND);
}

static void parse_bool(void **state) {
  (void)state;
  int b = 5;
  assert_int_equal(dlock__pg_parse_bool("t", &b), 0);
  assert_int_equal(b, 1);
  assert_int_equal(dlock__pg_parse_bool("f", &b), 0);
  assert_int_equal(b, 0);
  static const char *const bad[] = {"true", "false", "T", "F", "", "1", "0", "tt"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (dlock__pg_parse_bool(bad[i], &b) != DLOCK_EBACKEND)
      fail_msg("\"%s\" was accepted as a boolean", bad[i]);
  assert_int_equal(dlock__pg_parse_bool(NULL, &b), DLOCK_EBACKEND);
}

static void uuid_to_hex(void **state) {
  (void)state;
  /* OUT is documented as 33 bytes; the guard bytes behind it must survive. */
  char out[48];
  memset(out, 'Z', sizeof out);
  assert_int_equal(dlock__pg_uuid_to_hex("0123abcd-0000-4000-8000-00000000ABCD", out), 0);
  assert_string_equal(out, "0123abcd00004000800000000000abcd");
  assert_int_equal(strlen(out), 32);
  for (size_t i = 33; i < sizeof out; i++)
    assert_int_equal(out[i], 'Z');

  static const char *const bad[] = {
      "0123abcd-0000-4000-8000-00000000ABC",   /* 31 digits */
      "0123abcd-0000-4000-8000-00000000ABCG",  /* not hex */
      "0123abcd-0000-4000-8000-00000000ABCDE", /* 33 digits */
      "0123abcd-0000-4000-8000-00000000ABCD0123456789abcdef",
      "0123abcd 0000-4000-8000-00000000ABCD",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset(out, 'Z', sizeof out);
    if (dlock__pg_uuid_to_hex(bad[i], out) != DLOCK_EBACKEND)
      fail_msg("\"%s\" was accepted as a uuid", bad[i]);
    for (size_t j = 33; j < sizeof out; j++)
      assert_int_equal(out[j], 'Z');
  }
  assert_int_equal(dlock__pg_uuid_to_hex(NULL, out), DLOCK_EBACKEND);
}

static void sqlstate(void **state) {
  (void)state;
  assert_int_equal(dlock__pg_sqlstate_code("55P03"), DLOCK_ETIMEDOUT);
  assert_int_equal(dlock__pg_sqlstate_code("57014"), DLOCK_ETIMEDOUT);
  assert_int_equal(dlock__pg_sqlstate_code("28P01"), DLOCK_EAUTH);
  assert_int_equal(dlock__pg_sqlstate_code("28000"), DLOCK_EAUTH);
  assert_int_equal(dlock__pg_sqlstate_code("42501"), DLOCK_EAUTH);
  assert_int_equal(dlock__pg_sqlstate_code("08006"), DLOCK_ECONN);
  assert_int_equal(dlock__pg_sqlstate_code("08001"), DLOCK_ECONN);
  assert_int_equal(dlock__pg_sqlstate_code("57P01"), DLOCK_ECONN);
  assert_int_equal(dlock__pg_sqlstate_code("53300"), DLOCK_ECONN);
  assert_int_equal(dlock__pg_sqlstate_code("23505"), DLOCK_EBACKEND);
  assert_int_equal(dlock__pg_sqlstate_code("42P01"), DLOCK_EBACKEND);
  assert_int_equal(dlock__pg_sqlstate_code(NULL), DLOCK_EBACKEND);
  assert_int_equal(dlock__pg_sqlstate_code("123"), DLOCK_EBACKEND);
  assert_int_equal(dlock__pg_sqlstate_code(""), DLOCK_EBACKEND);
  assert_int_equal(dlock__pg_sqlstate_code("55P03x"), DLOCK_EBACKEND);
}

/* The lease-mode rows, as the transport hands them over (NULL for SQL
 * NULL in the try row; PQgetvalue gives "" for NULL elsewhere). */
static void lease_try_row(void **state) {
  (void)state;
  uint64_t token = 0;
  int64_t left = -7;
  assert_int_equal(dlock__pg_decode_lease_try("42", NULL, &token, &left), 1);
  assert_true(token == 42);
  assert_int_equal(left, -7);
  token = 5;
  assert_int_equal(dlock__pg_decode_lease_try(NULL, "1500", &token, &left), 0);
  assert_int_equal(left, 1500);
  assert_true(token == 5);
  left = -7;
  assert_int_equal(dlock__pg_decode_lease_try(NULL, NULL, &token, &left), 0);
  assert_int_equal(left, -7);
  assert_int_equal(dlock__pg_decode_lease_try(NULL, "soon", &token, &left), 0);
  assert_int_equal(left, -7);
  assert_int_equal(dlock__pg_decode_lease_try("4x", NULL, &token, &left), DLOCK_EBACKEND);
  assert_int_equal(dlock__pg_decode_lease_try("", NULL, &token, &left), DLOCK_EBACKEND);
  assert_true(token == 5);
}

static void lease_inspect_row(void **state) {
  (void)state;
  dlock_info info;
  memset(&info, 0, sizeof info);
  const char *row[4] = {"01234567-89AB-cdef-0123-456789abcdef", "9", "web:1", "2500"};
  assert_int_equal(dlock__pg_decode_lease_inspect(row, &info), 0);
  assert_int_equal(info.held, 1);
  assert_string_equal(info.owner, "0123456789abcdef0123456789abcdef");
  assert_true(info.token == 9);
  assert_string_equal(info.label, "web:1");
  assert_int_equal(info.ttl_ms, 2500);
  char longlabel[300];
  memset(longlabel, 'l', sizeof longlabel - 1);
  longlabel[sizeof longlabel - 1] = '\0';
  const char *cut[4] = {row[0], "1", longlabel, "0"};
  assert_int_equal(dlock__pg_decode_lease_inspect(cut, &info), 0);
  assert_int_equal(strlen(info.label), sizeof info.label - 1);
  const char *bad[][4] = {
      {"not-a-uuid", "9", "x", "1"},
      {row[0], "nine", "x", "1"},
      {row[0], "9", "x", ""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    memset(&info, 0, sizeof info);
    assert_int_equal(dlock__pg_decode_lease_inspect(bad[i], &info), DLOCK_EBACKEND);
    assert_int_equal(info.held, 1);
    assert_string_equal(info.label, "x");
  }
  assert_true(info.token == 9);
  assert_int_equal(info.ttl_ms, -1);
}

/* The probe a grant's confirmation sends: a protocol 3.0 StartupMessage. */
static void startup_packet(void **state) {
  (void)state;
  char buf[64];
  int n = dlock__pg_startup_packet("bob", "app", buf, sizeof buf);
  static const char want[] = "\0\0\0\x1f\0\x03\0\0user\0bob\0database\0app\0";
  assert_int_equal(n, 31);
  assert_memory_equal(buf, want, 31); /* the literal's own NUL is the last byte */
  assert_true(dlock__pg_startup_packet("bob", "app", buf, 30) < 0);
  assert_int_equal(dlock__pg_startup_packet(NULL, NULL, buf, sizeof buf), 8 + 5 + 1 + 9 + 1 + 1);
}

static int first(const char *bytes, size_t n, int *ok) {
  return dlock__pg_first_reply((const unsigned char *)bytes, n, ok);
}

/* What the postmaster's first answer says about its state. */
static void first_reply(void **state) {
  (void)state;
  int ok;
  /* AuthenticationOk: admitted, and the session is starting. */
  assert_int_equal(first("R\0\0\0\x08\0\0\0\0", 9, &ok), 1);
  assert_int_equal(ok, 1);
  /* MD5 password asked: admitted. */
  assert_int_equal(first("R\0\0\0\x0c\0\0\0\x05salt", 13, &ok), 1);
  assert_int_equal(ok, 0);
  /* Refused for its state while shutting down. */
  static const char shut[] = "E\0\0\0\x2eSFATAL\0C57P03\0Mthe database system is sh\0\0";
  assert_int_equal(first(shut, sizeof shut - 1, &ok), 0);
  /* Refused after it let the connection in: a login it did not like. */
  static const char auth[] = "E\0\0\0\x1dSFATAL\0C28000\0Mno entry\0\0";
  assert_int_equal(first(auth, sizeof auth - 1, &ok), 1);
  /* Not yet complete, whatever comes next. */
  for (size_t k = 0; k < sizeof shut - 1; k++)
    assert_int_equal(first(shut, k, &ok), DLOCK__PG_NEED_MORE);
  assert_int_equal(first("R\0\0\0\x08\0\0\0", 8, &ok), DLOCK__PG_NEED_MORE);
  /* Not the protocol. */
  assert_int_equal(first("HTTP/1.1 400", 12, &ok), DLOCK_EBACKEND);
  assert_int_equal(first("E\0\0\0\x02", 5, &ok), DLOCK_EBACKEND);
  static const char nocode[] = "E\0\0\0\x0fSFATAL\0Mx\0\0";
  assert_int_equal(first(nocode, sizeof nocode - 1, &ok), DLOCK_EBACKEND);
  /* A field that runs to the end unterminated has no SQLSTATE either. */
  static const char cut[] = "E\0\0\0\x0a" "C57P03";
  assert_int_equal(first(cut, sizeof cut - 1, &ok), DLOCK_EBACKEND);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(advisory_keys_distinct),
      cmocka_unit_test(advisory_key_pinned),
      cmocka_unit_test(statement_names),
      cmocka_unit_test(advisory_key_properties),
      cmocka_unit_test(advisory_split_round_trip),
      cmocka_unit_test(names_default),
      cmocka_unit_test(names_schema),
      cmocka_unit_test(names_longest),
      cmocka_unit_test(names_rejected),
      cmocka_unit_test(sql_all_build),
      cmocka_unit_test(sql_too_small),
      cmocka_unit_test(sql_uses_names),
      cmocka_unit_test(sql_schema_is_one_transaction),
      cmocka_unit_test(conninfo_keeps_authority), cmocka_unit_test(conninfo_agrees_with_core),
      cmocka_unit_test(safe_message),
      cmocka_unit_test(conninfo_no_params),
      cmocka_unit_test(conninfo_escapes),
      cmocka_unit_test(conninfo_hostless),
      cmocka_unit_test(conninfo_rejects),
      cmocka_unit_test(text_array),
      cmocka_unit_test(int_array),
      cmocka_unit_test(parse_i64),
      cmocka_unit_test(parse_bool),
      cmocka_unit_test(uuid_to_hex),
      cmocka_unit_test(sqlstate),
      cmocka_unit_test(lease_try_row),
      cmocka_unit_test(lease_inspect_row),
      cmocka_unit_test(startup_packet),
      cmocka_unit_test(first_reply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
