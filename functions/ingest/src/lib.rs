//! The `ingest` function: one Kinesis batch → staging NDJSON (and quarantine) in S3.
//!
//! 1. Every record is unpacked (KPL aggregates) and validated against the catalogue.
//! 2. Valid events claim their id in the dedup store, concurrently under a bound; a later copy of
//!    an id inside the same batch is a duplicate without asking the store.
//! 3. Lines are grouped per (arrival minute, shard): one PUT per object, never one per record.
//! 4. Whatever could not be made safe (a claim or a PUT that failed after the SDK's retries, or was
//!    not finished when the invocation's deadline came near) is reported as `batchItemFailures`
//!    from the lowest such sequence number of its shard, so Lambda redelivers from there. Records of
//!    a failed shard at or beyond that number are not written now: they come back, and re-claim
//!    their own ids.
//!
//! The batch is read record by record ([`KinesisBatch`]): a record whose envelope cannot be read is
//! quarantined with its raw JSON (`invalid_envelope`) and never fails its neighbours.

mod deadline;
mod objects;
pub mod raw_payload;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;
use futures::StreamExt;
use pipeline::catalogue::Catalogue;
use pipeline::config::IngestConfig;
use pipeline::kpl;
use pipeline::lambda_payload::{Envelope, KinesisBatch};
use pipeline::layout::{self, Minute, Prefixes};
use pipeline::metric_names::{ingest as names, REASON};
use pipeline::ports::{
    publish_metrics, Claim, ClaimOutcome, DedupStore, Metric, MetricsSink, ObjectStore, StoreError,
};
use pipeline::position::{compare_sequence_numbers, ShardCutoffs, StreamPosition};
use pipeline::quarantine_line::QuarantineLine;
use pipeline::validate::{self, Reason, Rejection, ValidEvent};
use tracing::Instrument as _;

use deadline::before;
pub use deadline::Deadline;

/// How many conditional puts are in flight at once.
pub const CLAIM_CONCURRENCY: usize = 64;
/// How many S3 PUTs are in flight at once.
pub const PUT_CONCURRENCY: usize = 16;

pub struct Ingest {
    pub catalogue: Catalogue,
    pub prefixes: Prefixes,
    pub dedup_ttl_seconds: i64,
    pub dedup: Arc<dyn DedupStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub metrics: Arc<dyn MetricsSink>,
    /// Epoch seconds; replaceable so tests can move time past a claim's TTL.
    pub clock: fn() -> i64,
}

pub fn system_clock() -> i64 {
    pipeline::time::now_micros() / pipeline::time::MICROS_PER_SECOND
}

/// What one invocation did, for metrics, logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// User records settled by this invocation (KPL aggregates count their user records).
    pub records_received: u64,
    pub events_written: u64,
    pub duplicates_dropped: u64,
    pub records_quarantined: u64,
    pub staging_bytes_written: u64,
    pub staging_objects_written: u64,
    /// User records left for Lambda to redeliver.
    pub records_retried: u64,
    pub quarantined_by_reason: BTreeMap<&'static str, u64>,
    /// Where the time went: unpack + validate, dedup claims, S3 writes.
    pub decode_ms: u64,
    pub claim_ms: u64,
    pub write_ms: u64,
}

/// One user record: a plain Kinesis record, or one user record of an aggregate.
struct Unit<'a> {
    shard_id: &'a str,
    sequence_number: &'a str,
    sub_sequence_number: Option<u32>,
    event_id: &'a str,
    received_at: i64,
    data: &'a [u8],
    state: State<'a>,
}

