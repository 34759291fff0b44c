use serde_json::value::RawValue;

use super::*;

/// What serde_json makes of `text` as one value: its raw text, or `None` when it refuses it.
fn serde_raw(text: &str) -> Option<&str> {
    serde_json::from_str::<&RawValue>(text)
        .ok()
        .map(RawValue::get)
}

fn scan_raw(text: &str) -> Option<&str> {
    let mut scanner = Scanner::new(text);
    let raw = scanner.value()?;
    scanner.end()?;
    Some(raw)
}

/// The reader may decline what serde_json accepts (serde then answers), never the reverse, and
/// never with a different value.
fn assert_agrees(text: &str) {
    if let Some(raw) = scan_raw(text) {
        assert_eq!(serde_raw(text), Some(raw), "accepted differently: {text:?}");
    }
}

const CASES: &[&str] = &[
    "{}",
    " { } ",
    "[]",
    "[1,2 , 3]",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "01",
    "1.",
    ".5",
    "1e5",
    "1E+5",
    "1e-",
    "-",
    "--1",
    "+1",
    "1.5e3",
    "\"a\"",
    "\"a\\\"b\"",
    "\"\\u00e9\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud83d\"",
    "\"\\u12\"",
    "\"\\u+123\"",
    "\"\\x\"",
    "\"tab\there\"",
    "\"line\nbreak\"",
    "\"unterminated",
    "{\"a\":1,}",
    "{\"a\" 1}",
    "{\"a\":1 \"b\":2}",
    "{\"a\":1,\"a\":2}",
    "{\"k\\u0065y\":1}",
    "[1,]",
    "[,1]",
    "{\"a\":[{\"b\":null}],\"c\":\"d\"}",
    "{\"a\":1} x",
    "{\"a\":1}\n",
    "nul",
    "truex",
    "{\"event_uuid\":\"0b0e6b4a-1f0e-4b8e-9a53-3c1e7e4e2c11\",\"created_at\":1712844605.951,\"event_name\":\"game:resumed\",\"event_specifics\":{\"attempts\":3,\"language_id\":\"en\"}}",
];

#[test]
fn agrees_with_serde_json() {
    for case in CASES {
        assert_agrees(case);
    }
    // Every case cut short, and with each byte replaced by each of a few troublesome ones.
    for case in CASES {
        for cut in 0..case.len() {
            if case.is_char_boundary(cut) {
                assert_agrees(&case[..cut]);
            }
        }
        for i in 0..case.len() {
            for b in [b'"', b'\\', b',', b':', b'}', b']', b' ', b'0', b'e', b'\n'] {
                let mut bytes = case.as_bytes().to_vec();
                bytes[i] = b;
                if let Ok(text) = String::from_utf8(bytes) {
                    assert_agrees(&text);
                }
            }
        }
    }
}

#[test]
fn reads_what_the_pipeline_sends() {
    let text = "{\"a\": \"x\", \"b\" :{\"c\":[1, 2.5e3, true]}, \"d\":null}";
    let mut seen = Vec::new();
    entries(text, |key, value| {
        seen.push((key.to_string(), value.to_string()))
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            ("a".to_string(), "\"x\"".to_string()),
            ("b".to_string(), "{\"c\":[1, 2.5e3, true]}".to_string()),
            ("d".to_string(), "null".to_string()),
        ]
    );
    // Declined, for serde_json to answer: escaped keys, surrogate escapes, deep nesting.
    assert!(entries("{\"k\\u0065y\":1}", |_, _| {}).is_none());
    assert!(scan_raw("\"\\ud83d\\ude00\"").is_none());
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(scan_raw(&deep).is_none());
    let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(scan_raw(&fine), Some(fine.as_str()));
    let mut scanner = Scanner::new("\"plain\"");
    assert_eq!(scanner.plain_string(), Some("plain"));
    assert_eq!(Scanner::new("\"a\\nb\"").plain_string(), None);
}

/// Both searches (SIMD where the target has it, and the portable word-at-a-time one) find exactly
/// the first `"`, `\` or control byte, wherever it is and whatever surrounds it (bytes just above
/// and below 0x20, UTF-8 high bytes, the bytes they test).
#[test]
fn finds_the_first_special_byte_as_a_byte_loop_does() {
    for search in [special_byte, special_byte_of_value, swar_special_byte] {
        finds_the_first_special_byte(search);
    }
    // The walk's entry, from an offset.
    finds_the_first_special_byte(|text| special_byte_from(text, 0));
    let text: Vec<u8> = (0..60u8)
        .map(|i| if i % 19 == 18 { b'"' } else { b'a' + i % 26 })
        .collect();
    for from in 0..=text.len() {
        let naive = text[from..]
            .iter()
            .position(|&b| b == b'"')
            .map(|at| from + at);
        assert_eq!(special_byte_from(&text, from), naive, "from {from}");
    }
    assert_eq!(special_byte_from(&text, text.len() + 1), None);
}

fn finds_the_first_special_byte(special_byte: fn(&[u8]) -> Option<usize>) {
    let naive = |text: &[u8]| {
        text.iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    };
    let fillers = [
        b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff, 0x21, 0x5d,
    ];
    let specials = [b'"', b'\\', 0x00, 0x1f, b'\n', 0x01];
    for len in 0..90 {
        for filler in fillers {
            let plain = vec![filler; len];
            assert_eq!(special_byte(&plain), naive(&plain), "{len} x {filler:#x}");
            for at in 0..len {
                for special in specials {
                    let mut text = plain.clone();
                    text[at] = special;
                    // A second special byte later must not change the answer.
                    if at + 3 < len {
                        text[at + 3] = b'"';
                    }
                    assert_eq!(special_byte(&text), naive(&text), "{text:?}");
                }
            }
        }
    }
}
