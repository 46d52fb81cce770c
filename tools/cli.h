/* Helpers shared by the dlock command's subcommands (tools/dlock.c, tools/bench.c). */
#ifndef DLOCK_TOOLS_CLI_H
#define DLOCK_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "dlock/dlock.h"

/* Exit codes; listed in the usage text, scripts depend on them. */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_FAIL = 1,  /* lock not acquired, or the store failed */
  CLI_EXIT_USAGE = 2, /* bad arguments, URL, key or option */
  CLI_EXIT_LOST = 3   /* lock lost while the command ran */
};

/* Print "dlock: MSG" and the subcommand's usage line to stderr; returns
 * CLI_EXIT_USAGE so callers can `return cli_usage_error(...)`. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "dlock: [WHAT: ]MSG" for a library failure RC (MSG falls back to
 * dlock_strerror(RC)); returns the exit code for it: CLI_EXIT_USAGE for
 * DLOCK_EINVAL (the user gave something invalid), CLI_EXIT_FAIL otherwise. */
int cli_fail(int rc, const char *what, const char *msg);

/* 1 if ARG looks like an option ("-x", "--xyz"); "-" alone is an operand. */
int cli_is_option(const char *arg);

/* Match argv[*i] against SHORTOPT ("-w") / LONGOPT ("--wait"), either may be
 * NULL.  VAL non-NULL means the option takes a value: "-w5", "-w 5",
 * "--wait=5" and "--wait 5" are accepted, and *i moves past a separate value.
 * Returns 1 on a match, 0 if it is another option, -1 (message printed) if
 * the value is missing. */
int cli_match(int argc, char **argv, int *i, const char *cmd, const char *shortopt,
              const char *longopt, const char **val);

/* Where the URL comes from: the URL operand, or --url-file PATH (its one
 * line) or --url-env NAME, so that no password need be in argv, which every
 * user can read in ps and /proc/PID/cmdline. */
struct cli_url {
  const char *file, *env; /* the options' values, or NULL */
  char *buf;              /* the file's contents, wiped by cli_url_free */
};

/* Like cli_match for --url-file and --url-env. */
int cli_url_match(int argc, char **argv, int *i, const char *cmd, struct cli_url *u);

/* *URL = OPERAND (NULL if none was given), or the file's or variable's
 * text; 0 or an exit code after a message that shows none of the URL. */
int cli_url_get(const char *cmd, struct cli_url *u, const char *operand, const char **url);

void cli_url_free(struct cli_url *u);

/* "1.5" (seconds), "1.5s", "250ms", "2m", "1h" -> milliseconds; 0 or -1.
 * Decimal digits with an optional fraction and unit, nothing else. */
int cli_parse_duration_ms(const char *s, int64_t *ms);

/* Decimal integer in [min, max]; 0 or -1. */
int cli_parse_long(const char *s, long min, long max, long *out);

/* S as a JSON string literal; invalid UTF-8 bytes become U+FFFD so the
 * output is always valid JSON whatever a store returns. */
void cli_json_string(FILE *f, const char *s);

/* S with control characters shown as \xNN: text read from a store must not
 * be able to drive the terminal. */
void cli_print_safe(FILE *f, const char *s);

int64_t cli_now_ns(void);

int cli_bench(int argc, char **argv);

#endif
