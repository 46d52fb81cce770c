# shellcheck shell=bash disable=SC2164  # every cd is into a state dir made before it
# scripts/services' zookeeper: a standalone server, and the zk_ helpers
# zookeeper-ensemble.sh runs its three members with (for failover tests).
# Both run with the Debian package's jars and java directly: its zkServer.sh
# and the systemd unit assume /etc/zookeeper and /var/lib/zookeeper. Client
# port:
ZK_PORT="${DLOCK_ZK_PORT:-16481}"
ZK_DIR="$SERVICES_DIR/zookeeper"
ZK_JAR=/usr/share/java/zookeeper.jar
# zookeeper.jar's manifest names its dependencies but no slf4j binding, so
# the server would log nothing; slf4j-simple (libslf4j-java, a dependency of
# the package) logs to stderr, which goes to the service's log file.
ZK_LOG_JAR=/usr/share/java/slf4j-simple.jar

# zk_4lw PORT WORD: a four-letter-word command (ruok, srvr, conf, mntr); the
# timeout covers a port held by something that accepts but never answers.
zk_4lw() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' \
        _ "$1" "$2" 2>/dev/null
}

# zk_mode PORT: standalone, leader or follower once the server on PORT
# serves requests (srvr says "not currently serving" until then).
zk_mode() { zk_4lw "$1" srvr | sed -n 's/^Mode: //p'; }

zk_ruok() { [[ "$(zk_4lw "$1" ruok)" == imok ]]; }

# zk_state_dir PORT: the state dir of the server on PORT if scripts/services
# (of any checkout) wrote its config: its dataDir is <dir>/data/version-2.
zk_state_dir() {
    local data dir
    data="$(zk_4lw "$1" conf | tr -d '\r' | sed -n 's/^dataDir=//p')"
    dir="${data%/data/version-2}"
    [[ -n "$data" && "$dir" != "$data" && -r "$dir/zoo.cfg" ]] || return 1
    [[ "$(head -n 1 "$dir/zoo.cfg")" == "$SERVICES_MARK" ]] || return 1
    printf '%s\n' "$dir"
}

# zk_serving PORT MODE_REGEX: answers ruok, serves in a matching mode, and
# was started by scripts/services.
zk_serving() {
    zk_ruok "$1" && [[ "$(zk_mode "$1")" =~ ^($2)$ ]] && zk_state_dir "$1" >/dev/null
}

# zk_pid DIR: the pid of the server whose state dir is DIR, checked against
# the process's command line (every JVM's command name is just "java").
zk_pid() {
    local dir="$1" pid
    pid="$(pid_of "$dir/zookeeper.pid" java)" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$dir/zoo.cfg" || return 1
    printf '%s\n' "$pid"
}

# zk_running DIR PORT: the server of DIR runs, configured for client port
# PORT. One configured for another port (DLOCK_ZK_*PORT* changed) is stopped.
zk_running() {
    local dir="$1" port="$2" pid
    pid="$(zk_pid "$dir")" || return 1
    grep -qxF "clientPort=$port" "$dir/zoo.cfg" && return 0
    dl_info "stopping the server of $dir: it is configured for another port"
    stop_pid "$pid" "zookeeper ($dir)"
    return 1
}

