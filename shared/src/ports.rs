//! The few things the functions need from AWS, as small traits: a dedup store, an object store and a
//! metrics sink. Real adapters live in `crate::aws` (feature `aws`); in-memory twins in
//! `crate::memory` (feature `test-util`).

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};

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
    /// The object's bytes as a stream of chunks.
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError>;
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Starts a multipart upload: the object appears only when the upload completes.
    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError>;
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
}
