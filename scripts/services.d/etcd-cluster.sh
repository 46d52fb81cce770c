# shellcheck shell=bash
# scripts/services' etcd-cluster: a three-member etcd cluster for failover
# tests, run with the etcd_ helpers of etcd.sh. Client ports (each member's
# peer port is its client port + 1: 12382, 12384, 12386 by default):
ETCD_CLUSTER_PORTS=("${DLOCK_ETCD_CLUSTER_PORT_1:-12381}" "${DLOCK_ETCD_CLUSTER_PORT_2:-12383}"
                    "${DLOCK_ETCD_CLUSTER_PORT_3:-12385}")
ETCD_CLUSTER_DIR="$SERVICES_DIR/etcd-cluster"

etcd_member_dir() { printf '%s/e%s\n' "$ETCD_CLUSTER_DIR" "$1"; }

# etcd_member_of PORT: the number (1..3) of the member with client port PORT.
etcd_member_of() {
    local i
    for i in 1 2 3; do
        [[ "${ETCD_CLUSTER_PORTS[i - 1]}" == "$1" ]] && printf '%s\n' "$i" && return 0
    done
    return 1
}

# All three healthy, as started by scripts/services, following one leader.
alive_etcd-cluster() {
    command -v curl >/dev/null 2>&1 || return 1
    local port leader first=""
    for port in "${ETCD_CLUSTER_PORTS[@]}"; do
        etcd_serving "$port" || return 1
        leader="$(etcd_leader "$port")"
        [[ -n "$leader" && "$leader" != 0 ]] || return 1
        [[ -z "$first" || "$leader" == "$first" ]] || return 1
        first="$leader"
    done
}

url_etcd-cluster() {
    local IFS=,
    printf 'etcd://%s\n' "${ETCD_CLUSTER_PORTS[*]/#/127.0.0.1:}"
}

# For `status` when not every member is up.
status_etcd-cluster() {
    local i up=() down=()
    for i in 1 2 3; do
        if etcd_pid "$(etcd_member_dir "$i")" >/dev/null; then
            up+=("e$i")
        else
            down+=("e$i")
        fi
    done
    ((${#up[@]})) || return 1
    printf 'degraded (members up: %s; down: %s)\n' "${up[*]}" "${down[*]:-none}"
}

# etcd_cluster_start_member N: starts member N unless it runs; no waiting.
etcd_cluster_start_member() {
    local i="$1" j cluster=""
    for j in 1 2 3; do
        cluster+="${cluster:+,}e$j=http://127.0.0.1:$((ETCD_CLUSTER_PORTS[j - 1] + 1))"
    done
    etcd_start_member "$(etcd_member_dir "$i")" "e$i" "${ETCD_CLUSTER_PORTS[i - 1]}" \
        "$cluster" dlock-etcd-cluster
}

etcd_cluster_log_tails() {
    local i port
    for i in 1 2 3; do
        port="${ETCD_CLUSTER_PORTS[i - 1]}"
        dl_err "member e$i (127.0.0.1:$port): $(etcd_curl "$port" /health || echo 'no answer')"
        log_tail "$(etcd_member_dir "$i")/etcd.log"
    done
}

# Starts each member that is not running (so it also restarts one that
# etcd-member-stop killed), then waits for the whole cluster.
start_etcd-cluster() {
    etcd_need
    local i
    for i in 1 2 3; do
        etcd_cluster_start_member "$i"
    done
    wait_until "$START_TIMEOUT" alive_etcd-cluster || true
    if ! alive_etcd-cluster; then
        dl_err "etcd-cluster did not have all three members healthy under one leader within ${START_TIMEOUT}s"
        etcd_cluster_log_tails
        return 1
    fi
}

stop_etcd-cluster() {
    local i
    for i in 1 2 3; do
        etcd_stop_dir "$(etcd_member_dir "$i")" "etcd-cluster member e$i"
    done
}

# etcd_member_arg PORT: exits with status 2 unless PORT is a member's client
# port.
etcd_member_arg() {
    etcd_member_of "$1" >/dev/null && return 0
    dl_err "not a client port of etcd-cluster: $1 (members: ${ETCD_CLUSTER_PORTS[*]})"
    exit 2
}

# etcd-member-stop PORT: SIGKILLs the member whose client port is PORT (as
# started by this checkout's scripts/services) and waits until it is gone.
# The others keep quorum. `etcd-member-start PORT` or `start etcd-cluster`
# brings it back.
cmd_etcd_member_stop() {
    local port="$1" i dir pid
    i="$(etcd_member_of "$port")"
    dir="$(etcd_member_dir "$i")"
    pid="$(etcd_pid "$dir")" ||
        dl_die "etcd-cluster member e$i (127.0.0.1:$port) is not running from $dir"
    kill -KILL "$pid"
    wait_until 5 pid_gone "$pid" || dl_die "member e$i pid $pid survived SIGKILL"
    rm -f "$dir/etcd.pid"
    dl_info "etcd-cluster: killed member e$i (127.0.0.1:$port, pid $pid)"
}

# The member on PORT answers healthy and follows a leader.
etcd_member_ready() {
    local leader
    etcd_serving "$1" || return 1
    leader="$(etcd_leader "$1")"
    [[ -n "$leader" && "$leader" != 0 ]]
}

# etcd-member-start PORT: starts that member again, on its data dir, and
# waits until it is healthy and follows a leader (the other members need not
# all be up).
cmd_etcd_member_start() {
    local port="$1" i
    etcd_need
    i="$(etcd_member_of "$port")"
    if etcd_pid "$(etcd_member_dir "$i")" >/dev/null; then
        dl_info "etcd-cluster: member e$i (127.0.0.1:$port) is running already"
    else
        dl_info "etcd-cluster: starting member e$i (127.0.0.1:$port)"
        run_isolated etcd_cluster_start_member "$i" 9>&-
        ((RC == 0)) || return 1
    fi
    if ! wait_until "$START_TIMEOUT" etcd_member_ready "$port"; then
        dl_err "etcd-cluster member e$i (127.0.0.1:$port) was not healthy under a leader within ${START_TIMEOUT}s"
        etcd_cluster_log_tails
        return 1
    fi
    dl_ok "etcd-cluster: member e$i (127.0.0.1:$port) is healthy under a leader"
}
