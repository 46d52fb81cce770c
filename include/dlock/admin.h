/* Operator's operations: what a store holds, and breaking a lock.
 *
 * For tools such as `dlock list` and `dlock break`, not for callers of
 * locks: a broken holder is not asked, it only learns of the loss at its
 * next renewal (or at once on stores that watch their locks), and until
 * then it may still act as the holder.  Fencing tokens are what keeps a
 * broken holder's late writes out. */
#ifndef DLOCK_ADMIN_H
#define DLOCK_ADMIN_H

#include "dlock/dlock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called once per held lock; KEY and INFO are valid during the call only.
 * A positive return stops the walk (negative values are the library's
 * error codes).  It must not close the client. */
typedef int (*dlock_list_fn)(void *arg, const char *key, const dlock_info *info);

/* Every lock held now in the client's store (under its URL's ?prefix=)
 * whose key begins with PREFIX (NULL or "" = all), in no particular order.
 * Returns 0 once every lock was reported, FN's positive value if FN
 * stopped the walk, or a negative code: DLOCK_ENOTSUP on stores that
 * cannot name their locks (dlock_client_caps() lacks DLOCK_CAP_LIST).  A
 * lock taken or released during the walk may or may not be reported. */
DLOCK_EXTERN int dlock_list(dlock_client *c, const char *prefix, dlock_list_fn fn, void *arg);

/* Releases KEY as an operator would: whoever holds it when HOLDER is NULL.
 * With HOLDER (what dlock_inspect said), only while the store still names
 * that holder: by its owner when HOLDER->owner is not "", else by its
 * token when HOLDER->token is not 0, else by the label where the store
 * knows holders by nothing else (PostgreSQL advisory locks: the server
 * process); so that what is broken is what was looked at, not a holder
 * that took the lock since.  A HOLDER with none of the three breaks
 * nothing if it says the key was free, and is refused (DLOCK_EBUSY) if it
 * says it was held.  Returns 0
 * with *BROKEN (may be NULL) describing the holder released,
 * BROKEN->held = 0 if nothing was (KEY free, or the holder named gone
 * meanwhile); DLOCK_EBUSY if KEY is held by another holder than HOLDER's;
 * DLOCK_ENOTSUP where the store cannot (no DLOCK_CAP_BREAK).  The holder's
 * lock turns LOST at its next renewal, or at once where the store tells
 * it; a lock of the calling client itself turns LOST at once. */
DLOCK_EXTERN int dlock_break(dlock_client *c, const char *key, const dlock_info *holder,
                             dlock_info *broken);

#ifdef __cplusplus
}
#endif
#endif
