# shellcheck shell=bash
# scripts/services' zookeeper-ensemble: three members (for failover tests),
# run with the zk_ helpers of zookeeper.sh. Client ports:
ZK_ENSEMBLE_PORTS=("${DLOCK_ZK_ENSEMBLE_PORT_1:-16491}" "${DLOCK_ZK_ENSEMBLE_PORT_2:-16492}"
                   "${DLOCK_ZK_ENSEMBLE_PORT_3:-16493}")
# Member N's quorum port is its client port + 100, its election port + 200
# (16591..16593, 16691..16693 by default).
ZK_ENSEMBLE_DIR="$SERVICES_DIR/zookeeper-ensemble"

zk_member_dir() { printf '%s/%s\n' "$ZK_ENSEMBLE_DIR" "$1"; }

# All three serve, as started by scripts/services, and one of them leads.
alive_zookeeper-ensemble() {
    local port mode leaders=0
    for port in "${ZK_ENSEMBLE_PORTS[@]}"; do
        zk_ruok "$port" || return 1
        zk_state_dir "$port" >/dev/null || return 1
        mode="$(zk_mode "$port")"
        case "$mode" in
            leader) leaders=$((leaders + 1)) ;;
            follower) ;;
            *) return 1 ;;
        esac
    done
    ((leaders == 1))
}

url_zookeeper-ensemble() {
    local IFS=,
    printf 'zk://%s\n' "${ZK_ENSEMBLE_PORTS[*]/#/127.0.0.1:}"
}

# For `status` when not every member is up.
status_zookeeper-ensemble() {
    local i up=() down=()
    for i in 1 2 3; do
        if zk_pid "$(zk_member_dir "$i")" >/dev/null; then
            up+=("$i")
        else
            down+=("$i")
        fi
    done
    ((${#up[@]})) || return 1
    printf 'degraded (members up: %s; down: %s)\n' "${up[*]}" "${down[*]:-none}"
}

# Starts each member that is not running (so it also restarts one that
# zk-kill-leader killed), then waits for the whole ensemble.
start_zookeeper-ensemble() {
    zk_need
    local i port dir servers=()
    for i in 1 2 3; do
        port="${ZK_ENSEMBLE_PORTS[i - 1]}"
        servers+=("server.$i=127.0.0.1:$((port + 100)):$((port + 200))")
    done
    for i in 1 2 3; do
        port="${ZK_ENSEMBLE_PORTS[i - 1]}"
        dir="$(zk_member_dir "$i")"
        zk_running "$dir" "$port" && continue
        # A member that another checkout started still counts.
        zk_serving "$port" 'leader|follower' && continue
        zk_check_port_free "$port"
        zk_check_port_free "$((port + 100))"
        zk_check_port_free "$((port + 200))"
        zk_write_config "$dir" "$port" "${servers[@]}"
        echo "$i" >"$dir/data/myid"
        dl_info "zookeeper-ensemble: starting member $i (127.0.0.1:$port)"
        zk_launch "$dir"
    done
    wait_until "$START_TIMEOUT" alive_zookeeper-ensemble || true
    if ! alive_zookeeper-ensemble; then
        dl_err "zookeeper-ensemble did not elect a leader with all three members serving within ${START_TIMEOUT}s"
        for i in 1 2 3; do
            port="${ZK_ENSEMBLE_PORTS[i - 1]}"
            dl_err "member $i (127.0.0.1:$port): $(zk_mode "$port" || true)"
            log_tail "$(zk_member_dir "$i")/zookeeper.log"
        done
        return 1
    fi
}

stop_zookeeper-ensemble() {
    local i
    for i in 1 2 3; do
        zk_stop_dir "$(zk_member_dir "$i")" "zookeeper-ensemble member $i"
    done
}

# zk_find_leader: sets ZK_LEADER to the number of the member that leads.
ZK_LEADER=0
zk_find_leader() {
    local i
    for i in 1 2 3; do
        if [[ "$(zk_mode "${ZK_ENSEMBLE_PORTS[i - 1]}")" == leader ]]; then
            ZK_LEADER=$i
            return 0
        fi
    done
    return 1
}

# zk-kill-leader: SIGKILLs the ensemble's current leader (failover tests) and
# prints "member N 127.0.0.1:PORT pid PID" on stdout. Does not wait for the
# others to elect a new one. `start zookeeper-ensemble` brings it back.
cmd_zk_kill_leader() {
    local i port dir pid
    # Right after a start or a kill the members may still be electing one.
    if wait_until 10 zk_find_leader; then
        i=$ZK_LEADER
        port="${ZK_ENSEMBLE_PORTS[i - 1]}"
        dir="$(zk_state_dir "$port")" ||
            dl_die "the leader on 127.0.0.1:$port was not started by scripts/services"
        pid="$(zk_pid "$dir")" ||
            dl_die "the leader on 127.0.0.1:$port has no live pid in $dir/zookeeper.pid"
        kill -KILL "$pid"
        wait_until 5 pid_gone "$pid" || dl_die "leader pid $pid survived SIGKILL"
        printf 'member %s 127.0.0.1:%s pid %s\n' "$i" "$port" "$pid"
        dl_info "zookeeper-ensemble: killed the leader, member $i (127.0.0.1:$port, pid $pid)"
        return 0
    fi
    dl_die "zookeeper-ensemble has no leader after 10s (scripts/services status zookeeper-ensemble)"
}
