//! Keys built and read back: every key of the contract, the Hive escaping, the part banks.
use super::*;

#[test]
fn a_processed_key_names_its_partition() {
    let p = Prefixes {
        processed: "lake/processed".into(),
        ..Prefixes::default()
    };
    let day = Date::parse("2024-04-09").unwrap();
    for language in ["lang_en", "a/b=c%", "日本", "100%", HIVE_DEFAULT_PARTITION] {
        let folder = language_partition(&Language::Text(language.into()));
        let key = p.processed_key(day, &folder, day.succ(), 50_000);
        let partition = p.parse_processed_partition(&key).unwrap();
        assert_eq!(partition.event_day, day, "{key}");
        assert_eq!(partition.language, language, "{key}");
        assert_eq!(partition.folder, p.processed_partition(day, &folder));
        assert_eq!(hive_unescape(&hive_escape(language)), language);
    }
    assert_eq!(hive_unescape("%zz%4"), "%zz%4");
    for other in [
        "lake/processed/_manifests/arrival_day=2024-04-09.json",
        "lake/processed/year=2024/month=13/day=01/language=x/part-20240409-00000.parquet",
        "processed/year=2024/month=04/day=09/language=x/part-20240409-00000.parquet",
    ] {
        assert_eq!(p.parse_processed_partition(other), None, "{other}");
    }
}

#[test]
fn hive_escaping_keeps_values_in_their_folder() {
    assert_eq!(hive_escape("lang_en"), "lang_en");
    assert_eq!(hive_escape("../x"), "..%2Fx");
    assert_eq!(hive_escape("a/b=c%"), "a%2Fb%3Dc%25");
    assert_eq!(hive_escape("tab\there"), "tab%09here");
    assert_eq!(hive_escape("日本"), "日本");
    let text = |s: &str| Language::Text(s.to_string().into());
    assert_eq!(
        language_partition(&Language::Absent),
        HIVE_DEFAULT_PARTITION
    );
    assert_eq!(language_partition(&text("")), HIVE_DEFAULT_PARTITION);
    assert_eq!(language_partition(&text("../x")), "..%2Fx");
    assert_eq!(
        language_partition(&Language::NotAString),
        INVALID_LANGUAGE_PARTITION
    );
    let longest = "/".repeat(MAX_LANGUAGE_BYTES);
    assert_eq!(
        language_partition(&text(&longest)).len(),
        3 * MAX_LANGUAGE_BYTES
    );
    assert_eq!(
        language_partition(&text(&format!("{longest}x"))),
        INVALID_LANGUAGE_PARTITION
    );
}

#[test]
fn no_processed_key_can_exceed_s3s_limit() {
    let long_prefix = "p".repeat(MAX_PREFIX_BYTES);
    let p = Prefixes {
        staging: long_prefix.clone(),
        quarantine: long_prefix.clone(),
        processed: long_prefix,
    };
    let day = Date::parse("2024-04-11").unwrap();
    // The worst folder a language can get: every byte escaped.
    let worst = language_partition(&Language::Text("%".repeat(MAX_LANGUAGE_BYTES).into()));
    let key = p.processed_key(day, &worst, day, 99_999);
    assert!(key.len() <= MAX_KEY_BYTES, "{} bytes", key.len());
    assert!(p.manifest_key(day).len() <= MAX_KEY_BYTES);
}

#[test]
fn keys_follow_the_contract() {
    let p = Prefixes::default();
    let micros = time::parse_rfc3339("2024-04-11T14:10:06.012Z").unwrap();
    assert_eq!(
        p.staging_key(Minute::of_micros(micros), "shardId-000000000000", "4954"),
        "staging/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000000-4954.ndjson"
    );
    assert_eq!(p.compaction_lease_key(), "processed/_lease/compact.json");
    assert_eq!(
        p.quarantine_key(Minute::of_micros(micros), "shardId-000000000001", "77"),
        "quarantine/year=2024/month=04/day=11/hour=14/minute=10/shardId-000000000001-77.ndjson"
    );
    let day = Date::parse("2024-04-11").unwrap();
    assert_eq!(
        p.staging_day_prefix(day),
        "staging/year=2024/month=04/day=11/"
    );
    assert_eq!(
        p.quarantine_day_prefix(day),
        "quarantine/year=2024/month=04/day=11/"
    );
    assert_eq!(
        p.processed_key(day.pred(), "lang_ru", day, 3),
        "processed/year=2024/month=04/day=10/language=lang_ru/part-20240411-00003.parquet"
    );
    assert!(is_part_of_day(
        "x/language=a/part-20240411-00003.parquet",
        day
    ));
    assert!(!is_part_of_day(
        "x/language=a/part-20240410-00003.parquet",
        day
    ));
    assert!(!is_part_of_day("x/language=a/part-20240411-.parquet", day));
    assert_eq!(
        part_number(&p.processed_key(day, "lang_en", day, 50_001), day),
        Some(50_001)
    );
    assert_eq!(part_number("x/part-20240411-00003.parquet.tmp", day), None);
    let staging = p.staging_key(Minute::of_micros(micros), "shardId-000000000000", "4954");
    let bad_lines = p.compaction_quarantine_key(&staging);
    assert_eq!(
        bad_lines,
        "quarantine/year=2024/month=04/day=11/hour=14/minute=10/compaction-shardId-000000000000-4954.ndjson"
    );
    assert!(is_compaction_quarantine_key(&bad_lines));
    assert!(!is_compaction_quarantine_key(&p.quarantine_key(
        Minute::of_micros(micros),
        "shardId-000000000000",
        "4954"
    )));
    let unsequenced = p.unsequenced_quarantine_key(Minute::of_micros(micros), UNKNOWN, b"x");
    assert_eq!(
        unsequenced,
        format!(
            "quarantine/year=2024/month=04/day=11/hour=14/minute=10/{UNKNOWN}-unsequenced.{}.ndjson",
            content_digest(b"x")
        )
    );
    assert_eq!(content_digest(b"x"), "9dd4e461268c8034f5c8564e155c67a6");
    // Not a position: nothing reads it back as one.
    assert_eq!(parse_minute_object_name(&unsequenced), None);
}

