//! Fuzzing what arrives from outside — the Lambda envelope, record data, KPL aggregates — through the
//! whole handler on the in-memory stores. Batches are drawn from generators (valid events, then
//! mutated: truncated, bytes flipped, line ends and indentation added, fields of the wrong type;
//! envelopes with fields missing, bad base64, odd arrival times; aggregates whole and corrupted).
//!
//! For every batch: no panic, no failure reported (these stores never fail), every user record
//! accounted for as written, duplicate or quarantined, every staging line readable by compaction
//! (so compaction never quarantines what ingest wrote), and every quarantine line carrying its raw
//! bytes. `FUZZ_EXECUTIONS` sets how many batches (default: a few hundred, for `make test`).

use std::sync::Arc;

use base64::Engine as _;
use pipeline::fixtures::{event_json, scramble, ARRIVAL_MS};
use pipeline::lambda_payload::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};
use pipeline::memory::{MemoryDedupStore, MemoryMetrics, MemoryObjectStore};

use super::*;

/// A small deterministic generator (splitmix64), so a failing seed can be replayed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        scramble(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn valid_event(draw: &mut Draw) -> Vec<u8> {
    let n = draw.below(50);
    match draw.below(4) {
        0 => event_json(n),
        1 => {
            let value: serde_json::Value = serde_json::from_slice(&event_json(n)).unwrap();
            serde_json::to_vec_pretty(&value).unwrap()
        }
        2 => String::from_utf8(event_json(n))
            .unwrap()
            .replace(',', ",\r\n\t")
            .into_bytes(),
        _ => format!(
            r#"{{"event_uuid":"00000000-0000-4000-8000-{n:012}","created_at":"2024-04-11T14:10:05.5+02:00","event_name":"user:login","event_specifics":{{"device":"Android","note":"line\nbreak \u2028 \"quoted\"","nested":{{"a":[1,2,{{}}]}}}}}}"#
        )
        .into_bytes(),
    }
}

fn mutate(draw: &mut Draw, mut data: Vec<u8>) -> Vec<u8> {
    for _ in 0..=draw.below(3) {
        if data.is_empty() {
            data.push(b'{');
        }
        let at = draw.below(data.len() as u64) as usize;
        match draw.below(7) {
            0 => data.truncate(at),
            1 => data[at] ^= 1 << draw.below(8),
            2 => data.insert(at, b'\n'),
            3 => data.splice(at..at, *b"\r\n   ").for_each(drop),
            4 => data.splice(at..at, *b"\xff\xfe").for_each(drop),
            5 => data =
                br#"{"event_uuid":7,"created_at":null,"event_name":"game:","event_specifics":[]}"#
                    .to_vec(),
            _ => data
                .splice(at..at, *b"\"attempts\":\"many\",")
                .for_each(drop),
        }
    }
    data
}

fn record_data(draw: &mut Draw) -> Vec<u8> {
    match draw.below(10) {
        0..=4 => valid_event(draw),
        5..=7 => {
            let event = valid_event(draw);
            mutate(draw, event)
        }
        _ => {
            let users: Vec<Vec<u8>> = (0..=draw.below(5))
                .map(|_| {
                    if draw.chance(70) {
                        valid_event(draw)
                    } else {
                        let event = valid_event(draw);
                        mutate(draw, event)
                    }
                })
                .collect();
            let aggregate = pipeline::kpl::aggregate(users.iter().map(|u| ("pk", u.as_slice())));
            if draw.chance(30) {
                mutate(draw, aggregate)
            } else {
                aggregate
            }
        }
    }
}

/// A payload of up to 20 records over two shards, some with a damaged envelope.
fn payload(draw: &mut Draw) -> String {
    let records: Vec<StreamRecord> = (0..=draw.below(20))
        .map(|i| StreamRecord {
            shard_id: format!("shardId-00000000000{}", draw.below(2)),
            sequence_number: format!("{}", 1000 + i),
            partition_key: "pk".into(),
            approximate_arrival_ms: ARRIVAL_MS + draw.below(120_000) as i64,
            data: record_data(draw),
        })
        .collect();
    let mut event = kinesis_event(&records, DEFAULT_STREAM_ARN);
    for record in event["Records"].as_array_mut().unwrap() {
        if !draw.chance(10) {
            continue;
        }
        let kinesis = &mut record["kinesis"];
        match draw.below(6) {
            0 => kinesis["data"] = "=not base64=".into(),
            1 => {
                kinesis.as_object_mut().unwrap().remove("sequenceNumber");
            }
            2 => kinesis["approximateArrivalTimestamp"] = "soon".into(),
            3 => kinesis["approximateArrivalTimestamp"] = serde_json::json!(1.7128446060123456e9),
            4 => {
                record.as_object_mut().unwrap().remove("eventID");
            }
            _ => *record = serde_json::json!(["not", "a", "record"]),
        }
    }
    event.to_string()
}

/// How many user records a payload holds, counted independently of the handler.
fn user_records(batch: &KinesisBatch) -> u64 {
    batch
        .records
        .iter()
        .map(|r| match r {
            Envelope::Record(r) if pipeline::kpl::is_aggregated(&r.data) => {
                pipeline::kpl::deaggregate(&r.data).map_or(1, |users| users.len() as u64)
            }
            _ => 1,
        })
        .sum()
}

#[tokio::test]
async fn whatever_arrives_ends_as_events_or_quarantine_lines() {
    let executions: u64 = std::env::var("FUZZ_EXECUTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let lake = pipeline::staging_line::decode_staging_line;
    for execution in 0..executions {
        let mut draw = Draw(seed.wrapping_mul(1 << 32).wrapping_add(execution * 1000));
        let text = payload(&mut draw);
        let objects = MemoryObjectStore::default();
        let ingest = Ingest {
            catalogue: Catalogue::embedded(),
            prefixes: Prefixes::default(),
            dedup_ttl_seconds: 3600,
            dedup: Arc::new(MemoryDedupStore::default()),
            objects: Arc::new(objects.clone()),
            metrics: Arc::new(MemoryMetrics::default()),
            clock: || 1_712_844_606,
        };
        let batch = KinesisBatch::parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("execution {execution}: the outer shape failed: {e}"));
        let (response, summary) = ingest.process(&batch, Deadline::none()).await;
        let context = || format!("execution {execution} (seed {seed}): {text}");
        assert!(response.batch_item_failures.is_empty(), "{}", context());
        assert_eq!(
            summary.records_received,
            user_records(&batch),
            "{}",
            context()
        );
        assert_eq!(
            summary.records_received,
            summary.events_written + summary.duplicates_dropped + summary.records_quarantined,
            "{}",
            context()
        );
        let (mut staged, mut quarantined) = (0, 0);
        for key in objects.keys() {
            let body = objects.object(&key).unwrap();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let text = std::str::from_utf8(line).expect("lines are UTF-8");
                if key.starts_with("staging/") {
                    staged += 1;
                    if let Err(e) = lake(text) {
                        panic!("compaction cannot read `{text}`: {e}\n{}", context());
                    }
                } else {
                    quarantined += 1;
                    let line: serde_json::Value = serde_json::from_str(text).unwrap();
                    assert!(line["reason"].is_string(), "{}", context());
                    base64::engine::general_purpose::STANDARD
                        .decode(line["data_base64"].as_str().unwrap())
                        .unwrap();
                }
            }
        }
        assert_eq!(staged, summary.events_written, "{}", context());
        assert_eq!(quarantined, summary.records_quarantined, "{}", context());
    }
    eprintln!("fuzz: {executions} batches from seed {seed}, every record accounted for");
}
