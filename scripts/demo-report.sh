#!/usr/bin/env bash
# Runs `make demo` and saves what it printed as the project's reference run:
#   docs/demo/report.md   the demo's report, headed by the commit, date and command that made it
#   docs/demo/counts.json the counts behind BENCHMARKS.md's cost table (bench/cost.py)
# and replaces README.md's demo section (between the demo-report markers) with the same report,
# abridged. Run it after changing code the demo exercises:   scripts/demo-report.sh [EVENTS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
events="${1:-100000}"
if [ -n "$(git status --porcelain --untracked-files=no -- . ':!docs/demo' ':!README.md')" ]; then
  echo "demo-report: commit your changes first; the report names the commit it ran" >&2
  exit 1
fi
commit=$(git rev-parse --short=12 HEAD)
out=$(mktemp -d /tmp/demo-report.XXXXXX)
command="make demo EVENTS=$events"
started=$(date +%s)
make --no-print-directory demo EVENTS="$events" DEMO_ARGS="--output $out" | tee "$out/demo.log" >/dev/null
seconds=$(( $(date +%s) - started ))
date=$(date -u +%Y-%m-%d)
{
  echo "<!-- Written by scripts/demo-report.sh: \`$command\` at commit $commit on $date, $seconds s with the binaries built. -->"
  echo
  cat "$out/report.md"
} > docs/demo/report.md
python3 - "$out/counts.json" "$commit" "$date" "$command" "$seconds" > docs/demo/counts.json <<'PY'
import json, sys
counts = json.load(open(sys.argv[1]))
counts["run"] = {"commit": sys.argv[2], "date": sys.argv[3], "command": sys.argv[4], "seconds": int(sys.argv[5])}
print(json.dumps(counts, indent=2))
PY
python3 scripts/readme-demo.py
rm -rf "$out"
echo "demo-report: saved docs/demo/report.md and docs/demo/counts.json (commit $commit), README.md updated" >&2
