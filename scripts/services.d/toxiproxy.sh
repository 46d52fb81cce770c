# shellcheck shell=bash disable=SC2164  # every cd is into a state dir made before it
# scripts/services' toxiproxy: the fault proxy of the fault suite
# (tests/faults): clients reach a store through a proxy of it, and the suite
# adds latency, resets, blackholes and one-way loss to one client's link
# through the HTTP API on TOXI_PORT. Built from the Go module proxy once,
# like Consul (DLOCK_TOXIPROXY_VERSION in scripts/lib.sh); TOXIPROXY_BIN
# names a binary to use instead.
TOXI_PORT="${DLOCK_TOXIPROXY_PORT:-18474}"
TOXI_DIR="$SERVICES_DIR/toxiproxy"

toxi_pid() {
    local pid
    pid="$(pid_of "$TOXI_DIR/toxiproxy.pid" toxiproxy)" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$TOXI_PORT" || return 1
    printf '%s\n' "$pid"
}

toxi_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$TOXI_PORT/version" >/dev/null 2>&1
}

alive_toxiproxy() {
    command -v curl >/dev/null 2>&1 || return 1
    toxi_pid >/dev/null && toxi_ready
}

url_toxiproxy() { printf 'http://127.0.0.1:%s\n' "$TOXI_PORT"; }

# toxi_ensure_bin: sets TOXI_EXE, building it first under a lock in the
# cache directory (see consul_ensure_bin, consul.sh). Dies when it cannot.
TOXI_EXE=""
toxi_ensure_bin() {
    TOXI_EXE="$(dl_toxiproxy_bin)"
    if [[ -n "${TOXIPROXY_BIN:-}" ]]; then
        [[ -x "$TOXI_EXE" && ! -d "$TOXI_EXE" ]] ||
            dl_die "TOXIPROXY_BIN=$TOXIPROXY_BIN ($TOXI_EXE) is not an executable file"
        return 0
    fi
    [[ -x "$TOXI_EXE" ]] && return 0
    mkdir -p "$(dirname "$TOXI_EXE")"
    (
        exec 8>"$TOXI_EXE.lock"
        if command -v flock >/dev/null 2>&1; then
            flock -w 1800 8 || dl_die "toxiproxy: another build holds $TOXI_EXE.lock"
        fi
        [[ -x "$TOXI_EXE" ]] && exit 0
        local go tmp log="$TOXI_EXE.log"
        go="$(go_cmd)" ||
            dl_die "toxiproxy: no Go toolchain on PATH or in /usr/local/go/bin to build Toxiproxy $DLOCK_TOXIPROXY_VERSION with; install Go, or set TOXIPROXY_BIN to a toxiproxy binary"
        tmp="$(mktemp -d "${TMPDIR:-/tmp}/dlock-toxiproxy-build.XXXXXX")"
        # shellcheck disable=SC2064 # expanded now: the locals are gone by then
        trap "chmod -R u+w -- $(printf %q "$tmp") 2>/dev/null; rm -rf -- $(printf %q "$tmp")" EXIT
        dl_info "toxiproxy: building Toxiproxy $DLOCK_TOXIPROXY_VERSION with $("$go" version) (log: $log)"
        # Outside any module, so go.mod files around TMPDIR play no part.
        if ! (cd "$tmp" && GOBIN="$tmp/bin" "$go" install \
                "github.com/Shopify/toxiproxy/v2/cmd/server@$DLOCK_TOXIPROXY_VERSION") >"$log" 2>&1; then
            log_tail "$log"
            dl_die "toxiproxy: go install failed"
        fi
        mv -f -- "$tmp/bin/server" "$TOXI_EXE"
    )
    dl_ok "toxiproxy: $TOXI_EXE is ready"
}

start_toxiproxy() {
    need_cmd curl curl
    need_cmd setsid util-linux
    toxi_ensure_bin
    check_port_free "$TOXI_PORT" DLOCK_TOXIPROXY_PORT
    mkdir -p "$TOXI_DIR"
    ln -sfn -- "$TOXI_EXE" "$TOXI_DIR/toxiproxy"
    : >"$TOXI_DIR/toxiproxy.log"
    rm -f "$TOXI_DIR/toxiproxy.pid"
    (
        cd "$TOXI_DIR"
        # shellcheck disable=SC2016 # expanded by the inner bash
        setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$TOXI_DIR/toxiproxy.pid" \
            "$TOXI_DIR/toxiproxy" -host 127.0.0.1 -port "$TOXI_PORT" \
            </dev/null >>"$TOXI_DIR/toxiproxy.log" 2>&1 &
    )
    wait_until "$START_TIMEOUT" toxi_ready || true
    if ! alive_toxiproxy; then
        dl_err "toxiproxy did not answer on 127.0.0.1:$TOXI_PORT within ${START_TIMEOUT}s"
        log_tail "$TOXI_DIR/toxiproxy.log"
        return 1
    fi
}

stop_toxiproxy() {
    local pid
    if pid="$(toxi_pid)"; then
        stop_pid "$pid" toxiproxy
    fi
    rm -f "$TOXI_DIR/toxiproxy.pid"
}
