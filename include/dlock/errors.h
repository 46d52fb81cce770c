/* dlock error codes.
 *
 * Every public function that can fail returns 0 (or a positive value where
 * documented) on success and one of these negative codes on failure.  The
 * table below is the single source: the enum, dlock_strerror(),
 * dlock_err_name() and dlock_err_is_transient() are all generated from it.
 */
#ifndef DLOCK_ERRORS_H
#define DLOCK_ERRORS_H

#include "dlock/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, transient, text)
 * "transient" marks failures where retrying the same call later can succeed
 * without anything else changing (network trouble, deadlines). */
#define DLOCK_ERRNO_MAP(XX)                                                    \
  XX(EINVAL, -1, 0, "invalid argument")                                        \
  XX(EBUSY, -2, 0, "lock is held by another owner")                            \
  XX(ETIMEDOUT, -3, 1, "timed out")                                            \
  XX(ENOTOWNED, -4, 0, "lock is not owned by this handle")                     \
  XX(ELOST, -5, 0, "lock was lost")                                            \
  XX(ECONN, -6, 1, "cannot reach the lock store")                              \
  XX(EAUTH, -7, 0, "authentication with the lock store failed")                \
  XX(EBACKEND, -8, 0, "the lock store reported an error")                      \
  XX(ENOTSUP, -9, 0, "operation not supported by this backend")                \
  XX(ENOMEM, -10, 0, "out of memory")

typedef enum dlock_errno {
  DLOCK_OK = 0,
#define DLOCK__ERR_ENUM(name, val, transient, text) DLOCK_##name = (val),
  DLOCK_ERRNO_MAP(DLOCK__ERR_ENUM)
#undef DLOCK__ERR_ENUM
} dlock_errno;

/* Short English text for a code ("invalid argument"); never NULL. */
DLOCK_EXTERN const char *dlock_strerror(int code);
/* Symbolic name for a code ("DLOCK_EINVAL"); never NULL. */
DLOCK_EXTERN const char *dlock_err_name(int code);
/* 1 if a later retry of the same call may succeed (ECONN, ETIMEDOUT). */
DLOCK_EXTERN int dlock_err_is_transient(int code);

#ifdef __cplusplus
}
#endif
#endif
