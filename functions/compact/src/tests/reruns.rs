//! Re-runs, late data, hostile languages, large events, the lease and the catalogue.

use super::*;

#[tokio::test]
async fn a_rerun_after_staging_partly_expired_refuses_and_keeps_the_lake() {
    let store = MemoryObjectStore::default();
    let shard = "shardId-000000000000";
    let first = stage(&store, shard, &en(&[1, 2])).await;
    stage(&store, shard, &en(&[3, 4])).await;
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!(report.rows_written, 4);
    let lake_before: Vec<_> = report.files.iter().map(|f| store.object(f)).collect();

    // Lifecycle expiry took the first object, not the second.
    store.delete(&[first]).await.unwrap();
    let refused = compact.run(day()).await.unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, CompactError::Refused { .. }), "{message}");
    assert!(message.contains("1 of the 2 staging objects"), "{message}");
    assert!(message.contains("\"force\":true"), "{message}");
    let lake_after: Vec<_> = report.files.iter().map(|f| store.object(f)).collect();
    assert_eq!(lake_after, lake_before, "the lake is untouched");
    assert_eq!(
        sorted_ids(&store, &report.files),
        (1..=4).map(uuid).collect::<Vec<_>>()
    );

    // Asked explicitly, it rebuilds from what is left.
    let forced = compact
        .handle(&json!({"day": DAY, "force": true}))
        .await
        .unwrap();
    assert_eq!(forced.rows_written, 2);
    assert_eq!(sorted_ids(&store, &forced.files), [uuid(3), uuid(4)]);
}

#[tokio::test]
async fn the_scheduled_run_brings_late_data_of_earlier_days_into_the_lake() {
    let store = MemoryObjectStore::default();
    let shard = "shardId-000000000000";
    stage(&store, shard, &en(&[1, 2])).await;
    let (compact, metrics) = compactor(&store);
    let on_time = compact.run(day()).await.unwrap();
    assert_eq!(on_time.rows_written, 2);

    // A shard that was behind at midnight: records that arrived on the day, ingested after it was
    // compacted.
    stage(&store, shard, &en(&[3, 4, 5])).await;
    let two_days_later = json!({"time": "2024-04-13T00:15:00Z", "source": "aws.events"});
    let report = compact.handle(&two_days_later).await.unwrap();
    assert_eq!(report.day, "2024-04-12");
    assert_eq!(report.late_objects, 1);
    assert_eq!(report.recompacted.len(), 1);
    let again = &report.recompacted[0];
    assert_eq!((again.day.as_str(), again.rows_written), (DAY, 5));
    assert_eq!(
        sorted_ids(&store, &again.files),
        (1..=5).map(uuid).collect::<Vec<_>>()
    );
    assert_eq!(metrics.total(compact_metrics::DAYS_RECOMPACTED), 1.0);
    assert_eq!(metrics.total(compact_metrics::LATE_OBJECTS_FOUND), 1.0);
    let response = serde_json::to_value(&report).unwrap();
    assert_eq!(response["recompacted"][0]["day"], DAY);

    // Nothing changed since: the next run compacts nothing again.
    let quiet = compact.handle(&two_days_later).await.unwrap();
    assert!(quiet.recompacted.is_empty() && quiet.late_objects == 0);
    assert!(serde_json::to_value(&quiet)
        .unwrap()
        .get("recompacted")
        .is_none());
}

#[tokio::test]
async fn late_data_of_a_partly_expired_day_is_reported_not_compacted() {
    let store = MemoryObjectStore::default();
    let shard = "shardId-000000000000";
    let first = stage(&store, shard, &en(&[1, 2])).await;
    let (compact, _) = compactor(&store);
    let on_time = compact.run(day()).await.unwrap();
    store.delete(&[first]).await.unwrap();
    stage(&store, shard, &en(&[3])).await;
    let report = compact
        .handle(&json!({"time": "2024-04-13T00:15:00Z"}))
        .await
        .unwrap();
    assert!(report.recompacted.is_empty());
    assert_eq!(report.not_recompacted.len(), 1);
    assert_eq!(report.not_recompacted[0].day, DAY);
    assert_eq!(sorted_ids(&store, &on_time.files), [uuid(1), uuid(2)]);
}

