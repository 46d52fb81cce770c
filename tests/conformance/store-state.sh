#!/usr/bin/env bash
# store-state.sh [--run ID] URL...: one line per lock store URL (the URLs
# dlock-conformance takes) with how much state the store holds, so that a
# caller can check that a default (non-destructive) conformance run leaves
# it as it found it:
#   redis      keys=N                 DBSIZE of the URL's database
#   zk         znodes=N               nodes under the backend's root (the
#                                     URL's path + ?prefix=, default /dlock),
#                                     the root included (with java and
#                                     zookeeper.jar; else server_znodes=N,
#                                     the server's zk_znode_count by mntr)
#   etcd       keys=N                 every key (a count-only range)
#   consul     keys=N sessions=N      every KV key and every session
#   postgres   lease_rows=N lease_tables=N   rows of the URL's lease table
#                                     (?prefix=, default dlock) and tables
#                                     named *_lease but that one in lease
#                                     mode (the store's own schema, which
#                                     its first lock creates)
#   file       entries=N              files and directories under the
#                                     URL's directory (absent: 0)
# With --run ID (the id dlock-conformance prints: "# conformance URL (run
# ID)"), only what carries ID in its name counts (Consul sessions: named
# after ID or after its process, "dlock <host>:<pid>"): on a store others
# use at the same time, whether one run left anything behind.
# The line starts with the URL's scheme, hosts and path only: no
# credentials, no query.  Exit status 1 if a store did not answer, 2 on a
# usage error.
#
# Uses what scripts/services uses to check its servers: redis-cli, the
# four-letter words over bash's /dev/tcp, curl, psql, find.
set -uo pipefail

# usage STATUS: the comment above, on stdout for --help (0), else stderr.
usage() {
    if (($1 == 0)); then
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    else
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    fi
    exit "$1"
}

