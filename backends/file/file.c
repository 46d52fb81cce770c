/* file:///dir: a directory of lock files with open-file-description locks.
 *
 * OFD locks (F_OFD_SETLK) belong to one open file description, so two
 * clients in the same process exclude each other and closing some other
 * descriptor of the file does not drop the lock, unlike classic POSIX
 * record locks.  The kernel frees the lock when the holder dies.
 *
 * The fencing token comes from one counter per directory (FENCE_FILE),
 * drawn while holding the lock, so tokens grow across keys as well.  With
 * the counter outside them, lock files carry only who holds the lock, and
 * release deletes its file while it still holds the lock: a directory
 * keeps files only for the keys held or waited on now, however many names
 * it has seen.  A waiter that locks the unlinked inode notices that the
 * path names another file and opens it again.  Waiting uses inotify: a
 * holder's descriptor is open for writing, so its release (or death)
 * produces IN_CLOSE_WRITE on the file, and the unlink IN_ATTRIB.  Waiters
 * keep their own descriptor open between attempts so that they do not
 * wake each other. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "file-path.h"
#include "backend-util.h"

/* Longest a waiter sleeps between checks even without an inotify event, as
 * a guard against an event lost to queue overflow. */
#define SAFETY_POLL_MS 1000
/* Inotify instances waiting for the closer thread, at most: beyond that a
 * waiter closes its own (each counts against the per-user limit,
 * fs.inotify.max_user_instances, until it is closed). */
#define CLOSE_QUEUE_MAX 2
/* Longest pause between looks of a wait that has no inotify instance. */
#define LOOK_MAX_MS 50

/* The directory's fencing counter: the last token drawn there.  Escaped
 * key names never start with '.', so no key can name it. */
#define FENCE_FILE ".fence"

struct file_client {
  char *dir;
  char *prefix; /* URL ?prefix=, put before every key; "" without one */
  int64_t timeout_ms;
  mode_t file_mode; /* of files this client creates: the directory's rw bits */
  int sync;
  pthread_mutex_t mu; /* guards dir_ready */
  int dir_ready;      /* the directory was created (or found) and is writable */
};

/* Closing an inotify instance waits for an RCU grace period, 8-20 ms seen
 * here, which a waiter that just got its lock would otherwise spend
 * before returning: a thread of the process closes them instead, soon
 * after.  Keeping them open for reuse would hold instances against a
 * per-user limit (8 on some machines) for as long as a process lives. */
static pthread_mutex_t closer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t closer_cv = PTHREAD_COND_INITIALIZER;
static int closer_q[CLOSE_QUEUE_MAX];
static int closer_n;
static bool closer_started;
static pthread_once_t closer_once = PTHREAD_ONCE_INIT;

struct file_lock {
  int fd;
  dev_t dev;
  ino_t ino;
  char path[PATH_MAX];
};

/* A directory that does not exist yet must at least be one an acquire
 * could create, so that an impossible store is refused by dlock_open as an
 * unreachable server would be: the nearest existing ancestor is a writable
 * directory on a writable file system.  For root access() grants everything,
 * so an ancestor that no mode bit lets anyone write to (/proc, /sys) counts
 * as not writable. */
static int check_creatable(const char *path) {
  char anc[PATH_MAX];
  snprintf(anc, sizeof anc, "%s", path);
  struct stat st;
  for (;;) {
    char *slash = strrchr(anc, '/');
    if (!slash)
      return 0;
    if (slash == anc)
      slash[1] = '\0';
    else
      *slash = '\0';
    if (stat(anc, &st) == 0)
      break;
    if (errno != ENOENT)
      return dlock_seterr(errno == EACCES ? DLOCK_EAUTH : DLOCK_ECONN, "file: cannot use %s: %s",
                          path, strerror(errno));
    if (slash == anc)
      return 0;
  }
  struct statvfs vfs;
  int e = 0;
  if (!S_ISDIR(st.st_mode))
    e = ENOTDIR;
  else if (access(anc, W_OK | X_OK) != 0)
    e = errno;
  else if ((statvfs(anc, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)))
    e = EROFS;
  else if (geteuid() == 0 && !(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)))
    e = EACCES;
  if (e)
    return dlock_seterr(e == EACCES ? DLOCK_EAUTH : DLOCK_ECONN,
                        "file: cannot create %s in %s: %s", path, anc, strerror(e));
  return 0;
}

