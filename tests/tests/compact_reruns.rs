//! The built `compact` binary again and again: late data, a crash mid-run, multipart files, the
//! lease between two runs, and the Glue partitions Athena reads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use localstack::lambda_runtime_api::{LambdaProcess, Outcome};
use pipeline::fixtures::{event_with_language, scrambled_uuid, staging_lines, ARRIVAL_MS};
use pipeline::layout::{Minute, Prefixes};
use pipeline::time::Date;
use pipeline_tests::{binary, python_json, with_specifics, Lake};
use serde_json::{json, Value};

const DAY: &str = "2024-04-11";

fn day() -> Date {
    Date::parse(DAY).unwrap()
}

async fn stage(lake: &Lake, shard: &str, minute_offset: i64, events: &[(u64, Vec<u8>)]) {
    let arrival = ARRIVAL_MS + minute_offset * 60_000;
    let key = Prefixes::default().staging_key(
        Minute::of_micros(arrival * 1000),
        shard,
        &events[0].0.to_string(),
    );
    lake.put(&key, staging_lines(shard, events, arrival)).await;
}

fn events(range: std::ops::RangeInclusive<u64>, language: &str) -> Vec<(u64, Vec<u8>)> {
    range
        .map(|n| (n, event_with_language(n, language)))
        .collect()
}

/// Every row of the lake is a distinct event, and there are `expected` of them.
async fn assert_each_event_once(lake: &Lake, expected: u64) {
    let view = lake.inspect_processed().await;
    assert_eq!(
        view["duckdb"]["distinct_ids"],
        json!([expected, expected]),
        "{}",
        view["duckdb"]
    );
}

#[tokio::test]
async fn late_staging_data_is_included_when_the_day_is_compacted_again() {
    let lake = Lake::new("compact-late").await;
    stage(&lake, "shardId-000000000000", 0, &events(1..=20, "lang_en")).await;
    let compact = lake.compact().await;
    let first = compact.run(day()).await.unwrap();
    assert_eq!(first.rows_written, 20);
    stage(
        &lake,
        "shardId-000000000000",
        500,
        &events(21..=25, "lang_de"),
    )
    .await;
    stage(
        &lake,
        "shardId-000000000001",
        501,
        &events(26..=30, "lang_en"),
    )
    .await;
    let second = compact.run(day()).await.unwrap();
    assert_eq!((second.input_objects, second.rows_written), (3, 30));
    assert_eq!(second.files.len(), 2);
    assert_each_event_once(&lake, 30).await;
}

/// Every object under `prefix`, with its length and a hash of its bytes.
async fn snapshot(lake: &Lake, prefix: &str) -> BTreeMap<String, (usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut objects = BTreeMap::new();
    for key in lake.keys(prefix).await {
        let body = lake.object(&key).await;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        objects.insert(key, (body.len(), hasher.finish()));
    }
    objects
}

#[tokio::test]
async fn a_crash_mid_compaction_keeps_the_old_files_whole_and_a_rerun_leaves_each_event_once() {
    let lake = Lake::new("compact-crash").await;
    // An earlier, complete run of the day: two partitions.
    stage(&lake, "shardId-000000000000", 0, &events(1..=10, "lang_en")).await;
    stage(
        &lake,
        "shardId-000000000001",
        1,
        &events(31..=35, "lang_de"),
    )
    .await;
    let compact = lake.compact().await;
    let first = compact.run(day()).await.unwrap();
    let dir = "processed/year=2024/month=04/day=11";
    assert_eq!(
        first.files,
        [
            format!("{dir}/language=lang_de/part-20240411-00000.parquet"),
            format!("{dir}/language=lang_en/part-20240411-00000.parquet"),
        ]
    );
    let before = snapshot(&lake, "processed/").await;
    // Late data arrives; the next run dies completing its third file. Partitions are finished in
    // key order (lang_de, lang_en, lang_fr), so the crash point is the same every time.
    stage(
        &lake,
        "shardId-000000000000",
        5,
        &events(11..=20, "lang_fr"),
    )
    .await;
    stage(
        &lake,
        "shardId-000000000001",
        6,
        &events(21..=30, "lang_en"),
    )
    .await;
    let mut crashing = lake.compact().await;
    crashing.objects = lake.sabotaged_store("language=lang_fr", false).await;
    let error = crashing.run(day()).await.unwrap_err();
    assert!(error.to_string().contains("language=lang_fr"), "{error}");

    // After the failure: every old file and the manifest are byte for byte what they were. The two
    // new files that completed before it (lang_de, lang_en) were deleted by the failed run, so
    // readers never see them beside the old files they were to replace (each event twice); a
    // process that dies without that clean-up leaves them, and the re-run below replaces them.
    let after = snapshot(&lake, "processed/").await;
    for (key, body) in &before {
        assert_eq!(
            after.get(key),
            Some(body),
            "{key} changed before the run completed"
        );
    }
    let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(new, Vec::<&String>::new());

    // Re-run: the result is the same as if nothing had happened.
    let report = compact.run(day()).await.unwrap();
    assert_eq!(report.rows_written, 35);
    assert_eq!(
        report.files,
        [
            format!("{dir}/language=lang_de/part-20240411-50000.parquet"),
            format!("{dir}/language=lang_en/part-20240411-50000.parquet"),
            format!("{dir}/language=lang_fr/part-20240411-50000.parquet"),
        ]
    );
    assert_eq!(lake.keys("processed/year=").await, report.files);
    assert_each_event_once(&lake, 35).await;
    // And the run after that writes the other bank, leaving the same lake.
    let again = compact.run(day()).await.unwrap();
    assert_eq!(
        again.files,
        report
            .files
            .iter()
            .map(|k| k.replace("-50000.", "-00000."))
            .collect::<Vec<_>>()
    );
    assert_eq!(lake.keys("processed/year=").await, again.files);
    assert_each_event_once(&lake, 35).await;
}

