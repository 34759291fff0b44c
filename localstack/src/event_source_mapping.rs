//! A local Kinesis event source mapping: what Lambda does between a stream and a function, for the
//! emulator, which has none. Per shard it reads from the trim horizon (or its checkpoint), gathers
//! batches (batch size, batching window), and hands them to the function through the Runtime API:
//!
//! - `ReportBatchItemFailures`: a response naming sequence numbers means "retry from the lowest";
//! - a function error (or crash, or time-out) retries the batch, split in half when bisecting;
//! - after `max_retries` the records are given up and kept whole, as Lambda keeps them in an S3
//!   on-failure destination ([`pipeline::given_up`]), for `redrive`;
//! - it checkpoints after every settled batch and stops when the stream is drained.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_kinesis::types::ShardIteratorType;
use pipeline::given_up::{self, GivenUpBatch, KinesisBatchInfo, RequestContext, ResponseContext};
use pipeline::lambda_payload::{kinesis_event, StreamRecord};
use pipeline::ports::ObjectStore;
use pipeline::position::{lowest_sequence_number, Checkpoints};
use serde_json::Value;

use crate::lambda_runtime_api::{LambdaProcess, Outcome};

/// Something that can be invoked with a Lambda payload.
#[async_trait]
pub trait Function: Send {
    async fn invoke(&mut self, payload: &Value) -> anyhow::Result<Outcome>;
}

/// A function process behind the Runtime API, with the mapping's invocation time-out.
pub struct TimedProcess {
    pub process: LambdaProcess,
    pub timeout: Duration,
}

#[async_trait]
impl Function for TimedProcess {
    async fn invoke(&mut self, payload: &Value) -> anyhow::Result<Outcome> {
        self.process.invoke(payload, self.timeout).await
    }
}

/// Lambda's S3 on-failure destination: the bucket given-up batches are written to.
#[derive(Clone)]
pub struct OnFailure {
    pub objects: Arc<dyn ObjectStore>,
    /// The mapping's UUID, the second folder of every key.
    pub mapping_uuid: String,
    pub function_arn: String,
}

#[derive(Clone)]
pub struct MappingConfig {
    pub stream_arn: String,
    /// At most this many records per invocation (Lambda: 1–10,000).
    pub batch_size: usize,
    /// How long to gather records before invoking with a partial batch.
    pub batching_window: Duration,
    pub max_retries: u32,
    pub bisect_on_error: bool,
    /// Where given-up batches are kept (Lambda's S3 on-failure destination).
    pub on_failure: OnFailure,
    /// Where the last settled sequence number of each shard is kept.
    pub checkpoints: PathBuf,
}

/// What happened on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub records_delivered: u64,
    pub invocations: u64,
    pub retries: u64,
    pub bisections: u64,
    pub records_given_up: u64,
    /// Reads started again from the last record read, after an expired iterator or a failed read.
    pub rereads: u64,
    /// Time spent inside the function's invocations.
    pub invocation_time: Duration,
}

/// Hands `batch` to `function` until every record is settled or given up.
pub async fn deliver(
    function: &mut dyn Function,
    batch: Vec<StreamRecord>,
    config: &MappingConfig,
    delivery: &mut Delivery,
) -> anyhow::Result<()> {
    // A stack of (records, retries so far): bisected halves are settled first half first.
    let mut work = vec![(batch, 0u32)];
    while let Some((mut pending, mut retries)) = work.pop() {
        while !pending.is_empty() {
            delivery.invocations += 1;
            let started = Instant::now();
            let outcome = function
                .invoke(&kinesis_event(&pending, &config.stream_arn))
                .await;
            delivery.invocation_time += started.elapsed();
            // What went wrong, and whether it was an error (rather than reported failures).
            let (failure, is_error) = match outcome {
                Ok(Outcome::Response(response)) => match lowest_reported(&response, &pending) {
                    Reported::None => {
                        delivery.records_delivered += pending.len() as u64;
                        pending.clear();
                        continue;
                    }
                    Reported::From(index) => {
                        // Everything before the reported record is checkpointed.
                        delivery.records_delivered += index as u64;
                        pending.drain(..index);
                        let from = &pending[0].sequence_number;
                        (format!("batchItemFailures from {from}"), false)
                    }
                    Reported::Unknown(detail) => (detail, true),
                },
                Ok(Outcome::FunctionError(error)) => (format!("function error: {error}"), true),
                Err(error) => (format!("invocation failed: {error:#}"), true),
            };
            retries += 1;
            if retries > config.max_retries {
                give_up(&pending, &failure, is_error, retries, config).await?;
                delivery.records_given_up += pending.len() as u64;
                pending.clear();
                continue;
            }
            delivery.retries += 1;
            tracing::warn!(shard = pending[0].shard_id, retries, %failure, "retrying batch");
            if is_error && config.bisect_on_error && pending.len() > 1 {
                delivery.bisections += 1;
                let second = pending.split_off(pending.len() / 2);
                work.push((second, retries));
                work.push((std::mem::take(&mut pending), retries));
            }
        }
    }
    Ok(())
}

