//! Compaction against the in-memory object store; the emulator and binary versions are in `tests/`.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pipeline::fixtures::{event_with_language, staging_lines, uuid, ARRIVAL_MS};
use pipeline::layout::Minute;
use pipeline::memory::{MemoryMetrics, MemoryObjectStore};
use pipeline::metric_names::compact as compact_metrics;
use serde_json::json;

use super::*;

const DAY: &str = "2024-04-11";

fn day() -> Date {
    Date::parse(DAY).unwrap()
}

fn staging_body(shard: &str, events: &[(u64, Vec<u8>)]) -> Vec<u8> {
    staging_lines(shard, events, ARRIVAL_MS)
}

async fn stage(store: &MemoryObjectStore, shard: &str, events: &[(u64, Vec<u8>)]) -> String {
    stage_at(store, shard, events, ARRIVAL_MS).await
}

/// Stages `events` as one object of `shard` that arrived at `arrival_ms`, as ingest names it.
async fn stage_at(
    store: &MemoryObjectStore,
    shard: &str,
    events: &[(u64, Vec<u8>)],
    arrival_ms: i64,
) -> String {
    let key = Prefixes::default().staging_key(
        Minute::of_micros(arrival_ms * 1000),
        shard,
        &events[0].0.to_string(),
    );
    store
        .put(&key, Bytes::from(staging_lines(shard, events, arrival_ms)))
        .await
        .unwrap();
    key
}

fn en(sequences: &[u64]) -> Vec<(u64, Vec<u8>)> {
    sequences
        .iter()
        .map(|&s| (s, event_with_language(s, "lang_en")))
        .collect()
}

fn sorted_ids(store: &MemoryObjectStore, files: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = files
        .iter()
        .flat_map(|f| column_strings(&read_parquet(store, f), "event_uuid"))
        .flatten()
        .collect();
    ids.sort();
    ids
}

fn compactor(store: &MemoryObjectStore) -> (Compact, Arc<MemoryMetrics>) {
    let metrics = Arc::new(MemoryMetrics::default());
    let compact = Compact::new(
        Prefixes::default(),
        Arc::new(store.clone()),
        metrics.clone(),
    );
    (compact, metrics)
}

