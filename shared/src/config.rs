//! The environment both functions read once at cold start (contract: Configuration).

use crate::layout::{Prefixes, MAX_PREFIX_BYTES};

/// `METRICS_NAMESPACE` when unset (contract: Configuration).
pub const DEFAULT_METRICS_NAMESPACE: &str = "EventPipeline";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSinkKind {
    /// Embedded Metric Format lines on stdout, turned into metrics by CloudWatch Logs.
    Emf,
    /// `PutMetricData` calls.
    CloudWatch,
    Off,
}

/// Settings both functions share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    pub bucket: String,
    pub prefixes: Prefixes,
    pub metrics_namespace: String,
    pub metrics_sink: MetricsSinkKind,
    /// `AWS_ENDPOINT_URL`: when set, every client uses it (the SDK reads it, and lets a standard
    /// per-service `AWS_ENDPOINT_URL_<SERVICE>` win) and S3 switches to path-style addressing.
    pub endpoint_url: Option<String>,
    /// The dimension value of every metric: Lambda's `AWS_LAMBDA_FUNCTION_NAME`, else the binary's name.
    pub function_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    pub common: CommonConfig,
    pub dedup_table: String,
    pub dedup_ttl_seconds: i64,
}

pub const DEFAULT_DEDUP_TTL_SECONDS: i64 = 604_800;

/// What `compact` reads besides the common settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactConfig {
    pub common: CommonConfig,
    /// `STAGING_RETENTION_DAYS`: how long staging is kept (the bucket's lifecycle rule). The
    /// scheduled run looks this far back for days whose staging changed since their compaction.
    pub staging_retention_days: u32,
    /// `GLUE_DATABASE` and `GLUE_TABLE`: the table whose partitions compaction registers; none
    /// when both are unset.
    pub glue_table: Option<GlueTable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlueTable {
    pub database: String,
    pub table: String,
}

pub const DEFAULT_STAGING_RETENTION_DAYS: u32 = 14;

impl CompactConfig {
    pub fn from_lookup(lookup: Lookup) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_lookup(lookup, "compact")?;
        let staging_retention_days = match optional(lookup, "STAGING_RETENTION_DAYS") {
            None => DEFAULT_STAGING_RETENTION_DAYS,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|days| (1..=3650).contains(days))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "STAGING_RETENTION_DAYS",
                    why: format!("`{text}` is not a whole number of days from 1 to 3650"),
                })?,
        };
        let glue_table = match (
            optional(lookup, "GLUE_DATABASE"),
            optional(lookup, "GLUE_TABLE"),
        ) {
            (None, None) => None,
            (Some(database), Some(table)) => Some(GlueTable { database, table }),
            (Some(_), None) => return Err(ConfigError::Missing("GLUE_TABLE")),
            (None, Some(_)) => return Err(ConfigError::Missing("GLUE_DATABASE")),
        };
        Ok(CompactConfig {
            common,
            staging_retention_days,
            glue_table,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&env_lookup)
    }
}

/// Reads a variable through `lookup` (the process environment in the binaries, a map in tests).
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl CommonConfig {
    pub fn from_lookup(lookup: Lookup, default_function_name: &str) -> Result<Self, ConfigError> {
        let bucket = required(lookup, "DATA_LAKE_BUCKET")?;
        if !valid_bucket_name(&bucket) {
            return Err(ConfigError::Invalid {
                name: "DATA_LAKE_BUCKET",
                why: format!("`{bucket}` is not an S3 bucket name"),
            });
        }
        let prefixes = Prefixes {
            staging: prefix(lookup, "STAGING_PREFIX", "staging")?,
            quarantine: prefix(lookup, "QUARANTINE_PREFIX", "quarantine")?,
            processed: prefix(lookup, "PROCESSED_PREFIX", "processed")?,
        };
        let metrics_namespace = optional(lookup, "METRICS_NAMESPACE")
            .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.into());
        let metrics_sink = match optional(lookup, "METRICS_SINK").as_deref() {
            None | Some("emf") => MetricsSinkKind::Emf,
            Some("cloudwatch") => MetricsSinkKind::CloudWatch,
            Some("off") => MetricsSinkKind::Off,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "METRICS_SINK",
                    why: format!("`{other}` is not one of emf, cloudwatch, off"),
                })
            }
        };
        let endpoint_url = optional(lookup, "AWS_ENDPOINT_URL");
        if let Some(url) = &endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    name: "AWS_ENDPOINT_URL",
                    why: format!("`{url}` is not an http(s) URL"),
                });
            }
        }
        let function_name = optional(lookup, "AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|| default_function_name.to_string());
        Ok(CommonConfig {
            bucket,
            prefixes,
            metrics_namespace,
            metrics_sink,
            endpoint_url,
            function_name,
        })
    }

    pub fn from_env(default_function_name: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(&env_lookup, default_function_name)
    }
}

impl IngestConfig {
    pub fn from_lookup(lookup: Lookup) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_lookup(lookup, "ingest")?;
        let dedup_table = required(lookup, "DEDUP_TABLE")?;
        let dedup_ttl_seconds = match optional(lookup, "DEDUP_TTL_SECONDS") {
            None => DEFAULT_DEDUP_TTL_SECONDS,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|&ttl| ttl > 0)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "DEDUP_TTL_SECONDS",
                    why: format!("`{text}` is not a positive whole number of seconds"),
                })?,
        };
        Ok(IngestConfig {
            common,
            dedup_table,
            dedup_ttl_seconds,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&env_lookup)
    }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Unset and empty are the same: both mean "use the default".