#[tokio::test]
async fn a_language_that_cannot_name_a_folder_goes_to_the_invalid_partition() {
    let store = MemoryObjectStore::default();
    let long = "x".repeat(2000);
    let numeric = br#"{"event_uuid":"00000000-0000-4000-8000-000000000003","created_at":1712844605,"event_name":"user:login","event_specifics":{"device":"iOS","language_id":5}}"#.to_vec();
    stage(
        &store,
        "shardId-000000000000",
        &[(1, event_with_language(1, &long)), (3, numeric)],
    )
    .await;
    let (compact, _) = compactor(&store);
    let report = compact.run(day()).await.unwrap();
    assert_eq!(
        report.files,
        ["processed/year=2024/month=04/day=11/language=__INVALID_LANGUAGE__/part-20240411-00000.parquet"]
    );
    let rows = read_parquet(&store, &report.files[0]);
    assert_eq!(column_strings(&rows, "language_id"), [Some(long), None]);
    assert_eq!(
        column_strings(&rows, "extra_specifics")[1].as_deref(),
        Some(r#"{"language_id":5}"#)
    );
}

#[tokio::test]
async fn large_events_are_encoded_by_bytes_not_only_by_row_count() {
    // Kinesis takes records of up to 1 MiB: 48 events of 256 KiB are 12 MiB in one partition,
    // far below the row count that would encode them.
    let store = MemoryObjectStore::default();
    let big = "y".repeat(256 << 10);
    let events: Vec<(u64, Vec<u8>)> = (1..=48)
        .map(|n| {
            let json = format!(
                r#"{{"event_uuid":"{}","created_at":1712844605,"event_name":"game:resumed","event_specifics":{{"language_id":"lang_en","user_location":"{big}"}}}}"#,
                uuid(n)
            );
            (n, json.into_bytes())
        })
        .collect();
    stage(&store, "shardId-000000000000", &events).await;
    let (mut compact, _) = compactor(&store);
    compact.settings.batch_bytes = 1 << 20;
    let report = compact.run(day()).await.unwrap();
    assert_eq!(report.rows_written, 48);
    // One batch being gathered, and at most BATCHES_IN_FLIGHT batches' bytes sent and not yet
    // encoded (decoding runs ahead of encoding by that much), each up to one event past its bound:
    // about 5 MiB of the 12 MiB staged.
    let batches = 1 + crate::run::BATCHES_IN_FLIGHT;
    let bound = batches * (compact.settings.batch_bytes + (300 << 10));
    assert!(
        report.peak_buffered_bytes <= bound,
        "{} bytes buffered, bound {bound}",
        report.peak_buffered_bytes
    );
}

#[tokio::test]
async fn a_run_refuses_while_another_holds_the_lease_and_gives_its_own_back() {
    let store = MemoryObjectStore::default();
    stage(&store, "shardId-000000000000", &en(&[1, 2, 3])).await;
    let (compact, _) = compactor(&store);
    let lease_key = Prefixes::default().compaction_lease_key();
    let other = lease::LeaseRecord::new("another run", time::now_micros(), lease::LEASE_MICROS);
    store
        .put(&lease_key, Bytes::from(other.to_json()))
        .await
        .unwrap();

    let error = compact.handle(&json!({ "day": DAY })).await.unwrap_err();
    let CompactError::Refused { why, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        why.contains("another compaction (another run) holds the lease"),
        "{why}"
    );
    assert_eq!(store.keys().len(), 2, "the refused run wrote something");

    // Once the holder is done, the run goes ahead and leaves no lease behind, whether it
    // succeeds or fails.
    store
        .delete(std::slice::from_ref(&lease_key))
        .await
        .unwrap();
    let report = compact.handle(&json!({ "day": DAY })).await.unwrap();
    assert_eq!(report.rows_written, 3);
    assert!(store.object(&lease_key).is_none());
    // A run that fails (here: its staging expired, and it refuses to shrink the lake) gives the
    // lease back too.
    let staging: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("staging/"))
        .collect();
    store.delete(&staging).await.unwrap();
    let error = compact.handle(&json!({ "day": DAY })).await.unwrap_err();
    assert!(error.to_string().contains("are gone"), "{error}");
    assert!(store.object(&lease_key).is_none());
}

#[tokio::test]
async fn every_partition_written_is_registered_in_the_catalogue_once() {
    let store = MemoryObjectStore::default();
    let login = json!({"event_uuid": uuid(3), "created_at": 1712844605, "event_name": "user:login",
                       "event_specifics": {"device": "iOS", "user_location": "Paris"}});
    stage(
        &store,
        "shardId-000000000000",
        &[
            (1, event_with_language(1, "lang_en")),
            (2, event_with_language(2, "a/b=c%")),
            (3, login.to_string().into_bytes()),
            (4, event_with_language(4, "lang_en")),
        ],
    )
    .await;
    let (mut compact, _) = compactor(&store);
    let catalog = Arc::new(catalog::MemoryCatalog::default());
    compact.catalog = Some(catalog.clone());
    compact.run(day()).await.unwrap();
    compact.run(day()).await.unwrap();

    let registered: Vec<(String, String)> = catalog
        .partitions
        .lock()
        .unwrap()
        .iter()
        .map(|p| (catalog::partition_values(p).join("|"), p.folder.clone()))
        .collect();
    let dir = "processed/year=2024/month=04/day=11";
    assert_eq!(
        registered,
        [
            (
                "2024|04|11|__HIVE_DEFAULT_PARTITION__".to_string(),
                format!("{dir}/language=__HIVE_DEFAULT_PARTITION__/")
            ),
            (
                "2024|04|11|a/b=c%".to_string(),
                format!("{dir}/language=a%2Fb%3Dc%25/")
            ),
            (
                "2024|04|11|lang_en".to_string(),
                format!("{dir}/language=lang_en/")
            ),
        ]
    );
}
