"""Renders the tables of BENCHMARKS.md from bench/results.json (run by bench/run.sh).
The prose around the tables lives in bench/NOTES.md and is copied in after them."""
import json
import pathlib
import sys

import cost

here = pathlib.Path(__file__).parent
r = json.loads((here / "results.json").read_text())
m, i, c = r["machine"], r["ingest_cpu"], r["compaction"]
mo = r["many_objects"]
measured = r.get("measured")
if not measured:
    sys.exit("bench/results.json names no commit: run make bench")
mib = lambda kib: f"{kib / 1024:,.0f} MiB"
rate = lambda x: f"{x:,.0f}"


def ingest_table(d, ours, python, ms_decimals):
    """Ours, the Python handler and their ratio on one payload (ours' batch time to `ms_decimals`)."""
    row = lambda name, side, mb, ms: (f"| {name} | {rate(side['records_per_second'])} | {side['megabytes_per_second']:.{mb}f} "
                                      f"| {side['seconds_per_batch'] * 1000:.{ms}f} |")
    return [
        "| | records/s | MB/s | ms per batch |",
        "| --- | ---: | ---: | ---: |",
        row(ours, d["ours"], 0, ms_decimals),
        row(python, d["python_handler"], 1, 0),
        f"| **ratio** | **{d['ratio']:.0f}×** | | |",
        "",
    ]


def ingest_rounds(ingest):
    """How the two sides were timed, and how far the rounds spread (none before rounds existed)."""
    rounds = ingest.get("rounds")
    if not rounds:
        return []
    spread = lambda side: f"{rate(min(r[side] for r in rounds))}–{rate(max(r[side] for r in rounds))}"
    ratios = [r["ours"] / r["python_handler"] for r in rounds]
    return [
        f"Each side's figure is its median of {len(rounds)} rounds taken in turn on the same payload file "
        f"(ours {ingest['ours']['iterations']} batches a round, the Python handler {ingest['python_handler']['iterations']}), so a noisy spell of the host "
        f"falls on both. Rounds ranged {spread('ours')} records/s (ours) and {spread('python_handler')} "
        f"(Python); the ratio within one round, {min(ratios):.0f}× to {max(ratios):.0f}×.",
        "",
    ]


def deployed_batch(d):
    """The same path in batches of the event source mapping's default size (infra/variables.tf)."""
    if not d:
        return []
    return [
        f"The same, in batches of {d['ours']['records']:,} records, the event source mapping's default `batch_size` "
        "(`infra/variables.tf`), timed in the same rounds; the targets above are the 10,000-record payload's:",
        "",
        *ingest_table(d, f"ours, {d['ours']['records']:,}-record batches",
                      f"Python handler, {d['ours']['records']:,}-record batches", 2),
    ]


def what_is_left(i, floor):
    """Ours' time in its two parts, and the SIMD JSON crates reading alone, against the 50× budget."""
    if not floor or "ours_parts" not in i:
        return []
    budget = 1e6 / (50 * i["python_handler"]["records_per_second"])
    row = lambda name, per_second: (f"| {name} | {rate(per_second)} | {1e6 / per_second:.2f} "
                                    f"| {1e6 / per_second / budget:.0%} |")
    parts = i["ours_parts"]
    return [
        f"Where ours' time goes, against the 50× target: the Python handler's median above, fifty times over, "
        f"leaves {budget:.2f} µs a record, {50 * i['python_handler']['megabytes_per_second']:,.0f} MB/s of this payload. The two parts of ours are timed within the same rounds "
        "(reading is `KinesisBatch::parse`: the envelopes and the base64 data); the crates read the same payload file "
        "in the same rounds (`bench read-floor`: envelopes, base64 data and each event's four fields, and nothing else: "
        "no check, claim or staging line)" + (", and so do ours' readers, for the same work:" if "ours" in floor else ":"),
        "",
        "| | records/s | µs a record | of the 50× budget |",
        "| --- | ---: | ---: | ---: |",
        row("ours, the whole handler", i["ours"]["records_per_second"]),
        row("ours, reading the payload", parts["reading_records_per_second"]),
        row("ours, the rest (validate, claim, staging lines)", parts["rest_records_per_second"]),
        *([row("ours' readers, the same reading alone", floor["ours"]["records_per_second"])] if "ours" in floor else []),
        row("`sonic-rs`, reading alone", floor["sonic_rs"]["records_per_second"]),
        row("`simd-json`, reading alone", floor["simd_json"]["records_per_second"]),
        "",
    ]