static int file_open(dlock_backend_client *bc, dlock_url *url) {
  struct file_client *fc = bc->priv;
  const char *path = dlock_url_path(url);
  int rc = dlock_url_param_bool(url, "sync", 1, &fc->sync);
  if (rc < 0)
    return rc;
  if (dlock_url_host_count(url) > 0 && strcmp(dlock_url_host(url, 0), "localhost") != 0)
    return dlock_seterr(DLOCK_EINVAL, "file: only local paths are supported (file:///dir)");
  if (!path || path[0] != '/' || strlen(path) > PATH_MAX - 2048)
    return dlock_seterr(DLOCK_EINVAL, "file: need an absolute directory, e.g. file:///var/lib/dlock");
  /* Every key's path must still fit with the prefix before it, escaped
   * (up to three bytes each). */
  if (bc->prefix && strlen(path) + 3 * strlen(bc->prefix) > PATH_MAX - 2048)
    return dlock_seterr(DLOCK_EINVAL, "file: the directory and ?prefix= together are too long");
  /* Nothing is created here: a client that only inspects (dlock status)
   * must not turn a mistyped path into an empty store that says "free". */
  struct stat st;
  if (stat(path, &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return dlock_seterr(DLOCK_ECONN, "file: %s is not a directory", path);
  } else if ((rc = check_creatable(path)) < 0) {
    return rc;
  }
  if (!(fc->dir = strdup(path)) || !(fc->prefix = strdup(bc->prefix ? bc->prefix : ""))) {
    free(fc->dir);
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  }
  fc->timeout_ms = bc->timeout_ms;
  pthread_mutex_init(&fc->mu, NULL);
  return 0;
}

/* mkdir -p of the directory, by the first acquisition: taking a lock is
 * what makes a store of a path that does not exist yet. */
static int ensure_dir(struct file_client *fc) {
  pthread_mutex_lock(&fc->mu);
  int rc = 0;
  if (fc->dir_ready)
    goto out;
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", fc->dir);
  for (char *p = tmp + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char save = *p;
      *p = '\0';
      if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
        rc = dlock_seterr(errno == EACCES ? DLOCK_EAUTH : DLOCK_ECONN,
                          "file: cannot create %s: %s", tmp, strerror(errno));
        goto out;
      }
      *p = save;
      if (!save)
        break;
    }
  }
  if (access(fc->dir, W_OK | X_OK) != 0) {
    rc = dlock_seterr(errno == EACCES ? DLOCK_EAUTH : DLOCK_ECONN, "file: cannot use %s: %s",
                      fc->dir, strerror(errno));
    goto out;
  }
  struct stat st;
  fc->file_mode = stat(fc->dir, &st) == 0 ? (st.st_mode & 0666) | 0600 : 0644;
  fc->dir_ready = 1;
out:
  pthread_mutex_unlock(&fc->mu);
  return rc;
}

static void file_close(dlock_backend_client *bc) {
  struct file_client *fc = bc->priv;
  pthread_mutex_destroy(&fc->mu);
  free(fc->dir);
  free(fc->prefix);
}

static int sys_err(const char *what, const char *path) {
  int e = errno;
  return dlock_seterr(e == EACCES || e == EPERM ? DLOCK_EAUTH : DLOCK_EBACKEND,
                      "file: %s %s: %s", what, path, strerror(e));
}

/* Create the ".d" directories that a long key's path runs through. */
static int make_parents(const char *dir, char *path) {
  size_t skip = strlen(dir);
  for (char *p = path + skip + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    int r = mkdir(path, 0777);
    int e = errno;
    *p = '/';
    if (r != 0 && e != EEXIST) {
      errno = e;
      return sys_err("cannot create directory for", path);
    }
  }
  return 0;
}

