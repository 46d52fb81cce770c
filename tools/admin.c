/* dlock status, dlock list and dlock break: an operator's view of a
 * store's locks, and a forced release of one of them (dlock/admin.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dlock/admin.h"

static int flush_out(void) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "dlock: write error: %s\n", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  return CLI_EXIT_OK;
}

/* "12.345 s", or "-" for no expiry or none known. */
static void fmt_ttl(char *buf, size_t len, int64_t ms) {
  if (ms < 0)
    snprintf(buf, len, "-");
  else
    snprintf(buf, len, "%" PRId64 ".%03d s", ms / 1000, (int)(ms % 1000));
}

static void json_field(const char *name, const char *value) {
  printf(",\"%s\":", name);
  if (value && value[0])
    cli_json_string(stdout, value);
  else
    printf("null");
}

static void json_lock(const char *key, const dlock_info *info) {
  printf("{\"key\":");
  cli_json_string(stdout, key);
  printf(",\"token\":");
  if (info->token)
    printf("%" PRIu64, info->token);
  else
    printf("null");
  printf(",\"ttl_ms\":");
  if (info->ttl_ms >= 0)
    printf("%" PRId64, info->ttl_ms);
  else
    printf("null");
  json_field("owner", info->owner);
  json_field("label", info->label);
  printf("}");
}

/* ---- dlock status ---- */

/* What status, list and break take: up to two operands, --json, the URL
 * from --url-file or --url-env, and for break -y and --token. */
struct operands {
  const char *pos[2];
  int npos, json, yes;
  uint64_t token;
  struct cli_url src;
};

