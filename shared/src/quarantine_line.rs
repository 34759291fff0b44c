//! The quarantine NDJSON line (contract: Quarantine), one type for both writers and the one reader:
//!
//! - a record `ingest` could not turn into an event:
//!   `{"reason","detail","shard_id","sequence_number"[,"sub_sequence_number"],"received_at","data_base64"}`;
//! - a staging line compaction could not read (`invalid_staging_line`):
//!   `{"reason","detail","source_key","line_number","data_base64"}`.
//!
//! `redrive quarantine` reads them back ([`QuarantineLine::parse`]) to send records through again
//! with the identity they arrived with.

use std::borrow::Cow;

use base64::Engine as _;

use crate::position::StreamPosition;
use crate::time;
use crate::validate::{push_json_str, Reason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineLine<'a> {
    pub reason: Reason,
    pub detail: Cow<'a, str>,
    pub origin: Origin<'a>,
    /// The raw bytes, carried in base64.
    pub data: Cow<'a, [u8]>,
}

/// What was quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A Kinesis (user) record, at its position, arrived at `received_at` (epoch micros).
    Record {
        position: StreamPosition<'a>,
        received_at: i64,
    },
    /// Line `line_number` (from 1) of the staging object `source_key`.
    StagingLine {
        source_key: Cow<'a, str>,
        line_number: u64,
    },
}

impl<'a> QuarantineLine<'a> {
    /// A record's line, borrowing everything (ingest writes one per bad record).
    pub fn record(
        reason: Reason,
        detail: &'a str,
        position: StreamPosition<'a>,
        received_at: i64,
        data: &'a [u8],
    ) -> Self {
        QuarantineLine {
            reason,
            detail: Cow::Borrowed(detail),
            origin: Origin::Record {
                position,
                received_at,
            },
            data: Cow::Borrowed(data),
        }
    }

    /// The record's position and arrival, when the line holds a record.
    pub fn record_origin(&self) -> Option<(&StreamPosition<'a>, i64)> {
        match &self.origin {
            Origin::Record {
                position,
                received_at,
            } => Some((position, *received_at)),
            Origin::StagingLine { .. } => None,
        }
    }