lines = [
    "# Benchmarks",
    "",
    f"Measured by `make bench` at commit {measured['commit']}{' (with uncommitted changes)' if measured['dirty'] else ''} on {measured['date']}; "
    "raw figures in `bench/results.json`, tables written by `bench/render.py`.",
    "",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; {m['rustc']}.",
    "",
    "## Ingest CPU path, one core",
    "",
    f"A {i['ours']['records']:,}-record Lambda payload ({i['ours']['payload_bytes'] / 1e6:.1f} MB, ~2 % duplicate ids, ~0.5 % malformed):",
    "parse the Lambda JSON, decode, validate, transform, claim (in-memory store) and serialise staging NDJSON.",
    "",
    *ingest_table(i, "ours (`bench ingest-cpu`)", "Python handler (`bench/python_handler.py`)", 1),
    *ingest_rounds(i),
    *deployed_batch(r.get("ingest_cpu_deployed_batch")),
    *what_is_left(i, r.get("read_floor")),
    "## Compaction of one staging day",
    "",
    f"1× day: {c['staging_1x']['events']:,} events in {c['staging_1x']['objects']:,} staging objects ({c['staging_1x']['bytes'] / 1e6:,.0f} MB of NDJSON), on local disk;",
    f"10× day: {c['staging_10x']['events']:,} events ({c['staging_10x']['bytes'] / 1e9:,.1f} GB). Same files for every tool.",
    "",
    "| | wall | events/s | peak RSS | Parquet |",
    "| --- | ---: | ---: | ---: | ---: |",
]
rows = [("ours, one core (`taskset -c 0`), 1×", "ours_1x_one_core"),
        ("DuckDB `COPY … PARTITION_BY`, `threads=1`, one core, 1×", "duckdb_1x_one_thread"),
        ("ours, two cores, 1×", "ours_1x"), ("DuckDB `COPY … PARTITION_BY`, `threads=2`, 1×", "duckdb_1x"),
        ("pyarrow `write_dataset`, 1×", "pyarrow_1x"), ("ours, two cores, 10×", "ours_10x")]
for name, key in rows:
    if key not in c:
        lines.append(f"| {name} | not measured in this run | | | |")
        continue
    x = c[key]
    events = c["staging_10x" if key.endswith("10x") else "staging_1x"]["events"]
    lines.append(f"| {name} | {x['wall_seconds']:.1f} s | {rate(events / x['wall_seconds'])} | {mib(x['peak_rss_kib'])} | {x['parquet_bytes'] / 1e6:,.0f} MB |")
lines += [
    "",
    f"- throughput vs DuckDB on one core each: **{c['throughput_vs_duckdb_one_thread']:.2f}×**; peak RSS: **{c['peak_rss_vs_duckdb_one_thread']:.2f}×**",
    f"- throughput vs DuckDB on two cores each: **{c['throughput_vs_duckdb']:.2f}×**; peak RSS: **{c['peak_rss_vs_duckdb']:.2f}×**",
    f"- throughput vs pyarrow: {c['throughput_vs_pyarrow']:.2f}×",
    f"- our peak RSS, 10× day over 1× day: **{c['peak_rss_10x_over_1x']:.2f}×**",
    "",
    "## Many small objects at S3 latency",
    "",
    f"{mo['staging']['events']:,} events in {mo['staging']['objects']:,} staging objects (12 per shard-minute, 4 shards: "
    f"{mo['staging']['bytes'] / mo['staging']['objects'] / 1e3:.1f} kB each on average), compacted on two cores from the local store, "
    f"then from the same store answering every request (GET, PUT, list page, upload part) after {mo['with_latency']['latency_ms']} ms.",
    "",
    "| | wall | events/s | peak RSS | fetches in flight, most |",
    "| --- | ---: | ---: | ---: | ---: |",
    *[f"| {name} | {x['wall_seconds']:.1f} s | {rate(mo['staging']['events'] / x['wall_seconds'])} | {mib(x['peak_rss_kib'])} | {x['widest_fetch_window']} |"
      for name, x in (("no latency", mo["zero_latency"]), (f"{mo['with_latency']['latency_ms']} ms per request", mo["with_latency"]))],
    "",
    f"- with latency over without: **{mo['latency_over_zero']:.2f}×**",
    "",
    "## The ceiling of one compaction invocation",
    "",
    f"At the 10× day's rate here ({rate(c['ours_10x']['input_events'] / c['ours_10x']['wall_seconds'])} events/s on two x86_64 cores, what 3,538 MB gives), "
    f"one invocation compacts about **{c['ours_10x']['input_events'] / c['ours_10x']['wall_seconds'] * 900 / 1e6:,.0f} M events** within Lambda's 15 minutes, "
    f"with no margin; at one core's rate (the 1× day under `taskset`, what 1,769 MB gives) about "
    f"**{c['ours_1x_one_core']['input_events'] / c['ours_1x_one_core']['wall_seconds'] * 900 / 1e6:,.0f} M**. The Terraform default, 3,008 MB (1.7 vCPUs), is between the two. "
    f"The seed's 24 M events a day would take {24e6 / (c['ours_1x_one_core']['input_events'] / c['ours_1x_one_core']['wall_seconds']) / 60:,.1f} minutes at the one-core rate. "
    "Not measured on arm64 (Graviton): see the notes below.",
    "",
    "## Cold start and size",
    "",
    "Cold start: 20 runs of each binary, from process start to its first poll of the Runtime API.",
    "Sizes: this machine's x86_64 release binaries, zipped, and the arm64 Lambda zips that `cargo lambda build",
    "--release --arm64` (`make build`) made in the same run.",
    "",
    "| | cold start, median | cold start, max | x86_64 binary | x86_64 zip | arm64 Lambda zip |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
]
for name in ("ingest", "compact"):
    cs, sz = r["cold_start"][name], r["sizes"][name]
    arm = r.get("arm64_zips", {}).get(name)
    arm_text = f"{arm / 1e6:.1f} MB" if arm else "not built (BENCH_ARM64=0)"
    lines.append(f"| {name} | {cs['median_ms']:.1f} ms | {cs['max_ms']:.1f} ms | {sz['binary_bytes'] / 1e6:.1f} MB | {sz['zip_bytes'] / 1e6:.1f} MB | {arm_text} |")

