#!/usr/bin/env bash
# The ingest CPU path in instructions, not seconds: `valgrind --tool=callgrind` of `bench ingest-cpu`
# counts the same for the same binary and payload whatever else the machine does, so two commits
# compare exactly where the timed runs of a noisy host cannot. Per record, split as the handler is:
# reading the payload (`KinesisBatch::parse`) and the rest (`Ingest::process`, inside `block_on`).
#   bench/instructions.sh                   HEAD's build    -> bench/profiles/instructions-<commit>.txt
#   bench/instructions.sh BINARY COMMIT     a bench binary built from COMMIT (e.g. in a worktree)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
source "$root/bench/bench-binary.sh"
iterations=5
out="bench/profiles/instructions-$commit.txt"
data=$(mktemp /tmp/ingest-callgrind.XXXXXX)
trap 'rm -f "$data"' EXIT
run=$(valgrind --tool=callgrind --callgrind-out-file="$data" "$binary" ingest-cpu --iterations "$iterations" 2>/dev/null)
python3 - "$data" "$commit" "$iterations" "$run" >"$out" <<'PY'
import json, re, subprocess, sys
data, commit, iterations, run = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
inclusive = subprocess.run(["callgrind_annotate", "--inclusive=yes", data], capture_output=True, text=True, check=True).stdout
exclusive = subprocess.run(["callgrind_annotate", data], capture_output=True, text=True, check=True).stdout
def count(text, pattern):
    for line in text.splitlines():
        if re.search(pattern, line):
            return int(line.split()[0].replace(",", ""))
    sys.exit(f"instructions.sh: no line for {pattern}")
# ingest-cpu runs 3 warm-up batches, then the timed ones; the payload is generated once, outside both.
batches = iterations + 3
per_record = lambda n: n / batches / run["records"]
parse = per_record(count(inclusive, r"KinesisBatch::parse \["))
process = per_record(count(inclusive, r"Runtime::block_on \["))
print(f"# callgrind of `bench ingest-cpu --iterations {iterations}` ({batches} batches of {run['records']:,} records), commit {commit}")
print(f"instructions per record: {parse + process:,.0f} (reading the payload {parse:,.0f}, the rest of the handler {process:,.0f})")
print("# self instructions by function, top 25 (the payload generator's among them)")
rows = [line for line in exclusive.splitlines() if re.match(r"^\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", line) and "PROGRAM TOTALS" not in line]
for line in rows[:25]:
    n, rest = line.split(None, 1)
    name = re.sub(r"\s*\[[^\]]*\]$", "", rest.split(None, 1)[1]).split(":", 1)[-1]
    print(f"{per_record(int(n.replace(',', ''))):8,.0f}  {name[:110]}")
PY
echo "instructions.sh: wrote $out" >&2
cat "$out"
