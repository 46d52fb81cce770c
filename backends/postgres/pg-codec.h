/* PostgreSQL backend: everything that does not touch a socket.  Names,
 * the advisory key hash, the SQL text, the libpq connection string and the
 * decoding of result values, so that unit tests reach them without a
 * server. */
#ifndef DLOCK_PG_CODEC_H
#define DLOCK_PG_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "backend-util.h"

#define DLOCK__PG_DEFAULT_PREFIX "dlock"

/* SQL object names derived from ?prefix=: "[schema.]name" where every part
 * is [a-z_][a-z0-9_]*, so the names need no quoting and match what a psql
 * user types.  The sequence "<name>_fence" gives tokens in both modes; the
 * table "<name>_lease" and the NOTIFY channel of the same name serve the
 * lease mode. */
typedef struct dlock__pg_names {
  char prefix[128];   /* as given, for the advisory key hash */
  char sequence[136]; /* [schema.]name_fence */
  char table[136];    /* [schema.]name_lease */
  char channel[72];   /* name_lease (channels are not schema-qualified) */
  char index[136];    /* [schema.]name_exp: the lease table's expires_at index */
} dlock__pg_names;

/* 0, or DLOCK_EINVAL with a message naming the rule that PREFIX breaks. */
DLOCK__HIDDEN int dlock__pg_names_init(const char *prefix, dlock__pg_names *n);

/* The advisory lock key of KEY: XXH64 (seed 0) over prefix, one NUL byte
 * and the key, as a signed bigint.  The NUL keeps ("a/b","c") apart from
 * ("a","b/c"); neither part can contain one. */
DLOCK__HIDDEN int64_t dlock__pg_advisory_key(const char *prefix, const char *key,
                                             size_t keylen);
/* The key as pg_locks shows it: classid (high half) and objid (low half). */
DLOCK__HIDDEN void dlock__pg_advisory_split(int64_t k, uint32_t *classid, uint32_t *objid);

/* The statements.  Each is built once per client into BUF (size LEN);
 * DLOCK_EINVAL if it does not fit. */
enum dlock__pg_sql {
  DLOCK__PG_SQL_ADV_TRY,     /* $1 key -> fence or NULL (busy) */
  DLOCK__PG_SQL_ADV_WAIT,    /* $1 key, $2 lock_timeout -> fence; 55P03 on timeout */
  DLOCK__PG_SQL_ADV_UNLOCK,  /* $1 key -> bool */
  DLOCK__PG_SQL_ADV_INSPECT, /* $1 classid, $2 objid -> pid of the holder, or no row */
  DLOCK__PG_SQL_PING,        /* -> pg_backend_pid() */
  DLOCK__PG_SQL_SESSION,     /* $1 keepalive idle s: settings an advisory session needs */
  DLOCK__PG_SQL_LEASE_TRY,   /* $1 name, $2 owner, $3 ttl ms, $4 label -> fence|NULL, holder ttl|NULL,
                                fresh|NULL (false: the fence may predate the row; redraw it) */
  DLOCK__PG_SQL_LEASE_RENEW, /* $1 names[], $2 owners[], $3 ttls[] -> owner of each renewed row */
  DLOCK__PG_SQL_LEASE_RELEASE, /* $1 name, $2 owner -> one row if it was ours and live */
  DLOCK__PG_SQL_LEASE_INSPECT, /* $1 name -> owner, fence, label, ttl ms */
  DLOCK__PG_SQL_LISTEN,      /* LISTEN channel */
  DLOCK__PG_SQL_SCHEMA_CHECK, /* -> sequence exists, table exists, index exists */
  DLOCK__PG_SQL_SCHEMA_CREATE_SEQ,   /* one transaction, serialised by an xact advisory lock */
  DLOCK__PG_SQL_SCHEMA_CREATE_LEASE, /* the same, with the lease table and its index */
  DLOCK__PG_SQL_LEASE_REFENCE, /* $1 name, $2 owner -> a fence drawn now, if the lease is ours */
  DLOCK__PG_SQL_LEASE_GC,      /* $1 grace ms, $2 batch -> rows deleted, legacy rows stamped */
  DLOCK__PG_SQL_SCHEMA_CREATE_INDEX, /* the index alone, for a table made before it */
  DLOCK__PG_SQL_LEASE_LIST,    /* $1 names after, $2 name prefix, $3 limit -> name, owner, fence,
                                  label, ttl ms of held rows, in name order */
  DLOCK__PG_SQL_LEASE_BREAK,   /* $1 name, $2 owner hex or '', $3 token or 0 -> no row (not held),
                                  or matched, owner, fence, label, ttl ms, notified */
  DLOCK__PG_SQL_ADV_BREAK,     /* $1 classid, $2 objid, $3 pids spared int[], $4 wait ms -> pid of
                                  the holder, spared, ended (NULL: not tried) */
  DLOCK__PG_SQL_ADV_BREAK_NOWAIT, /* the same without $4, for servers before 14 */
  DLOCK__PG_SQL_COUNT
};
DLOCK__HIDDEN int dlock__pg_sql(const dlock__pg_names *n, enum dlock__pg_sql which, char *buf,
                                size_t len);

