#!/usr/bin/env bash
# Soak test of the Pulse gateway: the ETL service is SIGKILLed and restarted every
# 20 s under steady load; every 30 s the gateway's RSS, open fds, tasks, connections
# and the 2xx/503/504/other answers are printed, and a summary with a verdict at the
# end (exit status 1 when a goal is missed).
#
#   benches/soak.sh                      # 10 minutes
#   benches/soak.sh --duration 90s       # a short run
#   benches/soak.sh --help               # every option (interval, kill period, clients…)
#
# Builds `cargo build --release --example full_stack` first (set PULSE_SOAK_BINARY to
# use another binary) and installs python3 with apt-get when it is missing. Linux only
# (reads /proc/<pid>). Everything listens on free loopback ports with a temporary data
# folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "$(uname -s)" != Linux ]]; then
    echo "soak: needs Linux (/proc)" >&2
    exit 2
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "soak: installing python3" >&2
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq python3
fi

binary="${PULSE_SOAK_BINARY:-}"
if [[ -z "$binary" ]]; then
    for arg in "$@"; do
        if [[ "$arg" == -h || "$arg" == --help ]]; then
            exec python3 "$root/benches/soak.py" --binary full_stack --help
        fi
    done
    echo "soak: cargo build --release --example full_stack" >&2
    (cd "$root" && cargo build --release --example full_stack)
    binary="${CARGO_TARGET_DIR:-$root/target}/release/examples/full_stack"
fi

exec python3 "$root/benches/soak.py" --binary "$binary" "$@"
