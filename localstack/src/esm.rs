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
use pipeline::position::compare_sequence_numbers;
use serde_json::{json, Value};

use crate::runtime_api::{LambdaProcess, Outcome};

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
    let Some(lowest) = identifiers
        .into_iter()
        .min_by(|a, b| compare_sequence_numbers(a, b))
    else {
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
    let all: Value = serde_json::from_str(&text).ok()?;
    all.get(&config.stream_arn)?
        .get(shard_id)?
        .as_str()
        .map(str::to_string)
}

fn write_checkpoint(config: &MappingConfig, shard_id: &str, sequence: &str) -> anyhow::Result<()> {
    // Shards run concurrently; the file is small, so a lock around read-modify-write is enough.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Value = std::fs::read_to_string(&config.checkpoints)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}));
    all[&config.stream_arn][shard_id] = json!(sequence);
    if let Some(dir) = config.checkpoints.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = config.checkpoints.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?)?;
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
        buffer.extend(output.records().iter().map(|r| {
            StreamRecord {
                shard_id: shard_id.to_string(),
                sequence_number: r.sequence_number().to_string(),
                partition_key: r.partition_key().unwrap_or_default().to_string(),
                approximate_arrival_ms: r
                    .approximate_arrival_timestamp()
                    .map_or(0, |t| t.to_millis().unwrap_or(0)),
                data: r.data().as_ref().to_vec(),
            }
        }));
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
mod tests {
    use super::*;
    use pipeline::lambda_payload::{Envelope, KinesisBatch};
    use pipeline::memory::MemoryObjectStore;
    use std::collections::VecDeque;

    /// Answers from a script and remembers the first sequence number of each batch it was given.
    struct Scripted {
        answers: VecDeque<anyhow::Result<Outcome>>,
        batches: Vec<(String, usize)>,
    }

    #[async_trait]
    impl Function for Scripted {
        async fn invoke(&mut self, payload: &Value) -> anyhow::Result<Outcome> {
            let records = payload["Records"].as_array().unwrap();
            let first = records[0]["kinesis"]["sequenceNumber"]
                .as_str()
                .unwrap()
                .to_string();
            self.batches.push((first, records.len()));
            self.answers
                .pop_front()
                .unwrap_or_else(|| Ok(Outcome::Response(json!({"batchItemFailures": []}))))
        }
    }

    fn records(n: u64) -> Vec<StreamRecord> {
        (1..=n)
            .map(|s| pipeline::fixtures::record(0, s, 0, b"{}".to_vec()))
            .collect()
    }

