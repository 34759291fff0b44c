//! The event catalogue (`events/catalogue.json`): which events exist, which fields they declare and
//! of what type. The same file drives the producer, the validator and the Parquet schema.

use std::collections::BTreeMap;

use foldhash::HashMap;

use serde::Deserialize;

/// The catalogue the binaries are built with.
pub const EMBEDDED_CATALOGUE: &str = include_str!("../../events/catalogue.json");

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "catalogue event `{event}` lists field `{field}`, which is not declared under `fields`"
    )]
    UndeclaredField { event: String, field: String },
    #[error("catalogue event name `{0}` is not `type:subtype` with both parts non-empty")]
    BadEventName(String),
    #[error("catalogue event name `{0}` holds a quote, a backslash or a control character")]
    EscapedEventName(String),
    #[error("catalogue field `{0}` collides with a fixed column of the lake")]
    ReservedField(String),
}

/// The JSON type a declared field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
        }
    }
}

/// How the producer makes a realistic value for a field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FakeSpec {
    /// A named generator: `uuid`, `city_country`, `bool`, `app_version`.
    Named(String),
    OneOf {
        one_of: Vec<String>,
    },
    Range {
        range: [f64; 2],
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldSpec {
    #[serde(rename = "type")]
    pub field_type: FieldType,
    pub fake: Option<FakeSpec>,
}

#[derive(Debug, Deserialize)]
struct RawEventSpec {
    #[serde(default = "default_weight")]
    weight: u32,
    fields: Vec<String>,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
struct RawCatalogue {
    fields: BTreeMap<String, FieldSpec>,
    events: BTreeMap<String, RawEventSpec>,
}

/// One catalogue event, with its declared fields resolved to column indexes.
#[derive(Debug, Clone)]
pub struct EventSpec {
    pub name: String,
    pub weight: u32,
    /// Indexes into [`Catalogue::fields`], in the catalogue's order.
    pub fields: Vec<usize>,
    /// Where `name`'s one colon is (checked at load).
    colon: usize,
    /// The declared fields' names, column indexes and types: what [`Catalogue::declared_type`]
    /// looks through. An event declares a handful, and comparing a few lengths (then the bytes
    /// of the one that fits) costs less than hashing every key of every event.
    declared: Vec<(Box<str>, usize, FieldType)>,
}

impl EventSpec {
    /// `game` of `game:resumed`.
    pub fn event_type(&self) -> &str {
        &self.name[..self.colon]
    }

    /// `resumed` of `game:resumed`.
    pub fn event_subtype(&self) -> &str {
        &self.name[self.colon + 1..]
    }
}

/// A declared field: one Parquet column.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub spec: FieldSpec,
}

#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Every declared field, sorted by name: the order of the Parquet columns.
    pub fields: Vec<Field>,
    pub events: Vec<EventSpec>,
    event_index: HashMap<String, usize>,
    field_index: HashMap<String, usize>,
}

/// Columns every lake row has; a catalogue field may not reuse their names.
pub const FIXED_COLUMNS: [&str; 7] = [
    "event_uuid",
    "event_name",
    "event_type",
    "event_subtype",
    "created_at",
    "received_at",
    "extra_specifics",
];

impl Catalogue {
    pub fn embedded() -> Self {
        Self::from_json(EMBEDDED_CATALOGUE)
            .expect("the embedded catalogue is checked by unit tests")
    }

    pub fn from_json(text: &str) -> Result<Self, CatalogueError> {
        let raw: RawCatalogue = serde_json::from_str(text)?;
        let fields: Vec<Field> = raw
            .fields
            .into_iter()
            .map(|(name, spec)| Field { name, spec })
            .collect();
        if let Some(f) = fields
            .iter()
            .find(|f| FIXED_COLUMNS.contains(&f.name.as_str()))
        {
            return Err(CatalogueError::ReservedField(f.name.clone()));
        }
        let field_index: HashMap<String, usize> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let mut events = Vec::with_capacity(raw.events.len());
        for (name, spec) in raw.events {
            let Some((event_type, _)) = split_event_name(&name) else {
                return Err(CatalogueError::BadEventName(name));
            };
            // Names are written into every staging line as they are (`push_plain_json_str`).
            if crate::json_scan::special_byte_of_value(name.as_bytes()).is_some() {
                return Err(CatalogueError::EscapedEventName(name));
            }
            let colon = event_type.len();
            let mut indexes = Vec::with_capacity(spec.fields.len());
            for field in &spec.fields {
                match field_index.get(field) {
                    Some(&i) => indexes.push(i),
                    None => {
                        return Err(CatalogueError::UndeclaredField {
                            event: name,
                            field: field.clone(),
                        })
                    }
                }
            }
            let declared = indexes
                .iter()
                .map(|&i| (fields[i].name.as_str().into(), i, fields[i].spec.field_type))
                .collect();
            events.push(EventSpec {
                name,
                weight: spec.weight,
                fields: indexes,
                colon,
                declared,
            });
        }
        let event_index = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(Catalogue {
            fields,
            events,
            event_index,
            field_index,
        })
    }

    pub fn event(&self, name: &str) -> Option<&EventSpec> {
        self.event_index.get(name).map(|&i| &self.events[i])
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.field_index.get(name).copied()
    }

