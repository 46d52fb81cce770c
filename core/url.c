/* URL strings: scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]
 *
 * libcurl's URL API does the parsing (ports, IPv6 literals, percent-decoding);
 * this file only splits off what it cannot take: several comma-separated
 * hosts and the query string, which becomes a list of named parameters that
 * must each be claimed by the core or the backend. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define URL_MAX 8192
#define HOSTS_MAX 32

struct url_host {
  char *host;
  int port;
};

struct url_param {
  char *name;
  char *value;
  bool used;
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
};

/* Query parameters whose values are hidden: any name containing one of
 * these, after percent-decoding, case-insensitively.  Hiding too much is
 * harmless; hiding too little is not. */
static bool secret_param(const char *name, size_t n) {
  static const char *const words[] = {"pass", "pwd", "token", "secret", "key", "auth", "cred"};
  char dec[128];
  size_t d = 0;
  for (size_t i = 0; i < n && d + 1 < sizeof dec; i++) {
    if (name[i] == '%' && i + 2 < n && isxdigit((unsigned char)name[i + 1]) &&
        isxdigit((unsigned char)name[i + 2])) {
      char hx[3] = {name[i + 1], name[i + 2], 0};
      dec[d++] = (char)strtol(hx, NULL, 16);
      i += 2;
    } else {
      dec[d++] = name[i];
    }
  }
  dec[d] = '\0';
  if (n >= sizeof dec)
    return true; /* absurdly long name: hide its value */
  for (size_t w = 0; w < sizeof words / sizeof *words; w++)
    if (strcasestr(dec, words[w]))
      return true;
  return false;
}

/* Purely textual, so it also works on URLs that fail to parse, and it
 * assumes nothing about which characters a password contains: everything
 * between the first ':' after the scheme and the last '@' is hidden, even
 * if that sometimes hides more than the password. */
static int redact(const char *url, char *buf, size_t len) {
  size_t o = 0;
#define PUT(ch)                                                                \
  do {                                                                         \
    if (o + 1 < len)                                                           \
      buf[o] = (ch);                                                           \
    o++;                                                                       \
  } while (0)
  const char *p = url;
  const char *at = strrchr(url, '@');
  if (at) {
    const char *sep = strstr(url, "://");
    const char *first = strchr(url, ':');
    const char *from = sep && sep < at ? sep + 3 : first && first < at ? first + 1 : url;
    const char *colon = memchr(from, ':', (size_t)(at - from));
    if (colon) {
      for (; p <= colon; p++)
        PUT(*p);
      PUT('*');
      PUT('*');
      PUT('*');
      p = at;
    }
  }
  const char *q = strchr(p, '?');
  if (!q)
    q = p + strcspn(p, "#");
  for (; p < q; p++)
    PUT(*p);
  if (*p == '?') {
    PUT('?');
    p++;
    while (*p && *p != '#') {
      size_t plen = strcspn(p, "&#");
      size_t nlen = strcspn(p, "=&#");
      for (size_t i = 0; i < nlen; i++)
        PUT(p[i]);
      if (nlen < plen) {
        PUT('=');
        if (secret_param(p, nlen)) {
          PUT('*');
          PUT('*');
          PUT('*');
        } else {
          for (size_t i = nlen + 1; i < plen; i++)
            PUT(p[i]);
        }
      }
      p += plen;
      if (*p == '&') {
        PUT('&');
        p++;
      }
    }
  }
  /* Fragments are not used by any backend; drop them rather than risk
   * echoing something secret. */
  if (len)
    buf[o < len ? o : len - 1] = '\0';
  return (int)(o > INT_MAX ? INT_MAX : o);
#undef PUT
}

int dlock_url_redact(const char *url, char *buf, size_t len) {
  if (!url || (!buf && len))
    return dlock_seterr(DLOCK_EINVAL, "dlock_url_redact: NULL argument");
  return redact(url, buf, len);
}

static char *redacted_dup(const char *url) {
  int n = redact(url, NULL, 0);
  char *s = malloc((size_t)n + 1);
  if (s)
    redact(url, s, (size_t)n + 1);
  return s;
}

void dlock__url_free(dlock_url *u) {
  if (!u)
    return;
  free(u->raw);
  free(u->scheme);
  free(u->user);
  free(u->password);
  free(u->path);
  free(u->redacted);
  for (size_t i = 0; i < u->nhosts; i++)
    free(u->hosts[i].host);
  free(u->hosts);
  for (size_t i = 0; i < u->nparams; i++) {
    free(u->params[i].name);
    free(u->params[i].value);
  }
  free(u->params);
  free(u);
}

static char *decode(const char *s, size_t n) {
  int olen = 0;
  if (n > INT_MAX)
    return NULL;
  char *d = curl_easy_unescape(NULL, s, (int)n, &olen);
  if (!d)
    return NULL;
  char *r = NULL;
  /* A decoded NUL would silently cut the value short. */
  if (memchr(d, '\0', (size_t)olen) == NULL)
    r = strdup(d);
  curl_free(d);
  return r;
}

