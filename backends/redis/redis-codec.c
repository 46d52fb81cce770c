/* Redis codec: scripts, key/value layout and reply decoding (no I/O). */
#include "backends/redis/redis-codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value embeds the token, so the acquire script must build it: only the
 * script knows the token before the SET.  Lua 5.1 numbers are doubles and
 * tostring() switches to exponent notation at 1e14, so the token is
 * formatted with %d, which is exact up to 2^53 (far beyond any counter a
 * lock key will reach).  PTTL doubles as the existence test: -2 is "no key",
 * and a busy attempt writes nothing.
 *
 * A counter that INCR creates at 1 may be one that Redis lost (restart
 * without persistence, eviction, FLUSHDB).  Restarting it from the server's
 * clock in microseconds keeps tokens above every earlier one unless the old
 * counter advanced faster than one acquisition per microsecond or the
 * server's clock went back.
 *
 * The counter expires, so a store that sees millions of names keeps state
 * only for those used lately: ARGV[4] ms after the last acquisition, give
 * or take a tenth of that, one second at most, for its expiry is moved
 * back to ARGV[4] only once it has fallen that far below (one PTTL read
 * per acquisition instead of a write; a write about once a second on a
 * busy name).  "0" keeps it forever, even one another client's setting
 * made expire; a counter someone left without expiry is given one.  A
 * counter that expired after a quiet spell is one that was last advanced
 * at least that long ago, so its successor, started from the clock, is
 * above it unless the clock went back by more than the spell. */
static const char acquire_lua[] =
    "local p = redis.call('PTTL', KEYS[1])\n"
    "if p ~= -2 then return {0, p} end\n"
    "local f = tonumber(ARGV[4])\n"
    "local t = redis.call('INCR', KEYS[2])\n"
    "if t == 1 then\n"
    "  local now = redis.call('TIME')\n"
    "  t = tonumber(now[1]) * 1000000 + tonumber(now[2])\n"
    "  if f == 0 then redis.call('SET', KEYS[2], string.format('%d', t))\n"
    "  else redis.call('SET', KEYS[2], string.format('%d', t), 'PX', ARGV[4]) end\n"
    "else\n"
    "  local e = redis.call('PTTL', KEYS[2])\n"
    "  if f == 0 then\n"
    "    if e >= 0 then redis.call('PERSIST', KEYS[2]) end\n"
    "  else\n"
    "    local d = f / 10\n"
    "    if d > 1000 then d = 1000 end\n"
    "    if e < f - d then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', t) .. ':' .. ARGV[3],"
    " 'PX', ARGV[2])\n"
    "return {1, t}\n";

/* The owner token is 128 random bits drawn for this acquisition alone, so
 * "the value starts with owner:" identifies the holder as well as the
 * whole value would, and needs no token: after an acquire whose reply was
 * lost the core can still give the lock back by owner.  ARGV[1] comes with
 * its ':' (no concatenation per call).  Waiters only need to know that
 * something was released; the payload is informational.  The PUBLISH goes
 * out whether or not anyone listens: on a channel without subscribers it
 * costs the server less than asking PUBSUB NUMSUB would. */
