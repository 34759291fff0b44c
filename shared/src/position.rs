//! Positions in a Kinesis stream, in one place: what a shard id and a sequence number may be, how
//! sequence numbers order, where a user record sits (its [`StreamPosition`], written into every
//! staging and quarantine line), and the three things built on them: ingest's per-shard cutoffs
//! ([`ShardCutoffs`], what `batchItemFailures` reports), compaction's exact redelivery filter
//! ([`RedeliveryFilter`]) and the local event source mapping's [`Checkpoints`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use foldhash::HashMap as FastMap;

use serde::{Deserialize, Serialize};

use crate::validate::push_json_str;

/// Compares Kinesis sequence numbers (decimal strings, up to 129 digits) numerically.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The lowest of some sequence numbers, numerically.
pub fn lowest_sequence_number<'a>(sequences: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    sequences
        .into_iter()
        .min_by(|a, b| compare_sequence_numbers(a, b))
}

/// Kinesis's own bounds: a shard id is 1–128 characters of `[a-zA-Z0-9_.-]`. Shard ids name S3
/// objects, so nothing else may pass: no key can then exceed S3's 1,024 bytes or need escaping.
pub fn is_shard_id(s: &str) -> bool {
    // Folds, not `all`: without the early exit they vectorise (every record is checked).
    (1..=128).contains(&s.len())
        && s.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric() | (b == b'_') | (b == b'.') | (b == b'-'))
        })
}

/// Kinesis's own bound: a sequence number is at most 129 decimal digits.
pub fn is_sequence_number(s: &str) -> bool {
    (1..=129).contains(&s.len()) && s.bytes().fold(true, |ok, b| ok & b.is_ascii_digit())
}

/// `shardId-000000000000` from an eventID `shardId-000000000000:4954…`.
pub fn shard_of_event_id(event_id: &str) -> &str {
    // memchr's vectorised search: `rsplit_once` walks back a byte at a time over the sequence
    // number, which is most of the id.
    memchr::memrchr(b':', event_id.as_bytes()).map_or(event_id, |at| &event_id[..at])
}

/// A Kinesis sequence number ordered numerically.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(pub String);

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_sequence_numbers(&self.0, &other.0)
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a user record sits in its shard: the record's sequence number and, inside a KPL aggregate,
/// its index (`None` for a plain record, which sorts before index 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub sequence_number: SequenceNumber,
    pub sub_sequence_number: Option<u32>,
}

impl Position {
    pub fn new(sequence_number: &str, sub_sequence_number: Option<u32>) -> Position {
        Position {
            sequence_number: SequenceNumber(sequence_number.to_string()),
            sub_sequence_number,
        }
    }
}

/// Where a user record came from in the stream: the `source` of a staging line, and the position
/// fields of a quarantine line (contract: Staging, Quarantine).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamPosition<'a> {
    #[serde(borrow)]
    pub shard_id: Cow<'a, str>,
    #[serde(borrow)]
    pub sequence_number: Cow<'a, str>,
    /// Index inside a KPL aggregate; `None` for a plain record.
    #[serde(default)]
    pub sub_sequence_number: Option<u32>,
}

impl<'a> StreamPosition<'a> {
    pub fn new(
        shard_id: &'a str,
        sequence_number: &'a str,
        sub_sequence_number: Option<u32>,
    ) -> Self {
        StreamPosition {
            shard_id: Cow::Borrowed(shard_id),
            sequence_number: Cow::Borrowed(sequence_number),
            sub_sequence_number,
        }
    }

    /// Appends `"shard_id":…,"sequence_number":…[,"sub_sequence_number":N]`, the fields the
    /// [`Deserialize`] impl reads back.
    pub fn push_json_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"shard_id\":");
        push_json_str(out, &self.shard_id);
        out.extend_from_slice(b",\"sequence_number\":");
        push_json_str(out, &self.sequence_number);
        if let Some(sub) = self.sub_sequence_number {
            let _ = std::io::Write::write_fmt(out, format_args!(",\"sub_sequence_number\":{sub}"));
        }
    }
}

/// Per shard, the lowest sequence number of a batch not yet safely written (ingest); or the whole
/// batch, when a record that carries no sequence number could not be made safe. Everything at or
/// beyond a shard's cutoff is left for Lambda to redeliver.
#[derive(Debug, Default)]
pub struct ShardCutoffs<'a> {
    shards: HashMap<&'a str, &'a str>,
    whole_batch: bool,
}

impl<'a> ShardCutoffs<'a> {
    /// Nothing at or beyond `sequence` in `shard` is safe.
    pub fn lower_to(&mut self, shard: &'a str, sequence: &'a str) {
        self.shards
            .entry(shard)
            .and_modify(|current| {
                if compare_sequence_numbers(sequence, current).is_lt() {
                    *current = sequence;
                }
            })
            .or_insert(sequence);
    }

