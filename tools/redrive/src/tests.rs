//! Redrive against the in-memory twins. Through the built binaries and the emulator: the
//! workspace's `tests/tests/production.rs`.

use std::sync::Arc;

use pipeline::catalogue::Catalogue;
use pipeline::fixtures::{event_json, record, uuid, ARRIVAL_MS};
use pipeline::given_up::{given_up_key, GivenUpBatch, KinesisBatchInfo, GIVEN_UP_PREFIX};
use pipeline::lambda_payload::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};
use pipeline::layout::{Minute, Prefixes};
use pipeline::memory::{MemoryDedupStore, MemoryMetrics, MemoryObjectStore};
use pipeline::ports::{Claim, DedupStore};
use pipeline::position::StreamPosition;
use pipeline::quarantine_line::QuarantineLine;
use pipeline::validate::Reason;

use super::*;

struct Harness {
    redrive: Redrive,
    objects: MemoryObjectStore,
    dedup: Arc<MemoryDedupStore>,
}

/// Two days after the fixtures' arrival (2024-04-11).
fn soon_after() -> i64 {
    ARRIVAL_MS * 1000 + 2 * time::MICROS_PER_DAY
}

fn harness(now: fn() -> i64) -> Harness {
    let objects = MemoryObjectStore::default();
    let dedup = Arc::new(MemoryDedupStore::default());
    let ingest = Ingest {
        catalogue: Catalogue::embedded(),
        prefixes: Prefixes::default(),
        dedup_ttl_seconds: 604_800,
        dedup: dedup.clone(),
        objects: Arc::new(objects.clone()),
        metrics: Arc::new(MemoryMetrics::default()),
        clock: || 1_712_844_606,
    };
    Harness {
        redrive: Redrive {
            ingest,
            staging_retention_days: 14,
            now,
        },
        objects,
        dedup,
    }
}

async fn keep_given_up(objects: &MemoryObjectStore, records: &[StreamRecord]) -> String {
    let batch = GivenUpBatch {
        version: "1.0".into(),
        kinesis_batch_info: KinesisBatchInfo {
            shard_id: records[0].shard_id.clone(),
            start_sequence_number: records[0].sequence_number.clone(),
            end_sequence_number: records[records.len() - 1].sequence_number.clone(),
            batch_size: records.len() as u64,
            ..KinesisBatchInfo::default()
        },
        payload: Some(kinesis_event(records, DEFAULT_STREAM_ARN).to_string()),
        ..GivenUpBatch::default()
    };
    let key = given_up_key("mapping", &records[0].shard_id, soon_after(), "u1");
    objects
        .put(&key, Bytes::from(batch.to_json()))
        .await
        .unwrap();
    key
}

fn staging(objects: &MemoryObjectStore) -> Vec<(String, Bytes)> {
    objects
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("staging/"))
        .map(|k| (k.clone(), objects.object(&k).unwrap()))
        .collect()
}

fn staged_positions(objects: &MemoryObjectStore) -> Vec<(String, String, Option<u64>)> {
    staged_positions_where(objects, |_| true)
}