    /// Appends the line (with its newline).
    pub fn push_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"reason\":");
        push_json_str(out, self.reason.code());
        out.extend_from_slice(b",\"detail\":");
        push_json_str(out, &self.detail);
        out.push(b',');
        match &self.origin {
            Origin::Record {
                position,
                received_at,
            } => {
                position.push_json_fields(out);
                out.extend_from_slice(b",\"received_at\":\"");
                time::push_rfc3339_micros(out, *received_at);
                out.push(b'"');
            }
            Origin::StagingLine {
                source_key,
                line_number,
            } => {
                out.extend_from_slice(b"\"source_key\":");
                push_json_str(out, source_key);
                let _ =
                    std::io::Write::write_fmt(out, format_args!(",\"line_number\":{line_number}"));
            }
        }
        out.extend_from_slice(b",\"data_base64\":\"");
        let start = out.len();
        let encoded_len = base64::encoded_len(self.data.len(), true).unwrap_or(0);
        out.resize(start + encoded_len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(&self.data, &mut out[start..])
            .expect("buffer sized by encoded_len");
        out.truncate(start + written);
        out.extend_from_slice(b"\"}\n");
    }

    /// Reads one line (the inverse of [`QuarantineLine::push_to`]); `Err` says what is wrong.
    pub fn parse(line: &str) -> Result<QuarantineLine<'static>, String> {
        #[derive(serde::Deserialize)]
        struct Raw {
            reason: String,
            #[serde(default)]
            detail: String,
            shard_id: Option<String>,
            sequence_number: Option<String>,
            sub_sequence_number: Option<u32>,
            received_at: Option<String>,
            source_key: Option<String>,
            line_number: Option<u64>,
            data_base64: String,
        }
        let raw: Raw =
            serde_json::from_str(line).map_err(|e| format!("not a quarantine line: {e}"))?;
        let reason = Reason::from_code(&raw.reason)
            .ok_or_else(|| format!("unknown reason `{}`", raw.reason))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&raw.data_base64)
            .map_err(|e| format!("data_base64: {e}"))?;
        let origin = match (raw.source_key, raw.line_number) {
            (Some(source_key), Some(line_number)) => Origin::StagingLine {
                source_key: Cow::Owned(source_key),
                line_number,
            },
            _ => {
                let missing = |field: &str| format!("not a quarantine line: missing `{field}`");
                let received_at = raw.received_at.ok_or_else(|| missing("received_at"))?;
                Origin::Record {
                    position: StreamPosition {
                        shard_id: Cow::Owned(raw.shard_id.ok_or_else(|| missing("shard_id"))?),
                        sequence_number: Cow::Owned(
                            raw.sequence_number
                                .ok_or_else(|| missing("sequence_number"))?,
                        ),
                        sub_sequence_number: raw.sub_sequence_number,
                    },
                    received_at: time::parse_rfc3339(&received_at)
                        .map_err(|e| format!("received_at `{received_at}`: {e:?}"))?,
                }
            }
        };
        Ok(QuarantineLine {
            reason,
            detail: Cow::Owned(raw.detail),
            origin,
            data: Cow::Owned(data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_read_back_as_written() {
        let received_at = time::parse_rfc3339("2024-04-11T14:10:06.012345Z").unwrap();
        for (sub, data) in [
            (None, &b"{\"event_name\":\"x:y\"}\n\xff"[..]),
            (Some(7), &b""[..]),
        ] {
            let position = StreamPosition::new("shardId-000000000003", "4954", sub);
            let line = QuarantineLine::record(
                Reason::UnknownEvent,
                "no \"x:y\"",
                position,
                received_at,
                data,
            );
            let mut out = Vec::new();
            line.push_to(&mut out);
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(text.matches('\n').count(), 1);
            assert_eq!(QuarantineLine::parse(text.trim_end()).unwrap(), line);
        }
        assert!(QuarantineLine::parse("{\"reason\":\"x\"}").is_err());
        assert!(QuarantineLine::parse(
            r#"{"reason":"no_such_reason","shard_id":"s","sequence_number":"1","received_at":"2024-04-11T14:10:06Z","data_base64":""}"#
        )
        .unwrap_err()
        .contains("unknown reason"));
    }

    #[test]
    fn a_record_line_carries_the_contract_fields_and_the_raw_bytes() {
        let mut out = Vec::new();
        let position = StreamPosition::new("s", "1", None);
        QuarantineLine::record(Reason::NotUtf8, "bad \"bytes\"", position, 0, b"\xff\x00a")
            .push_to(&mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "reason": "not_utf8", "detail": "bad \"bytes\"", "shard_id": "s",
                "sequence_number": "1", "received_at": "1970-01-01T00:00:00.000000Z",
                "data_base64": "/wBh"
            })
        );
    }

    #[test]
    fn a_staging_line_compaction_could_not_read_reads_back_as_written() {
        let line = QuarantineLine {
            reason: Reason::InvalidStagingLine,
            detail: Cow::Borrowed("expected value at line 1 column 1"),
            origin: Origin::StagingLine {
                source_key: Cow::Borrowed("staging/year=2024/…/shardId-1-5.ndjson"),
                line_number: 3,
            },
            data: Cow::Borrowed(b"{not json"),
        };
        let mut out = Vec::new();
        line.push_to(&mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "reason": "invalid_staging_line", "detail": "expected value at line 1 column 1",
                "source_key": "staging/year=2024/…/shardId-1-5.ndjson", "line_number": 3,
                "data_base64": "e25vdCBqc29u"
            })
        );
        let back = QuarantineLine::parse(std::str::from_utf8(&out).unwrap().trim_end()).unwrap();
        assert_eq!(back, line);
        assert_eq!(back.record_origin(), None);
    }
}
