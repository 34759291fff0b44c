//! The fake producer: realistic events made from the catalogue (its `fake` hints and `weight`s), with
//! producer retries (duplicate ids) and malformed records mixed in on purpose, put on a Kinesis
//! stream with `PutRecords` as a well-behaved producer does.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use pipeline::catalogue::{Catalogue, FakeSpec, FieldType};
use pipeline::kpl;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// What a generated record is meant to be, so the demo can check the pipeline's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Valid,
    /// A producer retry: the same bytes as an earlier valid event.
    Duplicate,
    /// Broken on purpose; the reason code ingest is expected to give it.
    Malformed(&'static str),
}

const CITIES: &[&str] = &[
    "Vernier, France",
    "Lyon, France",
    "Paris, France",
    "Berlin, Germany",
    "Munich, Germany",
    "Madrid, Spain",
    "Seville, Spain",
    "Rome, Italy",
    "Milan, Italy",
    "Lisbon, Portugal",
    "Porto, Portugal",
    "Moscow, Russia",
    "Kazan, Russia",
    "Tokyo, Japan",
    "Osaka, Japan",
    "Seoul, South Korea",
    "Busan, South Korea",
    "Shanghai, China",
    "Chengdu, China",
    "London, United Kingdom",
    "Leeds, United Kingdom",
    "Austin, United States",
    "Denver, United States",
    "Toronto, Canada",
    "São Paulo, Brazil",
    "Geneva, Switzerland",
];

const MALFORMED: &[&str] = &[
    "invalid_json",
    "not_utf8",
    "not_an_object",
    "missing_field",
    "invalid_uuid",
    "invalid_timestamp",
    "unknown_event",
    "wrong_field_type",
];

pub struct Generator {
    catalogue: Catalogue,
    rng: SmallRng,
    total_weight: u32,
    /// Recent valid events, re-sent as producer retries.
    recent: Vec<Vec<u8>>,
    duplicate_share: f64,
    malformed_share: f64,
}

impl Generator {
    pub fn new(
        catalogue: Catalogue,
        seed: u64,
        duplicate_share: f64,
        malformed_share: f64,
    ) -> Self {
        let total_weight = catalogue.events.iter().map(|e| e.weight).sum();
        Generator {
            catalogue,
            rng: SmallRng::seed_from_u64(seed),
            total_weight,
            recent: Vec::with_capacity(1024),
            duplicate_share,
            malformed_share,
        }
    }

    /// The next record: its kind, its bytes and a partition key.
    pub fn next_record(&mut self) -> (Kind, Vec<u8>, String) {
        let key = self.uuid();
        let roll: f64 = self.rng.random();
        if roll < self.duplicate_share && !self.recent.is_empty() {
            let i = self.rng.random_range(0..self.recent.len());
            return (Kind::Duplicate, self.recent[i].clone(), key);
        }
        if roll < self.duplicate_share + self.malformed_share {
            let reason = MALFORMED[self.rng.random_range(0..MALFORMED.len())];
            return (Kind::Malformed(reason), self.malformed(reason), key);
        }
        let event = serde_json::to_vec(&self.valid_event()).expect("JSON");
        if self.recent.len() < 1024 {
            self.recent.push(event.clone());
        } else {
            let i = self.rng.random_range(0..1024);
            self.recent[i] = event.clone();
        }
        (Kind::Valid, event, key)
    }

    fn uuid(&mut self) -> String {
        let (a, b): (u64, u64) = (self.rng.random(), self.rng.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFF,
            8 + (b >> 62),
            (b >> 48) & 0xFFF,
            b & 0xFFFF_FFFF_FFFF
        )
    }

