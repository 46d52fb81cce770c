# shellcheck shell=bash
# scripts/services' etcd: etcd 3.4 from the Debian packages, run as the
# invoking user, as two single-member servers: a plain one, and one that
# takes only HTTPS with a client certificate and has authentication on (user
# dlock, role dlock with read-write on every key); and the etcd_ helpers
# etcd-cluster.sh runs its three members with. Client ports (each member's
# peer port is its client port + 1: 12380 and 12390 by default):
ETCD_PORT="${DLOCK_ETCD_PORT:-12379}"
ETCD_TLS_PORT="${DLOCK_ETCD_TLS_PORT:-12389}"
ETCD_BIN="${DLOCK_ETCD_BIN:-/usr/bin/etcd}"
ETCD_CTL_BIN="${DLOCK_ETCD_CTL_BIN:-/usr/bin/etcdctl}"
ETCD_DIR="$SERVICES_DIR/etcd"
ETCD_PLAIN_DIR="$ETCD_DIR/plain"
ETCD_TLS_DIR="$ETCD_DIR/tls"
# The TLS instance's throwaway CA, server and client certificates, made on
# the first start and kept (a client may have the paths in its URL).
ETCD_CERTS="$ETCD_DIR/certs"
# The TLS instance's users. root (role root) is what `auth enable` requires
# and what the setup here runs as once auth is on; the URL logs in as dlock.
ETCD_ROOT_PASSWORD=dlock-root-pw
ETCD_USER=dlock
ETCD_PASSWORD=dlock-pw

# etcd_curl PORT PATH [CURL ARGS...]: a request to the server on PORT, over
# HTTPS with the client certificate if PORT is the TLS instance's. The
# timeout covers a port held by something that accepts but never answers.
etcd_curl() {
    local port="$1" path="$2" scheme=http
    shift 2
    local -a certs=()
    if [[ "$port" == "$ETCD_TLS_PORT" ]]; then
        scheme=https
        certs=(--cacert "$ETCD_CERTS/ca.pem" --cert "$ETCD_CERTS/client.pem"
               --key "$ETCD_CERTS/client-key.pem")
    fi
    # -q first: no ~/.curlrc.
    curl -q -s --max-time 2 "${certs[@]}" "$@" "$scheme://127.0.0.1:$port$path" 2>/dev/null
}

# /health is true once the member has a leader and no alarm.
etcd_healthy() { [[ "$(etcd_curl "$1" /health)" == *'"health":"true"'* ]]; }

# etcd_state_dir PORT: the state dir of the server on PORT if scripts/services
# (of any checkout) wrote its config: /debug/vars shows its command line,
# "etcd --config-file <dir>/etcd.conf.yml".
etcd_state_dir() {
    local conf
    conf="$(etcd_curl "$1" /debug/vars |
        sed -n 's/^"cmdline": \[.*"--config-file","\([^"]*\)".*/\1/p')"
    [[ "$conf" == */etcd.conf.yml ]] && marked "$conf" || return 1
    printf '%s\n' "${conf%/etcd.conf.yml}"
}

# etcd_serving PORT: healthy, and started by scripts/services.
etcd_serving() { etcd_healthy "$1" && etcd_state_dir "$1" >/dev/null; }

# etcd_leader PORT: the member id of the leader the member on PORT follows
# (0 while there is none).
etcd_leader() {
    etcd_curl "$1" /v3/maintenance/status -X POST -d '{}' |
        sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p'
}

# etcd_pid DIR: the pid of the server whose state dir is DIR, checked against
# its command line (another checkout's etcd has the same command name).
etcd_pid() {
    local dir="$1" pid
    pid="$(pid_of "$dir/etcd.pid" etcd)" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$dir/etcd.conf.yml" || return 1
    printf '%s\n' "$pid"
}

