//! The staging NDJSON line (contract: Staging): written by `ingest` ([`push_staging_line`]), read
//! by compaction ([`decode_staging_line`]). One line per event, whatever whitespace the producer
//! used:
//!
//! ```json
//! {"event_uuid":"…","event_name":"game:resumed","event_type":"game","event_subtype":"resumed",
//!  "created_at":"2024-04-11T14:10:05.951235Z","received_at":"2024-04-11T14:10:06.012000Z",
//!  "event_specifics":{…as received…},"source":{"shard_id":"…","sequence_number":"…"}}
//! ```

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json_scan::Scanner;
use crate::layout::Language;
use crate::position::StreamPosition;
use crate::time;
use crate::validate::{for_each_entry, json_str, push_plain_json_str, ValidEvent};

/// Appends valid JSON text with its line ends made spaces, so an event an SDK indented (or sent with
/// CRLF) is still one NDJSON line. Exact: JSON strings cannot hold a raw CR or LF, so every one is
/// whitespace between tokens, and UTF-8 never uses those bytes inside a character.
fn push_on_one_line(out: &mut Vec<u8>, json: &str) {
    let start = out.len();
    out.extend_from_slice(json.as_bytes());
    // Mostly there are none: one vectorised search says so.
    if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
        for b in &mut out[start..] {
            if matches!(*b, b'\n' | b'\r') {
                *b = b' ';
            }
        }
    }
}

/// Appends one staging NDJSON line (with its newline).
pub fn push_staging_line(
    out: &mut Vec<u8>,
    event: &ValidEvent,
    received_at: i64,
    source: &StreamPosition,
) {
    // The id is canonical and the names the catalogue's: none needs escaping.
    out.extend_from_slice(b"{\"event_uuid\":");
    push_plain_json_str(out, &event.event_uuid);
    out.extend_from_slice(b",\"event_name\":");
    push_plain_json_str(out, event.event_name);
    out.extend_from_slice(b",\"event_type\":");
    push_plain_json_str(out, event.event_type);
    out.extend_from_slice(b",\"event_subtype\":");
    push_plain_json_str(out, event.event_subtype);
    out.extend_from_slice(b",\"created_at\":\"");
    time::push_rfc3339_micros(out, event.created_at);
    out.extend_from_slice(b"\",\"received_at\":\"");
    time::push_rfc3339_micros(out, received_at);
    out.extend_from_slice(b"\",\"event_specifics\":");
    push_on_one_line(out, event.specifics.unwrap_or("{}"));
    out.extend_from_slice(b",\"source\":{");
    source.push_json_fields(out);
    out.extend_from_slice(b"}}\n");
}

/// One staging line, borrowed from the object's bytes.
#[derive(Debug, PartialEq)]
pub struct StagingLine<'a> {
    pub event_uuid: Cow<'a, str>,
    pub event_name: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub event_subtype: Cow<'a, str>,
    created_at: Cow<'a, str>,
    received_at: Cow<'a, str>,
    /// The object's text, as received (`None` when the line has none).
    pub event_specifics: Option<&'a str>,
    pub source: StreamPosition<'a>,
    language: Language<'a>,
}

/// What serde_json reads when the fast walk declines a line: the same fields.
#[derive(Deserialize)]
struct SerdeLine<'a> {
    #[serde(borrow)]
    event_uuid: Cow<'a, str>,
    #[serde(borrow)]
    event_name: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    event_subtype: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    received_at: Cow<'a, str>,
    #[serde(borrow, default)]
    event_specifics: Option<&'a RawValue>,
    #[serde(borrow)]
    source: StreamPosition<'a>,
}

