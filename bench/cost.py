"""The cost table of BENCHMARKS.md, computed from the counts a saved demo run wrote
(docs/demo/counts.json, by scripts/demo-report.sh) and AWS list prices for us-east-1 (arm64 Lambda).
Prices are inputs, written here with where they come from; every count comes from the run, scaled to
one million events. Check the current price pages before relying on the result."""
import math
import pathlib
import re

PRICES = {
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ : write request units
    "dynamodb_wru": 0.625 / 1e6,
    # https://aws.amazon.com/dynamodb/pricing/provisioned/ : write capacity unit-hour
    "dynamodb_wcu_hour": 0.00065,
    # https://aws.amazon.com/s3/pricing/ : S3 Standard PUT, COPY, POST, LIST requests
    "s3_put": 0.005 / 1000,
    # https://aws.amazon.com/lambda/pricing/ : Arm requests and duration
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm": 0.0000133334,
    # https://aws.amazon.com/firehose/pricing/ : Direct PUT ingestion (billed in 5 KB steps) and
    # format conversion, per GB
    "firehose_gb": 0.029,
    "firehose_conversion_gb": 0.018,
}

root = pathlib.Path(__file__).resolve().parent.parent


def terraform_default(variable: str) -> float:
    """A variable's default in infra/variables.tf: the memory the functions are deployed with."""
    text = (root / "infra/variables.tf").read_text()
    match = re.search(r'variable "%s" \{[^}]*?default\s*=\s*([\d.]+)' % variable, text, re.S)
    if not match:
        raise SystemExit(f"infra/variables.tf has no default for {variable}")
    return float(match.group(1))


def table(counts: dict) -> dict:
    """Rows of (what, count per 1M events, where the count came from, unit price, cost per 1M)."""
    scale = 1e6 / counts["produced"]["events"]
    ingest, compact = counts["ingest"], counts["compact"]
    ingest_gb = terraform_default("ingest_memory_mb") / 1024
    compact_gb = terraform_default("compact_memory_mb") / 1024
    emulators = counts["emulators"]
    # One conditional PutItem for every record that is not a duplicate inside its own batch: the
    # events written plus the duplicates dropped (an upper bound: in-batch duplicates need none).
    claims = (ingest["events_written"] + ingest["duplicates_dropped"]) * scale
    puts = (ingest["staging_objects"] + ingest["quarantine_objects"]) * scale
    requests = ingest["invocations"] * scale
    ingest_gb_s = ingest["invocation_seconds"] * scale * ingest_gb
    compact_gb_s = compact["seconds"] * scale * compact_gb
    gb_second = f"${PRICES['lambda_gb_second_arm']:.7f} / GB-s"
    rows = [
        ("DynamoDB conditional `PutItem` (dedup claims, < 1 KB: 1 WRU, on-demand)", claims,
         f"events written + duplicates dropped, from the functions' metrics (DynamoDB: {emulators['dynamodb']})",
         f"${PRICES['dynamodb_wru'] * 1e6:.3f} / M", claims * PRICES["dynamodb_wru"]),
        ("S3 `PutObject` (staging + quarantine objects)", puts,
         "objects listed in the bucket after the run", f"${PRICES['s3_put'] * 1000:.3f} / 1,000",
         puts * PRICES["s3_put"]),
        ("Lambda `ingest` requests", requests, "invocations by the local event source mapping",
         f"${PRICES['lambda_request'] * 1e6:.2f} / M", requests * PRICES["lambda_request"]),
        (f"Lambda `ingest` duration ({ingest_gb * 1024:.0f} MB)", ingest_gb_s,
         "GB-s: the invocations' wall time in the run (debug build, emulators: an over-estimate)",
         gb_second, ingest_gb_s * PRICES["lambda_gb_second_arm"]),
        (f"Lambda `compact` duration ({compact_gb * 1024:.0f} MB)", compact_gb_s,
         "GB-s: the compaction's wall time in the run (debug build)", gb_second,
         compact_gb_s * PRICES["lambda_gb_second_arm"]),
    ]
    total = sum(r[4] for r in rows)
    without_dedup = total - rows[0][4]
    # Provisioned capacity (dedup_capacity_mode = "provisioned"): under steady traffic, auto scaling
    # holds consumed writes at the target utilization, so each claim a second costs 1/target WCU.
    utilization = terraform_default("dedup_target_utilization") / 100
    provisioned_per_claim = PRICES["dynamodb_wcu_hour"] / 3600 / utilization
    provisioned = (
        f"DynamoDB claims, provisioned with auto scaling at {utilization:.0%} target utilization "
        "(`dedup_capacity_mode = \"provisioned\"`, steady traffic)", claims,
        "the same claims, spread evenly over the hours they arrive in",
        f"${PRICES['dynamodb_wcu_hour']:.5f} / WCU-hour", claims * provisioned_per_claim)
    # Firehose bills each record rounded up to 5 KB; the same events as the producer sent them.
    record_bytes = counts["produced"]["bytes"] / counts["produced"]["events"]
    billed_gb = math.ceil(record_bytes / 5120) * 5120 * 1e6 / 1e9
    firehose = billed_gb * (PRICES["firehose_gb"] + PRICES["firehose_conversion_gb"])
    return {
        "run": counts["run"],
        "rows": rows,
        "total": total,
        "without_dedup": without_dedup,
        "dedup_share": rows[0][4] / total,
        "provisioned": provisioned,
        "total_provisioned": without_dedup + provisioned[4],
        "min_capacity_month": terraform_default("dedup_min_write_capacity") * PRICES["dynamodb_wcu_hour"] * 730,
        "record_bytes": record_bytes,
        "firehose_billed_gb": billed_gb,
        "firehose": firehose,
    }


