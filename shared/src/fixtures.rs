//! Small, deterministic inputs for tests and benchmarks (the producer makes realistic ones).

use crate::lambda_payload::StreamRecord;

/// 2024-04-11T14:10:06.012Z, the contract example's arrival time.
pub const ARRIVAL_MS: i64 = 1_712_844_606_012;

/// A valid, distinct UUID for each `n`.
pub fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A valid `game:resumed` event with id [`uuid`]`(n)`, created a moment before [`ARRIVAL_MS`].
pub fn event_json(n: u64) -> Vec<u8> {
    event_with_language(n, "lang_ru")
}

pub fn event_with_language(n: u64, language: &str) -> Vec<u8> {
    format!(
        r#"{{"event_uuid":"{}","created_at":1712844605.9512355,"event_name":"game:resumed","event_specifics":{{"device":"iOS","user_location":"Vernier, France","attempts":93,"language_id":"{language}","difficulty":"Hard","score":{},"session_id":"937baf69-7d3e-406c-b32f-f8a937bd70f1"}}}}"#,
        uuid(n),
        n % 101
    )
    .into_bytes()
}

/// A record on shard `shard` with sequence number `sequence`.
pub fn record(shard: u32, sequence: u64, arrival_ms: i64, data: Vec<u8>) -> StreamRecord {
    StreamRecord {
        shard_id: format!("shardId-{shard:012}"),
        sequence_number: format!("{sequence}"),
        partition_key: format!("pk-{}", sequence % 16),
        approximate_arrival_ms: arrival_ms,
        data,
    }
}

/// Staging NDJSON exactly as ingest writes it, for `(sequence number, event JSON)` pairs of one
/// shard arriving at `arrival_ms`. Panics on an invalid event: fixtures are valid by construction.
pub fn staging_lines(shard: &str, events: &[(u64, Vec<u8>)], arrival_ms: i64) -> Vec<u8> {
    let catalogue = crate::catalogue::Catalogue::embedded();
    let received_at = arrival_ms * 1000;
    let mut body = Vec::new();
    for (sequence, data) in events {
        let event = crate::validate::validate(data, received_at, &catalogue)
            .unwrap_or_else(|r| panic!("fixture event is invalid: {}", r.detail));
        let sequence = sequence.to_string();
        let source = crate::position::StreamPosition::new(shard, &sequence, None);
        crate::staging_line::push_staging_line(&mut body, &event, received_at, &source);
    }
    body
}

/// A well-mixed 64-bit value for `n` (splitmix64), for ids that do not compress away.
pub fn scramble(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random-looking but deterministic UUID for `n`.
pub fn scrambled_uuid(n: u64) -> String {
    let (a, b) = (scramble(n), scramble(n ^ 0xDEAD_BEEF));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        b >> 52,
        b & 0xFFFF_FFFF_FFFF
    )
}
