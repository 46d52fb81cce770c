/* The library's clock for validity is CLOCK_BOOTTIME, and waits still end
 * on time although condition variables wait on CLOCK_MONOTONIC.
 *
 * Only meaningful where the two clocks differ: meson runs it in a time
 * namespace whose boot time is 100000 s ahead (unshare -T --boottime), as
 * after a long suspend. It fails if they do not differ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "dlock/dlock.h"
#include "dlock/errors.h"
#include "internal.h"

static int64_t ns_of(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const int64_t S = 1000000000;

static void clocks_differ(void **state) {
  (void)state;
  int64_t gap = ns_of(CLOCK_BOOTTIME) - ns_of(CLOCK_MONOTONIC);
  if (gap < 50000 * S)
    fail_msg("CLOCK_BOOTTIME is only %lld s ahead of CLOCK_MONOTONIC: run under "
             "unshare -T --boottime 100000",
             (long long)(gap / S));
}

static void validity_counts_on_boottime(void **state) {
  (void)state;
  int64_t boot = ns_of(CLOCK_BOOTTIME), lib = dlock__now_ns();
  int64_t d = lib - boot;
  assert_true(d >= 0 && d < S);
  assert_true(dlock_backend_now_ns() - lib < S);
}

/* A timed wait (a contended acquire) ends after about its time: not at
 * once, and not 100000 s late. */
static void waits_end_on_time(void **state) {
  (void)state;
  dlock_client *c;
  assert_int_equal(dlock_open("mem://clock-test", &c), 0);
  dlock_client *other;
  assert_int_equal(dlock_open("mem://clock-test", &other), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 30000;
  dlock_lock *l;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  int64_t rem = dlock_lock_remaining_ms(l);
  assert_true(rem > 20000 && rem <= 30000);
  o.wait_ms = 300;
  dlock_lock *l2 = NULL;
  int64_t t0 = ns_of(CLOCK_MONOTONIC);
  assert_int_equal(dlock_acquire(other, "k", &o, &l2), DLOCK_ETIMEDOUT);
  int64_t took = ns_of(CLOCK_MONOTONIC) - t0;
  assert_true(took >= 250 * 1000000);
  assert_true(took < 30 * S);
  assert_int_equal(dlock_lock_state(l), DLOCK_HELD);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(other);
  dlock_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(clocks_differ),
      cmocka_unit_test(validity_counts_on_boottime),
      cmocka_unit_test(waits_end_on_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
