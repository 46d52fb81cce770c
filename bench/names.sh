#!/usr/bin/env bash
# bench/names.sh BUILD_DIR URL N GRACE_SECONDS: what a store keeps per name.
# Acquires and releases N distinct names (dlock-bench-names), and prints the
# store's state (tests/conformance/store-state.sh) before, right after, and
# GRACE_SECONDS later, then once more after 100 more names (stores that
# clean up as clients work, such as PostgreSQL lease mode, need a client).
set -euo pipefail
[[ $# -eq 4 ]] || { echo "usage: $0 BUILD_DIR URL N GRACE_SECONDS" >&2; exit 2; }
build="$1" url="$2" n="$3" grace="$4"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state() { "$here/tests/conformance/store-state.sh" "$url"; }
run="names-$$-$RANDOM/"
echo "before:        $(state)"
"$build/bench/dlock-bench-names" "$url" "$n" "$run"
echo "right after:   $(state)"
sleep "$grace" # the store's own expiry is what is measured
echo "${grace}s later: $(state)"
"$build/bench/dlock-bench-names" "$url" 100 "${run}more/" >/dev/null
echo "100 names on:  $(state)"
