/* Many locks checked by one bulk read: see many.h. */
#include "many.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "faults.h"
#include "event.h"
#include "internal.h"

static int64_t now_ms(void) { return dlock__now_ns() / 1000000; }

static void must(int rc, int want, const char *what) {
  if (rc != want)
    fail_msg("%s = %s, want %s: %s", what, dlock_err_name(rc), dlock_err_name(want),
             dlock_client_errmsg(NULL));
}

static dlock_client *open_url(const char *url) {
  dlock_client *c = NULL;
  must(dlock_open(url, &c), 0, "dlock_open");
  return c;
}

void conf_many_two_lost(const struct conf_many *m) {
  assert_true(m->n > 230);
  dlock_client *a = open_url(m->url), *b = open_url(m->url);
  dlock_lock **ls = calloc((size_t)m->n, sizeof *ls);
  assert_non_null(ls);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = m->ttl_ms;
  o.auto_renew = 1;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  char k[64];
  for (int i = 0; i < m->n; i++) {
    m->name(i, k, sizeof k);
    must(dlock_try_acquire(a, conf_key(k), &o, &ls[i]), 0, "dlock_try_acquire");
  }
  dlock_metrics m0, mt;
  dlock_metrics_get(a, &m0);
  uint64_t bulk0, txns0, bulk1, txns1;
  m->counts(a, &bulk0, &txns0);
  const int gone = 17, taken = 230;
  m->name(gone, k, sizeof k);
  m->lose(conf_key(k));
  m->name(taken, k, sizeof k);
  m->lose(conf_key(k));
  dlock_options ob = DLOCK_OPTIONS_INIT;
  ob.ttl_ms = m->ttl_ms;
  ob.auto_renew = 1;
  dlock_lock *lb;
  must(dlock_try_acquire(b, conf_key(k), &ob, &lb), 0, "dlock_try_acquire by the second client");
  int64_t t0 = now_ms();
  assert_int_equal(event_wait(&lost, 2, m->ttl_ms + 2000), 2);
  printf("# %d locks: both losses reported within %lld ms\n", m->n,
         (long long)(now_ms() - t0));
  must(dlock_lock_state(ls[gone]), DLOCK_LOST, "state of the deleted lock");
  must(dlock_lock_state(ls[taken]), DLOCK_LOST, "state of the taken lock");
  /* Two more periods: every other lock stays held, renewed.  The counters
   * can only be seen by asking; the pause keeps the asking from spinning. */
  dlock_metrics_get(a, &mt);
  uint64_t renewed = mt.renew_ok;
  while (mt.renew_ok < renewed + 2 * (m->n - 2)) {
    if (now_ms() - t0 > 30000)
      fail_msg("%llu renewals in 30 s", (unsigned long long)(mt.renew_ok - renewed));
    struct timespec ts = {0, 20 * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
      ;
    dlock_metrics_get(a, &mt);
  }
  assert_int_equal(mt.lost, m0.lost + 2);
  assert_int_equal(event_wait(&lost, 3, 0), 2);
  m->counts(a, &bulk1, &txns1);
  printf("# %llu %s, %llu check txns\n", (unsigned long long)(bulk1 - bulk0), m->bulk_what,
         (unsigned long long)(txns1 - txns0));
  assert_true(bulk1 - bulk0 >= 2);
  assert_true(txns1 - txns0 <= m->max_txns(bulk1 - bulk0));
  for (int i = 0; i < m->n; i++)
    if (i != gone && i != taken && dlock_lock_state(ls[i]) != DLOCK_HELD)
      fail_msg("lock %d not held", i);
  must(dlock_lock_state(lb), DLOCK_HELD, "state of the second client's lock");
  must(dlock_release(lb), 0, "dlock_release");
  for (int i = 0; i < m->n; i++)
    dlock_release(ls[i]);
  free(ls);
  dlock_close(b);
  dlock_close(a);
}