impl<'a> StagingLine<'a> {
    /// The line read in one borrowed walk ([`json_scan`]), `event_specifics` walked once for both
    /// its extent and its language; `None` where serde_json must decide (an escape in a field read,
    /// a field given twice, a null, anything unusual, any error).
    fn scan(text: &'a str) -> Option<StagingLine<'a>> {
        let mut fields: [Option<&'a str>; 6] = [None; 6];
        let mut specifics = None;
        let mut language = Language::Absent;
        let mut source = None;
        let mut scanner = Scanner::new(text);
        scanner.object(|key, scanner| {
            let slot = match key {
                "event_uuid" => 0,
                "event_name" => 1,
                "event_type" => 2,
                "event_subtype" => 3,
                "created_at" => 4,
                "received_at" => 5,
                "event_specifics" if specifics.is_none() => {
                    let start = scanner.position();
                    language = scan_specifics(scanner)?;
                    specifics = Some(scanner.since(start));
                    return Some(());
                }
                "source" if source.is_none() => {
                    source = Some(scan_source(scanner)?);
                    return Some(());
                }
                "event_specifics" | "source" => return None,
                _ => return scanner.value().map(drop),
            };
            match fields[slot] {
                None => fields[slot] = Some(scanner.plain_string()?),
                Some(_) => return None,
            }
            Some(())
        })?;
        scanner.end()?;
        let [Some(event_uuid), Some(event_name), Some(event_type), Some(event_subtype), Some(created_at), Some(received_at)] =
            fields
        else {
            return None;
        };
        Some(StagingLine {
            event_uuid: event_uuid.into(),
            event_name: event_name.into(),
            event_type: event_type.into(),
            event_subtype: event_subtype.into(),
            created_at: created_at.into(),
            received_at: received_at.into(),
            event_specifics: specifics,
            source: source?,
            language,
        })
    }

    fn from_serde(line: SerdeLine<'a>) -> StagingLine<'a> {
        let specifics = line.event_specifics.map(RawValue::get);
        StagingLine {
            language: specifics.map_or(Language::Absent, language_of),
            event_uuid: line.event_uuid,
            event_name: line.event_name,
            event_type: line.event_type,
            event_subtype: line.event_subtype,
            created_at: line.created_at,
            received_at: line.received_at,
            event_specifics: specifics,
            source: line.source,
        }
    }
}

/// An `event_specifics` object, checked; its `language_id` as the partitioning sees it.
fn scan_specifics<'a>(scanner: &mut Scanner<'a>) -> Option<Language<'a>> {
    let mut language = Language::Absent;
    scanner.object(|key, scanner| {
        if key != "language_id" {
            return scanner.value().map(drop);
        }
        language = match scanner.peek()? {
            b'"' => Language::Text(scanner.plain_string()?.into()),
            _ => match scanner.value()? {
                "null" => Language::Absent,
                _ => Language::NotAString,
            },
        };
        Some(())
    })?;
    Some(language)
}

/// A `source` object: `shard_id`, `sequence_number` and, for a user record of an aggregate, its
/// `sub_sequence_number`.
fn scan_source<'a>(scanner: &mut Scanner<'a>) -> Option<StreamPosition<'a>> {
    let (mut shard_id, mut sequence_number, mut sub) = (None, None, None);
    scanner.object(|key, scanner| {
        let seen = match key {
            "shard_id" => shard_id.replace(scanner.plain_string()?),
            "sequence_number" => sequence_number.replace(scanner.plain_string()?),
            "sub_sequence_number" => {
                let digits = scanner.value()?;
                let index = digits
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| digits.parse::<u32>().ok())??;
                sub.replace(index).map(|_| "")
            }
            _ => return scanner.value().map(drop),
        };
        seen.is_none().then_some(())
    })?;
    Some(StreamPosition::new(shard_id?, sequence_number?, sub))
}

/// `event_specifics.language_id` of an object's text, read by serde_json.
fn language_of(specifics: &str) -> Language<'_> {
    let mut language = Language::Absent;
    let _ = for_each_entry(specifics, |key, value| {
        if key == "language_id" {
            language = match json_str(value.get()) {
                Some(s) => Language::Text(s),
                None if value.get() == "null" => Language::Absent,
                None => Language::NotAString,
            };
        }
    });
    language
}

/// A staging line ready to become a row.
pub struct DecodedLine<'a> {
    pub line: StagingLine<'a>,
    pub created_at: i64,
    pub received_at: i64,
}

impl<'a> DecodedLine<'a> {
    pub fn source(&self) -> &StreamPosition<'a> {
        &self.line.source
    }

    /// `event_specifics.language_id`, as the partitioning sees it.
    pub fn language(&self) -> &Language<'a> {
        &self.line.language
    }
}

