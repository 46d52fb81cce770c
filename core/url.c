/* URL strings: scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]
 *
 * One tokenizer, split(), cuts a URL into its parts the RFC 3986 way: the
 * authority ends at the first '/', '?' or '#', the userinfo at the last '@'
 * inside the authority, the password at the first ':' of the userinfo.  The
 * parser and the redactor both use it, so what the redactor hides is what
 * the parser takes for a secret, wherever else an '@' or a ':' appears.
 * libcurl's URL API checks each host and port (names, IPv6 literals, port
 * range) and never sees the userinfo.  Percent-decoding is strict: a '%'
 * not followed by two hex digits, or a decoded NUL or control byte, makes
 * the URL invalid wherever it is, instead of a part being dropped or cut
 * short.  Pure: no I/O, any bytes in. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define URL_MAX 8192
#define HOSTS_MAX 32
#define MASK "***"

struct url_host {
  char *host;
  int port;
};

struct url_param {
  char *name;
  char *value;
  bool used;
  bool secret; /* its value is hidden in messages */
};

struct dlock_url {
  char *raw;
  char *scheme;
  char *user;
  char *password;
  char *path;
  char *redacted;
  struct url_host *hosts;
  size_t nhosts;
  struct url_param *params;
  size_t nparams;
  /* What dlock__err_scrub() hides: the password and the values of secret
   * parameters, each as written, decoded and re-encoded; longest first. */
  char **secrets;
  size_t nsecrets;
};

/* ---- tokens ---- */

/* Offsets into a URL string.  split() fails only without "://"; what the
 * parts contain is checked by the parser. */
struct tokens {
  size_t scheme_end; /* the scheme is [0, scheme_end), then "://" */
  size_t auth;       /* the authority is [auth, auth_end) */
  size_t auth_end;
  bool userinfo;     /* the authority has an '@', the last one at AT */
  size_t at;
  bool colon;        /* the userinfo has a ':', the first one at COLON_AT */
  size_t colon_at;
  size_t hosts;      /* the host list is [hosts, auth_end) */
  size_t path_end;   /* the path is [auth_end, path_end) */
  bool query;        /* s[path_end] == '?', the query is [path_end + 1, query_end) */
  size_t query_end;  /* at the '#' or the end */
};

static bool split(const char *s, struct tokens *t) {
  memset(t, 0, sizeof *t);
  const char *sep = strstr(s, "://");
  if (!sep)
    return false;
  t->scheme_end = (size_t)(sep - s);
  t->auth = t->scheme_end + 3;
  t->auth_end = t->auth + strcspn(s + t->auth, "/?#");
  for (size_t i = t->auth; i < t->auth_end; i++) {
    if (s[i] == '@') {
      t->userinfo = true;
      t->at = i;
    }
  }
  t->hosts = t->auth;
  if (t->userinfo) {
    const char *c = memchr(s + t->auth, ':', t->at - t->auth);
    if (c) {
      t->colon = true;
      t->colon_at = (size_t)(c - s);
    }
    t->hosts = t->at + 1;
  }
  t->path_end = t->auth_end + strcspn(s + t->auth_end, "?#");
  t->query = s[t->path_end] == '?';
  t->query_end = t->path_end + strcspn(s + t->path_end, "#");
  return true;
}

static bool scheme_ok(const char *s, size_t n) {
  if (n == 0 || !isalpha((unsigned char)s[0]))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))
      return false;
  return true;
}

/* ---- percent-decoding ---- */

enum dec_status { DEC_OK, DEC_BAD_ESCAPE, DEC_CONTROL, DEC_NOMEM };

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The N bytes at S decoded into a new string.  Stricter than
 * curl_easy_unescape(), which keeps a stray '%' as it is: the store's own
 * parser (libpq) might not, and then quotes the value in its error.  No
 * decoded byte may be NUL (it would cut the value short) or a control
 * character (no host, name, password or path needs one, and a line break
 * in something that ends up in a protocol line or a log does harm). */
