#!/usr/bin/env bash
# pulse-etl (PostgreSQL store) and graphile-worker side by side, same machine, same
# database, same run. Usage:
#
#   PULSE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test benches/etl_vs_graphile.sh
#
# Shapes (each engine in a fresh schema per measurement, no-op jobs, 8 workers):
#   queued  RUNS jobs queued first, then drained by one worker instance (graphile-worker's
#           own benchmark shape); timed from the worker's launch to the last success
#   stream  RUNS jobs added one call each, 32 calls in flight, from a separate pool (as an
#           API server adds them) while one worker instance runs; timed from the first
#           call to the last success
#   latency pulse-etl only: idle start -> running on the same instance (LATENCY_SAMPLES)
#
# Every round runs both engines back to back (the order alternates between rounds), so
# the machine's load hits both alike; the table shows the median of ROUNDS rounds.
# Each engine's process is pinned to the CPUs in PIN_CPUS (default: CPU 1, so both get
# the same client-side CPU budget: Node.js runs one thread, tokio would take every core;
# PostgreSQL itself is not pinned). PIN_CPUS= (empty) disables pinning.
#
# Knobs: RUNS (3000), ROUNDS (3), LATENCY_SAMPLES (300), PULSE_BENCH_BIN (an etl bench
# binary built elsewhere, e.g. from an older commit, instead of building this tree's),
# GRAPHILE_WORKER_VERSION
# (0.16.6), GRAPHILE_DIR (where it is installed with npm when missing; default
# ${XDG_CACHE_HOME:-~/.cache}/pulse-bench/graphile-worker-$GRAPHILE_WORKER_VERSION).
# Needs node and npm, cargo, and a PostgreSQL the URL's user may create schemas in.
set -euo pipefail

: "${PULSE_TEST_DATABASE_URL:?set PULSE_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)}"
export PULSE_TEST_DATABASE_URL
RUNS=${RUNS:-3000}
ROUNDS=${ROUNDS:-3}
LATENCY_SAMPLES=${LATENCY_SAMPLES:-300}
GRAPHILE_WORKER_VERSION=${GRAPHILE_WORKER_VERSION:-0.16.6}
GRAPHILE_DIR=${GRAPHILE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pulse-bench/graphile-worker-$GRAPHILE_WORKER_VERSION}
PIN_CPUS=${PIN_CPUS-1}

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

if [ ! -f "$GRAPHILE_DIR/node_modules/graphile-worker/package.json" ]; then
    echo "installing graphile-worker@$GRAPHILE_WORKER_VERSION into $GRAPHILE_DIR" >&2
    mkdir -p "$GRAPHILE_DIR"
    [ -f "$GRAPHILE_DIR/package.json" ] || echo '{"name":"pulse-bench-graphile","private":true}' >"$GRAPHILE_DIR/package.json"
    (cd "$GRAPHILE_DIR" && npm install --no-audit --no-fund --save-exact "graphile-worker@$GRAPHILE_WORKER_VERSION" >&2)
fi
installed=$(node -p "require('$GRAPHILE_DIR/node_modules/graphile-worker/package.json').version")
[ "$installed" = "$GRAPHILE_WORKER_VERSION" ] || { echo "$GRAPHILE_DIR holds graphile-worker $installed, not $GRAPHILE_WORKER_VERSION" >&2; exit 1; }

echo "building benches/etl.rs (release)" >&2
built=${PULSE_BENCH_BIN:-$(cd "$root" && cargo bench --bench etl --no-run 2>&1 | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)}
[ -x "$built" ] || { echo "could not find the etl bench binary" >&2; exit 1; }

pin=()
if [ -n "$PIN_CPUS" ] && command -v taskset >/dev/null; then
    pin=(taskset -c "$PIN_CPUS")
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
results="$scratch/results"
# A private copy: another worktree's build may replace the shared target's binary mid-run.
bench="$scratch/etl-bench"
cp "$built" "$bench"

pulse() { "${pin[@]}" "$bench" --bench --store postgres --shape "$1" --runs "$2" | grep '^RESULT' | tee -a "$results"; }
graphile() { NODE_PATH="$GRAPHILE_DIR/node_modules" "${pin[@]}" node "$here/etl_vs_graphile.js" "$1" "$2" | grep '^RESULT' | tee -a "$results"; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs; pinned to: ${PIN_CPUS:-none}"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    for shape in queued stream; do
        if [ $((round % 2)) -eq 1 ]; then
            pulse "$shape" "$RUNS"; graphile "$shape" "$RUNS"
        else
            graphile "$shape" "$RUNS"; pulse "$shape" "$RUNS"
        fi
    done
    pulse latency "$LATENCY_SAMPLES"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# The median of the rounds' values of one key, for one engine and shape.
median() {
    grep "engine=$1 .*shape=$2 " "$results" | sed -n "s/.* $3=\([0-9.]*\).*/\1/p" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
gw="graphile-worker-$GRAPHILE_WORKER_VERSION"
echo
echo "| engine | $RUNS queued, then drained by 8 workers | $RUNS added one call each, 32 in flight, 8 workers | idle start → running (p50 / p99) |"
echo "|---|---|---|---|"
echo "| pulse-etl (PostgreSQL) | $(median pulse-etl queued per_sec) jobs/s | $(median pulse-etl stream per_sec) jobs/s | $(median pulse-etl latency p50_ms) ms / $(median pulse-etl latency p99_ms) ms |"
echo "| $gw | $(median "$gw" queued per_sec) jobs/s | $(median "$gw" stream per_sec) jobs/s | – |"
echo
echo "(medians of $ROUNDS rounds; every value above is in the RESULT lines)"
