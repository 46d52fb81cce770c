/* dlock-bench-names URL N [PREFIX]: acquires and releases N distinct names
 * one after another, as a cache that locks one name per entry does, and
 * prints the rate.  What the store keeps afterwards is measured around it
 * by bench/names.sh. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlock/dlock.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: dlock-bench-names URL N [PREFIX]\n");
    return 2;
  }
  char *end;
  long n = strtol(argv[2], &end, 10);
  if (*end || n < 1) {
    fprintf(stderr, "dlock-bench-names: N must be a positive number\n");
    return 2;
  }
  const char *prefix = argc == 4 ? argv[3] : "names/";
  char shown[512];
  dlock_url_redact(argv[1], shown, sizeof shown);
  dlock_client *c;
  if (dlock_open(argv[1], &c) != 0) {
    fprintf(stderr, "dlock-bench-names: %s\n", dlock_client_errmsg(NULL));
    return 1;
  }
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 10000;
  o.auto_renew = 0;
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    char key[256];
    snprintf(key, sizeof key, "%s%ld", prefix, i);
    dlock_lock *l;
    int rc = dlock_try_acquire(c, key, &o, &l);
    if (rc == 0)
      rc = dlock_release(l);
    if (rc != 0) {
      fprintf(stderr, "dlock-bench-names: %s: %s\n", key, dlock_client_errmsg(NULL));
      dlock_close(c);
      return 1;
    }
  }
  double dt = now_s() - t0;
  printf("%s: %ld names acquired and released in %.2f s (%.0f pairs/s)\n", shown, n, dt,
         (double)n / dt);
  dlock_close(c);
  return 0;
}
