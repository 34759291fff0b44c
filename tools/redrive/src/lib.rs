//! `redrive`: what the pipeline could not take the first time, sent through `ingest` again with
//! the identity it arrived with.
//!
//! - **Given-up batches.** The event source mapping gives up on a batch after
//!   `maximum_retry_attempts` or `maximum_record_age_in_seconds` and keeps it, whole, in its S3
//!   on-failure destination ([`pipeline::given_up`]). Each payload goes through
//!   [`Ingest::process`] unchanged: the original eventIDs re-own their claims (a record that was
//!   written before the mapping gave up is not dropped as a duplicate of itself), and staging keys
//!   are the ones ingest would have written. A receipt under [`RECEIPTS_PREFIX`] marks the object
//!   done; running again skips it (or, with `again`, replays it, which changes nothing).
//! - **Quarantined records.** After a catalogue change (an `unknown_event` now known, a field's
//!   type relaxed), the quarantine lines of a range of arrival days are validated again; those now
//!   valid are claimed and staged with their original position ([`Ingest::replay_quarantined`]),
//!   the rest stay where they are. Running again writes the same objects.
//!
//! Both write staging for the records' original arrival minutes: compaction's scheduled run
//! re-compacts those days by itself while they are within `STAGING_RETENTION_DAYS`. Records whose
//! day is older than that are not sent (their day's staging is gone, and re-compacting it would
//! shrink the lake): the report names them.

use std::collections::BTreeSet;

use bytes::Bytes;
use ingest::{Deadline, Ingest, Summary};
use pipeline::given_up::GivenUpBatch;
use pipeline::lambda_payload::{Envelope, KinesisBatch};
use pipeline::layout;
use pipeline::metric_names::ingest as names;
use pipeline::ports::{publish_metrics, read_all, Metric, ObjectStore, StoreError};
use pipeline::quarantine_line::QuarantineLine;
use pipeline::time::{self, Date};
use pipeline::validate::Reason;
use serde::Serialize;

/// Where a receipt for each redriven on-failure object is kept: `redrive/receipts/{object key}.json`.
pub const RECEIPTS_PREFIX: &str = "redrive/receipts/";

/// Quarantine reasons that no catalogue change can cure: the envelope or the aggregate itself is
/// broken, and the line carries no single user record to validate again.
const NOT_REPLAYABLE: [Reason; 2] = [Reason::InvalidEnvelope, Reason::InvalidAggregate];

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadRequest(String),
}

pub struct Redrive {
    pub ingest: Ingest,
    /// `STAGING_RETENTION_DAYS`: how far back compaction still re-compacts a day by itself.
    pub staging_retention_days: u32,
    /// Epoch microseconds.
    pub now: fn() -> i64,
}

/// Counts of what went through `ingest`, as in its own metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub records: u64,
    pub events_written: u64,
    pub duplicates_dropped: u64,
    /// Given-up batches: quarantined now. Quarantine: still invalid, left where they were.
    pub records_quarantined: u64,
    /// Not made safe this time (a claim or a PUT failed): run again.
    pub records_failed: u64,
}

impl Counts {
    fn add(&mut self, summary: &Summary) {
        self.records += summary.records_received + summary.records_retried;
        self.events_written += summary.events_written;
        self.duplicates_dropped += summary.duplicates_dropped;
        self.records_quarantined += summary.records_quarantined;
        self.records_failed += summary.records_retried;
    }
}

/// One object that was not (fully) redriven, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct GivenUpReport {
    /// On-failure objects found under the prefix.
    pub objects: u64,
    pub redriven: u64,
    /// Objects with a receipt from an earlier run, not sent again.
    pub already_redriven: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Arrival days that received staging: compaction catches them up.
    pub arrival_days: BTreeSet<String>,
    /// Objects not sent, or not settled: unreadable, too old for staging retention, or failed.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineReport {
    pub from: String,
    pub to: String,
    pub objects: u64,
    pub lines: u64,
    /// Lines no catalogue can cure (`invalid_envelope`, `invalid_aggregate`), left alone.
    pub not_replayable: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub arrival_days: BTreeSet<String>,
    pub problems: Vec<Problem>,
}

