# shellcheck shell=bash disable=SC2164  # every cd is into a state dir made before it
# scripts/services' postgres: PostgreSQL run with the Debian package's
# binaries directly (the postgresql-common wrappers and pg_ctlcluster assume
# /etc/postgresql and /var/lib/postgresql). pgbouncer.sh puts PgBouncer in
# front of it in transaction pooling, the mode in which dlock must refuse
# advisory locks and use leases, with the settings and pg_ helpers here.
PG_PORT="${DLOCK_PG_PORT:-16432}"
PG_BIN="${DLOCK_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DIR="$SERVICES_DIR/postgres"
# What the URLs log in as. The superuser "postgres" is reachable only
# through the Unix socket in $PG_DIR/run, and only by the server's own OS
# user (peer authentication), for the setup done here.
PG_ROLE=dlock
PG_PASSWORD=dlock-pw
PG_DB=dlock
# initdb, postgres and pgbouncer refuse to run as root; as root they run as
# this system user, created on first use.
PG_SYSUSER=dlock-pg

# pg_set_as: sets AS_PG to the command prefix that runs a command as the OS
# user owning the servers' files (nothing when not root). setpriv rather than
# runuser or su: it execs, so a server it launches is not left with a root
# process waiting on it, and no PAM session is opened.
AS_PG=()
pg_set_as() {
    AS_PG=()
    if ((EUID == 0)); then
        AS_PG=(setpriv --reuid="$PG_SYSUSER" --regid="$(id -g "$PG_SYSUSER")" --init-groups
               --reset-env --)
    fi
}

as_pg() {
    pg_set_as
    "${AS_PG[@]}" "$@"
}

pg_os_user() {
    if ((EUID == 0)); then printf '%s\n' "$PG_SYSUSER"; else id -un; fi
}

pg_ensure_sysuser() {
    ((EUID == 0)) || return 0
    id -u "$PG_SYSUSER" >/dev/null 2>&1 && return 0
    need_cmd useradd passwd
    dl_info "creating the system user $PG_SYSUSER for postgres and pgbouncer"
    # Fails if another checkout created it meanwhile; the id check decides.
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "dlock scripts/services" "$PG_SYSUSER" || true
    id -u "$PG_SYSUSER" >/dev/null 2>&1 || dl_die "could not create the system user $PG_SYSUSER"
}

# pg_own DIR...: creates DIR (mode 0700) owned by the server's OS user.
pg_own() {
    mkdir -p "$@"
    chmod 700 "$@"
    if ((EUID == 0)); then
        chown "$PG_SYSUSER:" "$@"
    fi
}

# The servers' user must reach the state dir: as root that takes every
# parent directory being searchable by others.
pg_check_reachable() {
    as_pg test -w "$1" ||
        dl_die "$(pg_os_user) cannot write to $1 (a parent directory not searchable by others?); chmod o+x it or set DLOCK_SERVICES_DIR"
}

# pg_query PORT DB SQL: one query as $PG_ROLE over TCP, unaligned and
# tuples only. The timeout covers a port held by something that accepts but
# never answers, and a pooler waiting for a server that is down.
pg_query() {
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=2 timeout 3 "$PG_BIN/psql" -X -A -t -q \
        -h 127.0.0.1 -p "$1" -U "$PG_ROLE" -d "$2" -c "$3" 2>/dev/null
}

# pg_admin [PSQL ARGS...]: psql as the superuser through the socket.
pg_admin() {
    (
        cd "$PG_DIR"
        as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/run" -p "$PG_PORT" \
            -U postgres -d postgres "$@"
    )
}

# sql_quote STRING: STRING as an SQL (and postgresql.conf) string literal.
sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

pg_need() {
    local b
    for b in postgres pg_ctl initdb psql pg_isready; do
        [[ -x "$PG_BIN/$b" ]] ||
            dl_die "$PG_BIN/$b not found: install the Debian package postgresql-15 (scripts/test installs it) or set DLOCK_PG_BIN"
    done
    need_cmd setpriv util-linux
    need_cmd setsid util-linux
}

