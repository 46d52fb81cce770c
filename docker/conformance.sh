#!/usr/bin/env bash
# The conformance suite against lock stores that are starting up: waits
# until every store answers, then runs dlock-conformance once over all of
# them and exits with its status.
#
#   docker/conformance.sh [DLOCK-CONFORMANCE ARGS...]
#
# The entrypoint of the conformance service in docker-compose.yml, and run by
# scripts/test against the servers of scripts/services. The arguments go to
# dlock-conformance before the URLs (--destructive, --case NAME, ...; none by
# default). With --list, --help or --version nothing is waited for.
#
# Environment:
#   DLOCK_CONFORMANCE_URLS  the stores, space-separated (default: the
#                           docker-compose.yml services by host name, below)
#   DLOCK_CONFORMANCE       the suite (default: dlock-conformance on PATH)
#   DLOCK_CLI               the dlock command that probes the stores (default:
#                           the dlock installed beside the suite, or the one of
#                           the build tree the suite is in, else dlock on PATH)
#   DLOCK_CONFORMANCE_WAIT  seconds to wait for all the stores together
#                           (default: 120)
# and whatever dlock-conformance itself reads (DLOCK_TEST_*, CI; see its
# --help).
#
# Exit status: the suite's; 1 when a store did not answer in time, 2 on a
# usage error (a URL dlock refuses, no suite or dlock to run), as the
# suite's own.
set -euo pipefail

# The stores of docker-compose.yml on its network, with every parameter at
# its default: advisory and lease mode on PostgreSQL, and lease mode through
# PgBouncer (transaction pooling, where advisory mode is refused).
DEFAULT_URLS=(
    redis://redis:6379/0
    zk://zookeeper:2181
    postgres://dlock:dlock-pw@postgres:5432/dlock
    "postgres://dlock:dlock-pw@postgres:5432/dlock?mode=lease"
    "postgres://dlock:dlock-pw@pgbouncer:5432/dlock?mode=lease"
    etcd://etcd:2379
    consul://consul:8500
)

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'conformance.sh: %s\n' "$1" >&2
    exit "${2:-2}"
}

