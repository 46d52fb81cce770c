# shellcheck shell=bash disable=SC2153,SC2164  # PG_* are postgres.sh's; cd: see postgres.sh
# scripts/services' pgbouncer: PgBouncer in transaction pooling in front of
# the postgres service, run with the settings and pg_ helpers of
# postgres.sh.
PGB_PORT="${DLOCK_PGBOUNCER_PORT:-16433}"
PGB_DIR="$SERVICES_DIR/pgbouncer"
PGB_BIN="${DLOCK_PGBOUNCER_BIN:-/usr/sbin/pgbouncer}"

# The config file of the PgBouncer on our port, from its console, which
# $PG_ROLE may read (stats_users) but not command.
pgb_config_file() {
    pg_query "$PGB_PORT" pgbouncer 'SHOW CONFIG' | sed -n 's/^conffile|\([^|]*\)|.*/\1/p'
}

# Started by scripts/services (of any checkout, see alive_redis, redis.sh), and
# reaching PostgreSQL: a pooler whose server is down is no use to tests.
alive_pgbouncer() {
    [[ -x "$PG_BIN/psql" ]] || return 1
    marked "$(pgb_config_file)" || return 1
    [[ "$(pg_query "$PGB_PORT" "$PG_DB" 'SELECT 1')" == 1 ]]
}

url_pgbouncer() { printf 'postgres://%s:%s@127.0.0.1:%s/%s\n' "$PG_ROLE" "$PG_PASSWORD" "$PGB_PORT" "$PG_DB"; }

pgb_pid() { pid_of "$PGB_DIR/pgbouncer.pid" pgbouncer; }

status_pgbouncer() {
    local pid
    pid="$(pgb_pid)" || return 1
    if marked "$(pgb_config_file)"; then
        printf 'up (pid %s) but cannot reach postgres on 127.0.0.1:%s\n' "$pid" "$PG_PORT"
    else
        printf 'up (pid %s) but not answering on 127.0.0.1:%s\n' "$pid" "$PGB_PORT"
    fi
}

# Up, or it exited already: no need to wait longer.
pgb_settled() { alive_pgbouncer || ! pgb_pid >/dev/null; }

# Starts postgres first if it is down: the pool is of no use without it.
start_pgbouncer() {
    [[ -x "$PGB_BIN" ]] ||
        dl_die "$PGB_BIN not found: install the Debian package pgbouncer (scripts/test installs it) or set DLOCK_PGBOUNCER_BIN"
    pg_need
    if ! alive_postgres; then
        dl_info "pgbouncer: starting postgres first"
        start_postgres
    fi
    local pid conf="$PGB_DIR/pgbouncer.ini" users="$PGB_DIR/userlist.txt" log="$PGB_DIR/pgbouncer.log"
    # Ours but not answering, or configured for another port: the config
    # is rewritten below, so start it afresh.
    if pid="$(pgb_pid)"; then
        stop_pid "$pid" pgbouncer
    fi
    check_port_free "$PGB_PORT" DLOCK_PGBOUNCER_PORT
    pg_own "$PGB_DIR" "$PGB_DIR/run"
    pg_check_reachable "$PGB_DIR"
    {
        echo "$SERVICES_MARK"
        echo "[databases]"
        echo "$PG_DB = host=127.0.0.1 port=$PG_PORT dbname=$PG_DB"
        echo "[pgbouncer]"
        echo "listen_addr = 127.0.0.1"
        echo "listen_port = $PGB_PORT"
        echo "unix_socket_dir = $PGB_DIR/run"
        # The plain password in auth_file lets pgbouncer answer the
        # server's SCRAM challenge as the client it pools for.
        echo "auth_type = scram-sha-256"
        echo "auth_file = $users"
        echo "pool_mode = transaction"
        echo "default_pool_size = 20"
        echo "max_client_conn = 1000"
        echo "stats_users = $PG_ROLE"
        # Sent by some client libraries at login; harmless to drop.
        echo "ignore_startup_parameters = extra_float_digits"
        # Back in a second after postgres restarts, not the default 15.
        echo "server_login_retry = 1"
        # Conformance runs connect thousands of times.
        echo "log_connections = 0"
        echo "log_disconnections = 0"
    } >"$conf"
    printf '"%s" "%s"\n' "$PG_ROLE" "$PG_PASSWORD" >"$users"
    chmod 600 "$users"
    : >"$log"
    ((EUID == 0)) && chown "$PG_SYSUSER:" "$conf" "$users" "$log"

    # Run in the foreground (it logs to stderr, into the log file), as
    # zk_launch does: the pidfile is then written before this returns.
    rm -f "$PGB_DIR/pgbouncer.pid"
    # AS_PG, not as_pg: a function run in the background would leave a
    # copy of this shell waiting on pgbouncer for as long as it runs.
    pg_set_as
    (
        cd "$PGB_DIR"
        # shellcheck disable=SC2016 # expanded by the inner bash
        "${AS_PG[@]}" setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$PGB_DIR/pgbouncer.pid" \
            "$PGB_BIN" "$conf" </dev/null >>"$log" 2>&1 &
    )
    wait_until 5 test -s "$PGB_DIR/pgbouncer.pid" || true
    wait_until "$START_TIMEOUT" pgb_settled || true
    if ! alive_pgbouncer; then
        dl_err "pgbouncer did not serve $PG_DB on 127.0.0.1:$PGB_PORT within ${START_TIMEOUT}s"
        log_tail "$log"
        return 1
    fi
}

stop_pgbouncer() {
    local pid
    if pid="$(pgb_pid)"; then
        # SIGTERM: close every connection and exit at once.
        stop_pid "$pid" pgbouncer
    fi
    rm -f "$PGB_DIR/pgbouncer.pid"
}