static int parse_query(dlock_url *u, const char *q) {
  while (q && *q) {
    size_t plen = strcspn(q, "&");
    if (plen > 0) {
      size_t nlen = strcspn(q, "=&");
      if (nlen == 0)
        return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': empty parameter name",
                            u->redacted);
      struct url_param *np = realloc(u->params, (u->nparams + 1) * sizeof *np);
      if (!np)
        return dlock_seterr(DLOCK_ENOMEM, "out of memory");
      u->params = np;
      struct url_param *p = &u->params[u->nparams];
      p->used = false;
      p->name = decode(q, nlen);
      p->value = nlen < plen ? decode(q + nlen + 1, plen - nlen - 1) : strdup("");
      u->nparams++;
      if (!p->name || !p->value)
        return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': bad percent-encoding in query",
                            u->redacted);
      for (size_t i = 0; i + 1 < u->nparams; i++)
        if (strcmp(u->params[i].name, p->name) == 0)
          return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': parameter '%s' given twice",
                              u->redacted, p->name);
    }
    q += plen;
    if (*q == '&')
      q++;
  }
  return 0;
}

static int curl_part(CURLU *h, CURLUPart part, unsigned flags, char **out) {
  char *v = NULL;
  CURLUcode rc = curl_url_get(h, part, &v, flags);
  if (rc != CURLUE_OK) {
    *out = NULL;
    return rc;
  }
  *out = strdup(v);
  curl_free(v);
  return *out ? 0 : -1;
}

static const char *curl_why(CURLUcode rc) {
  switch (rc) {
  case CURLUE_BAD_PORT_NUMBER:
    return "bad port number";
  case CURLUE_MALFORMED_INPUT:
    return "malformed";
  case CURLUE_BAD_HOSTNAME:
    return "bad host name";
  case CURLUE_BAD_IPV6:
    return "bad IPv6 address";
  case CURLUE_BAD_LOGIN:
    return "bad user or password";
  case CURLUE_BAD_SCHEME:
    return "bad scheme";
  case CURLUE_NO_HOST:
    return "no host";
  default:
    return "malformed";
  }
}

/* One host through curl: fills HOST and PORT. */
static int parse_host(dlock_url *u, const char *scheme, const char *hp, size_t n,
                      struct url_host *out) {
  char tmp[600];
  if (n == 0)
    return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': empty host in host list",
                        u->redacted);
  if (n + strlen(scheme) + 5 > sizeof tmp)
    return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': host too long", u->redacted);
  snprintf(tmp, sizeof tmp, "%s://%.*s/", scheme, (int)n, hp);
  CURLU *h = curl_url();
  if (!h)
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  int rc = 0;
  CURLUcode cr = curl_url_set(h, CURLUPART_URL, tmp, CURLU_NON_SUPPORT_SCHEME);
  if (cr != CURLUE_OK) {
    rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': %s", u->redacted, curl_why(cr));
  } else {
    char *port = NULL;
    if (curl_part(h, CURLUPART_HOST, 0, &out->host) != 0)
      rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': no host", u->redacted);
    else if (curl_part(h, CURLUPART_PORT, 0, &port) == 0) {
      out->port = atoi(port);
      free(port);
    }
  }
  curl_url_cleanup(h);
  return rc;
}

