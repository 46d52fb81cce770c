/* file:// on a real directory: what a store keeps per name, and where its
 * tokens come from.  (The conformance suite covers the lock rules.) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dlock/admin.h"
#include "dlock/dlock.h"

static char dir[64];
static char url[128];

static int dir_setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/dlock-file-store-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(url, sizeof url, "file://%s", dir);
  return 0;
}

static void rm_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) {
    unlink(path);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    rm_tree(sub);
  }
  closedir(d);
  rmdir(path);
}

static int dir_teardown(void **state) {
  (void)state;
  rm_tree(dir);
  return 0;
}

/* Names in DIR other than "." and ".."; the first one into FIRST. */
static int entries(char *first, size_t len) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  if (first && len)
    first[0] = '\0';
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (n++ == 0 && first)
      snprintf(first, len, "%s", e->d_name);
  }
  closedir(d);
  return n;
}

static dlock_client *open_url(const char *u) {
  dlock_client *c = NULL;
  if (dlock_open(u, &c) != 0)
    fail_msg("dlock_open(%s): %s", u, dlock_client_errmsg(NULL));
  return c;
}

static dlock_options opts(int64_t wait_ms) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 30000;
  o.wait_ms = wait_ms;
  return o;
}

/* A cache that locks one name per entry must not fill the directory: only
 * the counter file stays, and tokens grow across all those names. */
static void test_released_names_leave_nothing(void **state) {
  (void)state;
  dlock_client *c = open_url(url);
  dlock_options o = opts(0);
  uint64_t last = 0;
  for (int i = 0; i < 1000; i++) {
    char key[32];
    snprintf(key, sizeof key, "entry/%d", i);
    dlock_lock *l;
    assert_int_equal(dlock_acquire(c, key, &o, &l), 0);
    if (i == 0)
      assert_int_equal(entries(NULL, 0), 2); /* the counter and this lock */
    assert_true(dlock_lock_token(l) > last);
    last = dlock_lock_token(l);
    assert_int_equal(dlock_release(l), 0);
  }
  char name[256];
  assert_int_equal(entries(name, sizeof name), 1);
  assert_string_equal(name, ".fence");
  dlock_close(c);
}

/* The token comes from the directory's counter, not from the clock: a
 * counter far ahead of the clock is followed. */
static void test_token_follows_the_counter(void **state) {
  (void)state;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/.fence", dir);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ahead = ((uint64_t)ts.tv_sec + 86400u * 365u) * 1000000u;
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "dlock-file 1\ntoken %" PRIu64 "\nowner \npid 0\nlabel \n", ahead);
  fclose(f);
  dlock_client *c = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_true(dlock_lock_token(l) == ahead + 1);
  assert_int_equal(dlock_release(l), 0);
  assert_int_equal(dlock_acquire(c, "other", &o, &l), 0);
  assert_true(dlock_lock_token(l) == ahead + 2);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* A lock file left by a holder that died (or by a version whose lock files
 * kept their own counters) is a floor for the next token of that key. */
static void test_left_file_is_a_floor(void **state) {
  (void)state;
  dlock_client *c = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l;
  assert_int_equal(dlock_acquire(c, "warmup", &o, &l), 0);
  uint64_t before = dlock_lock_token(l);
  assert_int_equal(dlock_release(l), 0);

  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dlock_client *cc;
    dlock_lock *ll;
    if (dlock_open(url, &cc) != 0 || dlock_acquire(cc, "dies", &o, &ll) != 0)
      _exit(1);
    _exit(dlock_lock_token(ll) > before ? 0 : 2); /* holding it, never released */
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/dies.lock", dir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0); /* the kernel dropped the lock, the file stays */

  /* A legacy file of another key whose counter is ahead of everything. */
  snprintf(path, sizeof path, "%s/legacy.lock", dir);
  uint64_t legacy = before + 1000000000u;
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "dlock-file 1\ntoken %" PRIu64 "\nowner x\npid 1\nlabel old\n", legacy);
  fclose(f);
  assert_int_equal(dlock_acquire(c, "legacy", &o, &l), 0);
  assert_true(dlock_lock_token(l) > legacy);
  assert_int_equal(dlock_release(l), 0);

  assert_int_equal(dlock_acquire(c, "dies", &o, &l), 0);
  assert_true(dlock_lock_token(l) > legacy);
  assert_int_equal(dlock_release(l), 0);
  assert_int_equal(entries(NULL, 0), 1);
  dlock_close(c);
}

/* Waiters race with the holder deleting the file under them: each must
 * either lock the file that is there or open the new one, never fail. */
enum { CONTENDERS = 4, ROUNDS = 150 };
static atomic_int inside, overlaps, errors, regressions;
static _Atomic uint64_t last_token;

