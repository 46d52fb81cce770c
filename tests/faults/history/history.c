/* dlock-history: reads the history files of a fault run and fails on any
 * violation of the rules in tests/faults/HISTORY.md.
 *
 *   dlock-history [--recover-bound-ms N] [--lossy-store] [--json FILE]
 *                 [--quiet] FILE...
 *
 * Exit 0 clean, 1 on a violation, 2 on bad usage or malformed input.
 * Times in the report are ms since the first event of the run, so a line
 * can be matched against the logs by its pid tid seq and its file:line. */
#include "history.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHOWN 20
#define NS_PER_MS 1000000LL

static const char usage[] =
    "usage: dlock-history [--recover-bound-ms N] [--lossy-store] [--json FILE] [--quiet] FILE...\n"
    "       dlock-history -h|--help|-V|--version\n"
    "  --recover-bound-ms N  longest a killed holder's key may stay unobtainable\n"
    "                        (required when the history has a kill or kill-run)\n"
    "  --lossy-store         the store forgot its data: overlaps are counted, not failed\n"
    "  --json FILE           write the figures as one JSON object\n"
    "  --quiet               print only the violations and the summary line\n";

static const struct hist *H;

/* ms since the first event, with three decimals (ns are exact in int64) */
static const char *ms(char *buf, size_t n, int64_t t) {
  int64_t d = t - H->t_first;
  const char *sign = d < 0 ? "-" : "";
  uint64_t u = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
  snprintf(buf, n, "%s%" PRIu64 ".%03" PRIu64, sign, u / 1000000, u / 1000 % 1000);
  return buf;
}

static const char *dur(char *buf, size_t n, int64_t d) {
  const char *sign = d < 0 ? "-" : "";
  uint64_t u = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
  snprintf(buf, n, "%s%" PRIu64 ".%03" PRIu64, sign, u / 1000000, u / 1000 % 1000);
  return buf;
}

static const char *where(struct where w) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s:%u", H->files[w.file], w.line);
  return buf;
}

static void print_id(FILE *out, const struct acq *x) {
  fprintf(out, "%lld %llu %llu", (long long)x->pid, (unsigned long long)x->tid,
          (unsigned long long)x->seq);
}

/* An acquisition as the report names it: who, token, what it believed. */
static void print_acq(FILE *out, uint32_t a) {
  char b1[32], b2[32];
  const struct acq *x = &H->acq[a];
  print_id(out, x);
  fprintf(out, " (token %llu, ", (unsigned long long)x->token);
  if (x->flags & A_HELD)
    fprintf(out, "held %s..%s ms", ms(b1, sizeof b1, x->g), ms(b2, sizeof b2, x->held_last));
  else
    fprintf(out, "asked %s, granted %s ms", ms(b1, sizeof b1, x->r), ms(b2, sizeof b2, x->g));
  fprintf(out, ", %s)", where(x->at_g));
}

static void print_att(FILE *out, uint32_t i) {
  char b1[32];
  const struct attempt *a = &H->att[i];
  fprintf(out, "token %llu from %lld %llu %llu at %s ms (%s)", (unsigned long long)a->token,
          (long long)a->pid, (unsigned long long)a->tid, (unsigned long long)a->seq,
          ms(b1, sizeof b1, a->mono), where(a->at));
}

static void print_fault(FILE *out, const struct fault *f) {
  char b1[32], b2[32];
  fprintf(out, "%s of %lld", fault_kind_name(f->kind), (long long)f->victim);
  if (f->key != NONE)
    fprintf(out, " on %s", hist_key(H, f->key));
  if (f->end != f->start)
    fprintf(out, " %s..%s ms", ms(b1, sizeof b1, f->start), ms(b2, sizeof b2, f->end));
  else
    fprintf(out, " at %s ms", ms(b1, sizeof b1, f->start));
  fprintf(out, " (%s)", where(f->at));
}