const UNKNOWN: &str = "shardId-unknown";

#[test]
fn a_run_writes_the_bank_the_lake_does_not_stand_on() {
    let day = Date::parse("2024-04-11").unwrap();
    let p = Prefixes::default();
    let part = |n| p.processed_key(day, "lang_en", day, n);
    let other_day = p.processed_key(day, "lang_en", day.pred(), 7);
    // Nothing yet, or only another day's files: bank 0.
    assert_eq!(first_part_of_next_run(day, None, &[]), 0);
    assert_eq!(first_part_of_next_run(day, None, &[other_day]), 0);
    // The last run wrote bank 0: the next writes bank 1, and back again.
    assert_eq!(
        first_part_of_next_run(day, Some(&[part(0), part(1)]), &[]),
        PART_BANK_SIZE
    );
    assert_eq!(first_part_of_next_run(day, Some(&[part(50_000)]), &[]), 0);
    // A crashed run left bank 1 files beside the manifest's bank 0: bank 1 again, never 0.
    assert_eq!(
        first_part_of_next_run(day, Some(&[part(0)]), &[part(0), part(50_000)]),
        PART_BANK_SIZE
    );
    // No manifest (deleted by hand): the bank no file is in.
    assert_eq!(
        first_part_of_next_run(day, None, &[part(3)]),
        PART_BANK_SIZE
    );
    assert_eq!(first_part_of_next_run(day, None, &[part(50_003)]), 0);
    // A manifest that wrote nothing (an empty day) says nothing: the files decide.
    assert_eq!(
        first_part_of_next_run(day, Some(&[]), &[part(1)]),
        PART_BANK_SIZE
    );
}

#[test]
fn staging_object_names_parse_back() {
    let p = Prefixes::default();
    let minute = Minute::of_micros(time::parse_rfc3339("2024-04-11T14:10:06Z").unwrap());
    let sequence = "49546986683135544286507457936321625675700192471156785154";
    let key = p.staging_key(minute, "shardId-000000000007", sequence);
    assert_eq!(
        parse_minute_object_name(&key),
        Some(("shardId-000000000007", sequence))
    );
    let redriven = p.redriven_staging_key(minute, "shardId-000000000007", sequence, "0a9f");
    assert!(redriven.ends_with(&format!(
        "shardId-000000000007-{sequence}.redriven-0a9f.ndjson"
    )));
    assert_eq!(
        parse_minute_object_name(&redriven),
        Some(("shardId-000000000007", sequence))
    );
    assert_eq!(
        parse_minute_object_name("staging/x/shardId-1-5.redriven-xyz.ndjson"),
        None
    );
    for key in [
        &key,
        &redriven,
        &p.quarantine_key(minute, "shardId-000000000007", sequence),
    ] {
        let parsed = MinuteKey::parse(key).unwrap();
        assert_eq!(
            parsed,
            MinuteKey {
                minute,
                shard_id: "shardId-000000000007",
                first_sequence: sequence
            },
            "{key}"
        );
        assert_eq!(parsed.arrival_day(), Date::parse("2024-04-11").unwrap());
    }
    for other in [
        "staging/x/shardId-1-5.ndjson",
        "staging/year=2024/month=04/day=11/hour=24/minute=10/shardId-1-5.ndjson",
        "staging/year=2024/month=02/day=30/hour=14/minute=10/shardId-1-5.ndjson",
        "staging/year=2024/month=04/day=11/hour=14/minute=1/shardId-1-5.ndjson",
    ] {
        assert_eq!(MinuteKey::parse(other), None, "{other}");
    }
    assert_eq!(parse_minute_object_name("staging/x/notes.txt"), None);
    assert_eq!(
        parse_minute_object_name("staging/x/shardId-1-abc.ndjson"),
        None
    );
}
