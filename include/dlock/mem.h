/* The in-process mem:// backend: control operations for tests and examples. */
#ifndef DLOCK_MEM_H
#define DLOCK_MEM_H

/* dlock_control(c, NULL, DLOCK_MEM_CTL_EVICT, (void *)"key"): the store
 * forgets the current holder of "key", as if its lease had been deleted
 * behind its back.  0, or DLOCK_EINVAL if nobody holds it. */
#define DLOCK_MEM_CTL_EVICT 0x6d01

#endif