static enum dec_status decode(const char *s, size_t n, char **out) {
  *out = NULL;
  char *d = malloc(n + 1);
  if (!d)
    return DEC_NOMEM;
  size_t o = 0;
  enum dec_status st = DEC_OK;
  for (size_t i = 0; i < n && st == DEC_OK; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '%') {
      if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
        st = DEC_BAD_ESCAPE;
        break;
      }
      c = (unsigned char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
      i += 2;
    }
    if (c < 0x20 || c == 0x7f)
      st = DEC_CONTROL;
    d[o++] = (char)c;
  }
  if (st != DEC_OK) {
    /* it may hold (part of) a password */
    memset(d, 0, n + 1);
    free(d);
    return st;
  }
  d[o] = '\0';
  *out = d;
  return DEC_OK;
}

/* ---- secrets ---- */

/* Query parameters whose values are hidden: any name containing one of
 * these, case-insensitively, compared after percent-decoding (names that
 * do not decode make the URL invalid).  It covers what the stores' own
 * libraries take as secrets (libpq password, sslpassword, passfile,
 * sslkey; Consul token; etcd password).  Hiding too much is harmless;
 * hiding too little is not. */
static bool secret_name(const char *name) {
  static const char *const words[] = {"pass", "pwd", "token", "secret", "key", "auth", "cred"};
  for (size_t w = 0; w < sizeof words / sizeof *words; w++)
    if (strcasestr(name, words[w]))
      return true;
  return false;
}

static void wipe_free(char *s) {
  if (s) {
    volatile char *p = s;
    while (*p)
      *p++ = '\0';
    free(s);
  }
}

/* Adds S (N bytes) to U's secrets unless empty or already there. */
static int add_secret(dlock_url *u, const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < u->nsecrets; i++)
    if (strlen(u->secrets[i]) == n && memcmp(u->secrets[i], s, n) == 0)
      return 0;
  char **ns = realloc(u->secrets, (u->nsecrets + 1) * sizeof *ns);
  if (!ns)
    return -1;
  u->secrets = ns;
  if (!(u->secrets[u->nsecrets] = strndup(s, n)))
    return -1;
  u->nsecrets++;
  return 0;
}

/* RAW as written in the URL, DECODED, and DECODED percent-encoded the way
 * a backend building a connection string for its library encodes it. */
static int add_secret_forms(dlock_url *u, const char *raw, size_t rawlen, const char *decoded) {
  if (add_secret(u, raw, rawlen) < 0 || add_secret(u, decoded, strlen(decoded)) < 0)
    return -1;
  char *enc = curl_easy_escape(NULL, decoded, 0);
  if (!enc)
    return -1;
  int rc = add_secret(u, enc, strlen(enc));
  curl_free(enc);
  return rc;
}

static int longest_first(const void *a, const void *b) {
  size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
  return la < lb ? 1 : la > lb ? -1 : 0;
}

const char *dlock__url_secret(const dlock_url *u, size_t i) {
  return u && i < u->nsecrets ? u->secrets[i] : NULL;
}

/* ---- redaction ---- */

struct sink {
  char *buf;
  size_t len; /* capacity of buf, NUL included */
  size_t o;   /* bytes wanted so far */
};

static void put(struct sink *k, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++, k->o++)
    if (k->o + 1 < k->len)
      k->buf[k->o] = p[i];
}

static void put_str(struct sink *k, const char *s) { put(k, s, strlen(s)); }

static int sink_end(struct sink *k) {
  if (k->len)
    k->buf[k->o < k->len ? k->o : k->len - 1] = '\0';
  return (int)(k->o > INT_MAX ? INT_MAX : k->o);
}

/* Byte ranges of the URL that the redacted form replaces by "***". */
struct mask {
  size_t off, len;
};

/* A URL that parsed: itself, with the password and the values of secret
 * parameters replaced. */
static void redact_parsed(const char *s, const struct mask *m, size_t nm, struct sink *k) {
  size_t i = 0;
  for (size_t j = 0; j < nm; j++) {
    put(k, s + i, m[j].off - i);
    put_str(k, MASK);
    i = m[j].off + m[j].len;
  }
  put_str(k, s + i);
}

/* The parameters in [P, END), names shown and values hidden, up to a
 * '#' (a fragment is dropped).  Returns where it stopped. */