static void *contend(void *arg) {
  dlock_client *c = arg;
  dlock_options o = opts(60000);
  for (int i = 0; i < ROUNDS; i++) {
    dlock_lock *l;
    int rc = dlock_acquire(c, "hot", &o, &l);
    if (rc != 0) {
      fprintf(stderr, "acquire: %s\n", dlock_client_errmsg(NULL));
      atomic_fetch_add(&errors, 1);
      continue;
    }
    if (atomic_exchange(&inside, 1) != 0)
      atomic_fetch_add(&overlaps, 1);
    uint64_t t = dlock_lock_token(l);
    if (t <= atomic_load(&last_token))
      atomic_fetch_add(&regressions, 1);
    atomic_store(&last_token, t);
    /* Long enough inside for a second holder to be seen. */
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
    atomic_store(&inside, 0);
    if (dlock_release(l) != 0)
      atomic_fetch_add(&errors, 1);
  }
  return NULL;
}

static void test_waiters_race_the_delete(void **state) {
  (void)state;
  dlock_client *c[CONTENDERS];
  pthread_t th[CONTENDERS];
  for (int i = 0; i < CONTENDERS; i++) {
    c[i] = open_url(url);
    assert_int_equal(pthread_create(&th[i], NULL, contend, c[i]), 0);
  }
  for (int i = 0; i < CONTENDERS; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < CONTENDERS; i++)
    dlock_close(c[i]);
  assert_int_equal(atomic_load(&errors), 0);
  assert_int_equal(atomic_load(&overlaps), 0);
  assert_int_equal(atomic_load(&regressions), 0);
}

/* Inotify instances open in this process, and the watches they carry. */
static int inotify_fds(int *watches) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  *watches = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char link[PATH_MAX], to[64];
    snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
    ssize_t len = readlink(link, to, sizeof to - 1);
    if (len <= 0)
      continue;
    to[len] = '\0';
    if (strcmp(to, "anon_inode:inotify") != 0)
      continue;
    n++;
    char info[PATH_MAX], line[512];
    snprintf(info, sizeof info, "/proc/self/fdinfo/%s", e->d_name);
    FILE *f = fopen(info, "r");
    while (f && fgets(line, sizeof line, f))
      *watches += strncmp(line, "inotify wd:", 11) == 0;
    if (f)
      fclose(f);
  }
  closedir(d);
  return n;
}

enum { WAITERS = 6 };
static dlock_client *waiting_client;
static char held_keys[WAITERS][16];

static pthread_barrier_t all_waiting;

static void *wait_briefly(void *arg) {
  dlock_options o = opts(100);
  dlock_lock *l = NULL;
  int rc = dlock_acquire(waiting_client, arg, &o, &l);
  return (void *)(intptr_t)rc;
}

/* Long enough that the waits started together overlap however the
 * threads are scheduled. */
static void *wait_together(void *arg) {
  pthread_barrier_wait(&all_waiting);
  dlock_options o = opts(1500);
  dlock_lock *l = NULL;
  int rc = dlock_acquire(waiting_client, arg, &o, &l);
  return (void *)(intptr_t)rc;
}

/* Until this process has no inotify instance open, for up to 10 s: they
 * are closed off the waiters' path, soon after each wait. */
static bool inotify_all_closed(void) {
  for (int i = 0; i < 1000; i++) {
    int watches;
    if (inotify_fds(&watches) == 0)
      return true;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return false;
}

/* A waiter's inotify instance is closed by a thread of the process, not
 * by the waiter (closing one waits for an RCU grace period, which the
 * next holder would spend before its acquire returned), and soon: an
 * instance left open counts against a per-user limit.  Waits at once
 * each have their own; a child of fork() closes its own as well. */
static void test_waits_close_inotify(void **state) {
  (void)state;
  dlock_client *holder = open_url(url);
  waiting_client = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l[WAITERS];
  for (int i = 0; i < WAITERS; i++) {
    snprintf(held_keys[i], sizeof held_keys[i], "held%d", i);
    assert_int_equal(dlock_acquire(holder, held_keys[i], &o, &l[i]), 0);
  }
  for (int i = 0; i < 3; i++)
    assert_int_equal((intptr_t)wait_briefly(held_keys[0]), DLOCK_ETIMEDOUT);
  assert_true(inotify_all_closed());
  pthread_t th[WAITERS];
  assert_int_equal(pthread_barrier_init(&all_waiting, NULL, WAITERS), 0);
  for (int i = 0; i < WAITERS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, wait_together, held_keys[i]), 0);
  for (int i = 0; i < WAITERS; i++) {
    void *rc;
    pthread_join(th[i], &rc);
    assert_int_equal((intptr_t)rc, DLOCK_ETIMEDOUT);
  }
  pthread_barrier_destroy(&all_waiting);
  assert_true(inotify_all_closed());
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dlock_client *c = NULL;
    bool ok = dlock_open(url, &c) == 0;
    dlock_options w = opts(100);
    dlock_lock *lc;
    ok = ok && dlock_acquire(c, held_keys[2], &w, &lc) == DLOCK_ETIMEDOUT;
    ok = ok && inotify_all_closed();
    _exit(ok ? 0 : 1);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  dlock_close(waiting_client);
  for (int i = 0; i < WAITERS; i++)
    assert_int_equal(dlock_release(l[i]), 0);
  dlock_close(holder);
}

