//! The JSON Lambda hands a Kinesis-triggered function (`{"Records":[...]}`): written from plain data
//! (what the local event source mapping sends, what tests and sample payloads are made of) and read
//! back tolerantly by `ingest` ([`KinesisBatch`]). Writer and reader live together so that a
//! round-trip test holds them to one format.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json_scan::Scanner;
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

/// The Lambda Kinesis event as `ingest` reads it, borrowing from the payload's bytes. Only the
/// outer `{"Records":[...]}` must parse; every record is then decoded on its own, so one record
/// whose envelope cannot be read (a missing field, data that is not base64, an arrival time that is
/// not a number) becomes an [`Envelope::Unreadable`] instead of failing its neighbours, which
/// Lambda would retry until it gave up on all of them.
#[derive(Debug, Default)]
pub struct KinesisBatch<'a> {
    pub records: Vec<Envelope<'a>>,
}

/// One record of the batch, decoded or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<'a> {
    Record(KinesisRecord<'a>),
    Unreadable(UnreadableRecord),
}

/// A record whose envelope was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord<'a> {
    /// `shardId-…:sequenceNumber`, as Lambda sends it (empty when absent).
    pub event_id: Cow<'a, str>,
    pub shard_id: Cow<'a, str>,
    pub sequence_number: Cow<'a, str>,
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

impl<'a> KinesisBatch<'a> {
    /// Reads the payload in one borrowed walk ([`crate::json_scan`]); a payload or a record that
    /// walk declines (escapes in the fields read, duplicate keys, any error) is read by serde_json
    /// instead, which gives the answer, or the error, it always gave.
    pub fn parse(payload: &'a [u8]) -> Result<KinesisBatch<'a>, serde_json::Error> {
        match simdutf8::basic::from_utf8(payload)
            .ok()
            .and_then(scan_batch)
        {
            Some(batch) => Ok(batch),
            None => parse_with_serde(payload),
        }
    }

    /// The shard and sequence number of the batch's first readable record: what names the batch
    /// in logs (Lambda's batches are of one shard).
    pub fn first_position(&self) -> Option<(&str, &str)> {
        self.records.iter().find_map(|record| match record {
            Envelope::Record(r) => Some((r.shard_id.as_ref(), r.sequence_number.as_ref())),
            Envelope::Unreadable(_) => None,
        })
    }
}

/// The payload read by serde_json alone (what [`KinesisBatch::parse`] falls back to).
fn parse_with_serde(payload: &[u8]) -> Result<KinesisBatch<'_>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(rename = "Records", borrow)]
        records: Vec<&'a RawValue>,
    }
    let outer: Outer = serde_json::from_slice(payload)?;
    Ok(KinesisBatch {
        records: outer
            .records
            .iter()
            .map(|raw| decode_record(raw.get()))
            .collect(),
    })
}

/// Lambda's envelope of a record alone (its ARNs, names and ids) is some 450 bytes: the list of
/// records is sized from the payload's length instead of growing (and copying itself) a dozen
/// times over a batch of ten thousand; a payload of a few large records is sized no further than
/// the most records a Kinesis event source mapping sends at once (its `BatchSize` maximum).
const RECORD_BYTES_AT_LEAST: usize = 256;
const MOST_RECORDS_A_BATCH: usize = 10_000;

/// The fast walk over `{"Records":[...]}`; `None` sends the whole payload to serde_json.
fn scan_batch(text: &str) -> Option<KinesisBatch<'_>> {
    let mut scanner = Scanner::new(text);
    let mut records = None;
    scanner.object(|key, scanner| {
        if key != "Records" {
            return scanner.value().map(drop);
        }
        if records.is_some() {
            return None;
        }
        let mut list =
            Vec::with_capacity((text.len() / RECORD_BYTES_AT_LEAST).min(MOST_RECORDS_A_BATCH));
        scanner.array(|scanner| {
            list.push(scan_record(scanner)?);
            Some(())
        })?;
        records = Some(list);
        Some(())
    })?;
    scanner.end()?;
    Some(KinesisBatch { records: records? })
}

/// The fields of one record as the fast walk found them; `simple` is false when serde_json must
/// read the record instead (a field twice, a string with escapes, a value of another type).
#[derive(Default)]
struct Scanned<'a> {
    event_id: Option<&'a str>,
    event_id_seen: bool,
    sequence_number: Option<&'a str>,
    data: Option<&'a str>,
    /// `data` decoded during the walk (see [`Scanner::unchecked_string`]).
    decoded: Option<Vec<u8>>,
    arrival: Option<&'a str>,
    kinesis: bool,
    simple: bool,
}

/// A string value without escapes, into `slot`; anything else (or a second one) is not simple.
fn scan_plain<'a>(
    slot: &mut Option<&'a str>,
    simple: &mut bool,
    scanner: &mut Scanner<'a>,
) -> Option<()> {
    match scanner.plain_string_or_other()? {
        Some(text) if slot.is_none() => *slot = Some(text),
        _ => *simple = false,
    }
    Some(())
}