static const char *put_params(struct sink *k, const char *p, const char *end) {
  while (p < end && *p != '#') {
    if (*p == '&') {
      put(k, "&", 1);
      p++;
      continue;
    }
    size_t left = (size_t)(end - p);
    size_t plen = strcspn(p, "&#"), nlen = strcspn(p, "=&#");
    if (plen > left)
      plen = left;
    if (nlen > plen)
      nlen = plen;
    put(k, p, nlen);
    if (nlen < plen)
      put_str(k, "=" MASK);
    p += plen;
  }
  return p;
}

/* A string that did not parse, so its parts are uncertain: a password may
 * hold an unencoded '/', '?' or '#', the "://" may be missing.  Everything
 * from the first ':' after the scheme to the last '@' is hidden (when
 * there are both), and so is every parameter value; a fragment is dropped.
 * Both the ':' and the '@' may sit inside the query, so a '?' before
 * either of them may begin it: the text from there to the ':' is shown as
 * a query is, and the text after the '@' as the rest of a value. */
static void redact_loose(const char *s, struct sink *k) {
  const char *sep = strstr(s, "://");
  const char *from;
  if (sep && scheme_ok(s, (size_t)(sep - s))) {
    from = sep + 3;
  } else {
    const char *c = strchr(s, ':');
    from = c ? c + 1 : s;
  }
  put(k, s, (size_t)(from - s));
  const char *p = from;
  const char *at = strrchr(from, '@');
  bool mid_value = false;
  if (at) {
    const char *colon = memchr(from, ':', (size_t)(at - from));
    if (colon) {
      const char *q = memchr(from, '?', (size_t)(colon - from));
      if (q) {
        put(k, from, (size_t)(q + 1 - from));
        put_params(k, q + 1, colon);
        put(k, ":", 1);
      } else {
        put(k, from, (size_t)(colon + 1 - from));
      }
      put_str(k, MASK "@");
      mid_value = memchr(from, '?', (size_t)(at - from)) != NULL;
      p = at + 1;
    }
  }
  if (mid_value) {
    size_t n = strcspn(p, "&#");
    if (n)
      put_str(k, MASK);
    p += n;
  } else {
    size_t n = strcspn(p, "?#");
    put(k, p, n);
    p += n;
    if (*p != '?')
      return;
    put(k, "?", 1);
    p++;
  }
  put_params(k, p, p + strlen(p));
}

static char *loose_dup(const char *s) {
  struct sink k = {NULL, 0, 0};
  redact_loose(s, &k);
  char *r = malloc(k.o + 1);
  if (r) {
    k = (struct sink){r, k.o + 1, 0};
    redact_loose(s, &k);
    sink_end(&k);
  }
  return r;
}

/* ---- parsing ---- */

void dlock__url_free(dlock_url *u) {
  if (!u)
    return;
  wipe_free(u->raw);
  free(u->scheme);
  free(u->user);
  wipe_free(u->password);
  free(u->path);
  free(u->redacted);
  for (size_t i = 0; i < u->nhosts; i++)
    free(u->hosts[i].host);
  free(u->hosts);
  for (size_t i = 0; i < u->nparams; i++) {
    free(u->params[i].name);
    if (u->params[i].secret)
      wipe_free(u->params[i].value);
    else
      free(u->params[i].value);
  }
  free(u->params);
  for (size_t i = 0; i < u->nsecrets; i++)
    wipe_free(u->secrets[i]);
  free(u->secrets);
  free(u);
}

/* A reason for a failed parse, without the URL: that is quoted (redacted)
 * in front of it.  Never quotes a value that might be secret. */
struct why {
  int code;
  char text[160];
};

static int fail(struct why *w, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct why *w, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->text, sizeof w->text, fmt, ap);
  va_end(ap);
  w->code = code;
  return code;
}

static int oom(struct why *w) { return fail(w, DLOCK_ENOMEM, "out of memory"); }

/* Decodes the N bytes at S into *OUT; WHAT names the part for the error. */
static int decode_part(const char *s, size_t n, char **out, const char *what, struct why *w) {
  switch (decode(s, n, out)) {
  case DEC_OK:
    return 0;
  case DEC_BAD_ESCAPE:
    return fail(w, DLOCK_EINVAL, "bad percent-encoding in %s ('%%' must be followed by two hex "
                "digits; write a '%%' as %%25)", what);
  case DEC_CONTROL:
    return fail(w, DLOCK_EINVAL, "%s percent-decodes to a NUL or control character", what);
  default:
    return oom(w);
  }
}

