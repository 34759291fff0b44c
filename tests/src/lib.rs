//! Helpers for the integration tests: a private corner of the local emulator per test (its own
//! bucket and dedup table), readers for what landed there, and the built binaries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use pipeline::lambda_payload::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};
use serde_json::Value;

pub use localstack::provision;

/// The emulator `scripts/with-moto.sh` started. The tests do not pass without one.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL is not set: the integration tests need the local emulator; \
             run them with `make test`, or `scripts/with-moto.sh cargo test`"
        )
    })
}

/// A built binary of the workspace (`ingest`, `compact`), next to the test executable's `deps/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, done by `make test`)",
        path.display()
    );
    path
}

/// One test's bucket and dedup table on the emulator.
pub struct Lake {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub bucket: String,
    pub table: String,
    pub endpoint: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lake {
    pub async fn new(test: &str) -> Lake {
        let endpoint = endpoint();
        let sdk = provision::local_sdk_config(&endpoint).await;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let slug: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(30)
            .collect();
        let bucket = format!("t-{slug}-{}-{n}", std::process::id());
        let lake = Lake {
            s3: provision::s3_client(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            table: format!("dedup-{bucket}"),
            bucket,
            endpoint,
        };
        provision::ensure_bucket(&lake.s3, &lake.bucket)
            .await
            .unwrap();
        provision::ensure_dedup_table(&lake.dynamodb, &lake.table)
            .await
            .unwrap();
        lake
    }

    /// The environment the functions read (contract: Configuration).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DATA_LAKE_BUCKET", self.bucket.as_str()),
            ("DEDUP_TABLE", self.table.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The `ingest` handler in this process, wired to the emulator by the same code as the binary.
    pub async fn ingest(&self) -> ingest::Ingest {
        let env = self.env();
        let lookup = move |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| (name == "METRICS_SINK").then(|| "off".to_string()))
        };
        let config = pipeline::config::IngestConfig::from_lookup(&lookup).unwrap();
        ingest::Ingest::from_config(&config).await
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            keys.extend(
                page.unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        keys
    }

    pub async fn object(&self, key: &str) -> Vec<u8> {
        let output = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
        output.body.collect().await.unwrap().to_vec()
    }

    /// Every NDJSON line of one object.
    pub async fn lines(&self, key: &str) -> Vec<Value> {
        self.object(key)
            .await
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("each line is JSON"))
            .collect()
    }

    /// Every NDJSON line of every object under `prefix`, in key order.
    pub async fn all_lines(&self, prefix: &str) -> Vec<Value> {
        let mut all = Vec::new();
        for key in self.keys(prefix).await {
            all.extend(self.lines(&key).await);
        }
        all
    }

    /// `claimed_by` of an event id in the dedup table.
    pub async fn owner(&self, event_uuid: &str) -> Option<String> {
        let item = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("event_uuid", AttributeValue::S(event_uuid.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        match item.item()?.get("claimed_by")? {
            AttributeValue::S(owner) => Some(owner.clone()),
            _ => None,
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
}

/// The Lambda payload for `records`, both as JSON (for the binary) and parsed (for the handler).
pub fn kinesis_payload(
    records: &[StreamRecord],
) -> (Value, aws_lambda_events::event::kinesis::KinesisEvent) {
    let json = kinesis_event(records, DEFAULT_STREAM_ARN);
    let parsed = serde_json::from_value(json.clone()).unwrap();
    (json, parsed)
}

/// `event_uuid`s of staging lines, sorted.
pub fn uuids(lines: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| l["event_uuid"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}
