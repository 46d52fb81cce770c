/* PostgreSQL backend: names, hashes, SQL text and value decoding (no I/O). */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "backends/postgres/pg-codec.h"

/* ---- names ---- */

/* 63 bytes is PostgreSQL's identifier limit (NAMEDATALEN - 1); the longest
 * suffix added is "_lease"/"_fence" (6 bytes). */
#define PART_MAX (63 - 6)

static int part_ok(const char *s, size_t n) {
  if (n == 0 || n > PART_MAX)
    return 0;
  /* ASCII ranges, not <ctype.h>: the locale must not widen them. */
  if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
      return 0;
  return 1;
}

int dlock__pg_names_init(const char *prefix, dlock__pg_names *n) {
  memset(n, 0, sizeof *n);
  if (!prefix)
    prefix = DLOCK__PG_DEFAULT_PREFIX;
  const char *dot = strchr(prefix, '.');
  const char *name = dot ? dot + 1 : prefix;
  int ok = part_ok(name, strlen(name)) && (!dot || part_ok(prefix, (size_t)(dot - prefix)));
  if (!ok)
    return dlock_seterr(DLOCK_EINVAL,
                        "postgres: invalid prefix '%.80s': expected [schema.]name, each part "
                        "1-%d characters of a-z, 0-9 and _, not starting with a digit",
                        prefix, PART_MAX);
  snprintf(n->prefix, sizeof n->prefix, "%s", prefix);
  snprintf(n->sequence, sizeof n->sequence, "%s_fence", prefix);
  snprintf(n->table, sizeof n->table, "%s_lease", prefix);
  snprintf(n->channel, sizeof n->channel, "%s_lease", name);
  /* "_exp" is shorter than the suffixes PART_MAX allows for. */
  snprintf(n->index, sizeof n->index, "%s_exp", prefix);
  return 0;
}

/* ---- advisory keys ---- */

int64_t dlock__pg_advisory_key(const char *prefix, const char *key, size_t keylen) {
  /* Prefix and key are bounded (256 and DLOCK_KEY_MAX bytes). */
  char buf[256 + 1 + DLOCK_KEY_MAX];
  size_t pl = strnlen(prefix, 256);
  if (keylen > DLOCK_KEY_MAX)
    keylen = DLOCK_KEY_MAX;
  memcpy(buf, prefix, pl);
  buf[pl] = '\0';
  memcpy(buf + pl + 1, key, keylen);
  uint64_t h = XXH64(buf, pl + 1 + keylen, 0);
  int64_t k;
  memcpy(&k, &h, sizeof k); /* two's complement reinterpretation, as int8 */
  return k;
}

void dlock__pg_advisory_split(int64_t k, uint32_t *classid, uint32_t *objid) {
  uint64_t u = (uint64_t)k;
  *classid = (uint32_t)(u >> 32);
  *objid = (uint32_t)u;
}

/* ---- statements ---- */

void dlock__pg_statement_name(const char *sql, char *buf) {
  snprintf(buf, DLOCK__PG_STMT_NAME_MAX, "dlock_%016" PRIx64, (uint64_t)XXH64(sql, strlen(sql), 0));
}

#define TTL_EXPR "clock_timestamp() + %s::bigint * interval '1 millisecond'"
/* An ended lease holds -infinity, which cannot be subtracted from. */
#define REMAINING_MS                                                                       \
  "ceil(greatest(0, extract(epoch FROM greatest(expires_at, clock_timestamp()) - "            \
  "clock_timestamp())) * 1000)::bigint"

/* A granted session-level advisory lock of key ($1, $2) in this database,
 * as pg_locks shows it (unqualified, for whichever pg_locks is nearest). */
#define ADV_HELD                                                                           \
  "locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' AND "                       \
  "classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1 AND "            \
  "database = (SELECT oid FROM pg_database WHERE datname = current_database())"

/* The two-int advisory key space (objsubid 2 in pg_locks) never meets the
 * bigint one that locks use, so creating the schema cannot wait on a user's
 * lock.  0x646c6f63 is "dloc". */
#define SCHEMA_LOCK "SELECT pg_advisory_xact_lock(1684827971, %" PRId32 ");"

