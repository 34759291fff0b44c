//! The object store on S3: staging, quarantine and the lake, with multipart uploads for Parquet and
//! conditional writes for the compaction lease.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use super::{context, store_error};
use crate::config::CommonConfig;
use crate::ports::{
    ByteStream, ConditionalStore, FailureKind, Folder, MultipartUpload, ObjectInfo, ObjectStore,
    Precondition, StoreError,
};

/// The data-lake bucket.
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3ObjectStore {
    /// PutObject of `body` at `key`, with its content type: plain or conditional.
    fn put_request(
        &self,
        key: &str,
        body: Bytes,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .body(body.into())
    }

    pub fn new(sdk: &SdkConfig, config: &CommonConfig) -> Self {
        // Emulators serve buckets by path, not by virtual host.
        Self::for_bucket(sdk, &config.bucket, config.endpoint_url.is_some())
    }

    pub fn for_bucket(sdk: &SdkConfig, bucket: &str, path_style: bool) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build();
        Self::from_client(aws_sdk_s3::Client::from_conf(s3_config), bucket)
    }

    /// Over a client built elsewhere (tests answer it offline).
    pub fn from_client(client: aws_sdk_s3::Client, bucket: &str) -> Self {
        S3ObjectStore {
            client,
            bucket: bucket.to_string(),
        }
    }
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".ndjson") {
        "application/x-ndjson"
    } else if key.ends_with(".parquet") {
        "application/vnd.apache.parquet"
    } else {
        "application/octet-stream"
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_request(key, body)
            .send()
            .await
            .map_err(|e| store_error(format!("PutObject s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                store_error(format!("ListObjectsV2 s3://{}/{prefix}", self.bucket), e)
            })?;
            objects.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                })
            }));
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn list_folder(&self, prefix: &str) -> Result<Folder, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut folder = Folder::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                store_error(
                    format!("ListObjectsV2 s3://{}/{prefix} (delimiter /)", self.bucket),
                    e,
                )
            })?;
            folder
                .objects
                .extend(page.contents().iter().filter_map(|o| {
                    Some(ObjectInfo {
                        key: o.key()?.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    })
                }));
            let names = page.common_prefixes().iter();
            folder
                .folders
                .extend(names.filter_map(|p| Some(p.prefix()?.to_string())));
        }
        folder.objects.sort_by(|a, b| a.key.cmp(&b.key));
        folder.folders.sort();
        Ok(folder)
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let operation = format!("GetObject s3://{}/{key}", self.bucket);
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error(operation.clone(), e))?;
        let stream = futures::stream::unfold(
            (output.body, operation),
            |(mut body, operation)| async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), (body, operation))),
                    Ok(None) => None,
                    // A body cut off mid-stream: reading the object again may succeed.
                    Err(e) => Some((
                        Err(StoreError::new(operation.clone(), context(e))),
                        (body, operation),
                    )),
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        // DeleteObjects takes at most 1,000 keys.
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::new("DeleteObjects", e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::new("DeleteObjects", e.to_string()))?;
            let operation = format!("DeleteObjects s3://{}/ ({} keys)", self.bucket, chunk.len());
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| store_error(operation.clone(), e))?;
            // A 200 that lists keys it could not delete: failed as a whole, transient only if
            // every key's error is (S3 reports InternalError or SlowDown per key).
            if let Some(error) = output.errors().first() {
                let kind = if output
                    .errors()
                    .iter()
                    .all(|e| super::is_transient_code(e.code()))
                {
                    FailureKind::Transient
                } else {
                    FailureKind::Permanent
                };
                return Err(StoreError::new(
                    operation,
                    format!(
                        "{} errors, first: {} {} {}",
                        output.errors().len(),
                        error.key().unwrap_or_default(),
                        error.code().unwrap_or_default(),
                        error.message().unwrap_or_default()
                    ),
                )
                .with_kind(kind));
            }
        }
        Ok(())
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("CreateMultipartUpload s3://{}/{key}", self.bucket),
                    e,
                )
            })?;
        let upload_id = output
            .upload_id()
            .ok_or_else(|| StoreError::new("CreateMultipartUpload", "no upload id returned"))?
            .to_string();
        Ok(Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
        }))
    }
}

/// The HTTP status of a failed request, when a response came back.
fn status<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
}

/// S3 answers a precondition that does not hold with 412 PreconditionFailed; a conditional request
/// that lost to a concurrent one on the same key with 409 ConditionalRequestConflict; an `If-Match`
/// on a key with no object with 404 NoSuchKey (S3 User Guide, "How to prevent object overwrites
/// with conditional writes" and "How to perform conditional deletes").
fn precondition_not_met(status: Option<u16>) -> bool {
    matches!(status, Some(412 | 409 | 404))
}

#[async_trait]
impl ConditionalStore for S3ObjectStore {
    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        precondition: Precondition<'_>,
    ) -> Result<Option<String>, StoreError> {
        let request = self.put_request(key, body);
        let request = match precondition {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Matches(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(output) => Ok(Some(output.e_tag().unwrap_or_default().to_string())),
            Err(e) if precondition_not_met(status(&e)) => Ok(None),
            Err(e) => Err(store_error(
                format!("PutObject ({precondition:?}) s3://{}/{key}", self.bucket),
                e,
            )),
        }
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        let operation = format!("GetObject s3://{}/{key}", self.bucket);
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(store_error(operation, e)),
        };
        let etag = output.e_tag().unwrap_or_default().to_string();
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::new(operation, context(e)))?;
        Ok(Some((body.into_bytes(), etag)))
    }

    async fn delete_if_match(&self, key: &str, etag: &str) -> Result<bool, StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if precondition_not_met(status(&e)) => Ok(false),
            Err(e) => Err(store_error(
                format!("DeleteObject (If-Match {etag}) s3://{}/{key}", self.bucket),
                e,
            )),
        }
    }
}

struct S3Upload {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

#[async_trait]
impl MultipartUpload for S3Upload {
    async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let part_number = self.parts.len() as i32 + 1;
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(part_number)
            .body(part.into())
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("UploadPart {part_number} s3://{}/{}", self.bucket, self.key),
                    e,
                )
            })?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(output.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<(), StoreError> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("CompleteMultipartUpload s3://{}/{}", self.bucket, self.key),
                    e,
                )
            })?;
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("AbortMultipartUpload s3://{}/{}", self.bucket, self.key),
                    e,
                )
            })?;
        Ok(())
    }
}
