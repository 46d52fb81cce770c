/* dlock run -v while it waits: every interval, who holds the lock and for
 * how long we have waited (the store failures retried meanwhile come from
 * the library's log: tools/runlog.c).  A thread of its own, so that a slow
 * store answering the inspect never delays the main thread's signal
 * handling nor the acquire. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

struct cli_progress {
  dlock_client *c;
  const char *key;
  int64_t every_ns, start_ns;
  int stop[2];
  pthread_t th;
};

static void report_holder(struct cli_progress *p, int64_t now) {
  dlock_info info;
  memset(&info, 0, sizeof info);
  int rc = dlock_inspect(p->c, p->key, &info);
  /* One fprintf per line would interleave with other writers of stderr
   * mid-line; build it first. */
  char line[1024];
  FILE *f = fmemopen(line, sizeof line, "w");
  if (!f)
    return;
  fprintf(f, "dlock: waiting for '");
  cli_print_safe(f, p->key);
  fprintf(f, "' for %.1f s: ", (double)(now - p->start_ns) / 1e9);
  unsigned caps = dlock_client_caps(p->c);
  if (rc == DLOCK_ENOTSUP || (rc == 0 && info.held && !(caps & DLOCK_CAP_HOLDER_INFO))) {
    fputs("held", f);
  } else if (rc < 0) {
    /* The library's messages carry no secrets. */
    fputs("cannot ask the store who holds it: ", f);
    const char *m = dlock_client_errmsg(p->c);
    cli_print_safe(f, m[0] ? m : dlock_strerror(rc));
  } else if (!info.held) {
    fputs("free now; taking it", f);
  } else {
    info.label[sizeof info.label - 1] = '\0';
    fputs("held", f);
    if (info.label[0]) {
      fputs(" by ", f);
      cli_print_safe(f, info.label);
    }
    char extra[128] = "";
    size_t k = 0;
    if (info.token)
      k += (size_t)snprintf(extra, sizeof extra, "token %" PRIu64, info.token);
    if (info.ttl_ms >= 0)
      snprintf(extra + k, sizeof extra - k, "%sttl %" PRId64 ".%03d s left", k ? ", " : "",
               info.ttl_ms / 1000, (int)(info.ttl_ms % 1000));
    else if (!(caps & DLOCK_CAP_SERVER_TTL))
      snprintf(extra + k, sizeof extra - k, "%sno ttl", k ? ", " : "");
    if (extra[0])
      fprintf(f, " (%s)", extra);
  }
  fputc('\n', f);
  fclose(f);
  line[sizeof line - 2] = '\n';
  line[sizeof line - 1] = '\0';
  fputs(line, stderr);
}

static void *progress_main(void *arg) {
  struct cli_progress *p = arg;
  int64_t next = p->start_ns + p->every_ns;
  for (;;) {
    int64_t now = cli_now_ns();
    int64_t left = (next - now) / 1000000 + 1;
    struct pollfd pf = {.fd = p->stop[0], .events = POLLIN};
    int r = poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r > 0)
      return NULL;
    if (r < 0 && errno != EINTR)
      return NULL;
    now = cli_now_ns();
    if (now >= next) {
      report_holder(p, now);
      while (next <= now)
        next += p->every_ns;
    }
  }
}

int cli_progress_start(struct cli_progress **out, dlock_client *c, const char *key,
                       int64_t every_ms, int64_t start_ns) {
  struct cli_progress *p = calloc(1, sizeof *p);
  if (!p)
    return -1;
  p->c = c;
  p->key = key;
  p->every_ns = every_ms * 1000000;
  p->start_ns = start_ns;
  if (pipe2(p->stop, O_CLOEXEC) < 0) {
    free(p);
    return -1;
  }
  if (pthread_create(&p->th, NULL, progress_main, p) != 0) {
    close(p->stop[0]), close(p->stop[1]);
    free(p);
    return -1;
  }
  *out = p;
  return 0;
}

void cli_progress_stop(struct cli_progress *p) {
  if (!p)
    return;
  ssize_t n = write(p->stop[1], "S", 1);
  (void)n;
  pthread_join(p->th, NULL);
  close(p->stop[0]), close(p->stop[1]);
  free(p);
}
