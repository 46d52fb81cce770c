# shellcheck shell=bash
# scripts/services' redis: one redis-server from the Debian package, with
# nothing persisted and nothing evicted.
REDIS_PORT="${DLOCK_REDIS_PORT:-16390}"
REDIS_DIR="$SERVICES_DIR/redis"

# The timeout covers a port held by something that accepts but never answers.
redis_cli() { timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# The config file of whatever Redis answers on our port, or nothing.
redis_config_file() {
    redis_cli INFO server 2>/dev/null | tr -d '\r' | sed -n 's/^config_file://p'
}

# A Redis started by scripts/services from any checkout counts as up: a
# second checkout (a CI clone next to a work tree) then shares it instead of
# failing on the taken port. Only the checkout that started it stops it.
alive_redis() {
    command -v redis-cli >/dev/null 2>&1 || return 1
    [[ "$(redis_cli ping 2>/dev/null)" == PONG ]] || return 1
    local conf
    conf="$(redis_config_file)"
    [[ -n "$conf" && -r "$conf" ]] && [[ "$(head -n 1 "$conf")" == "$SERVICES_MARK" ]]
}

# Up, or gave up already (port taken, bad config): no need to wait longer.
redis_settled() { grep -qE 'aborting|Fatal|FATAL' "$1" || alive_redis; }

url_redis() { printf 'redis://127.0.0.1:%s/0\n' "$REDIS_PORT"; }

start_redis() {
    need_cmd redis-server redis-server
    need_cmd redis-cli redis-tools

    local other
    if [[ "$(redis_cli ping 2>/dev/null)" == PONG ]]; then
        other="$(redis_config_file)"
        dl_die "127.0.0.1:$REDIS_PORT already serves a Redis not started by scripts/services (config: ${other:-none}); stop it or set DLOCK_REDIS_PORT"
    fi

    mkdir -p "$REDIS_DIR/data"
    local conf="$REDIS_DIR/redis.conf" log="$REDIS_DIR/redis.log"
    local major
    major="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
    {
        echo "$SERVICES_MARK"
        echo "bind 127.0.0.1"
        echo "protected-mode yes"
        echo "port $REDIS_PORT"
        echo "daemonize yes"
        echo "pidfile $REDIS_DIR/redis.pid"
        echo "logfile $log"
        echo "dir $REDIS_DIR/data"
        # A lock store that forgets or evicts keys on its own would make
        # lock-loss tests pass or fail for the wrong reason.
        echo 'save ""'
        echo "appendonly no"
        echo "maxmemory-policy noeviction"
        # Fault-injection tests stall the server with DEBUG SLEEP; loopback only.
        if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 7)); then
            echo "enable-debug-command local"
        fi
    } >"$conf"

    : >"$log"
    redis-server "$conf" || { log_tail "$log"; return 1; }
    wait_until "$START_TIMEOUT" redis_settled "$log" || true
    if ! alive_redis; then
        dl_err "redis did not answer on 127.0.0.1:$REDIS_PORT within ${START_TIMEOUT}s"
        log_tail "$log"
        return 1
    fi
}

stop_redis() {
    local pid
    if ! pid="$(pid_of "$REDIS_DIR/redis.pid" redis-server)"; then
        rm -f "$REDIS_DIR/redis.pid"
        return 0
    fi
    # NOSAVE: nothing here is worth keeping, and saving could stall shutdown.
    redis_cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    if ! wait_until 10 pid_gone "$pid"; then
        stop_pid "$pid" redis
    fi
    rm -f "$REDIS_DIR/redis.pid"
}