fn staged_positions_where(
    objects: &MemoryObjectStore,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(String, String, Option<u64>)> {
    let mut positions = Vec::new();
    for (_, body) in staging(objects).into_iter().filter(|(k, _)| wanted(k)) {
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line: serde_json::Value = serde_json::from_slice(line).unwrap();
            positions.push((
                line["event_uuid"].as_str().unwrap().to_string(),
                line["source"]["sequence_number"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                line["source"]["sub_sequence_number"].as_u64(),
            ));
        }
    }
    positions.sort();
    positions
}

#[tokio::test]
async fn a_given_up_batch_is_replayed_with_its_original_event_ids_once() {
    let h = harness(soon_after);
    let mut records: Vec<_> = (1..=4)
        .map(|n| record(0, n, ARRIVAL_MS, event_json(n)))
        .collect();
    records.push(record(0, 5, ARRIVAL_MS, b"{broken".to_vec()));
    // Before the mapping gave up, record 1 was written (its id is claimed by its own eventID);
    // record 3's id was taken by another record: a real duplicate.
    for (n, owner) in [
        (1, "shardId-000000000000:1"),
        (3, "shardId-000000000009:77"),
    ] {
        let claim = Claim {
            event_uuid: &uuid(n),
            claimed_by: owner,
            now: 1_712_844_606,
            expires_at: 1_712_844_606 + 604_800,
        };
        h.dedup.claim(claim).await.unwrap();
    }
    let key = keep_given_up(&h.objects, &records).await;

    let report = h.redrive.given_up(GIVEN_UP_PREFIX, false).await.unwrap();
    assert_eq!(report.problems, []);
    assert_eq!((report.objects, report.redriven), (1, 1));
    assert_eq!(report.counts.records, 5);
    assert_eq!(
        report.counts.events_written, 3,
        "record 1 re-owns its claim"
    );
    assert_eq!(report.counts.duplicates_dropped, 1);
    assert_eq!(report.counts.records_quarantined, 1);
    let quarantined: Vec<String> = h
        .objects
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("quarantine/"))
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(quarantined[0].ends_with("/shardId-000000000000-5.ndjson"));
    assert_eq!(
        report.arrival_days,
        BTreeSet::from(["2024-04-11".to_string()])
    );
    let positions: Vec<_> = staged_positions(&h.objects)
        .into_iter()
        .map(|(_, sequence, _)| sequence)
        .collect();
    assert_eq!(positions, ["1", "2", "4"]);
    assert!(h
        .objects
        .object(&format!("{RECEIPTS_PREFIX}{key}.json"))
        .is_some());

    // Idempotent: a second run skips it; a forced one writes the very same objects.
    let before = staging(&h.objects);
    let again = h.redrive.given_up(GIVEN_UP_PREFIX, false).await.unwrap();
    assert_eq!((again.already_redriven, again.redriven), (1, 0));
    let forced = h.redrive.given_up(GIVEN_UP_PREFIX, true).await.unwrap();
    assert_eq!((forced.redriven, forced.counts.events_written), (1, 3));
    assert_eq!(staging(&h.objects), before);
}

#[tokio::test]
async fn a_batch_older_than_staging_retention_is_named_not_sent() {
    let h = harness(|| ARRIVAL_MS * 1000 + 13 * time::MICROS_PER_DAY);
    let records = [record(0, 1, ARRIVAL_MS, event_json(1))];
    keep_given_up(&h.objects, &records).await;
    let report = h.redrive.given_up(GIVEN_UP_PREFIX, false).await.unwrap();
    assert_eq!(report.redriven, 0);
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0].problem.contains("2024-04-11"),
        "{:?}",
        report.problems
    );
    assert!(staging(&h.objects).is_empty());
}