    /// Nothing in the batch is safe.
    pub fn fail_whole_batch(&mut self) {
        self.whole_batch = true;
    }

    /// True when the record is at or beyond its shard's cutoff: it will be redelivered.
    pub fn retries(&self, shard: &str, sequence: &str) -> bool {
        self.whole_batch
            || self
                .shards
                .get(shard)
                .is_some_and(|cut| compare_sequence_numbers(sequence, cut).is_ge())
    }

    /// The `itemIdentifier`s of `batchItemFailures`: each shard's cutoff, in shard order; for the
    /// whole batch, one empty identifier, which Lambda reads as "the whole batch failed".
    pub fn item_identifiers(&self) -> Vec<&'a str> {
        if self.whole_batch {
            return vec![""];
        }
        let mut failures: Vec<(&str, &str)> = self.shards.iter().map(|(s, q)| (*s, *q)).collect();
        failures.sort();
        failures.into_iter().map(|(_, sequence)| sequence).collect()
    }
}

/// Drops redeliveries exactly: a line is a redelivery only when its exact (shard, sequence number,
/// sub-sequence number) was already emitted.
///
/// One shard's objects may interleave (the event source mapping's ParallelizationFactor above 1
/// runs one shard in concurrent batches split by partition key), so no watermark will do. Memory
/// stays bounded all the same: objects are visited in first-sequence order per shard, so a
/// position below the current object's first can never be seen again and is forgotten. What is
/// kept is only the emitted positions that overlap objects yet to come.
#[derive(Debug, Default)]
pub struct RedeliveryFilter {
    shards: FastMap<String, ShardSeen>,
}

#[derive(Debug, Default)]
struct ShardSeen {
    /// The first sequence number of the object being read.
    floor: Option<String>,
    emitted: BTreeSet<Position>,
}

/// The staging object a line is read from, as its name says (`{shardId}-{firstSequenceNumber}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStart<'a> {
    pub shard_id: &'a str,
    pub first_sequence: &'a str,
}

impl RedeliveryFilter {
    /// True when `line` is new (and remembers it); false for a redelivery. `object` is where the
    /// line is read from (`None` for an object whose name gives no position: nothing is forgotten
    /// then); one shard's objects must come in first-sequence order.
    pub fn first_sight(&mut self, object: Option<ObjectStart>, line: &StreamPosition) -> bool {
        if let Some(object) = object {
            let seen = self.shard(object.shard_id);
            if seen.floor.as_deref() != Some(object.first_sequence) {
                let floor = Position::new(object.first_sequence, None);
                seen.emitted = seen.emitted.split_off(&floor);
                seen.floor = Some(object.first_sequence.to_string());
            }
        }
        let position = Position::new(&line.sequence_number, line.sub_sequence_number);
        self.shard(&line.shard_id).emitted.insert(position)
    }

    fn shard(&mut self, shard_id: &str) -> &mut ShardSeen {
        if !self.shards.contains_key(shard_id) {
            self.shards
                .insert(shard_id.to_string(), ShardSeen::default());
        }
        self.shards.get_mut(shard_id).expect("just inserted")
    }

    /// How many positions are remembered (for tests and the memory bound).
    pub fn remembered(&self) -> usize {
        self.shards.values().map(|s| s.emitted.len()).sum()
    }
}

/// How far the local event source mapping has read each shard, kept in a file between runs:
/// `{"<stream ARN>": {"<shardId>": "<last sequence number read>"}}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints(BTreeMap<String, BTreeMap<String, String>>);

impl Checkpoints {
    /// Reads a checkpoint file's text; anything unreadable is no checkpoint at all (the mapping
    /// then starts at the trim horizon, and compaction drops what it reads again).
    pub fn parse(text: &str) -> Checkpoints {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("string maps serialise")
    }

    pub fn get(&self, stream_arn: &str, shard_id: &str) -> Option<&str> {
        self.0.get(stream_arn)?.get(shard_id).map(String::as_str)
    }

