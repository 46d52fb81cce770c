/* etcd-floor HOST:PORT [SECONDS]: the raw floor dlock's etcd lock is measured
 * against: the two transactions of an uncontended acquire and release, sent
 * to the v3 JSON gateway one at a time on one keep-alive connection, under
 * one lease granted up front.
 *
 *   acquire: if create_revision(K) == 0
 *            then put K "" with the lease, range P first-created (limit 1)
 *            else range K, range P first-created (limit 1)
 *   release: if create_revision(K) == the revision the acquire got
 *            then delete K
 *
 * K is P + the lease ID in hex, as Go's concurrency.Mutex names its key.
 * Every answer must be HTTP 200 with the transaction succeeded (and the
 * acquire must find K first in P); anything else exits 1.  Prints p50, p99
 * and p99.9 of the pair in microseconds, the rate and the count, as one JSON
 * object. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "floor.h"

struct buf {
  char *p;
  size_t len, cap;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg) {
  struct buf *b = arg;
  size_t add = size * n;
  if (b->len + add + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + add + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      return 0; /* curl reports a write error */
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, add);
  b->len += add;
  b->p[b->len] = '\0';
  return add;
}

static CURL *curl;
static struct buf body;
static char base[256];

/* post PATH JSON: the parsed answer, or NULL (reported) unless HTTP 200. */
static cJSON *post(const char *path, const char *json) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", base, path);
  body.len = 0;
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json);
  CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    fprintf(stderr, "etcd-floor: POST %s: %s\n", path, curl_easy_strerror(rc));
    return NULL;
  }
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    fprintf(stderr, "etcd-floor: POST %s: HTTP %ld: %s\n", path, status, body.len ? body.p : "");
    return NULL;
  }
  cJSON *j = cJSON_Parse(body.len ? body.p : "");
  if (!j)
    fprintf(stderr, "etcd-floor: POST %s: not JSON: %s\n", path, body.len ? body.p : "");
  return j;
}

/* An int64 the gateway sends as a JSON string (or 0 when it omits it). */
static int64_t int64_of(const cJSON *j) {
  if (cJSON_IsString(j))
    return strtoll(j->valuestring, NULL, 10);
  if (cJSON_IsNumber(j))
    return (int64_t)j->valuedouble;
  return 0;
}

static void b64(const unsigned char *in, size_t n, char *out) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0, o = 0;
  for (; i + 2 < n; i += 3) {
    out[o++] = t[in[i] >> 2];
    out[o++] = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    out[o++] = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
    out[o++] = t[in[i + 2] & 63];
  }
  if (i < n) {
    out[o++] = t[in[i] >> 2];
    if (i + 1 < n) {
      out[o++] = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
      out[o++] = t[(in[i + 1] & 15) << 2];
    } else {
      out[o++] = t[(in[i] & 3) << 4];
      out[o++] = '=';
    }
    out[o++] = '=';
  }
  out[o] = '\0';
}

/* The first response of a txn answer's responses[i], by its kind. */
static const cJSON *txn_resp(const cJSON *txn, int i, const char *kind) {
  const cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(txn, "responses"), i);
  return cJSON_GetObjectItemCaseSensitive(r, kind);
}

