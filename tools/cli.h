/* Helpers shared by the dlock command's subcommands (tools/cli.c) and the
 * subcommands themselves. */
#ifndef DLOCK_TOOLS_CLI_H
#define DLOCK_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "dlock/dlock.h"

/* Exit codes; listed in every subcommand's --help (tools/help.c), scripts
 * depend on them.  Beside COMMAND's own status, which dlock run passes
 * through, they follow flock(1) for a busy lock, sysexits.h for failures of
 * the store or the arguments, and timeout(1) and env(1) above 123, so that
 * few commands' own statuses look like them. */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_CONFLICT = 1,     /* held elsewhere, or the wait ran out (-E N) */
  CLI_EXIT_USAGE = 64,       /* EX_USAGE: bad arguments, URL, key or option */
  CLI_EXIT_UNAVAILABLE = 69, /* EX_UNAVAILABLE: store unreachable, too slow */
  CLI_EXIT_STORE = 76,       /* EX_PROTOCOL: the store failed the request */
  CLI_EXIT_AUTH = 77,        /* EX_NOPERM: the store refused the credentials */
  CLI_EXIT_LOST = 124,       /* lock lost while COMMAND ran: COMMAND stopped */
  CLI_EXIT_INTERNAL = 125,   /* dlock itself failed (memory, fork, pipe, I/O) */
  CLI_EXIT_CANNOT_RUN = 126, /* COMMAND found but not executable */
  CLI_EXIT_NOT_FOUND = 127   /* COMMAND not found */
};

/* The exit code for a library failure RC. */
int cli_exit_code(int rc);

/* The usage lines of subcommand CMD (NULL: the command's). */
const char *cli_usage_line(const char *cmd);

/* The help text of subcommand CMD, or of everything (NULL), with the exit
 * statuses it can return. */
void cli_help(FILE *f, const char *cmd);

/* Print "dlock: MSG" and the subcommand's usage line to stderr; returns
 * CLI_EXIT_USAGE so callers can `return cli_usage_error(...)`. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "dlock: [WHAT: ]MSG" for a library failure RC (MSG falls back to
 * dlock_strerror(RC)); returns cli_exit_code(RC). */
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

/* S with control characters and bytes of no valid UTF-8 sequence shown as
 * \xNN, and C1 controls and direction or line-separating code points as
 * \uNNNN: text read from a store must not be able to drive the terminal or
 * reorder what is shown around it. */
void cli_print_safe(FILE *f, const char *s);

int64_t cli_now_ns(void);

/* Length of the valid UTF-8 sequence at P (2..4 bytes), or 0. */
size_t cli_utf8_seq(const unsigned char *p);

/* dlock run -v's reports while waiting for a lock (tools/progress.c): every
 * EVERY_MS since START_NS (CLOCK_BOOTTIME) who holds KEY.  -1 if it cannot
 * start. */
struct cli_progress;
int cli_progress_start(struct cli_progress **out, dlock_client *c, const char *key,
                       int64_t every_ms, int64_t start_ns);
void cli_progress_stop(struct cli_progress *p); /* NULL is fine */

/* dlock run -v: the library's log messages on stderr (tools/runlog.c),
 * until cli_runlog_stop; -1 if that cannot start. */
int cli_runlog_start(void);
void cli_runlog_stop(void);

/* What dlock run --metrics-textfile writes (tools/textfile.c).  Times are
 * cli_now_ns(), 0 if never reached. */
struct cli_run_report {
  const char *key;
  char store[32]; /* the URL's scheme, never more of it */
  int64_t start_ns, wait_end_ns, acquired_ns, lost_ns, end_ns;
  int acquired, lost, exit_code;
  uint64_t token;
  int have_metrics;
  dlock_metrics metrics; /* the client's, at the end */
};

/* URL's scheme, lowercase, or "unknown". */
void cli_url_scheme(const char *url, char *out, size_t len);

/* 0 if PATH can be written later (its directory exists and is writable),
 * or an exit code after a usage message. */
int cli_textfile_check(const char *cmd, const char *path);

/* Write R to PATH.tmp-PID, then rename it to PATH; 0, or -1 after a
 * message. */
int cli_textfile_write(const char *path, const struct cli_run_report *r);

/* Open URL; on failure print why (the library's message names the part of
 * the URL at fault, secrets removed), set *EXIT_CODE and return -1. */
int cli_open(const char *url, dlock_client **c, int *exit_code);
/* The subcommands: dlock run (tools/run.c), dlock status (tools/admin.c),
 * dlock bench (tools/bench.c). */
int cli_run(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_bench(int argc, char **argv);
/* dlock list and dlock break (tools/admin.c). */
int cli_list(int argc, char **argv);
int cli_break(int argc, char **argv);

#endif