# yaml_quote STRING: STRING as a single-quoted YAML scalar.
yaml_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# etcd_config DIR NAME CLIENT_PORT INITIAL_CLUSTER TOKEN [tls]: prints the
# config file of a member (etcd reads nothing from its command line when it
# is given a config file).
etcd_config() {
    local dir="$1" name="$2" port="$3" cluster="$4" token="$5" tls="${6:-}"
    local client="http://127.0.0.1:$port" peer="http://127.0.0.1:$((port + 1))"
    [[ -z "$tls" ]] || client="https://127.0.0.1:$port"
    echo "$SERVICES_MARK"
    echo "name: $name"
    echo "data-dir: $(yaml_quote "$dir/data")"
    echo "listen-client-urls: $client"
    echo "advertise-client-urls: $client"
    echo "listen-peer-urls: $peer"
    echo "initial-advertise-peer-urls: $peer"
    # Only read when the data dir is empty; a restarted member rejoins with
    # the membership it has on disk.
    echo "initial-cluster: $cluster"
    echo "initial-cluster-token: $token"
    echo "initial-cluster-state: new"
    # etcd's defaults, named: followers elect a new leader about one election
    # timeout after losing theirs, and etcd raises a lease's TTL to at least
    # 1.5 election timeouts, rounded up to whole seconds (a TTL of 1 is 2).
    echo "heartbeat-interval: 100"
    echo "election-timeout: 1000"
    # No compaction behind the tests' backs: revisions stay readable.
    echo "auto-compaction-retention: '0'"
    # The /v3 JSON gateway dlock speaks. The flag defaults to true, but the
    # config file's setting to false: without this line every /v3 request
    # answers "404 page not found" while /health and etcdctl work.
    echo "enable-grpc-gateway: true"
    echo "logger: zap"
    echo "log-outputs: [stderr]"
    if [[ -n "$tls" ]]; then
        echo "client-transport-security:"
        echo "  cert-file: $(yaml_quote "$ETCD_CERTS/server.pem")"
        echo "  key-file: $(yaml_quote "$ETCD_CERTS/server-key.pem")"
        echo "  trusted-ca-file: $(yaml_quote "$ETCD_CERTS/ca.pem")"
        echo "  client-cert-auth: true"
    fi
}

# etcd_running DIR CONFIG: the server of DIR runs, with CONFIG as its config
# file. One with another config (DLOCK_ETCD_*PORT* changed, or this script
# did) is stopped, so that it is started afresh with CONFIG.
etcd_running() {
    local dir="$1" conf="$2" pid
    pid="$(etcd_pid "$dir")" || return 1
    [[ "$(cat "$dir/etcd.conf.yml")" == "$conf" ]] && return 0
    dl_info "stopping the etcd of $dir: its configuration changed"
    stop_pid "$pid" "etcd ($dir)"
    return 1
}

# etcd_launch DIR: starts the server configured in DIR/etcd.conf.yml in the
# background, in its own session (see zk_launch, zookeeper.sh).
etcd_launch() {
    local dir="$1"
    : >"$dir/etcd.log"
    rm -f "$dir/etcd.pid"
    (
        cd "$dir"
        # shellcheck disable=SC2016 # expanded by the inner bash
        setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$dir/etcd.pid" \
            "$ETCD_BIN" --config-file "$dir/etcd.conf.yml" </dev/null >>"$dir/etcd.log" 2>&1 &
    )
    # Until the pidfile exists the server cannot be stopped by pid.
    wait_until 5 test -s "$dir/etcd.pid" || true
}

# etcd_start_member DIR NAME CLIENT_PORT INITIAL_CLUSTER TOKEN [tls]: starts
# the member of DIR unless it runs already (or another checkout's answers on
# its port); does not wait for it.
etcd_start_member() {
    local dir="$1" port="$3" conf
    conf="$(etcd_config "$@")"
    etcd_running "$dir" "$conf" && return 0
    etcd_serving "$port" && return 0
    etcd_check_port_free "$port"
    etcd_check_port_free "$((port + 1))"
    mkdir -p "$dir"
    printf '%s\n' "$conf" >"$dir/etcd.conf.yml"
    etcd_launch "$dir"
}

# etcd_check_port_free PORT: dies if anything listens on 127.0.0.1:PORT.
etcd_check_port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        dl_die "127.0.0.1:$1 is taken by something not started by this checkout's scripts/services (see: ss -ltnp); stop it or set DLOCK_ETCD_*PORT*"
    fi
}