enum State<'a> {
    Valid(ValidEvent<'a>),
    /// Valid, and its id is ours.
    Claimed(ValidEvent<'a>),
    Duplicate,
    Quarantined(Rejection),
    /// The claim could not be made; the record must come back.
    ClaimFailed,
}

impl Unit<'_> {
    fn source(&self) -> StreamPosition<'_> {
        StreamPosition::new(
            self.shard_id,
            self.sequence_number,
            self.sub_sequence_number,
        )
    }

    fn claimed_by(&self) -> Cow<'_, str> {
        // Lambda always sends an eventID. Without one, the record's position still names it: an
        // empty owner would let every record lacking an id re-claim every other one's.
        match (self.event_id, self.sub_sequence_number) {
            ("", None) => format!("{}:{}", self.shard_id, self.sequence_number).into(),
            ("", Some(n)) => format!("{}:{}#{n}", self.shard_id, self.sequence_number).into(),
            (event_id, None) => event_id.into(),
            (event_id, Some(n)) => format!("{event_id}#{n}").into(),
        }
    }
}

/// `batchItemFailures` from the cutoffs: Lambda redelivers each shard from its cutoff.
fn into_response(cutoffs: &ShardCutoffs) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    response.set_failures(cutoffs.item_identifiers());
    response
}

/// How objects are named: as ingest names them, or as `redrive` names what it stages from
/// quarantine (never an ingest name; see [`layout::Prefixes::redriven_staging_key`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    Ingest,
    Redriven,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ObjectKind {
    Staging,
    Quarantine,
}

/// The records of one object: its kind, shard and arrival minute.
pub(crate) type ObjectGroup<'a> = (ObjectKind, &'a str, Minute);

impl Ingest {
    /// Builds the real adapters once, at cold start.
    pub async fn from_config(config: &IngestConfig) -> Ingest {
        let sdk = pipeline::aws::load_sdk_config().await;
        Ingest {
            catalogue: Catalogue::embedded(),
            prefixes: config.common.prefixes.clone(),
            dedup_ttl_seconds: config.dedup_ttl_seconds,
            dedup: Arc::new(pipeline::aws::DynamoDedupStore::new(
                &sdk,
                &config.dedup_table,
            )),
            objects: Arc::new(pipeline::aws::S3ObjectStore::new(&sdk, &config.common)),
            metrics: Arc::from(pipeline::aws::metrics_sink(&sdk, &config.common)),
            clock: system_clock,
        }
    }

    /// One invocation: the batch settled, logged (inside a span naming the batch's shard and first
    /// sequence number, within the runtime's span of the request id) and counted.
    pub async fn handle(
        &self,
        batch: &KinesisBatch<'_>,
        deadline: Deadline,
    ) -> KinesisEventResponse {
        let (shard, first_sequence) = batch.first_position().unwrap_or_default();
        let span = tracing::info_span!("batch", shard, first_sequence);
        self.handle_batch(batch, deadline).instrument(span).await
    }

    async fn handle_batch(
        &self,
        batch: &KinesisBatch<'_>,
        deadline: Deadline,
    ) -> KinesisEventResponse {
        let (response, summary) = self.process(batch, deadline).await;
        tracing::info!(
            records = batch.records.len(),
            received = summary.records_received,
            written = summary.events_written,
            duplicates = summary.duplicates_dropped,
            quarantined = summary.records_quarantined,
            retried = summary.records_retried,
            staging_objects = summary.staging_objects_written,
            staging_bytes = summary.staging_bytes_written,
            batch_item_failures = response.batch_item_failures.len(),
            decode_ms = summary.decode_ms,
            claim_ms = summary.claim_ms,
            write_ms = summary.write_ms,
            "batch done"
        );
        let by_reason = summary.quarantined_by_reason.iter().map(|(reason, n)| {
            Metric::count(names::RECORDS_QUARANTINED_BY_REASON, *n).by(REASON, reason)
        });
        let metrics: Vec<Metric> = [
            Metric::count(names::RECORDS_RECEIVED, summary.records_received),
            Metric::count(names::EVENTS_WRITTEN, summary.events_written),
            Metric::count(names::DUPLICATES_DROPPED, summary.duplicates_dropped),
            Metric::count(names::RECORDS_QUARANTINED, summary.records_quarantined),
            Metric::count(
                names::BATCH_ITEM_FAILURES,
                response.batch_item_failures.len() as u64,
            ),
            Metric::bytes(names::STAGING_BYTES_WRITTEN, summary.staging_bytes_written),
        ]
        .into_iter()
        .chain(by_reason)
        .collect();
        publish_metrics(self.metrics.as_ref(), &metrics).await;
        response
    }

