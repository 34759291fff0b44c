//! Raw record bytes → a valid event, or the reason it cannot be one.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalogue::{split_event_name, Catalogue, EventSpec, FieldType};
use crate::json_scan::{self, Scanner};
use crate::time::{self, TimestampError, EARLIEST_CREATED_AT, MICROS_PER_DAY};

mod uuid;
pub use uuid::canonical_uuid;

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
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 13] = [
        Reason::NotUtf8,
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::MissingField,
        Reason::InvalidUuid,
        Reason::InvalidTimestamp,
        Reason::CreatedAtOutOfRange,
        Reason::InvalidEventName,
        Reason::UnknownEvent,
        Reason::WrongFieldType,
        Reason::InvalidAggregate,
        Reason::InvalidEnvelope,
        Reason::InvalidStagingLine,
    ];

    /// The reason a code names (the inverse of [`Reason::code`]).
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

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
    /// Lower-case, hyphenated: the dedup key and the lake's value (borrowed when it arrived so).
    pub event_uuid: Cow<'a, str>,
    pub event_name: &'a str,
    pub event_type: &'a str,
    pub event_subtype: &'a str,
    pub created_at: i64,
    /// `event_specifics`' JSON text exactly as received (`None` when absent or null, written as
    /// `{}`).
    pub specifics: Option<&'a str>,
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

/// The four fields an event is made of, each as its raw JSON text.
#[derive(Default)]
struct EventFields<'a> {
    event_uuid: Option<&'a str>,
    created_at: Option<&'a str>,
    event_name: Option<&'a str>,
    event_specifics: Option<&'a str>,
    /// The event `event_name` names, when the walk looked it up (to check `event_specifics`).
    spec: Option<&'a EventSpec>,
    specifics_check: SpecificsCheck,
}

/// Whether the walk checked `event_specifics` against its event: it does when the name came first
/// and is in the catalogue.
#[derive(Default)]
enum SpecificsCheck {
    /// Checked after the walk ([`check_specifics`]).
    #[default]
    Later,
    /// Checked: the first wrong field, if any.
    Done(Option<String>),
}

impl<'a> EventFields<'a> {
    /// The fast walk ([`json_scan`]); `None` when serde_json must read the record (a field twice,
    /// an escaped key, any error), so every rejection still reads as serde_json words it.
    fn scan(text: &'a str, catalogue: &'a Catalogue) -> Option<Self> {
        let mut fields = EventFields::default();
        let mut scanner = Scanner::new(text);
        scanner.object(|key, scanner| {
            if key == "event_specifics" && fields.event_specifics.is_none() {
                let start = scanner.position();
                fields.specifics_check = fields.scan_specifics(scanner, catalogue)?;
                fields.event_specifics = Some(scanner.since(start));
                return Some(());
            }
            let slot = match key {
                "event_uuid" => &mut fields.event_uuid,
                "created_at" => &mut fields.created_at,
                "event_name" => &mut fields.event_name,
                "event_specifics" => &mut fields.event_specifics,
                _ => return scanner.value().map(drop),
            };
            // serde_json refuses a field given twice.
            slot.is_none().then_some(())?;
            *slot = Some(scanner.value()?);
            Some(())
        })?;
        scanner.end()?;
        Some(fields)
    }

    /// Reads the `event_specifics` value, checking its fields on the way when the event is known
    /// already; `None` is an error, as everywhere in the walk.
    fn scan_specifics(
        &mut self,
        scanner: &mut Scanner<'a>,
        catalogue: &'a Catalogue,
    ) -> Option<SpecificsCheck> {
        self.spec = self
            .event_name
            .and_then(json_str)
            .and_then(|name| catalogue.event(&name));
        match self.spec {
            Some(spec) if scanner.peek() == Some(b'{') => {
                let mut problem = None;
                scanner.object(|key, scanner| {
                    let value = scanner.value()?;
                    check_entry(&mut problem, catalogue, spec, key, value);
                    Some(())
                })?;
                Some(SpecificsCheck::Done(problem))
            }
            _ => scanner.value().map(|_| SpecificsCheck::Later),
        }
    }

    fn parse(text: &'a str, catalogue: &'a Catalogue) -> Result<Self, Rejection> {
        if let Some(fields) = EventFields::scan(text, catalogue) {
            return Ok(fields);
        }
        let raw = parse_object::<RawEvent>(text)?;
        Ok(EventFields {
            event_uuid: raw.event_uuid.map(RawValue::get),
            created_at: raw.created_at.map(RawValue::get),
            event_name: raw.event_name.map(RawValue::get),
            event_specifics: raw.event_specifics.map(RawValue::get),
            spec: None,
            specifics_check: SpecificsCheck::Later,
        })
    }
}