# Up, or it died already: no need to wait longer.
etcd_settled() { etcd_serving "$2" || ! etcd_pid "$1" >/dev/null; } # DIR PORT

etcd_stop_dir() { # DIR NAME
    local pid
    if pid="$(etcd_pid "$1")"; then
        # SIGTERM: etcd closes its listeners and syncs its WAL on the way out.
        stop_pid "$pid" "$2"
    fi
    rm -f "$1/etcd.pid"
}

etcd_need() {
    [[ -x "$ETCD_BIN" ]] ||
        dl_die "$ETCD_BIN not found: install the Debian package etcd-server (scripts/test installs it) or set DLOCK_ETCD_BIN"
    need_cmd curl curl
    need_cmd setsid util-linux
}

# --- etcd: plain and TLS + auth

# pct_encode STRING: STRING with every byte but [A-Za-z0-9/._~-] as %XX, for
# a URL's query.
pct_encode() {
    local LC_ALL=C
    local s="$1" out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "$c" in
            [A-Za-z0-9/._~-]) out+="$c" ;;
            *) out+="$(printf '%%%02X' "'$c")" ;;
        esac
    done
    printf '%s' "$out"
}

# etcd_certs: the TLS instance's CA, server certificate (for IP 127.0.0.1;
# the JSON gateway also presents it as a client certificate to etcd's own
# gRPC server, hence clientAuth) and client certificate, made unless all
# exist. The client certificate has no Common Name: with client-cert-auth
# and authentication both on, etcd 3.4 answers every /v3 request made with
# one that has a CN "400 CommonName of client sending a request against
# gateway will be ignored and not used as expected", whatever token it
# carries. Nor is the server's CN an etcd user, since gRPC requests without
# a token are authenticated as the CN of their certificate.
etcd_certs() {
    local f complete=1
    for f in ca.pem server.pem server-key.pem client.pem client-key.pem; do
        [[ -s "$ETCD_CERTS/$f" ]] || complete=0
    done
    ((complete)) && return 0
    need_cmd openssl openssl
    dl_info "etcd: making a throwaway CA and certificates in $ETCD_CERTS"
    local tmp="$ETCD_CERTS.tmp" rc
    rm -rf -- "$tmp"
    mkdir -p "$tmp"
    # Not in a condition, which would switch errexit off in the subshell.
    set +e
    (
        set -e
        cd "$tmp"
        umask 077
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${ec[@]}" -days 3650 -keyout ca-key.pem -out ca.pem \
            -subj "/O=dlock scripts-services/CN=dlock scripts-services etcd CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature \
            subjectAltName=IP:127.0.0.1 extendedKeyUsage=serverAuth,clientAuth >server.ext
        printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature \
            extendedKeyUsage=clientAuth >client.ext
        openssl req -new "${ec[@]}" -keyout server-key.pem -out server.csr \
            -subj "/O=dlock scripts-services/CN=dlock-etcd-server"
        openssl req -new "${ec[@]}" -keyout client-key.pem -out client.csr \
            -subj "/O=dlock scripts-services/OU=etcd client"
        for f in server client; do
            openssl x509 -req -in "$f.csr" -CA ca.pem -CAkey ca-key.pem -days 3650 \
                -set_serial "0x$(openssl rand -hex 16)" -extfile "$f.ext" -out "$f.pem"
        done
        rm -f -- *.csr *.ext
        # Readable by the client libraries of whoever runs the tests.
        chmod 644 ca.pem server.pem client.pem
    ) >"$ETCD_DIR/openssl.log" 2>&1
    rc=$?
    set -e
    if ((rc != 0)); then
        dl_err "making the etcd certificates failed"
        log_tail "$ETCD_DIR/openssl.log"
        rm -rf -- "$tmp"
        return 1
    fi
    rm -rf -- "$ETCD_CERTS"
    mv "$tmp" "$ETCD_CERTS"
}