int dlock__pg_sql(const dlock__pg_names *n, enum dlock__pg_sql which, char *buf, size_t len) {
  const char *s = n->sequence, *t = n->table, *ch = n->channel;
  char ttl3[64], ttlr[64];
  snprintf(ttl3, sizeof ttl3, TTL_EXPR, "$3");
  snprintf(ttlr, sizeof ttlr, TTL_EXPR, "r.ttl");
  int w = -1;
  switch (which) {
  case DLOCK__PG_SQL_ADV_TRY:
    w = snprintf(buf, len,
                 "SELECT CASE WHEN pg_try_advisory_lock($1::bigint) THEN nextval('%s') END", s);
    break;
  case DLOCK__PG_SQL_ADV_WAIT:
    /* lock_timeout set for this statement only (its own transaction), so
     * the server gives up at the caller's deadline: no cancel request, no
     * second connection. */
    w = snprintf(buf, len,
                 "WITH t AS MATERIALIZED (SELECT set_config('lock_timeout', $2::text, true)), "
                 "l AS MATERIALIZED (SELECT pg_advisory_lock($1::bigint) FROM t) "
                 "SELECT nextval('%s') FROM l",
                 s);
    break;
  case DLOCK__PG_SQL_ADV_UNLOCK:
    w = snprintf(buf, len, "SELECT pg_advisory_unlock($1::bigint)");
    break;
  case DLOCK__PG_SQL_ADV_INSPECT:
    w = snprintf(buf, len,
                 "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                 "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1 "
                 "AND database = (SELECT oid FROM pg_database WHERE datname = "
                 "current_database()) LIMIT 1");
    break;
  case DLOCK__PG_SQL_PING:
    w = snprintf(buf, len, "SELECT pg_backend_pid()");
    break;
  case DLOCK__PG_SQL_SESSION:
    /* The server must not end a holder's session sooner than its lease
     * allows (an idle timeout, keepalives shorter than the ttl), nor cut a
     * wait short with a statement timeout.  Settings this server does not
     * have are skipped. */
    w = snprintf(buf, len,
                 "SELECT count(set_config(v.name, v.setting, false)) FROM (VALUES "
                 "('idle_session_timeout', '0'), ('statement_timeout', '0'), "
                 "('tcp_user_timeout', '0'), ('tcp_keepalives_idle', $1::text), "
                 "('tcp_keepalives_interval', greatest(1, $1::int / 3)::text), "
                 "('tcp_keepalives_count', '3')) AS v(name, setting) "
                 "WHERE v.name IN (SELECT name FROM pg_settings)");
    break;
  case DLOCK__PG_SQL_LEASE_TRY:
    /* A takeover draws its token in the UPDATE, after the row lock and the
     * expiry check, so it is always above the previous holder's.  A name
     * with no row takes the INSERT's, drawn before the row is claimed: a
     * row of the same name deleted meanwhile could hold a later token.
     * Ended rows are deleted only DLOCK__PG_GRACE_MS after their last use
     * (expires_at, which is never before their token was drawn), so that
     * can happen only to a statement that ran longer than the grace; one
     * that ran DLOCK__PG_FRESH_MS or more (measured after the claim, from
     * the receipt of the statement, which precedes the draw) is told so
     * and draws its token again under the row it now holds. */
    w = snprintf(buf, len,
                 "WITH ins AS (INSERT INTO %s AS d (name, owner, fence, expires_at, label) "
                 "VALUES ($1, $2::uuid, nextval('%s'), %s, $4) "
                 "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                 "fence = nextval('%s'), expires_at = %s, label = excluded.label "
                 "WHERE d.expires_at <= clock_timestamp() RETURNING d.fence, "
                 "clock_timestamp() - statement_timestamp() < interval '%d ms' AS fresh) "
                 "SELECT (SELECT fence FROM ins), "
                 "(SELECT " REMAINING_MS " FROM %s WHERE name = $1), (SELECT fresh FROM ins)",
                 t, s, ttl3, s, ttl3, DLOCK__PG_FRESH_MS, t);
    break;
  case DLOCK__PG_SQL_LEASE_REFENCE:
    w = snprintf(buf, len,
                 "UPDATE %s SET fence = nextval('%s') WHERE name = $1 AND owner = $2::uuid "
                 "AND expires_at > clock_timestamp() RETURNING fence",
                 t, s);
    break;
  case DLOCK__PG_SQL_LEASE_GC:
    /* Rows locked by an acquire or a release in flight are skipped, and a
     * row taken over since it was found no longer matches once locked.
     * Rows ended at -infinity (by earlier versions) have no time of last
     * use: they are stamped now and go a grace later. */
    w = snprintf(buf, len,
                 "WITH o AS (SELECT name FROM %s WHERE expires_at > '-infinity' AND "
                 "expires_at < clock_timestamp() - $1::bigint * interval '1 ms' "
                 "ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED), "
                 "g AS (DELETE FROM %s d USING o WHERE d.name = o.name RETURNING 1), "
                 "l AS (UPDATE %s SET expires_at = clock_timestamp() WHERE name IN "
                 "(SELECT name FROM %s WHERE expires_at = '-infinity' LIMIT $2 "
                 "FOR UPDATE SKIP LOCKED) RETURNING 1) "
                 "SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM l)",
                 t, t, t, t);
    break;
  case DLOCK__PG_SQL_LEASE_RENEW:
    w = snprintf(buf, len,
                 "UPDATE %s AS d SET expires_at = %s "
                 "FROM unnest($1::text[], $2::uuid[], $3::bigint[]) AS r(name, owner, ttl) "
                 "WHERE d.name = r.name AND d.owner = r.owner "
                 "AND d.expires_at > clock_timestamp() RETURNING d.owner",
                 t, ttlr);
    break;
  case DLOCK__PG_SQL_LEASE_RELEASE:
    /* The row stays, ended now, for a grace (see DLOCK__PG_SQL_LEASE_TRY):
     * the next holder within it goes through the UPDATE branch of
     * acquire; the clean-up deletes it after. */
    w = snprintf(buf, len,
                 "WITH d AS (UPDATE %s SET expires_at = clock_timestamp() WHERE name = $1 "
                 "AND owner = $2::uuid AND expires_at > clock_timestamp() RETURNING name) "
                 "SELECT true, pg_notify('%s', name) FROM d",
                 t, ch);
    break;
  case DLOCK__PG_SQL_LEASE_INSPECT:
    w = snprintf(buf, len,
                 "SELECT owner, fence, label, " REMAINING_MS
                 " FROM %s WHERE name = $1 AND expires_at > clock_timestamp()",
                 t);
    break;
  case DLOCK__PG_SQL_LISTEN:
    w = snprintf(buf, len, "LISTEN %s", ch);
    break;
  case DLOCK__PG_SQL_SCHEMA_CHECK:
    w = snprintf(buf, len,
                 "SELECT to_regclass('%s') IS NOT NULL, to_regclass('%s') IS NOT NULL, "
                 "to_regclass('%s') IS NOT NULL",
                 s, t, n->index);
    break;
  case DLOCK__PG_SQL_SCHEMA_CREATE_SEQ:
  case DLOCK__PG_SQL_SCHEMA_CREATE_LEASE:
  case DLOCK__PG_SQL_SCHEMA_CREATE_INDEX: {
    /* Serialised: two CREATE ... IF NOT EXISTS racing each other can still
     * fail on the catalog's unique index. */
    int32_t k = (int32_t)(uint32_t)dlock__pg_advisory_key(n->prefix, "schema", 6);
    char lock[96];
    snprintf(lock, sizeof lock, SCHEMA_LOCK, k);
    /* An index is created in its table's schema, named without it. */
    const char *dot = strchr(n->index, '.');
    const char *iname = dot ? dot + 1 : n->index;
    if (which == DLOCK__PG_SQL_SCHEMA_CREATE_SEQ)
      w = snprintf(buf, len, "BEGIN; %s CREATE SEQUENCE IF NOT EXISTS %s; COMMIT", lock, s);
    else if (which == DLOCK__PG_SQL_SCHEMA_CREATE_INDEX)
      w = snprintf(buf, len, "BEGIN; %s CREATE INDEX IF NOT EXISTS %s ON %s (expires_at); COMMIT",
                   lock, iname, t);
    else
      w = snprintf(buf, len,
                   "BEGIN; %s CREATE SEQUENCE IF NOT EXISTS %s; "
                   "CREATE TABLE IF NOT EXISTS %s (name text PRIMARY KEY, owner uuid NOT NULL, "
                   "fence bigint NOT NULL, expires_at timestamptz NOT NULL, "
                   "label text NOT NULL DEFAULT ''); "
                   "CREATE INDEX IF NOT EXISTS %s ON %s (expires_at); COMMIT",
                   lock, s, t, iname, t);
    break;
  }
  case DLOCK__PG_SQL_LEASE_LIST:
    /* starts_with compares bytes, where LIKE would read '%' and '_' in a
     * key as patterns.  Pages follow the primary key's order, so that a
     * walk over a big table can be one pass along its index rather than a
     * sort per page. */
    w = snprintf(buf, len,
                 "SELECT name, owner, fence, label, " REMAINING_MS
                 " FROM %s WHERE name > $1 AND starts_with(name, $2) "
                 "AND expires_at > clock_timestamp() ORDER BY name LIMIT $3::int",
                 t);
    break;
  case DLOCK__PG_SQL_LEASE_BREAK:
    /* FOR UPDATE reads the row as it is once locked, not as the
     * statement's snapshot had it: a holder that renewed, released or
     * gave way meanwhile is judged as it is now, and nobody changes the
     * row between that judgement and the UPDATE.  Ended as a release ends
     * it (the row stays for the grace, see DLOCK__PG_SQL_LEASE_RELEASE),
     * so the holder's next renewal finds it ended, the next acquire takes
     * it over with a later token, and waiters hear the same NOTIFY. */
    w = snprintf(buf, len,
                 "WITH c AS MATERIALIZED (SELECT name, owner, fence, label, " REMAINING_MS
                 " AS ttl, CASE WHEN $2 <> '' THEN replace(owner::text, '-', '') = "
                 "replace(lower($2), '-', '') WHEN $3::numeric <> 0 THEN fence = $3::numeric "
                 "ELSE true END AS ok FROM %s WHERE name = $1 AND expires_at > clock_timestamp() "
                 "FOR UPDATE), "
                 "d AS (UPDATE %s AS u SET expires_at = clock_timestamp() FROM c "
                 "WHERE u.name = c.name AND c.ok RETURNING u.name) "
                 "SELECT c.ok, c.owner, c.fence, c.label, c.ttl, "
                 "(SELECT count(pg_notify('%s', name)) FROM d) FROM c",
                 t, t, ch);
    break;
  case DLOCK__PG_SQL_ADV_BREAK:
  case DLOCK__PG_SQL_ADV_BREAK_NOWAIT:
    /* An advisory lock can be freed only by the session holding it, so a
     * break ends that session, and with it every lock it holds.  pg_locks
     * is read a second time as the holder's row is projected, just before
     * the signal, so that a session that gave the lock up after the first
     * read is left alone; the sessions in $3 (the caller's own, whose
     * locks it gives back itself) are never signalled.  From 14 on the
     * server waits up to $4 ms for the session to be gone, and its locks
     * with it. */
    /* The last parameter is the server process the caller saw holding
     * the lock (0: none named): another one is not signalled. */
    w = snprintf(buf, len,
                 "WITH h AS MATERIALIZED (SELECT pid FROM pg_locks WHERE " ADV_HELD
                 " AND pid <> pg_backend_pid()) "
                 "SELECT h.pid, h.pid = ANY($3::int[]), CASE WHEN h.pid <> ALL($3::int[]) AND "
                 "($%d::int = 0 OR h.pid = $%d::int) AND "
                 "EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = h.pid AND " ADV_HELD
                 ") THEN pg_terminate_backend(h.pid%s) END FROM h",
                 which == DLOCK__PG_SQL_ADV_BREAK ? 5 : 4, which == DLOCK__PG_SQL_ADV_BREAK ? 5 : 4,
                 which == DLOCK__PG_SQL_ADV_BREAK ? ", $4::bigint" : "");
    break;
  case DLOCK__PG_SQL_COUNT:
    break;
  }
  if (w < 0 || (size_t)w >= len)
    return dlock_seterr(DLOCK_EINVAL, "postgres: statement %d does not fit", (int)which);
  return 0;
}