/* The path of KEY with the client's prefix before it. */
static int key_path(struct file_client *fc, const char *key, size_t keylen, char *out,
                    size_t outlen) {
  size_t pl = strlen(fc->prefix);
  if (pl == 0)
    return dlock__file_key_path(fc->dir, key, keylen, out, outlen);
  char *full = malloc(pl + keylen);
  if (!full)
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  memcpy(full, fc->prefix, pl);
  memcpy(full + pl, key, keylen);
  int n = dlock__file_key_path(fc->dir, full, pl + keylen, out, outlen);
  free(full);
  return n;
}

static int lock_path(struct file_client *fc, dlock_backend_lock *bl, struct file_lock *fl) {
  int rc = ensure_dir(fc);
  if (rc < 0)
    return rc;
  int n = key_path(fc, bl->key, bl->keylen, fl->path, sizeof fl->path);
  if (n < 0)
    return n;
  return make_parents(fc->dir, fl->path);
}

/* Opens PATH read-write, creating it if need be.  A file this call creates
 * gets the directory's read and write bits rather than the umask's: in a
 * directory that others may write to, their clients must be able to open
 * it (the counter file especially, which every acquisition opens). */
static int open_shared(struct file_client *fc, const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    if (fchmod(fd, fc->file_mode) != 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    return fd;
  }
  if (errno != EEXIST)
    return -1;
  return open(path, O_RDWR | O_CLOEXEC);
}

static int open_lockfile(struct file_client *fc, struct file_lock *fl) {
  /* A file deleted between the two opens of open_shared is made again. */
  for (int i = 0; i < 100; i++) {
    fl->fd = open_shared(fc, fl->path);
    if (fl->fd >= 0 || errno != ENOENT)
      break;
  }
  if (fl->fd < 0)
    return sys_err("cannot open", fl->path);
  return 0;
}

/* 1 if PATH still names the inode FD is open on. */
static bool same_file(int fd, const char *path, dev_t *dev, ino_t *ino) {
  struct stat a, b;
  if (fstat(fd, &a) != 0 || stat(path, &b) != 0)
    return false;
  if (dev)
    *dev = a.st_dev;
  if (ino)
    *ino = a.st_ino;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int ofd_lock(int fd, short type, bool *busy) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  *busy = false;
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
    return 0;
  if (errno == EAGAIN || errno == EACCES) {
    *busy = true;
    return 0;
  }
  return -1;
}

static int read_record(int fd, const char *path, dlock__file_record *r) {
  char buf[512];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  if (n < 0)
    return sys_err("cannot read", path);
  return dlock__file_record_parse(buf, (size_t)n, r);
}

/* Takes the counter file's lock within the client's request timeout, and
 * by the caller's DEADLINE (-1: none) when that comes first, less a
 * moment's grace so that an attempt made at the deadline is still one.
 * Holders keep it for one read and one write, so waiting is polling a
 * lock that is nearly always free; a process stopped in between holds up
 * acquisitions of the whole directory for that long. */
#define FENCE_GRACE_NS (10 * 1000000LL)
static int fence_lock(struct file_client *fc, int fd, const char *path, int64_t caller) {
  int64_t now = dlock__now_ns(), deadline = now + fc->timeout_ms * 1000000;
  if (caller >= 0 && caller + FENCE_GRACE_NS < deadline)
    deadline = caller > now ? caller + FENCE_GRACE_NS : now + FENCE_GRACE_NS;
  for (;;) {
    bool busy;
    if (ofd_lock(fd, F_WRLCK, &busy) != 0)
      return sys_err("cannot lock", path);
    if (!busy)
      return 0;
    if (dlock__now_ns() >= deadline)
      return dlock_seterr(DLOCK_ETIMEDOUT, "file: %s stayed locked for %lld ms", path,
                          (long long)fc->timeout_ms);
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Draws the next token of the directory into *TOKEN: above the counter
 * and above LAST, the token left in the lock file by a holder that died
 * without releasing it.  A directory without a counter (a new store, or
 * one whose lock files kept their own counters) starts from the wall
 * clock in microseconds, which keeps tokens above those earlier counters
 * unless they advanced faster than one acquisition per microsecond. */
static int fence_next(struct file_client *fc, uint64_t last, int64_t deadline, uint64_t *token) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", fc->dir, FENCE_FILE);
  int fd = open_shared(fc, path);
  if (fd < 0)
    return sys_err("cannot open", path);
  int rc = fence_lock(fc, fd, path, deadline);
  dlock__file_record r;
  if (rc == 0 && (rc = read_record(fd, path, &r)) == 0) {
    uint64_t t = r.token > last ? r.token : last;
    if (r.token == 0) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
      if (now > t)
        t = now;
    }
    if (t == UINT64_MAX) {
      rc = dlock_seterr(DLOCK_EBACKEND, "file: fencing counter of %s is exhausted", fc->dir);
    } else {
      r.token = t + 1;
      char buf[512];
      int n = dlock__file_record_format(&r, buf, sizeof buf);
      if (n < 0)
        rc = n;
      else if (pwrite(fd, buf, (size_t)n, 0) != n || ftruncate(fd, n) != 0)
        rc = sys_err("cannot write", path);
    }
  }
  bool busy;
  ofd_lock(fd, F_UNLCK, &busy);
  /* Synced after the lock is let go, so that acquisitions elsewhere in the
   * directory share the journal's commits instead of queueing for the
   * lock; the token is handed out only once it is on disk, and every later
   * value written in its place is higher.  Without this a machine crash
   * could roll the counter back and reissue a token; ?sync=false trades
   * that for speed. */
  if (rc == 0 && fc->sync && fdatasync(fd) != 0)
    rc = sys_err("cannot sync", path);
  close(fd);
  if (rc == 0)
    *token = r.token;
  return rc;
}