static const char release_lua[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('PUBLISH', KEYS[2], ARGV[1])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* Any number of locks in one call: KEYS[i] is renewed to ARGV[2i] ms if
 * its value starts with ARGV[2i-1] (the owner and its ':').  One request
 * for a whole batch instead of one per lock, and one script's overhead.
 * redis.pcall, so that a key someone replaced with another type (GET then
 * fails with WRONGTYPE) is that lock's loss, not an error for the batch. */
static const char renew_lua[] =
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local o = ARGV[2 * i - 1]\n"
    "  local v = redis.pcall('GET', k)\n"
    "  if type(v) == 'string' and string.sub(v, 1, #o) == o then\n"
    "    redis.call('PEXPIRE', k, ARGV[2 * i])\n"
    "    out[i] = 1\n"
    "  else\n"
    "    out[i] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

/* A missing key comes back as Lua false, which Redis sends as nil; false is
 * not nil in a Lua table, so the array keeps its three slots. */
static const char inspect_lua[] =
    "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]),"
    " redis.call('GET', KEYS[2])}\n";

/* A forced release: the holder named by owner (ARGV[1], "" = any) or
 * else by token (ARGV[2], "0" = any) goes as by its own release, waiters
 * woken; anything else is left and reported.  The token is compared as
 * the text the acquire script wrote, digits without leading zeros, as
 * ARGV[2] is sent. */
static const char break_lua[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return {0} end\n"
    "local p = redis.call('PTTL', KEYS[1])\n"
    "local o, t = string.match(v, '^([^:]+):(%d+):')\n"
    "if ARGV[1] ~= '' then\n"
    "  if o ~= ARGV[1] then return {2, v, p} end\n"
    "elseif ARGV[2] ~= '0' and t ~= ARGV[2] then return {2, v, p} end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('PUBLISH', KEYS[2], o or '')\n"
    "return {1, v, p}\n";

/* For a page of SCAN: each key's value (false when it went meanwhile, or
 * when it is no string: someone else's data under the prefix) and PTTL,
 * in one flat array, in one round trip. */
static const char list_lua[] =
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local ok, v = pcall(redis.call, 'GET', k)\n"
    "  if not ok then v = false end\n"
    "  out[2 * i - 1] = v\n"
    "  out[2 * i] = redis.call('PTTL', k)\n"
    "end\n"
    "return out\n";

const char *dlock__redis_script(dlock__redis_script_id id) {
  switch (id) {
  case DLOCK__REDIS_ACQUIRE: return acquire_lua;
  case DLOCK__REDIS_RELEASE: return release_lua;
  case DLOCK__REDIS_RENEW: return renew_lua;
  case DLOCK__REDIS_INSPECT: return inspect_lua;
  case DLOCK__REDIS_BREAK: return break_lua;
  case DLOCK__REDIS_LIST: return list_lua;
  default: return NULL;
  }
}

const char *dlock__redis_script_name(dlock__redis_script_id id) {
  switch (id) {
  case DLOCK__REDIS_ACQUIRE: return "acquire";
  case DLOCK__REDIS_RELEASE: return "release";
  case DLOCK__REDIS_RENEW: return "renew";
  case DLOCK__REDIS_INSPECT: return "inspect";
  case DLOCK__REDIS_BREAK: return "break";
  case DLOCK__REDIS_LIST: return "list";
  default: return "?";
  }
}

static const char *kind_text(dlock__redis_keykind kind) {
  switch (kind) {
  case DLOCK__REDIS_KEY_LOCK: return "lock:{";
  case DLOCK__REDIS_KEY_FENCE: return "fence:{";
  case DLOCK__REDIS_KEY_CHAN: return "lockch:{";
  }
  return NULL;
}

char *dlock__redis_key(const char *prefix, dlock__redis_keykind kind, const char *key,
                       size_t keylen, size_t *len) {
  const char *mid = kind_text(kind);
  if (!mid || (!key && keylen))
    return NULL;
  if (!prefix)
    prefix = DLOCK__REDIS_DEFAULT_PREFIX;
  size_t plen = strlen(prefix), mlen = strlen(mid);
  if (keylen > SIZE_MAX - plen - mlen - 2)
    return NULL;
  size_t n = plen + mlen + keylen + 1;
  char *s = malloc(n + 1);
  if (!s)
    return NULL;
  memcpy(s, prefix, plen);
  memcpy(s + plen, mid, mlen);
  if (keylen)
    memcpy(s + plen + mlen, key, keylen);
  s[n - 1] = '}';
  s[n] = '\0';
  if (len)
    *len = n;
  return s;
}

/* Glob specials of SCAN MATCH, escaped with a backslash. */
static size_t glob_escape(char *out, const char *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (strchr("*?[]\\", s[i]) && s[i] != '\0') {
      if (out)
        out[o] = '\\';
      o++;
    }
    if (out)
      out[o] = s[i];
    o++;
  }
  return o;
}

char *dlock__redis_scan_pattern(const char *prefix, const char *key, size_t keylen,
                                size_t *len) {
  if (!prefix)
    prefix = DLOCK__REDIS_DEFAULT_PREFIX;
  const char *mid = kind_text(DLOCK__REDIS_KEY_LOCK);
  size_t plen = strlen(prefix), mlen = strlen(mid);
  if (keylen > (SIZE_MAX - 4) / 2 - plen - mlen)
    return NULL;
  size_t n = glob_escape(NULL, prefix, plen) + glob_escape(NULL, mid, mlen) +
             glob_escape(NULL, key, keylen) + 1;
  char *s = malloc(n + 1);
  if (!s)
    return NULL;
  size_t o = glob_escape(s, prefix, plen);
  o += glob_escape(s + o, mid, mlen);
  o += glob_escape(s + o, key, keylen);
  s[o++] = '*';
  s[o] = '\0';
  if (len)
    *len = o;
  return s;
}

int dlock__redis_lock_key_of(const char *prefix, const char *name, size_t len, const char **key,
                             size_t *keylen) {
  if (!prefix)
    prefix = DLOCK__REDIS_DEFAULT_PREFIX;
  const char *mid = kind_text(DLOCK__REDIS_KEY_LOCK);
  size_t plen = strlen(prefix), mlen = strlen(mid);
  if (!name || len < plen + mlen + 1 || memcmp(name, prefix, plen) != 0 ||
      memcmp(name + plen, mid, mlen) != 0 || name[len - 1] != '}')
    return -1;
  *key = name + plen + mlen;
  *keylen = len - plen - mlen - 1;
  return 0;
}

int dlock__redis_parse_u64(const char *s, size_t len, uint64_t *out) {
  if (!s || len == 0)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int dlock__redis_value_parse(const char *v, size_t len, dlock__redis_value_parts *out) {
  if (!v)
    return DLOCK_EINVAL;
  const char *c1 = memchr(v, ':', len);
  if (!c1 || c1 == v)
    return DLOCK_EINVAL;
  const char *tstart = c1 + 1;
  size_t rest = len - (size_t)(tstart - v);
  const char *c2 = memchr(tstart, ':', rest);
  if (!c2)
    return DLOCK_EINVAL;
  uint64_t tok;
  if (dlock__redis_parse_u64(tstart, (size_t)(c2 - tstart), &tok) < 0)
    return DLOCK_EINVAL;
  out->owner = v;
  out->owner_len = (size_t)(c1 - v);
  out->token = tok;
  out->label = c2 + 1;
  out->label_len = len - (size_t)(c2 + 1 - v);
  return 0;
}

static const char *type_name(int type) {
  switch (type) {
  case REDIS_REPLY_STRING: return "string";
  case REDIS_REPLY_ARRAY: return "array";
  case REDIS_REPLY_INTEGER: return "integer";
  case REDIS_REPLY_NIL: return "nil";
  case REDIS_REPLY_STATUS: return "status";
  case REDIS_REPLY_ERROR: return "error";
  default: return "unknown";
  }
}

/* Error replies start with an upper-case code word ("NOSCRIPT No matching
 * script..."); compare that word exactly so "NOSCRIPTX" would not match. */
static int error_code_is(const redisReply *r, const char *code) {
  size_t n = strlen(code);
  if (!r || r->type != REDIS_REPLY_ERROR || !r->str || r->len < n)
    return 0;
  if (memcmp(r->str, code, n) != 0)
    return 0;
  return r->len == n || r->str[n] == ' ';
}

int dlock__redis_is_noscript(const redisReply *r) {
  return error_code_is(r, "NOSCRIPT");
}

/* Replies are limited in messages so one huge error cannot fill the buffer. */
#define MSG_TEXT_MAX 300

static int msg_len(size_t len) {
  return (int)(len > MSG_TEXT_MAX ? MSG_TEXT_MAX : len);
}

int dlock__redis_reply_error(const redisReply *r, const char *what) {
  if (!r)
    return dlock_seterr(DLOCK_EBACKEND, "redis: %s: no reply", what);
  if (r->type != REDIS_REPLY_ERROR)
    return dlock_seterr(DLOCK_EBACKEND, "redis: %s: unexpected %s reply", what,
                        type_name(r->type));
  int code = DLOCK_EBACKEND;
  if (error_code_is(r, "NOAUTH") || error_code_is(r, "WRONGPASS") ||
      error_code_is(r, "NOPERM"))
    code = DLOCK_EAUTH;
  return dlock_seterr(code, "redis: %s: %.*s", what, msg_len(r->len), r->str ? r->str : "");
}

static int unexpected(const redisReply *r, const char *what, const char *detail) {
  if (r && r->type == REDIS_REPLY_ERROR)
    return dlock__redis_reply_error(r, what);
  return dlock_seterr(DLOCK_EBACKEND, "redis: %s: unexpected reply (%s%s%s)", what,
                      r ? type_name(r->type) : "none", detail ? ": " : "",
                      detail ? detail : "");
}

int dlock__redis_decode_acquire(const redisReply *r, dlock__redis_acquire_result *out) {
  const char *what = "acquire";
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return unexpected(r, what, NULL);
  if (r->elements != 2 || !r->element)
    return unexpected(r, what, "expected 2 elements");
  const redisReply *a = r->element[0], *b = r->element[1];
  if (!a || !b || a->type != REDIS_REPLY_INTEGER || b->type != REDIS_REPLY_INTEGER)
    return unexpected(r, what, "expected 2 integers");
  if (a->integer == 1) {
    if (b->integer < 1)
      return unexpected(r, what, "fencing token below 1");
    out->acquired = 1;
    out->token = (uint64_t)b->integer;
    out->pttl = -1;
    return 0;
  }
  if (a->integer == 0) {
    out->acquired = 0;
    out->token = 0;
    out->pttl = b->integer >= 0 ? (int64_t)b->integer : -1;
    return 0;
  }
  return unexpected(r, what, "status neither 0 nor 1");
}

int dlock__redis_decode_flag(const redisReply *r, const char *what, int *out) {
  if (!r || r->type != REDIS_REPLY_INTEGER)
    return unexpected(r, what, NULL);
  if (r->integer != 0 && r->integer != 1)
    return unexpected(r, what, "neither 0 nor 1");
  *out = (int)r->integer;
  return 0;
}

int dlock__redis_decode_renew(const redisReply *r, size_t n, unsigned char *flags) {
  const char *what = "renew";
  if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element))
    return unexpected(r, what, NULL);
  if (r->elements != n)
    return unexpected(r, what, "not one result per lock");
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = r->element[i];
    if (!e || e->type != REDIS_REPLY_INTEGER || (e->integer != 0 && e->integer != 1))
      return unexpected(r, what, "a result neither 0 nor 1");
  }
  for (size_t i = 0; i < n; i++)
    flags[i] = (unsigned char)r->element[i]->integer;
  return 0;
}

