/* The dlock command's help texts: `dlock --help` prints all of them,
 * `dlock SUBCOMMAND --help` that subcommand's, each with the exit statuses
 * it can return (scripts and the manual page depend on that table). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char overview[] =
    "Usage: dlock run [-w SECS | -n] [-E N] [-v] [--ttl SECS] [--grace SECS]\n"
    "                 [--label TEXT] [--foreground] [--progress SECS]\n"
    "                 [--metrics-textfile PATH] URL KEY -- COMMAND [ARG...]\n"
    "       dlock status [--json] URL KEY\n"
    "       dlock list [--json] URL [PREFIX]\n"
    "       dlock break [-y] [--token N] [--json] URL KEY\n"
    "       dlock bench URL [--threads N] [--keys K] [--seconds S] [--locks H]\n"
    "                   [--only PHASE[,PHASE...]] [--shared-client] [--json]\n"
    "       dlock help | --help | -V | --version\n";

static const char url_note[] =
    "Instead of the URL argument every command takes --url-file PATH (the URL\n"
    "is the file's one line) or --url-env NAME (the variable's value, which\n"
    "run removes from COMMAND's environment): argv is visible to every user.\n";

static const char run_text[] =
    "  run      Acquire KEY in the lock store at URL, run COMMAND while holding it\n"
    "           (renewed automatically), release it when COMMAND exits.\n"
    "           COMMAND runs in its own process group with DLOCK_KEY, DLOCK_TOKEN\n"
    "           (the fencing token, decimal) and DLOCK_URL (URL without secrets)\n"
    "           in its environment.  SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to\n"
    "           dlock are forwarded to that process group.  If the lock is lost\n"
    "           while COMMAND runs, dlock prints a message, sends SIGTERM to the\n"
    "           group and to everything COMMAND started, SIGKILL after the grace\n"
    "           period, and exits 124 once all of it is gone.  The same happens\n"
    "           if dlock itself dies (even of SIGKILL): a guardian process keeps\n"
    "           the lock until then where the store would free it at once\n"
    "           (file://, postgres:// advisory locks).\n"
    "             -w, --wait SECS   wait at most SECS for the lock (default: forever)\n"
    "             -n, --nowait      fail at once if the lock is held\n"
    "             -E, --conflict-exit-code N\n"
    "                               exit N (0-255) instead of 1 when the lock is\n"
    "                               held elsewhere (-n) or the wait runs out (-w)\n"
    "             --ttl SECS        lease length (default: the URL's ?ttl=, else 15)\n"
    "             --grace SECS      SIGTERM to SIGKILL delay (default: 10)\n"
    "             --label TEXT      holder label shown by status (default: host:pid)\n"
    "             --foreground      keep COMMAND in dlock's process group so it can\n"
    "                               read the terminal; COMMAND and what it started\n"
    "                               are signalled one by one, not as a group\n"
    "             -v, --verbose     report on stderr, one line each: while waiting,\n"
    "                               who holds the lock (label, token, ttl left, or\n"
    "                               just \"held\" where the store cannot say) and\n"
    "                               how long dlock has waited, every --progress;\n"
    "                               the acquisition; the library's messages: each\n"
    "                               store failure retried while acquiring or\n"
    "                               renewing, give-backs, why the lock was lost\n"
    "             --progress SECS   the report interval while waiting (default: 5,\n"
    "                               at least 0.1); implies -v\n"
    "             --metrics-textfile PATH\n"
    "                               when dlock run ends (COMMAND exited, the lock\n"
    "                               was lost or not acquired, a signal killed the\n"
    "                               wait), write the run's metrics in Prometheus\n"
    "                               text format for node_exporter's textfile\n"
    "                               collector (which reads *.prom files): to\n"
    "                               PATH.tmp-PID in the same directory, then\n"
    "                               renamed to PATH.  dlock_run_acquired, _lost,\n"
    "                               _exit_code, _wait_seconds, _hold_seconds,\n"
    "                               _token, _renewals_total,\n"
    "                               _renewal_failures_total,\n"
    "                               _acquire_retries_total and\n"
    "                               _end_timestamp_seconds, labelled with key and\n"
    "                               store (the URL's scheme, nothing more).  A\n"
    "                               failure to write it is reported and leaves the\n"
    "                               exit status alone; a SIGKILLed dlock run\n"
    "                               writes nothing.\n";

static const char status_text[] =
    "  status   Show who holds KEY: token, remaining TTL, owner and label.\n"
    "           --json prints one JSON object.\n";

static const char list_text[] =
    "  list     Show every lock held in the store at URL whose key begins with\n"
    "           PREFIX (default: all), sorted by key: token, remaining TTL\n"
    "           (\"-\": none, or not known), holder label and key.  --json prints\n"
    "           one JSON array.  Stores that cannot name their locks\n"
    "           (postgres:// advisory locks, which the server knows by a hash)\n"
    "           exit 76.\n";

static const char break_text[] =
    "  break    Release KEY for its holder, as an operator: shows the holder and\n"
    "           asks on the terminal first.  Only the holder shown is broken: if\n"
    "           the lock changed hands meanwhile, nothing is, and break exits 1.\n"
    "           The holder is not asked: it learns of the loss at its next\n"
    "           renewal (or at once where the store tells it), and may act as the\n"
    "           holder until then; its fencing token is what keeps it out.\n"
    "           Prints what it broke.  A key nobody holds is no error.\n"
    "             -y, --yes    do not ask (needed when stdin is not a terminal)\n"
    "             --token N    break only if the holder's token is N\n"
    "             --json       print {\"broken\":true,\"lock\":{...}} or\n"
    "                          {\"broken\":false}\n";

static const char bench_text[] =
    "  bench    Measure the store: uncontended try_acquire+release pairs on\n"
    "           distinct keys (bench/THREAD/N), contended handoff between two\n"
    "           clients on one key, and dlock_renew with H locks held; with\n"
    "           --only hold, H locks acquired in turn and held with auto-renew.\n"
    "             --threads N (1)  --keys K (1)  --seconds S (5, per phase)\n"
    "             --locks H (100)  --only uncontended,handoff,renew,hold\n"
    "             (the first three)\n"
    "             --shared-client  uncontended threads share one client\n";

static const char syntax_text[] =
    "SECS is a decimal number of seconds, or one ending in ms, s, m or h\n"
    "(500ms, 1.5, 15s, 2m, 1h), as in URLs except that a bare number is seconds.\n"
    "URL examples: file:///var/lib/dlock  redis://host:6379/0?ttl=30s  mem://\n";

/* The exit status table.  dlock run shows RUN; status, list and bench show
 * OTHER, and break BRK where it is set, else OTHER; NULL: not that
 * command's. */
