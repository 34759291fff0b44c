//! The handler against the in-memory twins. The same promises against a real emulator and through
//! the built binary are in the workspace's `tests/` crate.

use pipeline::metric_names::ingest as ingest_metrics;
use std::sync::Arc;

use async_trait::async_trait;
use pipeline::lambda_payload::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};
use pipeline::memory::{FaultyObjectStore, MemoryDedupStore, MemoryMetrics, MemoryObjectStore};
use pipeline::ports::Claim;

use super::*;

use pipeline::fixtures::{event_json, record, uuid, ARRIVAL_MS};

/// A parsed batch of `records`; its payload text is leaked (it lives as long as the test process).
fn leaked(payload: &serde_json::Value) -> KinesisBatch<'static> {
    let text: &'static str = Box::leak(payload.to_string().into_boxed_str());
    KinesisBatch::parse(text.as_bytes()).unwrap()
}

fn batch(records: &[StreamRecord]) -> KinesisBatch<'static> {
    leaked(&kinesis_event(records, DEFAULT_STREAM_ARN))
}

struct Harness {
    ingest: Ingest,
    objects: MemoryObjectStore,
    dedup: Arc<MemoryDedupStore>,
    metrics: Arc<MemoryMetrics>,
}

fn harness() -> Harness {
    harness_with(|objects| Arc::new(objects), |dedup| dedup)
}

fn harness_with(
    wrap_objects: impl FnOnce(MemoryObjectStore) -> Arc<dyn ObjectStore>,
    wrap_dedup: impl FnOnce(Arc<MemoryDedupStore>) -> Arc<dyn DedupStore>,
) -> Harness {
    let objects = MemoryObjectStore::default();
    let dedup = Arc::new(MemoryDedupStore::default());
    let metrics = Arc::new(MemoryMetrics::default());
    let ingest = Ingest {
        catalogue: Catalogue::embedded(),
        prefixes: Prefixes::default(),
        dedup_ttl_seconds: 3600,
        dedup: wrap_dedup(dedup.clone()),
        objects: wrap_objects(objects.clone()),
        metrics: metrics.clone(),
        clock: || 1_712_844_606,
    };
    Harness {
        ingest,
        objects,
        dedup,
        metrics,
    }
}