/* ---- connection string ---- */

/* A growing string; on allocation failure it stays failed. */
struct str {
  char *s;
  size_t len, cap;
  int failed;
};

static void str_add(struct str *b, const char *p, size_t n) {
  if (b->failed)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = (b->len + n + 1) * 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
      b->failed = 1;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->len, p, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void str_cat(struct str *b, const char *p) { str_add(b, p, strlen(p)); }

/* P percent-encoded: everything but RFC 3986's unreserved characters, so
 * that no ':', '@', '/', ',', '?', '&' or '=' can end a part early. */
static void str_enc(struct str *b, const char *p) {
  char *e = curl_easy_escape(NULL, p, 0);
  if (!e) {
    b->failed = 1;
    return;
  }
  str_cat(b, e);
  curl_free(e);
}

char *dlock__pg_conninfo(const dlock_url *u, const char *const *names, const char *const *values,
                         size_t n, int *rc) {
  const char *scheme = dlock_url_scheme(u);
  if (!scheme || (strcmp(scheme, "postgres") != 0 && strcmp(scheme, "postgresql") != 0)) {
    *rc = dlock_seterr(DLOCK_EINVAL, "postgres: expected postgres://...");
    return NULL;
  }
  struct str b = {NULL, 0, 0, 0};
  str_cat(&b, "postgresql://");
  const char *user = dlock_url_user(u), *pw = dlock_url_password(u);
  if (user || pw) {
    str_enc(&b, user ? user : "");
    if (pw) {
      str_cat(&b, ":");
      str_enc(&b, pw);
    }
    str_cat(&b, "@");
  }
  for (size_t i = 0; i < dlock_url_host_count(u); i++) {
    const char *h = dlock_url_host(u, i);
    if (i)
      str_cat(&b, ",");
    /* An IPv6 literal keeps its brackets; curl checked what is inside. */
    if (h[0] == '[')
      str_cat(&b, h);
    else
      str_enc(&b, h);
    if (dlock_url_port(u, i)) {
      char port[16];
      snprintf(port, sizeof port, ":%d", dlock_url_port(u, i));
      str_cat(&b, port);
    }
  }
  const char *path = dlock_url_path(u);
  if (path && path[0] == '/') {
    str_cat(&b, "/");
    str_enc(&b, path + 1);
  }
  for (size_t i = 0; i < n; i++) {
    str_cat(&b, i ? "&" : "?");
    str_enc(&b, names[i]);
    str_cat(&b, "=");
    str_enc(&b, values[i]);
  }
  if (b.failed) {
    if (b.s) {
      memset(b.s, 0, b.cap);
      free(b.s);
    }
    *rc = dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
    return NULL;
  }
  return b.s;
}

static int same(const char *known, const char *q, size_t n) {
  return known && strlen(known) == n && memcmp(known, q, n) == 0;
}

/* Whether the quoted part Q (N bytes) of a libpq message may be shown. */
static int harmless(const dlock_url *u, const char *const *names, const char *const *values,
                    size_t np, const char *q, size_t n) {
  const char *sec;
  for (size_t i = 0; (sec = dlock__url_secret(u, i)) != NULL; i++)
    if (memmem(q, n, sec, strlen(sec)))
      return 0;
  /* libpq names the socket it tried, not the directory the URL gave. */
  if (n > 0 && q[0] == '/')
    return 1;
  const char *path = dlock_url_path(u);
  if (same(dlock_url_user(u), q, n) || (path && path[0] == '/' && same(path + 1, q, n)))
    return 1;
  for (size_t i = 0; i < dlock_url_host_count(u); i++) {
    const char *h = dlock_url_host(u, i);
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[') { /* libpq shows an IPv6 address bare */
      h++;
      hl -= 2;
    }
    if (hl == n && memcmp(h, q, n) == 0)
      return 1;
  }
  /* A secret parameter's value is one of the secrets above. */
  for (size_t i = 0; i < np; i++)
    if (same(names[i], q, n) || same(values[i], q, n))
      return 1;
  return 0;
}

const char *dlock__pg_safe_message(const dlock_url *u, const char *const *names,
                                   const char *const *values, size_t np, const char *msg,
                                   char *buf, size_t len) {
  if (!len)
    return buf;
  if (!msg || !*msg)
    msg = "connection failed";
  size_t end = strcspn(msg, "\n"), o = 0;
  for (size_t i = 0; i < end && o + 1 < len;) {
    const char *close = msg[i] == '"' ? memchr(msg + i + 1, '"', end - i - 1) : NULL;
    if (!close) {
      /* an unmatched quote hides the rest of the line */
      if (msg[i] == '"') {
        snprintf(buf + o, len - o, "\"***");
        return buf;
      }
      buf[o++] = msg[i++];
      continue;
    }
    size_t qn = (size_t)(close - (msg + i + 1));
    const char *shown = harmless(u, names, values, np, msg + i + 1, qn) ? NULL : "***";
    int w = shown ? snprintf(buf + o, len - o, "\"%s\"", shown)
                  : snprintf(buf + o, len - o, "\"%.*s\"", (int)qn, msg + i + 1);
    o += (size_t)w < len - o ? (size_t)w : len - o - 1;
    i += qn + 2;
  }
  buf[o] = '\0';
  return buf;
}

/* ---- list prefixes and owners ---- */

long dlock__pg_prefix_text_len(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c < 0x80) {
      i++;
      continue;
    }
    /* RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF;
     * the second byte is where those show. */
    if (c >= 0xc2 && c <= 0xdf) {
      need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      lo = c == 0xe0 ? 0xa0 : 0x80;
      hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      lo = c == 0xf0 ? 0x90 : 0x80;
      hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
      return -1;
    }
    size_t j = 1;
    for (; j <= need && i + j < n; j++) {
      unsigned d = p[i + j];
      if (d < (j == 1 ? lo : 0x80) || d > (j == 1 ? hi : 0xbf))
        return -1;
    }
    if (j <= need)
      return (long)i;
    i += need + 1;
  }
  return (long)n;
}