#[tokio::test]
async fn big_files_go_up_as_s3_multipart_uploads() {
    let lake = Lake::new("compact-multipart").await;
    const EVENTS: u64 = 150_000;
    let body: Vec<(u64, Vec<u8>)> = (1..=EVENTS)
        .map(|n| {
            let event = json!({
                "event_uuid": scrambled_uuid(n), "created_at": 1712844605.5, "event_name": "game:resumed",
                "event_specifics": {"language_id": "lang_en", "session_id": scrambled_uuid(n + EVENTS), "score": n % 100}
            });
            (n, event.to_string().into_bytes())
        })
        .collect();
    stage(&lake, "shardId-000000000000", 0, &body).await;
    let mut compact = lake.compact().await;
    compact.settings.part_size = pipeline::ports::MIN_PART_SIZE;
    compact.settings.row_group_rows = 20_000;
    let started = Instant::now();
    let report = compact.run(day()).await.unwrap();
    eprintln!(
        "compacted {EVENTS} events in {:.2} s (debug build)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report.rows_written, EVENTS);
    assert!(
        report.parquet_bytes > pipeline::ports::MIN_PART_SIZE as u64,
        "the file ({} bytes) must need more than one part",
        report.parquet_bytes
    );
    let head = lake
        .s3
        .head_object()
        .bucket(&lake.bucket)
        .key(&report.files[0])
        .send()
        .await
        .unwrap();
    // A multipart ETag ends in its number of parts: every part but the last is exactly the part
    // size.
    let parts = report
        .parquet_bytes
        .div_ceil(pipeline::ports::MIN_PART_SIZE as u64);
    assert!(
        head.e_tag().unwrap().ends_with(&format!("-{parts}\"")),
        "a {}-byte file in {parts} parts: {:?}",
        report.parquet_bytes,
        head.e_tag()
    );
    let view = lake.inspect_processed().await;
    assert_eq!(view["files"][0]["rows"], EVENTS);
    // 150,000 rows in row groups of at most 20,000: eight.
    assert_eq!(view["files"][0]["row_groups"], 8);
}

#[tokio::test]
async fn a_second_run_refuses_while_the_first_holds_the_lease_and_a_dead_runs_lease_expires() {
    let lake = Lake::new("compact-lease").await;
    stage(&lake, "shardId-000000000000", 0, &events(1..=20, "lang_en")).await;
    let lease_key = Prefixes::default().compaction_lease_key();

    // The first run takes the lease, then hangs writing its first Parquet file.
    let mut first = lake.compact().await;
    first.objects = lake.sabotaged_store("/part-", true).await;
    let first = tokio::spawn(async move { first.run(day()).await });
    for _ in 0..100 {
        if !lake.keys(&lease_key).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lake.keys(&lease_key).await, vec![lease_key.to_string()]);

    // The built binary, invoked for the same day meanwhile, refuses and writes nothing.
    let mut second = LambdaProcess::spawn(&binary("compact"), "compact", &lake.env())
        .await
        .unwrap();
    // Typed for Lambda: a Step Functions Retry or Catch can match `Refused`.
    let refused = |outcome: Outcome| match outcome {
        Outcome::FunctionError(error) => {
            assert_eq!(error["errorType"], "Refused", "{error}");
            error["errorMessage"].as_str().unwrap().to_string()
        }
        Outcome::Response(report) => panic!("ran beside the lease holder: {report}"),
    };
    let message = refused(
        second
            .invoke(&json!({"day": DAY}), Duration::from_secs(60))
            .await
            .unwrap(),
    );
    assert!(
        message.starts_with(&format!(
            "refusing to compact {DAY}: another compaction (process "
        )) && message.contains(&format!("holds the lease {lease_key} since ")),
        "{message}"
    );
    assert!(lake.keys("processed/year=").await.is_empty());

    // The first run dies without giving the lease back: runs are refused until it expires...
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let message = refused(
        second
            .invoke(&json!({"day": DAY}), Duration::from_secs(60))
            .await
            .unwrap(),
    );
    assert!(message.contains("holds the lease"), "{message}");

    // ...and once it has (here: aged as 17 minutes would age it), the next run takes it over,
    // compacts the day and gives the lease back.
    let expired = compact::lease::LeaseRecord::new(
        "a run that died",
        pipeline::time::now_micros() - 17 * 60_000_000,
        compact::lease::LEASE_MICROS,
    );
    lake.put(&lease_key, expired.to_json()).await;
    let Outcome::Response(report) = second
        .invoke(&json!({"day": DAY}), Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("an expired lease was not taken over")
    };
    assert_eq!(report["rows_written"], 20);
    assert!(lake.keys(&lease_key).await.is_empty());
    assert_each_event_once(&lake, 20).await;
}

#[tokio::test]
async fn every_partition_compaction_writes_is_in_the_glue_table_and_the_readme_query_reads_it() {
    let lake = Lake::new("compact-glue").await;
    let (database, table) = (format!("db_{}", lake.bucket.replace('-', "_")), "events");
    python_json("glue_table.py", &["create", &database, table, &lake.bucket]);
    let login = |n: u64| {
        with_specifics(
            n,
            "user:login",
            json!(1712844605),
            json!({"device": "iOS", "user_location": "Paris"}),
        )
    };
    stage(
        &lake,
        "shardId-000000000000",
        0,
        &[
            (1, event_with_language(1, "lang_en")),
            (2, login(2)),
            (3, event_with_language(3, "a/b=c%")),
            (4, event_with_language(4, "lang_xx_not_in_any_catalogue")),
            (5, login(5)),
        ],
    )
    .await;
    let mut env = lake.env();
    env.push(("GLUE_DATABASE".into(), database.clone()));
    env.push(("GLUE_TABLE".into(), table.into()));
    let mut compact = LambdaProcess::spawn(&binary("compact"), "compact", &env)
        .await
        .unwrap();
    // Twice: registering is idempotent.
    for _ in 0..2 {
        let outcome = compact
            .invoke(&json!({"day": DAY}), Duration::from_secs(60))
            .await
            .unwrap();
        let Outcome::Response(report) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(report["rows_written"], 5);
    }

    let partitions = python_json("glue_table.py", &["partitions", &database, table]);
    let dir = format!("s3://{}/processed/year=2024/month=04/day=11", lake.bucket);
    let serde = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
    let expected: Vec<Value> = [
        ("__HIVE_DEFAULT_PARTITION__", "__HIVE_DEFAULT_PARTITION__"),
        ("a/b=c%", "a%2Fb%3Dc%25"),
        ("lang_en", "lang_en"),
        ("lang_xx_not_in_any_catalogue", "lang_xx_not_in_any_catalogue"),
    ]
    .iter()
    .map(|(value, folder)| {
        json!({"values": ["2024", "04", "11", value], "location": format!("{dir}/language={folder}/"),
               "serde": serde, "input_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"})
    })
    .collect();
    assert_eq!(partitions, json!(expected));

    // Every registered location holds files, and the README's query shape reads them all,
    // the default partition as NULL.
    let view = lake.inspect_processed().await;
    assert_eq!(
        view["duckdb"]["readme_query"],
        json!([
            ["a/b=c%", "game", 1],
            ["lang_en", "game", 1],
            ["lang_xx_not_in_any_catalogue", "game", 1],
            [null, "user", 2]
        ])
    );
    assert_eq!(view["duckdb"]["no_language"], 2);
}