/* Holding the lock: draw a token and name ourselves.  The lock file needs
 * no sync: after a crash nobody holds a lock, and its token is only a
 * floor for the next one. */
static int claim(struct file_client *fc, struct file_lock *fl, dlock_backend_lock *bl,
                 int64_t deadline) {
  dlock__file_record r;
  int rc = read_record(fl->fd, fl->path, &r);
  if (rc < 0)
    return rc;
  if ((rc = fence_next(fc, r.token, deadline, &r.token)) < 0)
    return rc;
  snprintf(r.owner, sizeof r.owner, "%s", bl->owner);
  r.pid = (long)getpid();
  snprintf(r.label, sizeof r.label, "%s", bl->label);
  char buf[512];
  int n = dlock__file_record_format(&r, buf, sizeof buf);
  if (n < 0)
    return n;
  if (pwrite(fl->fd, buf, (size_t)n, 0) != n || ftruncate(fl->fd, n) != 0)
    return sys_err("cannot write", fl->path);
  bl->token = r.token;
  return 0;
}

/* One attempt on an open descriptor: 0 = held, DLOCK_EBUSY, 1 = the file was
 * replaced under us (reopen and retry), or an error. */
static int attempt(struct file_client *fc, struct file_lock *fl, dlock_backend_lock *bl,
                   int64_t deadline) {
  bool busy;
  bl->sent_ns = dlock__now_ns();
  if (ofd_lock(fl->fd, F_WRLCK, &busy) != 0)
    return sys_err("cannot lock", fl->path);
  if (busy)
    return DLOCK_EBUSY;
  /* Someone may have unlinked the file between our open and our lock; a
   * lock on an orphaned inode excludes nobody. */
  if (!same_file(fl->fd, fl->path, &fl->dev, &fl->ino)) {
    ofd_lock(fl->fd, F_UNLCK, &busy);
    return 1;
  }
  int rc = claim(fc, fl, bl, deadline);
  /* A break that took the file's name while we were claiming it (it saw
   * the record of a holder that died) leaves us an inode nobody else
   * locks: only a name still ours makes the lock ours. */
  if (rc == 0 && !same_file(fl->fd, fl->path, NULL, NULL))
    rc = 1;
  if (rc != 0)
    ofd_lock(fl->fd, F_UNLCK, &busy);
  return rc;
}

static void close_fd(struct file_lock *fl) {
  if (fl->fd >= 0)
    close(fl->fd);
  fl->fd = -1;
}

