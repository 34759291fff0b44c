//! Raw record bytes → a valid event, or the reason it cannot be one.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalogue::{split_event_name, Catalogue, EventSpec, FieldType};
use crate::time::{self, TimestampError, EARLIEST_CREATED_AT, MICROS_PER_DAY};

/// Why a record went to quarantine. The codes are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NotUtf8,
    InvalidJson,
    NotAnObject,
    MissingField,
    InvalidUuid,
    InvalidTimestamp,
    CreatedAtOutOfRange,
    InvalidEventName,
    UnknownEvent,
    WrongFieldType,
    InvalidAggregate,
    /// A Kinesis record whose Lambda envelope could not be read (its raw JSON is kept).
    InvalidEnvelope,
    /// A staging line that compaction could not read.
    InvalidStagingLine,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::NotUtf8 => "not_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingField => "missing_field",
            Reason::InvalidUuid => "invalid_uuid",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::CreatedAtOutOfRange => "created_at_out_of_range",
            Reason::InvalidEventName => "invalid_event_name",
            Reason::UnknownEvent => "unknown_event",
            Reason::WrongFieldType => "wrong_field_type",
            Reason::InvalidAggregate => "invalid_aggregate",
            Reason::InvalidEnvelope => "invalid_envelope",
            Reason::InvalidStagingLine => "invalid_staging_line",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// An event that passed every check, borrowing from the record bytes and the catalogue.
#[derive(Debug, Clone)]
pub struct ValidEvent<'a> {
    /// Lower-case, hyphenated: the dedup key and the lake's value.
    pub event_uuid: String,
    pub event_name: &'a str,
    pub event_type: &'a str,
    pub event_subtype: &'a str,
    pub created_at: i64,
    /// `event_specifics` exactly as received (`None` when absent or null, written as `{}`).
    pub specifics: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    event_uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    created_at: Option<&'a RawValue>,
    #[serde(borrow)]
    event_name: Option<&'a RawValue>,
    #[serde(borrow)]
    event_specifics: Option<&'a RawValue>,
}

