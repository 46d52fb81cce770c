/* The URL redactor and the message scrubber: no secret byte survives.
 *
 * The input is not a URL but the parts of one, separated by '\n': scheme,
 * user, password, hosts, path, then parameter names and values in turn.
 * The harness joins them into a URL, so it knows what the secrets are
 * whether or not the URL parses: the password, and the value of every
 * parameter whose name the redactor counts as secret (url.c secret_name:
 * the name, percent-decoded, contains one of SECRET_WORDS).  Bytes that
 * would move a part's boundaries ('/' in a password ends the authority,
 * '&' in a value starts a parameter) are dropped from that part, since
 * the URL then no longer says what the harness meant.
 *
 * The ideal redaction is the joined URL with each secret replaced by
 * "***".  Redacting can hide more than that (a URL that does not parse is
 * redacted loosely) but never less, so every 4-byte piece of a secret
 * occurs in the output at most as often as in the ideal form, where it
 * can only come from a public part.  The same holds for the secrets the
 * parser itself reports.  Built with FUZZ_SCRUB (fuzz_err_scrub), it also
 * checks the scrubbed message of an error that quotes the URL, cut to the
 * message buffer at any point, both as made and afterwards. */
#include <strings.h>

#include "fuzz.h"

#include "core/internal.h"

static const char *const SECRET_WORDS[] = {"pass", "pwd",  "token", "secret",
                                           "key",  "auth", "cred"};

enum { F_SCHEME, F_USER, F_PASSWORD, F_HOSTS, F_PATH, F_PARAMS };

/* What a part must not contain, by part. */
static const char *const DROP[] = {":/@?#&", "/?#", "/?#", "/?#", "?#"};

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static void add(buf *b, const char *p, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    if (!(b->p = realloc(b->p, b->cap)))
      abort();
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void adds(buf *b, const char *s) { add(b, s, strlen(s)); }

/* F without the bytes in DROPPED. */
static void add_kept(buf *b, const uint8_t *f, size_t n, const char *dropped) {
  for (size_t i = 0; i < n; i++)
    if (f[i] && !strchr(dropped, f[i]))
      add(b, (const char *)f + i, 1);
}

static int hexv(char c) {
  return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* S percent-decoded into a new string, NULL when it does not decode. */
static char *pct_decode(const char *s) {
  size_t n = strlen(s), o = 0;
  char *d = malloc(n + 1);
  if (!d)
    abort();
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      d[o++] = s[i];
    } else if (i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
      d[o++] = (char)(hexv(s[i + 1]) << 4 | hexv(s[i + 2]));
      i += 2;
    } else {
      free(d);
      return NULL;
    }
  }
  d[o] = '\0';
  return d;
}

static int secret_name(const char *raw) {
  char *dec = pct_decode(raw);
  if (!dec)
    return 1; /* the URL does not parse; loose redaction hides every value */
  int hit = 0;
  for (size_t w = 0; w < sizeof SECRET_WORDS / sizeof *SECRET_WORDS && !hit; w++)
    hit = strcasestr(dec, SECRET_WORDS[w]) != NULL;
  free(dec);
  return hit;
}

#define MAX_SECRETS 64
typedef struct secrets {
  char *s[MAX_SECRETS];
  size_t n;
} secrets;

static void secret_add(secrets *ss, const char *s) {
  if (s && strlen(s) >= 4 && ss->n < MAX_SECRETS)
    ss->s[ss->n++] = strdup(s);
}

/* The raw form and, when it decodes, the decoded one. */
static void secret_add_forms(secrets *ss, const char *raw) {
  secret_add(ss, raw);
  char *d = pct_decode(raw);
  secret_add(ss, d);
  free(d);
}

/* No 4-byte piece of S (at every 4th offset and at its end) shows in OUT
 * more often than in IDEAL.  Pieces holding '*' are skipped: "***" may
 * stand anywhere in OUT. */
static void check_out(const char *what, const char *out, const char *ideal, const char *s) {
  size_t sn = strlen(s), on = strlen(out), in = strlen(ideal);
  for (size_t k = 0; k * 4 < sn; k++) {
    const char *w = s + (k * 4 + 4 <= sn ? k * 4 : sn - 4);
    if (memchr(w, '*', 4) || !memmem(out, on, w, 4))
      continue;
    size_t co = fuzz_count(out, on, w, 4), ci = fuzz_count(ideal, in, w, 4);
    if (co > ci)
      fuzz_fail("%s \"%s\" shows \"%.4s\" of secret \"%s\" %zu times, the ideal \"%s\" %zu",
                what, out, w, s, co, ideal, ci);
  }
}

static void check_all(const char *what, const char *out, const char *ideal, const secrets *ss) {
  for (size_t i = 0; i < ss->n; i++)
    check_out(what, out, ideal, ss->s[i]);
}

/* Every message quoting URL, cut at each length the buffer allows by a
 * lead of PAD bytes, is scrubbed both as made (the URL in scope) and
 * afterwards. */
