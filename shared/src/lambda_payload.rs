//! The JSON Lambda hands a Kinesis-triggered function (`{"Records":[...]}`): written from plain data
//! (what the local event source mapping sends, what tests and sample payloads are made of) and read
//! back tolerantly by `ingest` ([`KinesisBatch`]). Writer and reader live together so that a
//! round-trip test holds them to one format.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::position::{is_sequence_number, is_shard_id, shard_of_event_id};
use crate::time;
use crate::validate::shorten;

#[cfg(feature = "test-util")]
pub use writer::{kinesis_event, StreamRecord, DEFAULT_STREAM_ARN};

/// Writing: what the local event source mapping sends and tests are made of (feature `test-util`:
/// no Lambda binary writes a payload).
#[cfg(feature = "test-util")]
mod writer {
    use base64::Engine as _;
    use serde_json::{json, Value};

    /// One Kinesis record as the event source mapping sees it.
    #[derive(Debug, Clone)]
    pub struct StreamRecord {
        pub shard_id: String,
        pub sequence_number: String,
        pub partition_key: String,
        /// Epoch milliseconds, as Kinesis stamps it.
        pub approximate_arrival_ms: i64,
        pub data: Vec<u8>,
    }

    pub const DEFAULT_STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/events";

    impl StreamRecord {
        pub fn to_json(&self, stream_arn: &str) -> Value {
            let region = stream_arn.split(':').nth(3).unwrap_or("us-east-1");
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": self.partition_key,
                    "sequenceNumber": self.sequence_number,
                    "data": base64::engine::general_purpose::STANDARD.encode(&self.data),
                    // Seconds with millisecond precision, as Lambda sends it.
                    "approximateArrivalTimestamp": self.approximate_arrival_ms as f64 / 1000.0,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{}:{}", self.shard_id, self.sequence_number),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/ingest",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            })
        }
    }

    /// `{"Records":[...]}` for `records`, in the order given.
    pub fn kinesis_event(records: &[StreamRecord], stream_arn: &str) -> Value {
        json!({ "Records": records.iter().map(|r| r.to_json(stream_arn)).collect::<Vec<_>>() })
    }
}

// ---------------------------------------------------------------------------------------------
// Reading: what `ingest` does with the payload Lambda hands it.
// ---------------------------------------------------------------------------------------------

/// The Lambda Kinesis event as `ingest` reads it. Only the outer `{"Records":[...]}` must parse;
/// every record is then decoded on its own, so one record whose envelope cannot be read (a missing
/// field, data that is not base64, an arrival time that is not a number) becomes an
/// [`Envelope::Unreadable`] instead of failing its neighbours, which Lambda would retry until it
/// gave up on all of them.
#[derive(Debug, Default)]
pub struct KinesisBatch {
    pub records: Vec<Envelope>,
}

/// One record of the batch, decoded or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    Record(KinesisRecord),
    Unreadable(UnreadableRecord),
}

/// A record whose envelope was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    /// `shardId-…:sequenceNumber`, as Lambda sends it (empty when absent).
    pub event_id: String,
    pub shard_id: String,
    pub sequence_number: String,
    /// `approximateArrivalTimestamp` in epoch microseconds, read exactly from its text.
    pub received_at: i64,
    /// The base64-decoded `kinesis.data`.
    pub data: Vec<u8>,
}

/// A record whose envelope could not be read: what could be salvaged, and its raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRecord {
    pub shard_id: String,
    /// Empty when the record carries none: such a record cannot be named in `batchItemFailures`.
    pub sequence_number: String,
    pub received_at: Option<i64>,
    /// The record exactly as it arrived in the payload (JSON text).
    pub raw: Vec<u8>,
    pub detail: String,
}

/// Where a record of a shard with no readable eventID is filed.
pub const UNKNOWN_SHARD: &str = "shardId-unknown";

impl KinesisBatch {
    pub fn parse(payload: &[u8]) -> Result<KinesisBatch, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// The shard and sequence number of the batch's first readable record: what names the batch
    /// in logs (Lambda's batches are of one shard).
    pub fn first_position(&self) -> Option<(&str, &str)> {
        self.records.iter().find_map(|record| match record {
            Envelope::Record(r) => Some((r.shard_id.as_str(), r.sequence_number.as_str())),
            Envelope::Unreadable(_) => None,
        })
    }
}

impl<'de> Deserialize<'de> for KinesisBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Outer {
            #[serde(rename = "Records")]
            records: Vec<Box<RawValue>>,
        }
        let outer = Outer::deserialize(deserializer)?;
        Ok(KinesisBatch {
            records: outer
                .records
                .iter()
                .map(|raw| decode_record(raw.get()))
                .collect(),
        })
    }
}

