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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;
use futures::StreamExt;
use pipeline::catalogue::Catalogue;
use pipeline::config::IngestConfig;
use pipeline::kpl;
use pipeline::lambda_payload::{Envelope, KinesisBatch};
use pipeline::layout::{self, Minute, Prefixes, QuarantineLine, Source};
use pipeline::ports::{
    publish_metrics, Claim, ClaimOutcome, DedupStore, Metric, MetricsSink, ObjectStore, StoreError,
};
use pipeline::position::compare_sequence_numbers;
use pipeline::validate::{self, Reason, Rejection, ValidEvent};

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

/// When the invocation must have answered Lambda: claims and PUTs are not started, and those in
/// flight are given up (their records reported for redelivery), once too little time is left.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// Claims end here, leaving time for the PUTs of what they claimed.
    claims_until: tokio::time::Instant,
    /// PUTs end here, leaving time to answer.
    writes_until: tokio::time::Instant,
}

impl Deadline {
    /// From the time left, with a margin of a tenth of it (at least 200 ms, at most 3 s): claims
    /// end three margins before the deadline, PUTs one margin before it, so the writes get two
    /// margins and the answer one.
    pub fn within(left: Duration) -> Deadline {
        let now = tokio::time::Instant::now();
        let margin = (left / 10).clamp(Duration::from_millis(200), Duration::from_secs(3));
        Deadline {
            claims_until: now + left.saturating_sub(margin * 3),
            writes_until: now + left.saturating_sub(margin),
        }
    }

    /// From the Runtime API's deadline (epoch milliseconds).
    pub fn at_epoch_ms(deadline_ms: u64) -> Deadline {
        let now_ms = (pipeline::time::now_micros() / 1000) as u64;
        Deadline::within(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }

    /// No deadline (tests, replays run by hand).
    pub fn none() -> Deadline {
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
        Deadline {
            claims_until: far,
            writes_until: far,
        }
    }
}

/// Runs `work` unless `until` has passed, and gives it up if it is still running then.
async fn before<T>(
    until: tokio::time::Instant,
    operation: &str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let late = || StoreError::new(operation, "not finished before the invocation's deadline");
    if tokio::time::Instant::now() >= until {
        return Err(late());
    }
    tokio::time::timeout_at(until, work)
        .await
        .unwrap_or_else(|_| Err(late()))
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
    fn source(&self) -> Source<'_> {
        Source {
            shard_id: self.shard_id,
            sequence_number: self.sequence_number,
            sub_sequence_number: self.sub_sequence_number,
        }
    }

    fn claimed_by(&self) -> String {
        // Lambda always sends an eventID. Without one, the record's position still names it: an
        // empty owner would let every record lacking an id re-claim every other one's.
        let owner = match self.event_id {
            "" => format!("{}:{}", self.shard_id, self.sequence_number),
            event_id => event_id.to_string(),
        };
        match self.sub_sequence_number {
            None => owner,
            Some(n) => format!("{owner}#{n}"),
        }
    }
}

/// Per shard, the lowest sequence number not yet safely written; or the whole batch, when a record
/// that carries no sequence number could not be made safe.
#[derive(Default)]
struct Cutoffs<'a> {
    shards: HashMap<&'a str, &'a str>,
    whole_batch: bool,
}

impl<'a> Cutoffs<'a> {
    fn lower_to(&mut self, shard: &'a str, sequence: &'a str) {
        self.shards
            .entry(shard)
            .and_modify(|current| {
                if compare_sequence_numbers(sequence, current).is_lt() {
                    *current = sequence;
                }
            })
            .or_insert(sequence);
    }

    /// True when the unit is at or beyond its shard's cutoff: it will be redelivered.
    fn retries(&self, unit: &Unit) -> bool {
        self.whole_batch
            || self
                .shards
                .get(unit.shard_id)
                .is_some_and(|cut| compare_sequence_numbers(unit.sequence_number, cut).is_ge())
    }

    /// `batchItemFailures`: the lowest unsafe sequence number of each shard. Lambda reads an
    /// empty item identifier as "the whole batch failed".
    fn into_response(self) -> KinesisEventResponse {
        let mut response = KinesisEventResponse::default();
        if self.whole_batch {
            response.set_failures([""]);
            return response;
        }
        let mut failures: Vec<(&str, &str)> = self.shards.into_iter().collect();
        failures.sort();
        response.set_failures(failures.into_iter().map(|(_, sequence)| sequence));
        response
    }
}