#ifdef FUZZ_SCRUB
static void check_scrub(const dlock_url *u, const char *url, const char *ideal,
                        const secrets *ss, size_t pad) {
  char lead[512];
  memset(lead, '.', sizeof lead);
  pad %= sizeof lead;
  buf ib = {0};
  add(&ib, lead, pad);
  adds(&ib, ideal);
  const dlock_url *was = dlock__err_scope(u);
  dlock_seterr(DLOCK_EINVAL, "%.*s%s", (int)pad, lead, url);
  dlock__err_scope(was);
  check_all("scoped message", dlock_client_errmsg(NULL), ib.p, ss);
  dlock_seterr(DLOCK_EINVAL, "%.*s%s", (int)pad, lead, url);
  dlock__err_scrub(u);
  check_all("scrubbed message", dlock_client_errmsg(NULL), ib.p, ss);
  free(ib.p);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_fields c = {data, size};
  const uint8_t *f[5] = {0};
  size_t fn[5] = {0};
  for (int i = 0; i < 5; i++)
    if (!fuzz_next(&c, '\n', &f[i], &fn[i]))
      f[i] = NULL;

  /* sideal: the same for the scrubber, which replaces secrets where they
   * occur and so has nothing to replace for an empty one. */
  buf url = {0}, ideal = {0}, sideal = {0}, part = {0};
  secrets ss = {{0}, 0};
  adds(&url, "");
  adds(&ideal, "");
  adds(&sideal, "");
  add_kept(&url, f[F_SCHEME], fn[F_SCHEME], DROP[F_SCHEME]);
  adds(&url, "://");
  adds(&ideal, url.p);
  adds(&sideal, url.p);
  buf user = {0}, pw = {0};
  adds(&user, "");
  adds(&pw, "");
  add_kept(&user, f[F_USER], fn[F_USER], DROP[F_USER]);
  add_kept(&pw, f[F_PASSWORD], fn[F_PASSWORD], DROP[F_PASSWORD]);
  if (user.n || pw.n) {
    adds(&url, user.p);
    adds(&ideal, user.p);
    adds(&sideal, user.p);
    if (pw.n) {
      adds(&url, ":");
      adds(&url, pw.p);
      adds(&ideal, ":***");
      adds(&sideal, ":***");
      secret_add_forms(&ss, pw.p);
    }
    adds(&url, "@");
    adds(&ideal, "@");
    adds(&sideal, "@");
  }
  adds(&part, "");
  add_kept(&part, f[F_HOSTS], fn[F_HOSTS], DROP[F_HOSTS]);
  if (f[F_PATH] && fn[F_PATH])
    adds(&part, "/");
  add_kept(&part, f[F_PATH], fn[F_PATH], DROP[F_PATH]);
  adds(&url, part.p);
  adds(&ideal, part.p);
  adds(&sideal, part.p);

  const uint8_t *nf, *vf;
  size_t nn, vn;
  for (int i = 0; fuzz_next(&c, '\n', &nf, &nn); i++) {
    int has_value = fuzz_next(&c, '\n', &vf, &vn);
    buf name = {0}, value = {0};
    adds(&name, "");
    adds(&value, "");
    add_kept(&name, nf, nn, "&=#");
    if (has_value)
      add_kept(&value, vf, vn, "&#");
    adds(&url, i ? "&" : "?");
    adds(&ideal, i ? "&" : "?");
    adds(&sideal, i ? "&" : "?");
    adds(&url, name.p);
    adds(&ideal, name.p);
    adds(&sideal, name.p);
    if (has_value) {
      adds(&url, "=");
      adds(&url, value.p);
      adds(&ideal, "=");
      adds(&sideal, "=");
      if (secret_name(name.p)) {
        adds(&ideal, "***");
        adds(&sideal, value.n ? "***" : "");
        secret_add_forms(&ss, value.p);
      } else {
        adds(&ideal, value.p);
        adds(&sideal, value.p);
      }
    }
    free(name.p);
    free(value.p);
  }

  /* dlock_url_redact, whole and into buffers too small for it */
  char out[16384];
  int need = dlock_url_redact(url.p, out, sizeof out);
  FUZZ_CHECK(need >= 0, "dlock_url_redact failed: %d", need);
  check_all("redacted", out, ideal.p, &ss);
  if ((size_t)need < sizeof out) {
    size_t cut = size ? data[0] % ((size_t)need + 1) : 0;
    char small[16384];
    int again = dlock_url_redact(url.p, small, cut);
    FUZZ_CHECK(again == need, "redact into %zu bytes says %d, not %d", cut, again, need);
    if (cut) {
      FUZZ_CHECK(strlen(small) == (cut - 1 < (size_t)need ? cut - 1 : (size_t)need) &&
                     memcmp(small, out, strlen(small)) == 0,
                 "redact into %zu bytes is not a prefix", cut);
    }
  }

  dlock_url *u = NULL;
  if (dlock__url_parse(url.p, &u) == 0) {
    FUZZ_CHECK(strcmp(dlock_url_redacted(u), out) == 0,
               "dlock_url_redacted \"%s\" differs from dlock_url_redact \"%s\"",
               dlock_url_redacted(u), out);
    const char *s;
    for (size_t i = 0; (s = dlock__url_secret(u, i)) != NULL; i++)
      secret_add(&ss, s);
    check_all("redacted", out, ideal.p, &ss);
#ifdef FUZZ_SCRUB
    check_scrub(u, url.p, sideal.p, &ss, size ? data[size - 1] * 3u : 0);
    check_scrub(u, url.p, sideal.p, &ss, 511 - (url.n % 512));
#endif
    dlock__url_free(u);
  }

  for (size_t i = 0; i < ss.n; i++)
    free(ss.s[i]);
  free(url.p);
  free(ideal.p);
  free(sideal.p);
  free(part.p);
  free(user.p);
  free(pw.p);
  return 0;
}