fn lines(objects: &MemoryObjectStore, key: &str) -> Vec<serde_json::Value> {
    let body = objects
        .object(key)
        .unwrap_or_else(|| panic!("no object {key}; have {:?}", objects.keys()));
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn failed_sequences(response: &KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn one_object_per_minute_and_shard_with_lines_in_sequence_order() {
    let h = harness();
    let next_minute = ARRIVAL_MS + 60_000;
    let records = vec![
        record(0, 12, ARRIVAL_MS, event_json(2)),
        record(0, 11, ARRIVAL_MS, event_json(1)),
        record(1, 500, ARRIVAL_MS, event_json(3)),
        record(0, 13, next_minute, event_json(4)),
    ];
    let (response, summary) = h.ingest.process(&batch(&records), Deadline::none()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.events_written, 4);
    assert_eq!(h.objects.put_count(), 3);
    let first = lines(
        &h.objects,
        "staging/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-11.ndjson",
    );
    let sequences: Vec<_> = first
        .iter()
        .map(|l| l["source"]["sequence_number"].clone())
        .collect();
    assert_eq!(sequences, ["11", "12"]);
    assert_eq!(first[0]["event_uuid"], uuid(1));
    assert_eq!(first[0]["received_at"], "2024-04-11T14:10:06.012000Z");
    assert_eq!(first[0]["event_type"], "game");
    lines(
        &h.objects,
        "staging/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000001-500.ndjson",
    );
    lines(
        &h.objects,
        "staging/year=2024/month=04/day=11/hour=14/minute=11/shardId-000000000000-13.ndjson",
    );
}

/// `sequence_number:event_uuid` of each line of one object.
fn sequences_and_ids(objects: &MemoryObjectStore, key: &str) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    let line = |l: &serde_json::Value| {
        format!(
            "{}:{}",
            text(&l["source"]["sequence_number"]),
            text(&l["event_uuid"])
        )
    };
    lines(objects, key).iter().map(line).collect()
}

/// An object holds the lines of its claimed records only, in sequence order, whatever the batch
/// held between them: an id an earlier batch owns, a copy of an id in the same batch, a bad record,
/// a record out of order.
#[tokio::test]
async fn an_objects_lines_are_its_claimed_records_in_sequence_order() {
    let h = harness();
    let earlier = batch(&[record(1, 1, ARRIVAL_MS, event_json(3))]);
    h.ingest.process(&earlier, Deadline::none()).await;
    let key = |first| {
        format!("staging/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-{first}.ndjson")
    };
    // In order, with an id owned by the earlier batch between two claimed records.
    let in_order = batch(&[
        record(0, 10, ARRIVAL_MS, event_json(6)),
        record(0, 11, ARRIVAL_MS, event_json(3)),
        record(0, 12, ARRIVAL_MS, event_json(7)),
    ]);
    let (_, summary) = h.ingest.process(&in_order, Deadline::none()).await;
    assert_eq!((summary.events_written, summary.duplicates_dropped), (2, 1));
    let expected = [format!("10:{}", uuid(6)), format!("12:{}", uuid(7))];
    assert_eq!(sequences_and_ids(&h.objects, &key(10)), expected);
    let mixed = batch(&[
        record(0, 25, ARRIVAL_MS, event_json(1)),
        record(0, 26, ARRIVAL_MS, event_json(3)),
        record(0, 27, ARRIVAL_MS, b"{not json".to_vec()),
        record(0, 28, ARRIVAL_MS, event_json(1)),
        record(0, 24, ARRIVAL_MS, event_json(4)),
        record(0, 29, ARRIVAL_MS, event_json(5)),
    ]);
    let (_, summary) = h.ingest.process(&mixed, Deadline::none()).await;
    assert_eq!((summary.events_written, summary.duplicates_dropped), (3, 2));
    assert_eq!(summary.records_quarantined, 1);
    let expected = [(24, 4), (25, 1), (29, 5)].map(|(n, id)| format!("{n}:{}", uuid(id)));
    assert_eq!(sequences_and_ids(&h.objects, &key(24)), expected);
}

#[tokio::test]
async fn duplicates_within_and_across_batches_are_dropped_and_counted() {
    let h = harness();
    let first = batch(&[
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(1)),
    ]);
    let (_, summary) = h.ingest.process(&first, Deadline::none()).await;
    assert_eq!((summary.events_written, summary.duplicates_dropped), (1, 1));
    let second = batch(&[record(0, 3, ARRIVAL_MS, event_json(1))]);
    h.ingest.handle(&second, Deadline::none()).await;
    assert_eq!(h.metrics.total(ingest_metrics::EVENTS_WRITTEN), 0.0);
    assert_eq!(h.metrics.total(ingest_metrics::DUPLICATES_DROPPED), 1.0);
    assert_eq!(h.dedup.owner(&uuid(1)).unwrap(), "shardId-000000000000:1");
}

#[tokio::test]
async fn records_without_an_event_id_are_still_told_apart_by_their_position() {
    let h = harness();
    let without_event_id = |records: &[StreamRecord]| {
        let mut payload = kinesis_event(records, DEFAULT_STREAM_ARN);
        for record in payload["Records"].as_array_mut().unwrap() {
            record.as_object_mut().unwrap().remove("eventID");
        }
        leaked(&payload)
    };
    let first = without_event_id(&[record(0, 1, ARRIVAL_MS, event_json(1))]);
    let second = without_event_id(&[record(0, 2, ARRIVAL_MS, event_json(1))]);
    let (_, summary) = h.ingest.process(&first, Deadline::none()).await;
    assert_eq!(summary.events_written, 1);
    let (_, summary) = h.ingest.process(&second, Deadline::none()).await;
    assert_eq!((summary.events_written, summary.duplicates_dropped), (0, 1));
    assert_eq!(h.dedup.owner(&uuid(1)).unwrap(), "shardId-unknown:1");
    let (_, summary) = h.ingest.process(&first, Deadline::none()).await;
    assert_eq!(
        summary.events_written, 1,
        "a redelivery re-claims its own id"
    );
}

