/* dlock run -v: the library's log (dlock_set_log) on stderr: retries of a
 * failed acquire or renewal, give-backs, reconnections and losses, each
 * with the store's own text, scrubbed of secrets by the library.
 *
 * The library calls the log function on its own threads, some of them
 * holding a client's lock, so the function only queues the message; a
 * thread of ours writes it.  A stderr that blocks (a full pipe nobody
 * reads) then delays the messages and nothing else: never a renewal. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dlock/log.h"

#define RUNLOG_QUEUE 64

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *msg[RUNLOG_QUEUE];
  unsigned head, n, dropped;
  int stop, started;
  pthread_t th;
} lg = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {NULL}, 0, 0, 0, 0, 0, 0};

static void runlog_fn(dlock_log_level level, const char *msg, void *arg) {
  (void)level, (void)arg;
  char *copy = strdup(msg);
  pthread_mutex_lock(&lg.mu);
  if (!copy || lg.n == RUNLOG_QUEUE) {
    lg.dropped++;
    free(copy);
  } else {
    lg.msg[(lg.head + lg.n++) % RUNLOG_QUEUE] = copy;
  }
  pthread_cond_signal(&lg.cv);
  pthread_mutex_unlock(&lg.mu);
}

/* One line, written at once: other writers of stderr (dlock run's own
 * messages) must not land inside it. */
static void print_line(const char *msg) {
  size_t len = strlen(msg);
  char *line = malloc(len * 4 + 16);
  if (!line)
    return;
  char *p = line;
  memcpy(p, "dlock: ", 7);
  p += 7;
  for (const unsigned char *s = (const unsigned char *)msg; *s; s++) {
    /* Store text must not be able to drive the terminal. */
    if (*s < 0x20 || *s == 0x7f)
      p += sprintf(p, "\\x%02x", *s);
    else
      *p++ = (char)*s;
  }
  *p++ = '\n';
  fwrite(line, 1, (size_t)(p - line), stderr);
  free(line);
}

static void *runlog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&lg.mu);
  for (;;) {
    while (lg.n == 0 && lg.dropped == 0 && !lg.stop)
      pthread_cond_wait(&lg.cv, &lg.mu);
    if (lg.n == 0 && lg.dropped == 0)
      break; /* stopping, and everything is out */
    char *m = NULL;
    unsigned dropped = 0;
    if (lg.n) {
      m = lg.msg[lg.head];
      lg.head = (lg.head + 1) % RUNLOG_QUEUE;
      lg.n--;
    } else {
      dropped = lg.dropped;
      lg.dropped = 0;
    }
    pthread_mutex_unlock(&lg.mu);
    if (m) {
      print_line(m);
      free(m);
    } else {
      fprintf(stderr, "dlock: %u log messages dropped (stderr too slow)\n", dropped);
    }
    pthread_mutex_lock(&lg.mu);
  }
  pthread_mutex_unlock(&lg.mu);
  return NULL;
}

int cli_runlog_start(void) {
  if (pthread_create(&lg.th, NULL, runlog_main, NULL) != 0)
    return -1;
  lg.started = 1;
  dlock_set_log(runlog_fn, NULL, DLOCK_LOG_INFO);
  return 0;
}

void cli_runlog_stop(void) {
  if (!lg.started)
    return;
  dlock_set_log(NULL, NULL, DLOCK_LOG_INFO);
  pthread_mutex_lock(&lg.mu);
  lg.stop = 1;
  pthread_cond_signal(&lg.cv);
  pthread_mutex_unlock(&lg.mu);
  pthread_join(lg.th, NULL);
  lg.started = 0;
}
