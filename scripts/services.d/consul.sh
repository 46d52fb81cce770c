# shellcheck shell=bash
# scripts/services' consul: one Consul agent in dev mode, a single server
# that elects itself, keeps everything in memory (a restart forgets every
# key and session), has ACLs off and pretty-prints every JSON answer. Its
# binary is $(dl_consul_bin) (scripts/lib.sh): release DLOCK_CONSUL_VERSION,
# built here from the Go module proxy's source on the first start, or
# CONSUL_BIN. Besides its HTTP API (what dlock speaks) it listens on
# 127.0.0.1 for its server RPC and LAN gossip (TCP and UDP); DNS, gRPC,
# HTTPS and WAN gossip are off.
CONSUL_PORT="${DLOCK_CONSUL_PORT:-18500}"
CONSUL_SERVER_PORT="${DLOCK_CONSUL_SERVER_PORT:-18300}"
CONSUL_SERF_LAN_PORT="${DLOCK_CONSUL_SERF_LAN_PORT:-18301}"
CONSUL_DIR="$SERVICES_DIR/consul"
# Sessions name this node, and their default check is its serfHealth.
CONSUL_NODE=dlock-consul
# 1 for consul-persist (consul-persist.sh): a server with a data dir instead of -dev.
CONSUL_PERSIST=0

# consul_curl PATH [CURL ARGS...]: a request to the agent's HTTP API; the
# timeout covers a port held by something that accepts but never answers.
consul_curl() {
    local path="$1"
    shift
    # -q first: no ~/.curlrc.
    curl -q -s --max-time 2 "$@" "http://127.0.0.1:$CONSUL_PORT$path" 2>/dev/null
}

# consul_state_dir: the state dir of the agent on CONSUL_PORT if
# scripts/services (of any checkout) wrote its config: the config gives the
# node a meta key naming the config file, which /v1/agent/self shows.
consul_state_dir() {
    local conf
    conf="$(consul_curl /v1/agent/self |
        sed -n 's/.*"dlock_services_config": *"\([^"]*\)".*/\1/p' | head -n 1)"
    [[ "$conf" == */consul.hcl ]] && marked "$conf" || return 1
    printf '%s\n' "${conf%/consul.hcl}"
}

