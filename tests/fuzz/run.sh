#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR SECONDS_PER_HARNESS
#
# Runs every libFuzzer harness of a -Dfuzz=enabled build for a bounded
# time, each on a copy of its committed seed corpus (the committed one is
# never written to), with leak detection on and UBSan halting at its first
# report.  Prints each harness's executions; exits non-zero when a harness
# is missing, did not run to its time limit, or reported a crash, a leak,
# undefined behaviour or an oracle failure.  Reproducers and logs of failed
# harnesses are kept in the directory named at the end.  FUZZ_JOBS runs that
# many harnesses at once.
set -uo pipefail

usage() { echo "usage: $0 BUILD_DIR SECONDS_PER_HARNESS" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
build="$1"
secs="$2"
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || usage
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$build/tests/fuzz"

# Every harness a build with all backends has; FUZZ_HARNESSES replaces
# this list.
harnesses=(fuzz_url fuzz_redact fuzz_err_scrub fuzz_duration fuzz_file_record fuzz_keys fuzz_redis_reply
           fuzz_zk_children fuzz_pg_values fuzz_pg_message fuzz_pg_first_reply fuzz_etcd_json fuzz_etcd_grpc fuzz_consul_json)
if [[ -n "${FUZZ_HARNESSES:-}" ]]; then
    read -r -a harnesses <<<"$FUZZ_HARNESSES"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/dlock-fuzz.XXXXXX")"
keep=0
# Harnesses still running (the script stopped by a signal) go first, so
# none writes into a directory being removed.
stop_jobs() {
    local p
    for p in $(jobs -p); do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}
cleanup() {
    stop_jobs
    if [[ $keep -eq 0 ]]; then rm -rf -- "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$here/../lsan.supp:${LSAN_OPTIONS:-}"

# run_one H: runs harness H and writes its table row, and the lines of its
# report when it failed, to $work/H.row, and $work/H.ok only when it passed.
run_one() {
    local h="$1" exe="$bin/$1" corpus="$work/$1/corpus" log="$work/$1/log" rc execs result
    if [[ ! -x "$exe" ]]; then
        printf '%-20s %14s  %s\n' "$h" - "MISSING ($exe)" >"$work/$h.row"
        return 1
    fi
    mkdir -p "$corpus" "$work/$h/artifacts"
    if [[ -d "$here/corpus/$h" ]]; then
        cp -- "$here/corpus/$h"/* "$corpus"/ 2>/dev/null || true
    fi
    "$exe" -max_total_time="$secs" -timeout=10 -detect_leaks=1 -print_final_stats=1 \
        -artifact_prefix="$work/$h/artifacts/" "$corpus" >"$log" 2>&1 &
    local fuzzer=$!
    # Stopped by stop_jobs: the harness goes too, before this job ends.
    trap 'kill "$fuzzer" 2>/dev/null; wait "$fuzzer"; exit 143' TERM
    wait "$fuzzer"
    rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    result=ok
    if [[ $rc -ne 0 ]]; then
        result="FAILED (exit $rc)"
    elif [[ -z "$execs" || "$execs" -eq 0 ]] || ! grep -q '^Done [0-9]* runs' "$log"; then
        result="FAILED (did not run)"
    elif grep -qE 'runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|fuzz oracle failed' "$log"; then
        result="FAILED (report in log)"
    elif compgen -G "$work/$h/artifacts/*" >/dev/null; then
        result="FAILED (left an artifact)"
    fi
    printf '%-20s %14s  %s\n' "$h" "${execs:--}" "$result" >"$work/$h.row"
    if [[ "$result" != ok ]]; then
        grep -aE 'fuzz oracle failed|runtime error:|ERROR: |SUMMARY: ' "$log" | head -n 5 | cut -c1-300 |
            sed 's/^/    /' >>"$work/$h.row"
        return 1
    fi
    : >"$work/$h.ok"
}

# FUZZ_JOBS harnesses at a time (default 1), each still on one core for its
# full time; the table keeps the list's order.
jobs="${FUZZ_JOBS:-1}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "FUZZ_JOBS must be a positive number" >&2; exit 2; }
wait_one="wait -n"
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 3))); then
    wait_one=wait # no wait -n before bash 4.3: the whole group
fi
# One run per harness: two of one name would share a corpus and a row.
declare -A seen=()
for h in "${harnesses[@]}"; do
    [[ -z "${seen[$h]:-}" ]] || { echo "fuzz: $h named twice" >&2; exit 2; }
    seen[$h]=1
done
running=0
for h in "${harnesses[@]}"; do
    if ((running >= jobs)); then
        if [[ $wait_one == wait ]]; then
            wait
            running=0
        else
            wait -n || true
            running=$((running - 1))
        fi
    fi
    run_one "$h" &
    running=$((running + 1))
done
wait
failed=()
printf '%-20s %14s  %s\n' harness executions result
for h in "${harnesses[@]}"; do
    cat -- "$work/$h.row" 2>/dev/null || printf '%-20s %14s  %s\n' "$h" - "FAILED (no result)"
    if [[ ! -f "$work/$h.ok" ]]; then
        failed+=("$h")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    keep=1
    echo "fuzz: ${#failed[@]} harness(es) failed: ${failed[*]}; logs and reproducers in $work" >&2
    exit 1
fi
echo "fuzz: ${#harnesses[@]} harnesses ran ${secs}s each, no findings"