enum { EXITS_OTHER, EXITS_RUN, EXITS_BREAK };
struct exit_row {
  const char *run, *other, *brk;
};

static const struct exit_row exit_rows[] = {
    {"  0      COMMAND exited 0\n", "  0      success\n", NULL},
    {"  1      the lock is held elsewhere (-n) or the -w wait ran out;\n"
     "         -E N changes this status to N\n",
     NULL,
     "  1      nothing was broken: the lock changed hands, its token was\n"
     "         not --token's, or the answer was not yes\n"},
    {"  64     usage error: bad option or value, invalid URL or key,\n"
     "         unreadable --url-file, unset --url-env, --metrics-textfile\n"
     "         in a directory that is missing or not writable\n",
     "  64     usage error: bad option or value, invalid URL or key,\n"
     "         unreadable --url-file, unset --url-env\n", NULL},
    {"  69     the lock store is unreachable or did not answer in time\n",
     "  69     the lock store is unreachable or did not answer in time\n", NULL},
    {"  76     the lock store reported an error, or lacks the operation\n",
     "  76     the lock store reported an error, or lacks the operation\n", NULL},
    {"  77     the lock store refused the credentials (authentication)\n",
     "  77     the lock store refused the credentials (authentication)\n", NULL},
    {"  124    the lock was lost while COMMAND ran; COMMAND was stopped\n", NULL, NULL},
    {"  125    dlock itself failed (out of memory, fork, pipe), or its\n"
     "         guardian process was killed\n",
     "  125    dlock itself failed (out of memory, a write error)\n", NULL},
    {"  126    COMMAND was found but could not be executed\n", NULL, NULL},
    {"  127    COMMAND was not found\n", NULL, NULL},
    {"  128+N  COMMAND was killed by signal N, or dlock run itself was\n"
     "         while it waited for the lock\n",
     NULL, NULL},
    {"  other  COMMAND's own exit status, passed through unchanged.  Where\n"
     "         COMMAND itself may exit 1, 64-77 or 124-127 these cannot be\n"
     "         told apart (as with env, timeout or flock); -E moves the busy\n"
     "         status out of COMMAND's way\n",
     NULL, NULL},
};

