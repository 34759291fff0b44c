"""Renders the tables of BENCHMARKS.md from bench/results.json (run by bench/run.sh).
The prose around the tables lives in bench/NOTES.md and is copied in after them."""
import json
import pathlib

here = pathlib.Path(__file__).parent
r = json.loads((here / "results.json").read_text())
m, i, c = r["machine"], r["ingest_cpu"], r["compaction"]
mib = lambda kib: f"{kib / 1024:,.0f} MiB"
rate = lambda x: f"{x:,.0f}"
lines = [
    "# Benchmarks",
    "",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; {m['rustc']}.",
    "Reproduce with `make bench` (release build; about ten minutes here); raw figures in `bench/results.json`.",
    "",
    "## Ingest CPU path, one core",
    "",
    f"A {i['ours']['records']:,}-record Lambda payload ({i['ours']['payload_bytes'] / 1e6:.1f} MB, ~2 % duplicate ids, ~0.5 % malformed):",
    "parse the Lambda JSON, decode, validate, transform, claim (in-memory store) and serialise staging NDJSON.",
    "",
    "| | records/s | MB/s | ms per batch |",
    "| --- | ---: | ---: | ---: |",
    f"| ours (`bench ingest-cpu`) | {rate(i['ours']['records_per_second'])} | {i['ours']['megabytes_per_second']:.0f} | {i['ours']['seconds_per_batch'] * 1000:.1f} |",
    f"| Python handler (`bench/python_handler.py`) | {rate(i['python_handler']['records_per_second'])} | {i['python_handler']['megabytes_per_second']:.1f} | {i['python_handler']['seconds_per_batch'] * 1000:.0f} |",
    f"| **ratio** | **{i['ratio']:.0f}×** | | |",
    "",
    "## Compaction of one staging day",
    "",
    f"1× day: {c['staging_1x']['events']:,} events in {c['staging_1x']['objects']:,} staging objects ({c['staging_1x']['bytes'] / 1e6:,.0f} MB of NDJSON), on local disk;",
    f"10× day: {c['staging_10x']['events']:,} events ({c['staging_10x']['bytes'] / 1e9:,.1f} GB). Same files for every tool.",
    "",
    "| | wall | events/s | peak RSS | Parquet |",
    "| --- | ---: | ---: | ---: | ---: |",
]
for name, key in (("ours, 1×", "ours_1x"), ("DuckDB `COPY … PARTITION_BY`, 1×", "duckdb_1x"), ("pyarrow `write_dataset`, 1×", "pyarrow_1x"), ("ours, 10×", "ours_10x")):
    x = c[key]
    events = c["staging_10x" if key.endswith("10x") else "staging_1x"]["events"]
    lines.append(f"| {name} | {x['wall_seconds']:.1f} s | {rate(events / x['wall_seconds'])} | {mib(x['peak_rss_kib'])} | {x['parquet_bytes'] / 1e6:,.0f} MB |")
lines += [
    "",
    f"- throughput vs DuckDB: **{c['throughput_vs_duckdb']:.2f}×**; peak RSS vs DuckDB: **{c['peak_rss_vs_duckdb']:.2f}×**",
    f"- throughput vs pyarrow: {c['throughput_vs_pyarrow']:.2f}×",
    f"- our peak RSS, 10× day over 1× day: **{c['peak_rss_10x_over_1x']:.2f}×**",
    "",
    "## Cold start and size",
    "",
    "Sizes are this machine's x86_64 release binaries, zipped; `make build` makes the arm64 Lambda zips.",
    "",
    "| | process start → first Runtime API poll (median of 20) | binary | zip |",
    "| --- | ---: | ---: | ---: |",
]
for name in ("ingest", "compact"):
    cs, sz = r["cold_start"][name], r["sizes"][name]
    lines.append(f"| {name} | {cs['median_ms']:.1f} ms | {sz['binary_bytes'] / 1e6:.1f} MB | {sz['zip_bytes'] / 1e6:.1f} MB |")
notes = (here / "NOTES.md").read_text() if (here / "NOTES.md").exists() else ""
(here.parent / "BENCHMARKS.md").write_text("\n".join(lines) + "\n\n" + notes)