# consul_ready: the agent has a leader (itself), and its node is in the
# catalog with serfHealth passing, which a session with the default checks
# (consul lock's) requires; both come a moment after the HTTP API answers.
consul_ready() {
    [[ "$(consul_curl /v1/status/leader)" =~ ^\"[^\"]+\"$ ]] || return 1
    consul_curl "/v1/health/node/$CONSUL_NODE" -G \
        --data-urlencode 'filter=CheckID == "serfHealth" and Status == "passing"' |
        grep -q '"CheckID": *"serfHealth"'
}

# Ready, and started by scripts/services (of any checkout, see alive_redis,
# redis.sh).
alive_consul() {
    command -v curl >/dev/null 2>&1 || return 1
    consul_ready && consul_state_dir >/dev/null
}

# lock_delay=1s: the shared suite waits 10 s for a lock whose holder's
# session it destroyed, shorter than Consul's default lock-delay of 15 s;
# the consul cases test the lock-delay itself, at 3 s.
url_consul() { printf 'consul://127.0.0.1:%s?lock_delay=1s\n' "$CONSUL_PORT"; }

# consul_pid: the pid of the agent of CONSUL_DIR, checked against its
# command line (it runs as "consul", through a symlink in CONSUL_DIR).
consul_pid() {
    local pid
    pid="$(pid_of "$CONSUL_DIR/consul.pid" consul)" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null |
        grep -qxF -- "-config-file=$CONSUL_DIR/consul.hcl" || return 1
    printf '%s\n' "$pid"
}

status_consul() {
    local pid
    pid="$(consul_pid)" || return 1
    if consul_curl /v1/status/leader >/dev/null; then
        printf 'up (pid %s) but without a leader or a passing serfHealth on 127.0.0.1:%s\n' "$pid" "$CONSUL_PORT"
    else
        printf 'up (pid %s) but not answering on 127.0.0.1:%s\n' "$pid" "$CONSUL_PORT"
    fi
}

# consul_go: the go command (go_cmd); dies when there is none.
consul_go() {
    go_cmd ||
        dl_die "consul: no Go toolchain on PATH or in /usr/local/go/bin to build Consul $DLOCK_CONSUL_VERSION with; install Go, or set CONSUL_BIN to a consul binary"
}

# consul_build OUT: builds release DLOCK_CONSUL_VERSION's agent into OUT.
# The source is the module github.com/hashicorp/consul from the Go module
# proxy, copied aside: its go.mod replaces its sibling modules (api, sdk,
# proto-public, ...) with directories the module's archive does not hold,
# so those replacements are dropped and the published versions it requires
# are used. Go's module and build caches make a second build quick. Output
# goes to OUT.log, with a progress line now and then on stderr.
consul_build() {
    local out="$1" go tmp dir log="$1.log" m
    local module="github.com/hashicorp/consul@$DLOCK_CONSUL_VERSION"
    go="$(consul_go)"
    dl_info "consul: building Consul $DLOCK_CONSUL_VERSION with $("$go" version) into $out"
    dl_info "consul: this happens once; it takes about 12 minutes on two cores with nothing cached (log: $log)"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/dlock-consul-build.XXXXXX")"
    # Runs in consul_ensure_bin's subshell, so it fires when that ends,
    # after this function's locals are gone: expanded now. The module
    # cache's files are read-only, and so are their copies.
    # shellcheck disable=SC2064
    trap "chmod -R u+w -- $(printf %q "$tmp") 2>/dev/null; rm -rf -- $(printf %q "$tmp")" EXIT
    : >"$log"
    dl_info "consul: downloading the source of $module"
    # Outside any module, so that go.mod files around TMPDIR play no part.
    if ! (cd "$tmp" && "$go" mod download -json "$module") >"$tmp/download.json" 2>>"$log"; then
        cat "$tmp/download.json" >>"$log"
        log_tail "$log"
        dl_die "consul: go mod download $module failed"
    fi
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$tmp/download.json")"
    [[ -n "$dir" && -r "$dir/go.mod" ]] ||
        dl_die "consul: go mod download $module gave no source directory: $(cat "$tmp/download.json")"
    cp -R -- "$dir" "$tmp/src"
    chmod -R u+w -- "$tmp/src"
    # Every replacement by a local path (=> ./x or => ../x).
    local -a local_mods
    mapfile -t local_mods < <(sed -n 's/^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]\{1,\}\)\([[:space:]]\{1,\}v[^[:space:]]*\)\{0,1\}[[:space:]]*=>[[:space:]]*\.\{1,2\}\/.*/\2/p' "$tmp/src/go.mod")
    for m in "${local_mods[@]}"; do
        dl_info "consul: using the published $m instead of the directory go.mod names"
        (cd "$tmp/src" && "$go" mod edit -dropreplace="$m")
    done
    if grep -q '=>[[:space:]]*\.\{1,2\}/' "$tmp/src/go.mod"; then
        dl_die "consul: $module's go.mod still replaces a module with a local directory: $(grep '=>' "$tmp/src/go.mod")"
    fi
    dl_info "consul: compiling (the sibling modules and about 400 dependencies are downloaded first, then about 2000 packages compiled)"
    # -mod=mod: go.sum lacks the sums of the sibling modules, which were
    # replaced; the go command checks them against the checksum database.
    # -v lists the packages as they are compiled, for the progress lines.
    local rc
    set +e
    (cd "$tmp/src" && CGO_ENABLED=0 "$go" build -mod=mod -buildvcs=false -trimpath -v \
        -ldflags='-s -w' -o "$out.partial" .) 2>&1 | tee -a "$log" | awk '
        /^go: downloading / { if (++d % 100 == 0) { printf "==> consul: %d modules downloaded\n", d > "/dev/stderr"; fflush("/dev/stderr") } next }
        /^[A-Za-z0-9._~\/-]+$/ { if (++p % 250 == 0) { printf "==> consul: %d packages compiled\n", p > "/dev/stderr"; fflush("/dev/stderr") } }'
    rc="${PIPESTATUS[0]}"
    set -e
    if ((rc != 0)); then
        rm -f -- "$out.partial"
        log_tail "$log"
        dl_die "consul: building Consul $DLOCK_CONSUL_VERSION failed (exit $rc; full log: $log)"
    fi
    local want="Consul $DLOCK_CONSUL_VERSION" got
    got="$("$out.partial" version 2>&1 | head -n 1)" || true
    if [[ "$got" != "$want" ]]; then
        rm -f -- "$out.partial"
        dl_die "consul: the binary built says \"$got\", not \"$want\""
    fi
    mv -f -- "$out.partial" "$out"
}

# consul_ensure_bin: sets CONSUL_EXE to the consul binary's path, building
# it first if it is not there yet, in a subshell holding a lock in the cache
# directory, so that two checkouts starting at once build it only once. Dies
# (never skips) when it cannot. Not for $(...), where errexit is off.
CONSUL_EXE=""
consul_ensure_bin() {
    local start
    CONSUL_EXE="$(dl_consul_bin)"
    if [[ -n "${CONSUL_BIN:-}" ]]; then
        [[ -x "$CONSUL_EXE" && ! -d "$CONSUL_EXE" ]] ||
            dl_die "CONSUL_BIN=$CONSUL_BIN ($CONSUL_EXE) is not an executable file"
        return 0
    fi
    [[ -x "$CONSUL_EXE" ]] && return 0
    mkdir -p "$(dirname "$CONSUL_EXE")"
    start="$SECONDS"
    (
        exec 8>"$CONSUL_EXE.lock"
        if command -v flock >/dev/null 2>&1; then
            flock -w 3600 8 || dl_die "consul: another build holds $CONSUL_EXE.lock"
        fi
        # Unless the holder of the lock built it while this one waited.
        if [[ ! -x "$CONSUL_EXE" ]]; then
            consul_build "$CONSUL_EXE"
        fi
    )
    dl_ok "consul: $CONSUL_EXE is ready (in $((SECONDS - start))s)"
}

# consul_config BIN: prints the agent's config file; the command line adds
# only -dev. The binary is named in a comment, so that a new one (another
# DLOCK_CONSUL_VERSION or CONSUL_BIN) restarts the agent too.
consul_config() {
    echo "$SERVICES_MARK"
    echo "# binary: $1"
    echo "node_name = \"$CONSUL_NODE\""
    if ((CONSUL_PERSIST)); then
        # A server of its own that keeps its state across restarts.
        echo "server = true"
        echo "bootstrap_expect = 1"
        echo "data_dir = \"$CONSUL_DIR/data\""
    fi
    echo 'bind_addr = "127.0.0.1"'
    echo 'client_addr = "127.0.0.1"'
    echo 'advertise_addr = "127.0.0.1"'
    echo "ports {"
    echo "  http = $CONSUL_PORT"
    echo "  server = $CONSUL_SERVER_PORT"
    echo "  serf_lan = $CONSUL_SERF_LAN_PORT"
    echo "  serf_wan = -1"
    echo "  https = -1"
    echo "  dns = -1"
    echo "  grpc = -1"
    echo "  grpc_tls = -1"
    echo "}"
    # How alive_consul tells an agent started here from any other.
    echo "node_meta {"
    echo "  dlock_services_config = \"$CONSUL_DIR/consul.hcl\""
    echo "}"
    # Dev mode logs every request at DEBUG, which a benchmark would turn
    # into gigabytes.
    echo 'log_level = "INFO"'
    echo "disable_update_check = true"
}

# consul_running CONFIG: the agent of CONSUL_DIR runs with CONFIG. One with
# another config (DLOCK_CONSUL_*PORT changed, a new binary, or this script
# did) is stopped, so that it is started afresh with CONFIG.
consul_running() {
    local pid
    pid="$(consul_pid)" || return 1
    [[ "$(cat "$CONSUL_DIR/consul.hcl")" == "$1" ]] && return 0
    dl_info "stopping the consul of $CONSUL_DIR: its configuration changed"
    stop_pid "$pid" consul
    return 1
}

# Ready, or it died already: no need to wait longer.
consul_settled() { consul_ready || ! consul_pid >/dev/null; }

start_consul() {
    need_cmd curl curl
    need_cmd setsid util-linux
    local conf
    consul_ensure_bin
    conf="$(consul_config "$CONSUL_EXE")"
    if ! consul_running "$conf"; then
        check_port_free "$CONSUL_PORT" DLOCK_CONSUL_PORT
        check_port_free "$CONSUL_SERVER_PORT" DLOCK_CONSUL_SERVER_PORT
        check_port_free "$CONSUL_SERF_LAN_PORT" DLOCK_CONSUL_SERF_LAN_PORT
        mkdir -p "$CONSUL_DIR"
        printf '%s\n' "$conf" >"$CONSUL_DIR/consul.hcl"
        # Through a symlink, so that the process is "consul" (pid_of checks
        # the command name) whatever the binary's file is called.
        ln -sfn -- "$CONSUL_EXE" "$CONSUL_DIR/consul"
        : >"$CONSUL_DIR/consul.log"
        rm -f "$CONSUL_DIR/consul.pid"
        # In its own session (see zk_launch, zookeeper.sh); -dev keeps no data
        # dir.
        local -a mode=(-dev)
        ((CONSUL_PERSIST)) && mode=()
        (
            cd "$CONSUL_DIR"
            # shellcheck disable=SC2016 # expanded by the inner bash
            setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$CONSUL_DIR/consul.pid" \
                "$CONSUL_DIR/consul" agent "${mode[@]}" -config-file="$CONSUL_DIR/consul.hcl" \
                </dev/null >>"$CONSUL_DIR/consul.log" 2>&1 &
        )
        # Until the pidfile exists the agent cannot be stopped by pid.
        wait_until 5 test -s "$CONSUL_DIR/consul.pid" || true
    fi
    wait_until "$START_TIMEOUT" consul_settled || true
    if ! alive_consul; then
        dl_err "consul did not have a leader and a passing serfHealth on 127.0.0.1:$CONSUL_PORT within ${START_TIMEOUT}s"
        log_tail "$CONSUL_DIR/consul.log"
        return 1
    fi
}

stop_consul() {
    local pid
    if pid="$(consul_pid)"; then
        # SIGTERM: a dev agent shuts down at once (and forgets everything).
        stop_pid "$pid" consul
    fi
    rm -f "$CONSUL_DIR/consul.pid"
}
