#!/usr/bin/env bash
# What building costs, from a fresh clone of one commit, every build into an empty target directory:
#   - the debug build `make demo` runs (`cargo build --bins`),
#   - the debug build `make test` runs (`cargo build --workspace --bins --tests`),
#   - the release arm64 Lambda build of `ingest` alone (`cargo lambda build --release --arm64 -p ingest`),
#     with the size of its binary and zip.
# Usage: bench/build-cost.sh LABEL [REV]   (LABEL: before, after, …; REV defaults to HEAD)
# Saves the figures under LABEL in bench/build-cost.json, which bench/render.py puts in BENCHMARKS.md.
# Crates are downloaded before the clock starts: the figures are compile time, not network time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
label=${1:?usage: bench/build-cost.sh LABEL [REV]}
rev=$(git -C "$root" rev-parse --short=12 "${2:-HEAD}")
venv="${VENV:-$root/.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
make -C "$root" --no-print-directory build-tools VENV="$venv" >&2
work=$(mktemp -d /tmp/event-pipeline-build-cost.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone --quiet --no-local "$root" "$work/src"
git -C "$work/src" checkout --quiet "$rev"
cd "$work/src"
cargo fetch --quiet

timed() { # name command…: runs the command with a fresh target directory, prints its wall seconds
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  CARGO_TARGET_DIR="$work/target-$name" "$@" >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 1))"
}

echo "build-cost: $rev, make demo's debug build" >&2
demo=$(timed demo cargo build --bins)
rm -rf "$work/target-demo"
echo "build-cost: $rev, make test's debug build" >&2
test=$(timed test cargo build --workspace --bins --tests)
rm -rf "$work/target-test"
echo "build-cost: $rev, release arm64 ingest" >&2
release=$(PATH="$venv/bin:$PATH" timed release cargo lambda build --release --arm64 --output-format zip -p ingest)
binary=$(unzip -l "$work/target-release/lambda/ingest/bootstrap.zip" | awk '$4 == "bootstrap" {print $1}')
zip=$(stat -c %s "$work/target-release/lambda/ingest/bootstrap.zip")

python3 - "$root/bench/build-cost.json" "$label" "$rev" "$demo" "$test" "$release" "$binary" "$zip" <<'PY'
import datetime, json, os, sys
path, label, rev, demo, test, release, binary, zip_bytes = sys.argv[1:]
figures = json.load(open(path)) if os.path.exists(path) else {}
figures[label] = {
    "commit": rev,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    "cores": os.cpu_count(),
    "demo_debug_build_seconds": float(demo),
    "test_debug_build_seconds": float(test),
    "ingest_release_arm64_build_seconds": float(release),
    "ingest_arm64_binary_bytes": int(binary),
    "ingest_arm64_zip_bytes": int(zip_bytes),
}
open(path, "w").write(json.dumps(figures, indent=2) + "\n")
print(json.dumps(figures[label], indent=2))
PY
