#!/usr/bin/env bash
# Checks the user-facing contract of the dlock command: exit codes, the
# environment given to COMMAND, signal forwarding, status output.
#
#   tools/test-cli.sh path/to/dlock [URL...]
#
# Without URLs it uses a fresh file:// directory.  Lock loss is checked on
# file:// always, and on Redis as well when DLOCK_TEST_REDIS_URL names one;
# a SIGKILLed dlock run and passwords kept out of argv on file:// always,
# and on PostgreSQL advisory locks as well when DLOCK_TEST_POSTGRES_URL names
# one (scripts/test sets both).  With DLOCK_TEST_REDIS_URL (and
# DLOCK_TEST_ETCD_URL, etcd://HOST:PORT) and python3, store failures under
# dlock run come from a proxy the test controls (test-cli-proxy.py).
# DLOCK_TEST_VERSION and DLOCK_TEST_FLOORS (tools/meson.build sets them)
# check every tool's --version.
set -u
set -m # background jobs get default signal dispositions, as from a terminal

DLOCK=${1:?usage: test-cli.sh path/to/dlock [URL...]}
shift
tmp=$(mktemp -d /tmp/dlock-cli-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
urls=("$@")
[ ${#urls[@]} -eq 0 ] && urls=("file://$tmp/locks")
mkdir -p "$tmp/locks"

# dlock's exit statuses (dlock --help, "Exit status").
EX_CONFLICT=1 EX_USAGE=64 EX_UNAVAILABLE=69 EX_STORE=76 EX_AUTH=77 EX_LOST=124 EX_INTERNAL=125

fails=0
n=0
check() { # check NAME EXPECTED ACTUAL
  n=$((n + 1))
  if [ "$2" = "$3" ]; then
    echo "ok $n - $1"
  else
    echo "not ok $n - $1: expected '$2', got '$3'"
    fails=$((fails + 1))
  fi
}
contains() { # contains NAME FILE TEXT
  n=$((n + 1))
  if grep -qF -- "$3" "$2"; then
    echo "ok $n - $1"
  else
    echo "not ok $n - $1: '$3' not in: $(cat "$2")"
    fails=$((fails + 1))
  fi
}
# Wait until FILE exists (the child writes it once it holds the lock).
await() {
  for _ in $(seq 1 200); do [ -e "$1" ] && return 0; sleep 0.05; done
  echo "# timed out waiting for $1"
  return 1
}

# ---- usage ----
"$DLOCK" >/dev/null 2>&1; check "no arguments" $EX_USAGE $?
"$DLOCK" frobnicate >/dev/null 2>&1; check "unknown command" $EX_USAGE $?
"$DLOCK" --help >/dev/null; check "--help" 0 $?
"$DLOCK" help | grep -q "Exit status"; check "help lists exit codes" 0 $?
"$DLOCK" --version | grep -q '^dlock [0-9]'; check "--version" 0 $?
# Every tool says the project's version (tools/meson.build passes it).
if [ -n "${DLOCK_TEST_VERSION:-}" ]; then
  for tool in "$DLOCK" ${DLOCK_TEST_FLOORS:-}; do
    for opt in -V --version; do
      out=$("$tool" $opt); rc=$?
      check "$(basename "$tool") $opt: exit 0" 0 $rc
      check "$(basename "$tool") $opt: the version" "dlock $DLOCK_TEST_VERSION" "$(printf '%s\n' "$out" | head -n 1)"
    done
  done
else
  echo "# DLOCK_TEST_VERSION not set: the tools' version is not compared"
fi
# Each subcommand's help lists the statuses it can return.
for sub in run status list break bench; do
  "$DLOCK" $sub --help >"$tmp/help"; check "$sub --help" 0 $?
  for code in 0 64 69 76 77 125; do
    grep -qE "^  $code +[A-Za-z]" "$tmp/help"; check "$sub --help lists exit status $code" 0 $?
  done
done
for code in 1 124 126 127 '128\+N'; do
  grep -qE "^  $code +[A-Za-z]" <("$DLOCK" run --help); check "run --help lists exit status $code" 0 $?
  grep -qE "^  $code +[A-Za-z]" <("$DLOCK" status --help); check "status --help leaves out $code" 1 $?
done
u=${urls[0]}
"$DLOCK" run "$u" k true >/dev/null 2>&1; check "run without --" $EX_USAGE $?
"$DLOCK" run "$u" k -- >/dev/null 2>&1; check "run without command" $EX_USAGE $?
"$DLOCK" run "$u" -- true >/dev/null 2>&1; check "run without key" $EX_USAGE $?
"$DLOCK" run -w x "$u" k -- true >/dev/null 2>&1; check "run bad -w" $EX_USAGE $?
"$DLOCK" run -w >/dev/null 2>&1; check "run -w without value" $EX_USAGE $?
"$DLOCK" run -n -w 1 "$u" k -- true >/dev/null 2>&1; check "run -n with -w" $EX_USAGE $?
"$DLOCK" run --ttl 0 "$u" k -- true >/dev/null 2>&1; check "run --ttl 0" $EX_USAGE $?
"$DLOCK" run --nope "$u" k -- true >/dev/null 2>&1; check "run unknown option" $EX_USAGE $?
"$DLOCK" run nosuch://x k -- true >/dev/null 2>&1; check "run bad scheme" $EX_USAGE $?
for v in 256 -1 x "" 1.5 0x2a " 4"; do
  "$DLOCK" run -E "$v" "$u" k -- true 2>"$tmp/err"; check "run -E '$v' refused" $EX_USAGE $?
  contains "run -E '$v': message" "$tmp/err" "invalid conflict exit code"
done
"$DLOCK" run "$u" k -- true -E >/dev/null 2>&1; check "-E after -- is COMMAND's" 0 $?
"$DLOCK" run -E >/dev/null 2>&1; check "run -E without value" $EX_USAGE $?
"$DLOCK" run -E 42 "$u" k -- sh -c 'exit 7'; check "-E leaves COMMAND's status alone" 7 $?
"$DLOCK" run --progress 50ms "$u" k -- true 2>/dev/null; check "run --progress under 0.1 s" $EX_USAGE $?
"$DLOCK" run --progress x "$u" k -- true 2>/dev/null; check "run --progress x" $EX_USAGE $?
rm -f "$tmp/ran"
"$DLOCK" run --metrics-textfile "$tmp/nodir/m.prom" "$u" k -- touch "$tmp/ran" 2>"$tmp/err"
check "run --metrics-textfile in a missing directory" $EX_USAGE $?
contains "missing metrics directory: message" "$tmp/err" "--metrics-textfile directory '$tmp/nodir'"
[ -e "$tmp/ran" ]; check "missing metrics directory: COMMAND did not run" 1 $?
"$DLOCK" run --metrics-textfile "$tmp" "$u" k -- true 2>/dev/null
check "run --metrics-textfile of a directory" $EX_USAGE $?
# Durations: the URLs' syntax (a bare number being seconds here), nothing
# that strtod would also take.
for v in 0x10 0X1p4 1e3 1E3 inf nan infinity -1 +1 " 5" "5 " 5x 1.5.5 "" . ms 1s5 \
  99999999999999999999 1000000000000000h; do
  "$DLOCK" run --ttl "$v" "$u" k -- true 2>"$tmp/err"
  check "run --ttl '$v' refused" $EX_USAGE $?
  contains "run --ttl '$v': message" "$tmp/err" "invalid ttl"
  "$DLOCK" run -w "$v" "$u" k -- true >/dev/null 2>&1; check "run -w '$v' refused" $EX_USAGE $?
done
for v in 500ms 1.5 .5 15s 2m 1h 0.25s; do
  "$DLOCK" run --ttl "$v" -w "$v" "$u" k -- true; check "run --ttl/-w '$v' accepted" 0 $?
done
# A mistyped file:// directory: status must neither create it nor call the
# key free, whereas taking a lock there makes the store.
"$DLOCK" status "file://$tmp/typo/dir" k >"$tmp/out" 2>"$tmp/err"
check "status on a missing directory: the store is unavailable" $EX_UNAVAILABLE $?
contains "status on a missing directory says so" "$tmp/err" "$tmp/typo/dir does not exist"
[ -e "$tmp/typo" ]; check "status creates nothing" 1 $?
"$DLOCK" status --json "file://$tmp/typo/dir" k >/dev/null 2>&1
check "status --json on a missing directory" $EX_UNAVAILABLE $?
[ -e "$tmp/typo" ]; check "status --json creates nothing" 1 $?
: >"$tmp/plainfile"
"$DLOCK" status "file://$tmp/plainfile" k >/dev/null 2>"$tmp/err"
check "status on a file that is not a directory" $EX_UNAVAILABLE $?
contains "status on a plain file says so" "$tmp/err" "is not a directory"
"$DLOCK" run "file://$tmp/fresh/a/b" k -- true; check "run creates a missing directory" 0 $?
[ -d "$tmp/fresh/a/b" ]; check "run made the directory" 0 $?
"$DLOCK" status "file://$tmp/fresh/a/b" k >"$tmp/st"; check "status on the made directory" 0 $?
contains "status after run: free" "$tmp/st" "state:  free"
"$DLOCK" status "file://$tmp/fresh/a/b" other-key >"$tmp/st"; check "status of a never-used key" 0 $?
contains "never-used key: free" "$tmp/st" "state:  free"

"$DLOCK" status "$u" >/dev/null 2>&1; check "status without key" $EX_USAGE $?
"$DLOCK" status --yaml "$u" k >/dev/null 2>&1; check "status unknown option" $EX_USAGE $?
"$DLOCK" bench >/dev/null 2>&1; check "bench without URL" $EX_USAGE $?
"$DLOCK" bench "$u" --threads 0 >/dev/null 2>&1; check "bench --threads 0" $EX_USAGE $?
"$DLOCK" bench "$u" --only nothing >/dev/null 2>&1; check "bench --only nothing" $EX_USAGE $?

"$DLOCK" run 'redis://bob:s3cret@127.0.0.1:1/0?connect_timeout=300ms' k -- true 2>"$tmp/err"
check "unreachable store" $EX_UNAVAILABLE $?
n=$((n + 1))
if grep -q s3cret "$tmp/err"; then
  echo "not ok $n - password printed: $(cat "$tmp/err")"; fails=$((fails + 1))
else
  echo "ok $n - no password in the message"
fi
"$DLOCK" run -w 1 'redis://127.0.0.1:1/0?connect_timeout=300ms' k -- true 2>/dev/null
check "unreachable store, waiting" $EX_UNAVAILABLE $?
"$DLOCK" status 'redis://127.0.0.1:1/0?connect_timeout=300ms' k >/dev/null 2>&1
check "status: unreachable store" $EX_UNAVAILABLE $?
"$DLOCK" bench 'redis://127.0.0.1:1/0?connect_timeout=300ms' --seconds 0.1 >/dev/null 2>&1
check "bench: unreachable store" $EX_UNAVAILABLE $?
no_secret() { # NAME FILE SECRET
  n=$((n + 1))
  if grep -qF -- "$3" "$2"; then echo "not ok $n - $1: secret printed: $(cat "$2")"; fails=$((fails + 1))
  else echo "ok $n - $1: no secret in the message"; fi
}
# Refused credentials, from the real servers.
if [ -n "${DLOCK_TEST_REDIS_URL:-}" ]; then
  # The test server has no password: any AUTH is refused.
  bad="redis://:wr0ng-pw@${DLOCK_TEST_REDIS_URL#redis://}"
  "$DLOCK" run "$bad" k -- true 2>"$tmp/err"; check "redis: refused credentials" $EX_AUTH $?
  no_secret "redis: refused credentials" "$tmp/err" wr0ng-pw
  "$DLOCK" status "$bad" k >/dev/null 2>"$tmp/err"; check "status: refused credentials" $EX_AUTH $?
  # The store fails the request: the key's fencing counter is not a number.
  rport=${DLOCK_TEST_REDIS_URL##*:}; rport=${rport%%/*}
  rdb=${DLOCK_TEST_REDIS_URL##*/}; rdb=${rdb%%\?*}
  key="cli-test/wrongtype/$$"
  redis-cli -p "$rport" -n "${rdb:-0}" hset "dlock:fence:{$key}" a b >/dev/null
  "$DLOCK" run -n "$DLOCK_TEST_REDIS_URL" "$key" -- true 2>"$tmp/err"; check "redis: store error" $EX_STORE $?
  contains "redis: store error: the store's message" "$tmp/err" "WRONGTYPE"
  redis-cli -p "$rport" -n "${rdb:-0}" del "dlock:fence:{$key}" >/dev/null
else
  echo "# DLOCK_TEST_REDIS_URL not set: refused credentials and store errors are not checked on Redis"
fi
if [ -n "${DLOCK_TEST_POSTGRES_URL:-}" ]; then
  pgbad=$(printf '%s\n' "$DLOCK_TEST_POSTGRES_URL" | sed -E 's#^(postgres(ql)?://[^:/@]+):[^@]*@#\1:wr0ng-pw@#')
  "$DLOCK" run "$pgbad" k -- true 2>"$tmp/err"; check "postgres: refused credentials" $EX_AUTH $?
  no_secret "postgres: refused credentials" "$tmp/err" wr0ng-pw
else
  echo "# DLOCK_TEST_POSTGRES_URL not set: refused credentials are not checked on PostgreSQL"
fi

for u in "${urls[@]}"; do
  echo "# $u"
  key="cli-test/$$/$RANDOM"

  # ---- run: status, environment ----
  "$DLOCK" run "$u" "$key" -- sh -c 'exit 7'; check "exit status passes through" 7 $?
  "$DLOCK" run "$u" "$key" -- sh -c 'kill -USR1 $$'; check "killed by signal: 128+N" 138 $?
  "$DLOCK" run "$u" "$key" -- /nonexistent/cmd 2>/dev/null; check "command not found" 127 $?
  "$DLOCK" run "$u" "$key" -- /dev/null 2>/dev/null; check "command not executable" 126 $?
  DLOCK_KEY=stale "$DLOCK" run "$u" "$key" -- sh -c 'echo "$DLOCK_KEY|$DLOCK_TOKEN|$DLOCK_URL"' \
    >"$tmp/env"
  check "run ok" 0 $?
  IFS='|' read -r ekey etok eurl <"$tmp/env"
  check "DLOCK_KEY" "$key" "$ekey"
  n=$((n + 1))
  if [ -n "$etok" ] && [ "$etok" -gt 0 ] 2>/dev/null; then echo "ok $n - DLOCK_TOKEN is a number"
  else echo "not ok $n - DLOCK_TOKEN '$etok'"; fails=$((fails + 1)); fi
  [ -n "$eurl" ]; check "DLOCK_URL set" 0 $?
  "$DLOCK" run "$u" "$key" -- sh -c 'echo $DLOCK_TOKEN' >"$tmp/tok2"
  n=$((n + 1))
  if [ "$(cat "$tmp/tok2")" -gt "$etok" ]; then echo "ok $n - tokens increase"
  else echo "not ok $n - token $(cat "$tmp/tok2") after $etok"; fails=$((fails + 1)); fi

  # ---- contention ----
  rm -f "$tmp/held"
  "$DLOCK" run --label "cli test" "$u" "$key" -- sh -c "touch $tmp/held; sleep 2" &
  holder=$!
  await "$tmp/held"
  "$DLOCK" run -n "$u" "$key" -- true 2>"$tmp/err"; check "-n on a held lock" $EX_CONFLICT $?
  contains "busy message names the holder" "$tmp/err" "cli test"
  "$DLOCK" run --wait 0 "$u" "$key" -- true 2>/dev/null; check "--wait 0 on a held lock" $EX_CONFLICT $?
  "$DLOCK" run -n -E 42 "$u" "$key" -- true 2>/dev/null; check "-n -E 42 on a held lock" 42 $?
  "$DLOCK" run --conflict-exit-code=200 -n "$u" "$key" -- true 2>/dev/null
  check "--conflict-exit-code=200 on a held lock" 200 $?
  rm -f "$tmp/ran"
  "$DLOCK" run -E 0 -n "$u" "$key" -- touch "$tmp/ran" 2>/dev/null; check "-E 0 on a held lock" 0 $?
  [ -e "$tmp/ran" ]; check "-E 0 on a held lock: COMMAND did not run" 1 $?
  "$DLOCK" run -E42 -w 0.2 "$u" "$key" -- true 2>/dev/null; check "-E42: -w runs out" 42 $?
  start=$(date +%s%N)
  "$DLOCK" run -w 0.3 "$u" "$key" -- true 2>/dev/null; check "-w runs out" $EX_CONFLICT $?
  ms=$((($(date +%s%N) - start) / 1000000))
  n=$((n + 1))
  if [ $ms -ge 250 ] && [ $ms -lt 5000 ]; then echo "ok $n - -w 0.3 waited ${ms} ms"
  else echo "not ok $n - -w 0.3 waited ${ms} ms"; fails=$((fails + 1)); fi
  "$DLOCK" status "$u" "$key" >"$tmp/st"; check "status held" 0 $?
  contains "status says held" "$tmp/st" "state:  held"
  contains "status shows label" "$tmp/st" "cli test"
  "$DLOCK" status --json "$u" "$key" >"$tmp/st.json"; check "status --json" 0 $?
  if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["held"] is True and d["label"]=="cli test" and d["token"]>0 and d["key"]==sys.argv[2]' \
      "$tmp/st.json" "$key"
    check "status --json parses" 0 $?
  fi
  "$DLOCK" run "$u" "$key" -- true; check "blocking wait gets the lock" 0 $?
  wait $holder; check "holder exit" 0 $?
  "$DLOCK" status --json "$u" "$key" | grep -q '"held":false'; check "status free" 0 $?

  # ---- signals ----
  rm -f "$tmp/held" "$tmp/got"
  "$DLOCK" run "$u" "$key" -- sh -c "trap 'touch $tmp/got; exit 42' TERM; touch $tmp/held; while :; do sleep 0.05; done" &
  pid=$!
  await "$tmp/held"
  kill -TERM $pid
  wait $pid; check "SIGTERM forwarded, child's status returned" 42 $?
  [ -e "$tmp/got" ]; check "child saw SIGTERM" 0 $?
  rm -f "$tmp/held"
  "$DLOCK" run "$u" "$key" -- sh -c "touch $tmp/held; exec sleep 30" &
  pid=$!
  await "$tmp/held"
  kill -INT $pid
  wait $pid; check "SIGINT forwarded" 130 $?
  # Interrupting a wait: the waiter dies of the signal, the holder is untouched.
  rm -f "$tmp/held"
  "$DLOCK" run "$u" "$key" -- sh -c "touch $tmp/held; sleep 2" &
  holder=$!
  await "$tmp/held"
  "$DLOCK" run "$u" "$key" -- echo never &
  waiter=$!
  sleep 0.3
  kill -INT $waiter
  wait $waiter; check "SIGINT while waiting" 130 $?
  wait $holder; check "holder unaffected" 0 $?
done

# ---- loss: the lock is deleted behind the holder's back ----
# file:// always (the lock file is removed; the next renewal notices), and
# Redis too when scripts/test says where one runs (its key is deleted).
loss_case() { # NAME URL KEY DELETE-COMMAND
  local name=$1 u=$2 key=$3 del=$4
  rm -f "$tmp/held"
  local start; start=$(date +%s%N)
  "$DLOCK" run --ttl 1.5 --grace 0.5 "$u" "$key" -- \
    sh -c "trap '' TERM; touch $tmp/held; while :; do sleep 0.05; done" 2>"$tmp/err" &
  local pid=$!
  await "$tmp/held"
  sh -c "$del"
  wait $pid; check "$name: lock lost" $EX_LOST $?
  contains "$name: loss message" "$tmp/err" "dlock: lock '$key' lost; stopping command"
  local ms=$((($(date +%s%N) - start) / 1000000))
  n=$((n + 1))
  if [ $ms -lt 6000 ]; then echo "ok $n - $name: TERM-ignoring child killed after grace (${ms} ms)"
  else echo "not ok $n - $name: took ${ms} ms"; fails=$((fails + 1)); fi
}
mkdir -p "$tmp/lossdir"
loss_case file "file://$tmp/lossdir" lost "rm -f '$tmp/lossdir/lost.lock'"
if [ -n "${DLOCK_TEST_REDIS_URL:-}" ]; then
  rport=${DLOCK_TEST_REDIS_URL##*:}; rport=${rport%%/*}
  key="cli-test/lost/$$"
  rdb=${DLOCK_TEST_REDIS_URL##*/}; rdb=${rdb%%\?*}
  loss_case redis "$DLOCK_TEST_REDIS_URL" "$key" \
    "redis-cli -p $rport -n ${rdb:-0} del 'dlock:lock:{$key}' >/dev/null"
fi

# ---- the URL from a file or the environment ----
# so that a password is in no argv: /proc/PID/cmdline is world-readable.
mkdir -p "$tmp/urldir"
fu="file://$tmp/urldir"
printf '%s\n' "$fu" >"$tmp/url.nl"
printf '%s\r\n' "$fu" >"$tmp/url.crlf"
: >"$tmp/url.empty"
printf '\n' >"$tmp/url.nlonly"
printf '%s\n%s\n' "$fu" "$fu" >"$tmp/url.two"
"$DLOCK" run --url-file "$tmp/url.nl" k -- sh -c 'echo "$DLOCK_URL"' >"$tmp/out"
check "run --url-file (trailing newline stripped)" 0 $?
check "run --url-file: DLOCK_URL" "$fu" "$(cat "$tmp/out")"
"$DLOCK" run --url-file="$tmp/url.crlf" k -- true; check "run --url-file=PATH with CRLF" 0 $?
"$DLOCK" status --url-file "$tmp/url.nl" k >"$tmp/st"; check "status --url-file" 0 $?
contains "status --url-file: the store" "$tmp/st" "url:    $fu"
"$DLOCK" bench --url-file "$tmp/url.nl" --seconds 0.1 --only uncontended >/dev/null
check "bench --url-file" 0 $?
"$DLOCK" bench "$fu" --only hold --locks 3 --seconds 0.1 --json >"$tmp/out" 2>"$tmp/err"
check "bench --only hold" 0 $?
contains "bench hold: the acquires' time" "$tmp/out" '"acquire_s":'
contains "bench hold: memory per lock" "$tmp/out" '"rss_per_lock_bytes":'
contains "bench hold: says when the hold starts" "$tmp/err" "dlock bench: holding 3 locks"
contains "bench hold: says when it ends" "$tmp/err" "dlock bench: releasing 3 locks"
"$DLOCK" bench "$fu" --seconds 0.05 --locks 2 --json >"$tmp/out"
n=$((n + 1))
if grep -qF '"hold"' "$tmp/out"; then
  echo "not ok $n - hold ran unasked: $(cat "$tmp/out")"; fails=$((fails + 1))
else
  echo "ok $n - hold runs only when --only names it"
fi
for f in empty nlonly; do
  "$DLOCK" run --url-file "$tmp/url.$f" k -- true 2>"$tmp/err"; check "run --url-file $f: refused" $EX_USAGE $?
  contains "run --url-file $f: message" "$tmp/err" "is empty"
done
"$DLOCK" run --url-file "$tmp/url.two" k -- true 2>"$tmp/err"; check "run --url-file of two lines" $EX_USAGE $?
contains "two lines: message" "$tmp/err" "more than one line"
"$DLOCK" run --url-file "$tmp/nonexistent" k -- true 2>"$tmp/err"; check "run --url-file missing" $EX_USAGE $?
contains "missing URL file: message" "$tmp/err" "cannot read URL file '$tmp/nonexistent': No such file"
"$DLOCK" run --url-file "$tmp" k -- true 2>"$tmp/err"; check "run --url-file of a directory" $EX_USAGE $?
"$DLOCK" run --url-file "$tmp/url.nl" "$fu" k -- true 2>/dev/null; check "run: URL twice" $EX_USAGE $?
"$DLOCK" run --url-file "$tmp/url.nl" --url-env X k -- true 2>/dev/null
check "run: --url-file and --url-env" $EX_USAGE $?
"$DLOCK" run --url-file "$tmp/url.nl" -- true 2>/dev/null; check "run --url-file without KEY" $EX_USAGE $?
"$DLOCK" run --url-file 2>/dev/null; check "run --url-file without value" $EX_USAGE $?
(unset DLOCK_NOT_SET; "$DLOCK" run --url-env DLOCK_NOT_SET k -- true 2>"$tmp/err"); check "run --url-env unset" $EX_USAGE $?
contains "unset variable: message" "$tmp/err" "environment variable 'DLOCK_NOT_SET' is not set"
DLOCK_EMPTY_URL= "$DLOCK" run --url-env DLOCK_EMPTY_URL k -- true 2>/dev/null; check "run --url-env empty" $EX_USAGE $?
DLOCK_SECRET_URL=$fu "$DLOCK" run --url-env DLOCK_SECRET_URL k -- \
  sh -c 'echo "${DLOCK_SECRET_URL-unset}|$DLOCK_URL"' >"$tmp/out"
check "run --url-env" 0 $?
check "run --url-env: the variable is not passed on, DLOCK_URL is" "unset|$fu" "$(cat "$tmp/out")"
DLOCK_SECRET_URL=$fu "$DLOCK" status --url-env DLOCK_SECRET_URL k >/dev/null; check "status --url-env" 0 $?

# A running dlock run: no password in its argv, none in the command's
# environment, whichever way the URL came.
secret_case() { # NAME URL PASSWORD HOW(file|env) [argv-only]
  local name=$1 u=$2 pw=$3 how=$4 argv_only=${5:-} d="$tmp/secret-$1-$4"
  mkdir -p "$d"
  (umask 077; printf '%s\n' "$u" >"$d/url")
  local how_args=(--url-file "$d/url") env_args=()
  [ "$how" = env ] && how_args=(--url-env DLOCK_SECRET_URL) env_args=(DLOCK_SECRET_URL="$u")
  # The test's own environment names the servers, passwords included.
  local unset_args=() v
  for v in $(compgen -e | grep '^DLOCK_TEST_'); do unset_args+=(-u "$v"); done
  env "${unset_args[@]}" "${env_args[@]}" "$DLOCK" run "${how_args[@]}" "cli-test/secret/$$/$how" -- \
    sh -c "echo \$\$ >$d/child.tmp; mv $d/child.tmp $d/child; while [ ! -e $d/stop ]; do sleep 0.05; done" &
  local pid=$!
  await "$d/child"
  local child; child=$(cat "$d/child")
  tr '\0' '\n' <"/proc/$pid/cmdline" >"$d/cmdline"
  tr '\0' '\n' <"/proc/$child/environ" >"$d/environ"
  tr '\0' '\n' <"/proc/$child/cmdline" >>"$d/cmdline"
  touch "$d/stop"
  wait $pid; check "$name ($how): run" 0 $?
  [ -s "$d/cmdline" ] && ! grep -qF -- "$pw" "$d/cmdline"
  check "$name ($how): no password in dlock run's nor the command's argv" 0 $?
  if [ -z "$argv_only" ]; then
    [ -s "$d/environ" ] && ! grep -qF -- "$pw" "$d/environ"
    check "$name ($how): no password in the command's environment" 0 $?
  fi
  if [ "$how" = env ]; then
    grep -q '^DLOCK_SECRET_URL=' "$d/environ"; check "$name ($how): the variable is not passed on" 1 $?
  fi
  grep -q '^DLOCK_URL=.' "$d/environ"; check "$name ($how): DLOCK_URL set" 0 $?
}
if [ -n "${DLOCK_TEST_POSTGRES_URL:-}" ]; then
  pgu=$DLOCK_TEST_POSTGRES_URL
  pgpw=${pgu#*://}; pgpw=${pgpw%%@*}; pgpw=${pgpw#*:}
  if [ -n "$pgpw" ] && [ "$pgpw" != "${pgu#*://}" ]; then
    secret_case postgres "$pgu" "$pgpw" file
    secret_case postgres "$pgu" "$pgpw" env
  else
    echo "# DLOCK_TEST_POSTGRES_URL has no password: the secret case runs on file:// only"
  fi
else
  echo "# DLOCK_TEST_POSTGRES_URL not set: the secret case runs on file:// only"
fi
# file:// URLs carry no password: the directory stands in for one in argv
# (DLOCK_URL names it, rightly).
secret_case file "$fu" "$tmp/urldir" file argv-only
secret_case file "$fu" "$tmp/urldir" env argv-only

# ---- dlock run itself is SIGKILLed ----
# Its command, a grandchild in the command's process group and one that left
# it (setsid) all record SIGTERM and carry on; they must get SIGTERM at once,
# SIGKILL after the grace period, and, on stores that free a lock when its
# holder's descriptors close (file://, PostgreSQL advisory locks), the lock
# must stay held until they are gone.
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
alive() { # alive PID...: 0 if every one runs (zombies do not count)
  local p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || return 1
    case $(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null) in Z | X | "") return 1 ;; esac
  done
}
orphan_case() { # NAME URL KEY [VAR=VALUE...]
  local name=$1 u=$2 key=$3 grace=3
  shift 3
  local d="$tmp/orphan-$name"
  rm -rf "$d"
  mkdir -p "$d"
  local loop='while :; do sleep 0.05; done'
  env "$@" "$DLOCK" run --grace $grace "$u" "$key" -- sh -c "
    trap 'date +%s%N >$d/term.cmd.tmp; mv $d/term.cmd.tmp $d/term.cmd' TERM
    sh -c 'trap \"date +%s%N >$d/term.gc.tmp; mv $d/term.gc.tmp $d/term.gc\" TERM; echo \$\$ >$d/pid.gc.tmp; mv $d/pid.gc.tmp $d/pid.gc; $loop' &
    setsid sh -c 'trap \"date +%s%N >$d/term.ds.tmp; mv $d/term.ds.tmp $d/term.ds\" TERM; echo \$\$ >$d/pid.ds.tmp; mv $d/pid.ds.tmp $d/pid.ds; $loop' &
    echo \$\$ >$d/pid.cmd.tmp; mv $d/pid.cmd.tmp $d/pid.cmd
    $loop" >"$d/out" 2>"$d/err" &
  local pid=$! f
  for f in cmd gc ds; do await "$d/pid.$f"; done
  local pcmd pgc pds
  pcmd=$(cat "$d/pid.cmd") pgc=$(cat "$d/pid.gc") pds=$(cat "$d/pid.ds")
  # The guardian must not keep the caller's descriptors: a caller reading
  # the output to its end would wait for it.
  local gpid leaked=""
  gpid=$(tr -d " " <"/proc/$pid/task/$pid/children" 2>/dev/null)
  for f in /proc/$gpid/fd/*; do
    case $(readlink "$f" 2>/dev/null) in "$d/out" | "$d/err") leaked="$leaked $f" ;; esac
  done
  [ -n "$gpid" ] && [ -z "$leaked" ]
  check "$name: a guardian ($gpid) without the caller's stdout and stderr$leaked" 0 $?

  local start; start=$(date +%s%N)
  kill -KILL $pid
  wait $pid 2>/dev/null
  for f in cmd gc ds; do
    await "$d/term.$f"
    local ms=none
    [ -s "$d/term.$f" ] && ms=$((($(cat "$d/term.$f") - start) / 1000000))
    n=$((n + 1))
    if [ "$ms" != none ] && [ "$ms" -lt 1000 ]; then echo "ok $n - $name: SIGTERM to $f ${ms} ms after dlock run died"
    else echo "not ok $n - $name: $f got no SIGTERM within 1 s ($ms ms)"; fails=$((fails + 1)); fi
  done
  "$DLOCK" run -n "$u" "$key" -- true 2>"$d/busy"
  local rc=$?
  alive "$pcmd" "$pgc" "$pds"
  check "$name: the orphaned command still runs (TERM ignored) during the check" 0 $?
  check "$name: its lock is not handed on while it runs" $EX_CONFLICT $rc
  # Gone after the grace period, not before.
  local t0; t0=$(date +%s%N)
  while alive "$pcmd" || alive "$pgc" || alive "$pds"; do
    [ "$(ms_since "$start")" -gt $((grace * 1000 + 10000)) ] && break
    sleep 0.05
  done
  local gone; gone=$(ms_since "$start")
  alive "$pcmd" || alive "$pgc" || alive "$pds"
  check "$name: command and grandchildren killed after the grace period" 1 $?
  n=$((n + 1))
  if [ "$gone" -ge $((grace * 1000 - 500)) ]; then echo "ok $n - $name: SIGKILL not before the grace period (${gone} ms)"
  else echo "not ok $n - $name: gone after ${gone} ms, grace ${grace} s"; fails=$((fails + 1)); fi
  # And then the lock is free again (the guardian exits last).
  local got=1
  while [ "$(ms_since "$t0")" -lt 10000 ]; do
    "$DLOCK" run -n "$u" "$key" -- true 2>/dev/null && { got=0; break; }
    sleep 0.05
  done
  check "$name: the lock is free once they are gone" 0 $got
  kill -KILL "$pcmd" "$pgc" "$pds" 2>/dev/null
}
mkdir -p "$tmp/orphandir"
orphan_case file "file://$tmp/orphandir" orphan
# Kernels without CONFIG_PROC_CHILDREN have no /proc/PID/task/TID/children:
# the descendants are then found by scanning /proc/*/stat (the variable makes
# dlock behave as if the file were missing).
orphan_case file-procscan "file://$tmp/orphandir" orphan DLOCK_TEST_PROC_SCAN=1
if [ -n "${DLOCK_TEST_POSTGRES_URL:-}" ]; then
  orphan_case postgres "$DLOCK_TEST_POSTGRES_URL" "cli-test/orphan/$$"
else
  echo "# DLOCK_TEST_POSTGRES_URL not set: the orphan case runs on file:// only"
fi

# Wait until a command succeeds, for at most MS milliseconds; 0 if it did.
poll_until() { # poll_until MS COMMAND...
  local t0; t0=$(date +%s%N)
  local ms=$1; shift
  while ! "$@"; do
    [ "$(ms_since "$t0")" -ge "$ms" ] && return 1
    sleep 0.05
  done
}
gone() { ! alive "$1"; }

# ---- dlock run stopped or killed on a store whose locks expire ----
# The guardian knows the lock's validity deadline: it must stop the command
# by then, whether dlock run can no longer renew (stopped: kill -STOP) or is
# dead (SIGKILL) and the grace period would run past the deadline.
# The command records SIGTERM and carries on, so only SIGKILL ends it.
ttl_cmd() { # ttl_cmd DIR: the command's script
  echo "trap 'date +%s%N >$1/term.tmp; mv $1/term.tmp $1/term' TERM; echo \$\$ >$1/pid.tmp; mv $1/pid.tmp $1/pid; while :; do sleep 0.05; done"
}
stopped_case() { # URL KEY
  local u=$1 key=$2 d="$tmp/stopped" ttl=2
  rm -rf "$d"; mkdir -p "$d"
  "$DLOCK" run --ttl ${ttl}s "$u" "$key" -- sh -c "$(ttl_cmd "$d")" 2>"$d/err" &
  local pid=$!
  await "$d/pid"
  local pcmd; pcmd=$(cat "$d/pid")
  local start; start=$(date +%s%N)
  kill -STOP $pid
  # By the deadline (at most the ttl from now) and a generous margin.
  poll_until $((ttl * 1000 + 3000)) test -e "$d/term"
  local ms=none
  [ -s "$d/term" ] && ms=$((($(cat "$d/term") - start) / 1000000))
  n=$((n + 1))
  if [ "$ms" != none ] && [ "$ms" -le $((ttl * 1000 + 3000)) ]; then
    echo "ok $n - stopped dlock run: SIGTERM to the command ${ms} ms after, ttl ${ttl} s"
  else
    echo "not ok $n - stopped dlock run: no SIGTERM to the command within $((ttl + 3)) s ($ms)"
    fails=$((fails + 1))
  fi
  poll_until 3000 gone "$pcmd"
  check "stopped dlock run: the command is killed soon after its SIGTERM" 0 $?
  kill -KILL "$pcmd" 2>/dev/null
  kill -CONT $pid
  # wait reports the stop itself (128+SIGSTOP) until the shell sees the
  # job continue.
  local rc i
  for i in $(seq 1 100); do
    wait $pid; rc=$?
    [ $rc -ne 147 ] && break
    sleep 0.05
  done
  check "stopped dlock run: once continued, it exits with the lock lost" $EX_LOST $rc
  contains "stopped dlock run: message" "$d/err" "lost before the command finished"
}
deadline_case() { # URL KEY
  local u=$1 key=$2 d="$tmp/deadline" ttl=3 grace=30
  rm -rf "$d"; mkdir -p "$d"
  "$DLOCK" run --ttl ${ttl}s --grace ${grace}s "$u" "$key" -- sh -c "$(ttl_cmd "$d")" 2>"$d/err" &
  local pid=$!
  await "$d/pid"
  local pcmd; pcmd=$(cat "$d/pid")
  local start; start=$(date +%s%N)
  kill -KILL $pid
  wait $pid 2>/dev/null
  poll_until $((ttl * 1000 + 3000)) gone "$pcmd"
  local rc=$? ms; ms=$(ms_since "$start")
  n=$((n + 1))
  if [ $rc -eq 0 ]; then
    echo "ok $n - killed dlock run, --grace ${grace}s: command gone by the deadline (${ms} ms, ttl ${ttl} s)"
  else
    echo "not ok $n - killed dlock run, --grace ${grace}s: command still runs after ${ms} ms (ttl ${ttl} s)"
    fails=$((fails + 1))
  fi
  kill -KILL "$pcmd" 2>/dev/null
}
if [ -n "${DLOCK_TEST_REDIS_URL:-}" ]; then
  stopped_case "$DLOCK_TEST_REDIS_URL" "cli-test/stopped/$$"
  deadline_case "$DLOCK_TEST_REDIS_URL" "cli-test/deadline/$$"
else
  echo "# DLOCK_TEST_REDIS_URL not set: the ttl deadline cases do not run"
fi

# ---- the guardian itself is SIGKILLed ----
# What the command started, even a process that left its group (setsid), is
# then handed to dlock run, which must stop it rather than leave it to init.
guardian_case() {
  local d="$tmp/guardian" u="file://$tmp/guardiandir"
  rm -rf "$d"; mkdir -p "$d" "$tmp/guardiandir"
  "$DLOCK" run "$u" g -- sh -c "
    setsid sh -c 'echo \$\$ >$d/pid.ds.tmp; mv $d/pid.ds.tmp $d/pid.ds; while :; do sleep 0.05; done' &
    echo \$\$ >$d/pid.tmp; mv $d/pid.tmp $d/pid; while :; do sleep 0.05; done" 2>"$d/err" &
  local pid=$!
  await "$d/pid" && await "$d/pid.ds"
  local pcmd pds gpid
  pcmd=$(cat "$d/pid") pds=$(cat "$d/pid.ds")
  gpid=$(tr -d " " <"/proc/$pid/task/$pid/children" 2>/dev/null)
  [ -n "$gpid" ] && kill -KILL "$gpid"
  wait $pid
  check "killed guardian: dlock run fails" $EX_INTERNAL $?
  contains "killed guardian: message" "$d/err" "the guardian process died"
  poll_until 5000 gone "$pcmd"; check "killed guardian: the command is stopped" 0 $?
  poll_until 5000 gone "$pds"; check "killed guardian: a process that left its group is stopped" 0 $?
  kill -KILL "$pcmd" "$pds" 2>/dev/null
}
guardian_case

# ---- dlock run -v ----
# While it waits: who holds the lock and for how long it has waited; then
# the acquisition.  The holder goes once a report has been seen.
verbose_case() { # NAME URL KEY TTL-TEXT|held [SECRET]
  local name=$1 u=$2 key=$3 ttl_text=$4 secret=${5:-} d="$tmp/verbose-$1"
  rm -rf "$d"; mkdir -p "$d"
  "$DLOCK" run --label "holder $name" "$u" "$key" -- \
    sh -c "echo \$DLOCK_TOKEN >$d/tok.tmp; mv $d/tok.tmp $d/tok; while [ ! -e $d/stop ]; do sleep 0.05; done" &
  local holder=$!
  await "$d/tok"
  "$DLOCK" run -v --progress 0.2 -w 30 "$u" "$key" -- true 2>"$d/err" &
  local waiter=$!
  poll_until 10000 grep -q "waiting for '$key' for" "$d/err"
  check "$name -v: a report while waiting" 0 $?
  touch "$d/stop"
  wait $holder; check "$name -v: holder" 0 $?
  wait $waiter; check "$name -v: the waiter gets the lock" 0 $?
  if [ "$ttl_text" = held ]; then
    # The store tells no more than that (PostgreSQL advisory locks).
    grep -qE "waiting for '$key' for [0-9]+\.[0-9] s: held$" "$d/err"; check "$name -v: held" 0 $?
  else
    contains "$name -v: the holder's label and token" "$d/err" "held by holder $name (token $(cat "$d/tok")"
  fi
  [ -z "$ttl_text" ] || [ "$ttl_text" = held ] || contains "$name -v: the ttl" "$d/err" "(token $(cat "$d/tok"), $ttl_text"
  [ -z "$secret" ] || no_secret "$name -v" "$d/err" "$secret"
  grep -E "waiting for '$key' for [0-9]+\.[0-9] s: " "$d/err" | head -n 1 >"$d/line"
  [ -s "$d/line" ]; check "$name -v: how long it waited" 0 $?
  contains "$name -v: the acquisition" "$d/err" "dlock: acquired '$key' (token "
  "$DLOCK" run -v -n "$u" "$key" -- true 2>"$d/err2"; check "$name -v -n on a free lock" 0 $?
  grep -q "waiting for" "$d/err2"; check "$name -v -n: no wait, no report" 1 $?
}

# ---- --metrics-textfile ----
# The exposition format as the textfile collector reads it: HELP, then
# TYPE, then the samples of each metric, every sample `name{labels} value`.
prom_check() { # prom_check FILE: prints the first problem, 0 if none
  awk '
    function bad(why) { print FILENAME ":" NR ": " why ": " $0; failed = 1; exit 1 }
    /^# HELP / { if (NF < 4) bad("HELP without text"); help[$3] = 1; next }
    /^# TYPE / {
      if (!($3 in help)) bad("TYPE before its HELP")
      if ($4 != "gauge" && $4 != "counter") bad("unknown type")
      if ($3 in type) bad("TYPE twice")
      type[$3] = $4; next
    }
    /^#/ { bad("stray comment") }
    {
      if ($0 !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\} -?[0-9]+(\.[0-9]+)?$/)
        bad("not name{labels} value")
      name = substr($0, 1, index($0, "{") - 1)
      if (!(name in type)) bad("sample without TYPE")
      if (type[name] == "counter" && name !~ /_total$/) bad("counter not named _total")
      samples++
    }
    END { if (!failed && samples == 0) { print FILENAME ": no samples"; exit 1 } }
  ' "$1"
}
prom_value() { # prom_value FILE NAME: the sample's value
  awk -v n="$2" 'index($0, n "{") == 1 { print $NF }' "$1"
}
prom_labels() { # prom_labels FILE NAME: the sample's labels
  awk -v n="$2" 'index($0, n "{") == 1 { s = substr($0, length(n) + 1); sub(/ [^ ]+$/, "", s); print s }' "$1"
}
metrics_case() { # NAME FILE EXPECTED-EXIT ACQUIRED LOST KEY-LABEL STORE
  local name=$1 f=$2
  prom_check "$f"; check "$name: the file is in the exposition format" 0 $?
  check "$name: dlock_run_exit_code" "$3" "$(prom_value "$f" dlock_run_exit_code)"
  check "$name: dlock_run_acquired" "$4" "$(prom_value "$f" dlock_run_acquired)"
  check "$name: dlock_run_lost" "$5" "$(prom_value "$f" dlock_run_lost)"
  check "$name: labels" "{key=\"$6\",store=\"$7\"}" "$(prom_labels "$f" dlock_run_exit_code)"
  local m
  for m in dlock_run_wait_seconds dlock_run_hold_seconds dlock_run_token dlock_run_renewals_total \
    dlock_run_renewal_failures_total dlock_run_acquire_retries_total dlock_run_end_timestamp_seconds; do
    [ -n "$(prom_value "$f" $m)" ]; check "$name: $m" 0 $?
  done
  ls "$(dirname "$f")" | grep -q '\.tmp-'; check "$name: no temporary file left" 1 $?
}
mdir="$tmp/textfile"
mkdir -p "$mdir" "$tmp/mlocks"
mu="file://$tmp/mlocks"
echo stale >"$mdir/run.prom"
"$DLOCK" run --metrics-textfile "$mdir/run.prom" "$mu" mkey -- sh -c 'echo $DLOCK_TOKEN >'"$tmp/mtok"'; exit 7'
check "metrics: COMMAND's status" 7 $?
metrics_case "metrics, exit 7" "$mdir/run.prom" 7 1 0 mkey file
check "metrics: the token" "$(cat "$tmp/mtok")" "$(prom_value "$mdir/run.prom" dlock_run_token)"
grep -q stale "$mdir/run.prom"; check "metrics: the old file is replaced" 1 $?
# Label values escape backslash and double quote.
"$DLOCK" run --metrics-textfile="$mdir/esc.prom" "$mu" 'a"b\c' -- true; check "metrics: odd key" 0 $?
metrics_case "metrics, odd key" "$mdir/esc.prom" 0 1 0 'a\"b\\c' file
# Not acquired: busy, with -E; then a signal while waiting.
rm -f "$tmp/mheld"
"$DLOCK" run "$mu" mbusy -- sh -c "touch $tmp/mheld; while [ ! -e $tmp/mstop ]; do sleep 0.05; done" &
mholder=$!
await "$tmp/mheld"
"$DLOCK" run -n -E 42 --metrics-textfile "$mdir/busy.prom" "$mu" mbusy -- true 2>/dev/null
check "metrics: busy" 42 $?
metrics_case "metrics, busy" "$mdir/busy.prom" 42 0 0 mbusy file
check "metrics, busy: no token" 0 "$(prom_value "$mdir/busy.prom" dlock_run_token)"
"$DLOCK" run -v --progress 0.2 --metrics-textfile "$mdir/sig.prom" "$mu" mbusy -- true 2>"$tmp/merr" &
mwaiter=$!
poll_until 10000 grep -q "waiting for 'mbusy'" "$tmp/merr"
kill -INT $mwaiter
wait $mwaiter; check "metrics: SIGINT while waiting" 130 $?
metrics_case "metrics, SIGINT while waiting" "$mdir/sig.prom" 130 0 0 mbusy file
wait_s=$(prom_value "$mdir/sig.prom" dlock_run_wait_seconds)
awk -v w="$wait_s" 'BEGIN { exit !(w >= 0.2 && w < 30) }'; check "metrics, SIGINT while waiting: waited $wait_s s" 0 $?
touch "$tmp/mstop"
wait $mholder; check "metrics: the holder" 0 $?
"$DLOCK" run --metrics-textfile "$mdir/unreach.prom" 'redis://:s3cret@127.0.0.1:1/0?connect_timeout=300ms' \
  mkey -- true 2>/dev/null
check "metrics: unreachable store" $EX_UNAVAILABLE $?
metrics_case "metrics, unreachable store" "$mdir/unreach.prom" $EX_UNAVAILABLE 0 0 mkey redis
no_secret "metrics, unreachable store" "$mdir/unreach.prom" s3cret
grep -q '127\.0\.0\.1' "$mdir/unreach.prom"; check "metrics: no host in the file" 1 $?
# Lost while COMMAND ran.
mkdir -p "$tmp/mloss"
rm -f "$tmp/held"
"$DLOCK" run -v --grace 0.5 --metrics-textfile "$mdir/lost.prom" "file://$tmp/mloss" ml -- \
  sh -c "touch $tmp/held; while :; do sleep 0.05; done" 2>"$tmp/lerr" &
mpid=$!
await "$tmp/held"
rm -f "$tmp/mloss/ml.lock"
wait $mpid; check "metrics: lock lost" $EX_LOST $?
metrics_case "metrics, lock lost" "$mdir/lost.prom" $EX_LOST 1 1 ml file
grep -qE "^dlock: file://.*: lock 'ml' \(token [0-9]+\) lost: ." "$tmp/lerr"; check "-v: the loss, with its reason" 0 $?
# A file that cannot be put in place does not change the status: COMMAND
# makes PATH a directory, which rename() cannot replace (even for root).
"$DLOCK" run --metrics-textfile "$mdir/late.prom" "$mu" mkey -- \
  sh -c "mkdir $mdir/late.prom && touch $mdir/late.prom/x; exit 3" 2>"$tmp/err"
check "metrics: cannot be written at the end: COMMAND's status" 3 $?
contains "metrics: cannot be written at the end: message" "$tmp/err" "cannot write metrics to '$mdir/late.prom'"
ls "$mdir" | grep -q '\.tmp-'; check "metrics: cannot be written at the end: no temporary file left" 1 $?

verbose_case file "file://$tmp/locks" "cli-test/verbose/$$" "no ttl)"
if [ -n "${DLOCK_TEST_REDIS_URL:-}" ]; then
  verbose_case redis "$DLOCK_TEST_REDIS_URL" "cli-test/verbose/$$" "ttl "
fi
if [ -n "${DLOCK_TEST_POSTGRES_URL:-}" ] && [ -n "${pgpw:-}" ]; then
  verbose_case postgres "$DLOCK_TEST_POSTGRES_URL" "cli-test/verbose/$$" held "$pgpw"
fi

# ---- the store fails under dlock run ----
# Through a proxy the test controls (tools/test-cli-proxy.py): each store
# failure retried is reported with -v, and a wait that ends with the store
# silent is the store's failure, not a busy lock.
proxies=""
trap 'for p in $proxies; do kill $p 2>/dev/null; done; rm -rf "$tmp"' EXIT
proxy_start() { # proxy_start DIR PORT: a proxy to 127.0.0.1:PORT; sets $proxy
  pdir=$1
  mkdir -p "$pdir"
  python3 "$(dirname "$0")/test-cli-proxy.py" 127.0.0.1 "$2" "$pdir" &
  proxy=$!
  proxies="$proxies $proxy"
  await "$pdir/port"
}
proxy_mode() { echo "$1" >"$pdir/mode.tmp"; mv "$pdir/mode.tmp" "$pdir/mode"; kill -USR1 "$proxy"; }
silent_case() { # NAME DIRECT-URL PROXIED-URL
  local name=$1 d="$tmp/silent-$1" key="cli-test/silent/$$"
  mkdir -p "$d"
  "$DLOCK" run "$2" "$key" -- sh -c "touch $d/held; while [ ! -e $d/stop ]; do sleep 0.05; done" &
  local holder=$!
  await "$d/held"
  "$DLOCK" run -v --progress 0.2 -w 3 "$3" "$key" -- true 2>"$d/err" &
  local waiter=$!
  poll_until 10000 grep -q "waiting for '$key' for" "$d/err"
  proxy_mode stall
  wait $waiter; check "$name: the wait runs out, the store silent" $EX_UNAVAILABLE $?
  grep -q "is held" "$d/err"; check "$name: the wait runs out, the store silent: not called busy" 1 $?
  proxy_mode up
  touch "$d/stop"
  wait $holder; check "$name: the wait runs out, the store silent: holder" 0 $?
}
if [ -n "${DLOCK_TEST_REDIS_URL:-}" ] && command -v python3 >/dev/null; then
  rport=${DLOCK_TEST_REDIS_URL##*:}; rport=${rport%%/*}
  rdb=${DLOCK_TEST_REDIS_URL##*/}; rdb=${rdb%%\?*}
  proxy_start "$tmp/proxy" "$rport"
  pu="redis://127.0.0.1:$(cat "$pdir/port")/${rdb:-0}?timeout=500ms&connect_timeout=500ms"

  # Renewals fail for a while; the lock outlives it.
  d="$tmp/renewfail"; mkdir -p "$d"
  key="cli-test/renewfail/$$"
  "$DLOCK" run -v --ttl 6 "$pu" "$key" -- \
    sh -c "touch $d/held; while [ ! -e $d/stop ]; do sleep 0.05; done" 2>"$d/err" &
  pid=$!
  await "$d/held"
  proxy_mode down
  poll_until 15000 grep -q "renewal of '$key' failed (DLOCK_E" "$d/err"
  check "renewal fails: -v says so" 0 $?
  proxy_mode up
  touch "$d/stop"
  wait $pid; check "renewal fails for a while: the run succeeds" 0 $?
  n_lines=$(grep -c "renewal of '$key' failed" "$d/err")
  n=$((n + 1))
  if [ "$n_lines" -ge 1 ] && ! grep -q "lost" "$d/err"; then echo "ok $n - renewal fails: $n_lines line(s), no loss"
  else echo "not ok $n - renewal fails: $(cat "$d/err")"; fails=$((fails + 1)); fi

  # The store goes away during a wait, then comes back.
  d="$tmp/acqfail"; mkdir -p "$d"
  key="cli-test/acqfail/$$"
  "$DLOCK" run "$DLOCK_TEST_REDIS_URL" "$key" -- \
    sh -c "touch $d/held; while [ ! -e $d/stop ]; do sleep 0.05; done" &
  holder=$!
  await "$d/held"
  "$DLOCK" run -v --progress 0.2 -w 60 "$pu" "$key" -- true 2>"$d/err" &
  waiter=$!
  poll_until 10000 grep -q "waiting for '$key' for" "$d/err"
  proxy_mode down
  poll_until 15000 grep -q "acquire of '$key' failed (DLOCK_E.*); attempt " "$d/err"
  check "the store fails during a wait: -v says so" 0 $?
  poll_until 15000 grep -q "waiting for '$key' for .*cannot ask the store" "$d/err"
  check "the store fails during a wait: the report says why" 0 $?
  proxy_mode up
  touch "$d/stop"
  wait $holder; check "the store fails during a wait: holder" 0 $?
  wait $waiter; check "the store fails during a wait, then comes back: the lock is taken" 0 $?

  # The wait runs out while the store does not answer.
  silent_case redis "$DLOCK_TEST_REDIS_URL" "$pu"

  # ... and dlock returns within the wait plus the one request in flight
  # at its end, plus the one request closing the client may wait for (the
  # give-back of that attempt): not a request timeout more for each of
  # unsubscribing and giving back again.
  d="$tmp/overrun"; mkdir -p "$d"
  key="cli-test/overrun/$$"
  slow="${pu%%\?*}?timeout=3s&connect_timeout=3s"
  "$DLOCK" run "$DLOCK_TEST_REDIS_URL" "$key" -- \
    sh -c "touch $d/held; while [ ! -e $d/stop ]; do sleep 0.05; done" &
  holder=$!
  await "$d/held"
  t0=$(date +%s%N)
  "$DLOCK" run -v --progress 0.2 -w 1 "$slow" "$key" -- true 2>"$d/err" &
  waiter=$!
  poll_until 10000 grep -q "waiting for '$key' for" "$d/err"
  proxy_mode stall
  wait $waiter; check "a silent store at the deadline: unreachable" $EX_UNAVAILABLE $?
  took=$((($(date +%s%N) - t0) / 1000000))
  n=$((n + 1))
  # 1 s of wait + 2 x 3 s, and 1.5 s for a loaded machine; it was 13 s.
  if [ "$took" -lt 8500 ]; then echo "ok $n - a silent store at the deadline: returned in $took ms"
  else echo "not ok $n - a silent store at the deadline: returned after $took ms"; fails=$((fails + 1)); fi
  proxy_mode up
  touch "$d/stop"
  wait $holder; check "a silent store at the deadline: holder" 0 $?
  kill $proxy 2>/dev/null
  wait $proxy 2>/dev/null
else
  echo "# DLOCK_TEST_REDIS_URL or python3 missing: store failures under dlock run are not checked"
fi
# etcd answers a request that never gets a reply with DLOCK_ETIMEDOUT, as it
# does a wait that ran out: only the store's silence after it tells them
# apart.
if [ -n "${DLOCK_TEST_ETCD_URL:-}" ] && command -v python3 >/dev/null; then
  eport=${DLOCK_TEST_ETCD_URL#etcd://}; eport=${eport#*:}; eport=${eport%%[/?]*}
  proxy_start "$tmp/proxy-etcd" "$eport"
  silent_case etcd "$DLOCK_TEST_ETCD_URL" \
    "etcd://127.0.0.1:$(cat "$pdir/port")?timeout=500ms&connect_timeout=500ms"
else
  echo "# DLOCK_TEST_ETCD_URL (etcd://HOST:PORT) or python3 missing: a silent etcd is not checked"
fi

# ---- list and break ----
# admin_cases NAME URL: list shows a dlock run holder, break asks unless
# --yes, breaks only the holder shown, and the broken dlock run stops its
# command and exits 124.
admin_cases() {
  local name="$1" u="$2" k="cli-test/$$/admin-$RANDOM" held="$tmp/admin-held" holder tok
  rm -f "$held"
  "$DLOCK" run -n --ttl 3 --label "cli admin" "$u" "$k/a" -- sh -c ': >"$1"; sleep 60' sh "$held" \
    2>"$tmp/admin-run-err" &
  holder=$!
  await "$held" || { check "$name: a holder to list" held none; kill $holder; wait $holder; return; }
  "$DLOCK" list "$u" "$k/" >"$tmp/list"; check "$name: list" 0 $?
  check "$name: list: a header and one lock" 2 "$(wc -l <"$tmp/list")"
  contains "$name: list: the holder's label" "$tmp/list" "cli admin"
  contains "$name: list: the key" "$tmp/list" "$k/a"
  "$DLOCK" list "$u" "$k/nothing" >"$tmp/list"; check "$name: list, no match" 0 $?
  check "$name: list, no match: the header only" 1 "$(wc -l <"$tmp/list")"
  "$DLOCK" list --json "$u" "$k/" >"$tmp/list.json"; check "$name: list --json" 0 $?
  tok=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(len(v), v[0]["label"], v[0]["token"])' "$tmp/list.json")
  check "$name: list --json: one lock, its label" "1 cli admin" "${tok% *}"
  tok=${tok##* }
  "$DLOCK" break "$u" "$k/a" </dev/null >/dev/null 2>"$tmp/err"
  check "$name: break without a terminal or --yes" $EX_USAGE $?
  # On a terminal (script(1) gives it one) break asks, and only "y" or
  # "yes" breaks.
  if command -v script >/dev/null; then
    printf 'n\n' | script -qec "'$DLOCK' break '$u' '$k/a'" /dev/null >"$tmp/out" 2>&1
    check "$name: break answered no on a terminal" $EX_CONFLICT $?
    contains "$name: break asks first" "$tmp/out" "Break it?"
    kill -0 $holder 2>/dev/null; check "$name: the holder runs on after a no" 0 $?
  else
    echo "# script(1) missing: the question on a terminal is not checked"
  fi
  "$DLOCK" break --yes --token $((tok + 1)) "$u" "$k/a" >/dev/null 2>"$tmp/err"
  check "$name: break --token of another holder" $EX_CONFLICT $?
  contains "$name: break --token of another holder: nothing broken" "$tmp/err" "nothing broken"
  kill -0 $holder 2>/dev/null; check "$name: the holder still runs" 0 $?
  "$DLOCK" break --yes --token "$tok" "$u" "$k/a" >"$tmp/out" 2>"$tmp/err"
  check "$name: break --yes" 0 $?
  contains "$name: break prints what it broke" "$tmp/out" "token $tok"
  wait $holder; check "$name: the broken dlock run exits 124" $EX_LOST $?
  contains "$name: the broken dlock run says it lost the lock" "$tmp/admin-run-err" "lost"
  "$DLOCK" break --yes "$u" "$k/a" >/dev/null 2>"$tmp/err"
  check "$name: break of a free key" 0 $?
  contains "$name: break of a free key says so" "$tmp/err" "nothing to break"
  "$DLOCK" break --yes "$u" "" >/dev/null 2>&1; check "$name: break of an empty key" $EX_USAGE $?
}
admin_cases file "file://$tmp/locks"
# Text a holder chose reaches the operator's terminal escaped: a C1 control
# (CSI), a direction override, a byte of no UTF-8 sequence.
rm -f "$tmp/admin-held"
"$DLOCK" run -n --label "$(printf 'l\xe2\x80\xae\xc2\x9bx\xffy')" "file://$tmp/locks" "esc/$$" -- \
  sh -c ': >"$1"; sleep 30' sh "$tmp/admin-held" &
esc_holder=$!
if await "$tmp/admin-held"; then
  "$DLOCK" list "file://$tmp/locks" "esc/" >"$tmp/list"; check "list of an awkward label" 0 $?
  contains "list: a direction override is escaped" "$tmp/list" 'l\u202e\u009bx\xffy'
  n=$((n + 1))
  if LC_ALL=C grep -q "$(printf '\xe2\x80\xae')" "$tmp/list"; then
    echo "not ok $n - list: the raw override reached the terminal"; fails=$((fails + 1))
  else echo "ok $n - list: no raw override"; fi
fi
kill $esc_holder 2>/dev/null; wait $esc_holder 2>/dev/null
if [ -n "${DLOCK_TEST_REDIS_URL:-}" ]; then
  admin_cases redis "$DLOCK_TEST_REDIS_URL"
else
  echo "# DLOCK_TEST_REDIS_URL not set: list and break are not checked on Redis"
fi
"$DLOCK" list "file://$tmp/no/such/dir" >/dev/null 2>&1
check "list on a missing directory: the store is unavailable" $EX_UNAVAILABLE $?
"$DLOCK" list >/dev/null 2>&1; check "list without a URL" $EX_USAGE $?
"$DLOCK" break --token x "file://$tmp/locks" k >/dev/null 2>&1; check "break --token x" $EX_USAGE $?
"$DLOCK" list "mem://" a b >/dev/null 2>&1; check "list with two prefixes" $EX_USAGE $?

echo "1..$n"
[ $fails -eq 0 ]
