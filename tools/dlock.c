/* dlock: command-line front end to the dlock library (tools/help.c has the
 * full usage): picks the subcommand.
 *
 *   dlock run      tools/run.c
 *   dlock status, list, break   tools/admin.c
 *   dlock bench    tools/bench.c
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dlock/dlock.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    cli_help(stderr, NULL);
    return CLI_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  int code;
  if (strcmp(cmd, "run") == 0) {
    code = cli_run(argc - 2, argv + 2);
  } else if (strcmp(cmd, "status") == 0) {
    code = cli_status(argc - 2, argv + 2);
  } else if (strcmp(cmd, "bench") == 0) {
    code = cli_bench(argc - 2, argv + 2);
  } else if (strcmp(cmd, "list") == 0) {
    code = cli_list(argc - 2, argv + 2);
  } else if (strcmp(cmd, "break") == 0) {
    code = cli_break(argc - 2, argv + 2);
  } else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
             strcmp(cmd, "-h") == 0) {
    cli_help(stdout, NULL);
    code = CLI_EXIT_OK;
  } else if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0 ||
             strcmp(cmd, "version") == 0) {
    printf("dlock %s\n", DLOCK_TOOLS_VERSION);
    /* A libdlock.so from another build answers for the locks. */
    if (strcmp(dlock_version(), DLOCK_TOOLS_VERSION) != 0)
      printf("libdlock %s\n", dlock_version());
    code = CLI_EXIT_OK;
  } else {
    return cli_usage_error(NULL, "unknown command '%s'", cmd);
  }
  if (fflush(stdout) != 0 && code == CLI_EXIT_OK) {
    fprintf(stderr, "dlock: write error: %s\n", strerror(errno));
    code = CLI_EXIT_INTERNAL;
  }
  return code;
}
