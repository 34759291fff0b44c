//! `compact` against the local emulator: both built binaries end to end, Parquet read back with
//! pyarrow and DuckDB, and the errors Lambda sees (`compact_reruns.rs` has the runs again).

use std::collections::BTreeMap;
use std::time::Duration;

use localstack::lambda_runtime_api::{LambdaProcess, Outcome};
use pipeline::fixtures::{event_with_language, record, uuid, ARRIVAL_MS};
use pipeline::metric_names::{compact as compact_metrics, COLD_START};
use pipeline_tests::{
    assert_each_log_line_names_its_invocation, binary, kinesis_payload, with_specifics, Lake,
};
use serde_json::{json, Value};

const DAY: &str = "2024-04-11";

/// A batch covering what the lake must get right.
fn mixed_records() -> Vec<pipeline::lambda_payload::StreamRecord> {
    let mut data = vec![
        event_with_language(1, "lang_en"),
        event_with_language(2, "lang_en"),
        event_with_language(3, "lang_fr"),
        event_with_language(4, "../x"),
        event_with_language(5, "a/b=c%"),
        // No language_id: Hive's default partition.
        with_specifics(
            6,
            "user:login",
            json!(1712844600),
            json!({"device": "Android", "login_method": "apple"}),
        ),
        // Created the day before it arrived: goes to that day's partition.
        with_specifics(
            7,
            "game:paused",
            json!("2024-04-10T23:59:58.25Z"),
            json!({"language_id": "lang_en", "score": 5}),
        ),
        // Undeclared fields travel in extra_specifics.
        with_specifics(
            8,
            "game:completed",
            json!(1712844601.5),
            json!({"language_id": "lang_fr", "won": true, "duration_seconds": 61.5, "mood": "great", "tags": ["a"]}),
        ),
        event_with_language(2, "lang_en"), // a producer retry: dropped by ingest
        b"not json".to_vec(),              // quarantined by ingest
    ];
    data.extend((9..=12).map(|n| event_with_language(n, "lang_en")));
    data.into_iter()
        .enumerate()
        .map(|(i, d)| record(0, 100 + i as u64, ARRIVAL_MS, d))
        .collect()
}