#[tokio::test]
async fn a_redelivered_batch_reclaims_its_own_ids() {
    let h = harness();
    let records = [
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(2)),
    ];
    let (_, first) = h.ingest.process(&batch(&records), Deadline::none()).await;
    let (_, again) = h.ingest.process(&batch(&records), Deadline::none()).await;
    assert_eq!(first.events_written, 2);
    assert_eq!(
        again.events_written, 2,
        "a redelivery is not a duplicate of itself"
    );
    assert_eq!(again.duplicates_dropped, 0);
}

#[tokio::test]
async fn bad_records_are_quarantined_with_their_raw_bytes_and_never_fail_neighbours() {
    let h = harness();
    let records = [
        record(0, 1, ARRIVAL_MS, b"\xff\xfe".to_vec()),
        record(0, 2, ARRIVAL_MS, event_json(2)),
        record(0, 3, ARRIVAL_MS, b"[1]".to_vec()),
    ];
    let (response, summary) = h.ingest.process(&batch(&records), Deadline::none()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        (summary.events_written, summary.records_quarantined),
        (1, 2)
    );
    let quarantined = lines(
        &h.objects,
        "quarantine/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-1.ndjson",
    );
    assert_eq!(quarantined[0]["reason"], "not_utf8");
    assert_eq!(quarantined[0]["data_base64"], "//4=");
    assert_eq!(quarantined[1]["reason"], "not_an_object");
    assert_eq!(quarantined[1]["sequence_number"], "3");
}

#[tokio::test]
async fn kpl_user_records_keep_their_index_and_claim_with_a_suffix() {
    let h = harness();
    let (a, b, bad) = (event_json(1), event_json(2), b"{oops".to_vec());
    let blob = kpl::aggregate([("k", &a[..]), ("k", &b[..]), ("k", &bad[..])]);
    let (_, summary) = h
        .ingest
        .process(&batch(&[record(0, 7, ARRIVAL_MS, blob)]), Deadline::none())
        .await;
    assert_eq!(
        (
            summary.records_received,
            summary.events_written,
            summary.records_quarantined
        ),
        (3, 2, 1)
    );
    let staged = lines(
        &h.objects,
        "staging/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-7.ndjson",
    );
    assert_eq!(staged[1]["source"]["sub_sequence_number"], 1);
    assert_eq!(staged[1]["source"]["sequence_number"], "7");
    assert_eq!(h.dedup.owner(&uuid(2)).unwrap(), "shardId-000000000000:7#1");
    let quarantined = lines(
        &h.objects,
        "quarantine/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-7.ndjson",
    );
    assert_eq!(quarantined[0]["reason"], "invalid_json");
    assert_eq!(quarantined[0]["sub_sequence_number"], 2);
}

#[tokio::test]
async fn a_corrupt_aggregate_is_quarantined_whole() {
    let h = harness();
    let mut blob = kpl::aggregate([("k", &b"x"[..])]);
    blob.pop();
    let (_, summary) = h
        .ingest
        .process(
            &batch(&[record(0, 7, ARRIVAL_MS, blob.clone())]),
            Deadline::none(),
        )
        .await;
    assert_eq!(
        summary.quarantined_by_reason.get("invalid_aggregate"),
        Some(&1)
    );
    let q = lines(
        &h.objects,
        "quarantine/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-7.ndjson",
    );
    use base64::Engine as _;
    assert_eq!(
        q[0]["data_base64"],
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
}

#[tokio::test]
async fn a_failed_put_reports_the_lowest_unwritten_sequence_of_its_shard() {
    let h = harness_with(
        |inner| {
            Arc::new(FaultyObjectStore {
                inner,
                needle: "minute=11/shardId-000000000000".into(),
                hang: false,
            })
        },
        |d| d,
    );
    let records = [
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(2)),
        record(0, 3, ARRIVAL_MS + 60_000, event_json(3)),
        record(0, 4, ARRIVAL_MS + 60_000, event_json(4)),
        record(1, 9, ARRIVAL_MS + 60_000, event_json(5)),
    ];
    let (response, summary) = h.ingest.process(&batch(&records), Deadline::none()).await;
    assert_eq!(failed_sequences(&response), ["3"]);
    assert_eq!(
        summary.events_written, 3,
        "seq 1, 2 and shard 1's 9 are safe"
    );
    assert_eq!(summary.records_retried, 2);

    // Lambda redelivers from 3 once S3 recovers: the records re-claim their own ids.
    let h2 = Harness {
        ingest: Ingest {
            objects: Arc::new(h.objects.clone()),
            ..h.ingest
        },
        ..h
    };
    let (response, summary) = h2
        .ingest
        .process(&batch(&records[2..4]), Deadline::none())
        .await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((summary.events_written, summary.duplicates_dropped), (2, 0));
}