    /// The whole batch, without logging or metrics.
    pub async fn process(
        &self,
        batch: &KinesisBatch<'_>,
        deadline: Deadline,
    ) -> (KinesisEventResponse, Summary) {
        let started = Instant::now();
        let units = self.unpack(&batch.records);
        self.settle(units, started, deadline, Naming::Ingest).await
    }

    /// Quarantined records sent through again (`redrive`, after a catalogue change), each with the
    /// identity it arrived with: its claim is `shardId:sequenceNumber` (`#N` within an aggregate),
    /// as when Lambda delivered it, and its staging line keeps its position, so compaction drops
    /// it if that position is already in the lake. Records that are still invalid stay where they
    /// are: nothing new is written to quarantine. The response names, per shard, the lowest
    /// sequence number that could not be made safe; a re-run settles it.
    pub async fn replay_quarantined(
        &self,
        lines: &[QuarantineLine<'_>],
        deadline: Deadline,
    ) -> (KinesisEventResponse, Summary) {
        let started = Instant::now();
        // Lines of staging lines compaction could not read hold no record: not replayable.
        let units = lines
            .iter()
            .filter_map(|line| {
                let (position, received_at) = line.record_origin()?;
                Some(Unit {
                    shard_id: &position.shard_id,
                    sequence_number: &position.sequence_number,
                    sub_sequence_number: position.sub_sequence_number,
                    // Empty: the claim is named from the position, exactly as Lambda's eventID.
                    event_id: "",
                    received_at,
                    data: &line.data,
                    state: self.check(&line.data, received_at),
                })
            })
            .collect();
        self.settle(units, started, deadline, Naming::Redriven)
            .await
    }

    async fn settle<'a>(
        &'a self,
        mut units: Vec<Unit<'a>>,
        started: Instant,
        deadline: Deadline,
        naming: Naming,
    ) -> (KinesisEventResponse, Summary) {
        mark_duplicates_within_batch(&mut units);
        let decoded = Instant::now();
        let mut cutoffs = ShardCutoffs::default();
        self.claim_all(&mut units, &mut cutoffs, deadline.claims_until)
            .await;
        let claimed = Instant::now();
        let (staging_bytes_written, staging_objects_written) = self
            .write_objects(&units, &mut cutoffs, deadline.writes_until, naming)
            .await;

        let millis = |from: Instant, to: Instant| (to - from).as_millis() as u64;
        let mut summary = Summary {
            staging_bytes_written,
            staging_objects_written,
            decode_ms: millis(started, decoded),
            claim_ms: millis(decoded, claimed),
            write_ms: millis(claimed, Instant::now()),
            ..Summary::default()
        };
        for unit in &units {
            if cutoffs.retries(unit.shard_id, unit.sequence_number) {
                summary.records_retried += 1;
                continue;
            }
            summary.records_received += 1;
            match &unit.state {
                State::Claimed(_) => summary.events_written += 1,
                State::Duplicate => summary.duplicates_dropped += 1,
                State::Quarantined(rejection) => {
                    summary.records_quarantined += 1;
                    *summary
                        .quarantined_by_reason
                        .entry(rejection.reason.code())
                        .or_default() += 1;
                }
                State::Valid(_) | State::ClaimFailed => {
                    unreachable!("unclaimed records are always beyond their shard's cutoff")
                }
            }
        }
        (into_response(&cutoffs), summary)
    }

