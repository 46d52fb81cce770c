/* zk-floor HOST:PORT [SECONDS]: the raw floor dlock's ZooKeeper lock is
 * measured against: one ephemeral sequential create + one delete, on an open
 * session, one at a time, with the same C client.  Prints p50/p99/p99.9 in
 * microseconds and the rate, as one JSON object. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The synchronous API is only declared for the multithreaded library. */
#ifndef THREADED
#define THREADED
#endif
#include <zookeeper/zookeeper.h>

#include "floor.h"

int main(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("dlock %s\n", DLOCK_TOOLS_VERSION);
    return 0;
  }
  if (argc < 2) {
    fprintf(stderr, "usage: zk-floor HOST:PORT [SECONDS]\n");
    return 2;
  }
  double secs = argc > 2 ? atof(argv[2]) : 5;
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  zhandle_t *zh = zookeeper_init(argv[1], NULL, 10000, NULL, NULL, 0);
  if (!zh) {
    perror("zookeeper_init");
    return 1;
  }
  /* The first synchronous call waits for the session. */
  int rc = zoo_create(zh, "/zk-floor", NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
  if (rc != ZOK && rc != ZNODEEXISTS) {
    fprintf(stderr, "create /zk-floor: %s\n", zerror(rc));
    return 1;
  }
  size_t cap = 1 << 20, n = 0;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat)
    return 1;
  char path[256];
  int64_t end = now_ns() + (int64_t)(secs * 1e9), t0 = now_ns();
  while (now_ns() < end && n < cap) {
    int64_t a = now_ns();
    rc = zoo_create(zh, "/zk-floor/n-", "x", 1, &ZOO_OPEN_ACL_UNSAFE,
                    ZOO_EPHEMERAL | ZOO_SEQUENCE, path, sizeof path);
    if (rc == ZOK)
      rc = zoo_delete(zh, path, -1);
    if (rc != ZOK) {
      fprintf(stderr, "zk-floor: %s\n", zerror(rc));
      return 1;
    }
    lat[n++] = (double)(now_ns() - a) / 1000.0;
  }
  double el = (double)(now_ns() - t0) / 1e9;
  qsort(lat, n, sizeof *lat, cmp);
  printf("{\"ops\":%zu,\"ops_per_sec\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f}\n",
         n, (double)n / el, pct(lat, n, 0.5), pct(lat, n, 0.99), pct(lat, n, 0.999));
  zookeeper_close(zh);
  free(lat);
  return 0;
}
