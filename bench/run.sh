#!/usr/bin/env bash
# make bench: every figure of BENCHMARKS.md in one run, raw results in bench/results.json.
#   BENCH_EVENTS=1000000 (the 1x day; the 10x day is ten times that)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="${VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
py="$venv/bin/python"
target="${CARGO_TARGET_DIR:-$root/target}"
events="${BENCH_EVENTS:-1000000}"
work="${BENCH_DIR:-$(mktemp -d /tmp/event-pipeline-bench.XXXXXX)}"
mkdir -p "$work"
echo "bench: building release binaries; working in $work" >&2
cargo build --release --quiet -p bench -p ingest -p compact
bin="$target/release"

# Runs a command under GNU time; stores its stdout JSON plus wall seconds and peak RSS (KiB).
measure() {
  local name=$1; shift
  /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out"
  "$py" - "$work/$name.out" "$work/$name.time" >"$work/$name.json" <<'PY'
import json, re, sys
out = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
text = open(sys.argv[2]).read()
out["peak_rss_kib"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
h, m, s = (["0"] + re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1).split(":"))[-3:]
out["wall_seconds"] = int(h) * 3600 + int(m) * 60 + float(s)
print(json.dumps(out))
PY
  echo "bench: $name $(cat "$work/$name.json")" >&2
}

echo "bench: ingest CPU path (one core), ours and a Python handler on the same payload" >&2
taskset -c 0 "$bin/bench" ingest-cpu --iterations 50 --payload-out "$work/payload.json" >"$work/ingest.json"
taskset -c 0 "$py" bench/python_handler.py "$work/payload.json" 5 >"$work/python.json"

echo "bench: generating a ${events}-event staging day and a 10x day" >&2
rm -rf "$work/day1" "$work/day10"
"$bin/bench" gen-staging --root "$work/day1" --events "$events" >"$work/gen1.json"
"$bin/bench" gen-staging --root "$work/day10" --events $((events * 10)) >"$work/gen10.json"

rm -rf "$work/day1/processed" "$work/duckdb-out" "$work/pyarrow-out"
measure compact-1x "$bin/bench" compact-local --root "$work/day1"
measure duckdb-1x "$py" bench/duckdb_compact.py "$work/day1" "$work/duckdb-out"
measure pyarrow-1x "$py" bench/pyarrow_compact.py "$work/day1" "$work/pyarrow-out"
measure compact-10x "$bin/bench" compact-local --root "$work/day10"

echo "bench: cold start and sizes" >&2
"$bin/bench" cold-start --binary "$bin/ingest" >"$work/cold-ingest.json"
"$bin/bench" cold-start --binary "$bin/compact" >"$work/cold-compact.json"

"$py" - "$work" "$bin" >"$root/bench/results.json" <<'PY'
import json, os, platform, subprocess, sys, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(os.path.join(work, name + ".json")))
sizes = {}
for name in ("ingest", "compact"):
    path = os.path.join(bin_dir, name)
    archive = os.path.join(work, name + ".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    sizes[name] = {"binary_bytes": os.path.getsize(path), "zip_bytes": os.path.getsize(archive)}
ingest, python = load("ingest"), load("python")
c1, c10, duck, arrow = load("compact-1x"), load("compact-10x"), load("duckdb-1x"), load("pyarrow-1x")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
results = {
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                "os": platform.platform(), "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()},
    "ingest_cpu": {"ours": ingest, "python_handler": python,
                   "ratio": ingest["records_per_second"] / python["records_per_second"]},
    "compaction": {"staging_1x": load("gen1"), "staging_10x": load("gen10"),
                   "ours_1x": c1, "ours_10x": c10, "duckdb_1x": duck, "pyarrow_1x": arrow,
                   "throughput_vs_duckdb": duck["wall_seconds"] / c1["wall_seconds"],
                   "peak_rss_vs_duckdb": c1["peak_rss_kib"] / duck["peak_rss_kib"],
                   "throughput_vs_pyarrow": arrow["wall_seconds"] / c1["wall_seconds"],
                   "peak_rss_10x_over_1x": c10["peak_rss_kib"] / c1["peak_rss_kib"]},
    "cold_start": {"ingest": load("cold-ingest"), "compact": load("cold-compact")},
    "sizes": sizes,
}
print(json.dumps(results, indent=2))
PY
echo "bench: wrote bench/results.json" >&2