static const char *curl_why(CURLUcode rc) {
  switch (rc) {
  case CURLUE_BAD_PORT_NUMBER:
    return "bad port number";
  case CURLUE_BAD_HOSTNAME:
    return "bad host name";
  case CURLUE_BAD_IPV6:
    return "bad IPv6 address";
  case CURLUE_NO_HOST:
    return "no host";
  default:
    return "malformed host";
  }
}

/* One host of the list, N bytes at HP, through curl: fills OUT (the host
 * is NULL when curl drops it, as in file://localhost/dir). */
static int parse_host(const char *scheme, const char *hp, size_t n, size_t index,
                      struct url_host *out, struct why *w) {
  out->host = NULL;
  out->port = 0;
  char *dec = NULL;
  char what[32];
  snprintf(what, sizeof what, "host %zu", index + 1);
  int rc = decode_part(hp, n, &dec, what, w);
  if (rc < 0)
    return rc;
  free(dec);
  char tmp[600];
  if (n + strlen(scheme) + 5 > sizeof tmp)
    return fail(w, DLOCK_EINVAL, "host %zu is too long", index + 1);
  snprintf(tmp, sizeof tmp, "%s://%.*s/", scheme, (int)n, hp);
  CURLU *h = curl_url();
  if (!h)
    return oom(w);
  CURLUcode cr = curl_url_set(h, CURLUPART_URL, tmp, CURLU_NON_SUPPORT_SCHEME);
  if (cr == CURLUE_OUT_OF_MEMORY) {
    rc = oom(w);
  } else if (cr != CURLUE_OK) {
    rc = fail(w, DLOCK_EINVAL, "host %zu: %s", index + 1, curl_why(cr));
  } else {
    char *v = NULL;
    cr = curl_url_get(h, CURLUPART_HOST, &v, 0);
    if (cr == CURLUE_OK) {
      if (v[0] && !(out->host = strdup(v)))
        rc = oom(w);
      curl_free(v);
    } else if (cr == CURLUE_OUT_OF_MEMORY) {
      rc = oom(w);
    } else if (cr != CURLUE_NO_HOST) {
      rc = fail(w, DLOCK_EINVAL, "host %zu: %s", index + 1, curl_why(cr));
    }
    if (rc == 0 && curl_url_get(h, CURLUPART_PORT, &v, 0) == CURLUE_OK) {
      out->port = atoi(v);
      curl_free(v);
    }
  }
  curl_url_cleanup(h);
  if (rc < 0) {
    free(out->host);
    out->host = NULL;
  }
  return rc;
}

static int parse_hosts(dlock_url *u, const char *s, const struct tokens *t, struct why *w) {
  const char *p = s + t->hosts, *end = s + t->auth_end;
  if (p == end)
    return 0; /* file:///dir, redis+unix:///path.sock */
  if (!(u->hosts = calloc(HOSTS_MAX, sizeof *u->hosts)))
    return oom(w);
  for (size_t i = 0;; i++) {
    const char *c = memchr(p, ',', (size_t)(end - p));
    size_t n = c ? (size_t)(c - p) : (size_t)(end - p);
    if (n == 0)
      return fail(w, DLOCK_EINVAL, "empty host in host list");
    if (i >= HOSTS_MAX)
      return fail(w, DLOCK_EINVAL, "at most %d hosts", HOSTS_MAX);
    struct url_host h;
    int rc = parse_host(u->scheme, p, n, i, &h, w);
    if (rc < 0)
      return rc;
    if (h.host)
      u->hosts[u->nhosts++] = h;
    if (!c)
      return 0;
    p = c + 1;
  }
}

static int add_mask(struct mask **m, size_t *nm, size_t off, size_t len) {
  struct mask *n = realloc(*m, (*nm + 1) * sizeof *n);
  if (!n)
    return -1;
  *m = n;
  n[(*nm)++] = (struct mask){off, len};
  return 0;
}