# zk_write_config DIR CLIENT_PORT [server.N=... lines]
zk_write_config() {
    local dir="$1" port="$2"
    shift 2
    mkdir -p "$dir/data"
    {
        echo "$SERVICES_MARK"
        echo "dataDir=$dir/data"
        echo "clientPort=$port"
        echo "clientPortAddress=127.0.0.1"
        # dlock's tests use short TTLs, and the session timeout a client may
        # ask for is otherwise clamped to [2, 20] x tickTime.
        echo "tickTime=200"
        echo "minSessionTimeout=400"
        echo "maxSessionTimeout=60000"
        echo "initLimit=10"
        echo "syncLimit=5"
        # The conformance suite opens many sessions from 127.0.0.1 (default: 60).
        echo "maxClientCnxns=0"
        # Health checks (ruok, srvr, conf) and debugging (mntr, cons, ...).
        echo "4lw.commands.whitelist=*"
        # The admin server would listen on 0.0.0.0:8080.
        echo "admin.enableServer=false"
        # Test data: no fsync per write (a killed JVM loses nothing anyway).
        echo "forceSync=no"
        echo "autopurge.purgeInterval=1"
        if (($#)); then
            printf '%s\n' "$@"
            # Quorum and election ports on 127.0.0.1 only, as written above.
            echo "quorumListenOnAllIPs=false"
            echo "standaloneEnabled=false"
            echo "reconfigEnabled=false"
        fi
    } >"$dir/zoo.cfg"
}

# zk_launch DIR: starts the server configured in DIR/zoo.cfg in the
# background, in its own session so that a Ctrl-C in the terminal that
# started it does not reach it.
zk_launch() {
    local dir="$1"
    : >"$dir/zookeeper.log"
    rm -f "$dir/zookeeper.pid"
    # The pidfile is written by the process that then becomes java, whether
    # or not setsid had to fork.
    (
        cd "$dir"
        # shellcheck disable=SC2016 # expanded by the inner bash
        setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$dir/zookeeper.pid" \
            java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:-UsePerfData \
            -XX:ErrorFile="$dir/hs_err_%p.log" -Djava.net.preferIPv4Stack=true \
            -Dorg.slf4j.simpleLogger.showDateTime=true \
            -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
            -Dzookeeper.jmx.log4j.disable=true \
            -cp "$ZK_JAR:$ZK_LOG_JAR" org.apache.zookeeper.server.quorum.QuorumPeerMain \
            "$dir/zoo.cfg" </dev/null >>"$dir/zookeeper.log" 2>&1 &
    )
    # Until the pidfile exists the server cannot be stopped by pid.
    wait_until 5 test -s "$dir/zookeeper.pid" || true
}

# Up, or its JVM died already: no need to wait longer.
zk_settled() { # DIR PORT MODE_REGEX
    zk_serving "$2" "$3" || ! zk_pid "$1" >/dev/null
}

zk_need() {
    need_cmd java default-jre-headless
    need_cmd setsid util-linux
    [[ -r "$ZK_JAR" ]] || dl_die "$ZK_JAR not found: install the Debian package zookeeper (scripts/test installs it)"
    [[ -r "$ZK_LOG_JAR" ]] || dl_die "$ZK_LOG_JAR not found: install the Debian package libslf4j-java"
}

# zk_check_port_free PORT: dies if something not started from DIR answers.
zk_check_port_free() {
    local port="$1" other
    if zk_ruok "$port"; then
        other="$(zk_4lw "$port" conf | tr -d '\r' | sed -n 's/^dataDir=//p')"
        dl_die "127.0.0.1:$port already serves a ZooKeeper not started by scripts/services (dataDir: ${other:-unknown}); stop it or set DLOCK_ZK_*PORT*"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        dl_die "127.0.0.1:$port is taken by something other than ZooKeeper (see: ss -ltnp)"
    fi
}

# zk_stop_dir DIR NAME: stops the server of DIR if it runs.
zk_stop_dir() {
    local dir="$1" name="$2" pid
    if pid="$(zk_pid "$dir")"; then
        stop_pid "$pid" "$name"
    fi
    rm -f "$dir/zookeeper.pid"
}

alive_zookeeper() { zk_serving "$ZK_PORT" standalone; }

url_zookeeper() { printf 'zk://127.0.0.1:%s\n' "$ZK_PORT"; }

start_zookeeper() {
    zk_need
    if ! zk_running "$ZK_DIR" "$ZK_PORT"; then
        zk_check_port_free "$ZK_PORT"
        zk_write_config "$ZK_DIR" "$ZK_PORT"
        zk_launch "$ZK_DIR"
    fi
    wait_until "$START_TIMEOUT" zk_settled "$ZK_DIR" "$ZK_PORT" standalone || true
    if ! alive_zookeeper; then
        dl_err "zookeeper did not serve on 127.0.0.1:$ZK_PORT within ${START_TIMEOUT}s"
        log_tail "$ZK_DIR/zookeeper.log"
        return 1
    fi
}

stop_zookeeper() { zk_stop_dir "$ZK_DIR" zookeeper; }
