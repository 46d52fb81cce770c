/* Log messages: what the library does about trouble it handles itself
 * (retries, reconnects, failovers, give-backs) and locks it loses.
 *
 * Silent until dlock_set_log() installs a function.  Messages never hold a
 * secret: URLs appear redacted, and a store's own text is scrubbed of the
 * URL's credentials as error messages are. */
#ifndef DLOCK_LOG_H
#define DLOCK_LOG_H

#include "dlock/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dlock_log_level {
  DLOCK_LOG_ERROR = 1, /* a lock was lost */
  DLOCK_LOG_WARN = 2,  /* a failure the library works around: retry, failover, give-back */
  DLOCK_LOG_INFO = 3,  /* the work-around succeeded: reconnected, given back */
  DLOCK_LOG_DEBUG = 4
} dlock_log_level;

/* Called from whichever thread noticed the event, sometimes while the
 * library holds a client's internal lock: it must be thread-safe, return
 * quickly and not call dlock functions.  MSG is valid during the call only
 * and carries no trailing newline. */
typedef void (*dlock_log_fn)(dlock_log_level level, const char *msg, void *arg);

/* Process-wide: FN gets every message of MAX_LEVEL or more severe (lower
 * numbers); NULL turns logging off.  Returns once no call to the function
 * it replaces is running, so that function's ARG may then be freed.
 * Returns 0, or DLOCK_EINVAL for a level outside [DLOCK_LOG_ERROR,
 * DLOCK_LOG_DEBUG]. */
DLOCK_EXTERN int dlock_set_log(dlock_log_fn fn, void *arg, int max_level);

/* "error", "warn", "info", "debug"; "?" for anything else. */
DLOCK_EXTERN const char *dlock_log_level_name(int level);

#ifdef __cplusplus
}
#endif

#endif