/* Copy up to CAP-1 bytes, not cutting a UTF-8 sequence in half. */
static void copy_text(char *dst, size_t cap, const char *src, size_t len) {
  if (len >= cap) {
    len = cap - 1;
    while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
      len--;
  }
  memcpy(dst, src, len);
  dst[len] = '\0';
}

/* A lock's value (string, or nil: no holder) and PTTL into *INFO; the
 * token stays as given when the value does not parse. */
static int held_from(const redisReply *val, const redisReply *pttl, const char *what,
                     dlock_info *info) {
  if (!val || (val->type != REDIS_REPLY_STRING && val->type != REDIS_REPLY_NIL))
    return unexpected(val, what, "value is neither string nor nil");
  if (!pttl || pttl->type != REDIS_REPLY_INTEGER)
    return unexpected(pttl, what, "ttl is not an integer");
  if (val->type != REDIS_REPLY_STRING)
    return 0;
  info->held = 1;
  if (pttl->integer >= 0)
    info->ttl_ms = (int64_t)pttl->integer;
  dlock__redis_value_parts vp;
  if (dlock__redis_value_parse(val->str, val->len, &vp) == 0) {
    info->token = vp.token;
    copy_text(info->owner, sizeof info->owner, vp.owner, vp.owner_len);
    copy_text(info->label, sizeof info->label, vp.label, vp.label_len);
  }
  return 0;
}

