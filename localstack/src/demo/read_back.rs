//! What the demo reads back from the emulators after the run: keys, quarantine reasons, the lake
//! (downloaded, summarised by DuckDB) and the functions' metrics from CloudWatch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use pipeline::metric_names::FUNCTION_NAME;
use pipeline::quarantine_line::QuarantineLine;
use serde_json::Value;

pub async fn list_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        keys.extend(
            page?
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    Ok(keys)
}

async fn object_bytes(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<bytes::Bytes> {
    let output = s3.get_object().bucket(bucket).key(key).send().await?;
    Ok(output.body.collect().await?.into_bytes())
}

pub async fn quarantine_reasons(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut reasons = BTreeMap::new();
    for key in list_keys(s3, bucket, "quarantine/").await? {
        let body = object_bytes(s3, bucket, &key).await?;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = QuarantineLine::parse(std::str::from_utf8(line)?)
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            *reasons.entry(line.reason.code().to_string()).or_default() += 1;
        }
    }
    Ok(reasons)
}

pub async fn download_processed(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    for key in list_keys(s3, bucket, "processed/").await? {
        let body = object_bytes(s3, bucket, &key).await?;
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().expect("keys have folders"))?;
        std::fs::write(path, body)?;
    }
    Ok(())
}

pub fn lake_summary(dir: &Path) -> anyhow::Result<Value> {
    let python = std::env::var("PIPELINE_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("lake_summary.py");
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(dir)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !output.status.success() {
        bail!(
            "lake_summary.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

pub async fn metric_sum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    function: &str,
    name: &str,
    from: SystemTime,
) -> anyhow::Result<f64> {
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let output = cloudwatch
        .get_metric_statistics()
        .namespace(pipeline::config::DEFAULT_METRICS_NAMESPACE)
        .metric_name(name)
        .dimensions(
            Dimension::builder()
                .name(FUNCTION_NAME)
                .value(function)
                .build(),
        )
        .start_time(from.into())
        .end_time((SystemTime::now() + Duration::from_secs(3600)).into())
        .period(86_400)
        .statistics(Statistic::Sum)
        .send()
        .await
        .with_context(|| format!("GetMetricStatistics {function} {name}"))?;
    Ok(output.datapoints().iter().filter_map(|d| d.sum()).sum())
}
