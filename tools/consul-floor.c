/* consul-floor HOST:PORT [SECONDS]: the raw floor dlock's Consul lock is
 * measured against: the two requests of an uncontended acquire and release,
 * sent to the agent's HTTP API one at a time on one keep-alive connection,
 * under one session created up front (TTL 60s, no lock delay, behavior
 * release, and no health checks: "Checks":[] drops the default serfHealth).
 *
 *   acquire: PUT /v1/txn  [lock K with the session, get K]
 *   release: PUT /v1/kv/K?release=<session>
 *
 * K is "dlock-floor/<pid>".  The acquire must answer HTTP 200 with
 * Results[0].KV.ModifyIndex, the release HTTP 200 with the body true;
 * anything else exits 1.  The session is destroyed at the end.  Prints p50,
 * p99 and p99.9 of the pair in microseconds, the rate and the count, as one
 * JSON object. */
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

/* put PATH BODY: 0 with the answer's body in `body` if HTTP 200, else -1
 * (reported). */
static int put(const char *path, const char *data) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", base, path);
  body.len = 0;
  if (body.p)
    body.p[0] = '\0';
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, data);
  CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    fprintf(stderr, "consul-floor: PUT %s: %s\n", path, curl_easy_strerror(rc));
    return -1;
  }
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    fprintf(stderr, "consul-floor: PUT %s: HTTP %ld: %s\n", path, status, body.len ? body.p : "");
    return -1;
  }
  return 0;
}

/* put_json PATH BODY: the parsed answer, or NULL (reported). */
static cJSON *put_json(const char *path, const char *data) {
  if (put(path, data) < 0)
    return NULL;
  cJSON *j = cJSON_Parse(body.len ? body.p : "");
  if (!j)
    fprintf(stderr, "consul-floor: PUT %s: not JSON: %s\n", path, body.len ? body.p : "");
  return j;
}

/* put_true PATH: HTTP 200 with the body `true` (trailing newline allowed). */
static int put_true(const char *path) {
  if (put(path, "") < 0)
    return -1;
  if (body.len < 4 || strncmp(body.p, "true", 4) != 0 || strspn(body.p + 4, "\r\n") != body.len - 4) {
    fprintf(stderr, "consul-floor: PUT %s: answered %s, not true\n", path, body.len ? body.p : "");
    return -1;
  }
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

int main(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("dlock %s\n", DLOCK_TOOLS_VERSION);
    return 0;
  }
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: consul-floor HOST:PORT [SECONDS]\n");
    return 2;
  }
  double secs = argc > 2 ? atof(argv[2]) : 5;
  if (!(secs > 0)) {
    fprintf(stderr, "consul-floor: SECONDS must be positive\n");
    return 2;
  }
  snprintf(base, sizeof base, "http://%s", argv[1]);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init())) {
    fprintf(stderr, "consul-floor: cannot initialise libcurl\n");
    return 1;
  }
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  hdr = curl_slist_append(hdr, "Expect:");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);

  cJSON *j = put_json("/v1/session/create",
                      "{\"Name\":\"dlock-floor\",\"TTL\":\"60s\",\"LockDelay\":\"0s\","
                      "\"Behavior\":\"release\",\"Checks\":[]}");
  if (!j)
    return 1;
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "ID");
  char session[64] = "";
  if (cJSON_IsString(id) && strlen(id->valuestring) < sizeof session)
    snprintf(session, sizeof session, "%s", id->valuestring);
  cJSON_Delete(j);
  if (!session[0]) {
    fprintf(stderr, "consul-floor: session create: no ID in %s\n", body.p);
    return 1;
  }

  char key[64], value[64], v64[100], acquire[1024], release[256], destroy[128];
  snprintf(key, sizeof key, "dlock-floor/%ld", (long)getpid());
  snprintf(value, sizeof value, "consul-floor %ld", (long)getpid());
  b64((const unsigned char *)value, strlen(value), v64);
  snprintf(acquire, sizeof acquire,
           "[{\"KV\":{\"Verb\":\"lock\",\"Key\":\"%s\",\"Value\":\"%s\",\"Session\":\"%s\","
           "\"Flags\":0}},{\"KV\":{\"Verb\":\"get\",\"Key\":\"%s\"}}]",
           key, v64, session, key);
  snprintf(release, sizeof release, "/v1/kv/%s?release=%s", key, session);
  snprintf(destroy, sizeof destroy, "/v1/session/destroy/%s", session);

  size_t cap = 1 << 20, n = 0;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat)
    return 1;
  int fail = 0;
  int64_t t0 = now_ns(), stop = t0 + (int64_t)(secs * 1e9);
  while (n < cap && now_ns() < stop) {
    int64_t a = now_ns();
    j = put_json("/v1/txn", acquire);
    if (!j) {
      fail = 1;
      break;
    }
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "Results"), 0), "KV");
    if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(kv, "ModifyIndex"))) {
      fprintf(stderr, "consul-floor: acquire did not lock %s: %s\n", key, body.p);
      cJSON_Delete(j);
      fail = 1;
      break;
    }
    cJSON_Delete(j);
    if (put_true(release) < 0) {
      fail = 1;
      break;
    }
    lat[n++] = (double)(now_ns() - a) / 1000.0;
  }
  double el = (double)(now_ns() - t0) / 1e9;

  if (put_true(destroy) < 0)
    fail = 1;
  /* The released key itself stays (release only clears its session). */
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
  char del[96];
  snprintf(del, sizeof del, "/v1/kv/%s", key);
  if (put_true(del) < 0)
    fail = 1;

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