static void info_clear(dlock_info *info) {
  memset(info, 0, sizeof *info);
  info->ttl_ms = -1;
}

int dlock__redis_decode_inspect(const redisReply *r, dlock_info *info) {
  const char *what = "inspect";
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return unexpected(r, what, NULL);
  if (r->elements != 3 || !r->element)
    return unexpected(r, what, "expected 3 elements");
  const redisReply *fence = r->element[2];
  if (!fence || (fence->type != REDIS_REPLY_STRING && fence->type != REDIS_REPLY_NIL))
    return unexpected(r, what, "fence is neither string nor nil");
  dlock_info out;
  info_clear(&out);
  /* A counter someone else overwrote is reported as unknown (0). */
  if (fence->type == REDIS_REPLY_STRING &&
      dlock__redis_parse_u64(fence->str, fence->len, &out.token) < 0)
    out.token = 0;
  int rc = held_from(r->element[0], r->element[1], what, &out);
  if (rc < 0)
    return rc;
  *info = out;
  return 0;
}

int dlock__redis_decode_list(const redisReply *r, size_t i, dlock_info *info) {
  const char *what = "list";
  if (!r || r->type != REDIS_REPLY_ARRAY || !r->element)
    return unexpected(r, what, NULL);
  if (i >= r->elements / 2)
    return unexpected(r, what, "fewer values than keys");
  dlock_info out;
  info_clear(&out);
  int rc = held_from(r->element[2 * i], r->element[2 * i + 1], what, &out);
  if (rc < 0)
    return rc;
  *info = out;
  return 0;
}

