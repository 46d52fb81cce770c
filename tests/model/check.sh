#!/usr/bin/env bash
# Checks the Promela model of dlock (tests/model/dlock.pml) with Spin:
#
#   tests/model/check.sh [-v] [NAME...]
#
# Each check generates a verifier (spin -a with its -D switches), compiles it
# with gcc and runs it. A check either must verify with no error, or is a
# mutant (or an unfenced resource) for which Spin must find the
# counterexample; for the unfenced resource the trail is replayed and must be
# the known one: a holder passes its HELD check, its lease expires at the
# store, another client is granted the lock and writes, then the first
# holder's write lands.
#
# One line per check: outcome, states stored, depth, time. Exit status 0 only
# if every check met its expectation; 1 if one did not; 2 if spin or gcc is
# missing. Runs from any directory; everything is built in a temporary
# directory that is removed afterwards. -v prints the verifier's output of
# checks that did not meet their expectation. NAMEs select checks.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="$HERE/dlock.pml"
VERBOSE=0
SELECT=()
for arg in "$@"; do
    case "$arg" in
        -v) VERBOSE=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
            exit 2
            ;;
        -*)
            echo "check.sh: unknown option: $arg" >&2
            exit 2
            ;;
        *) SELECT+=("$arg") ;;
    esac
done

for tool in spin gcc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check.sh: $tool not found (Debian: apt-get install -y $tool)" >&2
        exit 2
    fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dlock-model.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Search depth bound for the depth-first runs; a run that reaches it is
# incomplete and counts as a failed expectation.
DEPTH=1000000

FAILED=0
RAN=0

# check NAME EXPECT SPIN_FLAGS CC_FLAGS PAN_FLAGS [TRAIL_CHECK]
#   EXPECT: pass | assert | accept   (no error / assertion or safety claim
#           violated / acceptance cycle)
check() {
    local name="$1" expect="$2" sflags="$3" cflags="$4" pflags="$5" trail="${6:-}"
    if ((${#SELECT[@]})); then
        local s hit=0
        for s in "${SELECT[@]}"; do [[ "$s" == "$name" ]] && hit=1; done
        ((hit)) || return 0
    fi
    RAN=$((RAN + 1))
    local dir="$WORK/$name" out verdict="" note=""
    mkdir -p "$dir"
    cp "$MODEL" "$dir/dlock.pml"
    out="$dir/pan.out"
    # shellcheck disable=SC2086
    if ! (cd "$dir" && spin -a $sflags dlock.pml >"$dir/spin.out" 2>&1); then
        verdict=FAIL note="spin -a failed"
        cat "$dir/spin.out" >"$out"
    # shellcheck disable=SC2086
    elif ! (cd "$dir" && gcc -O2 -w $cflags -o pan pan.c >"$dir/cc.out" 2>&1); then
        verdict=FAIL note="gcc failed"
        cat "$dir/cc.out" >"$out"
    else
        # shellcheck disable=SC2086
        (cd "$dir" && ./pan $pflags >"$out" 2>&1) || true
    fi

    local errors states depth secs
    errors="$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)"
    states="$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out" | tail -1)"
    depth="$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | tail -1)"
    secs="$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' "$out" | tail -1)"
    [[ -n "$states" ]] && states="$(printf '%.0f' "$states")"

    if [[ -z "$verdict" ]]; then
        if [[ -z "$errors" ]]; then
            verdict=FAIL note="no verifier result"
        elif grep -q "max search depth too small" "$out"; then
            verdict=FAIL note="search incomplete: depth bound $DEPTH reached"
        else
            case "$expect" in
                pass)
                    if [[ "$errors" == 0 ]]; then
                        verdict=ok note="verified, no error"
                    else
                        verdict=FAIL note="unexpected error: $(grep -m1 -E 'violated|cycle' "$out" || echo "$errors errors")"
                    fi
                    ;;
                assert | accept)
                    local want="assertion violated"
                    [[ "$expect" == accept ]] && want="acceptance cycle"
                    if [[ "$errors" == 0 ]]; then
                        verdict=FAIL note="expected a counterexample ($want), none found"
                    elif ! grep -q "$want" "$out"; then
                        verdict=FAIL note="expected $want, got: $(grep -m1 -E 'violated|cycle' "$out")"
                    else
                        verdict=ok note="counterexample found ($want)"
                        if [[ -n "$trail" ]]; then
                            # shellcheck disable=SC2086
                            (cd "$dir" && spin -t $sflags dlock.pml >"$dir/trail.out" 2>&1) || true
                            if "$trail" "$dir/trail.out"; then
                                note="$note, trail: $TRAIL_NOTE"
                            else
                                verdict=FAIL note="counterexample of the wrong kind: $TRAIL_NOTE"
                            fi
                        fi
                    fi
                    ;;
            esac
        fi
    fi

    printf '%-4s %-25s states=%-9s depth=%-7s time=%-6s %s\n' \
        "$verdict" "$name" "${states:-?}" "${depth:-?}" "${secs:-?}s" "$note"
    if [[ "$verdict" != ok ]]; then
        FAILED=$((FAILED + 1))
        if ((VERBOSE)); then
            sed 's/^/    | /' "$out"
            [[ -f "$dir/trail.out" ]] && sed 's/^/    trail| /' "$dir/trail.out"
        fi
    fi
    return 0
}

