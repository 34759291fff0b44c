//! Creates the pipeline's resources on a local emulator: the same code path for moto (tests, demo)
//! and for LocalStack's init hook. Every step is idempotent.

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};

/// The SDK configuration for a local emulator at `endpoint` (fixed test credentials, us-east-1).
pub async fn local_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
        .load()
        .await
}

pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<()> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .with_context(|| format!("creating bucket {bucket}"))?;
    Ok(())
}

/// The dedup table of the contract: key `event_uuid` (S), TTL on `expires_at`, on-demand.
pub async fn ensure_dedup_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<()> {
    if dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_err()
    {
        dynamodb
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("event_uuid")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("event_uuid")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("creating table {table}"))?;
    }
    let ttl = dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()?,
        )
        .send()
        .await;
    if let Err(e) = ttl {
        // Re-enabling TTL on a table that has it is an error in AWS; that is fine here.
        let text = aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string();
        if !text.contains("already enabled") {
            return Err(e).with_context(|| format!("enabling TTL on {table}"));
        }
    }
    Ok(())
}

/// A Kinesis stream with `shards` shards, waited on until ACTIVE. True when it was created now.
pub async fn ensure_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> anyhow::Result<bool> {
    let created = if kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .is_err()
    {
        kinesis
            .create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send()
            .await
            .with_context(|| format!("creating stream {stream}"))?;
        true
    } else {
        false
    };
    for _ in 0..100 {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return Ok(created);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("stream {stream} did not become ACTIVE")
}