static void *wait_long(void *arg) {
  dlock_options o = opts(20000);
  dlock_lock *l = NULL;
  int rc = dlock_acquire(waiting_client, arg, &o, &l);
  if (rc == 0)
    rc = dlock_release(l);
  return (void *)(intptr_t)rc;
}

/* With every inotify instance the user may have in use (a per-user
 * limit: 8 on some machines), a wait still waits, looking again every
 * few milliseconds, and gets the lock once it is free; it used to fail
 * at once with EMFILE. */
static void test_wait_without_inotify(void **state) {
  (void)state;
  dlock_client *holder = open_url(url);
  waiting_client = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l;
  assert_int_equal(dlock_acquire(holder, "scarce", &o, &l), 0);
  int hoard[4096], n = 0;
  while (n < 4096 && (hoard[n] = inotify_init1(IN_CLOEXEC)) >= 0)
    n++;
  assert_true(n < 4096);
  assert_true(errno == EMFILE || errno == ENFILE);
  assert_int_equal((intptr_t)wait_briefly("scarce"), DLOCK_ETIMEDOUT);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, wait_long, "scarce"), 0);
  assert_int_equal(dlock_release(l), 0);
  void *rc;
  pthread_join(th, &rc);
  assert_int_equal((intptr_t)rc, 0);
  while (n > 0)
    close(hoard[--n]);
  dlock_close(waiting_client);
  dlock_close(holder);
}

/* ?prefix= is put before every key, so two prefixes are two namespaces of
 * one directory. */
static void test_prefix(void **state) {
  (void)state;
  char pu[192];
  snprintf(pu, sizeof pu, "%s?prefix=team-a/", url);
  dlock_client *a = open_url(pu), *plain = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l, *l2;
  assert_int_equal(dlock_acquire(a, "job", &o, &l), 0);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/team-a%%2Fjob.lock", dir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(dlock_try_acquire(plain, "team-a/job", &o, &l2), DLOCK_EBUSY);
  assert_int_equal(dlock_try_acquire(plain, "job", &o, &l2), 0);
  assert_int_equal(dlock_release(l2), 0);
  dlock_info info;
  assert_int_equal(dlock_inspect(a, "job", &info), 0);
  assert_int_equal(info.held, 1);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(a);
  dlock_close(plain);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A process stopped while it holds the counter's lock holds up the whole
 * directory, but no longer than the caller's deadline, or the request
 * timeout for a try. */
static void test_stalled_counter_bounded(void **state) {
  (void)state;
  dlock_client *c = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l;
  assert_int_equal(dlock_acquire(c, "first", &o, &l), 0); /* makes .fence */
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/.fence", dir);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0); /* as the stopped process would */
  char u[192];
  snprintf(u, sizeof u, "%s?timeout=1500ms", url);
  c = open_url(u);
  o = opts(300);
  int64_t t0 = mono_ms();
  assert_int_equal(dlock_acquire(c, "other", &o, &l), DLOCK_ETIMEDOUT);
  int64_t took = mono_ms() - t0;
  assert_true(took < 1200); /* 300 ms asked; the timeout is 1500 ms */
  t0 = mono_ms();
  assert_int_equal(dlock_try_acquire(c, "third", &o, &l), DLOCK_ETIMEDOUT);
  took = mono_ms() - t0;
  assert_true(took >= 1400 && took < 5000);
  close(fd);
  assert_int_equal(dlock_try_acquire(c, "third", &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* Files it creates take the directory's permissions, not the umask: in a
 * directory everyone may write to, everyone's clients can open them. */
static void test_shared_directory_modes(void **state) {
  (void)state;
  assert_int_equal(chmod(dir, 01777), 0);
  mode_t was = umask(077);
  dlock_client *c = open_url(url);
  dlock_options o = opts(0);
  dlock_lock *l;
  assert_int_equal(dlock_acquire(c, "shared", &o, &l), 0);
  char path[PATH_MAX];
  struct stat sb;
  snprintf(path, sizeof path, "%s/shared.lock", dir);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0666);
  snprintf(path, sizeof path, "%s/.fence", dir);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0666);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
  umask(was);
}

/* A prefix that would leave no room for a key's path is refused at open. */
static void test_prefix_too_long(void **state) {
  (void)state;
  char u[PATH_MAX + 512];
  char d[PATH_MAX];
  memset(d, 'd', 2000);
  d[0] = '/';
  d[2000] = '\0';
  char pre[257];
  memset(pre, '/', 256);
  pre[256] = '\0';
  snprintf(u, sizeof u, "file://%s?prefix=%s", d, pre);
  dlock_client *c = NULL;
  assert_int_equal(dlock_open(u, &c), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "prefix"));
}

struct listed {
  int n;
  char keys[4][600];
};

static int note(void *arg, const char *key, const dlock_info *info) {
  struct listed *l = arg;
  assert_int_equal(info->held, 1);
  if (l->n < 4)
    snprintf(l->keys[l->n], sizeof l->keys[l->n], "%s", key);
  l->n++;
  return 0;
}

static bool listed_has(const struct listed *l, const char *key) {
  for (int i = 0; i < l->n && i < 4; i++)
    if (strcmp(l->keys[i], key) == 0)
      return true;
  return false;
}

static void put_file(const char *name, const char *text) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* dlock_list reads keys back from paths: a long key that runs through ".d"
 * directories comes back whole, the client's ?prefix= comes off, and files
 * that are no key's path (one not escaped as the store escapes, a stray,
 * the counter) are not locks. */
