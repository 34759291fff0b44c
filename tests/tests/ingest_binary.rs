//! The built `ingest` binary through the Lambda Runtime API: metrics, logs, settings, endpoints,
//! outages, big batches, the sample payload and reference KPL aggregates.

use pipeline::metric_names::{ingest as ingest_metrics, COLD_START};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use localstack::embedded_emulators::EmbeddedService;
use localstack::lambda_runtime_api::{LambdaProcess, Outcome};
use pipeline::fixtures::{event_json, record, uuid, ARRIVAL_MS};
use pipeline::kpl;
use pipeline_tests::{
    assert_each_log_line_names_its_invocation, binary, kinesis_payload, provision, python_json,
    uuids, Lake,
};
use serde_json::{json, Value};

const MINUTE: &str = "year=2024/month=04/day=11/hour=14/minute=10";

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
    assert_eq!(totals[ingest_metrics::RECORDS_RECEIVED], json!(5.0));
    assert_eq!(totals[ingest_metrics::EVENTS_WRITTEN], json!(3.0));
    assert_eq!(totals[ingest_metrics::DUPLICATES_DROPPED], json!(1.0));
    assert_eq!(totals[ingest_metrics::RECORDS_QUARANTINED], json!(1.0));
    assert_eq!(
        totals["RecordsQuarantinedByReason{Reason=invalid_json}"],
        json!(1.0)
    );
    // Two invocations of one process: one cold start.
    assert_eq!(totals[COLD_START], json!(1.0));
    assert_eq!(totals[ingest_metrics::BATCH_ITEM_FAILURES], json!(0.0));
    assert!(
        totals[ingest_metrics::STAGING_BYTES_WRITTEN]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // JSON logs on stderr, each naming its invocation; the batch's span names its shard and
    // first sequence number.
    let logs = lambda.stderr_text();
    assert_each_log_line_names_its_invocation(&logs, lambda.request_ids());
    let batches: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains("\"batch done\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(batches.len(), 2, "{logs}");
    for (log, first) in batches.iter().zip(["1", "5"]) {
        assert_eq!(
            log["spans"][1],
            json!({"name": "batch", "shard": "shardId-000000000000", "first_sequence": first}),
            "{log}"
        );
    }
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
    // A missing bucket stays missing until someone acts: logged as a permanent error, not as a
    // transient warning.
    let logs = down.stderr_text();
    let failure: Value = logs
        .lines()
        .find(|l| l.contains("object write failed"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no write failure logged:\n{logs}"));
    assert_eq!(
        (
            failure["level"].as_str(),
            failure["fields"]["transient"].as_bool()
        ),
        (Some("ERROR"), Some(false)),
        "{failure}"
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
        ingest_metrics::RECORDS_RECEIVED,
        ingest_metrics::EVENTS_WRITTEN,
        ingest_metrics::DUPLICATES_DROPPED,
        ingest_metrics::RECORDS_QUARANTINED,
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
    assert_eq!(sums[ingest_metrics::RECORDS_RECEIVED], 3.0);
    assert_eq!(sums[ingest_metrics::EVENTS_WRITTEN], 1.0);
    assert_eq!(sums[ingest_metrics::DUPLICATES_DROPPED], 1.0);
    assert_eq!(sums[ingest_metrics::RECORDS_QUARANTINED], 1.0);
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

/// The payload reaches the handler as Lambda's bytes (raw_payload): one that is not
/// `{"Records":[...]}` fails its invocation, typed, and the process serves the next one.
#[tokio::test]
async fn a_payload_that_is_not_a_kinesis_event_fails_typed_and_the_next_is_served() {
    let lake = Lake::new("binary-bad-payload").await;
    let mut lambda = LambdaProcess::spawn(&binary("ingest"), "ingest", &binary_env(&lake, &[]))
        .await
        .unwrap();
    for payload in [
        json!({"records": []}),
        json!([1, 2]),
        json!({"Records": null}),
    ] {
        let outcome = lambda
            .invoke(&payload, Duration::from_secs(30))
            .await
            .unwrap();
        let Outcome::FunctionError(error) = outcome else {
            panic!("{payload} was accepted: {outcome:?}")
        };
        assert_eq!(error["errorType"], "BadRequest", "{error}");
        let message = error["errorMessage"].as_str().unwrap();
        assert!(message.contains("not a Lambda Kinesis event"), "{message}");
    }
    let (payload, _) = kinesis_payload(&[record(0, 1, ARRIVAL_MS, event_json(1))]);
    let outcome = lambda
        .invoke(&payload, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Response(json!({"batchItemFailures": []})));
    assert_eq!(uuids(&lake.all_lines("staging/").await), [uuid(1)]);
    assert_each_log_line_names_its_invocation(&lambda.stderr_text(), lambda.request_ids());
}