# The unfenced counterexample must be: client A is granted token a and passes
# its HELD check; A's lease expires at the store; client B is granted token
# b > a and its write is accepted; then A's write (token a) is accepted, with
# A's lease no longer live at the store.
TRAIL_NOTE=""
trail_pause_past_ttl() {
    local r
    r="$(awk '
        $1 == "GRANT"      { split($2, c, "="); split($3, t, "="); grant[c[2]] = t[2]; order[c[2]] = ++n }
        $1 == "HELD-CHECK" { split($2, c, "="); split($3, t, "="); checked[c[2] "," t[2]] = n }
        $1 == "EXPIRE"     { split($2, c, "="); expired[c[2]] = n }
        $1 == "ACCEPT"     { split($2, c, "="); split($3, t, "="); acc[c[2] "," t[2]] = 1; last = c[2] "," t[2] }
        $1 == "STALE-WRITE" {
            split($2, c, "="); split($3, t, "="); split($7, l, "=")
            a = c[2]; ta = t[2]; live = l[2]; stale = 1
        }
        END {
            if (!stale) { print "no stale write in the trail"; exit 1 }
            b = (a == 0) ? 1 : 0
            if (!((a "," ta) in checked)) { print "the stale writer never passed a HELD check"; exit 1 }
            if (!(a in expired))          { print "the stale writer'"'"'s lease never expired"; exit 1 }
            if (!(b in grant) || grant[b] <= ta) { print "no newer grant to the other client"; exit 1 }
            if (!((b "," grant[b]) in acc)) { print "the newer holder never wrote"; exit 1 }
            if (live != 0)                { print "the stale writer still held the lease"; exit 1 }
            printf "client %d checked HELD with token %d, paused past its ttl, client %d got token %d and wrote first\n", a, ta, b, grant[b]
        }' "$1")" && { TRAIL_NOTE="$r"; return 0; }
    TRAIL_NOTE="$r"
    return 1
}

SAFE_CC="-DSAFETY -DNOCLAIM"
BFS_CC="-DSAFETY -DNOCLAIM -DBFS"
CLAIM_CC="-DSAFETY"
CLAIM_BFS_CC="-DSAFETY -DBFS"
P="-m$DEPTH"

echo "Spin model of dlock: $(spin -V 2>/dev/null | head -1)"

# 1. Fencing: the resource never accepts a write from an older acquisition
#    than one it already accepted. Clock drift is off: the resource and the
#    fencing tokens read no clock. The second run gives the clients a wrong
#    HELD answer (deadline from the reply) and fencing still holds.
check fenced               pass   "-DFENCING -DDRIFT_K=0"                       "$SAFE_CC"  "$P"
check fenced-bad-deadline  pass   "-DFENCING -DDRIFT_K=0 -DDEADLINE_FROM_REPLY" "$SAFE_CC"  "$P"
# Mutant: the store restarts and forgets its fencing counter.
check fenced-token-reset   assert "-DFENCING -DDRIFT_K=0 -DFENCE_RESET"         "$BFS_CC"   ""

# 2. No fencing: a holder that pauses between its HELD check and its write
#    past the ttl overwrites a newer holder. Holders never release here, so
#    the lock changes hands only by expiry.
check unfenced             assert "-DDRIFT_K=0 -DNO_RELEASE"                    "$BFS_CC"   "" trail_pause_past_ttl

# 3. Liveness: after the holder crashes the store grants the lock to the
#    other client, under weak fairness (pan -a -f), with one message loss.
check handover             pass   "-DLIVE"                                      ""          "$P -a -f -N handover"
check handover-no-fairness accept "-DLIVE"                                      ""          "$P -a -N handover"
check handover-no-expiry   accept "-DLIVE -DNO_EXPIRY"                          ""          "$P -a -f -N handover"

# 4. Validity rule under bounded drift (a client clock misses at most one tick
#    in four; margin = 1 tick of a 4-tick ttl): no two clients believe HELD
#    at once, and HELD implies a live lease at the store.
check mutex                pass   "-DNO_WRITES"                                 "$CLAIM_CC" "$P -N mutex"
check lease-covers-held    pass   "-DNO_WRITES"                                 "$CLAIM_CC" "$P -N lease_covers"
check mutex-from-reply     assert "-DNO_WRITES -DDEADLINE_FROM_REPLY"           "$CLAIM_BFS_CC" "-N mutex"
check mutex-from-reply-nodrift assert "-DNO_WRITES -DDEADLINE_FROM_REPLY -DDRIFT_K=0" "$CLAIM_BFS_CC" "-N mutex"
check mutex-no-margin      assert "-DNO_WRITES -DMARGIN=0"                      "$CLAIM_BFS_CC" "-N mutex"
check mutex-no-margin-nodrift pass "-DNO_WRITES -DMARGIN=0 -DDRIFT_K=0"         "$CLAIM_CC" "$P -N mutex"
# Outside the drift assumption: a client clock that stops (suspend), and a
# store clock that steps forward by more than the margin.
check mutex-clock-stops    assert "-DNO_WRITES -DDRIFT_UNBOUNDED"               "$CLAIM_BFS_CC" "-N mutex"
check mutex-store-jump     assert "-DNO_WRITES -DSTORE_JUMP"                    "$CLAIM_BFS_CC" "-N mutex"

if ((RAN == 0)); then
    echo "check.sh: no check named ${SELECT[*]}" >&2
    exit 2
fi
if ((FAILED)); then
    echo "model: $FAILED of $RAN checks did not meet their expectation"
    exit 1
fi
echo "model: all $RAN checks met their expectation"
