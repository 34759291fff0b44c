//! What production brings, through the built binaries behind the Lambda Runtime API: arrival times
//! with any number of decimals and records whose envelope cannot be read, events an SDK indented,
//! one shard in concurrent batches, a dependency too slow for the deadline, late data, and staging
//! that expired under a day already compacted. Every event accepted into the stream reaches the
//! lake exactly once, or sits in quarantine with its raw bytes, or is reported back for retry.

use std::time::{Duration, Instant};

use bytes::Bytes;
use localstack::lambda_runtime_api::{LambdaProcess, Outcome};
use pipeline::fixtures::{event_json, event_with_language, record, uuid, ARRIVAL_MS};
use pipeline::lambda_payload::{StreamRecord, DEFAULT_STREAM_ARN};
use pipeline_tests::{binary, kinesis_payload, uuids, Lake};
use serde_json::{json, Value};

const DAY: &str = "2024-04-11";

async fn ingest_process(lake: &Lake, extra: &[(&str, &str)]) -> LambdaProcess {
    let mut env = lake.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaProcess::spawn(&binary("ingest"), "ingest", &env)
        .await
        .unwrap()
}

async fn compact_process(lake: &Lake) -> LambdaProcess {
    LambdaProcess::spawn(&binary("compact"), "compact", &lake.env())
        .await
        .unwrap()
}

async fn ingest_ok(lambda: &mut LambdaProcess, records: &[StreamRecord]) {
    let (payload, _) = kinesis_payload(records);
    ingest_text_ok(lambda, payload.to_string()).await;
}

/// Invokes ingest with this payload text and expects every record settled.
async fn ingest_text_ok(lambda: &mut LambdaProcess, payload: String) {
    let outcome = lambda
        .invoke_raw(Bytes::from(payload), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Response(json!({"batchItemFailures": []})),
        "{}",
        lambda.stderr_text()
    );
}

async fn compact_ok(lambda: &mut LambdaProcess, payload: Value) -> Value {
    match lambda
        .invoke(&payload, Duration::from_secs(120))
        .await
        .unwrap()
    {
        Outcome::Response(report) => report,
        Outcome::FunctionError(error) => panic!("compact {payload} failed: {error}"),
    }
}

