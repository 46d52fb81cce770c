/* Helpers shared by the dlock command's subcommands (declared in cli.h):
 * exit codes and messages, options and URLs, durations, safe output. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dlock/dlock.h"

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fputs("dlock: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fprintf(stderr, "Usage: %s\nTry 'dlock %s%s--help' for more information.\n",
          cli_usage_line(cmd), cmd ? cmd : "", cmd ? " " : "");
  return CLI_EXIT_USAGE;
}

int cli_fail(int rc, const char *what, const char *msg) {
  const char *m = (msg && *msg) ? msg : dlock_strerror(rc);
  if (what)
    fprintf(stderr, "dlock: %s: %s\n", what, m);
  else
    fprintf(stderr, "dlock: %s\n", m);
  return cli_exit_code(rc);
}

int cli_exit_code(int rc) {
  switch (rc) {
  case DLOCK_OK: return CLI_EXIT_OK;
  case DLOCK_EINVAL: return CLI_EXIT_USAGE;     /* the user gave something invalid */
  case DLOCK_EBUSY: return CLI_EXIT_CONFLICT;
  case DLOCK_ETIMEDOUT:                         /* a request, not a wait: see run_acquire */
  case DLOCK_ECONN: return CLI_EXIT_UNAVAILABLE;
  case DLOCK_EAUTH: return CLI_EXIT_AUTH;
  case DLOCK_ELOST: return CLI_EXIT_LOST;
  case DLOCK_ENOMEM: return CLI_EXIT_INTERNAL;
  default: return CLI_EXIT_STORE;               /* EBACKEND, ENOTSUP, ENOTOWNED */
  }
}

int cli_is_option(const char *arg) { return arg[0] == '-' && arg[1] != '\0'; }

int cli_match(int argc, char **argv, int *i, const char *cmd, const char *shortopt,
              const char *longopt, const char **val) {
  const char *a = argv[*i];
  if (longopt) {
    size_t n = strlen(longopt);
    if (strncmp(a, longopt, n) == 0 && (a[n] == '\0' || (val && a[n] == '='))) {
      if (!val)
        return 1;
      if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
      }
      goto separate;
    }
  }
  if (shortopt && strncmp(a, shortopt, 2) == 0 && (a[2] == '\0' || val)) {
    if (!val)
      return 1;
    if (a[2] != '\0') {
      *val = a + 2;
      return 1;
    }
    goto separate;
  }
  return 0;
separate:
  if (*i + 1 >= argc) {
    cli_usage_error(cmd, "option '%s' needs a value", a);
    return -1;
  }
  *val = argv[++*i];
  return 1;
}

/* The URLs' duration syntax, except that a bare number is seconds, as the
 * command line has always read it. */
int cli_parse_duration_ms(const char *s, int64_t *ms) {
  return dlock_duration_parse(s, 1000, ms) < 0 ? -1 : 0;
}

int cli_url_match(int argc, char **argv, int *i, const char *cmd, struct cli_url *u) {
  const char *v = NULL;
  int m;
  if ((m = cli_match(argc, argv, i, cmd, NULL, "--url-file", &v)) != 0) {
    if (m > 0)
      u->file = v;
    return m;
  }
  if ((m = cli_match(argc, argv, i, cmd, NULL, "--url-env", &v)) != 0) {
    if (m > 0)
      u->env = v;
    return m;
  }
  return 0;
}

/* The URL is a secret: no message shows any of it. */
static int url_text_check(const char *cmd, const char *from, const char *s, size_t n) {
  if (n == 0)
    return cli_usage_error(cmd, "%s is empty", from);
  for (size_t k = 0; k < n; k++)
    if ((unsigned char)s[k] < 0x20 || s[k] == 0x7f)
      return cli_usage_error(cmd, "%s holds more than one line, or a control character", from);
  return 0;
}

#define CLI_URL_MAX 16384