/* One try, the counter's lock waited for until DEADLINE at most. */
static int try_until(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline) {
  struct file_client *fc = bc->priv;
  struct file_lock *fl = bl->priv;
  fl->fd = -1;
  int rc = lock_path(fc, bl, fl);
  for (int tries = 0; rc == 0; tries++) {
    if (tries == 100) {
      rc = dlock_seterr(DLOCK_EBACKEND, "file: %s keeps being replaced while we lock it",
                        fl->path);
      break;
    }
    if ((rc = open_lockfile(fc, fl)) < 0)
      break;
    rc = attempt(fc, fl, bl, deadline);
    if (rc == 0)
      return 0;
    close_fd(fl);
    if (rc != 1)
      break;
    rc = 0;
  }
  /* Nothing of a failed attempt outlives it (its descriptor is closed),
   * so the core has nothing to give back. */
  bl->sent_ns = 0;
  if (rc == DLOCK_EBUSY)
    return dlock_seterr(DLOCK_EBUSY, "file: '%s' is held", bl->key);
  return rc;
}

static int file_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  return try_until(bc, bl, -1);
}

static void *closer_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&closer_mu);
  for (;;) {
    while (closer_n == 0)
      pthread_cond_wait(&closer_cv, &closer_mu);
    int fd = closer_q[--closer_n];
    pthread_mutex_unlock(&closer_mu);
    close(fd);
    pthread_mutex_lock(&closer_mu);
  }
  return NULL;
}

/* Around fork(): the child has no closer thread, and closes what was
 * queued itself (quickly: the parent's copies keep the instances). */
static void closer_lock(void) { pthread_mutex_lock(&closer_mu); }
static void closer_unlock(void) { pthread_mutex_unlock(&closer_mu); }
static void closer_child(void) {
  while (closer_n > 0)
    close(closer_q[--closer_n]);
  closer_started = false;
  pthread_mutex_unlock(&closer_mu);
}

static void closer_init(void) { (void)pthread_atfork(closer_lock, closer_unlock, closer_child); }

/* Close INO soon, off the caller's path. */
static void close_later(int ino) {
  pthread_once(&closer_once, closer_init);
  pthread_mutex_lock(&closer_mu);
  if (!closer_started) {
    /* No signal of the process is delivered to it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    closer_started = pthread_create(&t, &at, closer_main, NULL) == 0;
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  bool queued = closer_started && closer_n < CLOSE_QUEUE_MAX;
  if (queued) {
    closer_q[closer_n++] = ino;
    pthread_cond_signal(&closer_cv);
  }
  pthread_mutex_unlock(&closer_mu);
  if (!queued)
    close(ino);
}

static int file_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline) {
  struct file_client *fc = bc->priv;
  struct file_lock *fl = bl->priv;
  /* Most acquisitions find the key free.  Trying first spares them an
   * inotify instance, whose close waits for an RCU grace period: several
   * milliseconds, far more than the rest of the acquisition. */
  int rc = try_until(bc, bl, deadline);
  if (rc != DLOCK_EBUSY)
    return rc;
  fl->fd = -1;
  /* Without an instance or a watch to spare (limits per user: instances
   * are often 128, on some machines 8, and count every process of the
   * user), the wait looks again every few milliseconds instead. */
  int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK), wd = -1;
  if (ino < 0 && errno != EMFILE && errno != ENFILE && errno != ENOMEM)
    return sys_err("cannot watch", fl->path);
  int64_t look_ms = 1;
  for (;;) {
    if (fl->fd < 0) {
      if ((rc = open_lockfile(fc, fl)) < 0)
        break;
      /* The file watched so far was replaced: its watch would pin the old
       * inode for as long as the instance lives. */
      if (ino >= 0 && wd >= 0)
        (void)inotify_rm_watch(ino, wd);
      /* Watch before trying, so a release between the try and the wait is
       * not missed. */
      wd = ino < 0 ? -1
                   : inotify_add_watch(ino, fl->path,
                                       IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF |
                                           IN_MOVE_SELF);
      if (ino >= 0 && wd < 0) {
        /* Its holder released (and so deleted) the file we just opened. */
        if (errno == ENOENT) {
          close_fd(fl);
          continue;
        }
        if (errno != ENOSPC) {
          rc = sys_err("cannot watch", fl->path);
          break;
        }
        close_later(ino);
        ino = -1;
      }
    }
    rc = attempt(fc, fl, bl, deadline);
    if (rc == 0)
      break;
    if (rc == 1) {
      close_fd(fl);
      continue;
    }
    if (rc != DLOCK_EBUSY)
      break;
    int64_t now = dlock__now_ns();
    if (deadline >= 0 && now >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "file: timed out waiting for '%s'", bl->key);
      break;
    }
    int64_t wait_ms = ino >= 0 ? SAFETY_POLL_MS : look_ms;
    if (deadline >= 0 && (deadline - now) / 1000000 + 1 < wait_ms)
      wait_ms = (deadline - now) / 1000000 + 1;
    look_ms = look_ms * 2 > LOOK_MAX_MS ? LOOK_MAX_MS : look_ms * 2;
    struct pollfd pfd = {.fd = ino, .events = POLLIN};
    if (poll(&pfd, ino >= 0, (int)wait_ms) > 0) {
      char evbuf[4096];
      while (read(ino, evbuf, sizeof evbuf) > 0)
        ;
    }
    /* The file may have been unlinked or replaced: check on the retry. */
    if ((ino < 0 || pfd.revents) && !same_file(fl->fd, fl->path, NULL, NULL))
      close_fd(fl);
  }
  if (ino >= 0)
    close_later(ino); /* and its watch with it */
  if (rc != 0) {
    close_fd(fl);
    bl->sent_ns = 0;
  }
  return rc;
}