#[tokio::test]
async fn an_on_failure_record_without_payload_is_a_problem_not_a_crash() {
    let h = harness(soon_after);
    let key = given_up_key("mapping", "shardId-000000000000", soon_after(), "u2");
    h.objects
        .put(&key, Bytes::from(r#"{"version":"1.0"}"#))
        .await
        .unwrap();
    h.objects
        .put(&format!("{key}-x"), Bytes::from("not json"))
        .await
        .unwrap();
    let report = h.redrive.given_up(GIVEN_UP_PREFIX, false).await.unwrap();
    assert_eq!((report.objects, report.redriven), (2, 0));
    assert!(report.problems[0].problem.contains("no payload"));
    assert!(report.problems[1]
        .problem
        .contains("not an on-failure record"));
}

fn quarantine_line(
    out: &mut Vec<u8>,
    reason: Reason,
    sequence: &str,
    sub: Option<u32>,
    data: &[u8],
) {
    QuarantineLine::record(
        reason,
        "old catalogue",
        StreamPosition::new("shardId-000000000000", sequence, sub),
        ARRIVAL_MS * 1000,
        data,
    )
    .push_to(out);
}

#[tokio::test]
async fn quarantined_records_a_newer_catalogue_accepts_are_staged_with_their_identity() {
    let h = harness(soon_after);
    let login = format!(
        r#"{{"event_uuid":"{}","created_at":1712844605,"event_name":"user:login","event_specifics":{{"device":"iOS","user_location":"Paris"}}}}"#,
        uuid(50)
    );
    let mut body = Vec::new();
    // Quarantined by an ingest whose catalogue did not know user:login yet.
    quarantine_line(
        &mut body,
        Reason::UnknownEvent,
        "10",
        None,
        login.as_bytes(),
    );
    // Still invalid, and never curable.
    quarantine_line(&mut body, Reason::InvalidJson, "11", None, b"{not json");
    quarantine_line(&mut body, Reason::InvalidEnvelope, "", None, b"{}");
    // Another batch: the third user record of an aggregate, quarantined alone.
    let mut aggregate = Vec::new();
    quarantine_line(
        &mut aggregate,
        Reason::WrongFieldType,
        "20",
        Some(2),
        &event_json(51),
    );
    let minute = Minute::of_micros(ARRIVAL_MS * 1000);
    let prefixes = Prefixes::default();
    for (first, body) in [("10", body), ("20", aggregate)] {
        h.objects
            .put(
                &prefixes.quarantine_key(minute, "shardId-000000000000", first),
                Bytes::from(body),
            )
            .await
            .unwrap();
    }
    // What ingest staged from the aggregate: its first user record, under the same first sequence.
    let neighbour = prefixes.staging_key(minute, "shardId-000000000000", "20");
    h.objects
        .put(&neighbour, Bytes::from_static(b"{\"neighbour\":1}\n"))
        .await
        .unwrap();

    let day = Date::parse("2024-04-11").unwrap();
    let report = h.redrive.quarantine(day, day).await.unwrap();
    assert_eq!(report.problems, []);
    assert_eq!((report.objects, report.lines), (2, 4));
    assert_eq!(report.not_replayable, 1);
    assert_eq!(report.counts.events_written, 2);
    assert_eq!(
        report.counts.records_quarantined, 1,
        "the broken JSON stays"
    );
    assert_eq!(
        h.objects.object(&neighbour).unwrap(),
        Bytes::from_static(b"{\"neighbour\":1}\n"),
        "never overwrites what ingest staged"
    );
    let staged = staged_positions_where(&h.objects, |key| key.contains(".redriven-"));
    assert_eq!(
        staged,
        [
            (uuid(50), "10".to_string(), None),
            (uuid(51), "20".to_string(), Some(2))
        ]
    );
    assert_eq!(
        h.dedup.owner(&uuid(51)).as_deref(),
        Some("shardId-000000000000:20#2")
    );
    assert_eq!(
        h.dedup.owner(&uuid(50)).as_deref(),
        Some("shardId-000000000000:10")
    );
    // The quarantine object is left as it was, and a re-run writes the same objects.
    let before = staging(&h.objects);
    let again = h.redrive.quarantine(day, day).await.unwrap();
    assert_eq!(again.counts.events_written, 2);
    assert_eq!(staging(&h.objects), before);
}

#[tokio::test]
async fn a_quarantine_range_older_than_staging_retention_is_refused() {
    let h = harness(|| ARRIVAL_MS * 1000 + 30 * time::MICROS_PER_DAY);
    let day = Date::parse("2024-04-11").unwrap();
    let error = h.redrive.quarantine(day, day).await.unwrap_err();
    assert!(
        error.to_string().contains("STAGING_RETENTION_DAYS"),
        "{error}"
    );
    let backwards = h
        .redrive
        .quarantine(day.succ(), day)
        .await
        .unwrap_err()
        .to_string();
    assert!(backwards.contains("before it starts"), "{backwards}");
}
