//! Every metric name and dimension the pipeline publishes (contract: Metrics), in one place. The
//! functions, `redrive`, the demo and the tests name metrics through these constants, and a test
//! holds the Terraform dashboard and alarms (`infra/monitoring.tf`) to them.

/// The dimension every metric carries: the publishing function's name.
pub const FUNCTION_NAME: &str = "FunctionName";
/// The second dimension of [`ingest::RECORDS_QUARANTINED_BY_REASON`]: the reason code.
pub const REASON: &str = "Reason";
/// Counted once per process, on its first publish, as Powertools for AWS Lambda counts cold starts.
pub const COLD_START: &str = "ColdStart";

/// What `ingest` publishes per invocation (`redrive` publishes the same names under its own
/// `FunctionName`).
pub mod ingest {
    pub const RECORDS_RECEIVED: &str = "RecordsReceived";
    pub const EVENTS_WRITTEN: &str = "EventsWritten";
    pub const DUPLICATES_DROPPED: &str = "DuplicatesDropped";
    pub const RECORDS_QUARANTINED: &str = "RecordsQuarantined";
    pub const BATCH_ITEM_FAILURES: &str = "BatchItemFailures";
    pub const STAGING_BYTES_WRITTEN: &str = "StagingBytesWritten";
    /// Under a name of its own, with [`super::REASON`]: a query for `RecordsQuarantined` by
    /// `FunctionName` alone would then count nothing twice (the local emulator matches extra
    /// dimensions).
    pub const RECORDS_QUARANTINED_BY_REASON: &str = "RecordsQuarantinedByReason";

    pub const ALL: [&str; 7] = [
        RECORDS_RECEIVED,
        EVENTS_WRITTEN,
        DUPLICATES_DROPPED,
        RECORDS_QUARANTINED,
        BATCH_ITEM_FAILURES,
        STAGING_BYTES_WRITTEN,
        RECORDS_QUARANTINED_BY_REASON,
    ];
}

/// What `compact` publishes per invocation (summed over the day and the days it caught up).
pub mod compact {
    pub const EVENTS_COMPACTED: &str = "EventsCompacted";
    pub const DUPLICATES_REMOVED: &str = "DuplicatesRemoved";
    pub const PARQUET_FILES_WRITTEN: &str = "ParquetFilesWritten";
    pub const PARQUET_BYTES_WRITTEN: &str = "ParquetBytesWritten";
    pub const LINES_QUARANTINED: &str = "LinesQuarantined";
    pub const DAYS_RECOMPACTED: &str = "DaysRecompacted";
    pub const LATE_OBJECTS_FOUND: &str = "LateObjectsFound";

    pub const ALL: [&str; 7] = [
        EVENTS_COMPACTED,
        DUPLICATES_REMOVED,
        PARQUET_FILES_WRITTEN,
        PARQUET_BYTES_WRITTEN,
        LINES_QUARANTINED,
        DAYS_RECOMPACTED,
        LATE_OBJECTS_FOUND,
    ];
}

/// Every name either function publishes.
pub fn all() -> impl Iterator<Item = &'static str> {
    ingest::ALL
        .into_iter()
        .chain(compact::ALL)
        .chain([COLD_START])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The metrics of the pipeline's own namespace that `infra/monitoring.tf` draws or alarms on:
    /// dashboard rows `[local.namespace, "Name", …]`, `SEARCH` expressions `MetricName=\"Name\"`,
    /// and `metric_name = "Name"` in a block whose `namespace = local.namespace`.
    fn terraform_metric_names(tf: &str) -> BTreeSet<String> {
        let quoted_after = |text: &str, marker: &str| -> Vec<String> {
            text.match_indices(marker)
                .filter_map(|(at, _)| {
                    let rest = text[at + marker.len()..].trim_start_matches([' ', '=', '\\', '"']);
                    let end = rest.find(['"', '\\'])?;
                    Some(rest[..end].to_string())
                })
                .collect()
        };
        let mut names: BTreeSet<String> = quoted_after(tf, "[local.namespace,")
            .into_iter()
            .chain(quoted_after(tf, "MetricName="))
            .collect();
        // Blocks are separated by the line that names their namespace.
        let mut namespace = "";
        for line in tf.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("namespace") {
                namespace = value.trim_start_matches([' ', '=']).trim();
            }
            if namespace == "local.namespace" {
                names.extend(quoted_after(line, "metric_name"));
            }
        }
        names
    }

    #[test]
    fn the_dashboard_and_alarms_name_exactly_the_published_metrics() {
        let tf = include_str!("../../infra/monitoring.tf");
        let on_dashboard = terraform_metric_names(tf);
        let published: BTreeSet<String> = all().map(str::to_string).collect();
        let unknown: Vec<_> = on_dashboard.difference(&published).collect();
        assert!(
            unknown.is_empty(),
            "infra/monitoring.tf names metrics nothing publishes: {unknown:?}"
        );
        let unwatched: Vec<_> = published.difference(&on_dashboard).collect();
        assert!(
            unwatched.is_empty(),
            "published but on no dashboard widget or alarm: {unwatched:?}"
        );
        assert!(tf.contains(&format!("\"{FUNCTION_NAME}\", local.ingest_name")));
        assert!(tf.contains(&format!(
            "{{${{local.namespace}},{FUNCTION_NAME},{REASON}}}"
        )));
    }

    #[test]
    fn the_dashboard_reader_finds_a_renamed_metric() {
        let tf = r#"
          namespace   = local.namespace
          metric_name = "RecordsRecieved"
          [local.namespace, "EventsWriten", "FunctionName", local.ingest_name],
          expression = "SEARCH('{x} MetricName=\"ByReason\" FunctionName=\"f\"', 'Sum', 300)"
          namespace   = "AWS/Lambda"
          metric_name = "Errors"
        "#;
        let names: Vec<String> = terraform_metric_names(tf).into_iter().collect();
        assert_eq!(names, ["ByReason", "EventsWriten", "RecordsRecieved"]);
    }
}