# What building costs, before and after the shared crate was split by feature (bench/build-cost.sh).
build_cost_path = here / "build-cost.json"
if build_cost_path.exists():
    cost_runs = json.loads(build_cost_path.read_text())
    labels = [label for label in ("before", "after") if label in cost_runs]
    rows = [
        ("`make demo`'s debug build (`cargo build --bins`), cold", "demo_debug_build_seconds", lambda v: f"{v:,.0f} s"),
        ("`make test`'s debug build (`cargo build --workspace --bins --tests`), cold", "test_debug_build_seconds", lambda v: f"{v:,.0f} s"),
        ("release arm64 build of `ingest` alone (`cargo lambda build -p ingest`), cold", "ingest_release_arm64_build_seconds", lambda v: f"{v:,.0f} s"),
        ("`ingest` arm64 binary", "ingest_arm64_binary_bytes", lambda v: f"{v / 1e6:.2f} MB"),
        ("`ingest` arm64 Lambda zip", "ingest_arm64_zip_bytes", lambda v: f"{v / 1e6:.2f} MB"),
    ]
    lines += [
        "",
        "## Build cost",
        "",
        "From a fresh clone, every build into an empty target directory (`bench/build-cost.sh LABEL COMMIT`), "
        "on this machine (" + ", ".join(f"{label}: commit {cost_runs[label]['commit']} on {cost_runs[label]['date']}, {cost_runs[label]['cores']} cores" for label in labels) + "). "
        "_before_ is the shared crate compiling every SDK, Arrow and the test-only modules for every binary; "
        "_after_ is the crate split by feature (`aws`, `lake`, `test-util`).",
        "",
        "| | " + " | ".join(labels) + " |",
        "| --- |" + " ---: |" * len(labels),
    ]
    for what, key, fmt in rows:
        lines.append(f"| {what} | " + " | ".join(fmt(cost_runs[label][key]) for label in labels) + " |")

counts_path = here.parent / "docs/demo/counts.json"
lines += [""] + cost.markdown(json.loads(counts_path.read_text()))

# The targets, judged from the figures above.
worst_cold = max(r["cold_start"][n]["median_ms"] for n in ("ingest", "compact"))
targets = [
    ("cold start, median, < 20 ms", f"{worst_cold:.1f} ms (the slower binary)", worst_cold < 20),
    ("10× day within 1.5× of the 1× peak RSS", f"{c['peak_rss_10x_over_1x']:.2f}×", c["peak_rss_10x_over_1x"] <= 1.5),
    ("ingest ≥ 1M records/s per core", f"{i['ours']['records_per_second']:,.0f}/s", i["ours"]["records_per_second"] >= 1e6),
    ("ingest ≥ 50× the Python handler", f"{i['ratio']:.0f}×", i["ratio"] >= 50),
    ("compaction ≥ 2× DuckDB's throughput, one core each", f"{c['throughput_vs_duckdb_one_thread']:.2f}×", c["throughput_vs_duckdb_one_thread"] >= 2),
    ("compaction ≤ ¼ of DuckDB's peak RSS, one core each", f"{c['peak_rss_vs_duckdb_one_thread']:.2f}×", c["peak_rss_vs_duckdb_one_thread"] <= 0.25),
    ("compaction ≥ 2× DuckDB's throughput, two cores each", f"{c['throughput_vs_duckdb']:.2f}×", c["throughput_vs_duckdb"] >= 2),
    ("compaction ≤ ¼ of DuckDB's peak RSS, two cores each", f"{c['peak_rss_vs_duckdb']:.2f}×", c["peak_rss_vs_duckdb"] <= 0.25),
    ("many small objects: with latency within 1.5× of without", f"{mo['latency_over_zero']:.2f}×", mo["latency_over_zero"] <= 1.5),
]
lines += ["", "## Targets", "", "| target | result | |", "| --- | ---: | --- |"]
lines += [f"| {what} | {result} | {'met' if met else '**not met**'} |" for what, result, met in targets]
notes = (here / "NOTES.md").read_text()
rendered = "\n".join(lines) + "\n\n" + notes
target = here.parent / "BENCHMARKS.md"
if "--check" in sys.argv:
    # make lint: BENCHMARKS.md holds only what this script writes from the saved figures.
    if target.read_text() != rendered:
        sys.exit("BENCHMARKS.md is not what bench/render.py writes from bench/results.json and "
                 "docs/demo/counts.json: edit bench/NOTES.md or bench/render.py, not BENCHMARKS.md")
else:
    target.write_text(rendered)