/* 0 to go on; -1 after --help; else an exit code after a usage message. */
static int parse_operands(int argc, char **argv, const char *cmd, struct operands *o) {
  int is_break = strcmp(cmd, "break") == 0, m;
  const char *v;
  memset(o, 0, sizeof *o);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!cli_is_option(a)) {
      if (o->npos == 2)
        return cli_usage_error(cmd, "unexpected argument '%s'", a);
      o->pos[o->npos++] = a;
    } else if (strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      cli_help(stdout, cmd);
      return -1;
    } else if (is_break && (strcmp(a, "-y") == 0 || strcmp(a, "--yes") == 0)) {
      o->yes = 1;
    } else if (is_break && (m = cli_match(argc, argv, &i, cmd, NULL, "--token", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      char *end;
      errno = 0;
      unsigned long long t = strtoull(v, &end, 10);
      if (!*v || *end || errno || t == 0 || v[0] < '0' || v[0] > '9')
        return cli_usage_error(cmd, "--token needs a token (a positive integer), not '%s'", v);
      o->token = t;
    } else if ((m = cli_url_match(argc, argv, &i, cmd, &o->src)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
    } else {
      return cli_usage_error(cmd, "unknown option '%s'", a);
    }
  }
  return 0;
}


static int status_main(const char *url, const char *key, int json);

int cli_status(int argc, char **argv) {
  struct operands o;
  int code = parse_operands(argc, argv, "status", &o);
  if (code)
    return code < 0 ? CLI_EXIT_OK : code;
  const char **pos = o.pos;
  int npos = o.npos, json = o.json;
  struct cli_url src = o.src;
  int from_src = src.file || src.env;
  if (npos < (from_src ? 1 : 2))
    return cli_usage_error("status", "%s",
                           npos == 0 && !from_src ? "missing URL and KEY" : "missing KEY");
  const char *url;
  code = cli_url_get("status", &src, npos == 2 ? pos[0] : NULL, &url);
  if (code == 0)
    code = status_main(url, pos[npos - 1], json);
  cli_url_free(&src);
  return code;
}

static int status_main(const char *url_in, const char *key, int json) {
  dlock_client *c = NULL;
  int code;
  if (cli_open(url_in, &c, &code) < 0)
    return code;
  dlock_info info;
  memset(&info, 0, sizeof info);
  int rc = dlock_inspect(c, key, &info);
  if (rc < 0) {
    char what[600];
    snprintf(what, sizeof what, "cannot inspect '%s'", key);
    code = cli_fail(rc, what, dlock_client_errmsg(c));
    dlock_close(c);
    return code;
  }
  /* Fields are fixed-size arrays filled by a backend: never trust a NUL. */
  info.owner[sizeof info.owner - 1] = '\0';
  info.label[sizeof info.label - 1] = '\0';
  const char *url = dlock_client_url(c);
  if (json) {
    printf("{\"key\":");
    cli_json_string(stdout, key);
    printf(",\"held\":%s,\"token\":", info.held ? "true" : "false");
    if (info.token)
      printf("%" PRIu64, info.token);
    else
      printf("null");
    printf(",\"ttl_ms\":");
    if (info.held && info.ttl_ms >= 0)
      printf("%" PRId64, info.ttl_ms);
    else
      printf("null");
    printf(",\"owner\":");
    if (info.owner[0])
      cli_json_string(stdout, info.owner);
    else
      printf("null");
    printf(",\"label\":");
    if (info.label[0])
      cli_json_string(stdout, info.label);
    else
      printf("null");
    printf(",\"backend\":");
    cli_json_string(stdout, dlock_client_backend(c));
    printf(",\"url\":");
    cli_json_string(stdout, url);
    printf("}\n");
  } else {
    printf("key:    ");
    cli_print_safe(stdout, key);
    printf("\nstate:  %s\n", info.held ? "held" : "free");
    if (info.token)
      printf("token:  %" PRIu64 "%s\n", info.token, info.held ? "" : " (last holder)");
    if (info.held) {
      if (info.ttl_ms >= 0)
        printf("ttl:    %" PRId64 ".%03d s\n", info.ttl_ms / 1000, (int)(info.ttl_ms % 1000));
      else if (!(dlock_client_caps(c) & DLOCK_CAP_SERVER_TTL))
        printf("ttl:    none (held until released or its holder exits)\n");
      else
        printf("ttl:    unknown\n");
      printf("owner:  ");
      cli_print_safe(stdout, info.owner[0] ? info.owner : "unknown");
      printf("\nlabel:  ");
      cli_print_safe(stdout, info.label[0] ? info.label : "unknown");
      printf("\n");
    }
    printf("url:    ");
    cli_print_safe(stdout, url);
    printf("\n");
  }
  dlock_close(c);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "dlock: write error: %s\n", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  return CLI_EXIT_OK;
}

/* ---- dlock list ---- */

struct entry {
  char *key;
  dlock_info info;
};

struct entries {
  struct entry *v;
  size_t n, cap;
  int oom;
};

static int collect(void *arg, const char *key, const dlock_info *info) {
  struct entries *e = arg;
  if (e->n == e->cap) {
    size_t ncap = e->cap ? e->cap * 2 : 64;
    struct entry *v = realloc(e->v, ncap * sizeof *v);
    if (!v) {
      e->oom = 1;
      return 1;
    }
    e->v = v;
    e->cap = ncap;
  }
  if (!(e->v[e->n].key = strdup(key))) {
    e->oom = 1;
    return 1;
  }
  e->v[e->n++].info = *info;
  return 0;
}

static int by_key(const void *a, const void *b) {
  return strcmp(((const struct entry *)a)->key, ((const struct entry *)b)->key);
}

static void print_table(const struct entries *e) {
  printf("%-20s %-12s %-24s %s\n", "TOKEN", "TTL", "HOLDER", "KEY");
  for (size_t i = 0; i < e->n; i++) {
    const dlock_info *in = &e->v[i].info;
    char tok[24], ttl[32];
    if (in->token)
      snprintf(tok, sizeof tok, "%" PRIu64, in->token);
    else
      snprintf(tok, sizeof tok, "-");
    fmt_ttl(ttl, sizeof ttl, in->ttl_ms);
    printf("%-20s %-12s ", tok, ttl);
    /* Padded by hand: the label is printed through the escaping filter. */
    const char *label = in->label[0] ? in->label : "-";
    cli_print_safe(stdout, label);
    for (size_t w = strlen(label); w < 24; w++)
      putchar(' ');
    putchar(' ');
    cli_print_safe(stdout, e->v[i].key);
    putchar('\n');
  }
}

static int list_main(const char *url, const char *prefix, int json) {
  dlock_client *c = NULL;
  int code;
  if (cli_open(url, &c, &code) < 0)
    return code;
  struct entries e = {0};
  int rc = dlock_list(c, prefix, collect, &e);
  if (e.oom) {
    fprintf(stderr, "dlock: list: out of memory\n");
    code = CLI_EXIT_INTERNAL;
  } else if (rc < 0) {
    code = cli_fail(rc, "cannot list the locks", dlock_client_errmsg(c));
  } else {
    if (e.n > 1) /* qsort's array must not be NULL, even for no element */
      qsort(e.v, e.n, sizeof *e.v, by_key);
    if (json) {
      printf("[");
      for (size_t i = 0; i < e.n; i++) {
        if (i)
          printf(",");
        json_lock(e.v[i].key, &e.v[i].info);
      }
      printf("]\n");
    } else {
      print_table(&e);
    }
    code = flush_out();
  }
  for (size_t i = 0; i < e.n; i++)
    free(e.v[i].key);
  free(e.v);
  dlock_close(c);
  return code;
}

int cli_list(int argc, char **argv) {
  struct operands o;
  int code = parse_operands(argc, argv, "list", &o);
  if (code)
    return code < 0 ? CLI_EXIT_OK : code;
  const char **pos = o.pos;
  int npos = o.npos, json = o.json;
  struct cli_url src = o.src;
  int from_src = src.file || src.env;
  if (!from_src && npos == 0)
    return cli_usage_error("list", "missing URL");
  if (from_src && npos == 2)
    return cli_usage_error("list", "unexpected argument '%s'", pos[1]);
  const char *url;
  code = cli_url_get("list", &src, from_src ? NULL : pos[0], &url);
  if (code == 0)
    code = list_main(url, npos > (from_src ? 0 : 1) ? pos[npos - 1] : "", json);
  cli_url_free(&src);
  return code;
}

/* ---- dlock break ---- */

static void describe(FILE *f, const char *key, const dlock_info *in) {
  char ttl[32];
  fmt_ttl(ttl, sizeof ttl, in->ttl_ms);
  fputc('\'', f);
  cli_print_safe(f, key);
  fprintf(f, "' held by ");
  cli_print_safe(f, in->label[0] ? in->label : "an unnamed holder");
  if (in->token)
    fprintf(f, ", token %" PRIu64, in->token);
  if (in->owner[0]) {
    fprintf(f, ", owner ");
    cli_print_safe(f, in->owner);
  }
  if (in->ttl_ms >= 0)
    fprintf(f, ", %s left", ttl);
}

/* 1 if the operator answers yes on the terminal. */
static int confirm(const char *key, const dlock_info *in) {
  fprintf(stderr, "dlock: ");
  describe(stderr, key, in);
  fprintf(stderr, "\nBreak it? Its holder is not asked and may still be working. [y/N] ");
  fflush(stderr);
  char line[16];
  if (!fgets(line, sizeof line, stdin))
    return 0;
  return strcmp(line, "y\n") == 0 || strcmp(line, "yes\n") == 0 || strcmp(line, "Y\n") == 0;
}

static int break_main(const char *url, const char *key, int yes, uint64_t want_token, int json) {
  dlock_client *c = NULL;
  int code;
  if (cli_open(url, &c, &code) < 0)
    return code;
  dlock_info seen, broken;
  memset(&seen, 0, sizeof seen);
  int rc = dlock_inspect(c, key, &seen);
  if (rc < 0) {
    code = cli_fail(rc, "cannot inspect the lock", dlock_client_errmsg(c));
    goto out;
  }
  seen.owner[sizeof seen.owner - 1] = '\0';
  seen.label[sizeof seen.label - 1] = '\0';
  if (!seen.held) {
    fprintf(stderr, "dlock: '");
    cli_print_safe(stderr, key);
    fprintf(stderr, "' is not held: nothing to break\n");
    code = json ? (printf("{\"broken\":false}\n"), flush_out()) : CLI_EXIT_OK;
    goto out;
  }
  if (want_token && seen.token != want_token) {
    fprintf(stderr, "dlock: ");
    describe(stderr, key, &seen);
    fprintf(stderr, ", not token %" PRIu64 ": nothing broken\n", want_token);
    code = CLI_EXIT_CONFLICT;
    if (json)
      printf("{\"broken\":false}\n");
    goto out;
  }
  if (!yes && !confirm(key, &seen)) {
    fprintf(stderr, "dlock: nothing broken\n");
    code = CLI_EXIT_CONFLICT;
    if (json)
      printf("{\"broken\":false}\n");
    goto out;
  }
  /* Only the holder just shown: never one that took the lock since. */
  rc = dlock_break(c, key, &seen, &broken);
  if (rc == DLOCK_EBUSY) {
    fprintf(stderr, "dlock: '");
    cli_print_safe(stderr, key);
    fprintf(stderr, "' changed hands since it was looked at: nothing broken\n");
    code = CLI_EXIT_CONFLICT;
    if (json)
      printf("{\"broken\":false}\n");
  } else if (rc < 0) {
    code = cli_fail(rc, "cannot break the lock", dlock_client_errmsg(c));
  } else if (!broken.held) {
    fprintf(stderr, "dlock: '");
    cli_print_safe(stderr, key);
    fprintf(stderr, "' was released meanwhile: nothing to break\n");
    code = json ? (printf("{\"broken\":false}\n"), flush_out()) : CLI_EXIT_OK;
  } else {
    if (json) {
      printf("{\"broken\":true,\"lock\":");
      json_lock(key, &broken);
      printf("}\n");
    } else {
      printf("broke ");
      describe(stdout, key, &broken);
      printf("\n");
    }
    code = flush_out();
  }
out:
  dlock_close(c);
  return code;
}

int cli_break(int argc, char **argv) {
  struct operands o;
  int code = parse_operands(argc, argv, "break", &o);
  if (code)
    return code < 0 ? CLI_EXIT_OK : code;
  const char **pos = o.pos;
  int npos = o.npos, yes = o.yes, json = o.json;
  uint64_t token = o.token;
  struct cli_url src = o.src;
  int from_src = src.file || src.env;
  if (npos < (from_src ? 1 : 2))
    return cli_usage_error("break", "%s",
                           npos == 0 && !from_src ? "missing URL and KEY" : "missing KEY");
  if (from_src && npos == 2)
    return cli_usage_error("break", "unexpected argument '%s'", pos[1]);
  if (!yes && !isatty(STDIN_FILENO))
    return cli_usage_error("break", "will not break a lock unasked: stdin is no terminal to "
                                    "ask on; pass --yes");
  const char *url;
  code = cli_url_get("break", &src, from_src ? NULL : pos[0], &url);
  if (code == 0)
    code = break_main(url, pos[npos - 1], yes, token, json);
  cli_url_free(&src);
  return code;
}
