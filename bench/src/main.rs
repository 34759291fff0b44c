//! `bench`: the measurements behind `make bench` (bench/run.sh drives them and the comparisons).

mod fs_store;
mod latency_store;
mod read_floor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipeline::catalogue::Catalogue;
use pipeline::lambda_payload::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};
use pipeline::layout::{Minute, Prefixes};
use pipeline::memory::{MemoryDedupStore, MemoryMetrics, MemoryObjectStore};
use pipeline::time::Date;
use serde_json::json;

use crate::fs_store::FsObjectStore;
use crate::latency_store::LatencyStore;

// glibc malloc was a third of the CPU profile: every record allocates a handful of small strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `compact-local` and `ingest-cpu` run with the allocator options the compact and the ingest
// binary set before anything allocates (`pipeline::allocator`). glibc calls `.init_array` functions with `argc` and `argv`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array.00100"]
static ALLOCATOR_OPTIONS: extern "C" fn(std::ffi::c_int, *const *const std::ffi::c_char) =
    options_of_the_binary_measured;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn options_of_the_binary_measured(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
) {
    // SAFETY: glibc passes the process's own argc and argv, valid for the whole process.
    let command = (argc > 1).then(|| unsafe { std::ffi::CStr::from_ptr(*argv.add(1)) });
    match command.map(std::ffi::CStr::to_bytes) {
        Some(b"compact-local") => pipeline::allocator::for_compaction(),
        Some(b"ingest-cpu") => pipeline::allocator::for_ingest(),
        _ => {}
    }
}

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The ingest CPU path on one core: parse the Lambda JSON, unpack, validate, transform, claim
    /// (in memory) and serialise staging NDJSON, for a realistic 10,000-record payload.
    IngestCpu {
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        #[arg(long, default_value_t = 50)]
        iterations: u32,
        /// Also write the payload, for the Python handler to chew on.
        #[arg(long)]
        payload_out: Option<PathBuf>,
        /// Read the payload from this file (one `--payload-out` wrote) instead of generating one,
        /// so that interleaved runs all chew on the same bytes.
        #[arg(long, conflicts_with = "payload_out")]
        payload_in: Option<PathBuf>,
    },
    /// A SIMD JSON crate reading the payload (envelopes, base64 data, events' fields) and doing
    /// nothing else: the floor of a handler built on it.
    ReadFloor {
        #[arg(long, value_enum)]
        reader: read_floor::Reader,
        #[arg(long)]
        payload_in: PathBuf,
        #[arg(long, default_value_t = 20)]
        iterations: u32,
    },
    /// Writes one arrival day of staging NDJSON under `root`, as ingest would.
    GenStaging {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value = "2024-04-11")]
        day: String,
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Staging objects per shard and minute (ingest writes one per invocation: about 12 a
        /// minute at the default 5 s batching window).
        #[arg(long, default_value_t = 1)]
        objects_per_minute: u64,
    },
    /// Compacts one arrival day of the staging under `root` into `root/processed`.
    CompactLocal {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "2024-04-11")]
        day: String,
        /// Simulated latency of every store request (GET, PUT, list page, upload part), in ms.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
    /// Time from process start to the binary's first Runtime API poll, median of `runs`.
    ColdStart {
        #[arg(long)]
        binary: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::IngestCpu {
            records,
            iterations,
            payload_out,
            payload_in,
        } => ingest_cpu(records, iterations, payload_out, payload_in),
        Command::ReadFloor {
            reader,
            payload_in,
            iterations,
        } => read_floor::read_floor(reader, payload_in, iterations),
        Command::GenStaging {
            root,
            events,
            day,
            shards,
            objects_per_minute,
        } => gen_staging(root, events, &day, shards, objects_per_minute),
        Command::CompactLocal {
            root,
            day,
            latency_ms,
        } => compact_local(root, &day, Duration::from_millis(latency_ms)),
        Command::ColdStart { binary, runs } => cold_start(binary, runs),
    }
}

fn realistic_payload(records: usize) -> Vec<u8> {
    let mut generator = events::Generator::new(Catalogue::embedded(), 7, 0.02, 0.005);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let stream: Vec<StreamRecord> = (0..records)
        .map(|i| {
            let (_, data, key) = generator.next_record();
            StreamRecord {
                shard_id: "shardId-000000000000".into(),
                sequence_number: format!(
                    "4959033827149025660855969253836157109592157598913{:07}",
                    i
                ),
                partition_key: key,
                approximate_arrival_ms: now_ms + (i as i64) * 6,
                data,
            }
        })
        .collect();
    serde_json::to_vec(&kinesis_event(&stream, DEFAULT_STREAM_ARN)).expect("JSON")
}