fn optional(lookup: Lookup, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(lookup: Lookup, name: &'static str) -> Result<String, ConfigError> {
    optional(lookup, name).ok_or(ConfigError::Missing(name))
}

fn prefix(lookup: Lookup, name: &'static str, default: &str) -> Result<String, ConfigError> {
    let Some(value) = optional(lookup, name) else {
        return Ok(default.to_string());
    };
    let trimmed = value.trim_matches('/');
    if trimmed.len() > MAX_PREFIX_BYTES {
        return Err(ConfigError::Invalid {
            name,
            why: format!(
                "{} bytes is longer than {MAX_PREFIX_BYTES}: keys under it could pass S3's 1,024-byte limit",
                trimmed.len()
            ),
        });
    }
    let bad_segment = trimmed
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if bad_segment {
        return Err(ConfigError::Invalid {
            name,
            why: format!("`{value}` is not a key prefix like `staging` or `lake/staging`"),
        });
    }
    Ok(trimmed.to_string())
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ingest(vars: &[(&str, &str)]) -> Result<IngestConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        IngestConfig::from_lookup(&move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = ingest(&[("DATA_LAKE_BUCKET", "lake"), ("DEDUP_TABLE", "dedup")]).unwrap();
        assert_eq!(c.dedup_ttl_seconds, 604_800);
        assert_eq!(c.common.prefixes, Prefixes::default());
        assert_eq!(c.common.metrics_namespace, "EventPipeline");
        assert_eq!(c.common.metrics_sink, MetricsSinkKind::Emf);
        assert_eq!(c.common.endpoint_url, None);
        assert_eq!(c.common.function_name, "ingest");
    }

    #[test]
    fn every_error_names_its_variable() {
        let base = [("DATA_LAKE_BUCKET", "lake"), ("DEDUP_TABLE", "dedup")];
        let long_prefix = "q".repeat(MAX_PREFIX_BYTES + 1);
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("DEDUP_TABLE", "dedup")], "DATA_LAKE_BUCKET"),
            (vec![("DATA_LAKE_BUCKET", "lake")], "DEDUP_TABLE"),
            (
                vec![("DATA_LAKE_BUCKET", "Not_A_Bucket"), ("DEDUP_TABLE", "d")],
                "DATA_LAKE_BUCKET",
            ),
            (
                [&base[..], &[("DEDUP_TTL_SECONDS", "a week")]].concat(),
                "DEDUP_TTL_SECONDS",
            ),
            (
                [&base[..], &[("DEDUP_TTL_SECONDS", "-1")]].concat(),
                "DEDUP_TTL_SECONDS",
            ),
            (
                [&base[..], &[("METRICS_SINK", "statsd")]].concat(),
                "METRICS_SINK",
            ),
            (
                [&base[..], &[("STAGING_PREFIX", "a//b")]].concat(),
                "STAGING_PREFIX",
            ),
            (
                [&base[..], &[("PROCESSED_PREFIX", "../up")]].concat(),
                "PROCESSED_PREFIX",
            ),
            (
                [&base[..], &[("AWS_ENDPOINT_URL", "localhost:4566")]].concat(),
                "AWS_ENDPOINT_URL",
            ),
            (
                [&base[..], &[("QUARANTINE_PREFIX", long_prefix.as_str())]].concat(),
                "QUARANTINE_PREFIX",
            ),
        ];
        for (vars, name) in cases {
            let err = ingest(&vars).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err} should name {name}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn compaction_reads_the_staging_retention() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = CompactConfig::from_lookup(&lookup(&[("DATA_LAKE_BUCKET", "lake")])).unwrap();
        assert_eq!(c.staging_retention_days, DEFAULT_STAGING_RETENTION_DAYS);
        let c = CompactConfig::from_lookup(&lookup(&[
            ("DATA_LAKE_BUCKET", "lake"),
            ("STAGING_RETENTION_DAYS", "3"),
        ]))
        .unwrap();
        assert_eq!(c.staging_retention_days, 3);
        let err = CompactConfig::from_lookup(&lookup(&[
            ("DATA_LAKE_BUCKET", "lake"),
            ("STAGING_RETENTION_DAYS", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("STAGING_RETENTION_DAYS"));
        assert_eq!(c.glue_table, None);
        let c = CompactConfig::from_lookup(&lookup(&[
            ("DATA_LAKE_BUCKET", "lake"),
            ("GLUE_DATABASE", "lake_db"),
            ("GLUE_TABLE", "events"),
        ]))
        .unwrap();
        assert_eq!(
            c.glue_table,
            Some(GlueTable {
                database: "lake_db".into(),
                table: "events".into()
            })
        );
        let err = CompactConfig::from_lookup(&lookup(&[
            ("DATA_LAKE_BUCKET", "lake"),
            ("GLUE_DATABASE", "lake_db"),
        ]))
        .unwrap_err();
        assert_eq!(err.to_string(), "GLUE_TABLE is required but not set");
    }

    #[test]
    fn prefixes_lose_their_slashes() {
        let c = ingest(&[
            ("DATA_LAKE_BUCKET", "lake"),
            ("DEDUP_TABLE", "dedup"),
            ("STAGING_PREFIX", "/lake/staging/"),
            ("METRICS_SINK", "off"),
        ])
        .unwrap();
        assert_eq!(c.common.prefixes.staging, "lake/staging");
        assert_eq!(c.common.metrics_sink, MetricsSinkKind::Off);
    }
}