fn scan_record<'a>(scanner: &mut Scanner<'a>) -> Option<Envelope<'a>> {
    let start = scanner.position();
    let mut found = Scanned {
        simple: true,
        ..Scanned::default()
    };
    if scanner.peek() != Some(b'{') {
        return Some(decode_record(scanner.value()?));
    }
    scanner.object(|key, scanner| match key {
        "eventID" => {
            // Given twice, serde_json refuses the record: let it say so.
            found.simple &= !std::mem::replace(&mut found.event_id_seen, true);
            if scanner.peek() == Some(b'n') {
                // null (the only value starting so): as absent (serde's `Option`).
                return scanner.value().map(drop);
            }
            scan_plain(&mut found.event_id, &mut found.simple, scanner)
        }
        "kinesis" if !found.kinesis && scanner.peek() == Some(b'{') => {
            found.kinesis = true;
            scanner.object(|key, scanner| match key {
                "sequenceNumber" => {
                    scan_plain(&mut found.sequence_number, &mut found.simple, scanner)
                }
                "data" if found.data.is_none() => {
                    // Base64 holds neither `\\` nor control characters, so the decoder checks
                    // what the careful walk would: data it refuses is read that way instead.
                    let before = scanner.position();
                    if let Some(text) = scanner.unchecked_string() {
                        if let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(text.as_bytes()) {
                            found.data = Some(text);
                            found.decoded = Some(bytes);
                            return Some(());
                        }
                    }
                    scanner.rewind(before);
                    scan_plain(&mut found.data, &mut found.simple, scanner)
                }
                "data" => scan_plain(&mut found.data, &mut found.simple, scanner),
                "approximateArrivalTimestamp" => {
                    found.simple &= found.arrival.is_none();
                    found.arrival = Some(scanner.value()?);
                    Some(())
                }
                _ => scanner.value().map(drop),
            })
        }
        "kinesis" => {
            found.simple = false;
            scanner.value().map(drop)
        }
        _ => scanner.value().map(drop),
    })?;
    let raw = scanner.since(start);
    let (Some(sequence_number), Some(data), Some(arrival), true) = (
        found.sequence_number,
        found.data,
        found.arrival,
        found.simple && found.kinesis,
    ) else {
        return Some(decode_record(raw));
    };
    let event_id = found.event_id.map(Cow::Borrowed);
    let data = match found.decoded {
        Some(bytes) => Data::Decoded(bytes),
        None => Data::Base64(data),
    };
    Some(
        match build_record(event_id, sequence_number.into(), data, arrival) {
            Ok(record) => Envelope::Record(record),
            Err(detail) => Envelope::Unreadable(salvage(raw, detail)),
        },
    )
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

/// Decodes one record's JSON text with serde_json.
pub fn decode_record(raw: &str) -> Envelope<'_> {
    let record = serde_json::from_str::<RecordFields>(raw)
        .map_err(|e| e.to_string())
        .and_then(|fields| {
            build_record(
                fields.event_id,
                fields.kinesis.sequence_number,
                Data::Base64(&fields.kinesis.data),
                fields.kinesis.approximate_arrival_timestamp.get(),
            )
        });
    match record {
        Ok(record) => Envelope::Record(record),
        Err(detail) => Envelope::Unreadable(salvage(raw, detail)),
    }
}

/// `kinesis.data` as read: its base64 text, or already decoded by the fast walk.
enum Data<'a> {
    Base64(&'a str),
    Decoded(Vec<u8>),
}

/// The checks every record's fields pass, however they were read.
fn build_record<'a>(
    event_id: Option<Cow<'a, str>>,
    sequence_number: Cow<'a, str>,
    data: Data<'_>,
    arrival: &str,
) -> Result<KinesisRecord<'a>, String> {
    if !is_sequence_number(&sequence_number) {
        return Err(format!(
            "sequenceNumber `{}` is not a Kinesis sequence number",
            shorten(&sequence_number)
        ));
    }
    let event_id = event_id.unwrap_or_default();
    // The shard is found once: the id is mostly its sequence number.
    let shard_len = shard_of_event_id(&event_id).len();
    if !event_id.is_empty() && !is_shard_id(&event_id[..shard_len]) {
        return Err(format!(
            "eventID `{}` does not name a Kinesis shard",
            shorten(&event_id)
        ));
    }
    let received_at = time::parse_arrival_seconds(arrival).map_err(|_| {
        format!(
            "approximateArrivalTimestamp {} is not epoch seconds",
            shorten(arrival)
        )
    })?;
    let data = match data {
        Data::Decoded(bytes) => bytes,
        Data::Base64(text) => base64_simd::STANDARD
            .decode_to_vec(text.as_bytes())
            .map_err(|e| format!("kinesis.data is not base64: {e}"))?,
    };
    // Only an empty id has an empty shard here.
    let shard_id = match &event_id {
        _ if shard_len == 0 => Cow::Borrowed(UNKNOWN_SHARD),
        Cow::Borrowed(id) => Cow::Borrowed(&id[..shard_len]),
        Cow::Owned(id) => Cow::Owned(id[..shard_len].to_string()),
    };
    Ok(KinesisRecord {
        shard_id,
        event_id,
        sequence_number,
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

#[cfg(test)]
mod tests;
