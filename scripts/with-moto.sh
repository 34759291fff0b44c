#!/usr/bin/env bash
# Runs a command against a private moto server (S3, DynamoDB, Kinesis, CloudWatch) on a free
# loopback port, and stops the server when the command ends, whether it passed or failed.
#   scripts/with-moto.sh cargo test
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${VENV:-$root/.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
moto="$venv/bin/moto_server"
[ -x "$moto" ] || { echo "with-moto: $moto is missing; run 'make venv' first" >&2; exit 1; }

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t moto.XXXXXX.log)
"$moto" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
stop() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
trap stop EXIT INT TERM

for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$moto_pid" 2>/dev/null || { echo "with-moto: moto exited; its log:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.2
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# Keep the SDK away from the instance-metadata service and any user profile.
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# The venv's Python, for tests that read results with independent tools (pyarrow, DuckDB).
export PIPELINE_PYTHON="$venv/bin/python"
echo "with-moto: emulator at $AWS_ENDPOINT_URL" >&2
"$@"