int dlock__url_parse(const char *s, dlock_url **out) {
  if (!s || !out)
    return dlock_seterr(DLOCK_EINVAL, "URL is NULL");
  size_t slen = strnlen(s, URL_MAX + 1);
  if (slen == 0)
    return dlock_seterr(DLOCK_EINVAL, "URL is empty");
  if (slen > URL_MAX)
    return dlock_seterr(DLOCK_EINVAL, "URL is longer than %d bytes", URL_MAX);
  for (size_t i = 0; i < slen; i++)
    if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
      return dlock_seterr(DLOCK_EINVAL, "invalid URL: contains a space or control character");

  dlock_url *u = calloc(1, sizeof *u);
  if (!u || !(u->redacted = redacted_dup(s)) || !(u->raw = strdup(s))) {
    dlock__url_free(u);
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  }
  int rc = 0;
  CURLU *h = NULL;
  char *first = NULL;
  const char *sep = strstr(s, "://");
  if (!sep || sep == s) {
    rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': expected scheme://...", u->redacted);
    goto out;
  }
  for (const char *p = s; p < sep; p++) {
    if (!(isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.') ||
        (p == s && !isalpha((unsigned char)*p))) {
      rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': bad scheme", u->redacted);
      goto out;
    }
  }
  u->scheme = strndup(s, (size_t)(sep - s));
  if (!u->scheme) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto out;
  }
  for (char *p = u->scheme; *p; p++)
    *p = (char)tolower((unsigned char)*p);

  const char *auth = sep + 3;
  size_t alen = strcspn(auth, "/?#");
  if (strchr(s, '#')) {
    rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': fragments are not allowed", u->redacted);
    goto out;
  }
  const char *at = NULL;
  for (const char *p = auth; p < auth + alen; p++)
    if (*p == '@')
      at = p;
  const char *hosts = at ? at + 1 : auth;
  size_t hlen = (size_t)(auth + alen - hosts);
  const char *comma = memchr(hosts, ',', hlen);
  size_t firstlen = comma ? (size_t)(comma - hosts) : hlen;

  /* The first host goes to curl together with userinfo, path and query;
   * further hosts are checked one by one below. */
  /* With no host at all (file:///dir, redis+unix:///path.sock) curl would
   * take the first path segment for the host, so it gets a placeholder
   * host that is then ignored. */
  static const char placeholder[] = "localhost";
  const char *fhost = firstlen ? hosts : placeholder;
  size_t fhostlen = firstlen ? firstlen : sizeof placeholder - 1;
  size_t flen = (size_t)(hosts - s) + fhostlen + strlen(auth + alen);
  first = malloc(flen + 1);
  if (!first) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto out;
  }
  memcpy(first, s, (size_t)(hosts - s));
  memcpy(first + (hosts - s), fhost, fhostlen);
  strcpy(first + (hosts - s) + fhostlen, auth + alen);

  u->hosts = calloc(HOSTS_MAX, sizeof *u->hosts);
  h = curl_url();
  if (!h || !u->hosts) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto out;
  }
  CURLUcode cr = curl_url_set(h, CURLUPART_URL, first,
                              CURLU_NON_SUPPORT_SCHEME | CURLU_NO_AUTHORITY |
                                  CURLU_PATH_AS_IS);
  if (cr != CURLUE_OK) {
    rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': %s", u->redacted, curl_why(cr));
    goto out;
  }
  char *tmp = NULL;
  if (curl_part(h, CURLUPART_USER, CURLU_URLDECODE, &u->user) < 0 ||
      curl_part(h, CURLUPART_PASSWORD, CURLU_URLDECODE, &u->password) < 0 ||
      curl_part(h, CURLUPART_PATH, CURLU_URLDECODE, &u->path) < 0) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto out;
  }
  if (!u->path && !(u->path = strdup(""))) {
    rc = dlock_seterr(DLOCK_ENOMEM, "out of memory");
    goto out;
  }
  /* curl reports "/" for a URL with no path at all; backends want "". */
  if (strcmp(u->path, "/") == 0 && auth[alen] != '/')
    u->path[0] = '\0';
  {
    struct url_host hst = {NULL, 0};
    if (firstlen > 0) {
      if (curl_part(h, CURLUPART_HOST, 0, &hst.host) == 0) {
        if (curl_part(h, CURLUPART_PORT, 0, &tmp) == 0) {
          hst.port = atoi(tmp);
          free(tmp);
        }
        if (hst.host[0])
          u->hosts[u->nhosts++] = hst;
        else
          free(hst.host); /* file://localhost/dir: curl drops the host */
      }
    }
  }
  if (comma) {
    if (firstlen == 0) {
      rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': empty host in host list", u->redacted);
      goto out;
    }
    const char *p = comma + 1;
    const char *end = hosts + hlen;
    while (p <= end) {
      const char *c2 = memchr(p, ',', (size_t)(end - p));
      size_t n = c2 ? (size_t)(c2 - p) : (size_t)(end - p);
      if (u->nhosts >= HOSTS_MAX) {
        rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': at most %d hosts", u->redacted,
                          HOSTS_MAX);
        goto out;
      }
      struct url_host hst = {NULL, 0};
      rc = parse_host(u, u->scheme, p, n, &hst);
      if (rc < 0)
        goto out;
      u->hosts[u->nhosts++] = hst;
      if (!c2)
        break;
      p = c2 + 1;
    }
  }
  if (curl_part(h, CURLUPART_QUERY, 0, &tmp) == 0) {
    rc = parse_query(u, tmp);
    free(tmp);
    if (rc < 0)
      goto out;
  }
out:
  curl_url_cleanup(h);
  free(first);
  if (rc < 0) {
    dlock__url_free(u);
    return rc;
  }
  *out = u;
  return 0;
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

int dlock__parse_duration(const char *s, int64_t *ms) {
  if (!s || !*s)
    return DLOCK_EINVAL;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (errno || end == s || v != v || v < 0)
    return DLOCK_EINVAL;
  double mult;
  if (*end == '\0' || strcmp(end, "ms") == 0)
    mult = 1;
  else if (strcmp(end, "s") == 0)
    mult = 1000;
  else if (strcmp(end, "m") == 0)
    mult = 60000;
  else if (strcmp(end, "h") == 0)
    mult = 3600000;
  else
    return DLOCK_EINVAL;
  double r = v * mult;
  if (r > 3.2e12) /* ~100 years: keeps the ns arithmetic far from overflow */
    return DLOCK_EINVAL;
  *ms = (int64_t)(r + 0.5);
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
                        name, v);
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
                        name, v, min, max);
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
                      name, v);
}

int dlock__url_check_unused(const dlock_url *u) {
  for (size_t i = 0; i < u->nparams; i++)
    if (!u->params[i].used)
      return dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': unknown parameter '%s' for %s://",
                          u->redacted, u->params[i].name, u->scheme);
  return 0;
}
