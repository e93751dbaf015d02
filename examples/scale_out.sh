#!/usr/bin/env bash
# The scale-out topology on loopback: M ETL instances on one PostgreSQL database, N
# gateways sharing one Redis, and a frontend balancing over the gateways.
#
#   examples/scale_out.sh                        # M=3, N=2
#   PULSE_ETL_INSTANCES=5 PULSE_GATEWAYS=3 examples/scale_out.sh
#
# Ports: ETL 8101…, gateways 8000… (metrics 9464…), frontend 3000.
# PULSE_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) and
# PULSE_REDIS_URL (default redis://127.0.0.1:6379) must be reachable; the script checks
# both first and says how to start them if not. Secrets are shared through one data
# folder (PULSE_DATA_DIR, default ./data-scale-out). Ctrl-C stops everything.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
etls="${PULSE_ETL_INSTANCES:-3}"
gateways="${PULSE_GATEWAYS:-2}"
database="${PULSE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis="${PULSE_REDIS_URL:-redis://127.0.0.1:6379}"
data="${PULSE_DATA_DIR:-$root/data-scale-out}"

# host and port of a URL (scheme://[user@]host[:port][/…]).
host_port() {
    local rest="${1#*://}"
    rest="${rest##*@}"
    rest="${rest%%/*}"
    local host="${rest%%:*}" port="$2"
    if [[ "$rest" == *:* ]]; then port="${rest##*:}"; fi
    echo "$host $port"
}

reachable() {
    # bash's /dev/tcp: no client tools needed.
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

read -r pg_host pg_port < <(host_port "$database" 5432)
if ! reachable "$pg_host" "$pg_port"; then
    cat >&2 <<MSG
scale_out: PostgreSQL is not reachable at $pg_host:$pg_port ($database).
Start one, for example:
    docker run -d --name pulse-pg -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16
or on Debian: sudo apt-get install postgresql && sudo service postgresql start
then set PULSE_DATABASE_URL if it is not $database.
MSG
    exit 2
fi
read -r redis_host redis_port < <(host_port "$redis" 6379)
if ! reachable "$redis_host" "$redis_port"; then
    cat >&2 <<MSG
scale_out: Redis is not reachable at $redis_host:$redis_port ($redis).
Start one, for example:
    docker run -d --name pulse-redis -p 6379:6379 redis:7
or on Debian: sudo apt-get install redis-server && sudo service redis-server start
then set PULSE_REDIS_URL if it is not $redis.
MSG
    exit 2
fi

binary="${PULSE_BINARY:-}"
if [[ -z "$binary" ]]; then
    echo "scale_out: cargo build --release --example full_stack" >&2
    (cd "$root" && cargo build --release --example full_stack)
    binary="${CARGO_TARGET_DIR:-$root/target}/release/examples/full_stack"
fi

mkdir -p "$data"
pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

export PULSE_DATA_DIR="$data" PULSE_DATABASE_URL="$database"
# The deployment's shared secrets, generated once (mode 0600) and given to every process.
secrets="$data/scale-out.env"
if [[ ! -f "$secrets" ]]; then
    hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
    (umask 077; printf 'PULSE_JWT_SECRET=%s\nPULSE_INTERNAL_KEYS=k1:%s\n' "$(hex)" "$(hex)" >"$secrets")
fi
set -a; source "$secrets"; set +a

# One at a time: each waits for the previous to listen (migrations and the demo users
# are created by the first).
wait_port() {
    for _ in $(seq 1 300); do
        if reachable 127.0.0.1 "$1"; then return 0; fi
        sleep 0.1
    done
    echo "scale_out: nothing listens on 127.0.0.1:$1 after 30 s" >&2
    exit 1
}

etl_urls=()
for ((i = 0; i < etls; i++)); do
    port=$((8101 + i))
    "$binary" --etl-addr "127.0.0.1:$port" etl &
    pids+=($!)
    wait_port "$port"
    etl_urls+=("http://127.0.0.1:$port")
done
etl_list="$(IFS=,; echo "${etl_urls[*]}")"

gateway_urls=()
for ((i = 0; i < gateways; i++)); do
    port=$((8000 + i))
    "$binary" --backend-addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$((9464 + i))" \
        --etl-url "$etl_list" --redis-url "$redis" backend &
    pids+=($!)
    wait_port "$port"
    gateway_urls+=("http://127.0.0.1:$port")
done
gateway_list="$(IFS=,; echo "${gateway_urls[*]}")"

"$binary" --frontend-addr 127.0.0.1:3000 --backend-url "$gateway_list" frontend &
pids+=($!)
wait_port 3000

cat <<MSG
scale_out: $etls ETL instances ($etl_list) on $database,
           $gateways gateways ($gateway_list) with $redis,
           the dashboard on http://127.0.0.1:3000 (admin@pulse.local / admin).
           Kill any one (kill -9 <pid>): pids ${pids[*]}. Ctrl-C stops all.
MSG
wait