/* The query [q, end) of S into U's parameters; secret values go to M. */
static int parse_query(dlock_url *u, const char *s, size_t q, size_t end, struct mask **m,
                       size_t *nm, struct why *w) {
  while (q < end) {
    size_t plen = strcspn(s + q, "&");
    if (q + plen > end)
      plen = end - q;
    if (plen > 0) {
      size_t nlen = strcspn(s + q, "=&");
      if (nlen > plen)
        nlen = plen;
      if (nlen == 0)
        return fail(w, DLOCK_EINVAL, "empty parameter name");
      struct url_param *np = realloc(u->params, (u->nparams + 1) * sizeof *np);
      if (!np)
        return oom(w);
      u->params = np;
      struct url_param *p = &u->params[u->nparams++];
      *p = (struct url_param){NULL, NULL, false, false};
      int rc = decode_part(s + q, nlen, &p->name, "a parameter name", w);
      if (rc < 0)
        return rc;
      p->secret = secret_name(p->name);
      char what[120];
      snprintf(what, sizeof what, "the value of parameter '%.80s'", p->name);
      if (nlen < plen)
        rc = decode_part(s + q + nlen + 1, plen - nlen - 1, &p->value, what, w);
      else if (!(p->value = strdup("")))
        rc = oom(w);
      if (rc < 0)
        return rc;
      for (size_t i = 0; i + 1 < u->nparams; i++)
        if (strcmp(u->params[i].name, p->name) == 0)
          return fail(w, DLOCK_EINVAL, "parameter '%.80s' given twice", p->name);
      if (p->secret && nlen < plen) {
        if (add_mask(m, nm, q + nlen + 1, plen - nlen - 1) < 0 ||
            add_secret_forms(u, s + q + nlen + 1, plen - nlen - 1, p->value) < 0)
          return oom(w);
      }
    }
    q += plen;
    if (q < end && s[q] == '&')
      q++;
  }
  return 0;
}

