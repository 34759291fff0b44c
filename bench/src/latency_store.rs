//! An object store that answers like S3 from far away: every request waits a fixed latency before
//! the wrapped store serves it (a list waits once per page of 1,000 keys, as S3 pages them). The
//! many-small-objects bench runs compaction on it, to show that fetching stays ahead of decoding
//! when each GET costs tens of milliseconds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pipeline::ports::{
    ByteStream, ConditionalStore, Folder, MultipartUpload, ObjectInfo, ObjectStore, Precondition,
    StoreError,
};

/// S3's page size for ListObjectsV2.
const LIST_PAGE_KEYS: usize = 1000;

pub struct LatencyStore<S> {
    inner: Arc<S>,
    latency: Duration,
}

impl<S> LatencyStore<S> {
    pub fn new(inner: S, latency: Duration) -> Self {
        LatencyStore {
            inner: Arc::new(inner),
            latency,
        }
    }

    async fn wait(&self) {
        tokio::time::sleep(self.latency).await;
    }
}

#[async_trait]
impl<S: ObjectStore + 'static> ObjectStore for LatencyStore<S> {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.put(key, body).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let objects = self.inner.list(prefix).await?;
        for _ in 0..objects.len().div_ceil(LIST_PAGE_KEYS).max(1) {
            self.wait().await;
        }
        Ok(objects)
    }

    async fn list_folder(&self, prefix: &str) -> Result<Folder, StoreError> {
        let folder = self.inner.list_folder(prefix).await?;
        // Common prefixes count towards a page's 1,000 keys.
        let keys = folder.objects.len() + folder.folders.len();
        for _ in 0..keys.div_ceil(LIST_PAGE_KEYS).max(1) {
            self.wait().await;
        }
        Ok(folder)
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.wait().await;
        self.inner.get(key).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.delete(keys).await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.wait().await;
        let upload = self.inner.start_upload(key).await?;
        Ok(Box::new(LatencyUpload {
            inner: upload,
            latency: self.latency,
        }))
    }
}

#[async_trait]
impl<S: ConditionalStore + 'static> ConditionalStore for LatencyStore<S> {
    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        precondition: Precondition<'_>,
    ) -> Result<Option<String>, StoreError> {
        self.wait().await;
        self.inner.put_if(key, body, precondition).await
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        self.wait().await;
        self.inner.get_tagged(key).await
    }

    async fn delete_if_match(&self, key: &str, etag: &str) -> Result<bool, StoreError> {
        self.wait().await;
        self.inner.delete_if_match(key, etag).await
    }
}

struct LatencyUpload {
    inner: Box<dyn MultipartUpload>,
    latency: Duration,
}

#[async_trait]
impl MultipartUpload for LatencyUpload {
    async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        tokio::time::sleep(self.latency).await;
        self.inner.upload_part(part).await
    }

    async fn complete(self: Box<Self>) -> Result<(), StoreError> {
        tokio::time::sleep(self.latency).await;
        self.inner.complete().await
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        tokio::time::sleep(self.latency).await;
        self.inner.abort().await
    }
}