impl Redrive {
    fn objects(&self) -> &dyn ObjectStore {
        self.ingest.objects.as_ref()
    }

    /// The oldest arrival day compaction still re-compacts by itself, with a day to spare: the
    /// lifecycle rule expires a day's staging objects one by one as they reach the retention age.
    fn oldest_redrivable_day(&self) -> Date {
        let today = Date::of_micros((self.now)());
        let back = i64::from(self.staging_retention_days.saturating_sub(2));
        Date::from_days(today.to_days() - back)
    }

    /// Replays every on-failure object under `prefix` (Lambda's is [`given_up::GIVEN_UP_PREFIX`]).
    pub async fn given_up(&self, prefix: &str, again: bool) -> Result<GivenUpReport, RedriveError> {
        let mut report = GivenUpReport::default();
        let receipts: BTreeSet<String> = self
            .objects()
            .list(RECEIPTS_PREFIX)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let oldest = self.oldest_redrivable_day();
        for object in self.objects().list(prefix).await? {
            let key = object.key;
            report.objects += 1;
            let receipt = format!("{RECEIPTS_PREFIX}{key}.json");
            if receipts.contains(&receipt) && !again {
                report.already_redriven += 1;
                continue;
            }
            let mut problem = |problem: String| {
                tracing::warn!(%key, %problem, "given-up batch not redriven");
                report.problems.push(Problem {
                    key: key.clone(),
                    problem,
                });
            };
            let body = read_all(self.objects(), &key, 0).await?;
            let batch = match GivenUpBatch::parse(&body) {
                Ok(batch) => batch,
                Err(e) => {
                    problem(format!("not an on-failure record: {e}"));
                    continue;
                }
            };
            let Some(payload) = batch.payload.as_deref() else {
                problem("no payload: only an S3 on-failure destination keeps the records; read them from the stream by its KinesisBatchInfo while its retention lasts".into());
                continue;
            };
            let records = match KinesisBatch::parse(payload.as_bytes()) {
                Ok(records) => records,
                Err(e) => {
                    problem(format!("the payload is not a Kinesis event: {e}"));
                    continue;
                }
            };
            let days = arrival_days(&records);
            if let Some(day) = days.iter().find(|d| **d < oldest) {
                problem(format!(
                    "records arrived on {day}, before {oldest}: that day's staging may have expired (STAGING_RETENTION_DAYS={}), and compacting it again would shrink the lake",
                    self.staging_retention_days
                ));
                continue;
            }
            let (response, summary) = self.ingest.process(&records, Deadline::none()).await;
            report.counts.add(&summary);
            report.arrival_days.extend(days.iter().map(Date::to_string));
            if !response.batch_item_failures.is_empty() {
                problem(format!(
                    "{} records could not be made safe (see the log); run again",
                    summary.records_retried
                ));
                continue;
            }
            report.redriven += 1;
            let receipt_body = serde_json::json!({
                "key": key,
                "redriven_at": time::format_rfc3339_micros((self.now)()),
                "shard_id": batch.kinesis_batch_info.shard_id,
                "start_sequence_number": batch.kinesis_batch_info.start_sequence_number,
                "end_sequence_number": batch.kinesis_batch_info.end_sequence_number,
                "records": summary.records_received,
                "events_written": summary.events_written,
                "duplicates_dropped": summary.duplicates_dropped,
                "records_quarantined": summary.records_quarantined,
            });
            self.objects()
                .put(&receipt, Bytes::from(receipt_body.to_string()))
                .await?;
        }
        self.publish(&report.counts, true).await;
        Ok(report)
    }

