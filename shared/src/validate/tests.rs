//! Every reason code from its smallest example, and the odd but valid JSON that must pass.
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
    assert!(event.specifics.unwrap().contains("\"new_thing\":[1,2]"));
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

#[test]
fn reason_codes_and_json_strings_read_back_as_written() {
    for reason in Reason::ALL {
        assert_eq!(Reason::from_code(reason.code()), Some(reason));
    }
    assert_eq!(Reason::from_code("no_such_reason"), None);
    for s in [
        "plain",
        "quo\"te",
        "back\\slash",
        "line\nend",
        "\u{1}",
        "日本",
        "a plain string longer than sixteen bytes",
        "a string longer than sixteen bytes with a \"quote\" late",
        "a string longer than sixteen bytes ending in a backslash\\",
    ] {
        let mut out = Vec::new();
        push_json_str(&mut out, s);
        let raw: Box<RawValue> = serde_json::from_slice(&out).unwrap();
        let read = json_str(raw.get());
        assert_eq!(read.as_deref(), Some(s));
        // Borrowed exactly when nothing was escaped.
        let escaped = s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        assert_eq!(matches!(read, Some(Cow::Owned(_))), escaped, "{s:?}");
    }
    // Not a whole string token: not read as one.
    // (Ending in a backslash or a control character: no closing quote.)
    for text in [
        "",
        "\"",
        "plain",
        "\"open",
        "\"a\"b\"",
        "\"open\\",
        "\"open\u{1}",
    ] {
        assert_eq!(
            json_str(text),
            serde_json::from_str::<String>(text).ok().map(Cow::Owned),
            "{text}"
        );
    }
}

/// The fast walk over an event and serde_json find the same four fields, or the walk declines.
#[test]
fn the_fast_walk_reads_events_as_serde_json_does() {
    let cases = [
        GOOD.to_string(),
        GOOD.replace(",\"", " ,\n\t\""),
        GOOD.replace("\"score\":46", "\"score\":46,\"event_name\":\"x:y\""),
        GOOD.replace("\"device\"", "\"dev\\u0069ce\""),
        GOOD.replace("{\"event_uuid\"", "{\"ev\\u0065nt_uuid\""),
        GOOD.replace(
            "\"created_at\":1712844605.9512355",
            "\"created_at\":1712844605.9512355,\"created_at\":1",
        ),
        format!("{GOOD} x"),
        "[1]".to_string(),
        "{}".to_string(),
    ];
    let mut scanned = 0;
    let catalogue = Catalogue::embedded();
    for case in &cases {
        for cut in (0..case.len()).chain([case.len()]) {
            let text = &case[..cut];
            let Some(fields) = EventFields::scan(text, &catalogue) else {
                continue;
            };
            scanned += 1;
            let raw: RawEvent =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (
                    fields.event_uuid,
                    fields.created_at,
                    fields.event_name,
                    fields.event_specifics
                ),
                (
                    raw.event_uuid.map(RawValue::get),
                    raw.created_at.map(RawValue::get),
                    raw.event_name.map(RawValue::get),
                    raw.event_specifics.map(RawValue::get),
                ),
                "{text}"
            );
        }
    }
    assert!(scanned >= 4, "the fast walk read only {scanned} events");
}

/// `event_specifics` checked during the walk (the name came first) gives the answer, and the
/// rejection, of the check made after it (the name came last), for right and wrong fields alike.
#[test]
fn specifics_checked_during_the_walk_as_after_it() {
    let specifics = [
        r#"{"device":"iOS","attempts":93,"score":46,"extra":{"a":[1]}}"#,
        r#"{"attempts":"93"}"#,
        r#"{"score":4.5,"attempts":true}"#,
        r#"{"attempts":null,"device":null}"#,
        r#"{"attempts":1,"attempts":"x"}"#,
        r#"{"att\u0065mpts":"x"}"#,
        r#"{"device":7}"#,
        r#"{}"#,
        r#"null"#,
        r#"[1]"#,
        r#""x""#,
        r#" { "score" : "high" } "#,
    ];
    let mut walked = 0;
    for (name, event) in [
        ("game:resumed", true),
        ("user:login", true),
        ("no:such", false),
    ] {
        for specifics in specifics {
            let first = format!(
                r#"{{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605,"event_name":"{name}","event_specifics":{specifics}}}"#
            );
            let last = format!(
                r#"{{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605,"event_specifics":{specifics},"event_name":"{name}"}}"#
            );
            let catalogue = Catalogue::embedded();
            let checked = EventFields::scan(&first, &catalogue)
                .is_some_and(|f| matches!(f.specifics_check, SpecificsCheck::Done(_)));
            walked += usize::from(checked);
            assert!(event || !checked, "{first}");
            let outcome = |text: &str| {
                check(text).map(|e| (e.event_name.to_string(), e.specifics.map(str::to_string)))
            };
            assert_eq!(outcome(&first), outcome(&last), "{specifics} for {name}");
        }
    }
    assert!(walked >= 12, "only {walked} were checked during the walk");
}

/// The canonical form is exactly the `8-4-4-4-12` hex digits, lower-cased, whatever byte is wrong
/// and wherever it is.
#[test]
fn canonical_uuid_takes_exactly_hyphenated_hex_digits() {
    let reference = |s: &str| {
        let shape = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        shape.then(|| s.to_ascii_lowercase())
    };
    let good = "d7ca46d5-80b5-4b81-bf5b-c96a60c4c573";
    let mut cases = vec![
        good.to_string(),
        good.to_uppercase(),
        good.replace('-', ""),
        format!("{good}0"),
        good[1..].to_string(),
        format!("{{{good}}}"),
    ];
    for at in 0..36 {
        for b in [
            b'-', b'g', b'G', b'A', b'f', b'0', b' ', b'/', b':', b'@', b'`',
        ] {
            let mut bytes = good.as_bytes().to_vec();
            bytes[at] = b;
            cases.push(String::from_utf8(bytes).unwrap());
        }
    }
    cases.push(good.replacen('d', "é", 1));
    for case in &cases {
        let got = canonical_uuid(Cow::Borrowed(case)).map(Cow::into_owned);
        assert_eq!(got, reference(case), "{case}");
    }
}