    pub fn set(&mut self, stream_arn: &str, shard_id: &str, sequence: &str) {
        self.0
            .entry(stream_arn.to_string())
            .or_default()
            .insert(shard_id.to_string(), sequence.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_numerically() {
        use Ordering::*;
        assert_eq!(compare_sequence_numbers("9", "10"), Less);
        assert_eq!(compare_sequence_numbers("4954000", "4954000"), Equal);
        assert_eq!(compare_sequence_numbers("49540001", "49540000"), Greater);
        assert_eq!(compare_sequence_numbers("007", "7"), Equal);
        let long = "49546986683135544286507457936321625675700192471156785154";
        assert_eq!(compare_sequence_numbers(long, "9"), Greater);
        assert!(Position::new("5", None) < Position::new("5", Some(0)));
        assert!(Position::new("5", Some(9)) < Position::new("10", None));
        assert_eq!(lowest_sequence_number(["12", "9", "100"]), Some("9"));
        assert_eq!(lowest_sequence_number([]), None);
    }

    #[test]
    fn kinesis_bounds_on_shard_ids_and_sequence_numbers() {
        assert!(is_shard_id("shardId-000000000006") && is_shard_id(&"a".repeat(128)));
        assert!(!is_shard_id("") && !is_shard_id(&"a".repeat(129)) && !is_shard_id("../x"));
        assert!(is_sequence_number(&"9".repeat(129)) && !is_sequence_number(&"9".repeat(130)));
        assert!(!is_sequence_number("") && !is_sequence_number("12a"));
        assert_eq!(
            shard_of_event_id("shardId-000000000006:4959"),
            "shardId-000000000006"
        );
    }

    #[test]
    fn a_stream_position_reads_back_as_written() {
        for sub in [None, Some(0), Some(7)] {
            let position = StreamPosition::new("shardId-000000000003", "4954", sub);
            let mut out = b"{".to_vec();
            position.push_json_fields(&mut out);
            out.push(b'}');
            let back: StreamPosition = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, position);
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(value.get("sub_sequence_number").is_some(), sub.is_some());
        }
    }

    #[test]
    fn cutoffs_keep_each_shards_lowest_unsafe_sequence() {
        let mut cutoffs = ShardCutoffs::default();
        assert!(cutoffs.item_identifiers().is_empty());
        cutoffs.lower_to("shard-b", "30");
        cutoffs.lower_to("shard-a", "100");
        cutoffs.lower_to("shard-a", "99");
        cutoffs.lower_to("shard-a", "120");
        assert!(cutoffs.retries("shard-a", "99") && cutoffs.retries("shard-a", "1000"));
        assert!(!cutoffs.retries("shard-a", "98") && !cutoffs.retries("shard-c", "1"));
        assert_eq!(cutoffs.item_identifiers(), ["99", "30"]);
        cutoffs.fail_whole_batch();
        assert!(cutoffs.retries("shard-c", "1"));
        assert_eq!(cutoffs.item_identifiers(), [""]);
    }

    fn admit(filter: &mut RedeliveryFilter, first: &str, line: u64, sub: Option<u32>) -> bool {
        let object = ObjectStart {
            shard_id: "s",
            first_sequence: first,
        };
        let line = line.to_string();
        filter.first_sight(Some(object), &StreamPosition::new("s", &line, sub))
    }

    #[test]
    fn interleaved_objects_of_one_shard_keep_every_event_and_drop_exact_repeats() {
        // Two concurrent batches of one shard (ParallelizationFactor 2), then a redelivery of
        // part of the first: objects in first-sequence order.
        let objects: [(&str, &[u64]); 3] = [
            ("10", &[10, 12, 14]),
            ("11", &[11, 13, 15]),
            ("12", &[12, 14]),
        ];
        let mut filter = RedeliveryFilter::default();
        let mut emitted = Vec::new();
        for (first, lines) in objects {
            for n in lines {
                if admit(&mut filter, first, *n, None) {
                    emitted.push(*n);
                }
            }
        }
        emitted.sort();
        assert_eq!(emitted, [10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn memory_holds_only_what_later_objects_can_overlap() {
        let mut filter = RedeliveryFilter::default();
        for object in 0..1000u64 {
            let first = (object * 10).to_string();
            for n in object * 10..object * 10 + 10 {
                assert!(admit(&mut filter, &first, n, Some(0)));
            }
        }
        assert_eq!(filter.remembered(), 10);
        // Sub-sequence numbers are part of the position; other shards are separate.
        assert!(admit(&mut filter, "9990", 9995, Some(1)));
        assert!(!admit(&mut filter, "9990", 9995, Some(0)));
        let other_shard = StreamPosition::new("t", "9995", Some(0));
        assert!(filter.first_sight(None, &other_shard));
        // An object whose name gives no position forgets nothing.
        assert!(!filter.first_sight(None, &StreamPosition::new("s", "9995", Some(0))));
    }

    #[test]
    fn checkpoints_read_back_as_written_per_stream_and_shard() {
        let mut checkpoints = Checkpoints::parse("");
        assert_eq!(checkpoints.get("arn:a", "shardId-1"), None);
        checkpoints.set("arn:a", "shardId-1", "17");
        checkpoints.set("arn:a", "shardId-2", "4");
        checkpoints.set("arn:b", "shardId-1", "5");
        checkpoints.set("arn:a", "shardId-1", "19");
        let back = Checkpoints::parse(&checkpoints.to_json());
        assert_eq!(back, checkpoints);
        assert_eq!(back.get("arn:a", "shardId-1"), Some("19"));
        assert_eq!(back.get("arn:b", "shardId-1"), Some("5"));
        assert_eq!(Checkpoints::parse("not json"), Checkpoints::default());
    }
}