/* 0 if we still hold the lock named by the path, DLOCK_ELOST otherwise. */
static int still_ours(struct file_lock *fl, dlock_backend_lock *bl) {
  if (fl->fd < 0 || !same_file(fl->fd, fl->path, NULL, NULL))
    return dlock_seterr(DLOCK_ELOST, "file: lock file for '%s' was removed or replaced",
                        bl->key);
  dlock__file_record r;
  if (read_record(fl->fd, fl->path, &r) < 0 || strcmp(r.owner, bl->owner) != 0)
    return dlock_seterr(DLOCK_ELOST, "file: lock file for '%s' names another owner", bl->key);
  return 0;
}

static int file_renew(dlock_backend_client *bc, dlock_backend_lock *bl) {
  (void)bc;
  bl->sent_ns = dlock__now_ns();
  return still_ours(bl->priv, bl);
}

static int file_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  (void)bc;
  struct file_lock *fl = bl->priv;
  int rc = still_ours(fl, bl);
  /* Still holding the lock, nobody else can delete or replace the file.
   * A file that cannot be deleted is only left behind. */
  if (rc == 0)
    (void)unlink(fl->path);
  bool busy;
  if (fl->fd >= 0)
    ofd_lock(fl->fd, F_UNLCK, &busy);
  close_fd(fl); /* IN_CLOSE_WRITE wakes the waiters */
  return rc;
}

/* What the lock file open on FD says: held while some descriptor holds its
 * lock, and then by whom. */
static int inspect_fd(int fd, const char *path, dlock_info *info) {
  struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  dlock__file_record r;
  int rc = 0;
  if (fcntl(fd, F_OFD_GETLK, &q) != 0)
    rc = sys_err("cannot query", path);
  else if ((rc = read_record(fd, path, &r)) == 0) {
    info->token = r.token;
    info->held = q.l_type != F_UNLCK;
    info->ttl_ms = -1;
    if (info->held) {
      snprintf(info->owner, sizeof info->owner, "%s", r.owner);
      snprintf(info->label, sizeof info->label, "%s", r.label);
    }
  }
  return rc;
}

/* A missing lock file is a free key, if the store itself is there. */
static int check_dir(struct file_client *fc) {
  struct stat st;
  if (stat(fc->dir, &st) != 0)
    return dlock_seterr(errno == EACCES ? DLOCK_EAUTH : DLOCK_ECONN, "file: directory %s %s",
                        fc->dir,
                        errno == ENOENT || errno == ENOTDIR ? "does not exist (an acquire creates it)"
                                                            : strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return dlock_seterr(DLOCK_ECONN, "file: %s is not a directory", fc->dir);
  return 0;
}

static int file_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                        dlock_info *info) {
  struct file_client *fc = bc->priv;
  char path[PATH_MAX];
  int n = key_path(fc, key, keylen, path, sizeof path);
  if (n < 0)
    return n;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT && errno != ENOTDIR)
      return sys_err("cannot open", path);
    return check_dir(fc);
  }
  int rc = inspect_fd(fd, path, info);
  close(fd);
  return rc;
}

