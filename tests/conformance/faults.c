/* Dispatch of conf_break_lock() by URL scheme. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backends/file/file-path.h"
#include "dlock/mem.h"
#include "faults.h"
#include "internal.h"

static int break_file(const char *url, const char *key) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0)
    return -1;
  char path[PATH_MAX];
  int rc = dlock__file_key_path(dlock_url_path(u), key, strlen(key), path, sizeof path);
  dlock__url_free(u);
  if (rc < 0)
    return -1;
  return unlink(path) == 0 ? 0 : -1;
}

static int break_mem(const char *url, const char *key) {
  dlock_client *c;
  if (dlock_open(url, &c) < 0)
    return -1;
  int rc = dlock_control(c, NULL, DLOCK_MEM_CTL_EVICT, (void *)key);
  dlock_close(c);
  return rc == 0 ? 0 : -1;
}

int conf_break_lock(const char *url, const char *key) {
  if (strncmp(url, "file:", 5) == 0)
    return break_file(url, key);
  if (strncmp(url, "mem:", 4) == 0)
    return break_mem(url, key);
#ifdef DLOCK_HAVE_REDIS
  if (strncmp(url, "redis", 5) == 0)
    return conf_redis_break_lock(url, key);
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
  if (strncmp(url, "zk:", 3) == 0)
    return conf_zk_break_lock(url, key);
#endif
  fprintf(stderr, "conformance: no fault injector for %s\n", url);
  return -1;
}

int conf_forget_key(const char *url, const char *key) {
  if (strncmp(url, "file:", 5) == 0)
    return break_file(url, key); /* the counter lives in the file */
  if (strncmp(url, "mem:", 4) == 0)
    return 1;
#ifdef DLOCK_HAVE_REDIS
  if (strncmp(url, "redis", 5) == 0)
    return conf_redis_forget_key(url, key);
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
  if (strncmp(url, "zk:", 3) == 0)
    return conf_zk_forget_key(url, key);
#endif
  fprintf(stderr, "conformance: no fault injector for %s\n", url);
  return -1;
}
