#!/usr/bin/env bash
# Runs each example program against one lock store with its outcome checked:
#
#   examples/check.sh BUILD_DIR URL
#
#   cron      4 nodes started together over 4 one-second periods: exactly 4
#             runs, one per period, each by one node, as the ledger and the
#             nodes' own output agree
#   cache     6 readers of an expired entry, twice: with a 300 ms bound
#             (shorter than the 2 s recompute: the others serve the stale
#             value) and with an 8 s bound (they get the new one); each time
#             exactly one recompute, a value for every reader, nobody waiting
#             past its bound (+1 s for process and store overheads)
#   transfer  3 processes x 40 random transfers between 3 accounts, next to a
#             stale writer: the sum is unchanged, every transfer accounted
#             for, and the stale write refused by the account
#
# Prints PASS/FAIL per check; exits 1 if any failed, 2 on bad arguments.
# Each program run is bounded by `timeout`, so a hang is a failure too.
set -euo pipefail

if (($# != 2)); then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
fi
BUILD=$1
URL=$2
for ex in cron cache transfer; do
    if [[ ! -x "$BUILD/examples/dlock-example-$ex" ]]; then
        echo "check.sh: $BUILD/examples/dlock-example-$ex is not built" >&2
        exit 2
    fi
done

# The URL may carry a password: show it only with userinfo and secret-looking
# parameters hidden (the programs themselves print dlock_url_redact()'s form).
SHOWN=$(sed -E 's#(://[^/?@]*:)[^/?]*@#\1***@#; s#([?&][^=&]*(pass|pwd|token|secret|key|auth|cred)[^=&]*=)[^&]*#\1***#Ig' <<<"$URL")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlock-examples-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILED=0
LIMIT=60 # seconds any one program may run

pass() { echo "PASS $*"; }
fail() {
    echo "FAIL $*"
    FAILED=1
}
ex() { # NAME ARGS...: run an example, bounded in time
    local name=$1
    shift
    timeout "$LIMIT" "$BUILD/examples/dlock-example-$name" "$@"
}
show_errors() { # FILES...: what the programs said on stderr, for a failure
    local f
    for f in "$@"; do
        [[ -s "$f" ]] && sed "s#^#  $(basename "$f"): #" "$f"
    done
    return 0
}

echo "examples on $SHOWN"

# ---------------------------------------------------------------- cron
check_cron() {
    local dir=$WORK/cron nodes=4 periods=4 job i rc bad=0
    mkdir -p "$dir"
    # A fresh job name, so slots of an earlier run of this script on the same
    # store are never in the way.
    job="check-$$-$RANDOM"
    # Every node covers the same 4 slots: those starting at or after START.
    local start=$(($(date +%s) + 2))
    local pids=()
    for ((i = 0; i < nodes; i++)); do
        ex cron "$URL" --periods "$periods" --start "$start" --work-ms 100 --dir "$dir" "$job" 1 \
            >"$dir/out.$i" 2>"$dir/err.$i" &
        pids+=($!)
    done
    for ((i = 0; i < nodes; i++)); do
        rc=0
        wait "${pids[$i]}" || rc=$?
        if ((rc != 0)); then
            fail "cron: node $i exited $rc"
            bad=1
        fi
    done
    local ledger=$dir/$job.runs
    local runs slots want
    touch "$ledger" # no run at all leaves no ledger
    runs=$(wc -l <"$ledger")
    slots=$(awk '{print $2}' "$ledger" | sort -n | tr '\n' ' ')
    want=$(seq "$start" $((start + periods - 1)) | tr '\n' ' ')
    if ((runs != periods)) || [[ "$slots" != "$want" ]]; then
        fail "cron: ledger has $runs runs for slots [ $slots], want one each for [ $want]"
        bad=1
    fi
    # The nodes' own reports must tell the same story: each slot run by
    # exactly one node, and the one the ledger names.
    local claimed
    claimed=$(cat "$dir"/out.* | grep -c ': ran, token' || true)
    if ((claimed != periods)); then
        fail "cron: the nodes report $claimed runs, want $periods"
        bad=1
    fi
    local slot token
    while read -r _ slot _ token _; do
        if ! grep -q "^slot $slot: ran, token $token\$" "$dir"/out.*; then
            fail "cron: ledger's run of slot $slot (token $token) reported by no node"
            bad=1
        fi
    done <"$ledger"
    if ((bad)); then
        show_errors "$dir"/err.*
    else
        pass "cron: $nodes nodes x $periods periods: $runs runs, one per slot, each by one node"
    fi
}

# ---------------------------------------------------------------- cache
# readers BOUND COMPUTE: start 6 readers of the entry at once; their reports
# go to $dir/read.N.
readers() {
    local bound=$1 compute=$2 i rc pids=()
    rm -f "$dir"/read.* "$dir"/rerr.*
    for ((i = 0; i < 6; i++)); do
        ex cache "$URL" --wait-ms "$bound" --compute-ms "$compute" "$dir" entry \
            >"$dir/read.$i" 2>"$dir/rerr.$i" &
        pids+=($!)
    done
    for ((i = 0; i < 6; i++)); do
        rc=0
        wait "${pids[$i]}" || rc=$?
        if ((rc != 0)); then
            fail "cache: reader $i exited $rc"
            bad=1
        fi
    done
}

# judge LABEL BOUND OLD NEW OTHERS: one recompute (to NEW) in this round,
# every reader served OLD or NEW within BOUND + 1 s, and at least one reader
# did what OTHERS names (stale: served OLD after its bound; waited: got NEW
# from another reader's recompute).
judge() {
    local label=$1 bound=$2 old=$3 new=$4 others=$5
    local served recomputed count_others late wrong
    served=$(cat "$dir"/read.* | grep -c '^value ' || true)
    recomputed=$(cat "$dir"/read.* | grep -c ' source recomputed ' || true)
    count_others=$(cat "$dir"/read.* | grep -c " source $others " || true)
    late=$(cat "$dir"/read.* | awk -v b="$bound" '$6 > b + 1000' | wc -l)
    wrong=$(cat "$dir"/read.* | awk -v o="$old" -v n="$new" \
        '($4 == "stale" && $2 != o) || ($4 != "stale" && $2 != n)' | wc -l)
    local total
    total=$(wc -l <"$dir/entry.recomputes")
    if ((served != 6 || recomputed != 1 || total != new || late != 0 || wrong != 0 ||
        count_others < 1)); then
        fail "cache ($label): $served of 6 served, $recomputed recomputed here ($total in all, want $new), $late past the bound, $wrong wrong values, $count_others $others (want >= 1)"
        cat "$dir"/read.*
        show_errors "$dir"/rerr.*
        bad=1
    else
        pass "cache ($label): 6 readers, 1 recompute, $count_others $others, none past ${bound} ms + 1 s"
    fi
}

check_cache() {
    local dir=$WORK/cache bad=0
    mkdir -p "$dir"
    # A first value (no stale one to serve yet, so a quick computation), then
    # an invalidation: the entry is expired and its value stale.
    if ! ex cache "$URL" --compute-ms 0 "$dir" entry >"$dir/first" 2>"$dir/ferr" ||
        ! grep -q '^value 1 source recomputed ' "$dir/first"; then
        fail "cache: the first read did not compute value 1"
        show_errors "$dir/ferr"
        return
    fi
    ex cache --invalidate "$dir" entry >/dev/null || fail "cache: --invalidate failed"
    readers 300 2000
    judge "300 ms bound, 2 s recompute" 300 1 2 stale
    ex cache --invalidate "$dir" entry >/dev/null || fail "cache: --invalidate failed"
    readers 8000 1500
    judge "8 s bound, 1.5 s recompute" 8000 2 3 waited
    return 0
}

# ---------------------------------------------------------------- transfer
check_transfer() {
    local dir=$WORK/bank bad=0 i rc pids=() stale_rc=0
    mkdir -p "$dir"
    if ! ex transfer init "$dir" 3 1000 >/dev/null; then
        fail "transfer: init failed"
        return
    fi
    for ((i = 0; i < 3; i++)); do
        ex transfer "$URL" run "$dir" 40 >"$dir/out.$i" 2>"$dir/err.$i" &
        pids+=($!)
    done
    ex transfer "$URL" stale "$dir" >"$dir/stale" 2>"$dir/stale.err" || stale_rc=$?
    for ((i = 0; i < 3; i++)); do
        rc=0
        wait "${pids[$i]}" || rc=$?
        if ((rc != 0)); then
            fail "transfer: process $i exited $rc"
            bad=1
        fi
    done
    if ((stale_rc != 0)) || ! grep -q 'refused the stale token' "$dir/stale"; then
        fail "transfer: the stale writer exited $stale_rc and was not refused"
        cat "$dir/stale"
        bad=1
    fi
    local accounted total refused
    accounted=$(cat "$dir"/out.* | awk '/^transfers done/ {n += $3 + $5} END {print n + 0}')
    ex transfer audit "$dir" >"$dir/audit" || fail "transfer: audit failed"
    total=$(awk '/^total/ {print $2}' "$dir/audit")
    refused=$(awk '/^total/ {print $4}' "$dir/audit")
    if [[ "$total" != 3000 ]]; then
        fail "transfer: the accounts sum to $total, want 3000"
        cat "$dir/audit"
        bad=1
    fi
    if ((accounted != 120)); then
        fail "transfer: $accounted of 120 transfers done or skipped"
        bad=1
    fi
    if [[ "$refused" != 1 ]]; then
        fail "transfer: the accounts refused $refused writes, want the stale writer's 1"
        bad=1
    fi
    if ((bad)); then
        show_errors "$dir"/err.* "$dir/stale.err"
    else
        pass "transfer: 120 transfers by 3 processes, sum 3000 kept, the stale write refused"
    fi
}

check_cron
check_cache
check_transfer
exit "$FAILED"