/// Validates one user record that arrived at `received_at` (epoch micros).
pub fn validate<'a>(
    data: &'a [u8],
    received_at: i64,
    catalogue: &'a Catalogue,
) -> Result<ValidEvent<'a>, Rejection> {
    // The SIMD check first; the standard one only to word what is wrong.
    let text = simdutf8::basic::from_utf8(data)
        .or_else(|_| std::str::from_utf8(data))
        .map_err(|e| Rejection::new(Reason::NotUtf8, format!("record is not UTF-8: {e}")))?;
    let raw = EventFields::parse(text, catalogue)?;

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

    let event_uuid = json_str(uuid_raw).and_then(canonical_uuid).ok_or_else(|| {
        Rejection::new(
            Reason::InvalidUuid,
            format!("event_uuid {} is not a UUID string", shorten(uuid_raw)),
        )
    })?;

    let created_at = time::parse_created_at(created_raw).map_err(|e| match e {
        TimestampError::Invalid(detail) => Rejection::new(Reason::InvalidTimestamp, detail),
        TimestampError::OutOfRange(detail) => Rejection::new(Reason::CreatedAtOutOfRange, detail),
    })?;
    check_created_at_range(created_at, received_at)?;

    let received_name = json_str(name_raw).ok_or_else(|| {
        Rejection::new(
            Reason::InvalidEventName,
            format!("event_name {} is not a string", shorten(name_raw)),
        )
    })?;
    // Looked up once (by the walk, when it checked `event_specifics`); every catalogue name is
    // `type:subtype` (checked at load), so only a name it lacks is looked at for its shape.
    let spec = match raw.spec.or_else(|| catalogue.event(&received_name)) {
        Some(spec) => spec,
        None if split_event_name(&received_name).is_none() => {
            return Err(Rejection::new(
                Reason::InvalidEventName,
                format!(
                    "event_name `{}` is not `type:subtype`",
                    shorten(&received_name)
                ),
            ))
        }
        None => {
            return Err(Rejection::new(
                Reason::UnknownEvent,
                format!(
                    "event `{}` is not in the catalogue",
                    shorten(&received_name)
                ),
            ))
        }
    };
    // Borrow the catalogue's copy: it outlives the record and is the same text.
    let event_name = spec.name.as_str();
    let (event_type, event_subtype) = (spec.event_type(), spec.event_subtype());

    let specifics = match raw.event_specifics {
        Some(v) if v.trim() == "null" => None,
        other => other,
    };
    match (specifics, raw.specifics_check) {
        (Some(_), SpecificsCheck::Done(Some(detail))) => {
            return Err(Rejection::new(Reason::WrongFieldType, detail));
        }
        (Some(_), SpecificsCheck::Done(None)) | (None, _) => {}
        (Some(specifics), SpecificsCheck::Later) => check_specifics(specifics, spec, catalogue)?,
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
    specifics: &str,
    spec: &EventSpec,
    catalogue: &Catalogue,
) -> Result<(), Rejection> {
    if !specifics.trim_start().starts_with('{') {
        return Err(Rejection::new(
            Reason::WrongFieldType,
            format!(
                "event_specifics must be an object, got {}",
                shorten(specifics)
            ),
        ));
    }
    let check = |problem: &mut Option<String>, key: &str, value: &str| {
        check_entry(problem, catalogue, spec, key, value)
    };
    let mut problem = None;
    if json_scan::entries(specifics, |key, value| check(&mut problem, key, value)).is_none() {
        // Declined by the fast walk (an escaped key, say): serde_json reads it from the start.
        problem = None;
        for_each_entry(specifics, |key, value| {
            check(&mut problem, &key, value.get())
        })
        .map_err(|e| {
            Rejection::new(Reason::InvalidJson, format!("invalid event_specifics: {e}"))
        })?;
    }
    match problem {
        Some(detail) => Err(Rejection::new(Reason::WrongFieldType, detail)),
        None => Ok(()),
    }
}

/// One field of `event_specifics` against its declared type; only the first problem is kept.
fn check_entry(
    problem: &mut Option<String>,
    catalogue: &Catalogue,
    spec: &EventSpec,
    key: &str,
    value: &str,
) {
    if problem.is_some() {
        return;
    }
    if let Some((_, expected)) = catalogue.declared_type(spec, key) {
        if json_kind(value).is_some_and(|kind| !kind.fits(expected)) {
            *problem = Some(format!(
                "event_specifics.{key} must be {}, got {}",
                expected.name(),
                shorten(value)
            ));
        }
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
    // Raw values come without surrounding whitespace from both readers; trim only if not.
    let padded = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_whitespace());
    let raw = if padded(raw.as_bytes().first()) || padded(raw.as_bytes().last()) {
        raw.trim()
    } else {
        raw
    };
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
pub fn json_str(text: &str) -> Option<Cow<'_, str>> {
    let bytes = text.as_bytes();
    // Plain when the first byte after the opening quote that ends a plain run (a quote, a
    // backslash, a control character) is the closing quote, the last byte.
    if bytes.len() >= 2
        && bytes[0] == b'"'
        && json_scan::special_byte_of_value(&bytes[1..]) == Some(bytes.len() - 2)
        && bytes[bytes.len() - 1] == b'"'
    {
        Some(Cow::Borrowed(&text[1..text.len() - 1]))
    } else if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        None
    }
}

/// Appends `s` as a JSON string (the inverse of [`json_str`]).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Strings that need no escaping (ids, timestamps, names) are the norm; skip serde for them.
    // What needs escaping is what ends a plain run in the reader.
    if json_scan::special_byte_of_value(s.as_bytes()).is_none() {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }
}

/// Appends `s` as a JSON string, unchecked: for text known to need no escaping where it is made
/// (a canonical UUID, a catalogue name), which every staging line holds.
pub fn push_plain_json_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(
        json_scan::special_byte_of_value(s.as_bytes()).is_none(),
        "{s:?} needs escaping"
    );
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
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
mod tests;