    /// The declared type of `field` for `event`, or `None` when the event does not declare it.
    pub fn declared_type(&self, event: &EventSpec, field: &str) -> Option<(usize, FieldType)> {
        event
            .declared
            .iter()
            .find(|(name, ..)| {
                name.len() == field.len() && same_bytes(name.as_bytes(), field.as_bytes())
            })
            .map(|&(_, index, field_type)| (index, field_type))
    }
}

/// Whether two byte strings of one length are equal: up to 16 bytes in two word compares
/// (overlapping), where `==` calls `memcmp` (each field of every event is compared so).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// Splits `type:subtype`; both parts must be non-empty and there must be exactly one colon.
pub fn split_event_name(name: &str) -> Option<(&str, &str)> {
    let (event_type, event_subtype) = name.split_once(':')?;
    if event_type.is_empty() || event_subtype.is_empty() || event_subtype.contains(':') {
        return None;
    }
    Some((event_type, event_subtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_loads_and_has_the_contract_events() {
        let catalogue = Catalogue::from_json(EMBEDDED_CATALOGUE).unwrap();
        let resumed = catalogue.event("game:resumed").unwrap();
        let declared = |event: &EventSpec, field: &str| catalogue.declared_type(event, field);
        assert_eq!(declared(resumed, "attempts").unwrap().1, FieldType::Integer);
        assert_eq!(declared(resumed, "score").unwrap().1, FieldType::Integer);
        for field in [
            "device",
            "user_location",
            "language_id",
            "difficulty",
            "session_id",
        ] {
            assert_eq!(
                declared(resumed, field).unwrap().1,
                FieldType::String,
                "{field}"
            );
        }
        let login = catalogue.event("user:login").unwrap();
        assert!(declared(login, "device").is_some());
        assert!(declared(login, "user_location").is_some());
        assert!(declared(login, "language_id").is_none());
    }

    #[test]
    fn declared_types_and_names_answer_as_the_catalogue_reads() {
        let catalogue = Catalogue::embedded();
        let mut names: Vec<&str> = catalogue.fields.iter().map(|f| f.name.as_str()).collect();
        names.extend(["", "score ", "Score", "scor", "event_uuid"]);
        for event in &catalogue.events {
            let (event_type, event_subtype) = split_event_name(&event.name).unwrap();
            assert_eq!(
                (event.event_type(), event.event_subtype()),
                (event_type, event_subtype)
            );
            for name in &names {
                // The definition: the field is declared and listed by the event.
                let expected = catalogue
                    .field_index(name)
                    .filter(|index| event.fields.contains(index))
                    .map(|index| (index, catalogue.fields[index].spec.field_type));
                assert_eq!(
                    catalogue.declared_type(event, name),
                    expected,
                    "{} {name}",
                    event.name
                );
            }
        }
    }

    #[test]
    fn fields_are_sorted_so_the_column_order_is_stable() {
        let catalogue = Catalogue::embedded();
        let names: Vec<_> = catalogue.fields.iter().map(|f| f.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn rejects_an_event_listing_an_undeclared_field() {
        let err = Catalogue::from_json(
            r#"{"fields":{"a":{"type":"string"}},"events":{"x:y":{"fields":["a","b"]}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`b`"), "{err}");
    }

    #[test]
    fn rejects_a_field_that_shadows_a_fixed_column() {
        let err = Catalogue::from_json(
            r#"{"fields":{"created_at":{"type":"string"}},"events":{"x:y":{"fields":[]}}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, CatalogueError::ReservedField(_)));
    }

    #[test]
    fn event_names_need_two_non_empty_parts() {
        assert_eq!(split_event_name("game:resumed"), Some(("game", "resumed")));
        for bad in ["game", "game:", ":resumed", "a:b:c", ""] {
            assert_eq!(split_event_name(bad), None, "{bad}");
        }
        assert!(matches!(
            Catalogue::from_json(r#"{"fields":{},"events":{"bad":{"fields":[]}}}"#),
            Err(CatalogueError::BadEventName(_))
        ));
    }

    #[test]
    fn same_bytes_is_equality_whatever_the_length_and_the_byte_that_differs() {
        for len in 0..40 {
            let a: Vec<u8> = (0..len as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()), "{len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{len} at {at}");
            }
        }
    }

    /// Staging lines hold catalogue names unescaped, so a name JSON would escape is refused; any
    /// other character is a name's own.
    #[test]
    fn event_names_that_json_escapes_are_refused() {
        let catalogue = |name: &str| {
            let events = serde_json::json!({ name: { "fields": [] } });
            Catalogue::from_json(&serde_json::json!({ "fields": {}, "events": events }).to_string())
        };
        for bad in [
            "game:re\"sumed",
            "game:re\\sumed",
            "game:re\nsumed",
            "game:\u{1f}x",
        ] {
            assert!(
                matches!(catalogue(bad), Err(CatalogueError::EscapedEventName(_))),
                "{bad:?}"
            );
        }
        for good in ["game:résumé", "game:re sumed", "jeu:reprise/2", "x:\u{7f}"] {
            assert!(catalogue(good).is_ok(), "{good:?}");
        }
    }
}
