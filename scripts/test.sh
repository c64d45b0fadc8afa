#!/usr/bin/env bash
# The test suite on a fresh machine: installs moto (the SQS/DynamoDB emulator the tests talk
# to) into a cache outside the clone, starts two servers on loopback (MOTO_PORT, default 5055,
# and the next port, for the chaos suite's AWS run), runs
# `cargo test --workspace --locked` (extra arguments are passed on), and stops moto.
# Needs: Rust, a C compiler, Python 3.9+ with venv, curl. `.ci/run` calls this after its lints.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"

MOTO_VERSION="5.2.5"
MOTO_PORT="${MOTO_PORT:-5055}"
# One venv per pinned version, outside the clone, so a later run on the same machine reuses it
# (like cargo's registry); a new machine installs it (about a minute).
TOOLS="${DAM_SYNC_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dam-sync-ci}"
VENV="$TOOLS/venv-moto-${MOTO_VERSION}"

step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

step "moto ${MOTO_VERSION} in $VENV"
if [ -f "$VENV/.installed" ] && [ "$(cat "$VENV/.installed")" = "$MOTO_VERSION" ]; then
  echo "reusing $VENV"
else
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" || {
    echo "python3 -m venv failed: install Python 3.9+ with venv (Debian: apt install python3-venv)" >&2
    exit 1
  }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server,sqs,dynamodb]==${MOTO_VERSION}"
  echo "$MOTO_VERSION" >"$VENV/.installed"
fi

# Starts a moto server on port $1, logging to $2; its pid goes to MOTO_PIDS.
MOTO_PIDS=()
cleanup() {
  for pid in "${MOTO_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
start_moto() {
  local port="$1" log="$2"
  step "start moto on 127.0.0.1:${port}"
  if curl -fsS "http://127.0.0.1:${port}/moto-api/" >/dev/null 2>&1; then
    echo "port ${port} is already serving: stop that server or pick other ports with MOTO_PORT=... (it and the next port are used)" >&2
    exit 1
  fi
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  MOTO_PIDS+=("$!")
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:${port}/moto-api/" >/dev/null 2>&1; then return; fi
    if ! kill -0 "$!" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:${port}/moto-api/" >/dev/null
}

mkdir -p "$ROOT/target"
start_moto "$MOTO_PORT" "$ROOT/target/moto.log"
# The chaos suite's AWS run is paced to what one moto process serves: on a server of its own
# it runs beside the other tests instead of holding the shared one for a minute or more.
CHAOS_MOTO_PORT=$((MOTO_PORT + 1))
start_moto "$CHAOS_MOTO_PORT" "$ROOT/target/moto-chaos.log"
export CHAOS_MOTO_ENDPOINT_URL="http://127.0.0.1:${CHAOS_MOTO_PORT}"

# The code under test reaches the emulator only through the SDK's standard variables.
export AWS_ENDPOINT_URL="http://127.0.0.1:${MOTO_PORT}"
export AWS_REGION="us-east-1"
export AWS_ACCESS_KEY_ID="test"
export AWS_SECRET_ACCESS_KEY="test"
export AWS_EC2_METADATA_DISABLED="true"

step "cargo test --workspace --locked $*"
cargo test --workspace --locked "$@"
step "done"