/* The name SQL is prepared under: "dlock_" and the XXH64 of the text in
 * hex, into BUF (at least DLOCK__PG_STMT_NAME_MAX bytes).  The same name
 * always means the same text, so a session that has the name prepared
 * (one a pooler shares, prepared by another client) runs this very
 * statement. */
#define DLOCK__PG_STMT_NAME_MAX 24
DLOCK__HIDDEN void dlock__pg_statement_name(const char *sql, char *buf);

/* Lease rows: an ended row is deleted DLOCK__PG_GRACE_MS(ttl) after its
 * last use, and a grant whose statement ran DLOCK__PG_FRESH_MS or longer
 * draws its fence again.  The first must exceed the second for every
 * client of a table, whatever its ttl (see DLOCK__PG_SQL_LEASE_TRY). */
#define DLOCK__PG_FRESH_MS 10000
#define DLOCK__PG_GRACE_MIN_MS 60000
#define DLOCK__PG_GRACE_MS(ttl_ms)                                                          \
  ((ttl_ms) * 10 > DLOCK__PG_GRACE_MIN_MS ? (ttl_ms) * 10 : DLOCK__PG_GRACE_MIN_MS)

/* The libpq connection URI for U: user, password, hosts and database
 * written again, percent-encoded, from what the core parsed, never copied
 * from the string the caller gave (libpq ends the userinfo at the first
 * '@' where the core takes the last, and would quote what it cannot
 * decode); as query only the parameters in NAMES/VALUES (the ones dlock
 * does not use itself).  Returns a malloc'd string, or NULL with a message
 * set (DLOCK_EINVAL / DLOCK_ENOMEM in *rc). */
DLOCK__HIDDEN char *dlock__pg_conninfo(const dlock_url *u, const char *const *names,
                                       const char *const *values, size_t n, int *rc);

/* The first line of libpq's message MSG into BUF (LEN bytes), every quoted
 * part ("...") that is not known to be harmless replaced by "***": libpq
 * quotes the pieces of a connection string it rejects or could not use,
 * which may be secrets.  Harmless: a host, the user or the database of U,
 * one of the NP parameter names or values passed to libpq, or a socket
 * path; never anything that contains one of U's secrets.  Returns BUF. */
DLOCK__HIDDEN const char *dlock__pg_safe_message(const dlock_url *u, const char *const *names,
                                                 const char *const *values, size_t np,
                                                 const char *msg, char *buf, size_t len);

/* How many leading bytes of a list prefix P (N bytes) can go to the server
 * as text: N when P is UTF-8; fewer when P ends part-way through a
 * character, which the server would refuse as text (the names it returns
 * are then compared with all of P byte by byte); -1 when P holds bytes
 * that no UTF-8 key can begin with. */
