//! The real adapters behind the ports: S3, DynamoDB, CloudWatch, and EMF log lines.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use crate::config::{CommonConfig, MetricsSinkKind};
use crate::ports::{
    ByteStream, Claim, ClaimOutcome, ConditionalStore, CountColdStart, DedupStore, Metric,
    MetricsSink, MultipartUpload, ObjectInfo, ObjectStore, Precondition, StoreError,
};

/// The shared SDK configuration, loaded once at cold start. The SDK reads `AWS_ENDPOINT_URL`
/// itself, so that the standard per-service variables (`AWS_ENDPOINT_URL_DYNAMODB`, …) can still
/// send one service elsewhere, as with every AWS SDK; setting the URL here in code would override
/// them.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        // Transient errors (throttling, 5xx, time-outs) are retried with backoff before a record
        // is reported as failed.
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

/// An SDK error with its whole chain of causes, on one line.
pub fn context(error: impl std::error::Error) -> String {
    DisplayErrorContext(error).to_string()
}

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
        S3ObjectStore {
            client: aws_sdk_s3::Client::from_conf(s3_config),
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
        self.put_request(key, body).send().await.map_err(|e| {
            StoreError::new(format!("PutObject s3://{}/{key}", self.bucket), context(e))
        })?;
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
                StoreError::new(
                    format!("ListObjectsV2 s3://{}/{prefix}", self.bucket),
                    context(e),
                )
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

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let operation = format!("GetObject s3://{}/{key}", self.bucket);
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new(operation.clone(), context(e)))?;
        let stream = futures::stream::unfold(
            (output.body, operation),
            |(mut body, operation)| async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), (body, operation))),
                    Ok(None) => None,
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
                .map_err(|e| StoreError::new(operation.clone(), context(e)))?;
            if let Some(error) = output.errors().first() {
                return Err(StoreError::new(
                    operation,
                    format!(
                        "{} errors, first: {} {}",
                        output.errors().len(),
                        error.key().unwrap_or_default(),
                        error.message().unwrap_or_default()
                    ),
                ));
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
                StoreError::new(
                    format!("CreateMultipartUpload s3://{}/{key}", self.bucket),
                    context(e),
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
            Err(e) => Err(StoreError::new(
                format!("PutObject ({precondition:?}) s3://{}/{key}", self.bucket),
                context(e),
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
            Err(e) => return Err(StoreError::new(operation, context(e))),
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
            Err(e) => Err(StoreError::new(
                format!("DeleteObject (If-Match {etag}) s3://{}/{key}", self.bucket),
                context(e),
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
                StoreError::new(
                    format!("UploadPart {part_number} s3://{}/{}", self.bucket, self.key),
                    context(e),
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
                StoreError::new(
                    format!("CompleteMultipartUpload s3://{}/{}", self.bucket, self.key),
                    context(e),
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
                StoreError::new(
                    format!("AbortMultipartUpload s3://{}/{}", self.bucket, self.key),
                    context(e),
                )
            })?;
        Ok(())
    }
}

/// The dedup table: partition key `event_uuid` (S), `claimed_by` (S), TTL attribute `expires_at` (N).
pub struct DynamoDedupStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// The contract's claim condition, verbatim.
pub const CLAIM_CONDITION: &str =
    "attribute_not_exists(event_uuid) OR claimed_by = :this_event_id OR expires_at < :now";

impl DynamoDedupStore {
    pub fn new(sdk: &SdkConfig, table: &str) -> Self {
        DynamoDedupStore {
            client: aws_sdk_dynamodb::Client::new(sdk),
            table: table.to_string(),
        }
    }
}

#[async_trait]
impl DedupStore for DynamoDedupStore {
    async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                "event_uuid",
                AttributeValue::S(claim.event_uuid.to_string()),
            )
            .item(
                "claimed_by",
                AttributeValue::S(claim.claimed_by.to_string()),
            )
            .item(
                "expires_at",
                AttributeValue::N(claim.expires_at.to_string()),
            )
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(
                ":this_event_id",
                AttributeValue::S(claim.claimed_by.to_string()),
            )
            .expression_attribute_values(":now", AttributeValue::N(claim.now.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(ClaimOutcome::OwnedByAnother)
            }
            Err(e) => Err(StoreError::new(
                format!("PutItem {} {}", self.table, claim.event_uuid),
                context(e),
            )),
        }
    }
}

/// `PutMetricData`, one call per invocation, dimension `FunctionName`.
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    function_name: String,
}

#[async_trait]
impl MetricsSink for CloudWatchMetrics {
    async fn publish(&self, metrics: &[Metric]) -> Result<(), StoreError> {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let dimension = Dimension::builder()
            .name("FunctionName")
            .value(&self.function_name)
            .build();
        let now = aws_sdk_cloudwatch::primitives::DateTime::from(SystemTime::now());
        let data: Vec<MetricDatum> = metrics
            .iter()
            .map(|m| {
                let datum = MetricDatum::builder()
                    .metric_name(m.name)
                    .value(m.value)
                    .unit(StandardUnit::from(m.unit.name()))
                    .timestamp(now)
                    .dimensions(dimension.clone());
                match m.dimension {
                    Some((name, value)) => datum
                        .dimensions(Dimension::builder().name(name).value(value).build())
                        .build(),
                    None => datum.build(),
                }
            })
            .collect();
        // PutMetricData takes at most 1,000 data points per call.
        for chunk in data.chunks(1000) {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    StoreError::new(format!("PutMetricData {}", self.namespace), context(e))
                })?;
        }
        Ok(())
    }
}

