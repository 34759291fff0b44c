//! `ingest` against the local emulator (real S3 and DynamoDB semantics), in-process and as the
//! built binary behind the Lambda Runtime API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use ingest::Deadline;
use localstack::embedded::EmbeddedService;
use localstack::runtime_api::{LambdaProcess, Outcome};
use pipeline::fixtures::{event_json, record, uuid, ARRIVAL_MS};
use pipeline::kpl;
use pipeline_tests::{binary, kinesis_payload, provision, python_json, uuids, Lake};
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

fn binary_env(lake: &Lake, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = lake.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn emf_totals(lines: &[String]) -> serde_json::Map<String, Value> {
    let mut totals = serde_json::Map::new();
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(metrics) = v["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array() else {
            continue;
        };
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "EventPipeline"
        );
        assert_eq!(v["FunctionName"], "ingest");
        // A metric under a second dimension is keyed `Name{Dimension=value}`.
        let dimensions = &v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
        let extra = dimensions
            .as_array()
            .unwrap()
            .get(1)
            .and_then(Value::as_str);
        for m in metrics {
            let name = match extra {
                Some(d) => format!(
                    "{}{{{d}={}}}",
                    m["Name"].as_str().unwrap(),
                    v[d].as_str().unwrap()
                ),
                None => m["Name"].as_str().unwrap().to_string(),
            };
            let name = name.as_str();
            let sum = totals.get(name).and_then(Value::as_f64).unwrap_or(0.0)
                + v[m["Name"].as_str().unwrap()].as_f64().unwrap();
            totals.insert(name.to_string(), json!(sum));
        }
    }
    totals
}

#[tokio::test]
async fn the_binary_serves_the_runtime_api_and_emits_emf_metrics() {
    let lake = Lake::new("binary").await;
    let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &binary_env(&lake, &[]))
        .await
        .unwrap();
    let (payload, _) = kinesis_payload(&[
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(1)),
        record(0, 3, ARRIVAL_MS, b"nope".to_vec()),
        record(1, 4, ARRIVAL_MS, event_json(2)),
    ]);
    let outcome = lambda
        .invoke(&payload, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    // A warm second invocation of the same process.
    let (payload, _) = kinesis_payload(&[record(0, 5, ARRIVAL_MS, event_json(3))]);
    let outcome = lambda
        .invoke(&payload, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));

    assert_eq!(
        uuids(&lake.all_lines("staging/").await),
        [uuid(1), uuid(2), uuid(3)]
    );
    assert_eq!(
        lake.all_lines("quarantine/").await[0]["reason"],
        "invalid_json"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let totals = emf_totals(&lambda.stdout_lines());
    assert_eq!(totals["RecordsReceived"], json!(5.0));
    assert_eq!(totals["EventsWritten"], json!(3.0));
    assert_eq!(totals["DuplicatesDropped"], json!(1.0));
    assert_eq!(totals["RecordsQuarantined"], json!(1.0));
    assert_eq!(
        totals["RecordsQuarantinedByReason{Reason=invalid_json}"],
        json!(1.0)
    );
    // Two invocations of one process: one cold start.
    assert_eq!(totals["ColdStart"], json!(1.0));
    assert_eq!(totals["BatchItemFailures"], json!(0.0));
    assert!(totals["StagingBytesWritten"].as_f64().unwrap() > 0.0);
    assert!(
        lambda.stderr_text().contains("\"batch done\""),
        "JSON logs on stderr"
    );
}

