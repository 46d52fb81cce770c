/* The postmaster's first answer on a grant's confirmation probe, which
 * decides whether a PostgreSQL advisory grant is reported.  Oracles: the
 * answer never reads past the N bytes it is given; once it decides (admit,
 * refuse, not the protocol) more bytes never change the decision; a refusal
 * is only ever a message carrying SQLSTATE 57P03, and an admission only an
 * authentication request or an error with another SQLSTATE. */
#include "fuzz.h"

#include "backends/postgres/pg-codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A copy of exactly SIZE bytes: ASan catches any read past them. */
  unsigned char *buf = (unsigned char *)fuzz_memdup(data, size);
  int ok = -1;
  int full = dlock__pg_first_reply(buf, size, &ok);
  FUZZ_CHECK(full == 0 || full == 1 || full == DLOCK__PG_NEED_MORE || full == DLOCK_EBACKEND,
             "unexpected result %d", full);
  FUZZ_CHECK(ok == 0 || ok == 1, "auth_ok is %d", ok);
  FUZZ_CHECK(!ok || (full == 1 && size >= 9 && buf[0] == 'R'), "auth_ok without AuthenticationOk");
  if (full == 0)
    FUZZ_CHECK(size >= 1 && buf[0] == 'E' && fuzz_count((const char *)buf, size, "C57P03", 6) > 0,
               "refused without 57P03");
  if (full == 1)
    FUZZ_CHECK(size >= 1 && (buf[0] == 'R' || buf[0] == 'E'), "admitted on message type %d",
               size ? buf[0] : -1);
  /* Every shorter prefix either waits for more or already decided the same
   * (quadratic, so for inputs of a message's usual size). */
  int decided_at = -1;
  for (size_t n = 0; n <= size && size <= 1024; n++) {
    unsigned char *pre = (unsigned char *)fuzz_memdup(buf, n);
    int pok;
    int r = dlock__pg_first_reply(pre, n, &pok);
    free(pre);
    if (r == DLOCK__PG_NEED_MORE) {
      FUZZ_CHECK(decided_at < 0, "decided at %d bytes, asks for more at %zu", decided_at, n);
      continue;
    }
    if (decided_at < 0)
      decided_at = (int)n;
    FUZZ_CHECK(r == full, "%zu bytes say %d, all %zu say %d", n, r, size, full);
  }
  free(buf);
  return 0;
}