/// Parses one staging line (the inverse of [`push_staging_line`]); the error is a human-readable
/// reason.
pub fn decode_staging_line(text: &str) -> Result<DecodedLine<'_>, String> {
    let line = match StagingLine::scan(text) {
        Some(line) => line,
        None => StagingLine::from_serde(serde_json::from_str(text).map_err(|e| e.to_string())?),
    };
    if line.event_uuid.is_empty() || line.source.sequence_number.is_empty() {
        return Err("empty event_uuid or sequence_number".into());
    }
    if let Some(specifics) = line.event_specifics {
        if !specifics.starts_with('{') {
            return Err("event_specifics is not an object".into());
        }
    }
    let created_at = parse_line_timestamp(&line.created_at)
        .ok_or_else(|| format!("created_at `{}` is not RFC 3339", line.created_at))?;
    let received_at = parse_line_timestamp(&line.received_at)
        .ok_or_else(|| format!("received_at `{}` is not RFC 3339", line.received_at))?;
    Ok(DecodedLine {
        line,
        created_at,
        received_at,
    })
}

/// Reads `YYYY-MM-DDTHH:MM:SS.ffffffZ` (what ingest writes) directly, anything else as RFC 3339.
fn parse_line_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z';
    if !shape_ok {
        return time::parse_rfc3339(s).ok();
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let date = time::Date {
        year: num(0..4)? as i32,
        month: num(5..7)? as u32,
        day: num(8..10)? as u32,
    };
    let (hour, minute, second, micro) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&date.month)
        || time::Date::from_days(date.to_days()) != date
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(date.start_micros() + ((hour * 60 + minute) * 60 + second) * 1_000_000 + micro)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;

    #[test]
    fn staging_line_has_every_contract_field_and_reads_back() {
        let catalogue = Catalogue::embedded();
        let data = br#"{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605.9512355,"event_name":"game:resumed","event_specifics":{"score":46, "x":"y", "language_id":"lang_ru"}}"#;
        let received = 1_712_844_606_012_000;
        let event = crate::validate::validate(data, received, &catalogue).unwrap();
        let mut out = Vec::new();
        let source = StreamPosition::new("shardId-000000000000", "4954", Some(2));
        push_staging_line(&mut out, &event, received, &source);
        assert_eq!(out.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "event_uuid": "d7ca46d5-80b5-4b81-bf5b-c96a60c4c573",
                "event_name": "game:resumed", "event_type": "game", "event_subtype": "resumed",
                "created_at": "2024-04-11T14:10:05.951235Z",
                "received_at": "2024-04-11T14:10:06.012000Z",
                "event_specifics": {"score": 46, "x": "y", "language_id": "lang_ru"},
                "source": {"shard_id": "shardId-000000000000", "sequence_number": "4954", "sub_sequence_number": 2}
            })
        );
        // Specifics are kept byte for byte, spacing included.
        assert!(String::from_utf8_lossy(&out).contains(r#"{"score":46, "x":"y", "#));

        let text = std::str::from_utf8(&out[..out.len() - 1]).unwrap();
        let back = decode_staging_line(text).unwrap();
        assert_eq!(back.line.event_uuid, event.event_uuid);
        assert_eq!(back.line.event_name, "game:resumed");
        assert_eq!(
            (
                back.line.event_type.as_ref(),
                back.line.event_subtype.as_ref()
            ),
            ("game", "resumed")
        );
        assert_eq!(back.created_at, event.created_at);
        assert_eq!(back.received_at, received);
        assert_eq!(back.source(), &source);
        assert_eq!(back.language(), &Language::Text("lang_ru".into()));
    }

    #[test]
    fn an_event_spanning_lines_is_one_staging_line() {
        let catalogue = Catalogue::embedded();
        let data = b"{\r\n  \"event_uuid\": \"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573\",\r\n  \"created_at\": 1712844605,\n  \"event_name\": \"game:resumed\",\n  \"event_specifics\": {\r\n    \"score\": 46,\n    \"note\": \"a\\nb\"\r\n  }\r\n}\r\n";
        let event = crate::validate::validate(data, 1_712_844_606_012_000, &catalogue).unwrap();
        let mut out = Vec::new();
        let source = StreamPosition::new("s", "1", None);
        push_staging_line(&mut out, &event, 1_712_844_606_012_000, &source);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!out.contains(&b'\r'));
        let text = std::str::from_utf8(&out[..out.len() - 1]).unwrap();
        let line = decode_staging_line(text).unwrap();
        let specifics: serde_json::Value =
            serde_json::from_str(line.line.event_specifics.unwrap()).unwrap();
        assert_eq!(specifics, serde_json::json!({"score": 46, "note": "a\nb"}));
        assert_eq!(line.language(), &Language::Absent);
        // Each line end alone, inside `event_specifics` only.
        for end in ["\r", "\n", "\r\n"] {
            let data = format!(
                r#"{{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605,"event_name":"game:resumed","event_specifics":{{{end}"score":46{end}}}}}"#
            );
            let event =
                crate::validate::validate(data.as_bytes(), 1_712_844_606_012_000, &catalogue)
                    .unwrap();
            let mut out = Vec::new();
            push_staging_line(&mut out, &event, 1_712_844_606_012_000, &source);
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "{end:?}");
            assert!(!out.contains(&b'\r'), "{end:?}");
        }
    }

    /// The fast walk over a staging line and serde_json read the same line, or the walk declines.
    #[test]
    fn the_fast_walk_reads_staging_lines_as_serde_json_does() {
        let catalogue = Catalogue::embedded();
        let data = br#"{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605.9512355,"event_name":"game:resumed","event_specifics":{"score":46,"x":{"y":[1,"z"]},"language_id":"lang_ru"}}"#;
        let event = crate::validate::validate(data, 1_712_844_606_012_000, &catalogue).unwrap();
        let mut out = Vec::new();
        let source = StreamPosition::new("shardId-000000000000", "4954", Some(2));
        push_staging_line(&mut out, &event, 1_712_844_606_012_000, &source);
        let good = std::str::from_utf8(&out[..out.len() - 1])
            .unwrap()
            .to_string();
        let cases = [
            good.clone(),
            good.replace(",\"", " ,\n\t\""),
            good.replace("\"lang_ru\"", "\"lang_\\u0072u\""),
            good.replace("\"lang_ru\"", "7"),
            good.replace("\"lang_ru\"", "null"),
            good.replace("\"lang_ru\"", "{\"a\":1}"),
            good.replace(
                "\"language_id\":\"lang_ru\"",
                "\"language_id\":1,\"language_id\":\"en\"",
            ),
            good.replace("\"event_type\"", "\"unknown\":[true],\"event_type\""),
            good.replace("\"event_type\"", "\"event_name\":\"a:b\",\"event_type\""),
            good.replace("\"sub_sequence_number\":2", "\"sub_sequence_number\":null"),
            good.replace(
                "\"sub_sequence_number\":2",
                "\"sub_sequence_number\":4294967296",
            ),
            good.replace(",\"sub_sequence_number\":2", ""),
            good.replace("\"shardId-000000000000\"", "\"shardId-\\u0030\""),
            good.replace("\"source\":{", "\"source\":{\"shard_id\":\"s\","),
            good.replace("\"event_specifics\":", "\"event_specifics\":[1],\"e\":"),
            good.replace("{\"score\"", "{\"sc\\u006fre\""),
            format!("{good} x"),
        ];
        let mut scanned = 0;
        for case in &cases {
            for cut in (0..case.len()).chain([case.len()]) {
                let text = &case[..cut];
                let Some(fast) = StagingLine::scan(text) else {
                    continue;
                };
                scanned += 1;
                let serde: SerdeLine =
                    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(fast, StagingLine::from_serde(serde), "{text}");
            }
        }
        assert!(scanned >= 8, "the fast walk read only {scanned} lines");
    }

    #[test]
    fn line_timestamps_read_ingests_shape_and_any_rfc3339() {
        let micros = time::parse_rfc3339("2024-04-11T14:10:05.951235Z").unwrap();
        assert_eq!(
            parse_line_timestamp("2024-04-11T14:10:05.951235Z"),
            Some(micros)
        );
        assert_eq!(
            parse_line_timestamp("2024-04-11T16:10:05.951235+02:00"),
            Some(micros)
        );
        assert_eq!(parse_line_timestamp("2024-02-30T14:10:05.951235Z"), None);
        assert_eq!(parse_line_timestamp("2024-04-11T24:10:05.951235Z"), None);
        assert!(decode_staging_line(r#"{"event_uuid":""}"#).is_err());
    }
}
