#!/usr/bin/env bash
# Runs a command against LocalStack (docker compose), the alternative to the embedded moto emulator.
#   localstack/run-localstack.sh cargo run -p localstack --bin demo
# Needs a Docker engine, which the project's build machines do not have: this path is written for
# users with Docker and has not been run in CI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
command -v docker >/dev/null || { echo "run-localstack: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "run-localstack: no Docker engine is running; use the default 'make demo' (moto)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-$root/target}"
export DEMO_BINARY="$target/debug/demo"
docker compose -f "$here/docker-compose.yml" up -d --wait
trap 'docker compose -f "$here/docker-compose.yml" down' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
venv="${VENV:-$root/.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
export PIPELINE_PYTHON="$venv/bin/python"
"$@"
