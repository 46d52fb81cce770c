/* once URL KEY: do a job at most once at a time across every machine that
 * shares the store, and show the fencing token the job would hand to the
 * resource it writes to.  Built against the shared library and the public
 * headers only. */
#include <stdio.h>
#include <stdlib.h>

#include <dlock/dlock.h>

static void lost(const char *key, uint64_t token, void *arg) {
  (void)arg;
  /* Runs on the library's thread: only flag it. */
  fprintf(stderr, "lost %s (token %llu)\n", key, (unsigned long long)token);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s URL KEY\n", argv[0]);
    return 2;
  }
  dlock_client *c;
  if (dlock_open(argv[1], &c) < 0) {
    fprintf(stderr, "%s\n", dlock_client_errmsg(NULL));
    return 1;
  }
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 0;
  o.on_lost = lost;
  dlock_lock *l;
  int rc = dlock_acquire(c, argv[2], &o, &l);
  if (rc == DLOCK_EBUSY) {
    printf("%s is running elsewhere\n", argv[2]);
  } else if (rc < 0) {
    fprintf(stderr, "%s: %s\n", dlock_err_name(rc), dlock_client_errmsg(NULL));
  } else {
    printf("holding %s with fencing token %llu\n", argv[2],
           (unsigned long long)dlock_lock_token(l));
    rc = dlock_release(l);
  }
  dlock_close(c);
  return rc == 0 ? 0 : 1;
}