static void print_viol(FILE *out, const struct viol *v, int failed) {
  char b1[32], b2[32];
  const char *label = failed ? "violation" : "not failed";
  const char *rule = v->kind <= V_OVERLAP_POINT ? "a"
                     : v->kind <= V_DUP         ? "b"
                     : v->kind <= V_UNGRANTED   ? "c"
                     : v->kind == V_VALIDITY    ? "d"
                                                : "e";
  fprintf(out, "%s %s: key %s: ", label, rule, hist_key(H, v->key));
  switch (v->kind) {
  case V_OVERLAP:
    print_acq(out, v->x);
    fputs(" and ", out);
    print_acq(out, v->y);
    fputs(" believed they held it at once\n", out);
    break;
  case V_OVERLAP_POINT:
    print_acq(out, v->y);
    fputs(" was granted while ", out);
    print_acq(out, v->x);
    fputs(" held it\n", out);
    break;
  case V_ORDER:
    print_acq(out, v->x);
    fputs(" was granted before ", out);
    print_acq(out, v->y);
    fputs(" asked, yet has the higher token\n", out);
    break;
  case V_DUP:
    print_acq(out, v->x);
    fputs(" and ", out);
    print_acq(out, v->y);
    fputs(" were granted the same token\n", out);
    break;
  case V_DOWN:
    fputs("the resource accepted ", out);
    print_att(out, v->att);
    fputs(" after accepting ", out);
    print_att(out, v->att2);
    fputc('\n', out);
    break;
  case V_UNGRANTED:
    fputs("the resource accepted ", out);
    print_att(out, v->att);
    fputs(", a token that acquisition was not granted on this key\n", out);
    break;
  case V_VALIDITY:
    print_acq(out, v->x);
    fprintf(out, " believed it held it at %s ms, past %s ms (start + ttl %lld ms) of ",
            ms(b1, sizeof b1, v->t), ms(b2, sizeof b2, v->t2), (long long)H->acq[v->x].ttl_ms);
    print_fault(out, &H->fault[v->fault]);
    fputc('\n', out);
    break;
  case V_RECOVERY:
    print_fault(out, &H->fault[v->fault]);
    if (v->x != NONE) {
      fputs(", which held ", out);
      print_acq(out, v->x);
    }
    if (!failed && v->why == 0)
      fprintf(out, ": the history ends at %s ms, before the bound\n",
              ms(b1, sizeof b1, H->t_last));
    else if (v->t2 == T_NONE_LO)
      fprintf(out, ": no grant after it to the end (%s ms)%s\n", ms(b1, sizeof b1, H->t_last),
              failed ? "" : ", but nobody asked within the bound");
    else
      fprintf(out, ": next grant at %s ms, %s ms later%s\n", ms(b1, sizeof b1, v->t2),
              dur(b2, sizeof b2, v->t2 - H->fault[v->fault].start),
              failed ? "" : ", but nobody asked within the bound");
    break;
  }
}

static void json_stats(FILE *f, const char *name, const struct stats *s) {
  char b1[32], b2[32];
  if (s->count == 0)
    fprintf(f, "\"%s\":{\"count\":0,\"p50\":null,\"max\":null}", name);
  else
    fprintf(f, "\"%s\":{\"count\":%zu,\"p50\":%s,\"max\":%s}", name, s->count,
            dur(b1, sizeof b1, s->p50), dur(b2, sizeof b2, s->max));
}

static int write_json(const char *path, const struct result *r, const struct check_opts *o,
                      uint64_t failing) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "dlock-history: %s: %s\n", path, strerror(errno));
    return -1;
  }
  fprintf(f,
          "{\"acquisitions\":%llu,\"failed_acquires\":%llu,\"writes_accepted\":%llu,"
          "\"writes_rejected\":%llu,\"overlaps\":%llu,\"lossy_store\":%s,\"violations\":{",
          (unsigned long long)r->acquisitions, (unsigned long long)r->failed_acquires,
          (unsigned long long)r->writes_accepted, (unsigned long long)r->writes_rejected,
          (unsigned long long)r->overlaps, o->lossy_store ? "true" : "false");
  for (int i = 0; i < RULE_COUNT; i++)
    fprintf(f, "%s\"%c\":%zu", i ? "," : "", 'a' + i,
            rule_fails((enum rule)i, o) ? r->rule[i].n : (size_t)0);
  fprintf(f, "},\"violations_total\":%llu,\"kills\":%llu,", (unsigned long long)failing,
          (unsigned long long)r->kills);
  json_stats(f, "loss_detection_ms", &r->loss_detect);
  fputc(',', f);
  json_stats(f, "recovery_ms", &r->recovery);
  fprintf(f, ",\"recoveries_unfinished\":%llu", (unsigned long long)r->recoveries_unfinished);
  fprintf(f, ",\"faults\":%llu,\"faults_hit\":%llu}\n", (unsigned long long)r->faults,
          (unsigned long long)r->faults_hit);
  if (fclose(f) != 0) {
    fprintf(stderr, "dlock-history: %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

static int read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "dlock-history: %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  for (;;) {
    if (!b) {
      fprintf(stderr, "dlock-history: out of memory\n");
      fclose(f);
      return -1;
    }
    n += fread(b + n, 1, cap - n, f);
    if (n < cap)
      break;
    cap *= 2;
    char *nb = realloc(b, cap);
    if (!nb)
      free(b);
    b = nb;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    fprintf(stderr, "dlock-history: %s: read error\n", path);
    free(b);
    return -1;
  }
  *buf = b;
  *len = n;
  return 0;
}

