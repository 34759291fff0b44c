//! The demo's verdict: the pipeline held against the producer's own ledger, not against itself.

use std::collections::BTreeMap;

use super::report::thousands;
use super::DemoRun;

/// Fails unless the lake holds exactly what the producer sent: counts, reasons and ids.
pub fn check(run: &DemoRun) -> anyhow::Result<()> {
    let mismatches = ledger_mismatches(
        &run.produced,
        Pipeline {
            written: run.written(),
            dropped: run.dropped(),
            quarantined: &run.quarantined,
            lake_rows: run.lake["rows"].as_u64().unwrap_or(0),
            lake_distinct: run.lake["distinct_ids"].as_u64().unwrap_or(0),
            lake_ids_digest: run.lake["ids_digest"].as_str().unwrap_or_default(),
        },
    );
    let unaccounted = run.unaccounted();
    if unaccounted != 0 || !mismatches.is_empty() {
        anyhow::bail!(
            "the lake does not hold what was sent (unaccounted {unaccounted}):\n{}",
            mismatches.join("\n")
        );
    }
    println!(
        "checked against the producer's ledger: {} valid ids, each once in Parquet; {} duplicates dropped; quarantine by reason as sent",
        thousands(run.produced.valid),
        thousands(run.produced.duplicates)
    );
    Ok(())
}

/// What the pipeline reports, to hold against the producer's ledger.
pub struct Pipeline<'a> {
    written: u64,
    dropped: u64,
    quarantined: &'a BTreeMap<String, u64>,
    lake_rows: u64,
    lake_distinct: u64,
    lake_ids_digest: &'a str,
}

/// Every way the pipeline's outcome differs from what the producer sent; empty when it is exact.
pub fn ledger_mismatches(produced: &events::Produced, pipeline: Pipeline) -> Vec<String> {
    let valid = produced.valid.to_string();
    let sent_reasons: BTreeMap<String, u64> = produced
        .malformed
        .iter()
        .map(|(reason, n)| (reason.to_string(), *n))
        .collect();
    let checks = [
        (
            "events written (distinct valid ids)",
            valid.clone(),
            pipeline.written.to_string(),
        ),
        (
            "duplicates dropped (producer retries)",
            produced.duplicates.to_string(),
            pipeline.dropped.to_string(),
        ),
        (
            "quarantined by reason",
            format!("{sent_reasons:?}"),
            format!("{:?}", pipeline.quarantined),
        ),
        (
            "Parquet rows",
            valid.clone(),
            pipeline.lake_rows.to_string(),
        ),
        (
            "distinct ids in Parquet",
            valid,
            pipeline.lake_distinct.to_string(),
        ),
        (
            "digest of the ids in Parquet",
            format!("{:032x}", produced.valid_ids_digest),
            pipeline.lake_ids_digest.to_string(),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, sent, got)| sent != got)
        .map(|(what, sent, got)| format!("{what}: sent {sent}, pipeline {got}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_check_catches_a_lost_id_replaced_by_a_stray_one() {
        let sent = [
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000002",
        ];
        let produced = events::Produced {
            events: 4,
            valid: 2,
            duplicates: 1,
            malformed: BTreeMap::from([("invalid_json", 1)]),
            valid_ids_digest: events::ids_digest(sent),
            ..events::Produced::default()
        };
        let quarantined = BTreeMap::from([("invalid_json".to_string(), 1)]);
        let digest = |ids: [&str; 2]| format!("{:032x}", events::ids_digest(ids));
        let exact = digest(sent);
        let pipeline = |lake_ids_digest| Pipeline {
            written: 2,
            dropped: 1,
            quarantined: &quarantined,
            lake_rows: 2,
            lake_distinct: 2,
            lake_ids_digest,
        };
        assert_eq!(
            ledger_mismatches(&produced, pipeline(&exact)),
            Vec::<String>::new()
        );
        // Same counts, but one id lost and another in its place.
        let swapped = digest([sent[0], "00000000-0000-4000-8000-000000000003"]);
        let found = ledger_mismatches(&produced, pipeline(&swapped));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("digest of the ids"), "{found:?}");
        // A malformed record quarantined under another reason.
        let other = BTreeMap::from([("not_utf8".to_string(), 1)]);
        let found = ledger_mismatches(
            &produced,
            Pipeline {
                quarantined: &other,
                ..pipeline(&exact)
            },
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
