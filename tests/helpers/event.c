#include "event.h"

#include <errno.h>
#include <time.h>

#include "internal.h"

void event_init(struct event *e) {
  pthread_mutex_init(&e->mu, NULL);
  dlock__cond_init(&e->cv);
  e->count = 0;
  e->token = 0;
}

void event_signal(struct event *e) {
  pthread_mutex_lock(&e->mu);
  e->count++;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

int event_wait(struct event *e, int n, int64_t timeout_ms) {
  struct timespec ts;
  dlock__ns_to_timespec(dlock__now_ns() + timeout_ms * 1000000, &ts);
  pthread_mutex_lock(&e->mu);
  while (e->count < n)
    if (pthread_cond_timedwait(&e->cv, &e->mu, &ts) == ETIMEDOUT)
      break;
  int c = e->count;
  pthread_mutex_unlock(&e->mu);
  return c;
}

void event_on_lost(const char *key, uint64_t token, void *arg) {
  (void)key;
  struct event *e = arg;
  pthread_mutex_lock(&e->mu);
  e->token = token;
  pthread_mutex_unlock(&e->mu);
  event_signal(e);
}
