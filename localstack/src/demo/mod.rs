//! `make demo`: the whole pipeline on one machine against a local AWS emulator, with the real Lambda
//! binaries: producer → Kinesis → (local event source mapping) → ingest → staging → compact →
//! Parquet → report. [`run`] fails if any event is unaccounted for.
//!
//! The steps, in order: [`Emulators::start`] (provision), [`ingest_stream`] (producer and mapping
//! side by side), [`redrive_given_up`], [`compact_days`], then [`read_back`] and [`report`] render
//! what happened and [`ledger`] holds it against what the producer sent.

pub mod ledger;
pub mod read_back;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use pipeline::layout::MinuteKey;
use pipeline::metric_names::{compact as compact_metrics, ingest as ingest_metrics};
use serde_json::{json, Value};

use crate::embedded_emulators::EmbeddedService;
use crate::event_source_mapping::{self as esm, Delivery, MappingConfig, OnFailure, TimedProcess};
use crate::lambda_runtime_api::{LambdaProcess, Outcome};
use crate::provision;

#[derive(clap::Parser, Clone)]
#[command(about = "Run the whole pipeline locally against an AWS emulator (AWS_ENDPOINT_URL)")]
pub struct Args {
    /// User records the producer puts on the stream.
    #[arg(long, env = "EVENTS", default_value_t = 100_000)]
    pub events: u64,
    #[arg(long, default_value_t = 2)]
    pub shards: i32,
    #[command(flatten)]
    pub producer: events::Options,
    /// Event source mapping batch size.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    #[arg(long, default_value = "output")]
    pub output: PathBuf,
    #[arg(long, default_value = "event-pipeline-demo")]
    pub bucket: String,
    #[arg(long, default_value = "event-pipeline-dedup")]
    pub table: String,
    #[arg(long, default_value = "events")]
    pub stream: String,
    /// Where the stream lives: `embedded` (an emulator in this process, the default) or `emulator`
    /// (the one at AWS_ENDPOINT_URL; moto's slows down as the stream grows).
    #[arg(long, value_enum, default_value_t = Placement::Embedded)]
    pub kinesis: Placement,
    /// Where the dedup table lives: `embedded` (the default) or `emulator` (moto's does ~200
    /// conditional writes a second, one per event).
    #[arg(long, value_enum, default_value_t = Placement::Embedded)]
    pub dynamodb: Placement,
    /// Only create the bucket, table and stream on the emulator (the LocalStack init hook uses this).
    #[arg(long)]
    pub provision_only: bool,
    /// Simulate an outage: the first N invocations of ingest on each shard fail, so the event
    /// source mapping (3 retries) gives batches up to its S3 on-failure destination once N > 3;
    /// `redrive given-up` then replays them.
    #[arg(long, default_value_t = 0)]
    pub outage: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Embedded,
    Emulator,
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

/// Where every service is, and the clients the demo itself uses.
pub struct Emulators {
    pub endpoint: String,
    pub sdk: aws_config::SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub dynamodb_endpoint: String,
    pub embedded_kinesis: Option<EmbeddedService>,
    pub embedded_dynamodb: Option<EmbeddedService>,
    /// True when the stream was created now (its old checkpoints no longer apply).
    pub new_stream: bool,
}

impl Emulators {
    /// Starts the embedded services asked for and provisions the bucket, table and stream.
    pub async fn start(args: &Args) -> anyhow::Result<Emulators> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .context("AWS_ENDPOINT_URL is not set: run `make demo`, which starts the emulator")?;
        let sdk = provision::local_sdk_config(&endpoint).await;
        let s3 = provision::s3_client(&sdk);
        let (embedded_dynamodb, dynamodb_endpoint) =
            place(args.dynamodb, args, &endpoint, EmbeddedService::dynamodb()).await?;
        let (embedded_kinesis, kinesis_endpoint) = place(
            args.kinesis,
            args,
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
        provision::ensure_bucket(&s3, &args.bucket).await?;
        provision::ensure_dedup_table(&dynamodb, &args.table).await?;
        let new_stream = provision::ensure_stream(&kinesis, &args.stream, args.shards).await?;
        println!(
            "provisioned s3://{} on {endpoint}, Kinesis stream {} on {kinesis_endpoint}, DynamoDB table {} on {dynamodb_endpoint}",
            args.bucket, args.stream, args.table,
        );
        Ok(Emulators {
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            endpoint,
            sdk,
            s3,
            kinesis,
            dynamodb_endpoint,
            embedded_kinesis,
            embedded_dynamodb,
            new_stream,
        })
    }

