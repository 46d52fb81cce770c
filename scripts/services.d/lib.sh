# shellcheck shell=bash disable=SC2034  # the variables are read by the services
# What every service of scripts/services shares: where state lives, how long
# a start may take, the mark its config files carry, and the helpers for
# pids, waiting, ports, logs and Go-built binaries. Sourced by
# scripts/services before the services; defines and runs nothing else.

SERVICES_DIR="${DLOCK_SERVICES_DIR:-$DLOCK_ROOT/.services}"
START_TIMEOUT="${DLOCK_SERVICES_TIMEOUT:-20}"
# First line of every config file written here; it is how a server started
# by another checkout's scripts/services is recognised.
SERVICES_MARK="# Written by dlock scripts/services; rewritten on every start."

# pid_of PIDFILE COMM: prints the pid in PIDFILE if that process is alive and
# its command name is COMM, so a stale pidfile whose pid was reused by an
# unrelated process is never mistaken for our server (nor killed).
pid_of() {
    local pidfile="$1" comm="$2" pid
    [[ -r "$pidfile" ]] || return 1
    read -r pid <"$pidfile" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
    printf '%s\n' "$pid"
}

# wait_until SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# A zombie counts as gone: it has closed its ports already, and its reaper
# (init in a container) may take a second or two to collect it.
pid_gone() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    [[ "${stat:0:1}" == Z ]]
}

# stop_pid PID NAME: TERM, then KILL if it lingers.
stop_pid() {
    local pid="$1" name="$2"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 10 pid_gone "$pid"; then
        dl_warn "$name (pid $pid) ignored SIGTERM for 10s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 pid_gone "$pid"
    fi
}

log_tail() {
    local log="$1"
    if [[ -s "$log" ]]; then
        printf '%s\n' "--- last lines of $log ---" >&2
        tail -n 25 "$log" >&2
        printf '%s\n' "---" >&2
    fi
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 ||
        dl_die "$1 not found: install the Debian package $2 (scripts/test installs it)"
}

# marked FILE: FILE was written by scripts/services (of any checkout).
marked() { [[ -n "$1" && -r "$1" ]] && [[ "$(head -n 1 "$1")" == "$SERVICES_MARK" ]]; }

# check_port_free PORT VAR: dies if anything listens on 127.0.0.1:PORT.
check_port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        dl_die "127.0.0.1:$1 is taken by something not started by scripts/services (see: ss -ltnp); stop it or set $2"
    fi
}

# Runs one service's function in a subshell with errexit in force, so a
# failing service reports and the others still get their turn. The status
# goes to RC rather than the return value: a call in a condition (if, ||)
# would switch errexit off inside the function, subshell included.
RC=0
run_isolated() {
    set +e
    (
        set -e
        "$@"
    )
    RC=$?
    set -e
}

# go_cmd: the go command that builds the services without a Debian package
# (Consul, Toxiproxy), from PATH or /usr/local/go/bin; fails if neither has
# one.
go_cmd() {
    local go
    go="$(command -v go || true)"
    [[ -n "$go" ]] || go=/usr/local/go/bin/go
    [[ -x "$go" ]] || return 1
    printf '%s\n' "$go"
}