    fn unpack<'a>(&'a self, records: &'a [Envelope<'a>]) -> Vec<Unit<'a>> {
        let mut units = Vec::with_capacity(records.len());
        for record in records {
            let record = match record {
                Envelope::Record(record) => record,
                Envelope::Unreadable(bad) => {
                    units.push(Unit {
                        shard_id: &bad.shard_id,
                        sequence_number: &bad.sequence_number,
                        sub_sequence_number: None,
                        event_id: "",
                        received_at: bad
                            .received_at
                            .unwrap_or_else(|| (self.clock)() * pipeline::time::MICROS_PER_SECOND),
                        data: &bad.raw,
                        state: State::Quarantined(Rejection::new(
                            Reason::InvalidEnvelope,
                            bad.detail.clone(),
                        )),
                    });
                    continue;
                }
            };
            let unit = |sub: Option<u32>, data: &'a [u8], state: State<'a>| Unit {
                shard_id: &record.shard_id,
                sequence_number: &record.sequence_number,
                sub_sequence_number: sub,
                event_id: &record.event_id,
                received_at: record.received_at,
                data,
                state,
            };
            let (data, received_at) = (record.data.as_slice(), record.received_at);
            if !kpl::is_aggregated(data) {
                units.push(unit(None, data, self.check(data, received_at)));
                continue;
            }
            match kpl::deaggregate(data) {
                Ok(user_records) => {
                    for (index, user) in user_records.into_iter().enumerate() {
                        let state = self.check(user.data, received_at);
                        units.push(unit(Some(index as u32), user.data, state));
                    }
                }
                Err(e) => units.push(unit(
                    None,
                    data,
                    State::Quarantined(Rejection::new(Reason::InvalidAggregate, e.0)),
                )),
            }
        }
        units
    }

    fn check<'a>(&'a self, data: &'a [u8], received_at: i64) -> State<'a> {
        match validate::validate(data, received_at, &self.catalogue) {
            Ok(event) => State::Valid(event),
            Err(rejection) => State::Quarantined(rejection),
        }
    }

    async fn claim_all<'a>(
        &self,
        units: &mut [Unit<'a>],
        cutoffs: &mut ShardCutoffs<'a>,
        until: tokio::time::Instant,
    ) {
        let now = (self.clock)();
        let expires_at = now + self.dedup_ttl_seconds;
        // Sized for all: collecting a filter would grow (and copy) it a dozen times a batch.
        let mut pending: Vec<(usize, &str, Cow<str>)> = Vec::with_capacity(units.len());
        pending.extend(
            units
                .iter()
                .enumerate()
                .filter_map(|(i, unit)| match &unit.state {
                    State::Valid(event) => Some((i, event.event_uuid.as_ref(), unit.claimed_by())),
                    _ => None,
                }),
        );
        let claims: Vec<Claim> = pending
            .iter()
            .map(|(_, uuid, claimed_by)| Claim {
                event_uuid: uuid,
                claimed_by,
                now,
                expires_at,
            })
            .collect();
        let results = self
            .dedup
            .claim_all(&claims, CLAIM_CONCURRENCY, until)
            .await;
        // Owned indices: the claims borrow the units, which are updated next.
        let indices: Vec<usize> = pending.iter().map(|(i, _, _)| *i).collect();
        let results = indices.into_iter().zip(results);
        let mut first_error = None;
        for (i, result) in results {
            let unit = &mut units[i];
            let state = std::mem::replace(&mut unit.state, State::ClaimFailed);
            let State::Valid(event) = state else {
                unreachable!("only valid records are claimed")
            };
            unit.state = match result {
                Ok(ClaimOutcome::Claimed) => State::Claimed(event),
                Ok(ClaimOutcome::OwnedByAnother) => State::Duplicate,
                Err(error) => {
                    first_error.get_or_insert(error);
                    cutoffs.lower_to(unit.shard_id, unit.sequence_number);
                    State::ClaimFailed
                }
            };
        }
        if let Some(error) = first_error {
            log_store_failure(
                &error,
                "dedup claims failed; those records will be redelivered",
            );
        }
    }

    /// Writes every staging and quarantine object; returns (staging bytes, staging objects) written.
    async fn write_objects<'a>(
        &self,
        units: &[Unit<'a>],
        cutoffs: &mut ShardCutoffs<'a>,
        until: tokio::time::Instant,
        naming: Naming,
    ) -> (u64, u64) {
        let groups = objects::group(units, |unit| {
            let kind = match unit.state {
                State::Claimed(_) => ObjectKind::Staging,
                State::Quarantined(_) if naming == Naming::Ingest => ObjectKind::Quarantine,
                _ => return None,
            };
            let retried = cutoffs.retries(unit.shard_id, unit.sequence_number);
            (!retried).then(|| (kind, unit.shard_id, Minute::of_micros(unit.received_at)))
        });
        let objects = self.objects.as_ref();
        let prefixes = &self.prefixes;
        // A loop, not `.map(closure)`: see `DedupStore::claim_all`.
        let mut puts = Vec::with_capacity(groups.len());
        for ((kind, shard, minute), mut members) in groups {
            members.sort_by(|a, b| {
                compare_sequence_numbers(a.sequence_number, b.sequence_number)
                    .then(a.sub_sequence_number.cmp(&b.sub_sequence_number))
            });
            let first = members[0].sequence_number;
            let (key, body) = match kind {
                ObjectKind::Staging if naming == Naming::Redriven => {
                    let body = objects::staging_body(&members);
                    let digest = layout::content_digest(&body);
                    let key = prefixes.redriven_staging_key(minute, shard, first, &digest);
                    (key, body)
                }
                ObjectKind::Staging => (
                    prefixes.staging_key(minute, shard, first),
                    objects::staging_body(&members),
                ),
                // Records that carry no sequence number are named after their content.
                ObjectKind::Quarantine if first.is_empty() => {
                    let body = objects::quarantine_body(&members);
                    (
                        prefixes.unsequenced_quarantine_key(minute, shard, &body),
                        body,
                    )
                }
                ObjectKind::Quarantine => (
                    prefixes.quarantine_key(minute, shard, first),
                    objects::quarantine_body(&members),
                ),
            };
            let size = body.len() as u64;
            puts.push(async move {
                let result = before(until, "PutObject", objects.put(&key, Bytes::from(body))).await;
                (kind, shard, first, size, result)
            });
        }
        let results: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(PUT_CONCURRENCY)
            .collect()
            .await;
        let (mut bytes, mut count) = (0, 0);
        for (kind, shard, first, size, result) in results {
            match result {
                Ok(()) if kind == ObjectKind::Staging => {
                    bytes += size;
                    count += 1;
                }
                Ok(()) => {}
                Err(error) if first.is_empty() => {
                    // Records with no sequence number cannot be named for redelivery: the
                    // invocation fails, and Lambda retries (or bisects) the batch.
                    tracing::error!(%error, shard, "quarantine of unsequenced records failed");
                    cutoffs.fail_whole_batch();
                }
                Err(error) => {
                    log_store_failure(
                        &error,
                        &format!("object write failed (shard {shard}, first sequence {first}); redelivery from its first record"),
                    );
                    cutoffs.lower_to(shard, first);
                }
            }
        }
        (bytes, count)
    }
}

/// A claim or PUT that failed after the SDK's retries: a transient failure is a warning (the
/// redelivery will likely succeed); a permanent one is an error, since every redelivery will fail
/// the same way until the permissions or the configuration change.
fn log_store_failure(error: &StoreError, what: &str) {
    if error.is_transient() {
        tracing::warn!(%error, transient = true, "{what}");
    } else {
        tracing::error!(%error, transient = false, "{what}; the failure is permanent (access, configuration): every redelivery fails the same way until it is fixed");
    }
}

/// Later copies of an id inside one batch are duplicates of the first; only the first claims.
fn mark_duplicates_within_batch(units: &mut [Unit]) {
    // Ids borrowed, no copies: the later copies are found first, then marked.
    let mut seen: foldhash::HashSet<&str> = foldhash::HashSet::default();
    seen.reserve(units.len());
    let later_copies: Vec<usize> = units
        .iter()
        .enumerate()
        .filter_map(|(i, unit)| match &unit.state {
            State::Valid(event) if !seen.insert(event.event_uuid.as_ref()) => Some(i),
            _ => None,
        })
        .collect();
    for i in later_copies {
        units[i].state = State::Duplicate;
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
