#!/usr/bin/env bash
# tests/readme/check.sh BUILD_DIR
#
# Proves that the README's C example works for someone who only has the
# installed library:
#   1. takes the program out of README.md (between the
#      "<!-- readme-example:begin -->" and "<!-- readme-example:end -->"
#      markers, inside a ```c fence);
#   2. installs BUILD_DIR with `meson install --destdir` into a temporary
#      directory;
#   3. checks that the installed dlock.pc points into that directory (it is
#      relocatable), so that nothing comes from the source tree or from
#      another installation;
#   4. compiles the example with `pkg-config --cflags --libs dlock` only
#      (PKG_CONFIG_PATH set to the staged pkgconfig directory, no include
#      path of the source tree, run from outside it), and builds it a second
#      time from a one-line meson project that uses dependency('dlock');
#   5. runs it on file://: it must print the lock's fencing token and exit
#      0, a second run must get a greater token, and a run while the staged
#      `dlock run` holds the key must wait its 5 s, say so and exit 1.
#
# Exit status 0 when all of it holds, 1 otherwise, 2 on bad usage.
set -euo pipefail

usage() {
    printf 'usage: %s BUILD_DIR\n' "${0##*/}" >&2
    exit 2
}
(($# == 1)) || usage
[[ -f "$1/meson-private/coredata.dat" ]] || {
    printf '%s: %s is not a configured meson build directory\n' "${0##*/}" "$1" >&2
    exit 2
}
BUILD="$(cd "$1" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
README="$ROOT/README.md"

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
ok() { printf 'ok: %s\n' "$*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dlock-readme.XXXXXX")"
HOLDER=""
cleanup() {
    if [[ -n "$HOLDER" ]]; then
        kill -TERM "$HOLDER" 2>/dev/null || true
        wait "$HOLDER" 2>/dev/null || true
    fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT

# ---- 1. the example
awk '
    /<!-- readme-example:begin -->/ { inside = 1; next }
    /<!-- readme-example:end -->/   { inside = 0; next }
    inside && /^```c$/              { code = 1; next }
    inside && code && /^```$/       { code = 0; blocks++; next }
    inside && code                  { print }
    END                             { exit blocks == 1 ? 0 : 1 }
' "$README" >"$WORK/hello-lock.c" ||
    fail "README.md must hold exactly one \`\`\`c block between the readme-example markers"
grep -q 'int main' "$WORK/hello-lock.c" || fail "the README example has no main()"
ok "extracted the example from README.md ($(wc -l <"$WORK/hello-lock.c") lines)"

# ---- 2. install
DEST="$WORK/dest"
meson install -C "$BUILD" --destdir "$DEST" --quiet >"$WORK/install.log" 2>&1 || {
    tail -n 30 "$WORK/install.log" >&2
    fail "meson install -C $BUILD --destdir failed (output above)"
}
pc="$(find "$DEST" -name dlock.pc -print -quit)"
[[ -n "$pc" ]] || fail "meson install put no dlock.pc under $DEST"
ok "installed into $DEST"

# ---- 3. the installed dlock.pc
PKG_CONFIG_PATH="$(dirname "$pc")"
export PKG_CONFIG_PATH
unset PKG_CONFIG_SYSROOT_DIR CPATH C_INCLUDE_PATH LIBRARY_PATH
inside_dest() { # PATH: succeeds if PATH, resolved, lies under $DEST
    local p
    p="$(realpath -m -- "$1")"
    [[ "$p" == "$DEST"/* ]]
}
includedir="$(pkg-config --variable=includedir dlock)"
libdir="$(pkg-config --variable=libdir dlock)"
prefix="$(pkg-config --variable=prefix dlock)"
if ! inside_dest "$includedir" || ! inside_dest "$libdir"; then
    fail "dlock.pc points outside the staged tree (includedir=$includedir," \
         "libdir=$libdir): it must be relocatable (pkgconfig.relocatable=true;" \
         "a build dir configured before that option was the default keeps" \
         "it off: meson configure $BUILD -Dpkgconfig.relocatable=true)"
fi
[[ -f "$includedir/dlock/dlock.h" ]] || fail "no dlock/dlock.h under $includedir"
cflags="$(pkg-config --cflags dlock)"
case " $cflags " in
*" -I$ROOT"* | *" -I$BUILD"*) fail "pkg-config --cflags names the source or build tree: $cflags" ;;
esac
ok "dlock.pc is relocatable: -I and -L point into the staged tree"

# ---- 4. compile against the installed library only
cd "$WORK"
CC="${CC:-cc}"
# shellcheck disable=SC2046 # pkg-config's output is a list of words
"$CC" -std=c11 -Wall -Wextra -Werror -o hello-lock hello-lock.c \
    $(pkg-config --cflags --libs dlock) -Wl,-rpath,"$libdir" ||
    fail "the README example does not compile with pkg-config --cflags --libs dlock"
so="$(ldd ./hello-lock | awk '$1 ~ /^libdlock\.so/ { print $3 }')"
if [[ -z "$so" ]] || ! inside_dest "$so"; then
    fail "hello-lock does not load the staged libdlock (ldd: ${so:-none})"
fi
ok "compiled with pkg-config only; it loads $(realpath -- "$so")"

mkdir -p "$WORK/consumer"
cp hello-lock.c "$WORK/consumer/"
cat >"$WORK/consumer/meson.build" <<'EOF'
project('hello-lock', 'c', default_options: ['c_std=c11'])
executable('hello-lock', 'hello-lock.c', dependencies: dependency('dlock'))
EOF
{ meson setup "$WORK/consumer/build" "$WORK/consumer" && ninja -C "$WORK/consumer/build"; } \
    >"$WORK/consumer.log" 2>&1 || {
    tail -n 30 "$WORK/consumer.log" >&2
    fail "a meson project with dependency('dlock') does not build (output above)"
}
so="$(ldd "$WORK/consumer/build/hello-lock" | awk '$1 ~ /^libdlock\.so/ { print $3 }')"
if [[ -z "$so" ]] || ! inside_dest "$so"; then
    fail "the meson-built hello-lock does not load the staged libdlock (ldd: ${so:-none})"
fi
ok "built by a meson project with dependency('dlock')"

# ---- 5. run it on file://
URL="file://$WORK/locks"
token_of() { sed -n 's/^holding jobs\/42 with fencing token \([0-9][0-9]*\)$/\1/p' "$1"; }

./hello-lock "$URL" >out1 2>err1 || fail "hello-lock $URL exited $?: $(cat err1)"
t1="$(token_of out1)"
[[ -n "$t1" ]] || fail "hello-lock printed '$(cat out1)', not 'holding jobs/42 with fencing token N'"
"$WORK/consumer/build/hello-lock" "$URL" >out2 2>err2 || fail "the second run exited $?: $(cat err2)"
t2="$(token_of out2)"
if [[ -z "$t2" ]] || ((t2 <= t1)); then
    fail "the second token (${t2:-none}) is not greater than the first ($t1)"
fi
ok "on file://: exit 0, fencing tokens $t1 then $t2"

dlock="$prefix/bin/dlock"
[[ -x "$dlock" ]] || fail "no dlock command under $prefix/bin"
# shellcheck disable=SC2016 # $0 is the inner shell's
"$dlock" run -n "$URL" jobs/42 -- sh -c 'touch "$0"; exec sleep 60' "$WORK/held" &
HOLDER=$!
for _ in $(seq 100); do
    [[ -e "$WORK/held" ]] && break
    kill -0 "$HOLDER" 2>/dev/null || fail "dlock run could not take jobs/42"
    sleep 0.1
done
[[ -e "$WORK/held" ]] || fail "dlock run did not start its command within 10 s"
start=$SECONDS
rc=0
./hello-lock "$URL" >out3 2>err3 || rc=$?
waited=$((SECONDS - start))
((rc == 1)) || fail "hello-lock exited $rc while dlock run held jobs/42 (want 1): $(cat out3 err3)"
grep -q 'stayed busy for 5 s' err3 || fail "hello-lock said '$(cat err3)', not that jobs/42 stayed busy"
((waited >= 4)) || fail "hello-lock gave up after ${waited} s, not after its 5 s wait"
kill -TERM "$HOLDER"
wait "$HOLDER" 2>/dev/null || true
HOLDER=""
ok "while dlock run holds jobs/42: waited ${waited} s, said so, exit 1"
ok "README example: all checks passed"
