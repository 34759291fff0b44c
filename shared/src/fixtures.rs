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