    fn config(dir: &std::path::Path, max_retries: u32) -> MappingConfig {
        MappingConfig {
            stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/test".into(),
            batch_size: 100,
            batching_window: Duration::ZERO,
            max_retries,
            bisect_on_error: true,
            on_failure: OnFailure {
                objects: Arc::new(MemoryObjectStore::default()),
                mapping_uuid: "00000000-0000-4000-8000-000000000000".into(),
                function_arn: "arn:aws:lambda:us-east-1:000000000000:function:ingest".into(),
            },
            checkpoints: dir.join("checkpoints.json"),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("esm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn failures(from: &str) -> anyhow::Result<Outcome> {
        Ok(Outcome::Response(
            json!({"batchItemFailures": [{"itemIdentifier": from}, {"itemIdentifier": "9"}]}),
        ))
    }

    #[tokio::test]
    async fn reported_failures_are_retried_from_the_lowest_sequence_number() {
        let dir = temp_dir("partial");
        let mut function = Scripted {
            answers: VecDeque::from([failures("4")]),
            batches: vec![],
        };
        let mut delivery = Delivery::default();
        deliver(&mut function, records(10), &config(&dir, 3), &mut delivery)
            .await
            .unwrap();
        assert_eq!(
            function.batches,
            [("1".to_string(), 10), ("4".to_string(), 7)]
        );
        assert_eq!(
            delivery,
            Delivery {
                records_delivered: 10,
                invocations: 2,
                retries: 1,
                invocation_time: delivery.invocation_time,
                ..Delivery::default()
            }
        );
    }

    #[tokio::test]
    async fn errors_bisect_the_batch() {
        let dir = temp_dir("bisect");
        let error = || Ok(Outcome::FunctionError(json!({"errorMessage": "boom"})));
        let mut function = Scripted {
            answers: VecDeque::from([error(), error()]),
            batches: vec![],
        };
        let mut delivery = Delivery::default();
        deliver(&mut function, records(8), &config(&dir, 5), &mut delivery)
            .await
            .unwrap();
        // 1..8 fails, 1..4 fails, then 1..2, 3..4 and 5..8 succeed.
        let firsts: Vec<_> = function
            .batches
            .iter()
            .map(|(f, n)| (f.as_str(), *n))
            .collect();
        assert_eq!(firsts, [("1", 8), ("1", 4), ("1", 2), ("3", 2), ("5", 4)]);
        assert_eq!(delivery.records_delivered, 8);
        assert_eq!(delivery.bisections, 2);
    }

    #[tokio::test]
    async fn records_are_given_up_after_the_maximum_retries_with_an_on_failure_record() {
        let dir = temp_dir("give-up");
        let crash = || Err(anyhow::anyhow!("process exited"));
        let mut function = Scripted {
            answers: VecDeque::from([failures("3"), crash(), crash()]),
            batches: vec![],
        };
        let mut cfg = config(&dir, 2);
        cfg.bisect_on_error = false;
        let kept = MemoryObjectStore::default();
        cfg.on_failure.objects = Arc::new(kept.clone());
        let mut delivery = Delivery::default();
        deliver(&mut function, records(5), &cfg, &mut delivery)
            .await
            .unwrap();
        assert_eq!(
            (delivery.records_delivered, delivery.records_given_up),
            (2, 3)
        );
        // One object where Lambda's S3 destination puts it, with the whole last payload.
        let keys = kept.keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(
            given_up::parse_given_up_key(&keys[0]),
            Some((cfg.on_failure.mapping_uuid.as_str(), "shardId-000000000000"))
        );
        let record = GivenUpBatch::parse(&kept.object(&keys[0]).unwrap()).unwrap();
        let info = &record.kinesis_batch_info;
        assert_eq!(
            (
                info.start_sequence_number.as_str(),
                info.end_sequence_number.as_str(),
                info.batch_size
            ),
            ("3", "5", 3)
        );
        assert_eq!(record.request_context.condition, "RetryAttemptsExhausted");
        assert_eq!(record.request_context.approximate_invoke_count, 3);
        assert_eq!(
            record.response_context.function_error, "Unhandled",
            "it ended on a crash"
        );
        let payload = KinesisBatch::parse(record.payload.unwrap().as_bytes()).unwrap();
        let event_ids: Vec<String> = payload
            .records
            .iter()
            .map(|r| match r {
                Envelope::Record(r) => r.event_id.clone(),
                Envelope::Unreadable(u) => panic!("unreadable: {}", u.detail),
            })
            .collect();
        assert_eq!(
            event_ids,
            ["3", "4", "5"].map(|n| format!("shardId-000000000000:{n}"))
        );
    }

    /// Remembers every sequence number it is given; the first invocation takes `first_delay`.
    struct Collect {
        sequence_numbers: Vec<String>,
        first_delay: Duration,
    }

    #[async_trait]
    impl Function for Collect {
        async fn invoke(&mut self, payload: &Value) -> anyhow::Result<Outcome> {
            if self.sequence_numbers.is_empty() {
                tokio::time::sleep(self.first_delay).await;
            }
            for record in payload["Records"].as_array().unwrap() {
                let sequence = record["kinesis"]["sequenceNumber"].as_str().unwrap();
                self.sequence_numbers.push(sequence.to_string());
            }
            Ok(Outcome::Response(json!({"batchItemFailures": []})))
        }
    }

    /// A one-shard stream on an embedded Kinesis; the sequence numbers of `records` put on it.
    async fn stream_with(
        iterator_ttl: Duration,
        records: usize,
    ) -> (
        crate::embedded::EmbeddedService,
        aws_sdk_kinesis::Client,
        Vec<String>,
    ) {
        let kinesis = crate::embedded::EmbeddedService::kinesis(iterator_ttl)
            .await
            .unwrap();
        let sdk = crate::provision::local_sdk_config(kinesis.endpoint()).await;
        let client = aws_sdk_kinesis::Client::new(&sdk);
        crate::provision::ensure_stream(&client, "test", 1)
            .await
            .unwrap();
        let put = put_records(&client, records).await;
        (kinesis, client, put)
    }

    async fn put_records(client: &aws_sdk_kinesis::Client, records: usize) -> Vec<String> {
        let mut sequence_numbers = Vec::new();
        for chunk in (0..records).collect::<Vec<_>>().chunks(500) {
            let entries = chunk
                .iter()
                .map(|i| {
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                            "{{\"n\":{i}}}"
                        )))
                        .partition_key(i.to_string())
                        .build()
                        .unwrap()
                })
                .collect();
            let output = client
                .put_records()
                .stream_name("test")
                .set_records(Some(entries))
                .send()
                .await
                .unwrap();
            assert_eq!(output.failed_record_count(), Some(0));
            sequence_numbers.extend(
                output
                    .records()
                    .iter()
                    .map(|r| r.sequence_number().unwrap().to_string()),
            );
        }
        sequence_numbers
    }

    async fn drain(
        client: &aws_sdk_kinesis::Client,
        function: &mut Collect,
        cfg: &MappingConfig,
    ) -> Delivery {
        let (_done, producer_done) = tokio::sync::watch::channel(true);
        run_shard(
            client,
            "test",
            "shardId-000000000000",
            function,
            cfg,
            producer_done,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_shard_is_delivered_once_in_order_and_resumed_from_its_checkpoint() {
        let dir = temp_dir("run-shard");
        let cfg = config(&dir, 3);
        let (_kinesis, client, first) = stream_with(Duration::from_secs(300), 250).await;
        let mut function = Collect {
            sequence_numbers: vec![],
            first_delay: Duration::ZERO,
        };
        let delivery = drain(&client, &mut function, &cfg).await;
        assert_eq!(function.sequence_numbers, first);
        assert_eq!((delivery.records_delivered, delivery.invocations), (250, 3));

        // A second run starts after the checkpoint: only the new records.
        let second = put_records(&client, 30).await;
        function.sequence_numbers.clear();
        drain(&client, &mut function, &cfg).await;
        assert_eq!(function.sequence_numbers, second);
    }

    #[tokio::test]
    async fn an_expired_shard_iterator_is_replaced_without_losing_or_repeating_records() {
        let dir = temp_dir("expired-iterator");
        let cfg = config(&dir, 3);
        let (_kinesis, client, put) = stream_with(Duration::from_secs(1), 250).await;
        // The first batch outlives the iterator that GetRecords handed back with it.
        let mut function = Collect {
            sequence_numbers: vec![],
            first_delay: Duration::from_millis(2_100),
        };
        let delivery = drain(&client, &mut function, &cfg).await;
        assert_eq!(function.sequence_numbers, put);
        assert_eq!(delivery.rereads, 1);
    }

    /// On a client's first GetRecords, once the (empty) response is back but before the mapping
    /// sees it: puts `records` on the stream with another client and says the producer is done.
    /// This is the race of a read issued before the producer finished and answered after.
    #[derive(Debug)]
    struct ProducerFinishesDuringARead {
        producer: aws_sdk_kinesis::Client,
        records: usize,
        done: tokio::sync::watch::Sender<bool>,
        get_records_in_flight: std::sync::atomic::AtomicBool,
        /// What it put, once it has.
        put: std::sync::Arc<std::sync::Mutex<Option<Vec<String>>>>,
    }

    impl aws_sdk_kinesis::config::Intercept for ProducerFinishesDuringARead {
        fn name(&self) -> &'static str {
            "ProducerFinishesDuringARead"
        }

        fn read_before_transmit(
            &self,
            context: &aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextRef<
                '_,
            >,
            _: &aws_sdk_kinesis::config::RuntimeComponents,
            _: &mut aws_sdk_kinesis::config::ConfigBag,
        ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
            let target = context.request().headers().get("x-amz-target");
            self.get_records_in_flight.store(
                target.is_some_and(|t| t.ends_with(".GetRecords")),
                std::sync::atomic::Ordering::SeqCst,
            );
            Ok(())
        }

        fn read_before_deserialization(
            &self,
            _: &aws_sdk_kinesis::config::interceptors::BeforeDeserializationInterceptorContextRef<
                '_,
            >,
            _: &aws_sdk_kinesis::config::RuntimeComponents,
            _: &mut aws_sdk_kinesis::config::ConfigBag,
        ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
            let mut put = self.put.lock().unwrap();
            if put.is_none()
                && self
                    .get_records_in_flight
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                let producer = self.producer.clone();
                let records = self.records;
                let sequence_numbers = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(put_records(&producer, records))
                });
                *put = Some(sequence_numbers);
                self.done.send_replace(true);
            }
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_put_while_a_read_is_answered_empty_are_delivered_before_the_shard_ends() {
        let dir = temp_dir("drain-race");
        let cfg = config(&dir, 3);
        let (_kinesis, producer, _) = stream_with(Duration::from_secs(300), 0).await;
        let (done, producer_done) = tokio::sync::watch::channel(false);
        let put = std::sync::Arc::new(std::sync::Mutex::new(None));
        let race = ProducerFinishesDuringARead {
            producer: producer.clone(),
            records: 7,
            done,
            get_records_in_flight: Default::default(),
            put: put.clone(),
        };
        let reader = aws_sdk_kinesis::Client::from_conf(
            producer.config().to_builder().interceptor(race).build(),
        );
        let mut function = Collect {
            sequence_numbers: vec![],
            first_delay: Duration::ZERO,
        };
        let delivery = run_shard(
            &reader,
            "test",
            "shardId-000000000000",
            &mut function,
            &cfg,
            producer_done,
        )
        .await
        .unwrap();
        let put = put.lock().unwrap().clone().expect("the race was run");
        assert_eq!(put.len(), 7);
        assert_eq!(function.sequence_numbers, put);
        assert_eq!(delivery.records_delivered, 7);
    }

    /// Remembers the size of every batch it is given.
    #[derive(Default)]
    struct BatchSizes(Vec<usize>);

    #[async_trait]
    impl Function for BatchSizes {
        async fn invoke(&mut self, payload: &Value) -> anyhow::Result<Outcome> {
            self.0.push(payload["Records"].as_array().unwrap().len());
            Ok(Outcome::Response(json!({"batchItemFailures": []})))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_are_gathered_for_the_batching_window_before_an_invocation() {
        let dir = temp_dir("batching-window");
        let mut cfg = config(&dir, 3);
        cfg.batching_window = Duration::from_secs(1);
        let (_kinesis, client, _) = stream_with(Duration::from_secs(300), 0).await;
        let (done, producer_done) = tokio::sync::watch::channel(false);
        // A slow producer: two puts well inside one window, a third well after it ends.
        let producer = client.clone();
        let puts = tokio::spawn(async move {
            put_records(&producer, 3).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            put_records(&producer, 3).await;
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            put_records(&producer, 2).await;
            done.send_replace(true);
        });
        let mut function = BatchSizes::default();
        let delivery = run_shard(
            &client,
            "test",
            "shardId-000000000000",
            &mut function,
            &cfg,
            producer_done,
        )
        .await
        .unwrap();
        puts.await.unwrap();
        // Caught up with the stream is no reason to invoke: the window is.
        assert_eq!(function.0, [6, 2]);
        assert_eq!(delivery.records_delivered, 8);
    }

    #[test]
    fn checkpoints_are_kept_per_stream_and_shard() {
        let dir = temp_dir("checkpoints");
        let cfg = config(&dir, 0);
        assert_eq!(read_checkpoint(&cfg, "shardId-1"), None);
        write_checkpoint(&cfg, "shardId-1", "17").unwrap();
        write_checkpoint(&cfg, "shardId-2", "4").unwrap();
        write_checkpoint(&cfg, "shardId-1", "19").unwrap();
        assert_eq!(read_checkpoint(&cfg, "shardId-1").as_deref(), Some("19"));
        assert_eq!(read_checkpoint(&cfg, "shardId-2").as_deref(), Some("4"));
    }
}
