//! The mapping with a scripted function (retries, bisection, give-up) and, on the embedded
//! Kinesis, whole shards (order, checkpoints, expired iterators, the batching window).
use super::*;
use pipeline::lambda_payload::{Envelope, KinesisBatch};
use pipeline::memory::MemoryObjectStore;
use serde_json::json;
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
    let payload_text = record.payload.unwrap();
    let payload = KinesisBatch::parse(payload_text.as_bytes()).unwrap();
    let event_ids: Vec<String> = payload
        .records
        .iter()
        .map(|r| match r {
            Envelope::Record(r) => r.event_id.to_string(),
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
    crate::embedded_emulators::EmbeddedService,
    aws_sdk_kinesis::Client,
    Vec<String>,
) {
    let kinesis = crate::embedded_emulators::EmbeddedService::kinesis(iterator_ttl)
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
        context: &aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
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
        _: &aws_sdk_kinesis::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
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
