/* Base64 (the standard alphabet, padded) for the JSON stores: etcd's
 * gateway carries keys and values as protobuf bytes, Consul its KV
 * values as Go's []byte.  No I/O, for the codecs and their tests. */
#ifndef DLOCK_HTTP_BASE64_H
#define DLOCK_HTTP_BASE64_H

#include <stddef.h>

#include "backend-util.h"

/* LEN bytes of DATA encoded, NUL-terminated, malloc'd; NULL when out of
 * memory. */
DLOCK__HIDDEN char *dlock__b64_encode(const void *data, size_t len);
/* N characters of S decoded into a malloc'd buffer with a NUL after the
 * data (*OUTLEN bytes of it).  0, or DLOCK_EBACKEND with a message that
 * begins with WHO ("etcd") for what is not base64, or DLOCK_ENOMEM. */
DLOCK__HIDDEN int dlock__b64_decode(const char *who, const char *s, size_t n, char **out,
                                    size_t *outlen);

#endif