/// The demo's wiring: the SDK's standard `AWS_ENDPOINT_URL_DYNAMODB` sends the claims to another
/// DynamoDB (the demo's embedded one) while S3 stays on `AWS_ENDPOINT_URL`. It also runs the dedup
/// claim against a second DynamoDB implementation.
#[tokio::test]
async fn aws_endpoint_url_dynamodb_sends_the_claims_to_another_dynamodb() {
    let lake = Lake::new("ddb-endpoint").await;
    let embedded = EmbeddedService::dynamodb().await.unwrap();
    let sdk = provision::local_sdk_config(embedded.endpoint()).await;
    let claims = aws_sdk_dynamodb::Client::new(&sdk);
    provision::ensure_dedup_table(&claims, &lake.table)
        .await
        .unwrap();
    let env = binary_env(&lake, &[("AWS_ENDPOINT_URL_DYNAMODB", embedded.endpoint())]);
    let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &env)
        .await
        .unwrap();
    let (payload, _) = kinesis_payload(&[
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(1)),
        record(1, 3, ARRIVAL_MS, event_json(2)),
    ]);
    for _redelivery in 0..2 {
        let outcome = lambda
            .invoke(&payload, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    }
    assert_eq!(uuids(&lake.all_lines("staging/").await), [uuid(1), uuid(2)]);
    let owner = claims
        .get_item()
        .table_name(&lake.table)
        .key("event_uuid", AttributeValue::S(uuid(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        owner.item().unwrap()["claimed_by"],
        AttributeValue::S("shardId-000000000000:1".into())
    );
    assert_eq!(lake.owner(&uuid(1)).await, None, "nothing claimed on moto");
    embedded.stop().await.unwrap();
}

#[tokio::test]
async fn the_binary_reports_failures_while_s3_is_down_and_catches_up_on_redelivery() {
    let lake = Lake::new("binary-s3-down").await;
    let missing_bucket = format!("{}-gone", lake.bucket);
    let env = binary_env(
        &lake,
        &[
            ("DATA_LAKE_BUCKET", &missing_bucket),
            ("METRICS_SINK", "off"),
        ],
    );
    let mut down = LambdaProcess::spawn(&binary("ingest"), "ingest", &env)
        .await
        .unwrap();
    let records = vec![
        record(0, 7, ARRIVAL_MS, event_json(1)),
        record(0, 8, ARRIVAL_MS, event_json(2)),
        record(3, 40, ARRIVAL_MS, event_json(3)),
    ];
    let (payload, _) = kinesis_payload(&records);
    let outcome = down
        .invoke(&payload, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Response(
            json!({"batchItemFailures": [{"itemIdentifier": "7"}, {"itemIdentifier": "40"}]})
        )
    );
    // The claims were made; S3 comes back (the bucket exists) and Lambda redelivers.
    pipeline_tests::provision::ensure_bucket(&lake.s3, &missing_bucket)
        .await
        .unwrap();
    let outcome = down
        .invoke(&payload, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    let staged = lake
        .s3
        .list_objects_v2()
        .bucket(&missing_bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(staged.contents().len(), 2, "one object per shard");
}

#[tokio::test]
async fn a_bad_setting_fails_the_cold_start_with_one_line_naming_it() {
    let lake = Lake::new("binary-config").await;
    for (name, env) in [
        ("DEDUP_TABLE", binary_env(&lake, &[("DEDUP_TABLE", "")])),
        (
            "DEDUP_TTL_SECONDS",
            binary_env(&lake, &[("DEDUP_TTL_SECONDS", "soon")]),
        ),
        (
            "METRICS_SINK",
            binary_env(&lake, &[("METRICS_SINK", "graphite")]),
        ),
    ] {
        let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &env)
            .await
            .unwrap();
        let status = lambda.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert!(!status.success());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stderr = lambda.stderr_text();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(name), "{stderr} should name {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_record_batch_is_one_invocation_with_one_put_per_minute_and_shard() {
    let lake = Lake::new("ten-thousand").await;
    let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &binary_env(&lake, &[]))
        .await
        .unwrap();
    // 2 shards × 3 arrival minutes; ~2 % producer retries (duplicate ids), 0.5 % malformed.
    let records: Vec<_> = (0..10_000u64)
        .map(|i| {
            let shard = (i % 2) as u32;
            let arrival = ARRIVAL_MS + (i * 3 / 10_000) as i64 * 60_000;
            let data = if i % 200 == 7 {
                b"{\"truncated\":".to_vec()
            } else if i % 50 == 3 {
                event_json(i - 1)
            } else {
                event_json(i)
            };
            record(shard, 1_000_000 + i, arrival, data)
        })
        .collect();
    let (payload, _) = kinesis_payload(&records);
    let started = Instant::now();
    let outcome = lambda
        .invoke(&payload, Duration::from_secs(300))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    let staging = lake.keys("staging/").await;
    assert_eq!(
        staging.len(),
        6,
        "one object per (minute, shard): {staging:?}"
    );
    let staged = lake.all_lines("staging/").await;
    let quarantined = lake.all_lines("quarantine/").await;
    let malformed = (0..10_000).filter(|i| i % 200 == 7).count();
    let retried = (0..10_000).filter(|i| i % 200 != 7 && i % 50 == 3).count();
    assert_eq!(quarantined.len(), malformed);
    assert_eq!(staged.len(), 10_000 - malformed - retried);
    let mut ids = uuids(&staged);
    ids.dedup();
    assert_eq!(ids.len(), staged.len(), "no id staged twice");
    let log = lambda.stderr_text();
    let done = log
        .lines()
        .find(|l| l.contains("batch done"))
        .unwrap_or_default();
    eprintln!(
        "10,000-record batch through the ingest binary (debug build) against moto: {:.2} s, {:.0} records/s; {done}",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn the_sample_payload_in_events_runs_as_documented() {
    let lake = Lake::new("sample").await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/samples/kinesis-batch.json"
    );
    let payload: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &binary_env(&lake, &[]))
        .await
        .unwrap();
    let outcome = lambda
        .invoke(&payload, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    let staged = lake.all_lines("staging/").await;
    let names: Vec<_> = staged
        .iter()
        .map(|l| l["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["game:resumed", "user:login"]);
    assert_eq!(staged[1]["created_at"], "2024-04-11T14:10:02.500000Z");
    let quarantined = lake.all_lines("quarantine/").await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["reason"], "invalid_uuid");
}

#[tokio::test]
async fn with_metrics_sink_cloudwatch_the_binary_puts_metric_data() {
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let lake = Lake::new("binary-cloudwatch").await;
    let namespace = format!("Test{}", lake.bucket.replace('-', ""));
    let env = binary_env(
        &lake,
        &[
            ("METRICS_SINK", "cloudwatch"),
            ("METRICS_NAMESPACE", &namespace),
        ],
    );
    let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &env)
        .await
        .unwrap();
    let (payload, _) = kinesis_payload(&[
        record(0, 1, ARRIVAL_MS, event_json(1)),
        record(0, 2, ARRIVAL_MS, event_json(1)),
        record(0, 3, ARRIVAL_MS, b"[]".to_vec()),
    ]);
    let outcome = lambda
        .invoke(&payload, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    assert!(
        lambda.stdout_lines().iter().all(|l| !l.contains("_aws")),
        "no EMF lines with the cloudwatch sink"
    );

    let sdk = pipeline_tests::provision::local_sdk_config(&lake.endpoint).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let now = std::time::SystemTime::now();
    let mut sums = std::collections::BTreeMap::new();
    for name in [
        "RecordsReceived",
        "EventsWritten",
        "DuplicatesDropped",
        "RecordsQuarantined",
    ] {
        let stats = cloudwatch
            .get_metric_statistics()
            .namespace(&namespace)
            .metric_name(name)
            .dimensions(
                Dimension::builder()
                    .name("FunctionName")
                    .value("ingest")
                    .build(),
            )
            .start_time((now - Duration::from_secs(3600)).into())
            .end_time((now + Duration::from_secs(3600)).into())
            .period(86_400)
            .statistics(Statistic::Sum)
            .send()
            .await
            .unwrap();
        sums.insert(
            name,
            stats
                .datapoints()
                .iter()
                .filter_map(|d| d.sum())
                .sum::<f64>(),
        );
    }
    assert_eq!(sums["RecordsReceived"], 3.0);
    assert_eq!(sums["EventsWritten"], 1.0);
    assert_eq!(sums["DuplicatesDropped"], 1.0);
    assert_eq!(sums["RecordsQuarantined"], 1.0);
}

/// Aggregates made by AWS Labs' aggregation library (tests/python/kpl_reference.py) go through
/// the built binary: every user record is staged once, in order, with its index as sub-sequence
/// number, and claimed as `eventID#index`.
#[tokio::test]
async fn aggregates_made_by_the_aws_labs_library_are_unpacked_by_the_built_binary() {
    let lake = Lake::new("kpl-reference").await;
    let events: Vec<Value> = (1..=4000)
        .map(|n| serde_json::from_slice(&event_json(n)).unwrap())
        .collect();
    let input = std::env::temp_dir().join(format!("{}-events.json", lake.bucket));
    std::fs::write(&input, serde_json::to_vec(&events).unwrap()).unwrap();
    let reference = python_json("kpl_reference.py", &[&input]);
    let _ = std::fs::remove_file(&input);
    let aggregates = reference["aggregates"].as_array().unwrap();

    let mut records = Vec::new();
    let mut expected = Vec::new(); // (event_uuid, sequence number, sub-sequence number)
    for (i, aggregate) in aggregates.iter().enumerate() {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(aggregate["data_base64"].as_str().unwrap())
            .unwrap();
        let sequence = 700 + i as u64;
        // Our decoder reads the library's key tables as the library wrote them.
        let users = kpl::deaggregate(&blob).unwrap();
        let keys: Vec<&str> = users.iter().map(|u| u.partition_key).collect();
        let reference_keys: Vec<&str> = aggregate["user_records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["partition_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, reference_keys, "{}", aggregate["name"]);
        for (index, user) in aggregate["user_records"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            expected.push((
                user["event_uuid"].as_str().unwrap().to_string(),
                sequence,
                index,
            ));
        }
        let mut kinesis_record = record(0, sequence, ARRIVAL_MS, blob);
        kinesis_record.partition_key = aggregate["partition_key"].as_str().unwrap().to_string();
        records.push(kinesis_record);
    }
    let largest = &aggregates[2];
    let largest_bytes = largest["data_base64"].as_str().unwrap().len() / 4 * 3;
    assert!(
        largest_bytes > 1_000_000,
        "the largest aggregate is {largest_bytes} bytes"
    );
    assert_eq!(aggregates[1]["explicit_hash_key"], "0");

    let mut ingest = LambdaProcess::spawn(&binary("ingest"), "ingest", &lake.env())
        .await
        .unwrap();
    let (payload, _) = kinesis_payload(&records);
    let outcome = ingest
        .invoke(&payload, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));

    assert_eq!(lake.keys("quarantine/").await, Vec::<String>::new());
    let staged = lake
        .lines(&format!("staging/{MINUTE}/shardId-000000000000-700.ndjson"))
        .await;
    let got: Vec<(String, u64, usize)> = staged
        .iter()
        .map(|l| {
            (
                l["event_uuid"].as_str().unwrap().to_string(),
                l["source"]["sequence_number"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                l["source"]["sub_sequence_number"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(lake.keys("staging/").await.len(), 1);
    let (last_id, last_sequence, last_index) = expected.last().unwrap();
    assert_eq!(
        lake.owner(last_id).await.unwrap(),
        format!("shardId-000000000000:{last_sequence}#{last_index}")
    );
}