/// Validates one user record that arrived at `received_at` (epoch micros).
pub fn validate<'a>(
    data: &'a [u8],
    received_at: i64,
    catalogue: &'a Catalogue,
) -> Result<ValidEvent<'a>, Rejection> {
    let text = std::str::from_utf8(data)
        .map_err(|e| Rejection::new(Reason::NotUtf8, format!("record is not UTF-8: {e}")))?;
    let raw = parse_object::<RawEvent>(text)?;

    let missing: Vec<&str> = [
        ("event_uuid", raw.event_uuid.is_none()),
        ("created_at", raw.created_at.is_none()),
        ("event_name", raw.event_name.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    if !missing.is_empty() {
        return Err(Rejection::new(
            Reason::MissingField,
            format!("missing {}", missing.join(", ")),
        ));
    }
    let (uuid_raw, created_raw, name_raw) = (
        raw.event_uuid.unwrap(),
        raw.created_at.unwrap(),
        raw.event_name.unwrap(),
    );

    let event_uuid = json_str(uuid_raw)
        .and_then(|s| canonical_uuid(&s))
        .ok_or_else(|| {
            Rejection::new(
                Reason::InvalidUuid,
                format!(
                    "event_uuid {} is not a UUID string",
                    shorten(uuid_raw.get())
                ),
            )
        })?;

    let created_at = time::parse_created_at(created_raw.get()).map_err(|e| match e {
        TimestampError::Invalid(detail) => Rejection::new(Reason::InvalidTimestamp, detail),
        TimestampError::OutOfRange(detail) => Rejection::new(Reason::CreatedAtOutOfRange, detail),
    })?;
    check_created_at_range(created_at, received_at)?;

    let received_name = json_str(name_raw).ok_or_else(|| {
        Rejection::new(
            Reason::InvalidEventName,
            format!("event_name {} is not a string", shorten(name_raw.get())),
        )
    })?;
    if split_event_name(&received_name).is_none() {
        return Err(Rejection::new(
            Reason::InvalidEventName,
            format!(
                "event_name `{}` is not `type:subtype`",
                shorten(&received_name)
            ),
        ));
    }
    let spec = catalogue.event(&received_name).ok_or_else(|| {
        Rejection::new(
            Reason::UnknownEvent,
            format!(
                "event `{}` is not in the catalogue",
                shorten(&received_name)
            ),
        )
    })?;
    // Borrow the catalogue's copy: it outlives the record and is the same text.
    let event_name = spec.name.as_str();
    let (event_type, event_subtype) =
        split_event_name(event_name).expect("catalogue names are checked at load");

    let specifics = match raw.event_specifics {
        Some(v) if v.get().trim() == "null" => None,
        other => other,
    };
    if let Some(specifics) = specifics {
        check_specifics(specifics, spec, catalogue)?;
    }
    Ok(ValidEvent {
        event_uuid,
        event_name,
        event_type,
        event_subtype,
        created_at,
        specifics,
    })
}

fn check_created_at_range(created_at: i64, received_at: i64) -> Result<(), Rejection> {
    if created_at < EARLIEST_CREATED_AT {
        return Err(Rejection::new(
            Reason::CreatedAtOutOfRange,
            format!(
                "created_at {} is before 2000-01-01",
                time::format_rfc3339_micros(created_at)
            ),
        ));
    }
    if created_at > received_at.saturating_add(MICROS_PER_DAY) {
        return Err(Rejection::new(
            Reason::CreatedAtOutOfRange,
            format!(
                "created_at {} is more than 24 h after arrival at {}",
                time::format_rfc3339_micros(created_at),
                time::format_rfc3339_micros(received_at)
            ),
        ));
    }
    Ok(())
}

/// Parses a JSON object into `T`, telling apart broken JSON from JSON that is not an object.
pub fn parse_object<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| Rejection::new(Reason::InvalidJson, format!("invalid JSON: {e}")))
    } else {
        match serde_json::from_str::<de::IgnoredAny>(text) {
            Ok(_) => Err(Rejection::new(
                Reason::NotAnObject,
                format!("record is JSON but not an object: {}", shorten(text)),
            )),
            Err(e) => Err(Rejection::new(
                Reason::InvalidJson,
                format!("invalid JSON: {e}"),
            )),
        }
    }
}

fn check_specifics(
    specifics: &RawValue,
    spec: &EventSpec,
    catalogue: &Catalogue,
) -> Result<(), Rejection> {
    let text = specifics.get();
    if !text.trim_start().starts_with('{') {
        return Err(Rejection::new(
            Reason::WrongFieldType,
            format!("event_specifics must be an object, got {}", shorten(text)),
        ));
    }
    let mut problem = None;
    for_each_entry(text, |key, value| {
        if problem.is_some() {
            return;
        }
        if let Some((_, expected)) = catalogue.declared_type(spec, &key) {
            if json_kind(value.get()).is_some_and(|kind| !kind.fits(expected)) {
                problem = Some(format!(
                    "event_specifics.{key} must be {}, got {}",
                    expected.name(),
                    shorten(value.get())
                ));
            }
        }
    })
    .map_err(|e| Rejection::new(Reason::InvalidJson, format!("invalid event_specifics: {e}")))?;
    match problem {
        Some(detail) => Err(Rejection::new(Reason::WrongFieldType, detail)),
        None => Ok(()),
    }
}

/// The JSON kind of a raw value; `None` for null, which every declared (nullable) field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    String,
    Integer,
    Number,
    Boolean,
    Other,
}

impl JsonKind {
    pub fn fits(self, expected: FieldType) -> bool {
        matches!(
            (self, expected),
            (JsonKind::String, FieldType::String)
                | (JsonKind::Integer, FieldType::Integer)
                | (JsonKind::Integer | JsonKind::Number, FieldType::Number)
                | (JsonKind::Boolean, FieldType::Boolean)
        )
    }
}

