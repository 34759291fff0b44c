//! In-memory twins of the ports, for unit tests and benchmarks: same semantics, no network.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use foldhash::HashMap;

use crate::ports::{
    ByteStream, Claim, ClaimOutcome, ConditionalStore, DedupStore, FailureKind, Metric,
    MetricsSink, MultipartUpload, ObjectInfo, ObjectStore, Precondition, StoreError,
};

/// Claims with the contract's condition:
/// `attribute_not_exists(event_uuid) OR claimed_by = :this_event_id OR expires_at < :now`.
#[derive(Default)]
pub struct MemoryDedupStore {
    claims: Mutex<HashMap<String, (String, i64)>>,
}

impl MemoryDedupStore {
    pub fn owner(&self, event_uuid: &str) -> Option<String> {
        let claims = self.claims.lock().unwrap();
        claims.get(event_uuid).map(|(owner, _)| owner.clone())
    }
}

/// One claim against the table, under its lock; an id already held is updated in place.
fn claim_in(claims: &mut HashMap<String, (String, i64)>, claim: &Claim) -> ClaimOutcome {
    match claims.get_mut(claim.event_uuid) {
        Some((owner, expires_at)) => {
            if owner != claim.claimed_by && *expires_at >= claim.now {
                return ClaimOutcome::OwnedByAnother;
            }
            owner.clear();
            owner.push_str(claim.claimed_by);
            *expires_at = claim.expires_at;
        }
        None => {
            claims.insert(
                claim.event_uuid.to_string(),
                (claim.claimed_by.to_string(), claim.expires_at),
            );
        }
    }
    ClaimOutcome::Claimed
}

#[async_trait]
impl DedupStore for MemoryDedupStore {
    async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        Ok(claim_in(&mut self.claims.lock().unwrap(), &claim))
    }

    async fn claim_all(
        &self,
        claims: &[Claim<'_>],
        _concurrency: usize,
        until: tokio::time::Instant,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        if tokio::time::Instant::now() >= until {
            return claims
                .iter()
                .map(|_| Err(StoreError::late("PutItem")))
                .collect();
        }
        let mut table = self.claims.lock().unwrap();
        claims
            .iter()
            .map(|claim| Ok(claim_in(&mut table, claim)))
            .collect()
    }
}

#[derive(Default, Clone)]
pub struct MemoryObjectStore {
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
    puts: Arc<AtomicU64>,
}

impl MemoryObjectStore {
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.objects.lock().unwrap().get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// How many objects were written (PUTs and completed uploads).
    pub fn put_count(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.objects.lock().unwrap().insert(key.to_string(), body);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, body)| ObjectInfo {
                key: key.clone(),
                size: body.len() as u64,
            })
            .collect())
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let body = self.object(key).ok_or_else(|| {
            // As S3's 404: asking again does not help.
            StoreError::new(format!("GetObject {key}"), "NoSuchKey")
                .with_kind(FailureKind::Permanent)
        })?;
        // Hand the body out in small chunks so readers meet lines split across chunks.
        let chunks: Vec<Result<Bytes, StoreError>> = (0..body.len())
            .step_by(64 * 1024)
            .map(|start| Ok(body.slice(start..(start + 64 * 1024).min(body.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        for key in keys {
            objects.remove(key);
        }
        Ok(())
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            key: key.to_string(),
            parts: Vec::new(),
        }))
    }
}

/// ETags as S3 gives a single-part object's: the MD5 of its bytes, quoted.
fn etag(body: &[u8]) -> String {
    format!("\"{}\"", crate::layout::content_digest(body))
}

#[async_trait]
impl ConditionalStore for MemoryObjectStore {
    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        precondition: Precondition<'_>,
    ) -> Result<Option<String>, StoreError> {
        // One lock around the check and the write: conditional writes are atomic on S3 too.
        let mut objects = self.objects.lock().unwrap();
        let holds = match (precondition, objects.get(key)) {
            (Precondition::Absent, current) => current.is_none(),
            (Precondition::Matches(wanted), Some(current)) => etag(current) == wanted,
            (Precondition::Matches(_), None) => false,
        };
        if !holds {
            return Ok(None);
        }
        self.puts.fetch_add(1, Ordering::Relaxed);
        let tag = etag(&body);
        objects.insert(key.to_string(), body);
        Ok(Some(tag))
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        Ok(self.object(key).map(|body| {
            let tag = etag(&body);
            (body, tag)
        }))
    }

    async fn delete_if_match(&self, key: &str, wanted: &str) -> Result<bool, StoreError> {
        let mut objects = self.objects.lock().unwrap();
        if objects
            .get(key)
            .is_some_and(|current| etag(current) == wanted)
        {
            objects.remove(key);
            return Ok(true);
        }
        Ok(false)
    }
}

struct MemoryUpload {
    store: MemoryObjectStore,
    key: String,
    parts: Vec<Bytes>,
}