struct walk {
  struct file_client *fc;
  const char *want; /* the client's prefix, then the caller's */
  size_t wantlen;
  dlock_backend_emit_fn emit;
  void *ud;
  char path[PATH_MAX]; /* the directory being read, then the entry */
  size_t dirlen;       /* of fc->dir in path */
  char key[DLOCK_KEY_MAX + 512];
  char check[PATH_MAX];
};

/* One entry at W->path: a held lock is emitted; files that are not lock
 * files of this encoding (the counter, strays) are passed over. */
static int walk_file(struct walk *w) {
  size_t len = strlen(w->path);
  int kl = dlock__file_path_key(w->path + w->dirlen + 1, len - w->dirlen - 1, w->key,
                                sizeof w->key);
  if (kl < 0 || (size_t)kl < w->wantlen || memcmp(w->key, w->want, w->wantlen) != 0)
    return 0;
  /* Only the canonical path of its key: any other is no lock anyone takes.
   * Compared below the directory, however the URL wrote it ("/d//"). */
  if (dlock__file_key_path("/", w->key, (size_t)kl, w->check, sizeof w->check) < 0) {
    dlock__clear_err();
    return 0;
  }
  if (strcmp(w->check + 1, w->path + w->dirlen + 1) != 0)
    return 0;
  int fd = open(w->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : sys_err("cannot open", w->path);
  dlock_info info;
  memset(&info, 0, sizeof info);
  int rc = inspect_fd(fd, w->path, &info);
  close(fd);
  if (rc < 0 || !info.held)
    return rc == DLOCK_EBACKEND ? (dlock__clear_err(), 0) : rc;
  size_t pl = strlen(w->fc->prefix);
  return w->emit(w->ud, w->key + pl, (size_t)kl - pl, &info);
}

/* Reads the directory at W->path, recursing into the ".d" directories
 * that long keys run through. */
static int walk_dir(struct walk *w, int depth) {
  DIR *d = opendir(w->path);
  if (!d)
    return errno == ENOENT ? 0 : sys_err("cannot read", w->path);
  size_t here = strlen(w->path);
  int rc = 0;
  struct dirent *de;
  while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
    const char *name = de->d_name;
    size_t nl = strlen(name);
    /* Escaped names never start with '.': the counter, tombstones. */
    if (name[0] == '.' || here + 1 + nl >= sizeof w->path)
      continue;
    w->path[here] = '/';
    memcpy(w->path + here + 1, name, nl + 1);
    if (nl > 2 && strcmp(name + nl - 2, ".d") == 0) {
      if (depth < 64)
        rc = walk_dir(w, depth + 1);
    } else if (nl > 5 && strcmp(name + nl - 5, ".lock") == 0) {
      rc = walk_file(w);
    }
    w->path[here] = '\0';
  }
  if (rc == 0 && errno != 0)
    rc = sys_err("cannot read", w->path);
  closedir(d);
  return rc;
}

static int file_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                     dlock_backend_emit_fn emit, void *ud) {
  struct file_client *fc = bc->priv;
  int rc = check_dir(fc);
  if (rc < 0)
    return rc;
  size_t pl = strlen(fc->prefix);
  struct walk *w = calloc(1, sizeof *w);
  char *want = malloc(pl + prefixlen + 1);
  if (!w || !want) {
    free(w);
    free(want);
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  }
  memcpy(want, fc->prefix, pl);
  memcpy(want + pl, prefix, prefixlen);
  *w = (struct walk){.fc = fc, .want = want, .wantlen = pl + prefixlen, .emit = emit, .ud = ud};
  snprintf(w->path, sizeof w->path, "%s", fc->dir);
  /* Without trailing slashes: walk_dir joins names with one. */
  w->dirlen = strlen(w->path);
  while (w->dirlen > 1 && w->path[w->dirlen - 1] == '/')
    w->path[--w->dirlen] = '\0';
  rc = walk_dir(w, 0);
  free(want);
  free(w);
  return rc;
}

