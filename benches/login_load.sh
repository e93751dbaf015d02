#!/usr/bin/env bash
# Login load: 200 concurrent logins against a release-built gateway, with its memory.
#
#   benches/login_load.sh [--concurrency N] [--timeout S] [--rounds R]
#
# Builds `full_stack` in release mode (skipped when PULSE_LOAD_NO_BUILD=1), starts the
# gateway alone (`full_stack backend`, default Argon2id costs: 19 MiB, 2 passes; no ETL
# service, which logins do not need) on a free loopback port with a temporary data folder,
# runs benches/login_load.py against it, and stops it. The goal (issue 9): 200 concurrent
# logins raise the gateway's peak RSS by under 100 MiB and every answer arrives within
# the timeout. Extra arguments go to login_load.py. Pool sizes come from the usual
# variables (PULSE_LOGIN_HASH_WORKERS, PULSE_LOGIN_HASH_QUEUE); PULSE_LOAD_BINARY=path
# measures another build (e.g. an older commit's) instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
binary="${PULSE_LOAD_BINARY:-$target_dir/release/examples/full_stack}"

if [[ "${PULSE_LOAD_NO_BUILD:-0}" != 1 && -z "${PULSE_LOAD_BINARY:-}" ]]; then
    cargo build --release --example full_stack
fi
[[ -x "$binary" ]] || { echo "no release build at $binary" >&2; exit 1; }

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$data/gateway.log"
"$binary" \
    --backend-addr "127.0.0.1:$port" \
    --etl-url "http://127.0.0.1:9" \
    --data-dir "$data" \
    --log-format json \
    backend >"$log" 2>&1 &
gateway=$!
cleanup() {
    kill "$gateway" 2>/dev/null || true
    wait "$gateway" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

# Ready once the listener accepts (start-up hashes the demo passwords first).
for _ in $(seq 1 300); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null; then
        break
    fi
    kill -0 "$gateway" 2>/dev/null || { echo "the gateway exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
done

echo "gateway pid $gateway on 127.0.0.1:$port; $(nproc) cores"
grep -m1 'password-hashing pool' "$log" || true
python3 "$root/benches/login_load.py" --url "http://127.0.0.1:$port" --pid "$gateway" "$@"
