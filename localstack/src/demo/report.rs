//! The demo's report: `output/report.md` (printed too) and `output/counts.json`, the counts behind
//! BENCHMARKS.md's cost table (`bench/cost.py`) and the README's demo section.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use pipeline::metric_names::{compact as compact_metrics, ingest as ingest_metrics};
use serde_json::{json, Value};

use super::{Args, DemoRun, Emulators};

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints the report and writes it, with the counts, under `--output`.
pub fn save(args: &Args, emulators: &Emulators, run: &DemoRun) -> anyhow::Result<()> {
    let md = markdown(args, emulators, run);
    println!("\n{md}");
    let report_path = args.output.join("report.md");
    std::fs::write(&report_path, &md)?;
    println!("report written to {}", report_path.display());
    let counts_path = args.output.join("counts.json");
    std::fs::write(
        &counts_path,
        serde_json::to_vec_pretty(&counts(args, emulators, run))?,
    )?;
    Ok(())
}

fn markdown(args: &Args, emulators: &Emulators, run: &DemoRun) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Pipeline demo report\n");
    let _ = writeln!(
        md,
        "{} events, {} shards, event source mapping batch size {}, KPL aggregation {}, emulator at {}, {}.\n",
        thousands(args.events),
        run.shards,
        args.batch_size,
        if args.producer.aggregate > 1 { format!("{} per record", args.producer.aggregate) } else { "off".into() },
        emulators.endpoint,
        [("Kinesis", &emulators.embedded_kinesis, "ferrokinesis"), ("DynamoDB", &emulators.embedded_dynamodb, "dynoxide")]
            .iter()
            .map(|(service, embedded, by)| match embedded {
                Some(_) => format!("{service} embedded ({by})"),
                None => format!("{service} on the emulator"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    events_section(&mut md, run);
    quarantine_section(&mut md, run);
    ingest_section(&mut md, args, run);
    compaction_sections(&mut md, run);
    md
}

fn events_section(md: &mut String, run: &DemoRun) {
    let produced = &run.produced;
    let _ = writeln!(
        md,
        "## Events\n\n| | expected | pipeline |\n| --- | ---: | ---: |"
    );
    let _ = writeln!(
        md,
        "| produced (user records) | {} | {} received |",
        thousands(produced.events),
        thousands(run.metric("ingest", ingest_metrics::RECORDS_RECEIVED) + run.redriven("records"))
    );
    let _ = writeln!(
        md,
        "| written to staging | {} | {} |",
        thousands(produced.valid),
        thousands(run.written())
    );
    let _ = writeln!(
        md,
        "| duplicates dropped (producer retries) | {} | {} |",
        thousands(produced.duplicates),
        thousands(run.dropped())
    );
    let malformed: u64 = produced.malformed.values().sum();
    let _ = writeln!(
        md,
        "| quarantined (malformed) | {} | {} |",
        thousands(malformed),
        thousands(run.quarantined_total())
    );
    let _ = writeln!(
        md,
        "| **unaccounted** (produced − written − duplicates − quarantined) | 0 | **{}** |",
        run.unaccounted()
    );
    let _ = writeln!(
        md,
        "| rows in Parquet / distinct ids | {} | {} / {} |\n",
        thousands(run.written()),
        thousands(run.lake["rows"].as_u64().unwrap_or(0)),
        thousands(run.lake["distinct_ids"].as_u64().unwrap_or(0))
    );
}

fn quarantine_section(md: &mut String, run: &DemoRun) {
    let _ = writeln!(
        md,
        "## Quarantine by reason\n\n| reason | produced | quarantined |\n| --- | ---: | ---: |"
    );
    let reasons: BTreeSet<&str> = run
        .produced
        .malformed
        .keys()
        .copied()
        .chain(run.quarantined.keys().map(String::as_str))
        .collect();
    for reason in reasons {
        let _ = writeln!(
            md,
            "| `{reason}` | {} | {} |",
            run.produced.malformed.get(reason).copied().unwrap_or(0),
            run.quarantined.get(reason).copied().unwrap_or(0)
        );
    }
}

fn ingest_section(md: &mut String, args: &Args, run: &DemoRun) {
    let (produced, delivery) = (&run.produced, &run.delivery);
    let _ = writeln!(md, "\n## Ingest\n");
    let _ = writeln!(
        md,
        "- staging objects: {} ({} bytes)",
        run.staging_objects,
        thousands(run.metric("ingest", ingest_metrics::STAGING_BYTES_WRITTEN))
    );
    let _ = writeln!(
        md,
        "- producer: {} Kinesis records in {} `PutRecords` calls ({} entries re-sent), {:.1} s",
        thousands(produced.kinesis_records),
        produced.put_records_calls,
        produced.entries_resent,
        produced.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "- event source mapping: {} invocations, {} retries, {} bisections, {} records given up{}, {} shard re-reads",
        delivery.invocations,
        delivery.retries,
        delivery.bisections,
        delivery.records_given_up,
        if delivery.records_given_up > 0 {
            format!(
                " in {} on-failure objects under s3://{}/{}, all redriven ({} events written, {} duplicates)",
                run.given_up_objects,
                args.bucket,
                pipeline::given_up::GIVEN_UP_PREFIX,
                run.redriven("events_written"),
                run.redriven("duplicates_dropped"),
            )
        } else {
            String::new()
        },
        delivery.rereads
    );
    let _ = writeln!(
        md,
        "- producer start to stream drained: {:.1} s, **{:.0} events/s** end to end",
        run.ingest_elapsed.as_secs_f64(),
        produced.events as f64 / run.ingest_elapsed.as_secs_f64()
    );
}

fn compaction_sections(md: &mut String, run: &DemoRun) {
    let _ = writeln!(md, "\n## Compaction ({:.1} s)\n\n| arrival day | staging objects | staging lines | redeliveries removed | rows | files |\n| --- | ---: | ---: | ---: | ---: | ---: |", run.compact_elapsed.as_secs_f64());
    for report in &run.compactions {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            report["day"].as_str().unwrap_or_default(),
            report["input_objects"],
            report["input_events"],
            report["duplicates_removed"],
            report["rows_written"],
            report["files"].as_array().map_or(0, Vec::len)
        );
    }
    let _ = writeln!(md, "\n## Parquet by event day and language\n\n| day | language | files | rows |\n| --- | --- | ---: | ---: |");
    for row in run.lake["partitions"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row[0].as_str().unwrap_or_default(),
            row[1].as_str().unwrap_or_default(),
            row[2],
            row[3]
        );
    }
    let _ = writeln!(md, "\n## Function metrics (read back from the emulator's CloudWatch)\n\n| function | metric | sum |\n| --- | --- | ---: |");
    for ((function, name), value) in &run.metrics {
        let _ = writeln!(md, "| {function} | {name} | {} |", thousands(*value as u64));
    }
    let _ = writeln!(md, "\n## Events per language and event type (DuckDB over `{}`)\n\n| language | event_type | events |\n| --- | --- | ---: |", run.lake_dir.join("processed").display());
    for row in run.lake["by_language_and_type"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            row[0].as_str().unwrap_or_default(),
            row[1].as_str().unwrap_or_default(),
            row[2]
        );
    }
}