#[derive(Deserialize)]
struct RecordFields<'a> {
    #[serde(rename = "eventID", borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kinesis: KinesisFields<'a>,
}

#[derive(Deserialize)]
struct KinesisFields<'a> {
    #[serde(rename = "sequenceNumber", borrow)]
    sequence_number: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "approximateArrivalTimestamp", borrow)]
    approximate_arrival_timestamp: &'a RawValue,
}

/// Decodes one record's JSON text.
pub fn decode_record(raw: &str) -> Envelope {
    match read_record(raw) {
        Ok(record) => Envelope::Record(record),
        Err(detail) => Envelope::Unreadable(salvage(raw, detail)),
    }
}

fn read_record(raw: &str) -> Result<KinesisRecord, String> {
    let fields: RecordFields = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let sequence_number = fields.kinesis.sequence_number;
    if !is_sequence_number(&sequence_number) {
        return Err(format!(
            "sequenceNumber `{}` is not a Kinesis sequence number",
            shorten(&sequence_number)
        ));
    }
    let event_id = fields.event_id.map(Cow::into_owned).unwrap_or_default();
    if !event_id.is_empty() && !is_shard_id(shard_of_event_id(&event_id)) {
        return Err(format!(
            "eventID `{}` does not name a Kinesis shard",
            shorten(&event_id)
        ));
    }
    let arrival = fields.kinesis.approximate_arrival_timestamp.get();
    let received_at = time::parse_arrival_seconds(arrival).map_err(|_| {
        format!(
            "approximateArrivalTimestamp {} is not epoch seconds",
            shorten(arrival)
        )
    })?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(fields.kinesis.data.as_bytes())
        .map_err(|e| format!("kinesis.data is not base64: {e}"))?;
    Ok(KinesisRecord {
        shard_id: shard_of(&event_id).to_string(),
        event_id,
        sequence_number: sequence_number.into_owned(),
        received_at,
        data,
    })
}

/// What an unreadable record still tells: its shard and sequence number when they are there.
fn salvage(raw: &str, detail: String) -> UnreadableRecord {
    let value: serde_json::Value = serde_json::from_str(raw).unwrap_or(serde_json::Value::Null);
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let shard_id = text(&value["eventID"])
        .map(|id| shard_of_event_id(&id).to_string())
        .filter(|shard| is_shard_id(shard));
    // A sequence number names the quarantine object only beside a real shard id: under the
    // unknown shard, two shards' records could share one, and the object is named by digest.
    let sequence_number = text(&value["kinesis"]["sequenceNumber"])
        .filter(|s| shard_id.is_some() && is_sequence_number(s))
        .unwrap_or_default();
    let received_at = value["kinesis"]["approximateArrivalTimestamp"]
        .as_number()
        .and_then(|n| time::parse_arrival_seconds(&n.to_string()).ok());
    UnreadableRecord {
        shard_id: shard_id.unwrap_or_else(|| UNKNOWN_SHARD.to_string()),
        sequence_number,
        received_at,
        raw: raw.as_bytes().to_vec(),
        detail: format!("unreadable Kinesis record envelope: {}", shorten(&detail)),
    }
}