int dlock__pg_owner_text_ok(const char *s) {
  for (; *s; s++)
    if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F') ||
          *s == '-'))
      return 0;
  return 1;
}

int dlock__pg_owner_names(const char *s, const char *owner) {
  for (;; s++) {
    if (*s == '-')
      continue;
    char c = *s >= 'A' && *s <= 'F' ? (char)(*s - 'A' + 'a') : *s;
    if (c != *owner)
      return 0;
    if (!c)
      return 1;
    owner++;
  }
}

/* ---- arrays ---- */

char *dlock__pg_text_array(const char *const *items, size_t n) {
  size_t cap = 3;
  for (size_t i = 0; i < n; i++)
    cap += 2 * strlen(items[i]) + 3;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  size_t o = 0;
  out[o++] = '{';
  for (size_t i = 0; i < n; i++) {
    if (i)
      out[o++] = ',';
    out[o++] = '"';
    for (const char *p = items[i]; *p; p++) {
      if (*p == '"' || *p == '\\')
        out[o++] = '\\';
      out[o++] = *p;
    }
    out[o++] = '"';
  }
  out[o++] = '}';
  out[o] = '\0';
  return out;
}

char *dlock__pg_int_array(const int64_t *items, size_t n) {
  size_t cap = 3 + n * 21;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  size_t o = 0;
  out[o++] = '{';
  for (size_t i = 0; i < n; i++)
    o += (size_t)snprintf(out + o, cap - o, "%s%" PRId64, i ? "," : "", items[i]);
  out[o++] = '}';
  out[o] = '\0';
  return out;
}

