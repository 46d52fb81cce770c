/* PostgreSQL result values and the text sent back to the server.  The
 * input is up to four text values separated by '\n' (as libpq hands over
 * a row in text format) and goes through every value decoder and the
 * lease-mode row decoders.  Checked: what parses prints back to itself
 * (integers), a bool is only "t" or "f", a uuid becomes the 32 lower-case
 * hex digits it spells, SQLSTATEs map to the documented codes, decoded
 * rows keep their strings in bounds; and the array literals built from
 * the same values read back, element by element, as those values.  The
 * first value is also a list prefix, whose part sent as text is UTF-8,
 * all of it when it is UTF-8 and at most an unfinished character short
 * (so every cut of a UTF-8 key can be sent), and a break's owner, checked
 * the way plain versions of the owner checks read it. */
#include <ctype.h>
#include <inttypes.h>

#include "fuzz.h"

#include "backends/postgres/pg-codec.h"

static void check_value(const char *v) {
  int64_t i = 7;
  if (dlock__pg_parse_i64(v, &i) == 0) {
    char again[32];
    snprintf(again, sizeof again, "%" PRId64, i);
    int64_t j = 0;
    FUZZ_CHECK(dlock__pg_parse_i64(again, &j) == 0 && j == i, "integer round trip");
  } else {
    FUZZ_CHECK(i == 7, "integer output touched on failure");
  }
  int b = 7;
  if (dlock__pg_parse_bool(v, &b) == 0)
    FUZZ_CHECK((b == 1 && !strcmp(v, "t")) || (b == 0 && !strcmp(v, "f")), "bool \"%s\"", v);
  else
    FUZZ_CHECK(b == 7, "bool output touched on failure");
  char hex[33];
  if (dlock__pg_uuid_to_hex(v, hex) == 0) {
    size_t o = 0;
    for (const char *p = v; *p; p++)
      if (*p != '-')
        FUZZ_CHECK(o < 32 && hex[o++] == tolower((unsigned char)*p), "uuid digit");
    FUZZ_CHECK(o == 32 && hex[32] == '\0', "uuid length");
  }
  int code = dlock__pg_sqlstate_code(v);
  FUZZ_CHECK(code == DLOCK_ETIMEDOUT || code == DLOCK_EAUTH || code == DLOCK_ECONN ||
                 code == DLOCK_EBACKEND,
             "sqlstate code %d", code);
  if (strlen(v) != 5)
    FUZZ_CHECK(code == DLOCK_EBACKEND, "sqlstate of length %zu", strlen(v));
}

/* Element I of a text[] literal {"a","b\"c"} into OUT; 0 or -1. */
static int array_item(const char *lit, size_t want, char *out) {
  const char *p = lit;
  if (*p++ != '{')
    return -1;
  for (size_t i = 0;; i++) {
    if (*p == '}' && i == 0)
      return -1;
    if (*p++ != '"')
      return -1;
    size_t o = 0;
    while (*p != '"') {
      if (!*p)
        return -1;
      if (*p == '\\')
        p++;
      if (!*p)
        return -1;
      if (i == want)
        out[o++] = *p;
      p++;
    }
    p++;
    if (i == want) {
      out[o] = '\0';
      return 0;
    }
    if (*p++ != ',')
      return -1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fuzz_strndup(data, size);
  const char *row[4] = {"", "", "", ""};
  size_t n = 0;
  for (char *p = s; n < 4;) {
    row[n++] = p;
    char *nl = strchr(p, '\n');
    if (!nl)
      break;
    *nl = '\0';
    p = nl + 1;
  }
  for (size_t i = 0; i < n; i++)
    check_value(row[i]);

  uint64_t token = 5;
  int64_t left = -9;
  int rc = dlock__pg_decode_lease_try(n > 1 && !row[0][0] ? NULL : row[0], row[1], &token, &left);
  FUZZ_CHECK(rc == 1 || rc == 0 || rc == DLOCK_EBACKEND, "lease try rc %d", rc);
  if (rc != 1)
    FUZZ_CHECK(token == 5, "token set without a fence");
  if (rc != 0)
    FUZZ_CHECK(left == -9, "holder ttl set when not busy");
  dlock_info info;
  memset(&info, 0, sizeof info);
  rc = dlock__pg_decode_lease_inspect(row, &info);
  FUZZ_CHECK(rc == 0 || rc == DLOCK_EBACKEND, "lease inspect rc %d", rc);
  FUZZ_CHECK(info.held == 1 && memchr(info.owner, '\0', sizeof info.owner) &&
                 memchr(info.label, '\0', sizeof info.label),
             "lease inspect fields");

  char *lit = dlock__pg_text_array(row, n);
  FUZZ_CHECK(lit, "text array");
  char *item = malloc(strlen(lit) + 1);
  if (!item)
    abort();
  for (size_t i = 0; i < n; i++)
    FUZZ_CHECK(array_item(lit, i, item) == 0 && strcmp(item, row[i]) == 0,
               "element %zu of %s is not \"%s\"", i, lit, row[i]);
  free(item);
  free(lit);

  size_t n0 = strlen(row[0]);
  long tl = dlock__pg_prefix_text_len(row[0], n0);
  FUZZ_CHECK(tl >= -1 && tl <= (long)n0, "prefix text length %ld of %zu", tl, n0);
  if (tl >= 0) {
    FUZZ_CHECK(dlock__pg_prefix_text_len(row[0], (size_t)tl) == tl, "text part is not UTF-8");
    FUZZ_CHECK(n0 - (size_t)tl < 4, "%zu bytes held back", n0 - (size_t)tl);
  }
  if (tl == (long)n0)
    for (size_t m = 0; m <= n0; m++) {
      long c = dlock__pg_prefix_text_len(row[0], m);
      FUZZ_CHECK(c >= 0 && (size_t)c <= m && m - (size_t)c < 4, "cut at %zu: %ld", m, c);
      FUZZ_CHECK(c == (long)m || (((unsigned char)row[0][c] & 0xc0) == 0xc0),
                 "cut at %zu held back from a byte that begins no character", m);
    }
  /* Owners, against plain versions: hex digits and dashes; equal once
   * dashes are dropped and A-F lowered. */
  int hexdash = 1;
  char *ref = malloc(n0 + 1);
  if (!ref)
    abort();
  size_t o = 0;
  for (const char *p = row[0]; *p; p++) {
    hexdash &= (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
               (*p >= 'A' && *p <= 'F') || *p == '-';
    if (*p != '-')
      ref[o++] = *p >= 'A' && *p <= 'F' ? (char)(*p - 'A' + 'a') : *p;
  }
  ref[o] = '\0';
  FUZZ_CHECK(dlock__pg_owner_text_ok(row[0]) == hexdash, "owner text \"%s\"", row[0]);
  if (n > 1)
    FUZZ_CHECK(dlock__pg_owner_names(row[0], row[1]) == (strcmp(ref, row[1]) == 0),
               "owner \"%s\" against \"%s\"", row[0], row[1]);
  free(ref);

  dlock__pg_names names;
  if (dlock__pg_names_init(row[0], &names) == 0) {
    char sql[1400]; /* SQL_MAX of pg.c: what the client has room for */
    for (int w = 0; w < DLOCK__PG_SQL_COUNT; w++)
      FUZZ_CHECK(dlock__pg_sql(&names, (enum dlock__pg_sql)w, sql, sizeof sql) == 0,
                 "statement %d does not fit for prefix \"%s\"", w, row[0]);
    for (const char *p = names.table; *p; p++)
      FUZZ_CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.',
                 "table name \"%s\" needs quoting", names.table);
  }
  free(s);
  return 0;
}