pub fn json_kind(raw: &str) -> Option<JsonKind> {
    let raw = raw.trim();
    Some(match raw.as_bytes().first() {
        Some(b'"') => JsonKind::String,
        Some(b't' | b'f') => JsonKind::Boolean,
        Some(b'n') => return None,
        Some(b'-' | b'0'..=b'9') => {
            if raw.parse::<i64>().is_ok() {
                JsonKind::Integer
            } else {
                JsonKind::Number
            }
        }
        _ => JsonKind::Other,
    })
}

/// Calls `f` for every key/value pair of a JSON object, borrowing keys where they have no escapes.
pub fn for_each_entry<'a, F>(object: &'a str, f: F) -> Result<(), serde_json::Error>
where
    F: FnMut(Cow<'a, str>, &'a RawValue),
{
    struct Entries<F>(F);
    impl<'de, F> Visitor<'de> for Entries<F>
    where
        F: FnMut(Cow<'de, str>, &'de RawValue),
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Key<'de>>()? {
                let value: &'de RawValue = map.next_value()?;
                (self.0)(key.0, value);
            }
            Ok(())
        }
    }
    impl<'de, F> DeserializeSeed<'de> for Entries<F>
    where
        F: FnMut(Cow<'de, str>, &'de RawValue),
    {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(object);
    Entries(f).deserialize(&mut deserializer)?;
    deserializer.end()
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The string a raw JSON value holds, borrowed when it has no escapes; `None` for non-strings.
pub fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if text.len() >= 2 && text.starts_with('"') && !text.contains('\\') {
        Some(Cow::Borrowed(&text[1..text.len() - 1]))
    } else if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        None
    }
}