    pub fn valid_event(&mut self) -> Value {
        let mut pick = self.rng.random_range(0..self.total_weight.max(1));
        let index = self
            .catalogue
            .events
            .iter()
            .position(|e| {
                let hit = pick < e.weight;
                pick = pick.saturating_sub(e.weight);
                hit
            })
            .unwrap_or(0);
        let spec = self.catalogue.events[index].clone();
        let mut specifics = Map::new();
        for &field in &spec.fields {
            let field = self.catalogue.fields[field].clone();
            specifics.insert(
                field.name.clone(),
                self.fake(field.spec.field_type, field.spec.fake.as_ref()),
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Apps send epoch seconds mostly, RFC 3339 sometimes: both are valid.
        let created_at = if self.rng.random_ratio(1, 10) {
            json!(pipeline::time::format_rfc3339_micros(now.as_micros() as i64))
        } else {
            json!((now.as_micros() as f64) / 1e6)
        };
        json!({
            "event_uuid": self.uuid(),
            "created_at": created_at,
            "event_name": spec.name,
            "event_specifics": specifics,
        })
    }

    fn fake(&mut self, field_type: FieldType, fake: Option<&FakeSpec>) -> Value {
        match fake {
            Some(FakeSpec::OneOf { one_of }) if !one_of.is_empty() => {
                json!(one_of[self.rng.random_range(0..one_of.len())])
            }
            Some(FakeSpec::Range { range: [low, high] }) => match field_type {
                FieldType::Integer => json!(self.rng.random_range(*low as i64..=*high as i64)),
                _ => json!((self.rng.random_range(*low..*high) * 100.0).round() / 100.0),
            },
            Some(FakeSpec::Named(name)) => match name.as_str() {
                "uuid" => json!(self.uuid()),
                "city_country" => json!(CITIES[self.rng.random_range(0..CITIES.len())]),
                "bool" => json!(self.rng.random_bool(0.5)),
                "app_version" => json!(format!(
                    "{}.{}.{}",
                    self.rng.random_range(1..5),
                    self.rng.random_range(0..20),
                    self.rng.random_range(0..10)
                )),
                _ => self.fake(field_type, None),
            },
            _ => match field_type {
                FieldType::String => json!("x"),
                FieldType::Integer => json!(self.rng.random_range(0..1000)),
                FieldType::Number => json!(self.rng.random::<f64>()),
                FieldType::Boolean => json!(self.rng.random_bool(0.5)),
            },
        }
    }

    fn malformed(&mut self, reason: &str) -> Vec<u8> {
        let mut event = self.valid_event();
        match reason {
            "invalid_json" => {
                let bytes = serde_json::to_vec(&event).expect("JSON");
                return bytes[..bytes.len() / 2].to_vec();
            }
            "not_utf8" => {
                let mut bytes = serde_json::to_vec(&event).expect("JSON");
                bytes.splice(2..2, [0xFF, 0xFE]);
                return bytes;
            }
            "not_an_object" => return serde_json::to_vec(&json!([event])).expect("JSON"),
            "missing_field" => {
                event.as_object_mut().expect("object").remove("event_uuid");
            }
            "invalid_uuid" => event["event_uuid"] = json!("not-a-uuid"),
            "invalid_timestamp" => event["created_at"] = json!("yesterday"),
            "unknown_event" => event["event_name"] = json!("game:teleported"),
            "wrong_field_type" => {
                event["event_name"] = json!("game:resumed");
                event["event_specifics"] = json!({"score": "a lot"});
            }
            _ => unreachable!("every malformed kind is handled"),
        }
        serde_json::to_vec(&event).expect("JSON")
    }
}

/// What to produce; also the command-line flags of the `producer` and the demo, which each set
/// `events` with their own default.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(skip)]
    pub events: u64,
    /// Events per second (default: as fast as the stream takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Share of producer retries (an earlier event sent again, same id).
    #[arg(long = "duplicates", value_name = "SHARE", default_value_t = 0.02)]
    pub duplicate_share: f64,
    /// Share of malformed records (each kind of bad input).
    #[arg(long = "malformed", value_name = "SHARE", default_value_t = 0.005)]
    pub malformed_share: f64,
    /// Pack this many user records per KPL aggregated record (0: plain records).
    #[arg(long = "kpl", value_name = "N", env = "KPL", default_value_t = 0)]
    pub aggregate: usize,
    /// The same seed puts the same events on the stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What was put on the stream.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    /// User records (what ingest will count as received).
    pub events: u64,
    pub valid: u64,
    pub duplicates: u64,
    pub malformed: std::collections::BTreeMap<&'static str, u64>,
    /// The distinct valid ids sent, as an order-free digest: the XOR of the MD5 of each id
    /// ([`ids_digest`]). The lake holds exactly those ids when its own digest is equal.
    pub valid_ids_digest: u128,
    pub kinesis_records: u64,
    pub put_records_calls: u64,
    pub entries_resent: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// One id's share of [`Produced::valid_ids_digest`]: its MD5 as a big-endian number (what Python's
/// `int(hashlib.md5(id.encode()).hexdigest(), 16)` gives).
pub fn id_digest(id: &str) -> u128 {
    use md5::Digest as _;
    u128::from_be_bytes(md5::Md5::digest(id.as_bytes()).into())
}

/// The digest of a set of ids (each id once).
pub fn ids_digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> u128 {
    ids.into_iter().map(id_digest).fold(0, |acc, d| acc ^ d)
}

const MAX_ENTRIES: usize = 500;
const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
const MAX_AGGREGATE_BYTES: usize = 950 * 1024;

/// Puts `options.events` user records on `stream`; `progress` is told how many were sent.
pub async fn produce(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    options: &Options,
    progress: impl Fn(u64),
) -> anyhow::Result<Produced> {
    let started = Instant::now();
    let mut generator = Generator::new(
        Catalogue::embedded(),
        options.seed,
        options.duplicate_share,
        options.malformed_share,
    );
    let mut produced = Produced::default();
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0;
    let mut aggregate: Vec<(String, Vec<u8>)> = Vec::new();
    let mut aggregate_bytes = 0;

    for _ in 0..options.events {
        let (kind, data, key) = generator.next_record();
        produced.events += 1;
        produced.bytes += data.len() as u64;
        match kind {
            Kind::Valid => {
                produced.valid += 1;
                let event: Value = serde_json::from_slice(&data).expect("the generator's JSON");
                let id = event["event_uuid"]
                    .as_str()
                    .expect("valid events have an id");
                produced.valid_ids_digest ^= id_digest(id);
            }
            Kind::Duplicate => produced.duplicates += 1,
            Kind::Malformed(reason) => *produced.malformed.entry(reason).or_default() += 1,
        }
        let record = if options.aggregate > 1 {
            aggregate_bytes += data.len() + key.len() + 8;
            aggregate.push((key, data));
            if aggregate.len() < options.aggregate && aggregate_bytes < MAX_AGGREGATE_BYTES {
                continue;
            }
            aggregate_bytes = 0;
            pack(&mut aggregate)
        } else {
            (key, data)
        };
        if batch.len() == MAX_ENTRIES
            || batch_bytes + record.1.len() + record.0.len() > MAX_REQUEST_BYTES
        {
            put_all(kinesis, stream, std::mem::take(&mut batch), &mut produced).await?;
            batch_bytes = 0;
            progress(produced.events);
            pace(options.rate, produced.events, started).await;
        }
        batch_bytes += record.1.len() + record.0.len();
        batch.push(record);
    }
    if !aggregate.is_empty() {
        batch.push(pack(&mut aggregate));
    }
    if !batch.is_empty() {
        put_all(kinesis, stream, batch, &mut produced).await?;
    }
    progress(produced.events);
    produced.elapsed = started.elapsed();
    Ok(produced)
}

fn pack(aggregate: &mut Vec<(String, Vec<u8>)>) -> (String, Vec<u8>) {
    let key = aggregate[0].0.clone();
    let blob = kpl::aggregate(aggregate.iter().map(|(k, d)| (k.as_str(), d.as_slice())));
    aggregate.clear();
    (key, blob)
}

async fn pace(rate: Option<f64>, sent: u64, started: Instant) {
    if let Some(rate) = rate.filter(|r| *r > 0.0) {
        let due = Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One `PutRecords`, re-sending only the entries that failed (throttled), with backoff.
async fn put_all(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    mut pending: Vec<(String, Vec<u8>)>,
    produced: &mut Produced,
) -> anyhow::Result<()> {
    produced.kinesis_records += pending.len() as u64;
    for attempt in 0..10u32 {
        let entries = pending
            .iter()
            .map(|(key, data)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data.clone()))
                    .build()
                    .context("building a PutRecords entry")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        produced.put_records_calls += 1;
        let output = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "PutRecords to {stream}: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(e)
                )
            })?;
        if output.failed_record_count().unwrap_or(0) == 0 {
            return Ok(());
        }
        let failed: Vec<_> = output
            .records()
            .iter()
            .zip(pending)
            .filter(|(result, _)| result.error_code().is_some())
            .map(|(_, entry)| entry)
            .collect();
        produced.entries_resent += failed.len() as u64;
        pending = failed;
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
    }
    bail!(
        "{} records still failing after 10 PutRecords attempts",
        pending.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::validate::validate;

    #[tokio::test]
    async fn put_all_sends_again_only_the_entries_kinesis_failed() {
        use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
        use aws_sdk_kinesis::types::PutRecordsResultEntry;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        use std::sync::{Arc, Mutex};

        // Every request's entries, as (partition key, data).
        type Entries = Vec<(String, Vec<u8>)>;
        let sent: Arc<Mutex<Vec<Entries>>> = Arc::default();
        let record = |sent: &Arc<Mutex<Vec<_>>>| {
            let sent = sent.clone();
            move |input: &aws_sdk_kinesis::operation::put_records::PutRecordsInput| {
                let entries = input
                    .records()
                    .iter()
                    .map(|e| {
                        (
                            e.partition_key().unwrap_or_default().to_string(),
                            e.data().as_ref().to_vec(),
                        )
                    })
                    .collect();
                sent.lock().unwrap().push(entries);
                true
            }
        };
        let result = |failed: bool| {
            let entry = PutRecordsResultEntry::builder();
            if failed {
                entry
                    .error_code("ProvisionedThroughputExceededException")
                    .error_message("Rate exceeded for shard shardId-000000000000")
            } else {
                entry.shard_id("shardId-000000000000").sequence_number("1")
            }
            .build()
        };
        // Of five entries the shard takes the 1st, 3rd and 5th; then the 4th; then the 2nd.
        let answers = [
            vec![false, true, false, true, false],
            vec![true, false],
            vec![false],
        ];
        let rules: Vec<_> = answers
            .into_iter()
            .map(|failures| {
                let failed = failures.iter().filter(|f| **f).count() as i32;
                mock!(aws_sdk_kinesis::Client::put_records)
                    .match_requests(record(&sent))
                    .then_output(move || {
                        PutRecordsOutput::builder()
                            .failed_record_count(failed)
                            .set_records(Some(failures.iter().map(|f| result(*f)).collect()))
                            .build()
                            .unwrap()
                    })
            })
            .collect();
        let kinesis = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, &rules);

        let entries: Vec<(String, Vec<u8>)> = (1..=5)
            .map(|n| (format!("key-{n}"), format!("record {n}").into_bytes()))
            .collect();
        let mut produced = Produced::default();
        put_all(&kinesis, "events", entries.clone(), &mut produced)
            .await
            .unwrap();

        let sent = sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            [
                entries.clone(),
                vec![entries[1].clone(), entries[3].clone()],
                vec![entries[1].clone()],
            ]
        );
        assert_eq!(
            (
                produced.kinesis_records,
                produced.put_records_calls,
                produced.entries_resent
            ),
            (5, 3, 3)
        );
    }

    #[test]
    fn the_ids_digest_is_what_the_lake_check_computes_in_python() {
        // int(hashlib.md5(id.encode()).hexdigest(), 16), and the XOR of two.
        let (a, b) = (
            "d7ca46d5-80b5-4b81-bf5b-c96a60c4c573",
            "00000000-0000-4000-8000-000000000001",
        );
        assert_eq!(
            format!("{:032x}", id_digest(a)),
            "b3713eb3e103ee5042310c8e66dc6c98"
        );
        assert_eq!(
            format!("{:032x}", ids_digest([a, b])),
            "f6ed472a1543ca1b540a346d1322b245"
        );
        assert_eq!(ids_digest([b, a]), ids_digest([a, b]));
    }

    #[test]
    fn generated_records_are_what_they_claim_to_be() {
        let catalogue = Catalogue::embedded();
        let mut generator = Generator::new(Catalogue::embedded(), 7, 0.1, 0.1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let (mut valid, mut duplicates, mut malformed) = (0, 0, 0);
        for _ in 0..5_000 {
            let (kind, data, _) = generator.next_record();
            let result = validate(&data, now, &catalogue);
            match kind {
                Kind::Valid | Kind::Duplicate => {
                    let event =
                        result.unwrap_or_else(|r| panic!("{kind:?} rejected: {}", r.detail));
                    assert!(catalogue.event(event.event_name).is_some());
                    if kind == Kind::Valid {
                        valid += 1
                    } else {
                        duplicates += 1
                    }
                }
                Kind::Malformed(reason) => {
                    assert_eq!(result.unwrap_err().reason.code(), reason);
                    malformed += 1;
                }
            }
        }
        assert!(
            valid > 3_500 && duplicates > 300 && malformed > 300,
            "{valid} {duplicates} {malformed}"
        );
    }

    #[test]
    fn every_catalogue_event_is_produced() {
        let mut generator = Generator::new(Catalogue::embedded(), 1, 0.0, 0.0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            seen.insert(
                generator.valid_event()["event_name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(seen.len(), Catalogue::embedded().events.len());
    }
}
