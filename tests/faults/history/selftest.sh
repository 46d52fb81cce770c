#!/bin/sh
# Runs every history under cases/ through dlock-history and compares the
# outcome with the case's first line:
#   # expect: pass            exit 0, no violation line
#   # expect: fail a [d ...]  exit 1, violation lines of exactly these rules
#   # expect: error           exit 2
# Optional lines: "# args: ..." (options before the files), "# check: TEXT"
# (TEXT must appear in the output) and "# file: NAME", which starts a new
# file of the run, so one case can stand for several files given in the
# order they appear.
set -u
bin=${1:?usage: selftest.sh DLOCK_HISTORY_BINARY}
cases=$(dirname "$0")/cases
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
failed=0
total=0

for c in "$cases"/*.hist; do
  name=$(basename "$c" .hist)
  total=$((total + 1))
  expect=$(sed -n '1s/^# expect: *//p' "$c")
  args=$(sed -n 's/^# args: *//p' "$c")
  dir=$tmp/$name
  mkdir -p "$dir"
  if grep -q '^# file: ' "$c"; then
    awk -v d="$dir" '
      /^# file: / { f = d "/" $3; print f > (d "/.files"); next }
      f != "" { print > f }' "$c"
    files=$(cat "$dir/.files")
  else
    files=$c
  fi
  # shellcheck disable=SC2086 # args and files are word lists on purpose
  "$bin" $args $files >"$dir/out" 2>&1
  rc=$?
  got=$(sed -n 's/^violation \([a-e]\):.*/\1/p' "$dir/out" | sort -u | tr '\n' ' ')
  why=
  case $expect in
    pass) [ "$rc" -eq 0 ] && [ -z "$got" ] || why="wanted pass, got exit $rc, rules '$got'" ;;
    error) [ "$rc" -eq 2 ] || why="wanted exit 2, got exit $rc" ;;
    fail\ *)
      want=$(printf '%s\n' ${expect#fail } | sort -u | tr '\n' ' ')
      [ "$rc" -eq 1 ] && [ "$got" = "$want" ] ||
        why="wanted exit 1 with rules '$want', got exit $rc, rules '$got'" ;;
    *) why="first line must be '# expect: pass|fail RULES|error'" ;;
  esac
  if [ -z "$why" ]; then
    while IFS= read -r text; do
      grep -qF -- "$text" "$dir/out" || { why="output lacks: $text"; break; }
    done <<CHECKS
$(sed -n 's/^# check: *//p' "$c")
CHECKS
  fi
  if [ -n "$why" ]; then
    failed=$((failed + 1))
    echo "FAIL $name: $why"
    sed 's/^/    /' "$dir/out"
  else
    echo "ok   $name ($expect)"
  fi
done

echo "history selftest: $((total - failed))/$total cases as expected"
[ "$failed" -eq 0 ] && [ "$total" -gt 0 ]