/// Embedded Metric Format: one JSON line on stdout that CloudWatch Logs turns into metrics.
pub struct EmfMetrics {
    namespace: String,
    function_name: String,
}

impl EmfMetrics {
    /// One line for the metrics under `FunctionName` alone, and one for each other dimension value
    /// (an EMF document gives each dimension a single value).
    pub fn lines(&self, metrics: &[Metric], timestamp_ms: u128) -> Vec<String> {
        type Dimension = Option<(&'static str, &'static str)>;
        let mut groups: Vec<(Dimension, Vec<&Metric>)> = Vec::new();
        for metric in metrics {
            match groups.iter_mut().find(|(d, _)| *d == metric.dimension) {
                Some((_, group)) => group.push(metric),
                None => groups.push((metric.dimension, vec![metric])),
            }
        }
        groups
            .into_iter()
            .map(|(dimension, group)| {
                let definitions: Vec<serde_json::Value> = group
                    .iter()
                    .map(|m| serde_json::json!({"Name": m.name, "Unit": m.unit.name()}))
                    .collect();
                let dimensions = match dimension {
                    Some((name, _)) => serde_json::json!([["FunctionName", name]]),
                    None => serde_json::json!([["FunctionName"]]),
                };
                let mut root = serde_json::json!({
                    "_aws": {
                        "Timestamp": timestamp_ms as u64,
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": dimensions,
                            "Metrics": definitions,
                        }]
                    },
                    "FunctionName": self.function_name,
                });
                if let Some((name, value)) = dimension {
                    root[name] = serde_json::json!(value);
                }
                for m in group {
                    root[m.name] = serde_json::json!(m.value);
                }
                root.to_string()
            })
            .collect()
    }
}

#[async_trait]
impl MetricsSink for EmfMetrics {
    async fn publish(&self, metrics: &[Metric]) -> Result<(), StoreError> {
        let now = (crate::time::now_micros() / 1000) as u128;
        let mut out = String::new();
        for line in self.lines(metrics, now) {
            out.push_str(&line);
            out.push('\n');
        }
        std::io::stdout()
            .lock()
            .write_all(out.as_bytes())
            .map_err(|e| StoreError::new("EMF write to stdout", e.to_string()))
    }
}

pub struct NoMetrics;

#[async_trait]
impl MetricsSink for NoMetrics {
    async fn publish(&self, _: &[Metric]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The sink `METRICS_SINK` asks for.
pub fn metrics_sink(sdk: &SdkConfig, config: &CommonConfig) -> Box<dyn MetricsSink> {
    match config.metrics_sink {
        MetricsSinkKind::Emf => Box::new(CountColdStart::new(EmfMetrics {
            namespace: config.metrics_namespace.clone(),
            function_name: config.function_name.clone(),
        })),
        MetricsSinkKind::CloudWatch => Box::new(CountColdStart::new(CloudWatchMetrics {
            client: aws_sdk_cloudwatch::Client::new(sdk),
            namespace: config.metrics_namespace.clone(),
            function_name: config.function_name.clone(),
        })),
        MetricsSinkKind::Off => Box::new(NoMetrics),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_declare_every_metric_under_the_function_and_its_own_dimension() {
        let emf = EmfMetrics {
            namespace: "EventPipeline".into(),
            function_name: "ingest".into(),
        };
        let lines = emf.lines(
            &[
                Metric::count("RecordsReceived", 3),
                Metric::bytes("StagingBytesWritten", 10),
                Metric::count("RecordsQuarantinedByReason", 2).by("Reason", "invalid_json"),
                Metric::count("RecordsQuarantinedByReason", 1).by("Reason", "not_utf8"),
            ],
            1_700_000_000_000,
        );
        let v: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 3);
        let directive = &v[0]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "EventPipeline");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["FunctionName"]])
        );
        assert_eq!(directive["Metrics"][1]["Unit"], "Bytes");
        assert_eq!(v[0]["FunctionName"], "ingest");
        assert_eq!(v[0]["RecordsReceived"], 3.0);
        assert_eq!(v[0]["_aws"]["Timestamp"], 1_700_000_000_000u64);
        for (line, reason, count) in [(&v[1], "invalid_json", 2.0), (&v[2], "not_utf8", 1.0)] {
            let directive = &line["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(
                directive["Dimensions"],
                serde_json::json!([["FunctionName", "Reason"]])
            );
            assert_eq!(
                directive["Metrics"],
                serde_json::json!([{"Name": "RecordsQuarantinedByReason", "Unit": "Count"}])
            );
            assert_eq!(
                (&line["Reason"], &line["RecordsQuarantinedByReason"]),
                (&serde_json::json!(reason), &serde_json::json!(count))
            );
        }
    }
}