run=""
case "${1:-}" in
-h | --help) usage 0 ;;
"") usage 2 ;;
--run)
    [[ $# -ge 3 ]] || usage 2
    run="$2"
    shift 2
    ;;
esac

# Percent-decoding, for userinfo and query values.
urldecode() {
    local s="${1//+/ }"
    printf '%b' "${s//%/\\x}"
}

# parse URL: sets scheme, user, pass, hosts (comma-separated host:port),
# host, port (of the first host), path and query.
parse() {
    local url="$1" rest auth userinfo first
    scheme="${url%%://*}"
    rest="${url#*://}"
    query=""
    if [[ "$rest" == *\?* ]]; then
        query="${rest#*\?}"
        rest="${rest%%\?*}"
    fi
    auth="${rest%%/*}"
    path=""
    [[ "$rest" == */* ]] && path="/${rest#*/}"
    userinfo="" user="" pass=""
    if [[ "$auth" == *@* ]]; then
        userinfo="${auth%@*}"
        auth="${auth##*@}"
        user="$(urldecode "${userinfo%%:*}")"
        [[ "$userinfo" == *:* ]] && pass="$(urldecode "${userinfo#*:}")"
    fi
    hosts="$auth"
    first="${auth%%,*}"
    host="$first" port=""
    if [[ "$first" == *:* ]]; then
        host="${first%:*}"
        port="${first##*:}"
    fi
    [[ -n "$host" ]] || host=127.0.0.1
}

# param NAME: the decoded value of ?NAME= (empty when absent).
param() {
    local kv
    local -a kvs
    IFS='&' read -r -a kvs <<<"$query"
    for kv in "${kvs[@]}"; do
        if [[ "${kv%%=*}" == "$1" ]]; then
            urldecode "${kv#*=}"
            return 0
        fi
    done
    return 1
}

# A count out of TEXT: the number after KEY (JSON "key":"N" or "key":N),
# 0 when KEY is absent (etcd leaves out a count of zero).
json_count() {
    local n
    n="$(sed -n 's/.*"'"$2"'":"\{0,1\}\([0-9]*\).*/\1/p' <<<"$1")"
    printf '%s\n' "${n:-0}"
}

state_redis() {
    local db="${path#/}"
    local -a args=(-h "$host" -p "${port:-6379}" -n "${db:-0}")
    [[ -n "$user" ]] && args+=(--user "$user")
    local n
    [[ -n "$pass" ]] && export REDISCLI_AUTH="$pass"
    if [[ -n "$run" ]]; then
        n="$(timeout 10 redis-cli --no-auth-warning "${args[@]}" --scan --pattern "*$run*" |
            wc -l)"
    else
        n="$(timeout 5 redis-cli --no-auth-warning "${args[@]}" DBSIZE)"
    fi || return 1
    [[ "$n" =~ ^[0-9]+$ ]] || return 1
    printf 'keys=%s\n' "$n"
}

ZK_CLASSPATH=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar

state_zk() {
    local root prefix out n
    prefix="$(param prefix)" || prefix=/dlock
    root="${path%/}$prefix"
    # A server that does not answer would read as an empty tree below.
    local first="${hosts%%,*}"
    # shellcheck disable=SC2016 # expanded by the inner bash
    [[ "$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf ruok >&3 && cat <&3' \
        _ "${first%:*}" "${first##*:}" 2>/dev/null)" == imok ]] || return 1
    if command -v java >/dev/null 2>&1 && [[ -f /usr/share/java/zookeeper.jar ]]; then
        # ls -R prints the root and every node under it, one a line; a
        # missing root prints nothing on stdout.
        out="$(timeout 30 java -cp "$ZK_CLASSPATH" org.apache.zookeeper.ZooKeeperMain \
            -server "$hosts" ls -R "$root" 2>/dev/null | grep '^/')"
        if [[ -n "$run" ]]; then
            # z8's own root sits at the top.
            out+=$'\n'"$(timeout 30 java -cp "$ZK_CLASSPATH" org.apache.zookeeper.ZooKeeperMain \
                -server "$hosts" ls / 2>/dev/null | tr -d '[] ' | tr ',' '\n' | sed 's|^|/|')"
            n="$(grep -c -F -e "$run" <<<"$out")"
        else
            n="$(grep -c '^/' <<<"$out")"
        fi
        printf 'znodes=%s\n' "$n"
        return 0
    fi
    # shellcheck disable=SC2016 # expanded by the inner bash
    out="$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf mntr >&3 && cat <&3' \
        _ "$host" "${port:-2181}" 2>/dev/null)" || return 1
    n="$(sed -n 's/^zk_znode_count[[:space:]]*\([0-9]*\).*/\1/p' <<<"$out")"
    [[ -n "$n" ]] || return 1
    printf 'server_znodes=%s\n' "$n"
}

# curl_tls: TLS options from ?cacert=, ?cert=, ?key=.
curl_tls() {
    local v
    v="$(param cacert)" && printf '%s\n' --cacert "$v"
    v="$(param cert)" && printf '%s\n' --cert "$v"
    v="$(param key)" && printf '%s\n' --key "$v"
    return 0
}

state_etcd() {
    local proto=http
    [[ "$scheme" == etcd+https || "$scheme" == etcd+grpcs ]] && proto=https
    local base="$proto://$host:${port:-2379}"
    local -a tls auth=()
    mapfile -t tls < <(curl_tls)
    if [[ -n "$user" ]]; then
        local body token
        body="$(printf '{"name":"%s","password":"%s"}' "$user" "$pass")"
        token="$(curl -q -s --max-time 5 "${tls[@]}" -X POST -d @- "$base/v3/auth/authenticate" \
            <<<"$body" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
        [[ -n "$token" ]] || return 1
        auth=(-H "Authorization: $token")
    fi
    local out k n=0
    # Every key from "\0" to the end: key and range_end "\0".
    if [[ -n "$run" ]]; then
        out="$(curl -q -s -f --max-time 10 "${tls[@]}" "${auth[@]}" -X POST \
            -d '{"key":"AA==","range_end":"AA==","keys_only":true}' "$base/v3/kv/range")" ||
            return 1
        [[ "$out" == *'"header"'* ]] || return 1
        while read -r k; do
            base64 -d <<<"$k" 2>/dev/null | grep -q -F -e "$run" && n=$((n + 1))
        done < <(grep -o '"key":"[^"]*"' <<<"$out" | sed 's/"key":"\(.*\)"/\1/')
        printf 'keys=%s\n' "$n"
        return 0
    fi
    out="$(curl -q -s -f --max-time 5 "${tls[@]}" "${auth[@]}" -X POST \
        -d '{"key":"AA==","range_end":"AA==","count_only":true}' "$base/v3/kv/range")" || return 1
    [[ "$out" == *'"header"'* ]] || return 1
    printf 'keys=%s\n' "$(json_count "$out" count)"
}

state_consul() {
    local proto=http
    [[ "$scheme" == consul+https ]] && proto=https
    local base="$proto://$host:${port:-8500}"
    local -a tls hdr=()
    mapfile -t tls < <(curl_tls)
    local token
    token="$(param token)" || token="${CONSUL_HTTP_TOKEN:-}"
    [[ -n "$token" ]] && hdr=(-H "X-Consul-Token: $token")
    local kv sessions code
    # A KV store with no key answers 404.  Each key's object has one
    # "CreateIndex": that no key's (escaped) text can imitate.
    kv="$(curl -q -s --max-time 5 "${tls[@]}" "${hdr[@]}" -w '\n%{http_code}' \
        "$base/v1/kv/?recurse")" || return 1
    code="${kv##*$'\n'}"
    kv="${kv%$'\n'*}"
    case "$code" in
    200)
        if [[ -n "$run" ]]; then
            kv="$(grep -o '"Key": *"[^"]*"' <<<"$kv" | grep -c -F -e "$run")"
        else
            kv="$(grep -o '"CreateIndex":' <<<"$kv" | wc -l)"
        fi
        ;;
    404) kv=0 ;;
    *) return 1 ;;
    esac
    sessions="$(curl -q -s -f --max-time 5 "${tls[@]}" "${hdr[@]}" "$base/v1/session/list")" ||
        return 1
    if [[ -n "$run" ]]; then
        sessions="$(grep -o '"Name": *"[^"]*"' <<<"$sessions" |
            grep -c -e "$run" -e "^\"Name\": *\"dlock .*:${run%%-*}\"\$")"
    else
        sessions="$(grep -o '"CreateIndex":' <<<"$sessions" | wc -l)"
    fi
    printf 'keys=%s sessions=%s\n' "$kv" "$sessions"
}

state_postgres() {
    local db="${path#/}" prefix table
    prefix="$(param prefix)" || prefix=dlock
    table="${prefix}_lease"
    psql_q() {
        PGPASSWORD="$pass" PGCONNECT_TIMEOUT=5 timeout 10 psql -X -A -t -q -v ON_ERROR_STOP=1 \
            -h "$host" -p "${port:-5432}" -U "${user:-${USER:-$(id -un)}}" -d "${db:-postgres}" -c "$1"
    }
    local exists rows tables where="" twhere="LIKE '%\\_lease'"
    [[ "$(param mode)" == lease ]] && twhere+=" AND tablename <> '$table'"
    if [[ -n "$run" ]]; then
        where=" WHERE strpos(name, '$run') > 0"
        twhere="= 'conf_${run//-/_}_lease'"
    fi
    exists="$(psql_q "SELECT to_regclass('$table') IS NOT NULL")" || return 1
    rows=0
    if [[ "$exists" == t ]]; then
        rows="$(psql_q "SELECT count(*) FROM $table$where")" || return 1
    fi
    tables="$(psql_q "SELECT count(*) FROM pg_tables WHERE tablename $twhere")" || return 1
    printf 'lease_rows=%s lease_tables=%s\n' "$rows" "$tables"
}

state_file() {
    local dir
    dir="$(urldecode "$path")"
    if [[ ! -e "$dir" ]]; then
        printf 'entries=0\n'
        return 0
    fi
    if [[ -n "$run" ]]; then
        printf 'entries=%s\n' "$(find "$dir" -mindepth 1 -name "*$run*" | wc -l)"
    else
        printf 'entries=%s\n' "$(find "$dir" -mindepth 1 | wc -l)"
    fi
}

rc=0
for url in "$@"; do
    parse "$url"
    case "$scheme" in
    redis) out="$(state_redis)" ;;
    zk) out="$(state_zk)" ;;
    etcd | etcd+https | etcd+grpc | etcd+grpcs) out="$(state_etcd)" ;;
    consul | consul+https) out="$(state_consul)" ;;
    postgres | postgresql) out="$(state_postgres)" ;;
    file) out="$(state_file)" ;;
    *)
        printf 'store-state: no state count for %s://\n' "$scheme" >&2
        rc=1
        continue
        ;;
    esac
    st=$?
    name="$scheme://$hosts$path"
    if ((st != 0)) || [[ -z "$out" ]]; then
        printf 'store-state: %s did not answer\n' "$name" >&2
        rc=1
        continue
    fi
    printf '%s %s\n' "$name" "$out"
done
exit "$rc"
