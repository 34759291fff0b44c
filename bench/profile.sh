#!/usr/bin/env bash
# The ingest CPU path's profile: `perf record` of `bench ingest-cpu` on one core, the release build
# with its symbol table kept (Cargo.toml: profile.release.package.bench), top symbols by self time.
#   bench/profile.sh                   profiles HEAD's build  -> bench/profiles/ingest-<commit>.txt
#   bench/profile.sh BINARY COMMIT     profiles a bench binary built from COMMIT (e.g. in a worktree)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
source "$root/bench/bench-binary.sh"
out="bench/profiles/ingest-$commit.txt"
data=$(mktemp /tmp/ingest-perf.XXXXXX)
trap 'rm -f "$data"' EXIT
run=$(taskset -c 0 perf record -q -F 2000 -g -o "$data" "$binary" ingest-cpu --iterations 30 2>/dev/null)
{
  echo "# perf record of \`bench ingest-cpu --iterations 30\` (one core), commit $commit, $(date -u +%Y-%m-%d)"
  echo "# run: $run"
  echo "# self time by symbol, top 30"
  perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null \
    | awk '/^ +[0-9.]+%/ && n < 30 { n++; sub(/ +- +- *$/, ""); print }'
} >"$out"
echo "profile.sh: wrote $out" >&2