/// Fails claims for one id, as DynamoDB would after the SDK's retries ran out.
struct FailingClaims {
    inner: Arc<MemoryDedupStore>,
    failing_uuid: String,
}

#[async_trait]
impl DedupStore for FailingClaims {
    async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        if claim.event_uuid == self.failing_uuid {
            return Err(StoreError::new("PutItem", "ProvisionedThroughputExceeded"));
        }
        self.inner.claim(claim).await
    }
}

#[tokio::test]
async fn a_failed_claim_holds_back_its_record_and_everything_after_it_in_the_shard() {
    let h = harness_with(
        |o| Arc::new(o),
        |inner| {
            Arc::new(FailingClaims {
                inner,
                failing_uuid: uuid(2),
            })
        },
    );
    let records = [
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(2)),
        record(0, 3, ARRIVAL_MS, event_json(3)),
        record(1, 1, ARRIVAL_MS, event_json(4)),
    ];
    let (response, summary) = h.ingest.process(&batch(&records), Deadline::none()).await;
    assert_eq!(failed_sequences(&response), ["2"]);
    assert_eq!(summary.events_written, 2);
    let staged = lines(
        &h.objects,
        "staging/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-1.ndjson",
    );
    assert_eq!(
        staged.len(),
        1,
        "records from the cutoff on are not written yet"
    );
}

#[tokio::test]
async fn an_expired_claim_no_longer_blocks_the_id() {
    let mut h = harness();
    h.ingest
        .process(
            &batch(&[record(0, 1, ARRIVAL_MS, event_json(1))]),
            Deadline::none(),
        )
        .await;
    h.ingest.clock = || 1_712_844_606 + 3_601;
    let (_, summary) = h
        .ingest
        .process(
            &batch(&[record(0, 2, ARRIVAL_MS, event_json(1))]),
            Deadline::none(),
        )
        .await;
    assert_eq!(summary.events_written, 1);
}

#[tokio::test]
async fn metrics_add_up_to_the_records_received() {
    let h = harness();
    let records = [
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(1)),
        record(0, 3, ARRIVAL_MS, b"{}".to_vec()),
    ];
    h.ingest.handle(&batch(&records), Deadline::none()).await;
    let m = |name| h.metrics.total(name);
    assert_eq!(m(ingest_metrics::RECORDS_RECEIVED), 3.0);
    assert_eq!(m(ingest_metrics::EVENTS_WRITTEN), 1.0);
    assert_eq!(m(ingest_metrics::DUPLICATES_DROPPED), 1.0);
    assert_eq!(m(ingest_metrics::RECORDS_QUARANTINED), 1.0);
    assert_eq!(m(ingest_metrics::BATCH_ITEM_FAILURES), 0.0);
    // The bytes of the one staging object, not of the quarantine object.
    let staged: Vec<String> = h
        .objects
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("staging/"))
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    let staged_bytes = h.objects.object(&staged[0]).unwrap().len();
    assert_eq!(
        m(ingest_metrics::STAGING_BYTES_WRITTEN),
        staged_bytes as f64
    );
}

/// A metrics backend that is down.
struct BrokenMetrics;

#[async_trait]
impl MetricsSink for BrokenMetrics {
    async fn publish(&self, _: &[Metric]) -> Result<(), StoreError> {
        Err(StoreError::new("PutMetricData", "ServiceUnavailable"))
    }
}

#[tokio::test]
async fn a_metrics_failure_never_fails_the_invocation() {
    let mut h = harness();
    h.ingest.metrics = Arc::new(BrokenMetrics);
    let response = h
        .ingest
        .handle(
            &batch(&[record(0, 1, ARRIVAL_MS, event_json(1))]),
            Deadline::none(),
        )
        .await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(h.objects.put_count(), 1, "the event was still written");
}

