/* libpq's messages, scrubbed by dlock__pg_safe_message before they reach
 * a caller: no secret survives.  The input is a message (any bytes; the
 * first line is what is kept), checked against a URL with a password, a
 * secret parameter and a secret that is also passed to libpq as a value.
 * The scrubber hides quoted parts that are not known to be harmless and
 * shows the rest as it is, so a secret may show in the output only as
 * often as it stands outside quotes in the message. */
#include "fuzz.h"

#include "backends/postgres/pg-codec.h"
#include "internal.h"

static const char URL[] = "postgres://dlock:S3CRETPW@db1:5432,[::1]/app?"
                          "sslpassword=K3YPW-77&sslmode=require&port=S3CRETPW";

/* The first line of MSG with every quoted part the scrubber would pair
 * cut out (each replaced by a '\n', so no text joins across it), and
 * nothing after a quote that has no partner. */
static char *outside_quotes(const char *msg) {
  size_t end = strcspn(msg, "\n"), o = 0;
  char *s = malloc(end + 1);
  if (!s)
    abort();
  for (size_t i = 0; i < end;) {
    if (msg[i] != '"') {
      s[o++] = msg[i++];
      continue;
    }
    const char *close = memchr(msg + i + 1, '"', end - i - 1);
    if (!close)
      break;
    s[o++] = '\n';
    i = (size_t)(close - msg) + 1;
  }
  s[o] = '\0';
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static dlock_url *u;
  if (!u && dlock__url_parse(URL, &u) < 0)
    abort();
  static const char *const names[] = {"sslpassword", "sslmode", "port"};
  static const char *const values[] = {"K3YPW-77", "require", "S3CRETPW"};
  char *msg = fuzz_strndup(data, size);
  char *pub = outside_quotes(msg);
  size_t lens[2] = {256, size ? 1 + data[0] % 64 : 1};
  for (int k = 0; k < 2; k++) {
    char out[256];
    memset(out, 'x', sizeof out);
    const char *r = dlock__pg_safe_message(u, names, values, 3, msg, out, lens[k]);
    FUZZ_CHECK(r == out && memchr(out, '\0', lens[k]), "message not terminated in %zu bytes",
               lens[k]);
    for (size_t i = lens[k]; i < sizeof out; i++)
      FUZZ_CHECK(out[i] == 'x', "written past %zu bytes", lens[k]);
    const char *s;
    for (size_t i = 0; (s = dlock__url_secret(u, i)) != NULL; i++) {
      size_t sl = strlen(s);
      size_t shown = fuzz_count(out, strlen(out), s, sl);
      size_t outside = fuzz_count(pub, strlen(pub), s, sl);
      FUZZ_CHECK(shown <= outside, "\"%s\" shows secret \"%s\" %zu times, %zu outside quotes",
                 out, s, shown, outside);
    }
  }
  free(pub);
  free(msg);
  return 0;
}
