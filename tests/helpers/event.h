/* Test helper shared by the unit tests and the conformance suite: an event
 * that threads and on_lost callbacks signal and tests wait for with a
 * deadline, so no test sleeps in place of synchronisation. */
#ifndef DLOCK_TEST_EVENT_H
#define DLOCK_TEST_EVENT_H

#include <pthread.h>
#include <stdint.h>

struct event {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int count;
  uint64_t token; /* last token given to event_on_lost */
};

void event_init(struct event *e);
void event_signal(struct event *e);
/* Waits until count >= n or timeout_ms passes; returns the count. */
int event_wait(struct event *e, int n, int64_t timeout_ms);
/* A dlock_lost_fn: records the token and signals the event in ARG. */
void event_on_lost(const char *key, uint64_t token, void *arg);

#endif
