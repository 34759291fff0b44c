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
payload=$(mktemp /tmp/ingest-payload.XXXXXX)
trap 'rm -f "$data" "$payload"' EXIT
# The payload is generated first, outside the profile, and the batches are many: the kernel's
# zeroing of the process's first pages (`clear_page_erms`) is then a small share of the samples.
"$binary" ingest-cpu --iterations 1 --payload-out "$payload" >/dev/null
iterations=150
faults() { taskset -c 0 perf stat -x, -e page-faults "$binary" ingest-cpu --payload-in "$payload" --iterations "$1" 2>&1 >/dev/null | cut -d, -f1; }
run=$(taskset -c 0 perf record -q -F 2000 -g -o "$data" "$binary" ingest-cpu --payload-in "$payload" --iterations "$iterations" 2>/dev/null)
{
  echo "# perf record of \`bench ingest-cpu --iterations $iterations\` (one core) on a payload it wrote before, commit $commit, $(date -u +%Y-%m-%d)"
  echo "# run: $run"
  echo "# page faults of the whole process: $(faults 5) at 5 batches, $(faults "$iterations") at $iterations (what the kernel zeroes is the start's, not the batches')"
  echo "# self time by symbol, top 30"
  perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null \
    | awk '/^ +[0-9.]+%/ && n < 30 { n++; sub(/ +- +- *$/, ""); print }'
} >"$out"
echo "profile.sh: wrote $out" >&2
