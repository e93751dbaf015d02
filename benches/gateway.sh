#!/usr/bin/env bash
# Side-by-side gateway harness: the fixed upstream and each contender in turn (direct,
# a minimal hyper hop, nginx, HAProxy, HAProxy + JWT, pulse-proxy alone, the Pulse
# gateway), pinned to CPU 1 with the load generators on CPU 0. See benches/gateway.py
# for the method.
#
#   benches/gateway.sh                       # every contender, 3 scenarios, 3 rounds
#   benches/gateway.sh --rounds 1 --seconds 4 --scenarios c32    # a quick look
#   benches/gateway.sh --only "nginx,pulse gateway"
#
# Installs wrk, nginx and haproxy (Debian packages) when missing and builds the release
# binaries first. Needs 2+ cores and a quiet machine: do not build while it runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "gateway bench: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts the services it installs; the harness runs its own instances.
systemctl stop nginx haproxy >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
service haproxy stop >/dev/null 2>&1 || true

if [[ "${PULSE_BENCH_NO_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --release --example full_stack --example bench_upstream \
        --example bench_hop --example bench_pulse_proxy --example bench_loadgen)
fi

echo "machine: $(nproc) cores, $(uname -r); $(nginx -v 2>&1); $(haproxy -v | head -n1); $(wrk -v 2>&1 | head -n1)"
exec python3 "$root/benches/gateway.py" --bin-dir "$target_dir/release/examples" "$@"