/// A dedup store that answers after `delay`, as DynamoDB does when it is throttling under the SDK's
/// retries or a connection hangs.
struct SlowClaims {
    inner: Arc<MemoryDedupStore>,
    delay: std::time::Duration,
    slow_uuid: String,
}

#[async_trait]
impl DedupStore for SlowClaims {
    async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        if claim.event_uuid == self.slow_uuid {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.claim(claim).await
    }
}

#[tokio::test(start_paused = true)]
async fn near_its_deadline_ingest_stops_and_reports_the_rest_instead_of_timing_out() {
    let h = harness_with(
        |o| Arc::new(o),
        |inner| {
            Arc::new(SlowClaims {
                inner,
                delay: std::time::Duration::from_secs(600),
                slow_uuid: uuid(2),
            })
        },
    );
    let records = [
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(2)),
        record(0, 3, ARRIVAL_MS, event_json(3)),
        record(1, 7, ARRIVAL_MS, event_json(4)),
    ];
    let started = tokio::time::Instant::now();
    let deadline = Deadline::within(std::time::Duration::from_secs(60));
    let (response, summary) = h.ingest.process(&batch(&records), deadline).await;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(60),
        "answered after {took:?}"
    );
    assert!(
        took >= std::time::Duration::from_secs(50),
        "gave up too early: {took:?}"
    );
    assert_eq!(failed_sequences(&response), ["2"]);
    assert_eq!((summary.events_written, summary.records_retried), (2, 2));
    assert_eq!(
        h.dedup.owner(&uuid(4)).as_deref(),
        Some("shardId-000000000001:7")
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_time_left_nothing_is_started_and_everything_is_reported() {
    let h = harness();
    let records = [
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(2)),
    ];
    let deadline = Deadline::within(std::time::Duration::from_millis(100));
    let (response, summary) = h.ingest.process(&batch(&records), deadline).await;
    assert_eq!(failed_sequences(&response), ["1"]);
    assert_eq!((summary.events_written, summary.records_retried), (0, 2));
    assert_eq!(h.objects.put_count(), 0);
    assert_eq!(h.dedup.owner(&uuid(1)), None);
}

#[tokio::test]
async fn a_record_whose_envelope_cannot_be_read_is_quarantined_raw_and_spares_its_neighbours() {
    let h = harness();
    let mut payload = kinesis_event(
        &[
            record(0, 1, ARRIVAL_MS, event_json(1)),
            record(0, 2, ARRIVAL_MS, event_json(2)),
            record(0, 3, ARRIVAL_MS, event_json(3)),
        ],
        DEFAULT_STREAM_ARN,
    );
    payload["Records"][1]["kinesis"]["data"] = "%%% not base64".into();
    payload["Records"][2]["kinesis"]
        .as_object_mut()
        .unwrap()
        .remove("sequenceNumber");
    let raw_second = payload["Records"][1].to_string();
    let event = leaked(&payload);
    let (response, summary) = h.ingest.process(&event, Deadline::none()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        (summary.events_written, summary.records_quarantined),
        (1, 2)
    );
    assert_eq!(summary.quarantined_by_reason["invalid_envelope"], 2);
    let quarantined: Vec<serde_json::Value> = h
        .objects
        .keys()
        .iter()
        .filter(|k| k.starts_with("quarantine/"))
        .flat_map(|k| lines(&h.objects, k))
        .collect();
    assert_eq!(quarantined.len(), 2);
    let sequenced = quarantined
        .iter()
        .find(|l| l["sequence_number"] == "2")
        .expect("the record with a sequence number keeps it");
    assert_eq!(sequenced["reason"], "invalid_envelope");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sequenced["data_base64"].as_str().unwrap())
        .unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(raw.to_string(), raw_second);
    assert_eq!(sequenced["received_at"], "2024-04-11T14:10:06.012000Z");
    // The record with no sequence number is filed under a name of its own.
    assert!(h
        .objects
        .keys()
        .iter()
        .any(|k| k.contains("shardId-000000000000-unsequenced.")));
}
