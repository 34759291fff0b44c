//! `make demo`: the whole pipeline on one machine against a local AWS emulator, with the real Lambda
//! binaries: producer → Kinesis → (local event source mapping) → ingest → staging → compact →
//! Parquet → report. Exits non-zero if any event is unaccounted for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use localstack::embedded::EmbeddedService;
use localstack::esm::{self, Delivery, MappingConfig, OnFailure, TimedProcess};
use localstack::provision;
use localstack::runtime_api::{LambdaProcess, Outcome};
use serde_json::{json, Value};

#[derive(Parser, Clone)]
#[command(about = "Run the whole pipeline locally against an AWS emulator (AWS_ENDPOINT_URL)")]
struct Args {
    /// User records the producer puts on the stream.
    #[arg(long, env = "EVENTS", default_value_t = 100_000)]
    events: u64,
    #[arg(long, default_value_t = 2)]
    shards: i32,
    #[command(flatten)]
    producer: events::Options,
    /// Event source mapping batch size.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    #[arg(long, default_value = "output")]
    output: PathBuf,
    #[arg(long, default_value = "event-pipeline-demo")]
    bucket: String,
    #[arg(long, default_value = "event-pipeline-dedup")]
    table: String,
    #[arg(long, default_value = "events")]
    stream: String,
    /// Where the stream lives: `embedded` (an emulator in this process, the default) or `emulator`
    /// (the one at AWS_ENDPOINT_URL; moto's slows down as the stream grows).
    #[arg(long, value_enum, default_value_t = Placement::Embedded)]
    kinesis: Placement,
    /// Where the dedup table lives: `embedded` (the default) or `emulator` (moto's does ~200
    /// conditional writes a second, one per event).
    #[arg(long, value_enum, default_value_t = Placement::Embedded)]
    dynamodb: Placement,
    /// Only create the bucket, table and stream on the emulator (the LocalStack init hook uses this).
    #[arg(long)]
    provision_only: bool,
    /// Simulate an outage: the first N invocations of ingest on each shard fail, so the event
    /// source mapping (3 retries) gives batches up to its S3 on-failure destination once N > 3;
    /// `redrive given-up` then replays them.
    #[arg(long, default_value_t = 0)]
    outage: u64,
}

/// The ingest function of one shard, except that its first invocations fail as if the function
/// were down.
struct Outage {
    function: TimedProcess,
    failures_left: u64,
}

#[async_trait::async_trait]
impl esm::Function for Outage {
    async fn invoke(&mut self, payload: &Value) -> anyhow::Result<Outcome> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Ok(Outcome::FunctionError(
                json!({"errorType": "SimulatedOutage", "errorMessage": "the demo's --outage"}),
            ));
        }
        self.function.invoke(payload).await
    }
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Embedded,
    Emulator,
}

/// Starts the embedded service when asked to (never for `--provision-only`, which provisions the
/// emulator), and says where clients of that service go.
async fn place(
    placement: Placement,
    args: &Args,
    emulator: &str,
    start: impl std::future::Future<Output = anyhow::Result<EmbeddedService>>,
) -> anyhow::Result<(Option<EmbeddedService>, String)> {
    if placement == Placement::Emulator || args.provision_only {
        return Ok((None, emulator.to_string()));
    }
    let service = start.await?;
    let endpoint = service.endpoint().to_string();
    Ok((Some(service), endpoint))
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the functions first (cargo build --bins)",
            path.display()
        );
    }
    Ok(path)
}