enum Reported {
    None,
    /// Retry from this index of the batch.
    From(usize),
    /// A response Lambda cannot act on: the whole batch is retried.
    Unknown(String),
}

fn lowest_reported(response: &Value, batch: &[StreamRecord]) -> Reported {
    let Some(failures) = response.get("batchItemFailures").and_then(Value::as_array) else {
        return Reported::None;
    };
    let identifiers: Option<Vec<&str>> = failures
        .iter()
        .map(|f| f.get("itemIdentifier").and_then(Value::as_str))
        .collect();
    let Some(identifiers) = identifiers else {
        return Reported::Unknown(format!("malformed batchItemFailures: {response}"));
    };
    let Some(lowest) = lowest_sequence_number(identifiers) else {
        return Reported::None;
    };
    match batch.iter().position(|r| r.sequence_number == lowest) {
        Some(index) => Reported::From(index),
        None => Reported::Unknown(format!(
            "batchItemFailures names {lowest}, not in the batch"
        )),
    }
}

/// Writes the on-failure object for records the mapping stops retrying: the invocation record
/// with the whole payload, where Lambda would write it. Unlike Lambda, which logs a failed delivery
/// and moves on, the local mapping stops: a batch it could not keep must not pass unnoticed.
async fn give_up(
    records: &[StreamRecord],
    reason: &str,
    is_error: bool,
    invocations: u32,
    config: &MappingConfig,
) -> anyhow::Result<()> {
    let (first, last) = (&records[0], &records[records.len() - 1]);
    let payload = kinesis_event(records, &config.stream_arn).to_string();
    let now = pipeline::time::now_micros();
    let unique = uuid_like(&format!("{payload}{now}"));
    let batch = GivenUpBatch {
        request_context: RequestContext {
            request_id: uuid_like(&unique),
            function_arn: config.on_failure.function_arn.clone(),
            condition: given_up::RETRY_ATTEMPTS_EXHAUSTED.into(),
            approximate_invoke_count: invocations,
        },
        response_context: ResponseContext {
            status_code: 200,
            executed_version: "$LATEST".into(),
            function_error: if is_error {
                "Unhandled".into()
            } else {
                String::new()
            },
        },
        version: "1.0".into(),
        timestamp: given_up::iso_millis(now),
        kinesis_batch_info: KinesisBatchInfo {
            shard_id: first.shard_id.clone(),
            start_sequence_number: first.sequence_number.clone(),
            end_sequence_number: last.sequence_number.clone(),
            approximate_arrival_of_first_record: given_up::iso_millis(
                first.approximate_arrival_ms * 1000,
            ),
            approximate_arrival_of_last_record: given_up::iso_millis(
                last.approximate_arrival_ms * 1000,
            ),
            batch_size: records.len() as u64,
            stream_arn: config.stream_arn.clone(),
        },
        payload: Some(payload),
    };
    let key = given_up::given_up_key(
        &config.on_failure.mapping_uuid,
        &first.shard_id,
        now,
        &unique,
    );
    tracing::error!(
        %key,
        reason,
        shard = first.shard_id,
        first = first.sequence_number,
        last = last.sequence_number,
        records = records.len(),
        "giving up on records; kept for redrive"
    );
    config
        .on_failure
        .objects
        .put(&key, bytes::Bytes::from(batch.to_json()))
        .await
        .with_context(|| format!("keeping given-up records at {key}"))?;
    Ok(())
}

/// A UUID for the mapping of `stream_arn` to `function`, stable across runs (Lambda assigns one at
/// creation; the on-failure keys start with it).
pub fn mapping_uuid(stream_arn: &str, function: &str) -> String {
    uuid_like(&format!("{stream_arn} -> {function}"))
}

