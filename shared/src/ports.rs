//! The few things the functions need from AWS, as small traits: a dedup store, an object store and a
//! metrics sink. Real adapters live in `crate::aws` (feature `aws`); in-memory twins in
//! `crate::memory` (feature `test-util`).

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::metric_names::COLD_START;

/// Whether asking again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Throttling, a 5xx, a time-out, a lost connection, a deadline: the same request may
    /// succeed later, so a redelivery or a re-run should.
    Transient,
    /// Access denied, no such bucket or table, a request the service rejects: nothing succeeds
    /// until the configuration or the permissions change.
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct StoreError {
    /// What was attempted, with its target: `PutObject staging/…`.
    pub operation: String,
    pub message: String,
    pub kind: FailureKind,
}

impl StoreError {
    /// A transient failure: the usual kind, and the safe guess when nothing says otherwise.
    pub fn new(operation: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError {
            operation: operation.into(),
            message: message.into(),
            kind: FailureKind::Transient,
        }
    }

    /// What was not finished before the invocation's deadline (transient: a redelivery has time).
    pub fn late(operation: &str) -> Self {
        StoreError::new(operation, "not finished before the invocation's deadline")
    }

    pub fn with_kind(self, kind: FailureKind) -> Self {
        StoreError { kind, ..self }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }
}

/// A record's attempt to own an event id (contract: Deduplication).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub event_uuid: &'a str,
    /// The Kinesis eventID of the record (`#N` appended for the N-th user record of an aggregate).
    pub claimed_by: &'a str,
    /// Epoch seconds.
    pub now: i64,
    /// Epoch seconds after which the claim no longer blocks anyone.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The id is ours: new, already ours (a redelivery), or an expired claim.
    Claimed,
    /// Another record owns the id: this one is a duplicate.
    OwnedByAnother,
}

#[async_trait]
pub trait DedupStore: Send + Sync {
    async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError>;