fn thousands(n: u64) -> String {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The embedded DynamoDB logs every ConditionalCheckFailed (each duplicate) as a warning.
    pipeline::logging::init_with_default("info,dynoxide=error,ferrokinesis=warn");
    let args = Args::parse();
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .context("AWS_ENDPOINT_URL is not set: run `make demo`, which starts the emulator")?;
    let sdk = provision::local_sdk_config(&endpoint).await;
    let s3 = provision::s3_client(&sdk);
    let (embedded_dynamodb, dynamodb_endpoint) =
        place(args.dynamodb, &args, &endpoint, EmbeddedService::dynamodb()).await?;
    let (embedded_kinesis, kinesis_endpoint) = place(
        args.kinesis,
        &args,
        &endpoint,
        EmbeddedService::kinesis(Duration::from_secs(300)),
    )
    .await?;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(&dynamodb_endpoint)
            .build(),
    );
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&sdk)
            .endpoint_url(&kinesis_endpoint)
            .build(),
    );
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);

    provision::ensure_bucket(&s3, &args.bucket).await?;
    provision::ensure_dedup_table(&dynamodb, &args.table).await?;
    let new_stream = provision::ensure_stream(&kinesis, &args.stream, args.shards).await?;
    println!(
        "provisioned s3://{} on {endpoint}, Kinesis stream {} on {kinesis_endpoint}, DynamoDB table {} on {dynamodb_endpoint}",
        args.bucket, args.stream, args.table,
    );
    if args.provision_only {
        return Ok(());
    }
    std::fs::create_dir_all(&args.output)?;
    let checkpoints = args.output.join("esm-checkpoints.json");
    if new_stream {
        let _ = std::fs::remove_file(&checkpoints);
    }

    let env: Vec<(String, String)> = [
        ("DATA_LAKE_BUCKET", args.bucket.as_str()),
        // The SDK's standard per-service override; equal to AWS_ENDPOINT_URL without the embedded one.
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint.as_str()),
        ("DEDUP_TABLE", args.table.as_str()),
        ("METRICS_SINK", "cloudwatch"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_LAMBDA_LOG_LEVEL", "warn"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ingest_bin = sibling_binary("ingest")?;
    let compact_bin = sibling_binary("compact")?;

    let summary = kinesis
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .unwrap_or_default();
    let shards: Vec<String> = kinesis
        .list_shards()
        .stream_name(&args.stream)
        .send()
        .await?
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    let mapping = MappingConfig {
        on_failure: OnFailure {
            objects: std::sync::Arc::new(pipeline::aws::S3ObjectStore::for_bucket(
                &sdk,
                &args.bucket,
                true,
            )),
            mapping_uuid: esm::mapping_uuid(&stream_arn, "ingest"),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:ingest".into(),
        },
        stream_arn,
        batch_size: args.batch_size,
        batching_window: Duration::from_millis(500),
        max_retries: 3,
        bisect_on_error: true,
        checkpoints,
    };

    // Producer and event source mapping run at the same time, as in production.
    let started = Instant::now();
    let metrics_from = SystemTime::now() - Duration::from_secs(3600);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let bar = ProgressBar::new(args.events).with_style(ProgressStyle::with_template(
        "{spinner} producing {bar:40} {pos}/{len} events ({per_sec})",
    )?);
    let producer = {
        let kinesis = kinesis.clone();
        let stream = args.stream.clone();
        let options = events::Options {
            events: args.events,
            ..args.producer.clone()
        };
        let bar = bar.clone();
        tokio::spawn(async move {
            let produced =
                events::produce(&kinesis, &stream, &options, |n| bar.set_position(n)).await;
            let _ = done_tx.send(true);
            produced
        })
    };
    let mut consumers = Vec::new();
    for shard in &shards {
        let (kinesis, stream, shard, mapping, env, bin, done, failures_left) = (
            kinesis.clone(),
            args.stream.clone(),
            shard.clone(),
            mapping.clone(),
            env.clone(),
            ingest_bin.clone(),
            done_rx.clone(),
            args.outage,
        );
        consumers.push(tokio::spawn(async move {
            let process = LambdaProcess::spawn(&bin, "ingest", &env).await?;
            let mut function = Outage {
                function: TimedProcess {
                    process,
                    timeout: Duration::from_secs(300),
                },
                failures_left,
            };
            esm::run_shard(&kinesis, &stream, &shard, &mut function, &mapping, done).await
        }));
    }
    let produced = producer.await??;
    bar.finish_and_clear();
    println!(
        "produced {} events in {:.1} s; waiting for the event source mapping to drain the stream…",
        thousands(produced.events),
        produced.elapsed.as_secs_f64()
    );
    let mut delivery = Delivery::default();
    for consumer in consumers {
        let shard = consumer.await??;
        delivery.records_delivered += shard.records_delivered;
        delivery.invocations += shard.invocations;
        delivery.retries += shard.retries;
        delivery.bisections += shard.bisections;
        delivery.records_given_up += shard.records_given_up;
        delivery.rereads += shard.rereads;
        delivery.invocation_time += shard.invocation_time;
    }
    let ingest_elapsed = started.elapsed();
    println!(
        "ingested {} Kinesis records in {} invocations in {:.1} s",
        thousands(delivery.records_delivered),
        delivery.invocations,
        ingest_elapsed.as_secs_f64()
    );

    // What the mapping gave up on is in its on-failure destination: replay it, as an operator would.
    let given_up_objects = list_keys(&s3, &args.bucket, pipeline::given_up::GIVEN_UP_PREFIX)
        .await?
        .len();
    let redriven = if given_up_objects > 0 {
        let output = tokio::process::Command::new(sibling_binary("redrive")?)
            .arg("given-up")
            .envs(env.iter().cloned())
            .output()
            .await?;
        let report: Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "redrive printed no report: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        if !output.status.success() {
            bail!("redrive left batches undone: {report}");
        }
        println!(
            "redrove {} given-up batches: {} events written",
            report["redriven"], report["events_written"]
        );
        Some(report)
    } else {
        None
    };
    let redrive_count = |field: &str| {
        redriven
            .as_ref()
            .and_then(|r| r[field].as_u64())
            .unwrap_or(0)
    };

    // Compact every arrival day that was staged.
    let staging_keys = list_keys(&s3, &args.bucket, "staging/").await?;
    let days: BTreeSet<String> = staging_keys.iter().filter_map(|k| arrival_day(k)).collect();
    let mut compact = LambdaProcess::spawn(&compact_bin, "compact", &env).await?;
    let compact_started = Instant::now();
    let mut compactions = Vec::new();
    for day in &days {
        match compact
            .invoke(&json!({ "day": day }), Duration::from_secs(900))
            .await?
        {
            Outcome::Response(report) => compactions.push(report),
            Outcome::FunctionError(error) => bail!("compacting {day} failed: {error}"),
        }
    }
    let compact_elapsed = compact_started.elapsed();

    // Gather the report.
    let quarantined = quarantine_reasons(&s3, &args.bucket).await?;
    let lake_dir = args.output.join("lake");
    download_processed(&s3, &args.bucket, &lake_dir).await?;
    let lake = lake_summary(&lake_dir)?;
    let mut metrics = BTreeMap::new();
    for (function, names) in [
        (
            "ingest",
            &[
                "RecordsReceived",
                "EventsWritten",
                "DuplicatesDropped",
                "RecordsQuarantined",
                "BatchItemFailures",
                "StagingBytesWritten",
            ][..],
        ),
        (
            "compact",
            &[
                "EventsCompacted",
                "DuplicatesRemoved",
                "ParquetFilesWritten",
                "ParquetBytesWritten",
            ][..],
        ),
    ] {
        for name in names {
            let sum = metric_sum(&cloudwatch, function, name, metrics_from).await?;
            metrics.insert((function, *name), sum);
        }
    }

    let metric = |f: &'static str, n: &'static str| metrics[&(f, n)] as u64;
    // Ingest's own metrics, plus what the redrive did with the batches the mapping gave up on.
    let written = metric("ingest", "EventsWritten") + redrive_count("events_written");
    let dropped = metric("ingest", "DuplicatesDropped") + redrive_count("duplicates_dropped");
    let quarantined_total =
        metric("ingest", "RecordsQuarantined") + redrive_count("records_quarantined");
    let unaccounted = produced.events as i64 - (written + dropped + quarantined_total) as i64;
    let lake_rows = lake["rows"].as_u64().unwrap_or(0);
    let lake_distinct = lake["distinct_ids"].as_u64().unwrap_or(0);
    let throughput = produced.events as f64 / ingest_elapsed.as_secs_f64();

    let mut md = String::new();
    let _ = writeln!(md, "# Pipeline demo report\n");
    let _ = writeln!(
        md,
        "{} events, {} shards, event source mapping batch size {}, KPL aggregation {}, emulator at {endpoint}, {}.\n",
        thousands(args.events),
        shards.len(),
        args.batch_size,
        if args.producer.aggregate > 1 { format!("{} per record", args.producer.aggregate) } else { "off".into() },
        [("Kinesis", &embedded_kinesis, "ferrokinesis"), ("DynamoDB", &embedded_dynamodb, "dynoxide")]
            .iter()
            .map(|(service, embedded, by)| match embedded {
                Some(_) => format!("{service} embedded ({by})"),
                None => format!("{service} on the emulator"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "## Events\n\n| | expected | pipeline |\n| --- | ---: | ---: |"
    );
    let _ = writeln!(
        md,
        "| produced (user records) | {} | {} received |",
        thousands(produced.events),
        thousands(metric("ingest", "RecordsReceived") + redrive_count("records"))
    );
    let _ = writeln!(
        md,
        "| written to staging | {} | {} |",
        thousands(produced.valid),
        thousands(written)
    );
    let _ = writeln!(
        md,
        "| duplicates dropped (producer retries) | {} | {} |",
        thousands(produced.duplicates),
        thousands(dropped)
    );
    let malformed: u64 = produced.malformed.values().sum();
    let _ = writeln!(
        md,
        "| quarantined (malformed) | {} | {} |",
        thousands(malformed),
        thousands(quarantined_total)
    );
    let _ = writeln!(md, "| **unaccounted** (produced − written − duplicates − quarantined) | 0 | **{unaccounted}** |");
    let _ = writeln!(
        md,
        "| rows in Parquet / distinct ids | {} | {} / {} |\n",
        thousands(written),
        thousands(lake_rows),
        thousands(lake_distinct)
    );
    let _ = writeln!(
        md,
        "## Quarantine by reason\n\n| reason | produced | quarantined |\n| --- | ---: | ---: |"
    );
    let reasons: BTreeSet<&str> = produced
        .malformed
        .keys()
        .copied()
        .chain(quarantined.keys().map(String::as_str))
        .collect();
    for reason in reasons {
        let _ = writeln!(
            md,
            "| `{reason}` | {} | {} |",
            produced.malformed.get(reason).copied().unwrap_or(0),
            quarantined.get(reason).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(md, "\n## Ingest\n");
    let _ = writeln!(
        md,
        "- staging objects: {} ({} bytes)",
        staging_keys.len(),
        thousands(metric("ingest", "StagingBytesWritten"))
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
                " in {given_up_objects} on-failure objects under s3://{}/{}, all redriven ({} events written, {} duplicates)",
                args.bucket,
                pipeline::given_up::GIVEN_UP_PREFIX,
                redrive_count("events_written"),
                redrive_count("duplicates_dropped"),
            )
        } else {
            String::new()
        },
        delivery.rereads
    );
    let _ = writeln!(
        md,
        "- producer start to stream drained: {:.1} s, **{:.0} events/s** end to end",
        ingest_elapsed.as_secs_f64(),
        throughput
    );
    let _ = writeln!(md, "\n## Compaction ({:.1} s)\n\n| arrival day | staging objects | staging lines | redeliveries removed | rows | files |\n| --- | ---: | ---: | ---: | ---: | ---: |", compact_elapsed.as_secs_f64());
    for report in &compactions {
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
    for row in lake["partitions"].as_array().into_iter().flatten() {
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
    for ((function, name), value) in &metrics {
        let _ = writeln!(md, "| {function} | {name} | {} |", thousands(*value as u64));
    }
    let _ = writeln!(md, "\n## Events per language and event type (DuckDB over `{}`)\n\n| language | event_type | events |\n| --- | --- | ---: |", lake_dir.join("processed").display());
    for row in lake["by_language_and_type"]
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
    println!("\n{md}");
    let report_path = args.output.join("report.md");
    std::fs::write(&report_path, &md)?;
    println!("report written to {}", report_path.display());
    // The counts behind BENCHMARKS.md's cost table (bench/cost.py reads them).
    let quarantine_objects = list_keys(&s3, &args.bucket, "quarantine/").await?.len();
    let counts = json!({
        "events": args.events,
        "shards": shards.len(),
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
            "events_written": written, "duplicates_dropped": dropped,
            "records_quarantined": quarantined_total,
            "staging_objects": staging_keys.len(), "quarantine_objects": quarantine_objects,
            "staging_bytes": metric("ingest", "StagingBytesWritten"),
        },
        "compact": {
            "invocations": compactions.len(),
            "seconds": compact_elapsed.as_secs_f64(),
            "parquet_files": metric("compact", "ParquetFilesWritten"),
            "parquet_bytes": metric("compact", "ParquetBytesWritten"),
            "rows": lake_rows,
        },
        "emulators": {
            "kinesis": if embedded_kinesis.is_some() { "ferrokinesis (embedded)" } else { "the local endpoint" },
            "dynamodb": if embedded_dynamodb.is_some() { "dynoxide (embedded)" } else { "the local endpoint" },
            "s3_and_cloudwatch": "the local endpoint (moto or LocalStack)",
            "lambda": "the built debug binaries behind this demo's Lambda Runtime API and event source mapping",
        },
    });
    let counts_path = args.output.join("counts.json");
    std::fs::write(&counts_path, serde_json::to_vec_pretty(&counts)?)?;

    for service in [embedded_kinesis, embedded_dynamodb].into_iter().flatten() {
        service.stop().await?;
    }
    // Against what the producer sent, not the pipeline against itself.
    let mismatches = ledger_mismatches(
        &produced,
        Pipeline {
            written,
            dropped,
            quarantined: &quarantined,
            lake_rows,
            lake_distinct,
            lake_ids_digest: lake["ids_digest"].as_str().unwrap_or_default(),
        },
    );
    if unaccounted != 0 || !mismatches.is_empty() {
        bail!(
            "the lake does not hold what was sent (unaccounted {unaccounted}):\n{}",
            mismatches.join("\n")
        );
    }
    println!(
        "checked against the producer's ledger: {} valid ids, each once in Parquet; {} duplicates dropped; quarantine by reason as sent",
        thousands(produced.valid),
        thousands(produced.duplicates)
    );
    Ok(())
}

/// What the pipeline reports, to hold against the producer's ledger.
struct Pipeline<'a> {
    written: u64,
    dropped: u64,
    quarantined: &'a BTreeMap<String, u64>,
    lake_rows: u64,
    lake_distinct: u64,
    lake_ids_digest: &'a str,
}

/// Every way the pipeline's outcome differs from what the producer sent; empty when it is exact.
fn ledger_mismatches(produced: &events::Produced, pipeline: Pipeline) -> Vec<String> {
    let valid = produced.valid.to_string();
    let sent_reasons: BTreeMap<String, u64> = produced
        .malformed
        .iter()
        .map(|(reason, n)| (reason.to_string(), *n))
        .collect();
    let checks = [
        (
            "events written (distinct valid ids)",
            valid.clone(),
            pipeline.written.to_string(),
        ),
        (
            "duplicates dropped (producer retries)",
            produced.duplicates.to_string(),
            pipeline.dropped.to_string(),
        ),
        (
            "quarantined by reason",
            format!("{sent_reasons:?}"),
            format!("{:?}", pipeline.quarantined),
        ),
        (
            "Parquet rows",
            valid.clone(),
            pipeline.lake_rows.to_string(),
        ),
        (
            "distinct ids in Parquet",
            valid,
            pipeline.lake_distinct.to_string(),
        ),
        (
            "digest of the ids in Parquet",
            format!("{:032x}", produced.valid_ids_digest),
            pipeline.lake_ids_digest.to_string(),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, sent, got)| sent != got)
        .map(|(what, sent, got)| format!("{what}: sent {sent}, pipeline {got}"))
        .collect()
}

/// `YYYY-MM-DD` from a staging key `staging/year=YYYY/month=MM/day=DD/…`.
fn arrival_day(key: &str) -> Option<String> {
    let part = |name: &str| {
        key.split('/')
            .find_map(|segment| segment.strip_prefix(name))
            .map(str::to_string)
    };
    Some(format!(
        "{}-{}-{}",
        part("year=")?,
        part("month=")?,
        part("day=")?
    ))
}

async fn list_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        keys.extend(
            page?
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    Ok(keys)
}

async fn object_bytes(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<bytes::Bytes> {
    let output = s3.get_object().bucket(bucket).key(key).send().await?;
    Ok(output.body.collect().await?.into_bytes())
}

async fn quarantine_reasons(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut reasons = BTreeMap::new();
    for key in list_keys(s3, bucket, "quarantine/").await? {
        let body = object_bytes(s3, bucket, &key).await?;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line: Value = serde_json::from_slice(line)?;
            *reasons
                .entry(line["reason"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    Ok(reasons)
}

async fn download_processed(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    for key in list_keys(s3, bucket, "processed/").await? {
        let body = object_bytes(s3, bucket, &key).await?;
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().expect("keys have folders"))?;
        std::fs::write(path, body)?;
    }
    Ok(())
}

fn lake_summary(dir: &Path) -> anyhow::Result<Value> {
    let python = std::env::var("PIPELINE_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("lake_summary.py");
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(dir)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !output.status.success() {
        bail!(
            "lake_summary.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn metric_sum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    function: &str,
    name: &str,
    from: SystemTime,
) -> anyhow::Result<f64> {
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let output = cloudwatch
        .get_metric_statistics()
        .namespace("EventPipeline")
        .metric_name(name)
        .dimensions(
            Dimension::builder()
                .name("FunctionName")
                .value(function)
                .build(),
        )
        .start_time(from.into())
        .end_time((SystemTime::now() + Duration::from_secs(3600)).into())
        .period(86_400)
        .statistics(Statistic::Sum)
        .send()
        .await
        .with_context(|| format!("GetMetricStatistics {function} {name}"))?;
    Ok(output.datapoints().iter().filter_map(|d| d.sum()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_check_catches_a_lost_id_replaced_by_a_stray_one() {
        let sent = [
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000002",
        ];
        let produced = events::Produced {
            events: 4,
            valid: 2,
            duplicates: 1,
            malformed: BTreeMap::from([("invalid_json", 1)]),
            valid_ids_digest: events::ids_digest(sent),
            ..events::Produced::default()
        };
        let quarantined = BTreeMap::from([("invalid_json".to_string(), 1)]);
        let digest = |ids: [&str; 2]| format!("{:032x}", events::ids_digest(ids));
        let exact = digest(sent);
        let pipeline = |lake_ids_digest| Pipeline {
            written: 2,
            dropped: 1,
            quarantined: &quarantined,
            lake_rows: 2,
            lake_distinct: 2,
            lake_ids_digest,
        };
        assert_eq!(
            ledger_mismatches(&produced, pipeline(&exact)),
            Vec::<String>::new()
        );
        // Same counts, but one id lost and another in its place.
        let swapped = digest([sent[0], "00000000-0000-4000-8000-000000000003"]);
        let found = ledger_mismatches(&produced, pipeline(&swapped));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("digest of the ids"), "{found:?}");
        // A malformed record quarantined under another reason.
        let other = BTreeMap::from([("not_utf8".to_string(), 1)]);
        let found = ledger_mismatches(
            &produced,
            Pipeline {
                quarantined: &other,
                ..pipeline(&exact)
            },
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
