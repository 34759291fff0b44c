//! Helpers for the integration tests: a private corner of the local emulator per test (its own
//! bucket and dedup table), readers for what landed there, and the built binaries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use pipeline::lambda_payload::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};
use pipeline::memory::FaultyObjectStore;
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

/// A built binary of the workspace (`ingest`, `compact`), next to the test executable's `deps/`,
/// or in `PIPELINE_BIN_DIR` when set (to run these tests against another build: release, an older
/// commit, a cross-built one under an emulator).
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("PIPELINE_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.exists(),
            "{} is missing (PIPELINE_BIN_DIR)",
            path.display()
        );
        return path;
    }
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

    /// Reads the function environment like the binaries do; metrics are off in-process.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> {
        let env = self.env();
        move |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| (name == "METRICS_SINK").then(|| "off".to_string()))
        }
    }

    /// The `ingest` handler in this process, wired to the emulator by the same code as the binary.
    pub async fn ingest(&self) -> ingest::Ingest {
        let config = pipeline::config::IngestConfig::from_lookup(&self.lookup()).unwrap();
        ingest::Ingest::from_config(&config).await
    }

    /// The `compact` handler in this process, wired to the emulator by the same code as the binary.
    pub async fn compact(&self) -> compact::Compact {
        let config = pipeline::config::CompactConfig::from_lookup(&self.lookup()).unwrap();
        compact::Compact::from_config(&config).await
    }

    /// The real S3 adapter on this lake's bucket.
    pub async fn s3_store(&self) -> pipeline::aws::S3ObjectStore {
        let config = pipeline::config::CommonConfig::from_lookup(&self.lookup(), "test").unwrap();
        let sdk = pipeline::aws::load_sdk_config().await;
        pipeline::aws::S3ObjectStore::new(&sdk, &config)
    }

    /// The real S3 adapter, except that writes of keys containing `needle` fail (or, with
    /// `hang`, never finish), as when S3 is down or the process dies mid-write.
    pub async fn sabotaged_store(
        &self,
        needle: &str,
        hang: bool,
    ) -> Arc<FaultyObjectStore<pipeline::aws::S3ObjectStore>> {
        Arc::new(FaultyObjectStore {
            inner: self.s3_store().await,
            needle: needle.to_string(),
            hang,
        })
    }

    /// Downloads `processed/` and reads it with pyarrow and DuckDB (tests/python/inspect_lake.py).
    pub async fn inspect_processed(&self) -> Value {
        let dir = std::env::temp_dir().join(format!("lake-{}", self.bucket));
        let _ = std::fs::remove_dir_all(&dir);
        for key in self.keys("processed/").await {
            let path = dir.join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, self.object(&key).await).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        let view = python_json("inspect_lake.py", &[&dir]);
        let _ = std::fs::remove_dir_all(&dir);
        view
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

/// Runs `tests/python/{script}` with `args` with the venv's Python (`PIPELINE_PYTHON`) and reads
/// the JSON it prints.
pub fn python_json<A: AsRef<std::ffi::OsStr>>(script: &str, args: &[A]) -> Value {
    let python = std::env::var("PIPELINE_PYTHON").unwrap_or_else(|_| {
        panic!("PIPELINE_PYTHON is not set: run the tests with `make test` (scripts/with-moto.sh)")
    });
    let output = std::process::Command::new(python)
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("python")
                .join(script),
        )
        .args(args)
        .output()
        .expect("running the venv's Python");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{script} prints JSON: {e}"))
}

/// The Lambda payload for `records`, both as JSON (for the binary) and parsed (for the handler).
/// The batch borrows from the payload's text, which is leaked: a test's payloads live as long as
/// its process.
pub fn kinesis_payload(
    records: &[StreamRecord],
) -> (Value, pipeline::lambda_payload::KinesisBatch<'static>) {
    let json = kinesis_event(records, DEFAULT_STREAM_ARN);
    let text: &'static str = Box::leak(json.to_string().into_boxed_str());
    let parsed = pipeline::lambda_payload::KinesisBatch::parse(text.as_bytes()).unwrap();
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

/// Every JSON log line a function wrote from its first invocation on carries the runtime's span
/// with the request id of one of `request_ids` (`"spans":[{"requestId":…,"name":"Lambda runtime
/// invoke"},…]`), and every invocation has at least one line: any line can be matched to its
/// invocation. Lines before the first invocation (the cold start) name none.
pub fn assert_each_log_line_names_its_invocation(stderr: &str, request_ids: &[String]) {
    let mut named = std::collections::BTreeSet::new();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let log: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let request_id = log["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find_map(|span| span["requestId"].as_str()));
        match request_id {
            Some(id) => {
                assert!(
                    request_ids.iter().any(|r| r == id),
                    "unknown request id: {line}"
                );
                named.insert(id.to_string());
            }
            None => assert!(
                named.is_empty(),
                "a log line after the first invocation names none: {line}"
            ),
        }
    }
    for id in request_ids {
        assert!(
            named.contains(id),
            "no log line names invocation {id}:\n{stderr}"
        );
    }
}

/// An event of `name` with id [`pipeline::fixtures::uuid`]`(n)`, any `created_at` and specifics.
pub fn with_specifics(n: u64, name: &str, created_at: Value, specifics: Value) -> Vec<u8> {
    serde_json::json!({"event_uuid": pipeline::fixtures::uuid(n), "created_at": created_at, "event_name": name, "event_specifics": specifics})
        .to_string()
        .into_bytes()
}