/// `8-4-4-4-12` hex digits, returned lower-case.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (i, &b) in bytes.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Keeps error details readable when the offending value is huge.
pub fn shorten(s: &str) -> Cow<'_, str> {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARRIVAL: i64 = 1_712_844_606_012_000;

    fn check(json: &str) -> Result<ValidEvent<'_>, Rejection> {
        static CATALOGUE: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
        validate(
            json.as_bytes(),
            ARRIVAL,
            CATALOGUE.get_or_init(Catalogue::embedded),
        )
    }

    fn reason(json: &str) -> Reason {
        check(json).unwrap_err().reason
    }

    const GOOD: &str = r#"{"event_uuid":"D7CA46D5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605.9512355,"event_name":"game:resumed","event_specifics":{"device":"iOS","user_location":"Vernier, France","attempts":93,"language_id":"lang_ru","difficulty":"Hard","score":46,"session_id":"937baf69-7d3e-406c-b32f-f8a937bd70f1","new_thing":[1,2]}}"#;

    #[test]
    fn accepts_the_contract_example_and_keeps_undeclared_fields() {
        let event = check(GOOD).unwrap();
        assert_eq!(event.event_uuid, "d7ca46d5-80b5-4b81-bf5b-c96a60c4c573");
        assert_eq!((event.event_type, event.event_subtype), ("game", "resumed"));
        assert_eq!(event.created_at, 1_712_844_605_951_235);
        assert!(event
            .specifics
            .unwrap()
            .get()
            .contains("\"new_thing\":[1,2]"));
    }

    #[test]
    fn absent_or_null_specifics_are_empty() {
        let base = r#"{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":"2024-04-11T14:10:05Z","event_name":"user:login""#;
        assert!(check(&format!("{base}}}")).unwrap().specifics.is_none());
        assert!(check(&format!("{base},\"event_specifics\":null}}"))
            .unwrap()
            .specifics
            .is_none());
        // Null for a declared field means absent.
        check(&format!("{base},\"event_specifics\":{{\"device\":null}}}}")).unwrap();
    }

    #[test]
    fn each_reason_code() {
        let with = |field: &str, value: &str| {
            let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
            v[field] = serde_json::from_str(value).unwrap();
            v.to_string()
        };
        let without = |field: &str| {
            let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
            v.as_object_mut().unwrap().remove(field);
            v.to_string()
        };
        assert_eq!(
            validate(b"{\"a\":\"\xff\"}", ARRIVAL, &Catalogue::embedded())
                .unwrap_err()
                .reason,
            Reason::NotUtf8
        );
        assert_eq!(reason("{\"event_uuid\":"), Reason::InvalidJson);
        assert_eq!(reason("{} trailing"), Reason::InvalidJson);
        assert_eq!(reason("[1,2,3]"), Reason::NotAnObject);
        assert_eq!(reason("\"just a string\""), Reason::NotAnObject);
        assert_eq!(reason("not json"), Reason::InvalidJson);
        assert_eq!(reason(&without("event_uuid")), Reason::MissingField);
        assert_eq!(reason(&without("created_at")), Reason::MissingField);
        assert_eq!(reason(&without("event_name")), Reason::MissingField);
        assert_eq!(
            reason(&with("event_uuid", "\"not-a-uuid\"")),
            Reason::InvalidUuid
        );
        assert_eq!(reason(&with("event_uuid", "42")), Reason::InvalidUuid);
        assert_eq!(
            reason(&with("created_at", "\"yesterday\"")),
            Reason::InvalidTimestamp
        );
        assert_eq!(
            reason(&with("created_at", "true")),
            Reason::InvalidTimestamp
        );
        assert_eq!(
            reason(&with("created_at", "946684799")),
            Reason::CreatedAtOutOfRange
        );
        assert_eq!(
            reason(&with("created_at", "1712931100")),
            Reason::CreatedAtOutOfRange
        );
        assert_eq!(
            reason(&with("event_name", "\"game\"")),
            Reason::InvalidEventName
        );
        assert_eq!(
            reason(&with("event_name", "\"game:\"")),
            Reason::InvalidEventName
        );
        assert_eq!(reason(&with("event_name", "7")), Reason::InvalidEventName);
        assert_eq!(
            reason(&with("event_name", "\"game:flew\"")),
            Reason::UnknownEvent
        );
        let escaped = GOOD.replace("\"game:resumed\"", "\"game\\u003aresumed\"");
        assert_eq!(check(&escaped).unwrap().event_name, "game:resumed");
        assert_eq!(
            reason(&with("event_specifics", "[1]")),
            Reason::WrongFieldType
        );
        assert_eq!(
            reason(&with("event_specifics", "{\"score\":\"46\"}")),
            Reason::WrongFieldType
        );
        assert_eq!(
            reason(&with("event_specifics", "{\"attempts\":9.5}")),
            Reason::WrongFieldType
        );
        assert_eq!(
            reason(&with("event_specifics", "{\"device\":1}")),
            Reason::WrongFieldType
        );
    }

    #[test]
    fn created_at_may_be_up_to_a_day_after_arrival() {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v["created_at"] = serde_json::json!((ARRIVAL + MICROS_PER_DAY) / 1_000_000);
        check(&v.to_string()).unwrap();
    }

    #[test]
    fn a_field_declared_only_by_another_event_is_not_type_checked() {
        // user:login does not declare language_id, so any JSON value is kept as an extra.
        let json = r#"{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605,"event_name":"user:login","event_specifics":{"language_id":5}}"#;
        check(json).unwrap();
    }

    #[test]
    fn json_kinds() {
        assert_eq!(json_kind("12"), Some(JsonKind::Integer));
        assert_eq!(json_kind("-1.5e3"), Some(JsonKind::Number));
        assert_eq!(json_kind("99999999999999999999"), Some(JsonKind::Number));
        assert_eq!(json_kind("null"), None);
        assert!(JsonKind::Integer.fits(FieldType::Number));
        assert!(!JsonKind::Number.fits(FieldType::Integer));
    }
}