int main(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("dlock %s\n", DLOCK_TOOLS_VERSION);
    return 0;
  }
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: etcd-floor HOST:PORT [SECONDS]\n");
    return 2;
  }
  double secs = argc > 2 ? atof(argv[2]) : 5;
  if (!(secs > 0)) {
    fprintf(stderr, "etcd-floor: SECONDS must be positive\n");
    return 2;
  }
  snprintf(base, sizeof base, "http://%s", argv[1]);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init())) {
    fprintf(stderr, "etcd-floor: cannot initialise libcurl\n");
    return 1;
  }
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  hdr = curl_slist_append(hdr, "Expect:");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);

  cJSON *j = post("/v3/lease/grant", "{\"TTL\":\"60\"}");
  if (!j)
    return 1;
  int64_t lease = int64_of(cJSON_GetObjectItemCaseSensitive(j, "ID"));
  cJSON_Delete(j);
  if (lease <= 0) {
    fprintf(stderr, "etcd-floor: lease grant: no ID in %s\n", body.p);
    return 1;
  }

  /* P = "floor/<pid>/", K = P + lease hex; P's range ends at P with its
   * last byte ('/') incremented. */
  char pfx[64], key[96], end[64];
  snprintf(pfx, sizeof pfx, "floor/%ld/", (long)getpid());
  snprintf(key, sizeof key, "%s%" PRIx64, pfx, (uint64_t)lease);
  snprintf(end, sizeof end, "%s", pfx);
  end[strlen(end) - 1]++;
  char k64[160], p64[100], e64[100];
  b64((const unsigned char *)key, strlen(key), k64);
  b64((const unsigned char *)pfx, strlen(pfx), p64);
  b64((const unsigned char *)end, strlen(end), e64);

  char owner[512], acquire[2048], release[1024];
  snprintf(owner, sizeof owner,
           "{\"request_range\":{\"key\":\"%s\",\"range_end\":\"%s\",\"limit\":\"1\","
           "\"sort_order\":\"ASCEND\",\"sort_target\":\"CREATE\"}}",
           p64, e64);
  snprintf(acquire, sizeof acquire,
           "{\"compare\":[{\"target\":\"CREATE\",\"result\":\"EQUAL\",\"key\":\"%s\","
           "\"create_revision\":\"0\"}],"
           "\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":\"\",\"lease\":\"%" PRId64 "\"}},%s],"
           "\"failure\":[{\"request_range\":{\"key\":\"%s\"}},%s]}",
           k64, k64, lease, owner, k64, owner);

  size_t cap = 1 << 20, n = 0;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat)
    return 1;
  int fail = 0;
  int64_t t0 = now_ns(), stop = t0 + (int64_t)(secs * 1e9);
  while (n < cap && now_ns() < stop) {
    int64_t a = now_ns();
    j = post("/v3/kv/txn", acquire);
    if (!j) {
      fail = 1;
      break;
    }
    int64_t rev = int64_of(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "header"), "revision"));
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(txn_resp(j, 1, "response_range"), "kvs");
    const cJSON *first = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(kvs, 0), "key");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "succeeded")) || rev <= 0 ||
        !cJSON_IsString(first) || strcmp(first->valuestring, k64) != 0) {
      fprintf(stderr, "etcd-floor: acquire did not take %s: %s\n", key, body.p);
      cJSON_Delete(j);
      fail = 1;
      break;
    }
    cJSON_Delete(j);

    snprintf(release, sizeof release,
             "{\"compare\":[{\"target\":\"CREATE\",\"result\":\"EQUAL\",\"key\":\"%s\","
             "\"create_revision\":\"%" PRId64 "\"}],"
             "\"success\":[{\"request_delete_range\":{\"key\":\"%s\"}}]}",
             k64, rev, k64);
    j = post("/v3/kv/txn", release);
    if (!j) {
      fail = 1;
      break;
    }
    int64_t deleted = int64_of(cJSON_GetObjectItemCaseSensitive(
        txn_resp(j, 0, "response_delete_range"), "deleted"));
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "succeeded")) || deleted != 1) {
      fprintf(stderr, "etcd-floor: release of %s at revision %" PRId64 " failed: %s\n", key, rev,
              body.p);
      cJSON_Delete(j);
      fail = 1;
      break;
    }
    cJSON_Delete(j);
    lat[n++] = (double)(now_ns() - a) / 1000.0;
  }
  double el = (double)(now_ns() - t0) / 1e9;

  char revoke[64];
  snprintf(revoke, sizeof revoke, "{\"ID\":\"%" PRId64 "\"}", lease);
  j = post("/v3/lease/revoke", revoke);
  if (!j)
    fail = 1;
  cJSON_Delete(j);

  if (!fail && n > 0) {
    qsort(lat, n, sizeof *lat, cmp);
    printf("{\"n\":%zu,\"ops_per_sec\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f}\n", n,
           (double)n / el, pct(lat, n, 0.5), pct(lat, n, 0.99), pct(lat, n, 0.999));
  }
  free(lat);
  free(body.p);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(curl);
  curl_global_cleanup();
  return fail || n == 0;
}