/// Every event id in the lake, once each (DuckDB's count of distinct ids equals its row count).
async fn lake_ids(lake: &Lake) -> Vec<String> {
    let view = lake.inspect_processed().await;
    let [distinct, rows] = [0, 1].map(|i| view["duckdb"]["distinct_ids"][i].as_u64());
    assert_eq!(distinct, rows, "an event is in the lake twice");
    let mut ids: Vec<String> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_uuid"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn arrival_times_are_exact_and_an_unreadable_envelope_spares_its_neighbours() {
    let lake = Lake::new("envelope").await;
    let mut ingest = ingest_process(&lake, &[]).await;
    // Kinesis sends milliseconds, and a JSON float drops trailing zeros (`.75`, `.5`, `.12`);
    // some emulators send microseconds and more (`.9826107`).
    let arrivals = [
        "1712844606.75",
        "1712844606.5",
        "1712844606.12",
        "1712844606.987",
        "1712844606.9826107",
    ];
    let mut records: Vec<Value> = (0..arrivals.len() as u64)
        .map(|i| record(0, 10 + i, ARRIVAL_MS, event_json(i)).to_json(DEFAULT_STREAM_ARN))
        .collect();
    for (i, r) in records.iter_mut().enumerate() {
        r["kinesis"]["approximateArrivalTimestamp"] = json!(format!("@arrival{i}@"));
    }
    let mut unreadable = record(0, 20, ARRIVAL_MS, event_json(9)).to_json(DEFAULT_STREAM_ARN);
    unreadable["kinesis"]["data"] = json!("this is not base64!");
    records.push(unreadable.clone());
    let mut text = json!({ "Records": records }).to_string();
    for (i, arrival) in arrivals.iter().enumerate() {
        text = text.replace(&format!("\"@arrival{i}@\""), arrival);
    }

    ingest_text_ok(&mut ingest, text).await;
    let staged = lake.all_lines("staging/").await;
    let received: Vec<&str> = staged
        .iter()
        .map(|l| l["received_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        received,
        [
            "2024-04-11T14:10:06.750000Z",
            "2024-04-11T14:10:06.500000Z",
            "2024-04-11T14:10:06.120000Z",
            "2024-04-11T14:10:06.987000Z",
            "2024-04-11T14:10:06.982611Z",
        ]
    );
    let quarantined = lake.all_lines("quarantine/").await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["reason"], "invalid_envelope");
    assert_eq!(quarantined[0]["sequence_number"], "20");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(quarantined[0]["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap(), unreadable);
}

#[tokio::test]
async fn indented_and_crlf_events_reach_the_lake_as_one_line_each() {
    let lake = Lake::new("multiline").await;
    let mut ingest = ingest_process(&lake, &[]).await;
    let compact_json = |n: u64| serde_json::from_slice::<Value>(&event_json(n)).unwrap();
    let indented = serde_json::to_vec_pretty(&compact_json(1)).unwrap();
    let crlf = serde_json::to_string_pretty(&compact_json(2))
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    let tabbed = serde_json::to_string_pretty(&compact_json(3))
        .unwrap()
        .replace("  ", "\t")
        + "\r\n";
    ingest_ok(
        &mut ingest,
        &[
            record(0, 1, ARRIVAL_MS, indented),
            record(0, 2, ARRIVAL_MS, crlf),
            record(0, 3, ARRIVAL_MS, tabbed.into_bytes()),
        ],
    )
    .await;
    let keys = lake.keys("staging/").await;
    assert_eq!(keys.len(), 1);
    let body = lake.object(&keys[0]).await;
    assert_eq!(
        body.iter().filter(|&&b| b == b'\n').count(),
        3,
        "one line per event"
    );
    assert!(!body.contains(&b'\r'));

    let mut compact = compact_process(&lake).await;
    let report = compact_ok(&mut compact, json!({"day": DAY})).await;
    assert_eq!(report["rows_written"], 3);
    assert_eq!(report["quarantined_lines"], 0);
    assert!(lake.keys("quarantine/").await.is_empty());
    assert_eq!(lake_ids(&lake).await, [uuid(1), uuid(2), uuid(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_in_concurrent_batches_reaches_the_lake_once() {
    // ParallelizationFactor 2: Lambda runs one shard as two concurrent batches, split by
    // partition key, so their sequence numbers interleave within one minute.
    let lake = Lake::new("parallel-shard").await;
    let mut first = ingest_process(&lake, &[]).await;
    let mut second = ingest_process(&lake, &[]).await;
    let batch = |sequences: &[u64]| -> Vec<StreamRecord> {
        sequences
            .iter()
            .map(|&s| record(0, s, ARRIVAL_MS, event_with_language(s, "lang_en")))
            .collect()
    };
    let (a, b) = (batch(&[10, 12, 14, 16]), batch(&[11, 13, 15, 17]));
    tokio::join!(ingest_ok(&mut first, &a), ingest_ok(&mut second, &b));
    // And a redelivery of the tail of the first batch (after a reported failure).
    ingest_ok(&mut first, &a[2..]).await;
    assert_eq!(lake.keys("staging/").await.len(), 3);

    let mut compact = compact_process(&lake).await;
    let report = compact_ok(&mut compact, json!({"day": DAY})).await;
    assert_eq!(report["input_events"], 10);
    assert_eq!(report["duplicates_removed"], 2);
    assert_eq!(report["rows_written"], 8);
    assert_eq!(
        lake_ids(&lake).await,
        (10..=17).map(uuid).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_dynamodb_that_never_answers_gets_failures_reported_before_the_deadline() {
    let lake = Lake::new("slow-dynamodb").await;
    // Accepts connections and never answers, as a hung dependency does.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            connections.push(socket);
        }
    });
    let mut ingest = ingest_process(&lake, &[("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)]).await;
    let (payload, _) = kinesis_payload(&[
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, b"not json".to_vec()),
        record(0, 3, ARRIVAL_MS, event_json(3)),
    ]);
    let timeout = Duration::from_secs(8);
    let started = Instant::now();
    let outcome = ingest.invoke(&payload, timeout).await.unwrap_or_else(|e| {
        panic!(
            "no answer within the invocation's time-out: {e}\n{}",
            ingest.stderr_text()
        )
    });
    assert!(started.elapsed() < timeout);
    assert_eq!(
        outcome,
        Outcome::Response(json!({"batchItemFailures": [{"itemIdentifier": "1"}]}))
    );
    assert!(lake.keys("staging/").await.is_empty());
    held.abort();
}

#[tokio::test]
async fn late_data_reaches_the_lake_by_itself_and_expired_staging_never_shrinks_it() {
    let lake = Lake::new("late-data").await;
    let mut ingest = ingest_process(&lake, &[]).await;
    let mut compact = compact_process(&lake).await;
    let on_time: Vec<StreamRecord> = (1..=4)
        .map(|n| record(0, n, ARRIVAL_MS, event_json(n)))
        .collect();
    ingest_ok(&mut ingest, &on_time).await;
    let report = compact_ok(&mut compact, json!({"day": DAY})).await;
    assert_eq!(report["rows_written"], 4);

    // Records that arrived on the day but were ingested after it was compacted (a shard that was
    // behind at midnight), plus a redelivery of one already compacted.
    let late: Vec<StreamRecord> = (4..=6)
        .map(|n| record(0, n, ARRIVAL_MS + 3_600_000, event_json(n)))
        .collect();
    ingest_ok(&mut ingest, &late).await;
    let next_schedule = json!({"time": "2024-04-12T00:15:00Z", "source": "aws.scheduler"});
    let report = compact_ok(&mut compact, next_schedule.clone()).await;
    assert_eq!(report["day"], "2024-04-11");
    assert_eq!(report["rows_written"], 6, "the scheduled day itself");
    let next_next = json!({"time": "2024-04-13T00:15:00Z"});
    let report = compact_ok(&mut compact, next_next.clone()).await;
    assert_eq!(report["day"], "2024-04-12");
    assert!(
        report.get("recompacted").is_none(),
        "nothing changed since: {report}"
    );
    assert_eq!(lake_ids(&lake).await, (1..=6).map(uuid).collect::<Vec<_>>());

    // More late data, then the schedule two days on brings it in.
    ingest_ok(
        &mut ingest,
        &[record(0, 9, ARRIVAL_MS + 7_200_000, event_json(9))],
    )
    .await;
    let report = compact_ok(&mut compact, next_next).await;
    assert_eq!(report["recompacted"][0]["day"], DAY, "{report}");
    assert_eq!(report["recompacted"][0]["rows_written"], 7);
    assert_eq!(report["late_objects"], 1);
    let mut expected: Vec<String> = (1..=6).map(uuid).collect();
    expected.push(uuid(9));
    assert_eq!(lake_ids(&lake).await, expected);

    // Lifecycle expiry takes the first staging object while the rest of the day remains: a
    // re-run refuses, naming what is gone, and the lake keeps every event.
    let first_object = lake.keys("staging/").await.remove(0);
    lake.s3
        .delete_object()
        .bucket(&lake.bucket)
        .key(&first_object)
        .send()
        .await
        .unwrap();
    let outcome = compact
        .invoke(&json!({"day": DAY}), Duration::from_secs(120))
        .await
        .unwrap();
    let Outcome::FunctionError(error) = outcome else {
        panic!("a shrinking re-run was accepted: {outcome:?}")
    };
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("refusing to compact 2024-04-11: 1 of the 3 staging objects"),
        "{message}"
    );
    assert_eq!(lake_ids(&lake).await, expected);
    assert_eq!(uuids(&lake.all_lines("staging/").await).len(), 3 + 1);
}

#[tokio::test]
async fn hostile_envelope_values_never_make_a_key_s3_would_reject() {
    // Kinesis shard ids are at most 128 characters of [a-zA-Z0-9_.-] and sequence numbers at most
    // 129 digits; anything else in an envelope must not reach a key (S3 refuses keys over 1,024
    // bytes, on every retry; the emulator does not).
    let lake = Lake::new("hostile-envelope").await;
    let mut ingest = ingest_process(&lake, &[]).await;
    let mut long_shard = record(0, 5, ARRIVAL_MS, event_json(5)).to_json(DEFAULT_STREAM_ARN);
    long_shard["eventID"] = json!(format!("shardId-{}:5", "9".repeat(2000)));
    let mut odd_shard = record(0, 6, ARRIVAL_MS, event_json(6)).to_json(DEFAULT_STREAM_ARN);
    odd_shard["eventID"] = json!("shard/../../x=y:6");
    let mut long_sequence = record(0, 7, ARRIVAL_MS, event_json(7)).to_json(DEFAULT_STREAM_ARN);
    long_sequence["kinesis"]["sequenceNumber"] = json!("7".repeat(1500));
    let fine = record(0, 8, ARRIVAL_MS, event_json(8)).to_json(DEFAULT_STREAM_ARN);
    let payload = json!({"Records": [long_shard, odd_shard, long_sequence, fine]});
    ingest_text_ok(&mut ingest, payload.to_string()).await;
    let keys = [lake.keys("staging/").await, lake.keys("quarantine/").await].concat();
    let longest = keys.iter().map(String::len).max().unwrap_or(0);
    assert!(longest <= 1024, "a {longest}-byte key");
    // Only plausible shard ids name objects.
    assert!(keys.iter().all(|k| !k.contains("..")), "{keys:?}");
    assert_eq!(uuids(&lake.all_lines("staging/").await), [uuid(8)]);
    let quarantined = lake.all_lines("quarantine/").await;
    assert_eq!(quarantined.len(), 3, "{quarantined:?}");
    assert!(quarantined
        .iter()
        .all(|l| l["reason"] == "invalid_envelope"));
}

/// Runs the built `redrive` with the lake's environment; returns its JSON report and exit status.
fn redrive(lake: &Lake, args: &[&str]) -> (Value, bool) {
    let output = std::process::Command::new(binary("redrive"))
        .args(args)
        .envs(lake.env())
        .env("METRICS_SINK", "off")
        // The fixtures arrived in 2024: let the redrive reach back that far.
        .env("STAGING_RETENTION_DAYS", "3650")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("redrive {args:?} printed no report ({e}): {stderr}"));
    (report, output.status.success())
}

#[tokio::test]
async fn given_up_batches_and_quarantine_a_newer_catalogue_accepts_reach_the_lake_by_redrive() {
    use localstack::event_source_mapping::{
        self as esm, Delivery, MappingConfig, OnFailure, TimedProcess,
    };
    use pipeline::given_up::{parse_given_up_key, GivenUpBatch, GIVEN_UP_PREFIX};
    use std::sync::Arc;

    let lake = Lake::new("redrive").await;
    // An outage: the dedup table is unreachable, so every valid record is reported back until
    // the mapping gives up and keeps the batches in its S3 on-failure destination.
    let mut records: Vec<StreamRecord> = (1..=6)
        .map(|n| record(0, n, ARRIVAL_MS, event_json(n)))
        .collect();
    records.push(record(0, 7, ARRIVAL_MS, b"{broken".to_vec()));
    let mut function = TimedProcess {
        process: ingest_process(&lake, &[("DEDUP_TABLE", "no-such-table")]).await,
        timeout: Duration::from_secs(60),
    };
    let mapping = MappingConfig {
        stream_arn: DEFAULT_STREAM_ARN.into(),
        batch_size: 100,
        batching_window: Duration::ZERO,
        max_retries: 1,
        bisect_on_error: true,
        on_failure: OnFailure {
            objects: Arc::new(lake.s3_store().await),
            mapping_uuid: "6f1c1b5e-0000-4000-8000-000000000001".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:ingest".into(),
        },
        checkpoints: std::env::temp_dir().join(format!("{}-checkpoints.json", lake.bucket)),
    };
    let mut delivery = Delivery::default();
    esm::deliver(&mut function, records.clone(), &mapping, &mut delivery)
        .await
        .unwrap();
    // Reported back from the first valid record on, the broken one after it too.
    assert_eq!(delivery.records_given_up, 7, "{delivery:?}");
    let kept = lake.keys(GIVEN_UP_PREFIX).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        parse_given_up_key(&kept[0]).map(|(_, shard)| shard),
        Some("shardId-000000000000")
    );
    let record = GivenUpBatch::parse(&lake.object(&kept[0]).await).unwrap();
    assert_eq!(record.kinesis_batch_info.batch_size, 7);
    assert!(lake.keys("staging/").await.is_empty());

    // The outage is over: replay. Then again: nothing is sent twice.
    let (report, ok) = redrive(&lake, &["given-up"]);
    assert!(ok, "{report}");
    assert_eq!(report["redriven"], 1, "{report}");
    assert_eq!(report["events_written"], 6, "{report}");
    assert_eq!(report["records_quarantined"], 1, "{report}");
    assert_eq!(report["arrival_days"], json!([DAY]));
    let (report, ok) = redrive(&lake, &["given-up"]);
    assert!(
        ok && report["already_redriven"] == 1 && report["redriven"] == 0,
        "{report}"
    );

    // An older ingest quarantined an event its catalogue did not know; this catalogue does.
    let login = format!(
        r#"{{"event_uuid":"{}","created_at":1712844605,"event_name":"user:login","event_specifics":{{"device":"iOS","user_location":"Paris"}}}}"#,
        uuid(40)
    );
    let mut body = Vec::new();
    pipeline::quarantine_line::QuarantineLine::record(
        pipeline::validate::Reason::UnknownEvent,
        "unknown event user:login",
        pipeline::position::StreamPosition::new("shardId-000000000001", "900", None),
        ARRIVAL_MS * 1000,
        login.as_bytes(),
    )
    .push_to(&mut body);
    let minute = pipeline::layout::Minute::of_micros(ARRIVAL_MS * 1000);
    let prefixes = pipeline::layout::Prefixes::default();
    lake.put(
        &prefixes.quarantine_key(minute, "shardId-000000000001", "900"),
        body,
    )
    .await;
    let (report, ok) = redrive(&lake, &["quarantine", "--from", DAY]);
    assert!(ok, "{report}");
    // The broken record (quarantined by the redrive) stays; the login is staged.
    assert_eq!(report["events_written"], 1, "{report}");
    assert_eq!(report["records_quarantined"], 1, "{report}");
    assert_eq!(
        lake.owner(&uuid(40)).await.as_deref(),
        Some("shardId-000000000001:900")
    );

    let mut compact = compact_process(&lake).await;
    let report = compact_ok(&mut compact, json!({"day": DAY})).await;
    assert_eq!(report["rows_written"], 7, "{report}");
    let mut expected: Vec<String> = (1..=6).map(uuid).collect();
    expected.push(uuid(40));
    expected.sort();
    assert_eq!(lake_ids(&lake).await, expected);
}