# The TLS + auth instance also through its gRPC API (etcd+grpcs://), which
# takes the same parameters; the plain gRPC path has fault runs of its own
# (tests/faults/run, store etcd-grpc).
url_etcd() {
    printf 'etcd://127.0.0.1:%s\n' "$ETCD_PORT"
    local scheme
    for scheme in etcd+https etcd+grpcs; do
        printf '%s://%s:%s@127.0.0.1:%s?cacert=%s&cert=%s&key=%s\n' "$scheme" \
            "$ETCD_USER" "$ETCD_PASSWORD" "$ETCD_TLS_PORT" "$(pct_encode "$ETCD_CERTS/ca.pem")" \
            "$(pct_encode "$ETCD_CERTS/client.pem")" "$(pct_encode "$ETCD_CERTS/client-key.pem")"
    done
}

# etcd_auth_ok: the TLS instance lets dlock log in, so authentication is on
# (it answers "authentication is not enabled" otherwise).
etcd_auth_ok() {
    etcd_curl "$ETCD_TLS_PORT" /v3/auth/authenticate -X POST \
        -d "{\"name\":\"$ETCD_USER\",\"password\":\"$ETCD_PASSWORD\"}" | grep -q '"token":"'
}

# Both answer, as started by scripts/services, and the TLS one with auth on.
# A TLS instance from another checkout has other certificates, so it never
# answers here: only the plain one can be shared.
alive_etcd() {
    command -v curl >/dev/null 2>&1 || return 1
    etcd_serving "$ETCD_PORT" && etcd_serving "$ETCD_TLS_PORT" && etcd_auth_ok
}

# etcd_instance_state DIR PORT: a word or two on one instance, for `status`.
etcd_instance_state() {
    local pid
    if etcd_serving "$2"; then
        printf 'up'
    elif pid="$(etcd_pid "$1")"; then
        printf 'up (pid %s) but not answering' "$pid"
    else
        printf 'stopped'
    fi
}

status_etcd() {
    local plain tls
    plain="$(etcd_instance_state "$ETCD_PLAIN_DIR" "$ETCD_PORT")"
    tls="$(etcd_instance_state "$ETCD_TLS_DIR" "$ETCD_TLS_PORT")"
    [[ "$plain" != stopped || "$tls" != stopped ]] || return 1
    if [[ "$tls" == up ]] && ! etcd_auth_ok; then
        tls="up but $ETCD_USER cannot log in (authentication not set up?)"
    fi
    printf 'degraded (127.0.0.1:%s: %s; TLS 127.0.0.1:%s: %s)\n' "$ETCD_PORT" "$plain" "$ETCD_TLS_PORT" "$tls"
}

# etcd_ctl ARGS...: etcdctl against the TLS instance, as root when
# ETCD_AS_ROOT=1. The password goes through the environment, not the
# command line, which any user can read; the caller's ETCDCTL_* are dropped.
ETCD_AS_ROOT=0
etcd_ctl() {
    (
        unset "${!ETCDCTL_@}"
        export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="https://127.0.0.1:$ETCD_TLS_PORT" \
            ETCDCTL_CACERT="$ETCD_CERTS/ca.pem" ETCDCTL_CERT="$ETCD_CERTS/client.pem" \
            ETCDCTL_KEY="$ETCD_CERTS/client-key.pem" ETCDCTL_DIAL_TIMEOUT=2s \
            ETCDCTL_COMMAND_TIMEOUT=5s
        if ((ETCD_AS_ROOT)); then
            export ETCDCTL_USER=root ETCDCTL_PASSWORD="$ETCD_ROOT_PASSWORD"
        fi
        exec "$ETCD_CTL_BIN" "$@"
    )
}