# The pid of the postmaster of $PG_DIR/data (its pidfile's first line).
pg_pid() { pid_of "$PG_DIR/data/postmaster.pid" postgres; }

# A PostgreSQL started by scripts/services from any checkout counts as up
# (see alive_redis, redis.sh): its postgresql.conf names itself in a setting
# of our own, which any role can read, unlike config_file.
alive_postgres() {
    [[ -x "$PG_BIN/psql" ]] || return 1
    marked "$(pg_query "$PG_PORT" "$PG_DB" 'SHOW dlock_services.config_file')"
}

# Advisory mode (the default) and lease mode, direct; and lease mode through
# PgBouncer when it runs, so that the conformance suite covers transaction
# pooling. PgBouncer's own URL, the advisory one, is not here: dlock refuses
# it, and the postgres cases check that through DLOCK_TEST_PGBOUNCER_URL.
url_postgres() {
    local base="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1"
    printf '%s:%s/%s\n' "$base" "$PG_PORT" "$PG_DB"
    printf '%s:%s/%s?mode=lease\n' "$base" "$PG_PORT" "$PG_DB"
    if alive_pgbouncer; then
        # shellcheck disable=SC2153 # pgbouncer.sh's
        printf '%s:%s/%s?mode=lease\n' "$base" "$PGB_PORT" "$PG_DB"
    fi
}

status_postgres() {
    local pid
    pid="$(pg_pid)" || return 1
    printf 'up (pid %s) but not answering as %s on 127.0.0.1:%s\n' "$pid" "$PG_ROLE" "$PG_PORT"
}

# pg_running: the postmaster of $PG_DIR runs, on PG_PORT (its pidfile's
# fourth line). One on another port (DLOCK_PG_PORT changed) is stopped.
pg_running() {
    pg_pid >/dev/null || return 1
    [[ "$(sed -n 4p "$PG_DIR/data/postmaster.pid")" == "$PG_PORT" ]] && return 0
    dl_info "stopping the postgres of $PG_DIR: it is configured for another port"
    stop_postgres
    return 1
}

# A fresh cluster, made aside and moved into place so that an interrupted
# initdb never leaves a half-made data dir behind.
pg_initdb() {
    local tmp="$PG_DIR/data.initdb"
    rm -rf -- "$tmp"
    dl_info "postgres: creating a cluster in $PG_DIR/data"
    # The authentication options only keep initdb from warning: pg_hba.conf
    # is rewritten before the first start.
    if ! (cd "$PG_DIR" && as_pg "$PG_BIN/initdb" -D "$tmp" -U postgres -E UTF8 --no-locale \
        --auth-local=peer --auth-host=scram-sha-256 --no-sync --no-instructions \
        >"$PG_DIR/initdb.log" 2>&1); then
        log_tail "$PG_DIR/initdb.log"
        return 1
    fi
    # Kept, and included from the postgresql.conf written here: initdb sized
    # shared memory and picked the time zone for this machine.
    mv "$tmp/postgresql.conf" "$tmp/postgresql.initdb.conf"
    mv "$tmp" "$PG_DIR/data"
}

pg_write_config() {
    local data="$PG_DIR/data" self
    self="$(sql_quote "$data/postgresql.conf")"
    {
        echo "$SERVICES_MARK"
        echo "include 'postgresql.initdb.conf'"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = $(sql_quote "$PG_DIR/run")"
        echo "unix_socket_permissions = 0700"
        # Conformance runs open many sessions at once, and hold thousands of
        # advisory locks, which share one lock table sized by these two.
        echo "max_connections = 300"
        echo "max_locks_per_transaction = 256"
        # Test data: no WAL flush wait per commit (a crash loses the last
        # commits, never consistency), as ZooKeeper's forceSync=no.
        echo "synchronous_commit = off"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        # How alive_postgres tells a server started here from any other.
        echo "dlock_services.config_file = $self"
    } >"$data/postgresql.conf"
    {
        echo "$SERVICES_MARK"
        echo "local all postgres peer map=services"
        echo "host all all 127.0.0.1/32 scram-sha-256"
    } >"$data/pg_hba.conf"
    {
        echo "$SERVICES_MARK"
        echo "services $(pg_os_user) postgres"
    } >"$data/pg_ident.conf"
    if ((EUID == 0)); then
        chown "$PG_SYSUSER:" "$data/postgresql.conf" "$data/pg_hba.conf" "$data/pg_ident.conf"
    fi
}

