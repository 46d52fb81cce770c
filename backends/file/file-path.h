/* file:// codec: key -> path and the lock-file record.  No I/O. */
#ifndef DLOCK_FILE_PATH_H
#define DLOCK_FILE_PATH_H

#include <stddef.h>
#include <stdint.h>

#include "backend-util.h"

/* Longest escaped name in one path component before it is split into a
 * directory ("<chunk>.d/"); well under NAME_MAX with room for ".lock". */
#define DLOCK__FILE_CHUNK 200

/* DIR + escaped KEY.  Bytes other than [A-Za-z0-9_-] become %XX (so '.' and
 * '/' never appear in an escaped chunk, and no name can be "." or ".."); long
 * names are split into directories ending in ".d" and the file ends in
 * ".lock", so no key's file can be another key's directory.  Returns the
 * length, or DLOCK_EINVAL if OUT is too small. */
DLOCK__HIDDEN int dlock__file_key_path(const char *dir, const char *key, size_t keylen,
                                       char *out, size_t outlen);

/* The inverse: the key whose path below the directory is the RELLEN bytes
 * of REL ("a%2Fb.lock", "<chunk>.d/<rest>.lock"), NUL-terminated in OUT;
 * its length, or -1 when REL is no path dlock__file_key_path makes (the
 * counter, a stray file) or OUT is too small. */
DLOCK__HIDDEN int dlock__file_path_key(const char *rel, size_t rellen, char *out,
                                       size_t outlen);

typedef struct dlock__file_record {
  uint64_t token;
  char owner[33];
  long pid;
  char label[128];
} dlock__file_record;

/* Text form stored in the lock file.  Returns the length or DLOCK_EINVAL. */
DLOCK__HIDDEN int dlock__file_record_format(const dlock__file_record *r, char *out,
                                            size_t outlen);
/* Parses a record; an empty buffer is a fresh file (token 0).  DLOCK_EBACKEND
 * for anything else that does not parse: a corrupt counter must not silently
 * restart the fencing sequence. */
DLOCK__HIDDEN int dlock__file_record_parse(const char *buf, size_t len,
                                           dlock__file_record *r);

#endif
