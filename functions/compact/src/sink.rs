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

    /// Sends the first `len` buffered bytes as the next part.
    async fn send_part(&mut self, len: usize) -> Result<(), StoreError> {
        let rest = self.buffer.split_off(len);
        let part = Bytes::from(std::mem::replace(&mut self.buffer, rest));
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
            self.buffer.extend_from_slice(&bs);
            // Parts of exactly `part_size` (the last one smaller): a file of n bytes is
            // ceil(n / part_size) parts, each within S3's bounds.
            while self.buffer.len() >= self.part_size {
                self.send_part(self.part_size).await.map_err(external)?;
            }
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
                self.send_part(self.buffer.len()).await.map_err(external)?;
            }
            let upload = self.upload.take().expect("checked above");
            upload.complete().await.map_err(external)
        }
        .boxed()
    }
}
