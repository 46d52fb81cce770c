# shellcheck shell=bash disable=SC2034  # the locals are read by consul.sh's functions
# scripts/services' consul-persist: a second agent, a single server with a
# data dir, for the fault suite's restarts: the dev agent of consul.sh
# forgets everything when it stops. consul.sh's functions, on their own
# ports, directory and node name.
consul_persist() {
    local CONSUL_PORT="${DLOCK_CONSUL_PERSIST_PORT:-18510}"
    local CONSUL_SERVER_PORT="${DLOCK_CONSUL_PERSIST_SERVER_PORT:-18310}"
    local CONSUL_SERF_LAN_PORT="${DLOCK_CONSUL_PERSIST_SERF_LAN_PORT:-18311}"
    local CONSUL_DIR="$SERVICES_DIR/consul-persist"
    local CONSUL_NODE=dlock-consul-persist CONSUL_PERSIST=1
    "$@"
}
start_consul-persist() { consul_persist start_consul; }
stop_consul-persist() { consul_persist stop_consul; }
alive_consul-persist() { consul_persist alive_consul; }
status_consul-persist() { consul_persist status_consul; }
url_consul-persist() { consul_persist url_consul; }
