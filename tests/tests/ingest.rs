//! `ingest` in-process against the local emulator (real S3 and DynamoDB semantics): duplicates,
//! reason codes, KPL, redeliveries and sabotaged stores (`ingest_binary.rs` has the built binary).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ingest::Deadline;
use pipeline::fixtures::{event_json, record, uuid, ARRIVAL_MS};
use pipeline::kpl;
use pipeline_tests::{kinesis_payload, uuids, Lake};
use serde_json::{json, Value};

const MINUTE: &str = "year=2024/month=04/day=11/hour=14/minute=10";

fn failures(response: &aws_lambda_events::event::streams::KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn duplicates_within_a_batch_and_across_batches_are_dropped() {
    let lake = Lake::new("dups-batch").await;
    let ingest = lake.ingest().await;
    let (_, first) = kinesis_payload(&[
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(2)),
        record(0, 3, ARRIVAL_MS, event_json(1)),
    ]);
    let (response, summary) = ingest.process(&first, Deadline::none()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((summary.events_written, summary.duplicates_dropped), (2, 1));

    let (_, second) = kinesis_payload(&[
        record(0, 4, ARRIVAL_MS + 60_000, event_json(2)),
        record(0, 5, ARRIVAL_MS + 60_000, event_json(3)),
    ]);
    let (_, summary) = ingest.process(&second, Deadline::none()).await;
    assert_eq!((summary.events_written, summary.duplicates_dropped), (1, 1));

    let staged = lake.all_lines("staging/").await;
    assert_eq!(uuids(&staged), [uuid(1), uuid(2), uuid(3)]);
    assert_eq!(
        lake.owner(&uuid(1)).await.unwrap(),
        "shardId-000000000000:1"
    );
    assert_eq!(
        lake.owner(&uuid(2)).await.unwrap(),
        "shardId-000000000000:2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_across_shards_racing_concurrently_are_written_once() {
    let lake = Lake::new("dups-race").await;
    let ingest = Arc::new(lake.ingest().await);
    const IDS: u64 = 300;
    let batch = |shard: u32| {
        // Same ids on every shard, in a different order on each.
        let records: Vec<_> = (0..IDS)
            .map(|i| {
                let id = if shard.is_multiple_of(2) {
                    i
                } else {
                    IDS - 1 - i
                };
                record(shard, 100 + i, ARRIVAL_MS, event_json(id))
            })
            .collect();
        kinesis_payload(&records).1
    };
    let runs = (0..3).map(|shard| {
        let ingest = ingest.clone();
        let event = batch(shard);
        tokio::spawn(async move { ingest.process(&event, Deadline::none()).await })
    });
    let results = futures::future::join_all(runs).await;
    let (mut written, mut duplicates) = (0, 0);
    for result in results {
        let (response, summary) = result.unwrap();
        assert!(response.batch_item_failures.is_empty());
        written += summary.events_written;
        duplicates += summary.duplicates_dropped;
    }
    assert_eq!(written, IDS);
    assert_eq!(duplicates, 2 * IDS);
    let staged = lake.all_lines("staging/").await;
    let expected: Vec<String> = {
        let mut ids: Vec<_> = (0..IDS).map(uuid).collect();
        ids.sort();
        ids
    };
    assert_eq!(uuids(&staged), expected, "each id staged exactly once");
    // The staged copy of each id is the one its dedup claim names.
    for line in &staged {
        let owner = lake
            .owner(line["event_uuid"].as_str().unwrap())
            .await
            .unwrap();
        let source = &line["source"];
        assert_eq!(
            owner,
            format!(
                "{}:{}",
                source["shard_id"].as_str().unwrap(),
                source["sequence_number"].as_str().unwrap()
            )
        );
    }
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&event_json(900)).unwrap();
    event[field] = value;
    event.to_string().into_bytes()
}

fn without(field: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&event_json(901)).unwrap();
    event.as_object_mut().unwrap().remove(field);
    event.to_string().into_bytes()
}

