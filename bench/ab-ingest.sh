#!/usr/bin/env bash
# Two builds of `bench ingest-cpu` on one core, interleaved ROUNDS times on the same payload, with the
# median of each: on a noisy machine, the ratio of the medians is the result, not either figure.
#   bench/ab-ingest.sh BINARY_A COMMIT_A BINARY_B COMMIT_B [ROUNDS=5]
#     -> bench/profiles/ab-ingest-COMMIT_A-COMMIT_B.txt
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
a=$1 a_commit=$2 b=$3 b_commit=$4 rounds=${5:-5}
out="$root/bench/profiles/ab-ingest-$a_commit-$b_commit.txt"
payload=$(mktemp /tmp/ab-payload.XXXXXX)
trap 'rm -f "$payload"' EXIT
rates_a=() rates_b=()
rate() { python3 -c 'import json,sys; print(int(json.load(sys.stdin)["records_per_second"]))'; }
for _ in $(seq "$rounds"); do
  rates_a+=("$(taskset -c 0 "$a" ingest-cpu --iterations 20 | rate)")
  rates_b+=("$(taskset -c 0 "$b" ingest-cpu --iterations 20 | rate)")
done
python3 - "$a_commit" "$b_commit" "${rates_a[*]}" "${rates_b[*]}" >"$out" <<'PY'
import statistics, sys
a_commit, b_commit, a, b = sys.argv[1], sys.argv[2], list(map(int, sys.argv[3].split())), list(map(int, sys.argv[4].split()))
ma, mb = statistics.median(a), statistics.median(b)
print(f"# bench ingest-cpu (10,000 records, 20 iterations, one core), interleaved {len(a)} rounds")
print(f"{a_commit}: records/s {a}, median {ma:,.0f}")
print(f"{b_commit}: records/s {b}, median {mb:,.0f}")
print(f"ratio of medians, {b_commit} over {a_commit}: {mb / ma:.2f}x")
PY
cat "$out"