    /// Validates the quarantine lines of arrival days `from..=to` again, and stages those now valid.
    pub async fn quarantine(&self, from: Date, to: Date) -> Result<QuarantineReport, RedriveError> {
        if to < from {
            return Err(RedriveError::BadRequest(format!(
                "the range ends ({to}) before it starts ({from})"
            )));
        }
        let oldest = self.oldest_redrivable_day();
        if from < oldest {
            return Err(RedriveError::BadRequest(format!(
                "{from} is before {oldest}: days older than STAGING_RETENTION_DAYS={} minus two are not re-compacted by themselves, and compacting them again would shrink the lake",
                self.staging_retention_days
            )));
        }
        let mut report = QuarantineReport {
            from: from.to_string(),
            to: to.to_string(),
            ..QuarantineReport::default()
        };
        let prefixes = &self.ingest.prefixes;
        let mut day = from;
        while day <= to {
            for object in self
                .objects()
                .list(&prefixes.quarantine_day_prefix(day))
                .await?
            {
                let key = object.key;
                // Compaction's own bad-line files hold staging lines, not quarantined records.
                if layout::is_compaction_quarantine_key(&key) {
                    continue;
                }
                report.objects += 1;
                let body = read_all(self.objects(), &key, 0).await?;
                let mut lines = Vec::new();
                for raw in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    report.lines += 1;
                    let parsed = std::str::from_utf8(raw)
                        .map_err(|e| e.to_string())
                        .and_then(QuarantineLine::parse);
                    let record_has_position = |line: &QuarantineLine| {
                        line.record_origin()
                            .is_some_and(|(position, _)| !position.sequence_number.is_empty())
                    };
                    match parsed {
                        Ok(line) if NOT_REPLAYABLE.contains(&line.reason) => {
                            report.not_replayable += 1
                        }
                        Ok(line) if !record_has_position(&line) => report.not_replayable += 1,
                        Ok(line) => lines.push(line),
                        Err(problem) => report.problems.push(Problem {
                            key: key.clone(),
                            problem: format!("line {}: {problem}", report.lines),
                        }),
                    }
                }
                if lines.is_empty() {
                    continue;
                }
                let (response, summary) = self
                    .ingest
                    .replay_quarantined(&lines, Deadline::none())
                    .await;
                report.counts.add(&summary);
                if summary.events_written > 0 {
                    report.arrival_days.insert(day.to_string());
                }
                if !response.batch_item_failures.is_empty() {
                    report.problems.push(Problem {
                        key: key.clone(),
                        problem: format!(
                            "{} records could not be made safe (see the log); run again",
                            summary.records_retried
                        ),
                    });
                }
            }
            day = day.succ();
        }
        self.publish(&report.counts, false).await;
        Ok(report)
    }

    /// Ingest's metrics, under the redrive's own `FunctionName`. Quarantine lines were received
    /// and quarantined once already: only what they became now is counted.
    async fn publish(&self, counts: &Counts, received: bool) {
        let mut metrics = vec![
            Metric::count(names::EVENTS_WRITTEN, counts.events_written),
            Metric::count(names::DUPLICATES_DROPPED, counts.duplicates_dropped),
        ];
        if received {
            metrics.push(Metric::count(
                names::RECORDS_RECEIVED,
                counts.records - counts.records_failed,
            ));
            metrics.push(Metric::count(
                names::RECORDS_QUARANTINED,
                counts.records_quarantined,
            ));
        }
        publish_metrics(self.ingest.metrics.as_ref(), &metrics).await;
    }
}

/// The arrival days of a batch's records (those with a readable envelope).
fn arrival_days(batch: &KinesisBatch) -> BTreeSet<Date> {
    batch
        .records
        .iter()
        .filter_map(|record| match record {
            Envelope::Record(r) => Some(Date::of_micros(r.received_at)),
            Envelope::Unreadable(u) => u.received_at.map(Date::of_micros),
        })
        .collect()
}

#[cfg(test)]
mod tests;