#[tokio::test]
async fn every_reason_code_is_quarantined_with_the_raw_bytes() {
    let lake = Lake::new("reasons").await;
    let ingest = lake.ingest().await;
    let mut corrupt_aggregate = kpl::aggregate([("k", &b"{}"[..])]);
    corrupt_aggregate.truncate(corrupt_aggregate.len() - 3);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not_utf8", b"{\"event_uuid\":\"\xc3\x28\"}".to_vec()),
        ("invalid_json", b"{\"event_uuid\": ".to_vec()),
        ("not_an_object", b"[\"game:resumed\"]".to_vec()),
        ("missing_field", without("event_uuid")),
        ("invalid_uuid", with("event_uuid", json!("12345"))),
        (
            "invalid_timestamp",
            with("created_at", json!("last tuesday")),
        ),
        (
            "created_at_out_of_range",
            with("created_at", json!(915_148_800)),
        ),
        ("invalid_event_name", with("event_name", json!("resumed"))),
        (
            "unknown_event",
            with("event_name", json!("game:teleported")),
        ),
        (
            "wrong_field_type",
            with("event_specifics", json!({"score": "lots"})),
        ),
        ("invalid_aggregate", corrupt_aggregate),
    ];
    let mut records: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, data))| record(0, 10 + i as u64, ARRIVAL_MS, data.clone()))
        .collect();
    records.push(record(0, 99, ARRIVAL_MS, event_json(1)));
    let (_, event) = kinesis_payload(&records);
    let (response, summary) = ingest.process(&event, Deadline::none()).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "bad records never fail the batch"
    );
    assert_eq!(summary.records_quarantined, cases.len() as u64);
    assert_eq!(summary.events_written, 1);

    let quarantined = lake
        .lines(&format!(
            "quarantine/{MINUTE}/shardId-000000000000-10.ndjson"
        ))
        .await;
    assert_eq!(quarantined.len(), cases.len());
    for (line, (reason, data)) in quarantined.iter().zip(&cases) {
        assert_eq!(line["reason"], *reason, "{line}");
        assert!(!line["detail"].as_str().unwrap().is_empty());
        assert_eq!(line["shard_id"], "shardId-000000000000");
        assert_eq!(line["received_at"], "2024-04-11T14:10:06.012000Z");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line["data_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(&raw, data, "raw bytes kept for {reason}");
    }
    let staged = lake
        .lines(&format!("staging/{MINUTE}/shardId-000000000000-99.ndjson"))
        .await;
    assert_eq!(uuids(&staged), [uuid(1)]);
}

#[tokio::test]
async fn kpl_aggregates_are_unpacked_into_their_user_records() {
    let lake = Lake::new("kpl").await;
    let ingest = lake.ingest().await;
    let users: Vec<Vec<u8>> = (0..5).map(event_json).collect();
    let blob = kpl::aggregate(users.iter().map(|u| ("pk", u.as_slice())));
    let (_, event) = kinesis_payload(&[
        record(0, 50, ARRIVAL_MS, blob),
        record(0, 51, ARRIVAL_MS, event_json(0)),
    ]);
    let (_, summary) = ingest.process(&event, Deadline::none()).await;
    assert_eq!(
        (
            summary.records_received,
            summary.events_written,
            summary.duplicates_dropped
        ),
        (6, 5, 1)
    );
    let staged = lake
        .lines(&format!("staging/{MINUTE}/shardId-000000000000-50.ndjson"))
        .await;
    let subs: Vec<_> = staged
        .iter()
        .map(|l| l["source"]["sub_sequence_number"].clone())
        .collect();
    assert_eq!(subs, [json!(0), json!(1), json!(2), json!(3), json!(4)]);
    assert!(staged
        .iter()
        .all(|l| l["source"]["sequence_number"] == "50"));
    assert_eq!(
        lake.owner(&uuid(3)).await.unwrap(),
        "shardId-000000000000:50#3"
    );
}