static void test_list_reads_paths_back(void **state) {
  (void)state;
  char purl[200];
  snprintf(purl, sizeof purl, "%s?prefix=team%%2F", url);
  dlock_client *c = NULL, *all = NULL;
  assert_int_equal(dlock_open(purl, &c), 0);
  assert_int_equal(dlock_open(url, &all), 0);
  char longkey[DLOCK_KEY_MAX];
  memset(longkey, '/', sizeof longkey - 1);
  memcpy(longkey, "long", 4);
  longkey[sizeof longkey - 1] = '\0';
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 0;
  dlock_lock *a, *b, *free_one;
  assert_int_equal(dlock_try_acquire(c, longkey, &o, &a), 0);
  assert_int_equal(dlock_try_acquire(c, "short", &o, &b), 0);
  assert_int_equal(dlock_try_acquire(c, "released", &o, &free_one), 0);
  assert_int_equal(dlock_release(free_one), 0);
  put_file("team%2Fstray.lock", "dlock-file 1\ntoken 5\n");
  put_file("team%2F%41.lock", "dlock-file 1\ntoken 5\n");
  put_file("notes.txt", "hello\n");
  struct listed l = {0};
  assert_int_equal(dlock_list(c, "", note, &l), 0);
  assert_int_equal(l.n, 2);
  assert_true(listed_has(&l, longkey));
  assert_true(listed_has(&l, "short"));
  struct listed p = {0};
  assert_int_equal(dlock_list(c, "lo", note, &p), 0);
  assert_int_equal(p.n, 1);
  /* Without the prefix the short one shows whole; the long one is past the
   * longest key such a client could name, so it is not a lock of its. */
  struct listed w = {0};
  assert_int_equal(dlock_list(all, NULL, note, &w), 0);
  assert_int_equal(w.n, 1);
  assert_true(listed_has(&w, "team/short"));
  /* However the URL writes the directory. */
  char durl[200];
  snprintf(durl, sizeof durl, "file://%s//?prefix=team%%2F", dir);
  dlock_client *dbl = NULL;
  assert_int_equal(dlock_open(durl, &dbl), 0);
  struct listed d = {0};
  assert_int_equal(dlock_list(dbl, "", note, &d), 0);
  assert_int_equal(d.n, 2);
  dlock_close(dbl);
  dlock_info got;
  assert_int_equal(dlock_break(all, "team/short", NULL, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, dlock_lock_token(b));
  assert_int_equal(dlock_release(b), DLOCK_ELOST);
  assert_int_equal(dlock_release(a), 0);
  dlock_close(c);
  dlock_close(all);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_released_names_leave_nothing, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_token_follows_the_counter, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_left_file_is_a_floor, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_waiters_race_the_delete, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_waits_close_inotify, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_wait_without_inotify, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_prefix, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_stalled_counter_bounded, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_shared_directory_modes, dir_setup, dir_teardown),
      cmocka_unit_test(test_prefix_too_long),
      cmocka_unit_test_setup_teardown(test_list_reads_paths_back, dir_setup, dir_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