fn counts(args: &Args, emulators: &Emulators, run: &DemoRun) -> Value {
    let (produced, delivery) = (&run.produced, &run.delivery);
    json!({
        "events": args.events,
        "shards": run.shards,
        "batch_size": args.batch_size,
        "kpl_aggregation": args.producer.aggregate,
        "produced": {
            "events": produced.events, "valid": produced.valid, "duplicates": produced.duplicates,
            "malformed": produced.malformed.values().sum::<u64>(), "bytes": produced.bytes,
            "kinesis_records": produced.kinesis_records, "put_records_calls": produced.put_records_calls,
        },
        "ingest": {
            "invocations": delivery.invocations,
            "invocation_seconds": delivery.invocation_time.as_secs_f64(),
            "events_written": run.written(), "duplicates_dropped": run.dropped(),
            "records_quarantined": run.quarantined_total(),
            "staging_objects": run.staging_objects, "quarantine_objects": run.quarantine_objects,
            "staging_bytes": run.metric("ingest", ingest_metrics::STAGING_BYTES_WRITTEN),
        },
        "compact": {
            "invocations": run.compactions.len(),
            "seconds": run.compact_elapsed.as_secs_f64(),
            "parquet_files": run.metric("compact", compact_metrics::PARQUET_FILES_WRITTEN),
            "parquet_bytes": run.metric("compact", compact_metrics::PARQUET_BYTES_WRITTEN),
            "rows": run.lake["rows"].as_u64().unwrap_or(0),
        },
        "emulators": {
            "kinesis": if emulators.embedded_kinesis.is_some() { "ferrokinesis (embedded)" } else { "the local endpoint" },
            "dynamodb": if emulators.embedded_dynamodb.is_some() { "dynoxide (embedded)" } else { "the local endpoint" },
            "s3_and_cloudwatch": "the local endpoint (moto or LocalStack)",
            "lambda": "the built debug binaries behind this demo's Lambda Runtime API and event source mapping",
        },
    })
}