static int parse_ms(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > INT64_MAX / NS_PER_MS)
    return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  struct check_opts o = {.recover_bound_ns = -1};
  const char *json = NULL;
  int quiet = 0;
  const char **files = malloc((size_t)argc * sizeof(*files));
  uint32_t nfiles = 0;
  if (!files)
    return 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--recover-bound-ms") == 0 && i + 1 < argc) {
      int64_t v;
      if (parse_ms(argv[++i], &v) < 0) {
        fprintf(stderr, "dlock-history: --recover-bound-ms wants a number of ms\n");
        free(files);
        return 2;
      }
      o.recover_bound_ns = v * NS_PER_MS;
    } else if (strcmp(a, "--json") == 0 && i + 1 < argc) {
      json = argv[++i];
    } else if (strcmp(a, "--lossy-store") == 0) {
      o.lossy_store = 1;
    } else if (strcmp(a, "--quiet") == 0) {
      quiet = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      free(files);
      return 0;
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
      printf("dlock-history %s\n", DLOCK_VERSION);
      free(files);
      return 0;
    } else if (strcmp(a, "--") == 0) {
      while (++i < argc)
        files[nfiles++] = argv[i];
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "dlock-history: unknown or incomplete option %s\n%s", a, usage);
      free(files);
      return 2;
    } else {
      files[nfiles++] = a;
    }
  }
  if (nfiles == 0) {
    fputs(usage, stderr);
    free(files);
    return 2;
  }

  struct hist h;
  hist_init(&h, files, nfiles);
  H = &h;
  int rc = 2;
  for (uint32_t i = 0; i < nfiles; i++) {
    char *buf;
    size_t len;
    int truncated;
    if (read_file(files[i], &buf, &len) < 0)
      goto out;
    int fed = hist_feed(&h, i, buf, len, &truncated);
    free(buf);
    if (fed < 0) {
      fprintf(stderr, "dlock-history: %s\n", h.err);
      goto out;
    }
    if (truncated && !quiet)
      fprintf(stderr, "dlock-history: note: %s: last line has no newline (a killed writer); "
                      "ignored\n", files[i]);
  }
  if (hist_finish(&h) < 0) {
    fprintf(stderr, "dlock-history: %s\n", h.err);
    goto out;
  }
  int kills = 0;
  for (uint32_t i = 0; i < h.nfault; i++)
    kills |= h.fault[i].kind == K_KILL || h.fault[i].kind == K_KILL_RUN;
  if (kills && o.recover_bound_ns < 0) {
    fprintf(stderr, "dlock-history: the history has a kill: --recover-bound-ms is required\n");
    goto out;
  }

  struct result r;
  check_run(&h, &o, &r);
  uint64_t failing = 0;
  for (int i = 0; i < RULE_COUNT; i++) {
    int fails = rule_fails((enum rule)i, &o);
    if (fails)
      failing += r.rule[i].n;
    for (size_t k = 0; k < r.rule[i].n && k < MAX_SHOWN; k++)
      print_viol(stdout, &r.rule[i].v[k], fails);
    if (r.rule[i].n > MAX_SHOWN)
      printf("... and %zu more of rule %c\n", r.rule[i].n - MAX_SHOWN, 'a' + i);
  }
  char b1[32], b2[32];
  if (!quiet) {
    for (size_t k = 0; k < r.unfinished.n && k < MAX_SHOWN; k++)
      print_viol(stdout, &r.unfinished.v[k], 0);
    printf("figures: loss detection %zu", r.loss_detect.count);
    if (r.loss_detect.count)
      printf(", p50 %s ms, max %s ms", dur(b1, sizeof b1, r.loss_detect.p50),
             dur(b2, sizeof b2, r.loss_detect.max));
    printf("; recovery after %llu kills: %zu", (unsigned long long)r.kills, r.recovery.count);
    if (r.recovery.count)
      printf(", p50 %s ms, max %s ms", dur(b1, sizeof b1, r.recovery.p50),
             dur(b2, sizeof b2, r.recovery.max));
    printf(", %llu unfinished\n", (unsigned long long)r.recoveries_unfinished);
  }
  printf("history: %llu acquisitions, %llu failed acquires, %llu writes accepted, "
         "%llu writes rejected, %llu overlaps%s, %llu violations\n",
         (unsigned long long)r.acquisitions, (unsigned long long)r.failed_acquires,
         (unsigned long long)r.writes_accepted, (unsigned long long)r.writes_rejected,
         (unsigned long long)r.overlaps, o.lossy_store ? " (lossy store: not failed)" : "",
         (unsigned long long)failing);
  rc = failing ? 1 : 0;
  if (json && write_json(json, &r, &o, failing) < 0)
    rc = 2;
  result_free(&r);
out:
  hist_free(&h);
  free(files);
  return rc;
}
