#!/usr/bin/env bash
# Schemathesis against the live full stack: the gateway's public API (as the admin and
# as the viewer, real bearer tokens) and the ETL's internal API (with the internal key),
# every check enabled, a bounded number of examples per operation. Zero failures.
#
#   .ci/schemathesis.sh                      # builds the example (release) first
#   PULSE_FULL_STACK_BIN=target/debug/examples/full_stack .ci/schemathesis.sh
#
# Settings (environment): PULSE_SCHEMATHESIS_EXAMPLES (per operation, default 25),
# PULSE_SCHEMATHESIS_SEED (default 1, reproducible), PULSE_SCHEMATHESIS_PORT (the first
# of four loopback ports, default 18400), CARGO_TARGET_DIR (the venv and the binary).
#
# Not tested by Schemathesis: GET /api/etl/events through the gateway (the same stream
# as the ETL's /api/v1/events, which is tested; each case waits on a stream that never
# ends, so once is enough), POST /api/auth/logout (it would end the token the run uses;
# the Rust tests cover it), GET /ws/job-status (a WebSocket, not in the documents).
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(realpath -m "${CARGO_TARGET_DIR:-$PWD/target}")"
config="$PWD/.ci/schemathesis.toml"
examples="${PULSE_SCHEMATHESIS_EXAMPLES:-25}"
seed="${PULSE_SCHEMATHESIS_SEED:-1}"
port="${PULSE_SCHEMATHESIS_PORT:-18400}"
version="4.32.5"

venv="$target/schemathesis-venv"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
"$venv/bin/st" --version

bin="${PULSE_FULL_STACK_BIN:-}"
if [[ -z "$bin" ]]; then
  cargo build --release --example full_stack
  bin="$target/release/examples/full_stack"
fi

work="$(mktemp -d)"
frontend="127.0.0.1:$port" backend="127.0.0.1:$((port + 1))"
etl="127.0.0.1:$((port + 2))" metrics="127.0.0.1:$((port + 3))"
internal_secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
stack_pid=""
stop() {
  if [[ -n "$stack_pid" ]] && kill -0 "$stack_pid" 2>/dev/null; then
    kill -TERM "$stack_pid"
    wait "$stack_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

# Loopback, SQLite in a fresh data folder, the demo users; fast hashing for many logins.
PULSE_INTERNAL_KEYS="st:$internal_secret" \
PULSE_JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
  "$bin" --frontend-addr "$frontend" --backend-addr "$backend" --etl-addr "$etl" \
  --metrics-addr "$metrics" --data-dir "$work/data" --demo true \
  --argon2-memory-kib 1024 --argon2-iterations 1 >"$work/stack.log" 2>&1 &
stack_pid=$!

for _ in $(seq 1 120); do
  curl -fsS "http://$backend/health" >/dev/null 2>&1 && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$work/stack.log"; exit 1; }
  sleep 0.5
done
curl -fsS "http://$backend/health" >/dev/null || { tail -n 50 "$work/stack.log"; exit 1; }

token() {
  curl -fsS -H 'content-type: application/json' \
    -d "{\"email\": \"$1\", \"password\": \"$2\"}" "http://$backend/api/auth/login" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}
admin="$(token admin@pulse.local admin)"
viewer="$(token viewer@pulse.local viewer)"

failed=()
st() {
  local name="$1"; shift
  printf '\n--- schemathesis: %s\n' "$name"
  # From the scratch dir: Schemathesis keeps its cache in the working directory.
  (cd "$work" && "$venv/bin/st" --config-file "$config" run --checks all --max-examples "$examples" --seed "$seed" \
    --workers 1 --request-timeout 10 --no-color --report junit \
    --report-junit-path "$target/schemathesis-$name.xml" \
    --exclude-path /api/auth/logout "$@") || failed+=("$name")
}

# The viewer first: the admin run changes users and roles. A password reset ends the
# user's sessions, the admin's own included, so it runs last, alone.
st gateway-viewer "http://$backend/api/openapi.json" --url "http://$backend" \
  -H "Authorization: Bearer $viewer" --exclude-path-regex '/events$'
st gateway-admin "http://$backend/api/openapi.json" --url "http://$backend" \
  -H "Authorization: Bearer $admin" --exclude-path-regex '/events$|/password$'
st gateway-admin-password "http://$backend/api/openapi.json" --url "http://$backend" \
  -H "Authorization: Bearer $admin" --include-path-regex '/password$'
# The ETL document is behind internal auth too: fetch it with the key.
curl -fsS -H "x-internal-auth: $internal_secret" "http://$etl/api/v1/openapi.json" \
  >"$work/etl.json"
st etl "$work/etl.json" --url "http://$etl" -H "X-Internal-Auth: $internal_secret"
if ((${#failed[@]})); then
  echo "schemathesis: failures in: ${failed[*]} (reports: $target/schemathesis-*.xml)"
  exit 1
fi
echo "schemathesis: no failures"