#[tokio::test]
async fn both_binaries_end_to_end_read_back_by_pyarrow_and_duckdb() {
    let lake = Lake::new("compact-e2e").await;
    let mut ingest = LambdaProcess::spawn(&binary("ingest"), "ingest", &lake.env())
        .await
        .unwrap();
    let records = mixed_records();
    let (payload, _) = kinesis_payload(&records);
    let outcome = ingest
        .invoke(&payload, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    // Lambda redelivers the tail of the batch (as after a reported failure): staged twice.
    let (redelivery, _) = kinesis_payload(&records[10..]);
    ingest
        .invoke(&redelivery, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(lake.keys("staging/").await.len(), 2);

    let mut compact = LambdaProcess::spawn(&binary("compact"), "compact", &lake.env())
        .await
        .unwrap();
    let Outcome::Response(report) = compact
        .invoke(&json!({"day": DAY}), Duration::from_secs(120))
        .await
        .unwrap()
    else {
        panic!("compact failed: {}", compact.stderr_text())
    };
    assert_eq!(report["day"], DAY);
    assert_eq!(report["input_objects"], 2);
    assert_eq!(report["input_events"], 12 + 4);
    assert_eq!(report["duplicates_removed"], 4);
    assert_eq!(report["rows_written"], 12);
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "processed/year=2024/month=04/day=10/language=lang_en/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=..%2Fx/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=__HIVE_DEFAULT_PARTITION__/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=a%2Fb%3Dc%25/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=lang_en/part-20240411-00000.parquet",
            "processed/year=2024/month=04/day=11/language=lang_fr/part-20240411-00000.parquet",
        ]
    );
    assert_eq!(lake.keys("processed/year=").await, files);
    let mut parquet_bytes = 0;
    for file in &files {
        parquet_bytes += lake.object(file).await.len();
    }
    assert_eq!(
        lake.keys("processed/_manifests/").await,
        ["processed/_manifests/arrival_day=2024-04-11.json"],
        "the run records what it consumed"
    );

    let lakeview = lake.inspect_processed().await;
    let file = &lakeview["files"][0];
    assert_eq!(file["compression"], "ZSTD");
    let schema = &file["schema"];
    assert_eq!(schema["event_uuid"], "string");
    assert_eq!(schema["created_at"], "timestamp[us, tz=UTC]");
    assert_eq!(schema["received_at"], "timestamp[us, tz=UTC]");
    assert_eq!(schema["score"], "int64");
    assert_eq!(schema["attempts"], "int64");
    assert_eq!(schema["duration_seconds"], "double");
    assert_eq!(schema["won"], "bool");
    assert_eq!(schema["device"], "string");
    assert_eq!(schema["extra_specifics"], "string");
    assert_eq!(file["nullable"]["score"], true);
    assert_eq!(file["nullable"]["event_uuid"], false);

    let rows: BTreeMap<String, &Value> = lakeview["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["event_uuid"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(rows.len(), 12, "every written event once");
    let first = rows[&uuid(1)];
    assert_eq!(first["created_at"], "2024-04-11T14:10:05.951235+00:00");
    assert_eq!(first["received_at"], "2024-04-11T14:10:06.012000+00:00");
    assert_eq!(
        (
            first["event_type"].as_str(),
            first["event_subtype"].as_str()
        ),
        (Some("game"), Some("resumed"))
    );
    assert_eq!(first["score"], 1);
    assert_eq!(first["extra_specifics"], Value::Null);
    let late = rows[&uuid(7)];
    assert!(late["_file"]
        .as_str()
        .unwrap()
        .contains("day=10/language=lang_en"));
    assert_eq!(late["created_at"], "2024-04-10T23:59:58.250000+00:00");
    let completed = rows[&uuid(8)];
    assert_eq!(completed["won"], true);
    assert_eq!(completed["duration_seconds"], 61.5);
    let extra: Value =
        serde_json::from_str(completed["extra_specifics"].as_str().unwrap()).unwrap();
    assert_eq!(extra, json!({"mood": "great", "tags": ["a"]}));
    let login = rows[&uuid(6)];
    assert_eq!(login["device"], "Android");
    assert_eq!(login["language_id"], Value::Null);

    // DuckDB, reading the Hive layout, gets the original values back: unescaped, and null for
    // the default partition.
    assert_eq!(
        lakeview["duckdb"]["per_partition"],
        json!([
            [2024, "04", 10, "lang_en", 1],
            [2024, "04", 11, "../x", 1],
            [2024, "04", 11, "a/b=c%", 1],
            [2024, "04", 11, "lang_en", 6],
            [2024, "04", 11, "lang_fr", 2],
            [2024, "04", 11, null, 1],
        ])
    );
    assert_eq!(lakeview["duckdb"]["distinct_ids"], json!([12, 12]));

    // The daily schedule compacts the day before its time; a re-run gives the same result.
    let scheduled = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "time": "2024-04-12T00:15:00Z", "detail": {}});
    let Outcome::Response(again) = compact
        .invoke(&scheduled, Duration::from_secs(120))
        .await
        .unwrap()
    else {
        panic!("scheduled run failed: {}", compact.stderr_text())
    };
    // The same files, in the other bank of part numbers (the run overwrote none of the first's).
    let mut expected = report.clone();
    let other_bank: Vec<String> = files
        .iter()
        .map(|f| f.replace("-00000.parquet", "-50000.parquet"))
        .collect();
    expected["files"] = json!(other_bank);
    assert_eq!(again, expected);
    assert_eq!(lake.keys("processed/year=").await, other_bank);
    assert_eq!(
        lake.keys("processed/_manifests/").await,
        ["processed/_manifests/arrival_day=2024-04-11.json"],
        "the run records what it consumed"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let emf: Vec<Value> = compact
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 2);
    assert_eq!(emf[0]["FunctionName"], "compact");
    assert_eq!(emf[0][compact_metrics::EVENTS_COMPACTED], 12.0);
    assert_eq!(emf[0][compact_metrics::DUPLICATES_REMOVED], 4.0);
    assert_eq!(emf[0][compact_metrics::PARQUET_FILES_WRITTEN], 6.0);
    assert_eq!(
        emf[0][compact_metrics::PARQUET_BYTES_WRITTEN],
        parquet_bytes as f64
    );
    assert_eq!(
        (&emf[0][COLD_START], &emf[1][COLD_START]),
        (&json!(1.0), &Value::Null)
    );
    // The re-run's metrics are the same: it wrote the same files under other names.
    for name in [
        compact_metrics::EVENTS_COMPACTED,
        compact_metrics::DUPLICATES_REMOVED,
        compact_metrics::PARQUET_FILES_WRITTEN,
        compact_metrics::PARQUET_BYTES_WRITTEN,
    ] {
        assert_eq!(emf[1][name], emf[0][name], "{name}");
    }
}