def markdown(counts: dict) -> list:
    t = table(counts)
    run = t["run"]
    lines = [
        "## Cost per million events",
        "",
        f"Counts from the saved demo run (`{run['command']}` at commit {run['commit']} on {run['date']}, "
        "`docs/demo/counts.json`), scaled to one million events, priced by `bench/cost.py` with AWS list prices "
        "for us-east-1 (arm64 Lambda, memory as infra/variables.tf deploys it; check the current price pages "
        f"before relying on them). The run used these emulators: Kinesis {counts['emulators']['kinesis']}, "
        f"DynamoDB {counts['emulators']['dynamodb']}, S3 and CloudWatch {counts['emulators']['s3_and_cloudwatch']}; "
        f"Lambda: {counts['emulators']['lambda']}. Kinesis itself costs the same for every design and is left out.",
        "",
        "| per 1M events | count | where the count comes from | unit price | cost |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for what, count, source, price, cost in t["rows"]:
        lines.append(f"| {what} | {count:,.0f} | {source} | {price} | ${cost:.4f} |")
    lines += [
        f"| **this pipeline** | | | | **${t['total']:.2f}** |",
        f"| {t['provisioned'][0]} | {t['provisioned'][1]:,.0f} | {t['provisioned'][2]} | {t['provisioned'][3]} "
        f"| ${t['provisioned'][4]:.4f} |",
        f"| **this pipeline, dedup provisioned** (the row above instead of on-demand claims) | | | | "
        f"**${t['total_provisioned']:.2f}** |",
        f"| **this pipeline without dedup** (DynamoDB removed) | | | | **${t['without_dedup']:.3f}** |",
        f"| Firehose Direct PUT with Parquet conversion, same records ({t['record_bytes']:,.0f} B on average, billed in 5 KB steps) "
        f"| {t['firehose_billed_gb']:.2f} GB billed | producer bytes of the run "
        f"| ${PRICES['firehose_gb']:.3f} + ${PRICES['firehose_conversion_gb']:.3f} / GB | **${t['firehose']:.2f}**, no dedup |",
        "",
        f"The dedup claims are {t['dedup_share']:.0%} of this pipeline's cost. Firehose costs "
        f"{t['firehose'] / t['total']:.2f}× this pipeline with dedup, and {t['firehose'] / t['without_dedup']:.0f}× it without.",
        "",
        f"Provisioned dedup costs {t['provisioned'][4] / t['rows'][0][4]:.0%} of on-demand claims when traffic is "
        "steady enough for auto scaling to track it; it adds a floor (the minimum capacity, "
        f"${t['min_capacity_month']:.2f} a month at the default of "
        f"{terraform_default('dedup_min_write_capacity'):.0f} WCU) and throttles bursts above the current "
        "capacity until scaling catches up (ingest retries throttled claims, then reports the records "
        "for redelivery). On-demand stays the default.",
    ]
    return lines