/* ---- values ---- */

int dlock__pg_parse_i64(const char *s, int64_t *out) {
  if (!s || !*s)
    return dlock_seterr(DLOCK_EBACKEND, "postgres: expected an integer, got nothing");
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || *end)
    return dlock_seterr(DLOCK_EBACKEND, "postgres: expected an integer, got '%.40s'", s);
  *out = v;
  return 0;
}

int dlock__pg_parse_bool(const char *s, int *out) {
  if (s && strcmp(s, "t") == 0)
    *out = 1;
  else if (s && strcmp(s, "f") == 0)
    *out = 0;
  else
    return dlock_seterr(DLOCK_EBACKEND, "postgres: expected a boolean, got '%.40s'",
                        s ? s : "");
  return 0;
}

int dlock__pg_uuid_to_hex(const char *s, char *out) {
  size_t o = 0;
  for (const char *p = s; p && *p; p++) {
    if (*p == '-')
      continue;
    if (!isxdigit((unsigned char)*p) || o >= 32)
      return dlock_seterr(DLOCK_EBACKEND, "postgres: malformed uuid '%.40s'", s);
    out[o++] = (char)tolower((unsigned char)*p);
  }
  if (o != 32)
    return dlock_seterr(DLOCK_EBACKEND, "postgres: malformed uuid '%.40s'", s ? s : "");
  out[o] = '\0';
  return 0;
}