    /// The functions' environment, as Terraform sets it, pointed at the emulators.
    fn function_env(&self, args: &Args) -> Vec<(String, String)> {
        [
            ("DATA_LAKE_BUCKET", args.bucket.as_str()),
            // The SDK's standard per-service override; equal to AWS_ENDPOINT_URL without the
            // embedded one.
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb_endpoint.as_str()),
            ("DEDUP_TABLE", args.table.as_str()),
            ("METRICS_SINK", "cloudwatch"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_LAMBDA_LOG_LEVEL", "warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    async fn stop(self) -> anyhow::Result<()> {
        for service in [self.embedded_kinesis, self.embedded_dynamodb]
            .into_iter()
            .flatten()
        {
            service.stop().await?;
        }
        Ok(())
    }
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

/// Everything one demo run did, for the report and the ledger check.
pub struct DemoRun {
    pub shards: usize,
    pub produced: events::Produced,
    pub delivery: Delivery,
    pub ingest_elapsed: Duration,
    pub given_up_objects: usize,
    /// `redrive given-up`'s report, when anything was given up.
    pub redriven: Option<Value>,
    pub staging_objects: usize,
    pub quarantine_objects: usize,
    pub compactions: Vec<Value>,
    pub compact_elapsed: Duration,
    /// Quarantined records by reason code, read back from quarantine.
    pub quarantined: BTreeMap<String, u64>,
    pub lake_dir: PathBuf,
    /// `lake_summary.py`'s answer: rows, distinct ids, their digest, partitions.
    pub lake: Value,
    /// The functions' metrics read back from CloudWatch: (function, name) → sum.
    pub metrics: BTreeMap<(&'static str, &'static str), f64>,
}

impl DemoRun {
    pub fn metric(&self, function: &'static str, name: &'static str) -> u64 {
        self.metrics.get(&(function, name)).copied().unwrap_or(0.0) as u64
    }

    /// A count from the redrive's report (0 without a redrive).
    pub fn redriven(&self, field: &str) -> u64 {
        self.redriven
            .as_ref()
            .and_then(|r| r[field].as_u64())
            .unwrap_or(0)
    }

    /// Ingest's own counts plus what the redrive did with the batches the mapping gave up on.
    pub fn written(&self) -> u64 {
        self.metric("ingest", ingest_metrics::EVENTS_WRITTEN) + self.redriven("events_written")
    }

    pub fn dropped(&self) -> u64 {
        self.metric("ingest", ingest_metrics::DUPLICATES_DROPPED)
            + self.redriven("duplicates_dropped")
    }

    pub fn quarantined_total(&self) -> u64 {
        self.metric("ingest", ingest_metrics::RECORDS_QUARANTINED)
            + self.redriven("records_quarantined")
    }

    pub fn unaccounted(&self) -> i64 {
        self.produced.events as i64
            - (self.written() + self.dropped() + self.quarantined_total()) as i64
    }
}

/// The whole demo: provision, produce and ingest, redrive, compact, report, check.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let emulators = Emulators::start(&args).await?;
    if args.provision_only {
        return Ok(());
    }
    std::fs::create_dir_all(&args.output)?;
    let env = emulators.function_env(&args);
    let metrics_from = SystemTime::now() - Duration::from_secs(3600);
    let (produced, delivery, shards, ingest_elapsed) =
        ingest_stream(&args, &emulators, &env).await?;
    let s3 = &emulators.s3;
    let given_up_objects =
        read_back::list_keys(s3, &args.bucket, pipeline::given_up::GIVEN_UP_PREFIX)
            .await?
            .len();
    let redriven = match given_up_objects {
        0 => None,
        _ => Some(redrive_given_up(&env).await?),
    };
    let staging_keys = read_back::list_keys(s3, &args.bucket, "staging/").await?;
    let compact_started = Instant::now();
    let compactions = compact_days(&staging_keys, &env).await?;
    let compact_elapsed = compact_started.elapsed();

    let lake_dir = args.output.join("lake");
    read_back::download_processed(s3, &args.bucket, &lake_dir).await?;
    let run = DemoRun {
        shards,
        produced,
        delivery,
        ingest_elapsed,
        given_up_objects,
        redriven,
        staging_objects: staging_keys.len(),
        quarantine_objects: read_back::list_keys(s3, &args.bucket, "quarantine/")
            .await?
            .len(),
        compactions,
        compact_elapsed,
        quarantined: read_back::quarantine_reasons(s3, &args.bucket).await?,
        lake: read_back::lake_summary(&lake_dir)?,
        lake_dir,
        metrics: function_metrics(&emulators.cloudwatch, metrics_from).await?,
    };
    report::save(&args, &emulators, &run)?;
    emulators.stop().await?;
    ledger::check(&run)
}

/// The producer and one event source mapping per shard, side by side as in production, until the
/// stream is drained: what was produced, what was delivered, how many shards, how long it took.
async fn ingest_stream(
    args: &Args,
    emulators: &Emulators,
    env: &[(String, String)],
) -> anyhow::Result<(events::Produced, Delivery, usize, Duration)> {
    let kinesis = &emulators.kinesis;
    let checkpoints = args.output.join("esm-checkpoints.json");
    if emulators.new_stream {
        let _ = std::fs::remove_file(&checkpoints);
    }
    let ingest_bin = sibling_binary("ingest")?;
    let (mapping, shards) = mapping_for(args, emulators, checkpoints).await?;

    let started = Instant::now();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let bar = ProgressBar::new(args.events).with_style(ProgressStyle::with_template(
        "{spinner} producing {bar:40} {pos}/{len} events ({per_sec})",
    )?);
    let producer = {
        let (kinesis, stream, bar) = (kinesis.clone(), args.stream.clone(), bar.clone());
        let options = events::Options {
            events: args.events,
            ..args.producer.clone()
        };
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
            env.to_vec(),
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
        report::thousands(produced.events),
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
    let elapsed = started.elapsed();
    println!(
        "ingested {} Kinesis records in {} invocations in {:.1} s",
        report::thousands(delivery.records_delivered),
        delivery.invocations,
        elapsed.as_secs_f64()
    );
    Ok((produced, delivery, shards.len(), elapsed))
}

/// The local event source mapping for the stream, configured as Terraform configures Lambda's
/// (retries, bisection, the on-failure destination), and the stream's shards.
async fn mapping_for(
    args: &Args,
    emulators: &Emulators,
    checkpoints: PathBuf,
) -> anyhow::Result<(MappingConfig, Vec<String>)> {
    let kinesis = &emulators.kinesis;
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
                &emulators.sdk,
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

    Ok((mapping, shards))
}

/// What the mapping gave up on is in its on-failure destination: replays it, as an operator would,
/// with the `redrive` binary; its JSON report.
async fn redrive_given_up(env: &[(String, String)]) -> anyhow::Result<Value> {
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
    Ok(report)
}

/// Compacts every arrival day that was staged, with the `compact` binary; each day's response.
async fn compact_days(
    staging_keys: &[String],
    env: &[(String, String)],
) -> anyhow::Result<Vec<Value>> {
    let days: std::collections::BTreeSet<String> = staging_keys
        .iter()
        .filter_map(|key| MinuteKey::parse(key))
        .map(|key| key.arrival_day().to_string())
        .collect();
    let mut compact = LambdaProcess::spawn(&sibling_binary("compact")?, "compact", env).await?;
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
    Ok(compactions)
}

/// The functions' metrics, read back from the emulator's CloudWatch.
async fn function_metrics(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    from: SystemTime,
) -> anyhow::Result<BTreeMap<(&'static str, &'static str), f64>> {
    use compact_metrics as c;
    use ingest_metrics as i;
    let published: [(&'static str, &[&'static str]); 2] = [
        (
            "ingest",
            &[
                i::RECORDS_RECEIVED,
                i::EVENTS_WRITTEN,
                i::DUPLICATES_DROPPED,
                i::RECORDS_QUARANTINED,
                i::BATCH_ITEM_FAILURES,
                i::STAGING_BYTES_WRITTEN,
            ],
        ),
        (
            "compact",
            &[
                c::EVENTS_COMPACTED,
                c::DUPLICATES_REMOVED,
                c::PARQUET_FILES_WRITTEN,
                c::PARQUET_BYTES_WRITTEN,
            ],
        ),
    ];
    let mut metrics = BTreeMap::new();
    for (function, names) in published {
        for name in names {
            let sum = read_back::metric_sum(cloudwatch, function, name, from).await?;
            metrics.insert((function, *name), sum);
        }
    }
    Ok(metrics)
}
