/* dlock run --metrics-textfile: the run's metrics in the Prometheus text
 * exposition format, for node_exporter's textfile collector.  The file is
 * written beside PATH and renamed over it, as the collector expects: it
 * never reads half a file. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* The directory part of PATH into DIR ("." if none). */
static void dir_of(const char *path, char *dir, size_t len) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, len, ".");
  else if (slash == path)
    snprintf(dir, len, "/");
  else
    snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

void cli_url_scheme(const char *url, char *out, size_t len) {
  /* Only the scheme: the rest of a URL may hold passwords and host names
   * that have no place in a metrics label. */
  size_t n = 0;
  while (url[n] && url[n] != ':' && n + 1 < len) {
    char ch = url[n];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '+' || ch == '-' || ch == '.'))
      break;
    out[n] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    n++;
  }
  if (n == 0 || strncmp(url + n, "://", 3) != 0)
    snprintf(out, len, "unknown");
  else
    out[n] = '\0';
}

int cli_textfile_check(const char *cmd, const char *path) {
  char dir[PATH_MAX];
  struct stat st;
  size_t n = strlen(path);
  if (n == 0 || path[n - 1] == '/')
    return cli_usage_error(cmd, "--metrics-textfile needs a file name, not '%s'", path);
  if (n + 32 >= sizeof dir)
    return cli_usage_error(cmd, "--metrics-textfile path is too long");
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return cli_usage_error(cmd, "--metrics-textfile '%s' is a directory", path);
  dir_of(path, dir, sizeof dir);
  /* Checked now, not when the command is done: a mistyped directory must
   * not cost a whole run's metrics. */
  if (stat(dir, &st) != 0)
    return cli_usage_error(cmd, "--metrics-textfile directory '%s': %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return cli_usage_error(cmd, "--metrics-textfile directory '%s': %s", dir, strerror(ENOTDIR));
  if (access(dir, W_OK | X_OK) != 0)
    return cli_usage_error(cmd, "--metrics-textfile directory '%s': %s", dir, strerror(errno));
  return 0;
}

/* A label value: backslash, double quote and newline escaped, as the format
 * requires, and bytes that are not UTF-8 as U+FFFD, since it must be UTF-8
 * (a key that failed validation can get here, the store being down). */
static void label_value(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    size_t n;
    if (*p == '\\') {
      fputs("\\\\", f);
      p++;
    } else if (*p == '"') {
      fputs("\\\"", f);
      p++;
    } else if (*p == '\n') {
      fputs("\\n", f);
      p++;
    } else if (*p < 0x80) {
      fputc(*p++, f);
    } else if ((n = cli_utf8_seq(p)) != 0) {
      fwrite(p, 1, n, f);
      p += n;
    } else {
      fputs("\xef\xbf\xbd", f);
      p++;
    }
  }
}

static double secs(int64_t from_ns, int64_t to_ns) {
  return from_ns && to_ns > from_ns ? (double)(to_ns - from_ns) / 1e9 : 0.0;
}

static void sample(FILE *f, const struct cli_run_report *r, const char *name, const char *type,
                   const char *help, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void sample(FILE *f, const struct cli_run_report *r, const char *name, const char *type,
                   const char *help, const char *fmt, ...) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s{key=\"", name, help, name, type, name);
  label_value(f, r->key);
  fputs("\",store=\"", f);
  label_value(f, r->store);
  fputs("\"} ", f);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
}

static void write_metrics(FILE *f, const struct cli_run_report *r) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  /* Wall-clock time of the run's end, for alerts on runs that stopped
   * happening; the durations come from CLOCK_BOOTTIME. */
  double end_wall = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
  int64_t wait_end = r->acquired_ns ? r->acquired_ns : r->wait_end_ns;
  int64_t hold_end = r->lost_ns ? r->lost_ns : r->end_ns;
  sample(f, r, "dlock_run_acquired", "gauge", "1 if dlock run acquired the lock.", "%d",
         r->acquired);
  sample(f, r, "dlock_run_lost", "gauge",
         "1 if the lock was lost while the command ran (the command was stopped).", "%d",
         r->lost);
  sample(f, r, "dlock_run_exit_code", "gauge", "Exit status of dlock run.", "%d",
         r->exit_code);
  sample(f, r, "dlock_run_wait_seconds", "gauge",
         "Time spent waiting for the lock, acquired or not.", "%.6f",
         secs(r->start_ns, wait_end));
  sample(f, r, "dlock_run_hold_seconds", "gauge",
         "Time the lock was held, until its release or its loss.", "%.6f",
         secs(r->acquired_ns, hold_end));
  sample(f, r, "dlock_run_token", "gauge", "Fencing token of the acquisition, 0 if none.",
         "%" PRIu64, r->token);
  sample(f, r, "dlock_run_renewals_total", "counter", "Lease renewals that succeeded.",
         "%" PRIu64, r->have_metrics ? r->metrics.renew_ok : 0);
  sample(f, r, "dlock_run_renewal_failures_total", "counter",
         "Lease renewals that failed (retried until the lock's validity ran out).",
         "%" PRIu64, r->have_metrics ? r->metrics.renew_failed : 0);
  sample(f, r, "dlock_run_acquire_retries_total", "counter",
         "Store failures retried while waiting for the lock.", "%" PRIu64,
         r->have_metrics ? r->metrics.acquire_retries : 0);
  sample(f, r, "dlock_run_end_timestamp_seconds", "gauge",
         "When dlock run ended, in seconds since the epoch.", "%.3f", end_wall);
}

int cli_textfile_write(const char *path, const struct cli_run_report *r) {
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    int e = errno;
    if (fd >= 0)
      close(fd), unlink(tmp);
    fprintf(stderr, "dlock: cannot write metrics to '");
    cli_print_safe(stderr, tmp);
    fprintf(stderr, "': %s\n", strerror(e));
    return -1;
  }
  write_metrics(f, r);
  /* On disk before the rename makes it visible: a crash right after must
   * not leave an empty file in the collector's directory. */
  int bad = fflush(f) != 0 || ferror(f) || fsync(fd) != 0;
  int e = errno;
  if (fclose(f) != 0 && !bad)
    bad = 1, e = errno;
  if (!bad && rename(tmp, path) != 0)
    bad = 1, e = errno;
  if (bad) {
    unlink(tmp);
    fprintf(stderr, "dlock: cannot write metrics to '");
    cli_print_safe(stderr, path);
    fprintf(stderr, "': %s\n", strerror(e));
    return -1;
  }
  return 0;
}