fn read_parquet(store: &MemoryObjectStore, key: &str) -> Vec<RecordBatch> {
    let bytes = store.object(key).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn column_strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name(name).unwrap().as_string::<i32>();
            column
                .iter()
                .map(|v| v.map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_requested_day_comes_from_day_or_the_schedule_time() {
    let request = |day, force, catch_up| Request {
        day,
        force,
        catch_up,
    };
    assert_eq!(
        parse_request(&json!({"day": "2024-04-11"})).unwrap(),
        request(day(), false, false)
    );
    assert_eq!(
        parse_request(&json!({"day": "2024-04-11", "force": true})).unwrap(),
        request(day(), true, false)
    );
    assert_eq!(
        parse_request(&json!({"time": "2024-04-12T00:15:00Z", "source": "aws.events"})).unwrap(),
        request(day(), false, true)
    );
    for bad in [
        json!({"day": "2024-4-11"}),
        json!({"day": 20240411}),
        json!({"day": "2024-04-11", "force": "yes"}),
        json!({"time": "noon"}),
        json!({}),
        json!([1]),
    ] {
        assert!(
            matches!(parse_request(&bad), Err(CompactError::BadRequest(_))),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn rows_land_in_their_event_day_and_language_with_catalogue_types() {
    let store = MemoryObjectStore::default();
    let late = br#"{"event_uuid":"00000000-0000-4000-8000-000000000099","created_at":"2024-04-10T23:59:59.5Z","event_name":"user:login","event_specifics":{"device":"iOS","surprise":{"a":1}}}"#.to_vec();
    stage(
        &store,
        "shardId-000000000000",
        &[
            (1, event_with_language(1, "lang_fr")),
            (2, event_with_language(2, "lang_ru")),
            (3, late),
        ],
    )
    .await;
    let (compact, metrics) = compactor(&store);
    let report = compact.handle(&json!({"day": DAY})).await.unwrap();
    assert_eq!(report.rows_written, 3);
    assert_eq!(
        report.files,
        [
            "processed/year=2024/month=04/day=10/language=__HIVE_DEFAULT_PARTITION__/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=lang_fr/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=lang_ru/part-20240411-00000.parquet",
        ]
    );
    let ru = read_parquet(&store, &report.files[2]);
    let schema = ru[0].schema();
    assert_eq!(
        schema.field_with_name("score").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("created_at").unwrap().data_type(),
        &lake::timestamp_type()
    );
    let created = ru[0]
        .column_by_name("created_at")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(created.value(0), 1_712_844_605_951_235);
    assert_eq!(
        ru[0]
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        2
    );
    assert_eq!(column_strings(&ru, "extra_specifics"), [None]);
    let login = read_parquet(&store, &report.files[0]);
    assert_eq!(column_strings(&login, "device"), [Some("iOS".into())]);
    assert_eq!(
        column_strings(&login, "extra_specifics"),
        [Some(r#"{"surprise":{"a":1}}"#.into())]
    );
    assert_eq!(metrics.total(compact_metrics::EVENTS_COMPACTED), 3.0);
    assert_eq!(metrics.total(compact_metrics::PARQUET_FILES_WRITTEN), 3.0);
    assert!(metrics.total(compact_metrics::PARQUET_BYTES_WRITTEN) > 0.0);
}

#[tokio::test]
async fn redeliveries_are_removed_across_overlapping_objects() {
    let store = MemoryObjectStore::default();
    let shard = "shardId-000000000001";
    stage(
        &store,
        shard,
        &(1..=10)
            .map(|s| (s, event_with_language(s, "lang_en")))
            .collect::<Vec<_>>(),
    )
    .await;
    // Lambda retried from 6 with a bigger batch: 6..=14 were staged again under first sequence 6.
    stage(
        &store,
        shard,
        &(6..=14)
            .map(|s| (s, event_with_language(s, "lang_en")))
            .collect::<Vec<_>>(),
    )
    .await;
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!((report.input_objects, report.input_events), (2, 19));
    assert_eq!((report.rows_written, report.duplicates_removed), (14, 5));
    let rows = read_parquet(&store, &report.files[0]);
    let mut ids: Vec<_> = column_strings(&rows, "event_uuid")
        .into_iter()
        .flatten()
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=14).map(uuid).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_rerun_replaces_exactly_the_days_parts_and_removes_leftovers() {
    let store = MemoryObjectStore::default();
    stage(
        &store,
        "shardId-000000000000",
        &[
            (1, event_with_language(1, "lang_en")),
            (2, event_with_language(2, "lang_de")),
        ],
    )
    .await;
    let other_day =
        "processed/year=2024/month=04/day=11/language=lang_en/part-20240412-00000.parquet";
    store
        .put(other_day, Bytes::from_static(b"another arrival day's file"))
        .await
        .unwrap();
    let stale = "processed/year=2024/month=04/day=09/language=lang_xx/part-20240411-00003.parquet";
    store
        .put(stale, Bytes::from_static(b"from an earlier run"))
        .await
        .unwrap();
    let (compact, _) = compactor(&store);
    let first = compact.run(day()).await.unwrap();
    let second = compact.run(day()).await.unwrap();
    // The same result, in the other bank of part numbers: the stale file of bank 0 (and no
    // manifest) sent the first run to bank 1, whose manifest sends the second to bank 0.
    let in_bank_0 = |report: &Report| Report {
        files: report
            .files
            .iter()
            .map(|f| f.replace("-50000.parquet", "-00000.parquet"))
            .collect(),
        ..report.clone()
    };
    assert!(first.files.iter().all(|f| f.ends_with("-50000.parquet")));
    assert!(second.files.iter().all(|f| f.ends_with("-00000.parquet")));
    assert_eq!(in_bank_0(&first), second, "a re-run gives the same result");
    assert!(
        store.object(stale).is_none(),
        "leftover part of the same day removed"
    );
    assert!(
        store.object(other_day).is_some(),
        "other arrival days untouched"
    );
    let parquet: Vec<_> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("processed/") && k.ends_with(".parquet"))
        .collect();
    assert_eq!(parquet.len(), 3);
    let manifest = store
        .object(&Prefixes::default().manifest_key(day()))
        .expect("the run records what it consumed");
    let manifest = manifest::Manifest::from_json(&manifest).unwrap();
    assert_eq!((manifest.staging.len(), manifest.files), (1, second.files));
}

#[tokio::test]
async fn hostile_languages_stay_in_their_folder() {
    let store = MemoryObjectStore::default();
    stage(
        &store,
        "shardId-000000000000",
        &[
            (1, event_with_language(1, "../x")),
            (2, event_with_language(2, "a/b=c%")),
        ],
    )
    .await;
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!(
        report.files,
        [
            "processed/year=2024/month=04/day=11/language=..%2Fx/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=a%2Fb%3Dc%25/part-20240411-00000.parquet",
        ]
    );
}

#[tokio::test]
async fn corrupt_lines_are_quarantined_and_the_rest_compacted() {
    let store = MemoryObjectStore::default();
    let key = stage(
        &store,
        "shardId-000000000000",
        &[(1, event_with_language(1, "lang_en"))],
    )
    .await;
    let mut body = store.object(&key).unwrap().to_vec();
    body.extend_from_slice(b"{\"event_uuid\": broken\n");
    body.extend_from_slice(&staging_body(
        "shardId-000000000000",
        &[(3, event_with_language(3, "lang_en"))],
    ));
    store.put(&key, Bytes::from(body)).await.unwrap();
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!(
        (
            report.rows_written,
            report.quarantined_lines,
            report.input_events
        ),
        (2, 1, 3)
    );
    let quarantine_key = Prefixes::default().compaction_quarantine_key(&key);
    let line: serde_json::Value =
        serde_json::from_slice(&store.object(&quarantine_key).unwrap()).unwrap();
    assert_eq!(line["reason"], "invalid_staging_line");
    assert_eq!(line["line_number"], 2);
    assert_eq!(line["source_key"], key.as_str());
}

#[tokio::test]
async fn an_empty_day_writes_nothing_and_an_expired_day_is_not_wiped() {
    let store = MemoryObjectStore::default();
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!(
        (
            report.input_objects,
            report.rows_written,
            report.files.len()
        ),
        (0, 0, 0)
    );
    store
        .put(
            "processed/year=2024/month=04/day=11/language=en/part-20240411-00000.parquet",
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    assert!(matches!(
        compact.run(day()).await,
        Err(CompactError::Refused { .. })
    ));
}

#[tokio::test]
async fn big_partitions_roll_over_into_numbered_parts_written_in_multipart() {
    let store = MemoryObjectStore::default();
    let events: Vec<_> = (1..=3000)
        .map(|s| (s, event_with_language(s, "lang_en")))
        .collect();
    stage(&store, "shardId-000000000000", &events).await;
    let (mut compact, _) = compactor(&store);
    compact.settings = Settings {
        batch_rows: 256,
        row_group_rows: 512,
        file_bytes: 20_000,
        part_size: 4096,
        memory_budget: 1,
        ..Settings::default()
    };
    let report = compact.run(day()).await.unwrap();
    // With a one-byte memory budget every row is flushed as its own row group, and a file
    // reaches the 20,000 bytes that close it at its 16th: 187 files of 16 rows and one of 8.
    let rows: Vec<usize> = report
        .files
        .iter()
        .map(|f| read_parquet(&store, f).iter().map(|b| b.num_rows()).sum())
        .collect();
    let mut expected = vec![16; 187];
    expected.push(8);
    assert_eq!(rows, expected);
    assert!(report
        .files
        .iter()
        .enumerate()
        .all(|(i, f)| f.ends_with(&format!("part-20240411-{i:05}.parquet"))));
}

#[tokio::test]
async fn interleaved_batches_of_one_shard_keep_every_event_once() {
    // ParallelizationFactor 2: one shard's records in two concurrent batches split by partition
    // key, so the two objects' sequence numbers interleave; then a redelivery of part of the first.
    let store = MemoryObjectStore::default();
    let shard = "shardId-000000000000";
    stage(&store, shard, &en(&[10, 12, 14])).await;
    stage(&store, shard, &en(&[11, 13, 15])).await;
    stage(&store, shard, &en(&[12, 14])).await;
    // Arrival times that go backwards across a minute boundary within the shard.
    let next_minute = ARRIVAL_MS - ARRIVAL_MS % 60_000 + 60_000;
    stage_at(&store, shard, &en(&[20, 22]), next_minute).await;
    stage_at(&store, shard, &en(&[21, 23]), next_minute - 1).await;
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!((report.input_objects, report.input_events), (5, 12));
    assert_eq!((report.rows_written, report.duplicates_removed), (10, 2));
    let expected: Vec<String> = [10, 11, 12, 13, 14, 15, 20, 21, 22, 23]
        .into_iter()
        .map(uuid)
        .collect();
    assert_eq!(sorted_ids(&store, &report.files), expected);
}

mod failures;
mod reruns;