int dlock__redis_decode_break(const redisReply *r, int *status, dlock_info *info) {
  const char *what = "break";
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !r->element || !r->element[0] ||
      r->element[0]->type != REDIS_REPLY_INTEGER)
    return unexpected(r, what, NULL);
  long long st = r->element[0]->integer;
  dlock_info out;
  info_clear(&out);
  if (st == 0 && r->elements == 1) {
    *status = 0;
    *info = out;
    return 0;
  }
  if ((st != 1 && st != 2) || r->elements != 3)
    return unexpected(r, what, "expected {0} or {1|2, value, pttl}");
  int rc = held_from(r->element[1], r->element[2], what, &out);
  if (rc < 0)
    return rc;
  if (!out.held)
    return unexpected(r, what, "no value");
  *status = (int)st;
  *info = out;
  return 0;
}

int dlock__redis_decode_ok(const redisReply *r, const char *what) {
  if (!r || r->type != REDIS_REPLY_STATUS)
    return unexpected(r, what, NULL);
  if (r->len != 2 || memcmp(r->str, "OK", 2) != 0)
    return unexpected(r, what, "status is not OK");
  return 0;
}

/* Does SECRET occur in the LEN bytes at S? */
static int contains(const char *s, size_t len, const char *secret) {
  size_t n = secret ? strlen(secret) : 0;
  if (n == 0 || n > len)
    return 0;
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(s + i, secret, n) == 0)
      return 1;
  return 0;
}

int dlock__redis_decode_auth(const redisReply *r, const char *secret) {
  if (r && r->type == REDIS_REPLY_ERROR) {
    if (!r->str || contains(r->str, r->len, secret))
      return dlock_seterr(DLOCK_EAUTH, "redis: AUTH refused");
    return dlock_seterr(DLOCK_EAUTH, "redis: AUTH refused: %.*s", msg_len(r->len), r->str);
  }
  return dlock__redis_decode_ok(r, "AUTH");
}

int dlock__redis_decode_sha(const redisReply *r, char sha[41]) {
  const char *what = "SCRIPT LOAD";
  if (!r || r->type != REDIS_REPLY_STRING)
    return unexpected(r, what, NULL);
  if (r->len != 40)
    return unexpected(r, what, "not a SHA1");
  for (size_t i = 0; i < 40; i++) {
    char c = r->str[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
      return unexpected(r, what, "not a SHA1");
  }
  memcpy(sha, r->str, 40);
  sha[40] = '\0';
  return 0;
}

/* "<C><N>\r\n" at OUT + O when it fits before CAP; the length it takes. */
static size_t put_count(char *out, size_t cap, size_t o, char c, size_t n) {
  char digits[24];
  size_t d = 0;
  do {
    digits[d++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  size_t len = 1 + d + 2;
  if (o + len <= cap) {
    out[o] = c;
    for (size_t i = 0; i < d; i++)
      out[o + 1 + i] = digits[d - 1 - i];
    out[o + 1 + d] = '\r';
    out[o + 2 + d] = '\n';
  }
  return len;
}

size_t dlock__redis_format(char *buf, size_t cap, int argc, const char *const *argv,
                           const size_t *lens) {
  size_t o = put_count(buf, cap, 0, '*', argc > 0 ? (size_t)argc : 0);
  for (int i = 0; i < argc; i++) {
    o += put_count(buf, cap, o, '$', lens[i]);
    if (o + lens[i] + 2 <= cap) {
      if (lens[i])
        memcpy(buf + o, argv[i], lens[i]);
      buf[o + lens[i]] = '\r';
      buf[o + lens[i] + 1] = '\n';
    }
    o += lens[i] + 2;
  }
  return o;
}

static int str_is(const redisReply *r, const char *s) {
  size_t n = strlen(s);
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
         r->len == n && memcmp(r->str, s, n) == 0;
}

int dlock__redis_decode_push(const redisReply *r, long long *count) {
  const char *what = "subscription";
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return unexpected(r, what, NULL);
  if (r->elements != 3 || !r->element || !r->element[0] || !r->element[1] ||
      !r->element[2])
    return unexpected(r, what, "expected 3 elements");
  const redisReply *kind = r->element[0], *third = r->element[2];
  if (str_is(kind, "message")) {
    if (r->element[1]->type != REDIS_REPLY_STRING)
      return unexpected(r, what, "message without a channel");
    return DLOCK__REDIS_PUSH_MESSAGE;
  }
  int which = 0;
  if (str_is(kind, "subscribe"))
    which = DLOCK__REDIS_PUSH_SUBSCRIBE;
  else if (str_is(kind, "unsubscribe"))
    which = DLOCK__REDIS_PUSH_UNSUBSCRIBE;
  else
    return unexpected(r, what, "unknown kind");
  if (third->type != REDIS_REPLY_INTEGER)
    return unexpected(r, what, "count is not an integer");
  if (count)
    *count = third->integer;
  return which;
}