int dlock__pg_decode_lease_try(const char *fence, const char *holder_ttl, uint64_t *token,
                               int64_t *holder_ttl_ms) {
  if (fence) {
    int64_t t;
    int rc = dlock__pg_parse_i64(fence, &t);
    if (rc < 0)
      return rc;
    *token = (uint64_t)t;
    return 1;
  }
  int64_t left;
  if (holder_ttl && dlock__pg_parse_i64(holder_ttl, &left) == 0)
    *holder_ttl_ms = left;
  return 0;
}

int dlock__pg_decode_lease_inspect(const char *const row[4], dlock_info *info) {
  int rc = 0;
  int64_t t = 0, ttl = -1;
  info->held = 1;
  if (dlock__pg_uuid_to_hex(row[0], info->owner) < 0 || dlock__pg_parse_i64(row[1], &t) < 0 ||
      dlock__pg_parse_i64(row[3], &ttl) < 0)
    rc = DLOCK_EBACKEND;
  info->token = (uint64_t)t;
  info->ttl_ms = ttl;
  snprintf(info->label, sizeof info->label, "%s", row[2] ? row[2] : "");
  return rc;
}

int dlock__pg_sqlstate_code(const char *st) {
  if (!st || strlen(st) != 5)
    return DLOCK_EBACKEND;
  if (strcmp(st, "55P03") == 0 || strcmp(st, "57014") == 0)
    return DLOCK_ETIMEDOUT;
  if (strncmp(st, "28", 2) == 0 || strcmp(st, "42501") == 0)
    return DLOCK_EAUTH;
  if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strcmp(st, "53300") == 0)
    return DLOCK_ECONN;
  return DLOCK_EBACKEND;
}