# The TLS instance's users and role, and authentication on. Run on every
# start, as root once auth is on, so a password or grant changed by hand is
# put back; every step is a no-op when already done. Output goes to
# auth-setup.log. Returns non-zero on the first failure (errexit is off:
# the caller tests the status).
etcd_auth_setup() {
    local users roles on=0
    # As root succeeds only when auth is on: etcdctl logs in first, and
    # etcd refuses logins while auth is off.
    ETCD_AS_ROOT=1
    if etcd_ctl user get root; then
        on=1
    else
        ETCD_AS_ROOT=0
    fi
    if ! users="$(etcd_ctl user list)" || ! roles="$(etcd_ctl role list)"; then
        ((on)) || dl_err "etcd on 127.0.0.1:$ETCD_TLS_PORT refuses the setup: if its authentication is on with another root password, stop it and delete $ETCD_TLS_DIR/data"
        return 1
    fi
    if ! grep -qxF root <<<"$users"; then
        printf '%s\n' "$ETCD_ROOT_PASSWORD" | etcd_ctl user add root --interactive=false || return 1
    fi
    etcd_ctl user grant-role root root || return 1
    if ! grep -qxF "$ETCD_USER" <<<"$roles"; then
        etcd_ctl role add "$ETCD_USER" || return 1
    fi
    # Every key: from the empty key to the end of the key space.
    etcd_ctl role grant-permission "$ETCD_USER" readwrite --from-key '' || return 1
    if ! grep -qxF "$ETCD_USER" <<<"$users"; then
        printf '%s\n' "$ETCD_PASSWORD" | etcd_ctl user add "$ETCD_USER" --interactive=false || return 1
    elif ((!on)) || ! etcd_auth_ok; then
        # Only when needed: a new password revokes the user's tokens.
        printf '%s\n' "$ETCD_PASSWORD" | etcd_ctl user passwd "$ETCD_USER" --interactive=false || return 1
    fi
    etcd_ctl user grant-role "$ETCD_USER" "$ETCD_USER" || return 1
    etcd_ctl auth enable || return 1
}

start_etcd() {
    etcd_need
    need_cmd "$ETCD_CTL_BIN" etcd-client
    mkdir -p "$ETCD_DIR"
    etcd_certs
    etcd_start_member "$ETCD_PLAIN_DIR" dlock-plain "$ETCD_PORT" \
        "dlock-plain=http://127.0.0.1:$((ETCD_PORT + 1))" dlock-etcd-plain
    etcd_start_member "$ETCD_TLS_DIR" dlock-tls "$ETCD_TLS_PORT" \
        "dlock-tls=http://127.0.0.1:$((ETCD_TLS_PORT + 1))" dlock-etcd-tls tls
    wait_until "$START_TIMEOUT" etcd_settled "$ETCD_PLAIN_DIR" "$ETCD_PORT" || true
    wait_until "$START_TIMEOUT" etcd_settled "$ETCD_TLS_DIR" "$ETCD_TLS_PORT" || true
    local failed=0
    if ! etcd_serving "$ETCD_PORT"; then
        dl_err "etcd did not serve on 127.0.0.1:$ETCD_PORT within ${START_TIMEOUT}s"
        log_tail "$ETCD_PLAIN_DIR/etcd.log"
        failed=1
    fi
    if ! etcd_serving "$ETCD_TLS_PORT"; then
        dl_err "etcd did not serve HTTPS on 127.0.0.1:$ETCD_TLS_PORT within ${START_TIMEOUT}s"
        log_tail "$ETCD_TLS_DIR/etcd.log"
        return 1
    fi
    if ! etcd_auth_setup >"$ETCD_TLS_DIR/auth-setup.log" 2>&1; then
        dl_err "setting up users and authentication on 127.0.0.1:$ETCD_TLS_PORT failed"
        log_tail "$ETCD_TLS_DIR/auth-setup.log"
        log_tail "$ETCD_TLS_DIR/etcd.log"
        return 1
    fi
    if ! etcd_auth_ok; then
        dl_err "etcd on 127.0.0.1:$ETCD_TLS_PORT does not let $ETCD_USER log in"
        log_tail "$ETCD_TLS_DIR/etcd.log"
        return 1
    fi
    return "$failed"
}

stop_etcd() {
    etcd_stop_dir "$ETCD_PLAIN_DIR" "etcd (plain)"
    etcd_stop_dir "$ETCD_TLS_DIR" "etcd (TLS)"
}