#[tokio::test]
async fn a_redelivered_batch_writes_the_same_objects_and_drops_nothing() {
    let lake = Lake::new("redeliver").await;
    let ingest = lake.ingest().await;
    let (_, event) = kinesis_payload(
        &(0..20)
            .map(|i| record(0, 1000 + i, ARRIVAL_MS, event_json(i)))
            .collect::<Vec<_>>(),
    );
    let (_, first) = ingest.process(&event, Deadline::none()).await;
    let keys = lake.keys("staging/").await;
    let (_, again) = ingest.process(&event, Deadline::none()).await;
    assert_eq!((first.events_written, again.events_written), (20, 20));
    assert_eq!(again.duplicates_dropped, 0);
    assert_eq!(
        lake.keys("staging/").await,
        keys,
        "same object, overwritten"
    );
    assert_eq!(lake.all_lines("staging/").await.len(), 20);
}

async fn sabotaged(lake: &Lake, needle: &'static str, hang: bool) -> ingest::Ingest {
    let mut ingest = lake.ingest().await;
    ingest.objects = lake.sabotaged_store(needle, hang).await;
    ingest
}

#[tokio::test]
async fn a_crash_after_the_claims_and_before_the_write_loses_nothing_on_redelivery() {
    let lake = Lake::new("crash").await;
    let crashing = sabotaged(&lake, "staging/", true).await;
    let records: Vec<_> = (0..30)
        .map(|i| record(0, 500 + i, ARRIVAL_MS, event_json(i)))
        .collect();
    let (_, event) = kinesis_payload(&records);
    // The invocation dies while its S3 write is in flight: the claims are made, nothing is staged.
    let crashed = tokio::time::timeout(
        Duration::from_secs(3),
        crashing.process(&event, Deadline::none()),
    )
    .await;
    assert!(crashed.is_err(), "the sabotaged write never finishes");
    assert_eq!(
        lake.owner(&uuid(7)).await.unwrap(),
        "shardId-000000000000:507"
    );
    assert!(lake.keys("staging/").await.is_empty());

    // Lambda redelivers the batch to a fresh instance: each record re-claims its own id.
    let (response, summary) = lake.ingest().await.process(&event, Deadline::none()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        (summary.events_written, summary.duplicates_dropped),
        (30, 0)
    );
    assert_eq!(lake.all_lines("staging/").await.len(), 30);
}

#[tokio::test]
async fn an_s3_failure_reports_batch_item_failures_from_the_lowest_unwritten_sequence() {
    let lake = Lake::new("s3-fail").await;
    let failing = sabotaged(&lake, "minute=11/shardId-000000000000", false).await;
    let records = vec![
        record(0, 10, ARRIVAL_MS, event_json(1)),
        record(0, 11, ARRIVAL_MS, event_json(2)),
        record(0, 12, ARRIVAL_MS + 60_000, event_json(3)),
        record(0, 13, ARRIVAL_MS + 60_000, b"garbage".to_vec()),
        record(0, 14, ARRIVAL_MS + 60_000, event_json(4)),
        record(1, 70, ARRIVAL_MS + 60_000, event_json(5)),
    ];
    let (_, event) = kinesis_payload(&records);
    let (response, summary) = failing.process(&event, Deadline::none()).await;
    assert_eq!(failures(&response), ["12"]);
    assert_eq!(summary.events_written, 3);
    assert_eq!(summary.records_retried, 3);

    // Lambda retries from 12; S3 has recovered.
    let (_, retry) = kinesis_payload(&records[2..5]);
    let (response, summary) = lake.ingest().await.process(&retry, Deadline::none()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        (
            summary.events_written,
            summary.records_quarantined,
            summary.duplicates_dropped
        ),
        (2, 1, 0)
    );
    assert_eq!(
        uuids(&lake.all_lines("staging/").await),
        [uuid(1), uuid(2), uuid(3), uuid(4), uuid(5)]
    );
}