static void exit_table(FILE *f, const char *title, int which) {
  fprintf(f, "\n%s:\n", title);
  for (size_t i = 0; i < sizeof exit_rows / sizeof exit_rows[0]; i++) {
    const struct exit_row *r = &exit_rows[i];
    const char *t = which == EXITS_RUN                ? r->run
                    : which == EXITS_BREAK && r->brk ? r->brk
                                                      : r->other;
    if (t)
      fputs(t, f);
  }
}

static const char *const usage_lines[][2] = {
    {"run", "dlock run [-w SECS | -n] [-E N] [-v] [--ttl SECS] [--grace SECS]\n"
            "                 [--label TEXT] [--foreground] [--progress SECS]\n"
            "                 [--metrics-textfile PATH] URL KEY -- COMMAND [ARG...]\n"
            "       (--url-file PATH or --url-env NAME may stand for URL)"},
    {"status", "dlock status [--json] URL KEY\n"
               "       (--url-file PATH or --url-env NAME may stand for URL)"},
    {"list", "dlock list [--json] URL [PREFIX]\n"
             "       (--url-file PATH or --url-env NAME may stand for URL)"},
    {"break", "dlock break [-y] [--token N] [--json] URL KEY\n"
              "       (--url-file PATH or --url-env NAME may stand for URL)"},
    {"bench", "dlock bench URL [--threads N] [--keys K] [--seconds S] [--locks H]\n"
              "                   [--only uncontended,handoff,renew,hold] [--shared-client] [--json]\n"
              "       (--url-file PATH or --url-env NAME may stand for URL)"},
};

const char *cli_usage_line(const char *cmd) {
  for (size_t i = 0; cmd && i < sizeof usage_lines / sizeof usage_lines[0]; i++)
    if (strcmp(cmd, usage_lines[i][0]) == 0)
      return usage_lines[i][1];
  return "dlock COMMAND [ARG...]";
}

void cli_help(FILE *f, const char *cmd) {
  if (!cmd) {
    fputs(overview, f);
    fputc('\n', f);
    fputs(url_note, f);
    fputs("\nCommands:\n", f);
    fputs(run_text, f);
    fputs(status_text, f);
    fputs(list_text, f);
    fputs(break_text, f);
    fputs(bench_text, f);
    fputc('\n', f);
    fputs(syntax_text, f);
    exit_table(f, "Exit status of run", EXITS_RUN);
    exit_table(f, "Exit status of status, list and bench", EXITS_OTHER);
    exit_table(f, "Exit status of break", EXITS_BREAK);
    return;
  }
  const char *text = strcmp(cmd, "run") == 0      ? run_text
                     : strcmp(cmd, "status") == 0 ? status_text
                     : strcmp(cmd, "list") == 0   ? list_text
                     : strcmp(cmd, "break") == 0  ? break_text
                                                  : bench_text;
  fprintf(f, "Usage: %s\n\n", cli_usage_line(cmd));
  fputs(text, f);
  fputc('\n', f);
  if (strcmp(cmd, "run") == 0 || strcmp(cmd, "bench") == 0)
    fputs(syntax_text, f);
  exit_table(f, "Exit status",
             strcmp(cmd, "run") == 0     ? EXITS_RUN
             : strcmp(cmd, "break") == 0 ? EXITS_BREAK
                                         : EXITS_OTHER);
}