/* S, already checked for length and raw control bytes, into *OUT. */
static int parse(const char *s, dlock_url **out, struct why *w) {
  struct tokens t;
  if (!split(s, &t) || t.scheme_end == 0)
    return fail(w, DLOCK_EINVAL, "expected scheme://...");
  if (!scheme_ok(s, t.scheme_end))
    return fail(w, DLOCK_EINVAL, "bad scheme");
  if (s[t.query_end] == '#')
    return fail(w, DLOCK_EINVAL, "fragments are not allowed");
  dlock_url *u = calloc(1, sizeof *u);
  if (!u)
    return oom(w);
  struct mask *m = NULL;
  size_t nm = 0;
  int rc = 0;
  if (!(u->raw = strdup(s)) || !(u->scheme = strndup(s, t.scheme_end))) {
    rc = oom(w);
    goto out;
  }
  for (char *p = u->scheme; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  if (t.userinfo) {
    size_t uend = t.colon ? t.colon_at : t.at;
    if ((rc = decode_part(s + t.auth, uend - t.auth, &u->user, "the user name", w)) < 0)
      goto out;
    if (t.colon) {
      size_t off = t.colon_at + 1, len = t.at - off;
      if ((rc = decode_part(s + off, len, &u->password, "the password", w)) < 0)
        goto out;
      if (add_mask(&m, &nm, off, len) < 0 || add_secret_forms(u, s + off, len, u->password) < 0) {
        rc = oom(w);
        goto out;
      }
    }
  }
  if ((rc = parse_hosts(u, s, &t, w)) < 0)
    goto out;
  if ((rc = decode_part(s + t.auth_end, t.path_end - t.auth_end, &u->path, "the path", w)) < 0)
    goto out;
  if (t.query && (rc = parse_query(u, s, t.path_end + 1, t.query_end, &m, &nm, w)) < 0)
    goto out;
  if (u->nsecrets > 1)
    qsort(u->secrets, u->nsecrets, sizeof *u->secrets, longest_first);
  struct sink k = {NULL, 0, 0};
  redact_parsed(s, m, nm, &k);
  if (!(u->redacted = malloc(k.o + 1))) {
    rc = oom(w);
    goto out;
  }
  k = (struct sink){u->redacted, k.o + 1, 0};
  redact_parsed(s, m, nm, &k);
  sink_end(&k);
out:
  free(m);
  if (rc < 0) {
    dlock__url_free(u);
    return rc;
  }
  *out = u;
  return 0;
}

/* 0, or a message (and DLOCK_EINVAL) for what is wrong before parsing. */
static int precheck(const char *s, struct why *w) {
  size_t slen = strnlen(s, URL_MAX + 1);
  if (slen == 0)
    return fail(w, DLOCK_EINVAL, "URL is empty");
  if (slen > URL_MAX)
    return fail(w, DLOCK_EINVAL, "URL is longer than %d bytes", URL_MAX);
  for (size_t i = 0; i < slen; i++)
    if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
      return fail(w, DLOCK_EINVAL, "invalid URL: contains a space or control character");
  return 0;
}

int dlock__url_parse(const char *s, dlock_url **out) {
  if (!s || !out)
    return dlock_seterr(DLOCK_EINVAL, "URL is NULL");
  struct why w;
  if (precheck(s, &w) < 0)
    return dlock_seterr(w.code, "%s", w.text);
  if (parse(s, out, &w) == 0)
    return 0;
  if (w.code == DLOCK_ENOMEM)
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  char *red = loose_dup(s);
  int rc = red ? dlock_seterr(w.code, "invalid URL '%s': %s", red, w.text)
               : dlock_seterr(DLOCK_ENOMEM, "out of memory");
  free(red);
  return rc;
}

int dlock_url_redact(const char *url, char *buf, size_t len) {
  if (!url || (!buf && len))
    return dlock_seterr(DLOCK_EINVAL, "dlock_url_redact: NULL argument");
  struct sink k = {buf, len, 0};
  struct why w;
  dlock_url *u = NULL;
  /* What parses is redacted as the parser sees it; the rest loosely. */
  if (precheck(url, &w) == 0 && parse(url, &u, &w) == 0) {
    put_str(&k, u->redacted);
    dlock__url_free(u);
  } else {
    redact_loose(url, &k);
  }
  return sink_end(&k);
}

const char *dlock_url_scheme(const dlock_url *u) { return u ? u->scheme : NULL; }
const char *dlock_url_user(const dlock_url *u) { return u ? u->user : NULL; }
const char *dlock_url_password(const dlock_url *u) { return u ? u->password : NULL; }
size_t dlock_url_host_count(const dlock_url *u) { return u ? u->nhosts : 0; }
const char *dlock_url_host(const dlock_url *u, size_t i) {
  return u && i < u->nhosts ? u->hosts[i].host : NULL;
}
int dlock_url_port(const dlock_url *u, size_t i) {
  return u && i < u->nhosts ? u->hosts[i].port : 0;
}
const char *dlock_url_path(const dlock_url *u) { return u ? u->path : NULL; }
const char *dlock_url_redacted(const dlock_url *u) { return u ? u->redacted : NULL; }
const char *dlock_url_string(const dlock_url *u) { return u ? u->raw : NULL; }
size_t dlock_url_param_count(const dlock_url *u) { return u ? u->nparams : 0; }

int dlock_url_param_at(dlock_url *u, size_t i, const char **name, const char **value,
                       int *claimed) {
  if (!u || i >= u->nparams)
    return 0;
  if (claimed)
    *claimed = u->params[i].used;
  u->params[i].used = true;
  if (name)
    *name = u->params[i].name;
  if (value)
    *value = u->params[i].value;
  return 1;
}

int dlock_url_param(dlock_url *u, const char *name, const char **value) {
  if (!u || !name)
    return 0;
  for (size_t i = 0; i < u->nparams; i++) {
    if (strcmp(u->params[i].name, name) == 0) {
      u->params[i].used = true;
      if (value)
        *value = u->params[i].value;
      return 1;
    }
  }
  return 0;
}

/* V as quoted in a message about parameter NAME. */
static const char *shown(const char *name, const char *v) {
  return secret_name(name) ? MASK : v;
}

/* Decimal digits, an optional fraction and a unit: nothing else.  strtod
 * would also take signs, spaces, exponents, hex floats, "inf" and "nan",
 * which no one means as a duration (?ttl=0x10 is not 16 ms). */
int dlock__duration_parse(const char *s, int64_t bare_ms, int64_t *ms) {
  const int64_t max = DLOCK__DURATION_MAX_MS;
  if (!s || !ms)
    return DLOCK_EINVAL;
  const char *p = s;
  uint64_t whole = 0, frac = 0, scale_down = 1;
  int digits = 0;
  for (; *p >= '0' && *p <= '9'; p++, digits++) {
    if (whole > (uint64_t)max) /* no unit brings it back under the limit */
      return DLOCK_EINVAL;
    whole = whole * 10 + (uint64_t)(*p - '0');
  }
  if (*p == '.') {
    int fdigits = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, fdigits++)
      if (scale_down < UINT64_C(1000000000)) { /* finer than 1 ns changes nothing */
        frac = frac * 10 + (uint64_t)(*p - '0');
        scale_down *= 10;
      }
    if (fdigits == 0)
      return DLOCK_EINVAL;
    digits += fdigits;
  }
  if (digits == 0)
    return DLOCK_EINVAL;
  uint64_t unit;
  if (*p == '\0')
    unit = (uint64_t)bare_ms;
  else if (strcmp(p, "ms") == 0)
    unit = 1;
  else if (strcmp(p, "s") == 0)
    unit = 1000;
  else if (strcmp(p, "m") == 0)
    unit = 60000;
  else if (strcmp(p, "h") == 0)
    unit = 3600000;
  else
    return DLOCK_EINVAL;
  if (whole > (uint64_t)max / unit)
    return DLOCK_EINVAL;
  uint64_t v = whole * unit + (frac * unit + scale_down / 2) / scale_down;
  if (v > (uint64_t)max)
    return DLOCK_EINVAL;
  *ms = (int64_t)v;
  return 0;
}