int cli_url_get(const char *cmd, struct cli_url *u, const char *operand, const char **url) {
  char from[PATH_MAX + 64];
  if (u->file && u->env)
    return cli_usage_error(cmd, "--url-file and --url-env exclude each other");
  if (!u->file && !u->env) {
    if (!operand)
      return cli_usage_error(cmd, "missing URL");
    *url = operand;
    return 0;
  }
  if (operand)
    return cli_usage_error(cmd, "the URL comes from --url-%s: unexpected argument '%s'",
                           u->file ? "file" : "env", operand);
  if (u->env) {
    snprintf(from, sizeof from, "environment variable '%s'", u->env);
    if (!u->env[0] || strchr(u->env, '='))
      return cli_usage_error(cmd, "invalid variable name '%s'", u->env);
    const char *v = getenv(u->env);
    if (!v)
      return cli_usage_error(cmd, "%s is not set", from);
    int code = url_text_check(cmd, from, v, strlen(v));
    if (code)
      return code;
    *url = v;
    return 0;
  }
  snprintf(from, sizeof from, "URL file '%s'", u->file);
  int fd = open(u->file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    return cli_usage_error(cmd, "cannot read %s: %s", from, strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return cli_usage_error(cmd, "cannot read %s: %s", from, strerror(EISDIR));
  }
  /* Any other kind is fine: --url-file <(secret-tool lookup ...) is a pipe. */
  if (!(u->buf = malloc(CLI_URL_MAX + 1))) {
    close(fd);
    return cli_usage_error(cmd, "out of memory");
  }
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, u->buf + n, CLI_URL_MAX + 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      return cli_usage_error(cmd, "cannot read %s: %s", from, strerror(e));
    }
    if (r == 0)
      break;
    n += (size_t)r;
    if (n > CLI_URL_MAX) {
      close(fd);
      return cli_usage_error(cmd, "%s is longer than %d bytes", from, CLI_URL_MAX);
    }
  }
  close(fd);
  /* Files made by editors and `echo` end in a newline, maybe a CR too. */
  if (n > 0 && u->buf[n - 1] == '\n')
    n--;
  if (n > 0 && u->buf[n - 1] == '\r')
    n--;
  u->buf[n] = '\0';
  int code = url_text_check(cmd, from, u->buf, n);
  if (code)
    return code;
  *url = u->buf;
  return 0;
}

void cli_url_free(struct cli_url *u) {
  if (u->buf) {
    explicit_bzero(u->buf, CLI_URL_MAX + 1);
    free(u->buf);
    u->buf = NULL;
  }
}

int cli_parse_long(const char *s, long min, long max, long *out) {
  if (!(s[0] >= '0' && s[0] <= '9') && !(s[0] == '-' && s[1] >= '0' && s[1] <= '9'))
    return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (*end != '\0' || errno != 0 || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Stops at the first bad continuation byte, so a NUL terminator is never
 * passed. */
size_t cli_utf8_seq(const unsigned char *p) {
  unsigned c = p[0];
  size_t n;
  uint32_t cp, min;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, cp = c & 0x1f, min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, cp = c & 0x0f, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

void cli_json_string(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  fputc('"', f);
  while (*p) {
    unsigned c = *p;
    size_t n;
    switch (c) {
    case '"': fputs("\\\"", f); p++; continue;
    case '\\': fputs("\\\\", f); p++; continue;
    case '\n': fputs("\\n", f); p++; continue;
    case '\r': fputs("\\r", f); p++; continue;
    case '\t': fputs("\\t", f); p++; continue;
    default: break;
    }
    if (c < 0x20 || c == 0x7f) {
      fprintf(f, "\\u%04x", c);
      p++;
    } else if (c < 0x80) {
      fputc((int)c, f);
      p++;
    } else if ((n = cli_utf8_seq(p)) != 0) {
      fwrite(p, 1, n, f);
      p += n;
    } else {
      fputs("\\ufffd", f);
      p++;
    }
  }
  fputc('"', f);
}

/* The code point of the N-byte sequence at P (cli_utf8_seq said N). */
static uint32_t utf8_cp(const unsigned char *p, size_t n) {
  uint32_t cp = p[0] & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
  for (size_t i = 1; i < n; i++)
    cp = (cp << 6) | (p[i] & 0x3f);
  return cp;
}

/* Code points that change how the text around them shows rather than
 * showing themselves: C1 controls (CSI on some terminals), the
 * direction marks, embeddings, overrides and isolates, the line and
 * paragraph separators. */
static int sneaky(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

void cli_print_safe(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    size_t n = *p >= 0x80 ? cli_utf8_seq(p) : 1;
    if (*p < 0x20 || *p == 0x7f || n == 0) {
      fprintf(f, "\\x%02x", *p); /* a control, or a byte of no valid sequence */
      p++;
    } else if (n > 1 && sneaky(utf8_cp(p, n))) {
      fprintf(f, "\\u%04x", (unsigned)utf8_cp(p, n));
      p += n;
    } else {
      fwrite(p, 1, n, f);
      p += n;
    }
  }
}

/* CLOCK_BOOTTIME, the library's clock for validity: it counts through a
 * suspend of the machine, as the lease at the store does. */
int64_t cli_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Open URL, reporting failures as the CLI does everywhere. */
int cli_open(const char *url, dlock_client **c, int *exit_code) {
  int rc = dlock_open(url, c);
  if (rc < 0) {
    /* The library's message already names the part of the URL at fault,
     * with secrets removed. */
    *exit_code = cli_fail(rc, NULL, dlock_client_errmsg(NULL));
    return -1;
  }
  return 0;
}
