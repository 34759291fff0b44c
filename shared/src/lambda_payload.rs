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
        match std::str::from_utf8(payload).ok().and_then(scan_batch) {
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
        let mut list = Vec::new();
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
                &fields.kinesis.data,
                fields.kinesis.approximate_arrival_timestamp.get(),
            )
        });
    match record {
        Ok(record) => Envelope::Record(record),
        Err(detail) => Envelope::Unreadable(salvage(raw, detail)),
    }
}

/// The checks every record's fields pass, however they were read.
fn build_record<'a>(
    event_id: Option<Cow<'a, str>>,
    sequence_number: Cow<'a, str>,
    data: &str,
    arrival: &str,
) -> Result<KinesisRecord<'a>, String> {
    if !is_sequence_number(&sequence_number) {
        return Err(format!(
            "sequenceNumber `{}` is not a Kinesis sequence number",
            shorten(&sequence_number)
        ));
    }
    let event_id = event_id.unwrap_or_default();
    if !event_id.is_empty() && !is_shard_id(shard_of_event_id(&event_id)) {
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
    let data = base64_simd::STANDARD
        .decode_to_vec(data.as_bytes())
        .map_err(|e| format!("kinesis.data is not base64: {e}"))?;
    let shard_id = match &event_id {
        Cow::Borrowed(id) => Cow::Borrowed(shard_of(id)),
        Cow::Owned(id) => Cow::Owned(shard_of(id).to_string()),
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
        let payload = payload.to_string();
        let batch = KinesisBatch::parse(payload.as_bytes()).unwrap();
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
        let hostile = hostile.to_string();
        let batch = KinesisBatch::parse(hostile.as_bytes()).unwrap();
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

    /// The fast walk and serde_json read every payload alike: the walk may decline (serde_json
    /// then reads it), never read it differently.
    #[test]
    fn the_fast_walk_reads_payloads_as_serde_json_does() {
        let record = |data: &str, extra: &str| {
            format!(
                r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"p","sequenceNumber":"4954","data":"{data}","approximateArrivalTimestamp":1795219110.75{extra}}},"eventSource":"aws:kinesis","eventID":"shardId-000000000003:4954","awsRegion":"us-east-1"}}"#
            )
        };
        let good = record("eyJhIjoxfQ==", "");
        let cases = [
            format!(r#"{{"Records":[{good},{good}]}}"#),
            format!("{{ \"Records\" : [ {good} ,\n {good} ] , \"x\": [1, {{}}] }}"),
            format!(
                r#"{{"Records":[{}]}}"#,
                record(r"eyJhIjoxfQ\u003d\u003d", "")
            ),
            format!(r#"{{"Records":[{}]}}"#, record("eyJh/IjoxfQ==", "")),
            format!(r#"{{"Records":[{}]}}"#, record(r"eyJh\/IjoxfQ==", "")),
            format!(
                r#"{{"Records":[{}]}}"#,
                record("eyJhIjoxfQ==", r#","approximateArrivalTimestamp":2"#)
            ),
            format!(r#"{{"Records":[{}]}}"#, record("not base64", "")),
            format!(
                r#"{{"Records":[{}]}}"#,
                good.replace(
                    "\"eventID\":\"shardId-000000000003:4954\"",
                    "\"eventID\":null"
                )
            ),
            format!(
                r#"{{"Records":[{}]}}"#,
                good.replace(
                    "\"eventID\":\"shardId-000000000003:4954\"",
                    "\"eventID\":null,\"eventID\":\"x:1\""
                )
            ),
            format!(
                r#"{{"Records":[{}]}}"#,
                good.replace("\"sequenceNumber\":\"4954\"", "\"sequenceNumber\":4954")
            ),
            format!(r#"{{"Records":[{good}],"Records":[]}}"#),
            format!(r#"{{"Records":[42,"x",null,[],{good}]}}"#),
            r#"{"Records":[]}"#.to_string(),
            r#"{"Records":null}"#.to_string(),
        ];
        let mut checked = 0;
        for case in &cases {
            // Each case as it is, and cut short at every tenth byte.
            let cuts = (0..case.len()).step_by(10).chain([case.len()]);
            for cut in cuts.filter(|&cut| case.is_char_boundary(cut)) {
                let text = &case[..cut];
                let by_serde = parse_with_serde(text.as_bytes());
                match scan_batch(text) {
                    Some(scanned) => {
                        let by_serde = by_serde.unwrap_or_else(|e| panic!("{text}: {e}"));
                        assert_eq!(scanned.records, by_serde.records, "{text}");
                        checked += 1;
                    }
                    None => {
                        let parsed = KinesisBatch::parse(text.as_bytes());
                        assert_eq!(parsed.is_ok(), by_serde.is_ok(), "{text}");
                    }
                }
            }
        }
        assert!(
            checked >= cases.len() - 3,
            "the fast walk read only {checked} payloads"
        );
    }

    /// `base64-simd` took over from the `base64` crate (still the quarantine's encoder): both take
    /// and refuse the same `kinesis.data`, and decode it to the same bytes.
    #[test]
    fn the_data_decoder_accepts_what_the_base64_crate_did() {
        use base64::Engine as _;
        let standard = base64::engine::general_purpose::STANDARD;
        let mut cases: Vec<String> = (0..40u8)
            .map(|n| standard.encode((0..n).map(|i| i.wrapping_mul(37)).collect::<Vec<u8>>()))
            .collect();
        cases.extend(
            [
                "eyJhIjoxfQ",
                "eyJhIjoxfQ=",
                "eyJhIjoxfR==",
                "eyJhIjoxfQ===",
                "e30",
                "e31=",
                "e3==",
                "====",
                "=",
                "e30=\n",
                " e30=",
                "e3 0=",
                "e30=e30=",
                "-_8=",
                "+/8=",
                "a",
                "ab",
                "abc",
                "ab=c",
                "ab==",
                "abc=",
                "abd=",
                "YQ==",
                "YR==",
                "YWI=",
                "YWJ=",
            ]
            .map(str::to_string),
        );
        for case in &cases {
            let old = standard.decode(case.as_bytes()).ok();
            let new = base64_simd::STANDARD.decode_to_vec(case.as_bytes()).ok();
            assert_eq!(new, old, "{case:?}");
        }
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
            let payload = payload(arrival);
            let batch = KinesisBatch::parse(payload.as_bytes()).unwrap();
            let Envelope::Record(r) = &batch.records[0] else {
                panic!("{arrival}: {:?}", batch.records[0])
            };
            assert_eq!(r.received_at, micros, "{arrival}");
        }
    }
}