/* ---- the first exchange of a connection ---- */

static void put_u32(char *p, uint32_t v) {
  p[0] = (char)(v >> 24);
  p[1] = (char)(v >> 16);
  p[2] = (char)(v >> 8);
  p[3] = (char)v;
}

int dlock__pg_startup_packet(const char *user, const char *db, char *buf, size_t len) {
  const char *kv[4] = {"user", user ? user : "", "database", db ? db : ""};
  size_t n = 8;
  for (size_t i = 0; i < 4; i++)
    n += strlen(kv[i]) + 1;
  n += 1;
  if (n > len || n > 10000)
    return dlock_seterr(DLOCK_EINVAL, "postgres: user or database name too long");
  put_u32(buf, (uint32_t)n);
  put_u32(buf + 4, 3u << 16); /* protocol 3.0 */
  size_t o = 8;
  for (size_t i = 0; i < 4; i++) {
    size_t l = strlen(kv[i]) + 1;
    memcpy(buf + o, kv[i], l);
    o += l;
  }
  buf[o] = '\0';
  return (int)n;
}

/* An ErrorResponse bigger than this is not one the postmaster sends. */
#define FIRST_REPLY_MAX 8192

int dlock__pg_first_reply(const unsigned char *buf, size_t n, int *auth_ok) {
  *auth_ok = 0;
  if (n < 1)
    return DLOCK__PG_NEED_MORE;
  /* The postmaster decides on its state before authentication starts: any
   * authentication request means it let the connection in. */
  if (buf[0] == 'R') {
    if (n < 9)
      return DLOCK__PG_NEED_MORE;
    *auth_ok = buf[5] == 0 && buf[6] == 0 && buf[7] == 0 && buf[8] == 0;
    return 1;
  }
  if (buf[0] != 'E')
    return dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected first message type %d",
                        (int)buf[0]);
  if (n < 5)
    return DLOCK__PG_NEED_MORE;
  uint32_t mlen = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 |
                  (uint32_t)buf[4];
  if (mlen < 4 || mlen > FIRST_REPLY_MAX)
    return dlock_seterr(DLOCK_EBACKEND, "postgres: malformed first message");
  if (n < 1 + (size_t)mlen)
    return DLOCK__PG_NEED_MORE;
  /* Fields: a code byte and a NUL-terminated string each, then a NUL. */
  size_t i = 5, end = 1 + (size_t)mlen;
  while (i < end && buf[i] != '\0') {
    unsigned char code = buf[i++];
    const unsigned char *v = buf + i;
    const unsigned char *z = memchr(v, '\0', end - i);
    if (!z)
      break;
    if (code == 'C')
      return (size_t)(z - v) == 5 && memcmp(v, "57P03", 5) == 0 ? 0 : 1;
    i = (size_t)(z - buf) + 1;
  }
  return dlock_seterr(DLOCK_EBACKEND, "postgres: first message has no SQLSTATE");
}