# redact URL: URL with its password and the values of its secret-looking
# parameters as ***, as the dlock tools show URLs (core/url.c: a name
# holding pass, pwd, token, secret, key, auth or cred).
redact() {
    local url="$1" base query="" out
    base="${url%%\?*}"
    [[ "$base" == "$url" ]] || query="${url#*\?}"
    if [[ "$base" == *://*@* ]]; then
        local scheme="${base%%://*}" rest="${base#*://}"
        local userinfo="${rest%@*}" hosts="${rest##*@}"
        [[ "$userinfo" != *:* ]] || userinfo="${userinfo%%:*}:***"
        base="$scheme://$userinfo@$hosts"
    fi
    out="$base"
    if [[ -n "$query" ]]; then
        local -a params
        local p name sep='?' lower
        IFS='&' read -r -a params <<<"$query"
        for p in "${params[@]}"; do
            name="${p%%=*}"
            lower="${name,,}"
            if [[ "$p" == *=* && "$lower" =~ pass|pwd|token|secret|key|auth|cred ]]; then
                p="$name=***"
            fi
            out+="$sep$p"
            sep='&'
        done
    fi
    printf '%s\n' "$out"
}

# ---------------------------------------------------------------- programs

suite="${DLOCK_CONFORMANCE:-dlock-conformance}"
if [[ "$suite" != */* ]]; then
    suite="$(command -v -- "$suite")" || die "$suite not found on PATH (set DLOCK_CONFORMANCE)"
fi
[[ -x "$suite" && ! -d "$suite" ]] || die "DLOCK_CONFORMANCE=$suite is not an executable file"

# The dlock of the same build as the suite: installed, both are in one bin
# directory; in a build tree the suite is tests/conformance/dlock-conformance
# and dlock is tools/dlock.
cli_default() {
    local dir
    dir="$(dirname -- "$suite")"
    if [[ -x "$dir/dlock" ]]; then
        printf '%s\n' "$dir/dlock"
    elif [[ "$dir" == */tests/conformance && -x "${dir%/tests/conformance}/tools/dlock" ]]; then
        printf '%s\n' "${dir%/tests/conformance}/tools/dlock"
    else
        printf 'dlock\n'
    fi
}
cli="${DLOCK_CLI:-$(cli_default)}"
if [[ "$cli" != */* ]]; then
    cli="$(command -v -- "$cli")" || die "$cli not found on PATH (set DLOCK_CLI)"
fi
[[ -x "$cli" && ! -d "$cli" ]] || die "DLOCK_CLI=$cli is not an executable file"

# ---------------------------------------------------------------- arguments

# Informational options: the suite answers them without a store.
wait_for_stores=1
expect_value=0
for a in "$@"; do
    if ((expect_value)); then
        expect_value=0
        continue
    fi
    case "$a" in
        --case) expect_value=1 ;;
        --list | --help | -h | --version | -V) wait_for_stores=0 ;;
        --) break ;;
    esac
done

# Separated by spaces, tabs or newlines.
urls=()
if [[ -n "${DLOCK_CONFORMANCE_URLS:-}" ]]; then
    read -r -d '' -a urls <<<"$DLOCK_CONFORMANCE_URLS" || true
fi
((${#urls[@]})) || urls=("${DEFAULT_URLS[@]}")

wait_s="${DLOCK_CONFORMANCE_WAIT:-120}"
[[ "$wait_s" =~ ^[0-9]+$ ]] || die "DLOCK_CONFORMANCE_WAIT=$wait_s is not a whole number of seconds"

# ---------------------------------------------------------------- waiting

# probe URL: asks the store about a key of our own through the dlock CLI
# (`dlock status`: it reads, so it leaves nothing behind; the URL goes
# through the environment, not the command line).
# Leaves dlock's message in probe_msg; returns 0 when the store answered,
# 2 when dlock refuses the URL (usage error, 64: waiting will not cure
# that), 1 otherwise (unreachable, a store or login error while it starts).
probe_msg=""
probe_key="conformance-ready-$$-$RANDOM"
probe() {
    local rc=0
    # -k: a dlock that ignores the TERM (stuck in a connect) is killed.
    probe_msg="$(DLOCK_CONFORMANCE_PROBE_URL="$1" timeout -k 5 15 "$cli" status \
        --url-env DLOCK_CONFORMANCE_PROBE_URL "$probe_key" 2>&1 </dev/null)" || rc=$?
    case "$rc" in
        0) return 0 ;;
        64) return 2 ;;
        124 | 137) probe_msg="no answer within 15 s${probe_msg:+: $probe_msg}" ;;
    esac
    return 1
}

if ((wait_for_stores)); then
    deadline=$((SECONDS + wait_s))
    late=()
    for url in "${urls[@]}"; do
        shown="$(redact "$url")"
        rc=0
        probe "$url" || rc=$?
        # Once the deadline has passed, each of the rest gets one try, so
        # that every store that is not up is named.
        while ((rc == 1 && SECONDS < deadline)); do
            sleep 1
            rc=0
            probe "$url" || rc=$?
        done
        case "$rc" in
            0) say "store up: $shown" ;;
            2) die "dlock refuses $shown: ${probe_msg:-no message}" 2 ;;
            *)
                printf 'conformance.sh: %s did not answer within %ss: %s\n' \
                    "$shown" "$wait_s" "${probe_msg:-no message}" >&2
                late+=("$shown")
                ;;
        esac
    done
    if ((${#late[@]})); then
        die "not running the suite: ${#late[@]} store(s) did not answer: ${late[*]}" 1
    fi
fi

# ---------------------------------------------------------------- the suite

say "dlock-conformance${*:+ $*} on ${#urls[@]} store(s):"
for url in "${urls[@]}"; do
    printf '      %s\n' "$(redact "$url")" >&2
done
# exec: a SIGINT or SIGTERM (docker stop, timeout) reaches the suite itself,
# which removes what it made before it exits.
exec "$suite" "$@" "${urls[@]}"