int dlock__parse_duration(const char *s, int64_t *ms) { return dlock__duration_parse(s, 1, ms); }

int dlock_duration_parse(const char *s, int64_t bare_ms, int64_t *ms) {
  if (!s || !ms)
    return dlock_seterr(DLOCK_EINVAL, "dlock_duration_parse: NULL argument");
  /* The parser divides by the unit, and takes it as unsigned. */
  if (bare_ms < 1 || bare_ms > DLOCK_DURATION_MAX_MS)
    return dlock_seterr(DLOCK_EINVAL, "dlock_duration_parse: bare_ms %lld is not in [1, %lld]",
                        (long long)bare_ms, (long long)DLOCK_DURATION_MAX_MS);
  if (dlock__duration_parse(s, bare_ms, ms) < 0)
    return dlock_seterr(DLOCK_EINVAL,
                        "invalid duration '%s': expected a non-negative duration such as "
                        "500ms, 15s or 2m",
                        s);
  return 0;
}

int dlock_url_param_duration(dlock_url *u, const char *name, int64_t def, int64_t *ms) {
  const char *v;
  if (!ms)
    return dlock_seterr(DLOCK_EINVAL, "NULL output");
  if (!dlock_url_param(u, name, &v)) {
    *ms = def;
    return 0;
  }
  if (dlock__parse_duration(v, ms) < 0)
    return dlock_seterr(DLOCK_EINVAL,
                        "invalid URL parameter %s='%s': expected a non-negative duration "
                        "such as 500ms, 15s or 2m",
                        name, shown(name, v));
  return 0;
}

int dlock_url_param_int(dlock_url *u, const char *name, long long def, long long min,
                        long long max, long long *out) {
  const char *v;
  if (!out)
    return dlock_seterr(DLOCK_EINVAL, "NULL output");
  if (!dlock_url_param(u, name, &v)) {
    *out = def;
    return 0;
  }
  errno = 0;
  char *end;
  long long n = strtoll(v, &end, 10);
  if (errno || end == v || *end || n < min || n > max)
    return dlock_seterr(DLOCK_EINVAL,
                        "invalid URL parameter %s='%s': expected an integer in [%lld, %lld]",
                        name, shown(name, v), min, max);
  *out = n;
  return 0;
}

int dlock_url_param_bool(dlock_url *u, const char *name, int def, int *out) {
  const char *v;
  if (!out)
    return dlock_seterr(DLOCK_EINVAL, "NULL output");
  if (!dlock_url_param(u, name, &v)) {
    *out = def;
    return 0;
  }
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
    if (strcasecmp(v, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  }
  return dlock_seterr(DLOCK_EINVAL, "invalid URL parameter %s='%s': expected true or false",
                      name, shown(name, v));
}

int dlock__url_check_unused(const dlock_url *u) {
  for (size_t i = 0; i < u->nparams; i++)
    if (!u->params[i].used)
      return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': unknown parameter '%s' for %s://",
                          u->redacted, u->params[i].name, u->scheme);
  return 0;
}