/// How objects are named: as ingest names them, or as `redrive` names what it stages from
/// quarantine (never an ingest name; see [`layout::Prefixes::redriven_staging_key`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    Ingest,
    Redriven,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ObjectKind {
    Staging,
    Quarantine,
}

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

    pub async fn handle(&self, batch: &KinesisBatch, deadline: Deadline) -> KinesisEventResponse {
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
        // Per reason under a name of its own: the emulator (moto) matches a query for
        // RecordsQuarantined{FunctionName} against {FunctionName, Reason} too, and would count twice.
        let by_reason = summary.quarantined_by_reason.iter().map(|(reason, n)| {
            Metric::count("RecordsQuarantinedByReason", *n).by("Reason", reason)
        });
        let metrics: Vec<Metric> = [
            Metric::count("RecordsReceived", summary.records_received),
            Metric::count("EventsWritten", summary.events_written),
            Metric::count("DuplicatesDropped", summary.duplicates_dropped),
            Metric::count("RecordsQuarantined", summary.records_quarantined),
            Metric::count(
                "BatchItemFailures",
                response.batch_item_failures.len() as u64,
            ),
            Metric::bytes("StagingBytesWritten", summary.staging_bytes_written),
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
        batch: &KinesisBatch,
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
        lines: &[QuarantineLine],
        deadline: Deadline,
    ) -> (KinesisEventResponse, Summary) {
        let started = Instant::now();
        let units = lines
            .iter()
            .map(|line| Unit {
                shard_id: &line.shard_id,
                sequence_number: &line.sequence_number,
                sub_sequence_number: line.sub_sequence_number,
                // Empty: the claim is named from the position, exactly as Lambda's eventID.
                event_id: "",
                received_at: line.received_at,
                data: &line.data,
                state: self.check(&line.data, line.received_at),
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
        let mut cutoffs = Cutoffs::default();
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
            if cutoffs.retries(unit) {
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
        (cutoffs.into_response(), summary)
    }

    fn unpack<'a>(&'a self, records: &'a [Envelope]) -> Vec<Unit<'a>> {
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
        cutoffs: &mut Cutoffs<'a>,
        until: tokio::time::Instant,
    ) {
        let now = (self.clock)();
        let expires_at = now + self.dedup_ttl_seconds;
        let pending: Vec<(usize, String, String)> = units
            .iter()
            .enumerate()
            .filter_map(|(i, unit)| match &unit.state {
                State::Valid(event) => Some((i, event.event_uuid.clone(), unit.claimed_by())),
                _ => None,
            })
            .collect();
        let dedup = self.dedup.as_ref();
        // Collected first: a closure inside the stream would make the future's lifetimes too
        // specific for `tokio::spawn` callers.
        let claims: Vec<_> = pending
            .iter()
            .map(|(i, uuid, claimed_by)| async move {
                let claim = Claim {
                    event_uuid: uuid,
                    claimed_by,
                    now,
                    expires_at,
                };
                (*i, before(until, "PutItem", dedup.claim(claim)).await)
            })
            .collect();
        let results: Vec<(usize, Result<ClaimOutcome, StoreError>)> = futures::stream::iter(claims)
            .buffer_unordered(CLAIM_CONCURRENCY)
            .collect()
            .await;
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
            tracing::warn!(%error, "dedup claims failed; those records will be redelivered");
        }
    }

    /// Writes every staging and quarantine object; returns (staging bytes, staging objects) written.
    async fn write_objects<'a>(
        &self,
        units: &[Unit<'a>],
        cutoffs: &mut Cutoffs<'a>,
        until: tokio::time::Instant,
        naming: Naming,
    ) -> (u64, u64) {
        let mut groups: BTreeMap<(ObjectKind, &str, Minute), Vec<&Unit>> = BTreeMap::new();
        for unit in units {
            let kind = match unit.state {
                State::Claimed(_) => ObjectKind::Staging,
                State::Quarantined(_) if naming == Naming::Ingest => ObjectKind::Quarantine,
                _ => continue,
            };
            if cutoffs.retries(unit) {
                continue;
            }
            groups
                .entry((kind, unit.shard_id, Minute::of_micros(unit.received_at)))
                .or_default()
                .push(unit);
        }
        let objects = self.objects.as_ref();
        let prefixes = &self.prefixes;
        // A loop, not `.map(closure)`: see `claim_all`.
        let mut puts = Vec::with_capacity(groups.len());
        for ((kind, shard, minute), mut members) in groups {
            members.sort_by(|a, b| {
                compare_sequence_numbers(a.sequence_number, b.sequence_number)
                    .then(a.sub_sequence_number.cmp(&b.sub_sequence_number))
            });
            let first = members[0].sequence_number;
            let (key, body) = match kind {
                ObjectKind::Staging if naming == Naming::Redriven => {
                    let body = staging_body(&members);
                    let digest = layout::content_digest(&body);
                    let key = prefixes.redriven_staging_key(minute, shard, first, &digest);
                    (key, body)
                }
                ObjectKind::Staging => (
                    prefixes.staging_key(minute, shard, first),
                    staging_body(&members),
                ),
                // Records that carry no sequence number are named after their content.
                ObjectKind::Quarantine if first.is_empty() => {
                    let body = quarantine_body(&members);
                    (
                        prefixes.unsequenced_quarantine_key(minute, shard, &body),
                        body,
                    )
                }
                ObjectKind::Quarantine => (
                    prefixes.quarantine_key(minute, shard, first),
                    quarantine_body(&members),
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
                    cutoffs.whole_batch = true;
                }
                Err(error) => {
                    tracing::warn!(%error, shard, first_sequence = first, "object write failed; redelivery from its first record");
                    cutoffs.lower_to(shard, first);
                }
            }
        }
        (bytes, count)
    }
}

/// Later copies of an id inside one batch are duplicates of the first; only the first claims.
fn mark_duplicates_within_batch(units: &mut [Unit]) {
    let mut seen: HashSet<String> = HashSet::with_capacity(units.len());
    for unit in units {
        if let State::Valid(event) = &unit.state {
            if !seen.insert(event.event_uuid.clone()) {
                unit.state = State::Duplicate;
            }
        }
    }
}

fn staging_body(members: &[&Unit]) -> Vec<u8> {
    let mut body = Vec::with_capacity(members.iter().map(|u| u.data.len() + 256).sum());
    for unit in members {
        if let State::Claimed(event) = &unit.state {
            layout::push_staging_line(&mut body, event, unit.received_at, &unit.source());
        }
    }
    body
}

fn quarantine_body(members: &[&Unit]) -> Vec<u8> {
    let mut body = Vec::with_capacity(members.iter().map(|u| u.data.len() * 4 / 3 + 256).sum());
    for unit in members {
        if let State::Quarantined(rejection) = &unit.state {
            layout::push_quarantine_line(
                &mut body,
                rejection.reason,
                &rejection.detail,
                &unit.source(),
                unit.received_at,
                unit.data,
            );
        }
    }
    body
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
