//! A Parquet file written straight to the object store: parts of exactly `part_size` bytes go up as
//! a multipart upload while the file is still being encoded; a file smaller than one part is a
//! single PUT.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use pipeline::ports::{MultipartUpload, ObjectStore, StoreError};

pub struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    key: String,
    part_size: usize,
    buffer: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    bytes: u64,
}

fn external(error: StoreError) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl ObjectFile {
    pub fn new(store: Arc<dyn ObjectStore>, key: String, part_size: usize) -> ObjectFile {
        ObjectFile {
            store,
            key,
            part_size,
            buffer: Vec::new(),
            upload: None,
            bytes: 0,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes handed to the file so far (its size once complete).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives up an unfinished file so no orphaned parts are left behind (best effort).
    pub async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            if let Err(error) = upload.abort().await {
                tracing::warn!(%error, key = self.key, "could not abort multipart upload");
            }
        }
    }

    async fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self
                .upload
                .insert(self.store.start_upload(&self.key).await?),
        };
        upload.upload_part(part).await
    }
}

impl AsyncFileWriter for ObjectFile {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            self.bytes += bs.len() as u64;
            // Parts of exactly `part_size` (the last one smaller): a file of n bytes is
            // ceil(n / part_size) parts, each within S3's bounds. A row group arrives as one
            // write (the writer hands over its buffer): with nothing pending, the parts are
            // slices of it; otherwise what is pending and the write are joined once. Only the
            // remainder below a part is copied into the buffer.
            let mut pending = if self.buffer.is_empty() && bs.len() >= self.part_size {
                bs
            } else {
                self.buffer.extend_from_slice(&bs);
                if self.buffer.len() < self.part_size {
                    return Ok(());
                }
                Bytes::from(std::mem::take(&mut self.buffer))
            };
            while pending.len() >= self.part_size {
                let part = pending.split_to(self.part_size);
                self.send_part(part).await.map_err(external)?;
            }
            self.buffer.extend_from_slice(&pending);
            Ok(())
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            if self.upload.is_none() {
                let body = Bytes::from(std::mem::take(&mut self.buffer));
                return self.store.put(&self.key, body).await.map_err(external);
            }
            if !self.buffer.is_empty() {
                let last = Bytes::from(std::mem::take(&mut self.buffer));
                self.send_part(last).await.map_err(external)?;
            }
            let upload = self.upload.take().expect("checked above");
            upload.complete().await.map_err(external)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use pipeline::memory::MemoryObjectStore;
    use pipeline::ports::{ByteStream, ObjectInfo};

    use super::*;

    /// A memory store that remembers the size of every multipart part sent to it.
    #[derive(Clone, Default)]
    struct PartSizes {
        inner: MemoryObjectStore,
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    struct Recording {
        inner: Box<dyn MultipartUpload>,
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    #[async_trait]
    impl MultipartUpload for Recording {
        async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError> {
            self.sizes.lock().unwrap().push(part.len());
            self.inner.upload_part(part).await
        }
        async fn complete(self: Box<Self>) -> Result<(), StoreError> {
            self.inner.complete().await
        }
        async fn abort(self: Box<Self>) -> Result<(), StoreError> {
            self.inner.abort().await
        }
    }

    #[async_trait]
    impl ObjectStore for PartSizes {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
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
            Ok(Box::new(Recording {
                inner: self.inner.start_upload(key).await?,
                sizes: self.sizes.clone(),
            }))
        }
    }

    #[tokio::test]
    async fn every_part_but_the_last_is_exactly_the_part_size() {
        let store = PartSizes::default();
        let mut file = ObjectFile::new(Arc::new(store.clone()), "k".into(), 10);
        let writes: [&[u8]; 4] = [b"abcd", &[b'x'; 25], b"yz!", b"."];
        for bytes in writes {
            file.write(Bytes::copy_from_slice(bytes)).await.unwrap();
        }
        file.complete().await.unwrap();
        assert_eq!(*store.sizes.lock().unwrap(), [10, 10, 10, 3]);
        assert_eq!(store.inner.object("k").unwrap(), writes.concat());
        assert_eq!(file.bytes(), 33);

        // A write of more than a part with nothing pending is cut into parts as it is.
        let store = PartSizes::default();
        let mut file = ObjectFile::new(Arc::new(store.clone()), "k".into(), 10);
        let writes: [&[u8]; 3] = [&[b'x'; 25], b"ab", &[b'y'; 8]];
        for bytes in writes {
            file.write(Bytes::copy_from_slice(bytes)).await.unwrap();
        }
        file.complete().await.unwrap();
        assert_eq!(*store.sizes.lock().unwrap(), [10, 10, 10, 5]);
        assert_eq!(store.inner.object("k").unwrap(), writes.concat());
    }
}