# The role and database the URLs name; run on every start, so a password or
# owner changed by hand is put back.
pg_setup() {
    pg_admin -f - >/dev/null <<EOSQL
SELECT 'CREATE ROLE $PG_ROLE LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') \gexec
ALTER ROLE $PG_ROLE LOGIN NOSUPERUSER PASSWORD $(sql_quote "$PG_PASSWORD");
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_ROLE'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
ALTER DATABASE $PG_DB OWNER TO $PG_ROLE;
EOSQL
}

# As the superuser: any other would log a failed login per poll.
pg_ready() {
    (cd "$PG_DIR" && as_pg "$PG_BIN/pg_isready" -q -h "$PG_DIR/run" -p "$PG_PORT" -U postgres -d postgres)
}

# Up, or its postmaster died already: no need to wait longer.
pg_settled() { pg_ready || ! pg_pid >/dev/null; }

start_postgres() {
    pg_need
    pg_ensure_sysuser
    local sock="$PG_DIR/run/.s.PGSQL.$PG_PORT" log="$PG_DIR/postgres.log"
    # The kernel's limit on a Unix socket's path (sun_path).
    ((${#sock} < 108)) ||
        dl_die "the socket path $sock is too long for a Unix socket; set DLOCK_SERVICES_DIR to a shorter directory"
    if ! pg_running; then
        check_port_free "$PG_PORT" DLOCK_PG_PORT
        pg_own "$PG_DIR" "$PG_DIR/run"
        pg_check_reachable "$PG_DIR"
        [[ -s "$PG_DIR/data/PG_VERSION" ]] || pg_initdb
        pg_write_config
        : >"$log"
        ((EUID == 0)) && chown "$PG_SYSUSER:" "$log"
        # pg_ctl puts the postmaster in a session of its own, and -w waits
        # until it accepts connections or has died.
        if ! (cd "$PG_DIR" && as_pg "$PG_BIN/pg_ctl" start -D "$PG_DIR/data" -l "$log" \
            -w -t "$START_TIMEOUT" -s </dev/null); then
            dl_err "postgres did not start on 127.0.0.1:$PG_PORT within ${START_TIMEOUT}s"
            log_tail "$log"
            return 1
        fi
    fi
    # Already running (a start interrupted before the setup below, say):
    # it may still be starting up.
    wait_until "$START_TIMEOUT" pg_settled || true
    if ! pg_ready || ! pg_setup; then
        dl_err "postgres on 127.0.0.1:$PG_PORT is not ready, or setting up role and database $PG_DB failed"
        log_tail "$log"
        return 1
    fi
    if ! alive_postgres; then
        dl_err "postgres does not answer as $PG_ROLE on 127.0.0.1:$PG_PORT"
        log_tail "$log"
        return 1
    fi
}

stop_postgres() {
    local pid
    pid="$(pg_pid)" || return 0
    # Fast: rolls back and disconnects clients (pgbouncer's pool included)
    # instead of waiting for them to leave.
    if ! (cd "$PG_DIR" && as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DIR/data" -m fast -w -t 30 -s); then
        dl_warn "pg_ctl stop failed; signalling postgres (pid $pid)"
        # SIGINT is the postmaster's fast shutdown; SIGTERM waits for clients.
        kill -INT "$pid" 2>/dev/null || true
        wait_until 10 pid_gone "$pid" || stop_pid "$pid" postgres
    fi
}

# pg-smart-stop: begins a smart shutdown and returns at once; the server
# refuses new sessions and ends when its last one does.
cmd_pg_smart_stop() {
    pg_pid >/dev/null || dl_die "postgres is not running (scripts/services start postgres)"
    (cd "$PG_DIR" && as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DIR/data" -m smart -W -s)
}