static bool names_holder(const dlock_info *info, const dlock_info *holder) {
  if (holder->owner[0])
    return strcmp(info->owner, holder->owner) == 0;
  return !holder->token || info->token == holder->token;
}

/* The holder keeps its lock on the file's inode; breaking takes the name
 * from it.  The file is first renamed to a name no key has, which is one
 * step: afterwards, whatever was renamed is known by its inode, and it is
 * the file inspected only if it is the inode our descriptor still holds
 * open (a deleted file's inode number is reused once its last descriptor
 * closes), still locked and naming the same owner.  If it is another (the
 * lock was released and taken again in between), it is put back, unless a
 * newer file took the name meanwhile: then it stays under its tombstone
 * name, and its holder finds at its next renewal that the path names
 * another file.  A renewal of the file put back that falls in that window
 * also finds the path missing and reports a loss.  The holder broken finds
 * at its next renewal that the path names another file (or none), and
 * waiters watching the file are woken by the move. */
static int file_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                              const dlock_info *holder, dlock_info *broken) {
  struct file_client *fc = bc->priv;
  char path[PATH_MAX], tomb[PATH_MAX], rnd[17];
  int n = key_path(fc, key, keylen, path, sizeof path);
  if (n < 0)
    return n;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT || errno == ENOTDIR ? check_dir(fc) : sys_err("cannot open", path);
  dlock_info info, after;
  memset(&info, 0, sizeof info);
  memset(&after, 0, sizeof after);
  struct stat was, moved;
  int rc = inspect_fd(fd, path, &info);
  if (rc == 0 && fstat(fd, &was) != 0)
    rc = sys_err("cannot stat", path);
  if (rc < 0 || !info.held)
    goto out;
  if (!names_holder(&info, holder)) {
    rc = dlock_seterr(DLOCK_EBUSY, "file: '%s' is held by another holder (token %llu)", key,
                      (unsigned long long)info.token);
    goto out;
  }
  if ((rc = dlock__random_hex(rnd, 8)) < 0)
    goto out;
  snprintf(tomb, sizeof tomb, "%s/.broken-%s", fc->dir, rnd);
  if (rename(path, tomb) != 0) {
    rc = errno == ENOENT ? 0 : sys_err("cannot move", path);
    goto out;
  }
  if (stat(tomb, &moved) != 0) {
    rc = sys_err("cannot stat", tomb);
    goto out;
  }
  bool same = moved.st_dev == was.st_dev && moved.st_ino == was.st_ino &&
              inspect_fd(fd, tomb, &after) == 0 && after.held &&
              strcmp(after.owner, info.owner) == 0;
  if (!same) {
    /* Put back only where no newer file has the name; link(2) is the
     * same test where the file system lacks RENAME_NOREPLACE. */
    int back = renameat2(AT_FDCWD, tomb, AT_FDCWD, path, RENAME_NOREPLACE);
    if (back != 0 && (errno == EINVAL || errno == ENOSYS) && link(tomb, path) == 0)
      back = 0;
    (void)unlink(tomb); /* after a link, or the name is lost to it anyway */
    if (back == 0)
      rc = dlock_seterr(DLOCK_EBUSY,
                        "file: '%s' changed hands while it was being broken: not broken", key);
    else
      rc = dlock_seterr(DLOCK_EBUSY,
                        "file: '%s' changed hands while it was being broken, and the newer "
                        "holder's file could not be put back (a newer one has the name): that "
                        "holder will find its lock lost",
                        key);
    goto out;
  }
  (void)unlink(tomb);
  *broken = info;
out:
  close(fd);
  return rc;
}

static const char *const file_schemes[] = {"file", NULL};

const dlock_backend_ops dlock__file_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "file",
    .schemes = file_schemes,
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_CROSS_PROCESS |
            DLOCK_CAP_HOLDER_INFO | DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(struct file_client),
    .lock_size = sizeof(struct file_lock),
    .open = file_open,
    .close = file_close,
    .try_acquire = file_try_acquire,
    .acquire = file_acquire,
    .renew = file_renew,
    .release = file_release,
    .renew_many = NULL,
    .inspect = file_inspect,
    .control = NULL,
    .list = file_list,
    .force_release = file_force_release,
};
