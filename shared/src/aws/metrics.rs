//! The metrics sinks: CloudWatch `PutMetricData`, Embedded Metric Format lines on stdout, or none.

use std::io::Write as _;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::store_error;
use crate::config::{CommonConfig, MetricsSinkKind};
use crate::metric_names::FUNCTION_NAME;
use crate::ports::{CountColdStart, Metric, MetricsSink, StoreError};

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
            .name(FUNCTION_NAME)
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
                .map_err(|e| store_error(format!("PutMetricData {}", self.namespace), e))?;
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
                    Some((name, _)) => serde_json::json!([[FUNCTION_NAME, name]]),
                    None => serde_json::json!([[FUNCTION_NAME]]),
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
                });
                root[FUNCTION_NAME] = serde_json::json!(self.function_name);
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
    use crate::metric_names::{ingest, REASON};

    #[test]
    fn emf_lines_declare_every_metric_under_the_function_and_its_own_dimension() {
        let emf = EmfMetrics {
            namespace: "EventPipeline".into(),
            function_name: "ingest".into(),
        };
        let lines = emf.lines(
            &[
                Metric::count(ingest::RECORDS_RECEIVED, 3),
                Metric::bytes(ingest::STAGING_BYTES_WRITTEN, 10),
                Metric::count(ingest::RECORDS_QUARANTINED_BY_REASON, 2).by(REASON, "invalid_json"),
                Metric::count(ingest::RECORDS_QUARANTINED_BY_REASON, 1).by(REASON, "not_utf8"),
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
        assert_eq!(v[0][ingest::RECORDS_RECEIVED], 3.0);
        assert_eq!(v[0]["_aws"]["Timestamp"], 1_700_000_000_000u64);
        for (line, reason, count) in [(&v[1], "invalid_json", 2.0), (&v[2], "not_utf8", 1.0)] {
            let directive = &line["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(
                directive["Dimensions"],
                serde_json::json!([["FunctionName", "Reason"]])
            );
            assert_eq!(
                directive["Metrics"],
                serde_json::json!([{"Name": ingest::RECORDS_QUARANTINED_BY_REASON, "Unit": "Count"}])
            );
            assert_eq!(
                (
                    &line["Reason"],
                    &line[ingest::RECORDS_QUARANTINED_BY_REASON]
                ),
                (&serde_json::json!(reason), &serde_json::json!(count))
            );
        }
    }
}
