//! Positions in a Kinesis stream: sequence numbers, the (sequence, sub-sequence) of a user record,
//! and the exact redelivery filter compaction applies to one shard's staging objects.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

/// Compares Kinesis sequence numbers (decimal strings, up to 129 digits) numerically.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
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
    shards: HashMap<String, BTreeSet<Position>>,
}

impl RedeliveryFilter {
    /// Announces the next object of `shard`, whose lines start at `first_sequence`. Objects of one
    /// shard must be announced in first-sequence order.
    pub fn start_object(&mut self, shard: &str, first_sequence: &str) {
        if let Some(emitted) = self.shards.get_mut(shard) {
            let floor = Position::new(first_sequence, None);
            *emitted = emitted.split_off(&floor);
        }
    }

    /// True when the position is new (and remembers it); false for a redelivery.
    pub fn first_sight(&mut self, shard: &str, sequence: &str, sub: Option<u32>) -> bool {
        let position = Position::new(sequence, sub);
        match self.shards.get_mut(shard) {
            Some(emitted) => emitted.insert(position),
            None => {
                self.shards
                    .insert(shard.to_string(), BTreeSet::from([position]));
                true
            }
        }
    }

    /// How many positions are remembered (for tests and the memory bound).
    pub fn remembered(&self) -> usize {
        self.shards.values().map(BTreeSet::len).sum()
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
            filter.start_object("s", first);
            for n in lines {
                if filter.first_sight("s", &n.to_string(), None) {
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
            let first = object * 10;
            filter.start_object("s", &first.to_string());
            for n in first..first + 10 {
                assert!(filter.first_sight("s", &n.to_string(), Some(0)));
            }
        }
        assert_eq!(filter.remembered(), 10);
        // Sub-sequence numbers are part of the position; other shards are separate.
        assert!(filter.first_sight("s", "9995", Some(1)));
        assert!(!filter.first_sight("s", "9995", Some(0)));
        assert!(filter.first_sight("t", "9995", Some(0)));
    }
}