fn shard_of(event_id: &str) -> &str {
    match shard_of_event_id(event_id) {
        "" => UNKNOWN_SHARD,
        shard => shard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(arrival_ms: i64) -> StreamRecord {
        StreamRecord {
            shard_id: "shardId-000000000003".into(),
            sequence_number: "49546986683135544286507457936321625675700192471156785154".into(),
            partition_key: "pk".into(),
            approximate_arrival_ms: arrival_ms,
            data: b"{\"a\":1}\n\xff".to_vec(),
        }
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads_back() {
        // Every arrival millisecond of a second, including those ending in 0 (`.75`, `.5`).
        let records: Vec<StreamRecord> =
            (0..1000).map(|ms| record(1_795_219_110_000 + ms)).collect();
        let payload = serde_json::to_vec(&kinesis_event(&records, DEFAULT_STREAM_ARN)).unwrap();
        let batch = KinesisBatch::parse(&payload).unwrap();
        assert_eq!(batch.records.len(), 1000);
        for (sent, got) in records.iter().zip(&batch.records) {
            let Envelope::Record(got) = got else {
                panic!("unreadable: {got:?}")
            };
            assert_eq!(got.received_at, sent.approximate_arrival_ms * 1000);
            assert_eq!(got.data, sent.data);
            assert_eq!(got.shard_id, sent.shard_id);
            assert_eq!(got.sequence_number, sent.sequence_number);
            assert_eq!(
                got.event_id,
                format!("{}:{}", sent.shard_id, sent.sequence_number)
            );
        }
    }

    #[test]
    fn an_unreadable_envelope_never_fails_its_neighbours() {
        let good = record(1_795_219_110_750).to_json(DEFAULT_STREAM_ARN);
        let mut bad_data = good.clone();
        bad_data["kinesis"]["data"] = "not base64!".into();
        let mut bad_time = good.clone();
        bad_time["kinesis"]["approximateArrivalTimestamp"] = "yesterday".into();
        let mut no_kinesis = good.clone();
        no_kinesis.as_object_mut().unwrap().remove("kinesis");
        let payload = serde_json::json!({"Records": [good, bad_data, bad_time, no_kinesis, 42]});
        let batch = KinesisBatch::parse(payload.to_string().as_bytes()).unwrap();
        let kinds: Vec<bool> = batch
            .records
            .iter()
            .map(|r| matches!(r, Envelope::Record(_)))
            .collect();
        assert_eq!(kinds, [true, false, false, false, false]);
        assert_eq!(
            shard_of_event_id("shardId-000000000006:4959"),
            "shardId-000000000006"
        );
        let Envelope::Unreadable(bad) = &batch.records[1] else {
            unreachable!()
        };
        assert_eq!(bad.shard_id, "shardId-000000000003");
        assert_eq!(bad.sequence_number, record(0).sequence_number);
        assert_eq!(bad.received_at, Some(1_795_219_110_750_000));
        assert!(bad.detail.contains("base64"), "{}", bad.detail);
        let raw: serde_json::Value = serde_json::from_slice(&bad.raw).unwrap();
        assert_eq!(raw["kinesis"]["data"], "not base64!");
        let Envelope::Unreadable(number) = &batch.records[4] else {
            unreachable!()
        };
        assert_eq!(
            (number.shard_id.as_str(), number.raw.as_slice()),
            (UNKNOWN_SHARD, &b"42"[..])
        );
        // Envelope values that would make keys S3 refuses are not taken for a shard or a position.
        let mut long_shard = good.clone();
        long_shard["eventID"] = format!("shardId-{}:1", "9".repeat(200)).into();
        let mut odd_shard = good.clone();
        odd_shard["eventID"] = "../x:1".into();
        let mut long_sequence = good.clone();
        long_sequence["kinesis"]["sequenceNumber"] = "7".repeat(130).into();
        let hostile = serde_json::json!({"Records": [long_shard, odd_shard, long_sequence]});
        let batch = KinesisBatch::parse(hostile.to_string().as_bytes()).unwrap();
        let salvaged: Vec<(&str, &str)> = batch
            .records
            .iter()
            .map(|r| match r {
                Envelope::Unreadable(u) => (u.shard_id.as_str(), u.sequence_number.as_str()),
                Envelope::Record(r) => panic!("taken as readable: {r:?}"),
            })
            .collect();
        let sequence = record(0).sequence_number;
        assert_eq!(
            salvaged,
            [
                (UNKNOWN_SHARD, ""),
                (UNKNOWN_SHARD, ""),
                ("shardId-000000000003", "")
            ]
        );
        assert!(is_sequence_number(&sequence) && is_sequence_number(&"9".repeat(129)));
        // Only the outer shape is required of the payload.
        assert!(KinesisBatch::parse(b"{\"records\":[]}").is_err());
        assert!(KinesisBatch::parse(b"[]").is_err());
    }

    #[test]
    fn arrival_times_with_any_number_of_decimals_are_read_exactly() {
        let payload = |arrival: &str| {
            format!(
                r#"{{"Records":[{{"eventID":"shardId-000000000000:1","kinesis":{{"sequenceNumber":"1","data":"e30=","approximateArrivalTimestamp":{arrival}}}}}]}}"#
            )
        };
        for (arrival, micros) in [
            ("1795219110.75", 1_795_219_110_750_000),
            ("1795219110.5", 1_795_219_110_500_000),
            ("1795219110.12", 1_795_219_110_120_000),
            ("1795219110.987", 1_795_219_110_987_000),
            ("1795219110.9826107", 1_795_219_110_982_611),
            ("1795219110", 1_795_219_110_000_000),
        ] {
            let batch = KinesisBatch::parse(payload(arrival).as_bytes()).unwrap();
            let Envelope::Record(r) = &batch.records[0] else {
                panic!("{arrival}: {:?}", batch.records[0])
            };
            assert_eq!(r.received_at, micros, "{arrival}");
        }
    }
}
