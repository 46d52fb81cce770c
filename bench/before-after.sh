#!/usr/bin/env bash
# shellcheck disable=SC2016 # the backticks are markdown, in python strings
# bench/before-after.sh BEFORE AFTER [SECONDS]: two builds of dlock (meson
# build dirs, each with tools/dlock and bench/dlock-bench-lease-cost) side
# by side on the servers of scripts/services, in the same run:
#   - uncontended try_acquire+release p50 on every store URL, the builds
#     taking turns round by round (ROUNDS, default 5) so that drift in the
#     machine's speed hits both; the median of the rounds, and AFTER / BEFORE;
#   - what holding LOCKS (1000) locks for HOLD (6) seconds costs, the median
#     of ROUNDS runs per build: resident set per lock, and renewal requests
#     per renewal period (keepalives, session renewals, syncs from the
#     backend's counters; Redis: the script calls the server ran, from INFO
#     commandstats, less the acquires and releases).
# URLS (space-separated) measures just those; PHASE=handoff compares the
# strict-turn handoff p50 instead of the uncontended pair's.  Prints
# markdown tables.
# Needs python3 and redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 secs=${3:-3}
rounds=${ROUNDS:-5}
locks=${LOCKS:-1000}
hold=${HOLD:-6}
phase=${PHASE:-uncontended}
case "$phase" in uncontended | handoff) ;; *) echo "PHASE is uncontended or handoff" >&2; exit 2 ;; esac

if [[ -n "${URLS:-}" ]]; then
    read -r -a urls <<<"$URLS" # just these (space-separated)
else
    mapfile -t urls < <(scripts/services urls redis zookeeper postgres etcd consul |
        awk '$2 !~ /^etcd\+(https|grpcs)/ {print $2}')
    urls+=("file:///tmp/dlock-before-after" "mem://")
fi

# URL without its user and password, for the table.
shown() { sed -E 's#//[^@/]*@#//#' <<<"$1"; }

median() { python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }

p50() { # BUILD URL
    "$1/tools/dlock" bench "$2" --seconds "$secs" --only "$phase" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]]["p50_us"])' "$phase"
}

echo "| store URL | before $phase p50 µs | after $phase p50 µs | after ÷ before |"
echo "| --- | --- | --- | --- |"
for url in "${urls[@]}"; do
    b=() a=()
    for _ in $(seq 1 "$rounds"); do
        b+=("$(p50 "$before" "$url")")
        a+=("$(p50 "$after" "$url")")
    done
    mb=$(median "${b[@]}") ma=$(median "${a[@]}")
    python3 -c 'import sys; u,b,a=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]); print("| `%s` | %.1f | %.1f | %.3f |" % (u,b,a,a/b))' \
        "$(shown "$url")" "$mb" "$ma"
done

lease_cost() { # BUILD URL: the JSON of the median run (by rss per lock) of ROUNDS
    local _
    for _ in $(seq 1 "$rounds"); do
        local r0=0 r1=0
        [[ $2 == redis* ]] && r0=$(redis_total "$2")
        local j
        j=$("$1/bench/dlock-bench-lease-cost" "$2" "$locks" "$hold")
        [[ $2 == redis* ]] && r1=$(redis_total "$2")
        printf '%s %s %s\n' "$j" "$r0" "$r1"
    done | python3 -c '
import json, sys
n = int(sys.argv[1]); redis = sys.argv[2] == "1"
runs = []
for line in sys.stdin:
    j, r0, r1 = line.rsplit(" ", 2)
    j = json.loads(j)
    if redis:
        # every command of the run but the acquires and releases and the warm-up pair
        j["renew_requests"] = int(r1) - int(r0) - 2 * n - 2
    runs.append(j)
runs.sort(key=lambda j: j["rss_per_lock_bytes"])
m = runs[len(runs) // 2]
per = sorted(j["renew_requests"] / j["periods"] for j in runs)
print("%s %s" % (m["rss_per_lock_bytes"], "%.1f" % per[len(per) // 2] if per[0] >= 0 else "n/a"))
' "$locks" "$([[ $2 == redis* ]] && echo 1 || echo 0)"
}

# Script calls (EVALSHA: every acquire, renewal and release) a Redis URL's
# server has run so far.
redis_total() {
    local hp=${1#redis://}
    hp=${hp%%/*}
    redis-cli -h "${hp%:*}" -p "${hp##*:}" info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'
}

echo
echo "| store URL | before: rss per held lock (bytes) | after | before: renewal requests per period ($locks locks) | after |"
echo "| --- | --- | --- | --- | --- |"
for url in "${urls[@]}"; do
    case "$url" in etcd* | consul* | zk* | redis*) ;; *) continue ;; esac
    read -r rb qb <<<"$(lease_cost "$before" "$url")"
    read -r ra qa <<<"$(lease_cost "$after" "$url")"
    echo "| \`$(shown "$url")\` | $rb | $ra | $qb | $qa |"
done