#[async_trait]
impl MultipartUpload for MemoryUpload {
    async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        self.parts.push(part);
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<(), StoreError> {
        let body: Vec<u8> = self.parts.concat();
        self.store.put(&self.key, Bytes::from(body)).await
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Wraps another store: writes of keys containing `needle` fail, or with `hang` never finish, as
/// when S3 is down or the process dies mid-write. Reads and deletes pass through.
pub struct FaultyObjectStore<S> {
    pub inner: S,
    pub needle: String,
    pub hang: bool,
}

impl<S: ObjectStore> FaultyObjectStore<S> {
    async fn refuse(&self, operation: &str, key: &str) -> Result<(), StoreError> {
        if !key.contains(&self.needle) {
            return Ok(());
        }
        if self.hang {
            futures::future::pending::<()>().await;
        }
        Err(StoreError::new(
            format!("{operation} {key}"),
            "InternalError (after retries)",
        ))
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyObjectStore<S> {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.refuse("PutObject", key).await?;
        self.inner.put(key, body).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.inner.get(key).await
    }
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.inner.delete(keys).await
    }
    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.refuse("CreateMultipartUpload", key).await?;
        self.inner.start_upload(key).await
    }
}

/// Keeps every published metric.
#[derive(Default)]
pub struct MemoryMetrics {
    published: Mutex<Vec<Metric>>,
}

impl MemoryMetrics {
    /// The sum of every value published under `name`.
    pub fn total(&self, name: &str) -> f64 {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.value)
            .sum()
    }
}

#[async_trait]
impl MetricsSink for MemoryMetrics {
    async fn publish(&self, metrics: &[Metric]) -> Result<(), StoreError> {
        self.published.lock().unwrap().extend_from_slice(metrics);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claims_follow_the_contract_condition() {
        let store = MemoryDedupStore::default();
        let claim = |by: &'static str, now: i64| Claim {
            event_uuid: "u",
            claimed_by: by,
            now,
            expires_at: now + 10,
        };
        assert_eq!(
            store.claim(claim("a", 0)).await.unwrap(),
            ClaimOutcome::Claimed
        );
        assert_eq!(
            store.claim(claim("a", 1)).await.unwrap(),
            ClaimOutcome::Claimed
        );
        assert_eq!(
            store.claim(claim("b", 2)).await.unwrap(),
            ClaimOutcome::OwnedByAnother
        );
        // a's claim (renewed at 1) expires at 11.
        assert_eq!(
            store.claim(claim("b", 12)).await.unwrap(),
            ClaimOutcome::Claimed
        );
        assert_eq!(store.owner("u").as_deref(), Some("b"));
    }

    /// The twin's one-pass `claim_all` answers as the port's own (one claim at a time,
    /// concurrently) does, in the claims' order; past the deadline, every claim fails transiently.
    #[tokio::test]
    async fn claims_all_at_once_answer_as_claims_one_by_one() {
        struct OneByOne(MemoryDedupStore);
        #[async_trait]
        impl DedupStore for OneByOne {
            async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError> {
                self.0.claim(claim).await
            }
        }
        let claim = |uuid: &'static str, by: &'static str, now: i64| Claim {
            event_uuid: uuid,
            claimed_by: by,
            now,
            expires_at: now + 10,
        };
        let rounds = [
            vec![claim("u", "a", 0), claim("v", "b", 0), claim("w", "c", 0)],
            vec![claim("u", "a", 1), claim("v", "x", 1), claim("x", "x", 1)],
            vec![claim("v", "x", 20), claim("w", "c", 20), claim("u", "y", 5)],
        ];
        let (twin, one_by_one) = (MemoryDedupStore::default(), OneByOne(Default::default()));
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        for claims in &rounds {
            let at_once = twin.claim_all(claims, 2, until).await;
            let each = one_by_one.claim_all(claims, 2, until).await;
            assert_eq!(at_once, each);
        }
        let owners: Vec<_> = rounds[2].iter().map(|c| twin.owner(c.event_uuid)).collect();
        // v's first claim expired at 10; u's is a's until 11.
        assert_eq!(
            owners,
            [Some("x".into()), Some("c".into()), Some("a".into())]
        );
        let past = tokio::time::Instant::now() - std::time::Duration::from_millis(1);
        for answers in [
            twin.claim_all(&rounds[0], 2, past).await,
            one_by_one.claim_all(&rounds[0], 2, past).await,
        ] {
            assert_eq!(answers.len(), 3);
            assert!(answers
                .iter()
                .all(|a| a.as_ref().is_err_and(StoreError::is_transient)));
        }
    }

    #[tokio::test]
    async fn lists_by_prefix_in_key_order() {
        let store = MemoryObjectStore::default();
        for key in ["b/2", "a/1", "b/1", "c"] {
            store.put(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let keys: Vec<_> = store
            .list("b/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["b/1", "b/2"]);
    }
}
