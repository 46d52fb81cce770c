#ifndef DLOCK_EXPORT_H
#define DLOCK_EXPORT_H

/* The library is built with -fvisibility=hidden; only what carries this
 * attribute is part of the ABI. */
#if defined(__GNUC__) || defined(__clang__)
#define DLOCK_EXTERN __attribute__((visibility("default")))
#else
#define DLOCK_EXTERN
#endif

#define DLOCK_VERSION_MAJOR 0
#define DLOCK_VERSION_MINOR 1
#define DLOCK_VERSION_PATCH 0
#define DLOCK_VERSION_STRING "0.1.0"

#endif
