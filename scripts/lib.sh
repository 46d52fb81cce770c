# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts
# Helpers shared by scripts/test, scripts/demo and scripts/services.
# Source it; it defines functions and variables and runs nothing else.

# Resolved once so every script works from any current directory.
DLOCK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DLOCK_ROOT

# Debian package groups. Build needs everything a full configure can use, so
# that a missing client library never silently drops a backend. libc6-dev is
# named because it is only a Recommends of gcc, and recommends are skipped
# (they would pull a whole Docker engine in with docker-compose). scdoc
# renders the manual pages (man/, -Dman=auto). libnghttp2-dev and libssl-dev
# are the etcd backend's gRPC transport (-Detcd_grpc, etcd+grpc://).
DLOCK_PKGS_BUILD=(meson ninja-build pkg-config gcc libc6-dev libhiredis-dev
                  libcurl4-openssl-dev libcjson-dev uuid-dev libzookeeper-mt-dev
                  libpq-dev libxxhash-dev libnghttp2-dev libssl-dev scdoc)
DLOCK_PKGS_TEST=(libcmocka-dev)
# zookeeper brings default-jre and the server's jars; scripts/services runs
# them with java directly. postgresql-15 brings psql and pgbench too; the
# version is named because scripts/services runs its binaries from
# /usr/lib/postgresql/15/bin, the version docker-compose.yml pins.
# etcd-server is etcd 3.4 (the minor docker-compose.yml pins) and etcd-client
# its etcdctl, which sets up the TLS instance's users; openssl makes that
# instance's throwaway CA and certificates, and curl checks the etcd servers'
# and the Consul agent's health over HTTP and HTTPS. (Consul itself is built
# from source: see DLOCK_CONSUL_VERSION below.)
DLOCK_PKGS_SERVERS=(redis-server redis-tools zookeeper postgresql-15 pgbouncer
                    etcd-server etcd-client openssl curl)
DLOCK_PKGS_CHECKS=(valgrind docker-compose)
# The safety suite: libFuzzer (clang and its runtimes) and the Spin model
# checker. The fault runs need nothing more than the servers and Toxiproxy.
DLOCK_PKGS_SAFETY=(clang libclang-rt-14-dev spin)

# Backends that need a running server, named as both their meson option and
# their scripts/services entry. Adding a backend here makes scripts/test build
# it (-D<name>=enabled) and require its server in CI.
DLOCK_SERVER_BACKENDS=(redis zookeeper postgres etcd consul)

# Consul has no Debian package: scripts/services builds this release's agent
# (which is also the consul CLI) from the source the Go module proxy serves,
# with the Go toolchain on PATH or in /usr/local/go/bin, once, into the cache
# directory below (about 12 minutes on two cores with nothing cached).
# docker-compose.yml pins the same version. CONSUL_BIN names a consul binary
# to use instead, and skips the build.
DLOCK_CONSUL_VERSION=v1.21.0

# Toxiproxy, the fault suite's proxy, is built the same way (seconds, not
# minutes); TOXIPROXY_BIN names a binary to use instead.
DLOCK_TOXIPROXY_VERSION=v2.5.0

# dl_toxiproxy_bin: the absolute path of that binary, built or not yet.
dl_toxiproxy_bin() {
    local cache=~/.cache
    local bin="${TOXIPROXY_BIN:-${XDG_CACHE_HOME:-$cache}/dlock/toxiproxy-$DLOCK_TOXIPROXY_VERSION}"
    [[ "$bin" == */* ]] || bin="$(command -v -- "$bin" || printf '%s' "$bin")"
    [[ "$bin" == /* ]] || bin="$PWD/$bin"
    printf '%s
' "$bin"
}

# dl_consul_bin: the absolute path of the consul binary scripts/services
# runs, built or not yet (CONSUL_BIN may be a path or a command on PATH).
dl_consul_bin() {
    # ~ is HOME, or the passwd entry's home when HOME is unset.
    local cache=~/.cache
    local bin="${CONSUL_BIN:-${XDG_CACHE_HOME:-$cache}/dlock/consul-$DLOCK_CONSUL_VERSION}"
    [[ "$bin" == */* ]] || bin="$(command -v -- "$bin" || printf '%s' "$bin")"
    [[ "$bin" == /* ]] || bin="$PWD/$bin"
    printf '%s\n' "$bin"
}

# scripts/services entries that get no conformance run of their own but that
# a backend's own cases use (through DLOCK_TEST_* variables, see scripts/test);
# CI requires them running too. PgBouncer's lease-mode URL is one of the
# postgres entry's URLs (so it gets conformance runs); its own URL is the
# advisory one, which the postgres cases expect refused. etcd-cluster is a
# three-member cluster for the etcd backend's failover cases, as
# zookeeper-ensemble is for zookeeper's.
# toxiproxy is the fault suite's proxy (tests/faults), and consul-persist a
# Consul server with a data dir for its restarts.
DLOCK_SERVER_EXTRAS=(zookeeper-ensemble pgbouncer etcd-cluster consul-persist toxiproxy)

if [[ -t 2 ]]; then
    _dl_bold=$'\e[1m' _dl_red=$'\e[31m' _dl_yellow=$'\e[33m' _dl_green=$'\e[32m' _dl_reset=$'\e[0m'
else
    _dl_bold='' _dl_red='' _dl_yellow='' _dl_green='' _dl_reset=''
fi

dl_info() { printf '%s==>%s %s\n' "$_dl_bold" "$_dl_reset" "$*" >&2; }
dl_ok()   { printf '%s==>%s %s\n' "$_dl_green" "$_dl_reset" "$*" >&2; }
dl_warn() { printf '%swarning:%s %s\n' "$_dl_yellow" "$_dl_reset" "$*" >&2; }
dl_err()  { printf '%serror:%s %s\n' "$_dl_red" "$_dl_reset" "$*" >&2; }
dl_die()  { dl_err "$*"; exit 1; }

# Prints the packages from "$@" that are not installed, one per line.
dl_missing_packages() {
    local p status
    for p in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [[ "$status" == "install ok installed" ]] || printf '%s\n' "$p"
    done
}

# Installs whichever of "$@" are missing. apt-get update runs only when
# something is missing, so a re-run on a prepared machine costs nothing.
dl_ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        dl_warn "not a Debian-like system: make sure these are installed: $*"
        return 0
    fi
    local missing
    mapfile -t missing < <(dl_missing_packages "$@")
    ((${#missing[@]} == 0)) && return 0

    local -a sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            dl_err "missing packages: ${missing[*]}"
            dl_die "not root and no sudo: install them with: apt-get install ${missing[*]}"
        fi
    fi
    dl_info "installing missing packages: ${missing[*]}"
    # env runs under sudo too, where a plain VAR=value prefix would be dropped.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# dl_meson_setup BUILDDIR [MESON OPTIONS...]
# Configures BUILDDIR with exactly these options whatever state it is in:
# fresh, configured with other options, or half-written by an interrupted run.
dl_meson_setup() {
    local dir="$1"
    shift
    if [[ -f "$dir/meson-private/coredata.dat" ]]; then
        if meson setup --reconfigure "$dir" "$@"; then
            return 0
        fi
        dl_warn "reconfiguring $dir failed; wiping it and configuring from scratch"
        meson setup --wipe "$dir" "$@"
    elif [[ -e "$dir" ]]; then
        # Not a meson build dir (or a broken one): meson refuses to reuse it.
        rm -rf -- "$dir"
        meson setup "$dir" "$@"
    else
        meson setup "$dir" "$@"
    fi
}

# Seconds since the epoch with a fraction, for step timings.
dl_now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