/// A UUID-shaped name from a digest of `seed` (Lambda uses a random UUID; unique is what counts).
fn uuid_like(seed: &str) -> String {
    let h = pipeline::layout::content_digest(seed.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn read_checkpoint(config: &MappingConfig, shard_id: &str) -> Option<String> {
    let text = std::fs::read_to_string(&config.checkpoints).ok()?;
    Checkpoints::parse(&text)
        .get(&config.stream_arn, shard_id)
        .map(str::to_string)
}

fn write_checkpoint(config: &MappingConfig, shard_id: &str, sequence: &str) -> anyhow::Result<()> {
    // Shards run concurrently; the file is small, so a lock around read-modify-write is enough.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut all =
        Checkpoints::parse(&std::fs::read_to_string(&config.checkpoints).unwrap_or_default());
    all.set(&config.stream_arn, shard_id, sequence);
    if let Some(dir) = config.checkpoints.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = config.checkpoints.with_extension("tmp");
    std::fs::write(&tmp, all.to_json())?;
    std::fs::rename(&tmp, &config.checkpoints)?;
    Ok(())
}

/// How often a failing `GetRecords` is tried again (after the SDK's own retries) before the
/// mapping stops; Lambda keeps trying, but a local run should end with the error.
const GET_RECORDS_ATTEMPTS: u32 = 8;

/// A shard iterator just after `after` (the last record read), or at the trim horizon.
async fn shard_iterator(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    after: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let request = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard_id);
    let request = match after {
        Some(sequence) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(sequence),
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let output = request.send().await.map_err(|e| {
        anyhow::anyhow!(
            "GetShardIterator on {shard_id}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(e)
        )
    })?;
    Ok(output.shard_iterator)
}

/// Polls one shard from its checkpoint (or the trim horizon) and delivers its records until the
/// shard is drained and `producer_done` says nothing more is coming.
/// A record `GetRecords` read, as the mapping hands it to the function.
fn stream_record(shard_id: &str, record: &aws_sdk_kinesis::types::Record) -> StreamRecord {
    StreamRecord {
        shard_id: shard_id.to_string(),
        sequence_number: record.sequence_number().to_string(),
        partition_key: record.partition_key().unwrap_or_default().to_string(),
        approximate_arrival_ms: record
            .approximate_arrival_timestamp()
            .map_or(0, |t| t.to_millis().unwrap_or(0)),
        data: record.data().as_ref().to_vec(),
    }
}

pub async fn run_shard(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    function: &mut dyn Function,
    config: &MappingConfig,
    producer_done: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Delivery> {
    // The last sequence number read from the shard: where a fresh iterator starts after an old
    // one expires (five minutes) or a read fails.
    let mut last_read = read_checkpoint(config, shard_id);
    let mut iterator = shard_iterator(kinesis, stream, shard_id, last_read.as_deref()).await?;
    let mut delivery = Delivery::default();
    let mut buffer: Vec<StreamRecord> = Vec::new();
    let mut gathering_since = Instant::now();
    let mut failed_reads = 0;
    while let Some(current) = iterator.take() {
        // Only a read that began after the producer finished can prove the shard drained.
        let producer_was_done = *producer_done.borrow();
        let output = match kinesis
            .get_records()
            .shard_iterator(current)
            .limit(config.batch_size.clamp(1, 10_000) as i32)
            .send()
            .await
        {
            Ok(output) => {
                failed_reads = 0;
                output
            }
            Err(error) => {
                failed_reads += 1;
                let expired = error
                    .as_service_error()
                    .is_some_and(|e| e.is_expired_iterator_exception());
                if !expired && failed_reads >= GET_RECORDS_ATTEMPTS {
                    anyhow::bail!(
                        "GetRecords on {shard_id} failed {failed_reads} times: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(error)
                    );
                }
                delivery.rereads += 1;
                tracing::warn!(
                    shard_id,
                    error = %aws_sdk_kinesis::error::DisplayErrorContext(&error),
                    "GetRecords failed; reading again from the last record read"
                );
                if !expired {
                    tokio::time::sleep(Duration::from_millis(100 << failed_reads.min(6))).await;
                }
                iterator = shard_iterator(kinesis, stream, shard_id, last_read.as_deref()).await?;
                continue;
            }
        };
        iterator = output.next_shard_iterator().map(str::to_string);
        let caught_up =
            output.records().is_empty() && output.millis_behind_latest().unwrap_or(0) == 0;
        if buffer.is_empty() {
            gathering_since = Instant::now();
        }
        if let Some(last) = output.records().last() {
            last_read = Some(last.sequence_number().to_string());
        }
        buffer.extend(output.records().iter().map(|r| stream_record(shard_id, r)));
        // As Lambda does: invoke when the batch is full or the batching window is over (being
        // caught up with the shard is no reason), and at the end of the shard or of the run.
        let window_over = gathering_since.elapsed() >= config.batching_window;
        let drained = caught_up && producer_was_done;
        while buffer.len() >= config.batch_size
            || (!buffer.is_empty() && (window_over || drained || iterator.is_none()))
        {
            let take = buffer.len().min(config.batch_size);
            let batch: Vec<StreamRecord> = buffer.drain(..take).collect();
            let last = batch[batch.len() - 1].sequence_number.clone();
            deliver(function, batch, config, &mut delivery).await?;
            write_checkpoint(config, shard_id, &last)?;
            gathering_since = Instant::now();
        }
        if caught_up {
            if drained {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // After an empty read, poll from the last record read rather than with the iterator
            // handed back: ferrokinesis positions that one by the clock, which skips records a
            // concurrent PutRecords numbered earlier but had not stored yet.
            iterator = shard_iterator(kinesis, stream, shard_id, last_read.as_deref()).await?;
        }
    }
    Ok(delivery)
}

#[cfg(test)]
mod tests;