fn ingest_cpu(
    records: usize,
    iterations: u32,
    payload_out: Option<PathBuf>,
    payload_in: Option<PathBuf>,
) -> anyhow::Result<()> {
    // A payload read from a file is counted; one generated has `records` (not parsed an extra
    // time: `bench/instructions.sh` counts every parse).
    let (payload, records) = match payload_in {
        Some(path) => {
            let payload = std::fs::read(&path)
                .with_context(|| format!("reading the payload {}", path.display()))?;
            let records = pipeline::lambda_payload::KinesisBatch::parse(&payload)?
                .records
                .len();
            (payload, records)
        }
        None => (realistic_payload(records), records),
    };
    if let Some(path) = payload_out {
        std::fs::write(path, &payload)?;
    }
    let ingest = ingest::Ingest {
        catalogue: Catalogue::embedded(),
        prefixes: Prefixes::default(),
        dedup_ttl_seconds: 604_800,
        dedup: Arc::new(MemoryDedupStore::default()),
        objects: Arc::new(MemoryObjectStore::default()),
        metrics: Arc::new(MemoryMetrics::default()),
        clock: ingest::system_clock,
    };
    // One core: a current-thread runtime, as a 1,769 MB-or-smaller Lambda has.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The whole run's time, and the part of it spent reading the payload (`KinesisBatch::parse`).
    let run = |n: u32| -> anyhow::Result<(Duration, Duration, ingest::Summary)> {
        let started = Instant::now();
        let mut reading = Duration::ZERO;
        let mut summary = ingest::Summary::default();
        for _ in 0..n {
            let parse_started = Instant::now();
            let event = pipeline::lambda_payload::KinesisBatch::parse(&payload)?;
            reading += parse_started.elapsed();
            summary = runtime
                .block_on(ingest.process(&event, ingest::Deadline::none()))
                .1;
        }
        Ok((started.elapsed(), reading, summary))
    };
    run(3)?;
    let (elapsed, reading, summary) = run(iterations)?;
    let seconds = elapsed.as_secs_f64() / f64::from(iterations);
    let reading_seconds = reading.as_secs_f64() / f64::from(iterations);
    println!(
        "{}",
        json!({
            "records": records,
            "payload_bytes": payload.len(),
            "iterations": iterations,
            "seconds_per_batch": seconds,
            "reading_seconds_per_batch": reading_seconds,
            "records_per_second": records as f64 / seconds,
            "rest_records_per_second": records as f64 / (seconds - reading_seconds),
            "megabytes_per_second": payload.len() as f64 / seconds / 1e6,
            "written": summary.events_written,
            "duplicates": summary.duplicates_dropped,
            "quarantined": summary.records_quarantined,
        })
    );
    Ok(())
}

fn gen_staging(
    root: PathBuf,
    events: u64,
    day: &str,
    shards: u32,
    objects_per_minute: u64,
) -> anyhow::Result<()> {
    let day = Date::parse(day).context("--day is YYYY-MM-DD")?;
    let store = FsObjectStore::new(&root);
    let prefixes = Prefixes::default();
    let mut generator = events::Generator::new(Catalogue::embedded(), 11, 0.0, 0.0);
    let minutes = 24 * 60u64;
    let objects_per_minute = objects_per_minute.max(1);
    let per_object = events
        .div_ceil(minutes * u64::from(shards) * objects_per_minute)
        .max(1);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let (mut written, mut bytes, mut objects) = (0u64, 0u64, 0u64);
    let mut sequence = 1_000_000u64;
    'outer: for minute in 0..minutes {
        for shard in 0..shards {
            for object in 0..objects_per_minute {
                // One invocation's object every 60/N seconds of the minute.
                let arrival_ms = day.start_micros() / 1000
                    + (minute * 60_000 + object * 60_000 / objects_per_minute) as i64
                    + i64::from(shard) * 7;
                let mut batch = Vec::with_capacity(per_object as usize);
                for _ in 0..per_object {
                    if written == events {
                        break;
                    }
                    let mut event = generator.valid_event();
                    // Created up to a few seconds before arrival (some just before midnight).
                    event["created_at"] = json!((arrival_ms - 2_500) as f64 / 1000.0);
                    sequence += 1;
                    batch.push((sequence, serde_json::to_vec(&event)?));
                    written += 1;
                }
                if batch.is_empty() {
                    break 'outer;
                }
                let shard_id = format!("shardId-{shard:012}");
                let body = pipeline::fixtures::staging_lines(&shard_id, &batch, arrival_ms);
                let key = prefixes.staging_key(
                    Minute::of_micros(arrival_ms * 1000),
                    &shard_id,
                    &batch[0].0.to_string(),
                );
                bytes += body.len() as u64;
                objects += 1;
                runtime.block_on(pipeline::ports::ObjectStore::put(&store, &key, body.into()))?;
            }
        }
    }
    println!(
        "{}",
        json!({"events": written, "objects": objects, "bytes": bytes})
    );
    Ok(())
}

fn compact_local(root: PathBuf, day: &str, latency: Duration) -> anyhow::Result<()> {
    let day = Date::parse(day).context("--day is YYYY-MM-DD")?;
    // As the Lambda binary runs it (`#[tokio::main]`): one worker per core the process may use
    // (`taskset` limits them), decoding on a blocking thread of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = LatencyStore::new(FsObjectStore::new(&root), latency);
    let compact = compact::Compact::new(
        Prefixes::default(),
        Arc::new(store),
        Arc::new(MemoryMetrics::default()),
    );
    let started = Instant::now();
    let report = runtime.block_on(compact.run(day))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "seconds": seconds,
            "latency_ms": latency.as_millis() as u64,
            "input_objects": report.input_objects,
            "input_events": report.input_events,
            "rows_written": report.rows_written,
            "files": report.files.len(),
            "parquet_bytes": report.parquet_bytes,
            "events_per_second": report.input_events as f64 / seconds,
            "widest_fetch_window": report.widest_fetch_window,
        })
    );
    Ok(())
}

fn cold_start(binary: PathBuf, runs: u32) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let started = Instant::now();
        let mut child = std::process::Command::new(&binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("DATA_LAKE_BUCKET", "bench-bucket")
            .env("DEDUP_TABLE", "bench")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let (mut stream, _) = listener.accept()?;
        let mut first = [0u8; 64];
        let n = stream.read(&mut first)?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            first[..n].starts_with(b"GET /2018-06-01/runtime/invocation/next"),
            "unexpected first request: {}",
            String::from_utf8_lossy(&first[..n])
        );
        samples.push(elapsed.as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"binary": binary.display().to_string(), "runs": runs, "median_ms": samples[samples.len() / 2], "min_ms": samples[0], "max_ms": samples[samples.len() - 1]})
    );
    Ok(())
}