    /// Every claim's answer, in the claims' order: at most `concurrency` in flight, and each one
    /// not answered by `until` a transient failure. A store that answers without I/O (the
    /// in-memory twin) answers them all in one pass instead, with no future each.
    async fn claim_all(
        &self,
        claims: &[Claim<'_>],
        concurrency: usize,
        until: tokio::time::Instant,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        let mut answers: Vec<Option<Result<ClaimOutcome, StoreError>>> = vec![None; claims.len()];
        // Collected first: a closure inside the stream makes the future's lifetimes too specific
        // to be `Send` (async_trait boxes it as such).
        let mut pending = Vec::with_capacity(claims.len());
        for (i, claim) in claims.iter().enumerate() {
            pending.push(async move { (i, before(until, "PutItem", self.claim(*claim)).await) });
        }
        let mut answered = futures::stream::iter(pending).buffer_unordered(concurrency);
        while let Some((i, answer)) = answered.next().await {
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .map(|answer| answer.expect("every claim is answered"))
            .collect()
    }
}

/// Runs `work` unless `until` has passed, and gives it up if it is still running then.
pub async fn before<T>(
    until: tokio::time::Instant,
    operation: &str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if tokio::time::Instant::now() >= until {
        return Err(StoreError::late(operation));
    }
    tokio::time::timeout_at(until, work)
        .await
        .unwrap_or_else(|_| Err(StoreError::late(operation)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// Every object under `prefix`, in key order (all pages).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// One level of `prefix`, as S3's ListObjectsV2 with delimiter `/` answers: the objects
    /// directly under it and the folders below it. Derived from [`ObjectStore::list`] unless the
    /// store can answer it itself.
    async fn list_folder(&self, prefix: &str) -> Result<Folder, StoreError> {
        Ok(Folder::of(prefix, self.list(prefix).await?))
    }
    /// The object's bytes as a stream of chunks.
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError>;
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Starts a multipart upload: the object appears only when the upload completes.
    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError>;
}

/// One level of a listing: what [`ObjectStore::list_folder`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    /// Objects whose key has no `/` past the prefix, in key order.
    pub objects: Vec<ObjectInfo>,
    /// The prefix plus each distinct name up to and including the next `/` (S3's common
    /// prefixes), in key order.
    pub folders: Vec<String>,
}

impl Folder {
    /// The level of `prefix` that a whole listing of it (in key order) holds.
    pub fn of(prefix: &str, listed: Vec<ObjectInfo>) -> Folder {
        let mut folder = Folder::default();
        for object in listed {
            let Some(rest) = object.key.strip_prefix(prefix) else {
                continue;
            };
            match rest.find('/') {
                None => folder.objects.push(object),
                Some(slash) => {
                    let name = &object.key[..prefix.len() + slash + 1];
                    if folder.folders.last().map(String::as_str) != Some(name) {
                        folder.folders.push(name.to_string());
                    }
                }
            }
        }
        folder
    }
}

/// Folders listed at once, at most: a day's hours, a year's months.
const FOLDERS_LISTED_AT_ONCE: usize = 32;

/// Every object under `prefix`, as [`ObjectStore::list`] finds them (in key order), listed folder
/// by folder `depth` levels down with the folders of each level at once. S3 pages a listing
/// 1,000 keys at a time, each page asked for after the last one came back: a day of 70,000
/// staging objects listed whole is 70 round trips in a row, listed by hour a handful.
pub async fn list_by_folder(
    objects: &dyn ObjectStore,
    prefix: &str,
    depth: usize,
) -> Result<Vec<ObjectInfo>, StoreError> {
    use futures::future::try_join_all;
    let mut found = Vec::new();
    let mut level = vec![prefix.to_string()];
    for _ in 0..depth {
        let mut below = Vec::new();
        for some in level.chunks(FOLDERS_LISTED_AT_ONCE) {
            for folder in try_join_all(some.iter().map(|f| objects.list_folder(f))).await? {
                found.extend(folder.objects);
                below.extend(folder.folders);
            }
        }
        level = below;
    }
    for some in level.chunks(FOLDERS_LISTED_AT_ONCE) {
        let wholes = try_join_all(some.iter().map(|f| objects.list(f))).await?;
        found.extend(wholes.into_iter().flatten());
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

/// What a conditional write requires of the key's current object (S3's `If-None-Match: *` and
/// `If-Match: {etag}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// No object exists under the key.
    Absent,
    /// The key's current object has this ETag.
    Matches(&'a str),
}

/// Compare-and-swap on single objects: what a lease needs, and what S3 offers since its
/// conditional writes (PutObject `If-None-Match`/`If-Match`, DeleteObject `If-Match`).
#[async_trait]
pub trait ConditionalStore: Send + Sync {
    /// Writes `body` only if `precondition` holds: `Some(etag)` of the new object, or `None` when
    /// it does not hold (or a concurrent conditional request on the key won).
    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        precondition: Precondition<'_>,
    ) -> Result<Option<String>, StoreError>;
    /// The object and its ETag, or `None` when there is no such object.
    async fn get_tagged(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError>;
    /// Deletes the object only if its ETag is still `etag`; `false` when it is not, or it is gone.
    async fn delete_if_match(&self, key: &str, etag: &str) -> Result<bool, StoreError>;
}

/// The whole object `key` (`size_hint`: its size when known, else 0).
pub async fn read_all(
    objects: &dyn ObjectStore,
    key: &str,
    size_hint: usize,
) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::with_capacity(size_hint);
    let mut stream = objects.get(key).await?;
    while let Some(chunk) = stream.try_next().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An object written in parts. Every part but the last must be at least [`MIN_PART_SIZE`] bytes.
#[async_trait]
pub trait MultipartUpload: Send {
    async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError>;
    async fn complete(self: Box<Self>) -> Result<(), StoreError>;
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// S3's minimum size for every part of a multipart upload but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
    pub unit: Unit,
    /// A dimension besides `FunctionName` (`("Reason", "invalid_json")`), if any.
    pub dimension: Option<(&'static str, &'static str)>,
}

impl Metric {
    pub fn count(name: &'static str, value: u64) -> Metric {
        Metric {
            name,
            value: value as f64,
            unit: Unit::Count,
            dimension: None,
        }
    }

    pub fn bytes(name: &'static str, value: u64) -> Metric {
        Metric {
            name,
            value: value as f64,
            unit: Unit::Bytes,
            dimension: None,
        }
    }

    /// The same metric under one more dimension.
    pub fn by(self, dimension: &'static str, value: &'static str) -> Metric {
        Metric {
            dimension: Some((dimension, value)),
            ..self
        }
    }
}

#[async_trait]
pub trait MetricsSink: Send + Sync {
    async fn publish(&self, metrics: &[Metric]) -> Result<(), StoreError>;
}

#[async_trait]
impl<T: MetricsSink + ?Sized> MetricsSink for std::sync::Arc<T> {
    async fn publish(&self, metrics: &[Metric]) -> Result<(), StoreError> {
        self.as_ref().publish(metrics).await
    }
}

/// Adds [`COLD_START`] to the first publish of the process: sinks are built once per cold start.
pub struct CountColdStart<S> {
    inner: S,
    cold: std::sync::atomic::AtomicBool,
}

impl<S> CountColdStart<S> {
    pub fn new(inner: S) -> Self {
        CountColdStart {
            inner,
            cold: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

#[async_trait]
impl<S: MetricsSink> MetricsSink for CountColdStart<S> {
    async fn publish(&self, metrics: &[Metric]) -> Result<(), StoreError> {
        if self.cold.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let mut first = metrics.to_vec();
            first.push(Metric::count(COLD_START, 1));
            return self.inner.publish(&first).await;
        }
        self.inner.publish(metrics).await
    }
}

/// Publishes, logging a failure instead of returning it: metrics never fail an invocation.
pub async fn publish_metrics(sink: &dyn MetricsSink, metrics: &[Metric]) {
    if let Err(error) = sink.publish(metrics).await {
        tracing::warn!(%error, "could not publish metrics");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric_names::ingest::EVENTS_WRITTEN;

    #[tokio::test]
    async fn a_cold_start_is_counted_once_on_the_first_publish() {
        let memory = std::sync::Arc::new(crate::memory::MemoryMetrics::default());
        let sink = CountColdStart::new(memory.clone());
        sink.publish(&[Metric::count(EVENTS_WRITTEN, 1)])
            .await
            .unwrap();
        sink.publish(&[Metric::count(EVENTS_WRITTEN, 1)])
            .await
            .unwrap();
        assert_eq!(memory.total(COLD_START), 1.0);
        assert_eq!(memory.total(EVENTS_WRITTEN), 2.0);
    }

    /// Keys of every shape a prefix can hold: directly under it, folders several deep, an empty
    /// name between two slashes, the prefix's own folder marker, and a neighbour it must not see.
    const ODD_KEYS: [&str; 9] = [
        "day/",
        "day/a.ndjson",
        "day//z",
        "day/hour=00/minute=01/x.ndjson",
        "day/hour=00/minute=01/y.ndjson",
        "day/hour=00/stray.ndjson",
        "day/hour=01/",
        "day/hour=23/minute=59/deep/er/k",
        "dayz/not-under-the-prefix",
    ];

    #[test]
    fn a_folder_holds_the_objects_directly_under_it_and_the_next_level_of_folders() {
        let listed = ODD_KEYS
            .iter()
            .filter(|key| key.starts_with("day/"))
            .map(|key| ObjectInfo {
                key: key.to_string(),
                size: 1,
            })
            .collect();
        let folder = Folder::of("day/", listed);
        let objects: Vec<&str> = folder.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(objects, ["day/", "day/a.ndjson"]);
        assert_eq!(
            folder.folders,
            ["day//", "day/hour=00/", "day/hour=01/", "day/hour=23/"]
        );
    }

    #[tokio::test]
    async fn listing_by_folder_finds_what_one_listing_finds_at_every_depth() {
        let store = crate::memory::MemoryObjectStore::default();
        for key in ODD_KEYS {
            store.put(key, Bytes::from_static(b"x")).await.unwrap();
        }
        for prefix in ["day/", "day", "day/hour=00/", "nothing/"] {
            let whole = store.list(prefix).await.unwrap();
            for depth in 0..5 {
                let by_folder = list_by_folder(&store, prefix, depth).await.unwrap();
                assert_eq!(by_folder, whole, "{prefix} at depth {depth}");
            }
        }
    }
}
