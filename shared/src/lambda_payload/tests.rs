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
    let records: Vec<StreamRecord> = (0..1000).map(|ms| record(1_795_219_110_000 + ms)).collect();
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
        // What the decoder checks in place of the careful walk: a raw control character (not
        // JSON), escaped quotes and backslashes, and the data given twice.
        format!(r#"{{"Records":[{}]}}"#, record("eyJh\tIjoxfQ==", "")),
        format!(r#"{{"Records":[{}]}}"#, record("eyJh\u{1}IjoxfQ==", "")),
        format!(r#"{{"Records":[{}]}}"#, record(r#"eyJh\"IjoxfQ=="#, "")),
        format!(r#"{{"Records":[{}]}}"#, record(r"eyJhIjoxfQ==\\", "")),
        format!(
            r#"{{"Records":[{}]}}"#,
            record("eyJhIjoxfQ==", r#","data":"eyJhIjoxfQ==""#)
        ),
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
        // Some are declined whole: not JSON (the two raw control characters among them).
        checked >= cases.len() - 5,
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