DLOCK__HIDDEN long dlock__pg_prefix_text_len(const char *p, size_t n);

/* Whether S can name a lease row's owner: hex digits and dashes only (a
 * uuid written either way).  Anything else names no holder. */
DLOCK__HIDDEN int dlock__pg_owner_text_ok(const char *s);
/* Whether owner S names OWNER (32 lower-case hex digits) as the lease
 * statements compare them: case and dashes aside. */
DLOCK__HIDDEN int dlock__pg_owner_names(const char *s, const char *owner);

/* A PostgreSQL array literal of N strings ({"a","b\"c"}), malloc'd; for
 * passing many names or owners as one text[] parameter. */
DLOCK__HIDDEN char *dlock__pg_text_array(const char *const *items, size_t n);
/* The same for integers ({1,2,3}). */
DLOCK__HIDDEN char *dlock__pg_int_array(const int64_t *items, size_t n);

/* Text-format values from result sets.  0, or DLOCK_EBACKEND when malformed. */
DLOCK__HIDDEN int dlock__pg_parse_i64(const char *s, int64_t *out);
DLOCK__HIDDEN int dlock__pg_parse_bool(const char *s, int *out);
/* A uuid as PostgreSQL prints it (8-4-4-4-12) to the 32 hex digits dlock
 * uses for owners; OUT has room for 33 bytes. */
DLOCK__HIDDEN int dlock__pg_uuid_to_hex(const char *s, char *out);

/* The row of DLOCK__PG_SQL_LEASE_TRY: FENCE and HOLDER_TTL as text, NULL
 * for SQL NULL.  1 with *TOKEN when the lease is ours; 0 when another
 * owner holds it, with *HOLDER_TTL_MS its remaining ms when that parses
 * (else untouched); DLOCK_EBACKEND for a fence that does not parse. */
DLOCK__HIDDEN int dlock__pg_decode_lease_try(const char *fence, const char *holder_ttl,
                                             uint64_t *token, int64_t *holder_ttl_ms);
/* The row of DLOCK__PG_SQL_LEASE_INSPECT (owner uuid, fence, label, ttl ms
 * as text) into INFO: held, owner as hex, token, label (cut to fit) and
 * ttl_ms.  0, or DLOCK_EBACKEND when the owner, fence or ttl is malformed;
 * INFO is filled all the same, with 0 and -1 for what did not parse. */
DLOCK__HIDDEN int dlock__pg_decode_lease_inspect(const char *const row[4], dlock_info *info);

/* The first bytes a client sends on a new connection: a protocol 3.0
 * StartupMessage for USER and DB, into BUF (LEN bytes).  Its length, or
 * DLOCK_EINVAL when it does not fit. */
DLOCK__HIDDEN int dlock__pg_startup_packet(const char *user, const char *db, char *buf,
                                           size_t len);

/* What the server's first message on a new connection (the N bytes read so
 * far of BUF) says about the postmaster: 1 it let the connection in (an
 * authentication request, or an error decided after it did: a refused
 * login, too many clients); 0 it refused it for its state, SQLSTATE 57P03
 * (shutting down, starting up, in recovery); DLOCK__PG_NEED_MORE while the
 * message is incomplete; DLOCK_EBACKEND when it is not the protocol.
 * *AUTH_OK says whether it was AuthenticationOk (no password asked: the
 * session is starting and should be ended with a Terminate). */
#define DLOCK__PG_NEED_MORE 2
DLOCK__HIDDEN int dlock__pg_first_reply(const unsigned char *buf, size_t n, int *auth_ok);

/* The dlock code for an error's SQLSTATE (55P03 lock timeout, 57014
 * cancelled, 28xxx auth, 08xxx connection, 53xxx resources, ...). */
DLOCK__HIDDEN int dlock__pg_sqlstate_code(const char *sqlstate);

#endif