#[tokio::test]
async fn a_request_that_names_no_day_fails_with_a_clear_error() {
    let lake = Lake::new("compact-bad-request").await;
    let mut compact = LambdaProcess::spawn(&binary("compact"), "compact", &lake.env())
        .await
        .unwrap();
    for payload in [json!({"hello": "world"}), json!({"day": "11/04/2024"})] {
        let outcome = compact
            .invoke(&payload, Duration::from_secs(30))
            .await
            .unwrap();
        let Outcome::FunctionError(error) = outcome else {
            panic!("{payload} was accepted")
        };
        let message = error["errorMessage"].as_str().unwrap();
        assert!(message.starts_with("bad request: "), "{message}");
        // Typed for Lambda, not the name of a boxed Rust type.
        assert_eq!(error["errorType"], "BadRequest", "{error}");
    }
    // Every log line of the invocations names its request id.
    assert_each_log_line_names_its_invocation(&compact.stderr_text(), compact.request_ids());
}

/// Compaction lists a day by hour and the lake by month (`pipeline::ports::list_by_folder`),
/// through S3's delimiter listing: what it finds must be what one listing of the prefix finds,
/// for keys of every shape and past a page of 1,000 folders.
#[tokio::test]
async fn the_s3_adapter_lists_by_folder_what_one_listing_finds() {
    use pipeline::ports::{list_by_folder, ObjectStore};
    let lake = Lake::new("compact-list-by-folder").await;
    let mut keys: Vec<String> = [
        "day/",
        "day/a.ndjson",
        "day//z",
        "day/hour=00/minute=01/x.ndjson",
        "day/hour=00/stray.ndjson",
        "day/hour=23/minute=59/deep/er/k",
        "day/name with spaces & =%/k",
        "dayz/not-under-the-prefix",
    ]
    .map(String::from)
    .to_vec();
    keys.extend((0..1001).map(|i| format!("day/folder-{i:04}/k")));
    for some in keys.chunks(50) {
        futures::future::join_all(some.iter().map(|key| lake.put(key, b"x".to_vec()))).await;
    }
    let store = lake.s3_store().await;
    let folder = store.list_folder("day/").await.unwrap();
    assert_eq!(folder.folders.len(), 1001 + 4, "{:?}", &folder.folders[..5]);
    let whole = store.list("day/").await.unwrap();
    assert_eq!(whole.len(), keys.len() - 1);
    for depth in 0..4 {
        let by_folder = list_by_folder(&store, "day/", depth).await.unwrap();
        assert_eq!(by_folder, whole, "at depth {depth}");
    }
}

/// Both binaries set mimalloc's options before its first allocation (`.init_array`): compact's
/// first arena commits lazily and its freed pages go back at once; ingest keeps its freed pages.
/// mimalloc prints the options it started with when `MIMALLOC_VERBOSE` is set.
#[test]
fn the_binaries_start_their_allocator_with_their_own_options() {
    let options = |name: &str| {
        let output = std::process::Command::new(binary(name))
            .env_clear()
            .env("MIMALLOC_VERBOSE", "1")
            .output()
            .unwrap();
        // Without its configuration the binary stops at once, after the allocator started.
        assert!(!output.status.success(), "{name} ran without configuration");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let value = |option: &str| {
            let line = format!("option '{option}': ");
            let at = stderr
                .find(&line)
                .unwrap_or_else(|| panic!("{name}: {stderr}"));
            let rest = &stderr[at + line.len()..];
            rest[..rest.find(char::is_whitespace).unwrap()].to_string()
        };
        (value("arena_eager_commit"), value("purge_delay"))
    };
    assert_eq!(options("compact"), ("0".to_string(), "0".to_string()));
    // ingest keeps what it frees (purge delay -1, "never"); its arena commits as by default.
    assert_eq!(options("ingest"), ("2".to_string(), "-1".to_string()));
}
