//! Where things live in the data-lake bucket and what their lines look like (contract: Staging,
//! Quarantine, Processed).

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::value::RawValue;

use crate::time::{self, Date, Instant};
use crate::validate::{Reason, ValidEvent};

/// The partition a missing (or empty) language goes to, as Hive names it.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Escapes a partition value the way Hive's `FileUtils.escapePathName` does, so that no value can
/// leave its folder (`/`), fake another partition (`=`) or be misread (`%`).
pub fn hive_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let escape = matches!(
            c,
            '\u{01}'
                ..='\u{1F}'
                    | '"'
                    | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '\u{7F}'
                    | '{'
                    | '['
                    | ']'
                    | '^'
        );
        if escape {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`hive_escape`]: the value a reader of the folder name sees. A `%` not followed by
/// two hex digits stays as it is, as in Hive's `FileUtils.unescapePathName`.
pub fn hive_unescape(folder: &str) -> String {
    let bytes = folder.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The partition of a `language_id` that cannot name a folder: not a string, or longer than
/// [`MAX_LANGUAGE_BYTES`]. The row keeps the value in its column (or in `extra_specifics`).
pub const INVALID_LANGUAGE_PARTITION: &str = "__INVALID_LANGUAGE__";

/// The longest `language_id` (in UTF-8 bytes) that gets a partition of its own. Escaped, it takes
/// at most three times as many bytes, which keeps every processed key far below S3's 1,024 (see
/// [`MAX_PREFIX_BYTES`]).
pub const MAX_LANGUAGE_BYTES: usize = 64;

/// The longest key prefix accepted (`STAGING_PREFIX`, …), so that no key can pass S3's limit.
pub const MAX_PREFIX_BYTES: usize = 256;

/// S3's limit on the length of a key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What an event's `event_specifics.language_id` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Language<'a> {
    /// Absent or null.
    Absent,
    Text(std::borrow::Cow<'a, str>),
    /// A number, object, array or boolean.
    NotAString,
}

/// The folder value for a language: escaped; Hive's default partition when absent or empty;
/// [`INVALID_LANGUAGE_PARTITION`] when not a string or too long.
pub fn language_partition(language: &Language) -> String {
    match language {
        Language::Absent => HIVE_DEFAULT_PARTITION.to_string(),
        Language::Text(l) if l.is_empty() => HIVE_DEFAULT_PARTITION.to_string(),
        Language::Text(l) if l.len() <= MAX_LANGUAGE_BYTES => hive_escape(l),
        Language::Text(_) | Language::NotAString => INVALID_LANGUAGE_PARTITION.to_string(),
    }
}

/// Key prefixes of the bucket (contract: `STAGING_PREFIX`, `QUARANTINE_PREFIX`, `PROCESSED_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes {
    pub staging: String,
    pub quarantine: String,
    pub processed: String,
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes {
            staging: "staging".into(),
            quarantine: "quarantine".into(),
            processed: "processed".into(),
        }
    }
}

/// The UTC minute an object covers (arrival time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Minute(pub i64);

impl Minute {
    pub fn of_micros(micros: i64) -> Minute {
        Minute(micros.div_euclid(60 * time::MICROS_PER_SECOND))
    }

    fn path(self) -> String {
        let t = Instant::of_micros(self.0 * 60 * time::MICROS_PER_SECOND);
        format!(
            "year={:04}/month={:02}/day={:02}/hour={:02}/minute={:02}",
            t.date.year, t.date.month, t.date.day, t.hour, t.minute
        )
    }
}

impl Prefixes {
    /// `{STAGING_PREFIX}/year=…/minute=mm/{shardId}-{firstSequenceNumber}.ndjson`
    pub fn staging_key(&self, minute: Minute, shard_id: &str, first_sequence: &str) -> String {
        minute_key(&self.staging, minute, shard_id, first_sequence)
    }

    /// Where `redrive` stages quarantined records that a newer catalogue accepts:
    /// `{STAGING_PREFIX}/year=…/minute=mm/{shardId}-{firstSequenceNumber}.redriven-{digest}.ndjson`.
    /// Never the name ingest gives an object: a staging object named after the same first
    /// sequence number may hold that record's valid neighbours in a KPL aggregate. The digest (of
    /// the body) makes a re-run with the same result overwrite its own object and a different
    /// result add one; compaction drops the repeated positions.
    pub fn redriven_staging_key(
        &self,
        minute: Minute,
        shard_id: &str,
        first_sequence: &str,
        digest: &str,
    ) -> String {
        minute_key(
            &self.staging,
            minute,
            shard_id,
            &format!("{first_sequence}{REDRIVEN_MARK}{digest}"),
        )
    }

    /// `{QUARANTINE_PREFIX}/year=…/minute=mm/{shardId}-{firstSequenceNumber}.ndjson`
    pub fn quarantine_key(&self, minute: Minute, shard_id: &str, first_sequence: &str) -> String {
        minute_key(&self.quarantine, minute, shard_id, first_sequence)
    }

    /// Where records that carry no sequence number (an unreadable envelope) are quarantined:
    /// `{QUARANTINE_PREFIX}/year=…/minute=mm/{shardId}-unsequenced.{digest of the body}.ndjson`,
    /// so two invocations never overwrite each other's.
    pub fn unsequenced_quarantine_key(
        &self,
        minute: Minute,
        shard_id: &str,
        body: &[u8],
    ) -> String {
        let name = format!("unsequenced.{}", content_digest(body));
        minute_key(&self.quarantine, minute, shard_id, &name)
    }

    /// Everything staged for one arrival day: `{STAGING_PREFIX}/year=YYYY/month=MM/day=DD/`.
    pub fn staging_day_prefix(&self, day: Date) -> String {
        format!("{}/{}/", self.staging, day_path(day))
    }

    /// Everything quarantined for one arrival day: `{QUARANTINE_PREFIX}/year=YYYY/month=MM/day=DD/`.
    pub fn quarantine_day_prefix(&self, day: Date) -> String {
        format!("{}/{}/", self.quarantine, day_path(day))
    }

    /// Where compaction puts the bad lines of one staging object: beside where ingest quarantines
    /// records of the same minute, named `compaction-{staging file name}` so the two never collide
    /// and a re-run overwrites its own.
    pub fn compaction_quarantine_key(&self, staging_key: &str) -> String {
        let relative = staging_key
            .strip_prefix(&self.staging)
            .map_or(staging_key, |rest| rest.trim_start_matches('/'));
        match relative.rsplit_once('/') {
            Some((dir, name)) => format!(
                "{}/{dir}/{COMPACTION_QUARANTINE_MARK}{name}",
                self.quarantine
            ),
            None => format!("{}/{COMPACTION_QUARANTINE_MARK}{relative}", self.quarantine),
        }
    }

    /// `{PROCESSED_PREFIX}/year=YYYY/month=MM/day=DD/language={value}/`
    pub fn processed_partition(&self, event_day: Date, language: &str) -> String {
        format!(
            "{}/{}/language={}/",
            self.processed,
            day_path(event_day),
            language
        )
    }

    /// The partition a processed key is in (the inverse of [`Prefixes::processed_key`]), or
    /// `None` for a key of another shape.
    pub fn parse_processed_partition(&self, key: &str) -> Option<ProcessedPartition> {
        let rest = key.strip_prefix(&self.processed)?.strip_prefix('/')?;
        let mut folders = rest.split('/');
        let mut value = |name: &str| folders.next()?.strip_prefix(name);
        let (year, month, day) = (value("year=")?, value("month=")?, value("day=")?);
        let language = value("language=")?;
        let event_day = Date::parse(&format!("{year}-{month}-{day}"))?;
        let folder = self.processed_partition(event_day, language);
        key.starts_with(&folder).then(|| ProcessedPartition {
            event_day,
            language: hive_unescape(language),
            folder,
        })
    }

    /// What compacting arrival day `day` consumed and wrote:
    /// `{PROCESSED_PREFIX}/_manifests/arrival_day=YYYY-MM-DD.json`. Folders whose names start with
    /// `_` are skipped by Athena, Hive, Spark and DuckDB's hive partitioning, so the lake's readers
    /// never see them.
    pub fn manifest_key(&self, day: Date) -> String {
        format!("{}/_manifests/arrival_day={day}.json", self.processed)
    }

    /// `{PROCESSED_PREFIX}/_lease/compact.json`: held by the one compaction that may run; hidden
    /// from the lake's readers like the manifests.
    pub fn compaction_lease_key(&self) -> String {
        format!("{}/_lease/compact.json", self.processed)
    }

    /// `…/part-{arrival day YYYYMMDD}-{NNNNN}.parquet`
    pub fn processed_key(
        &self,
        event_day: Date,
        language: &str,
        arrival_day: Date,
        part: u32,
    ) -> String {
        format!(
            "{}{}",
            self.processed_partition(event_day, language),
            part_file_name(arrival_day, part)
        )
    }
}

/// One partition of the lake: an event day and a language, as a catalogue (Glue) lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessedPartition {
    pub event_day: Date,
    /// The value readers see: unescaped; [`HIVE_DEFAULT_PARTITION`], which Hive, Athena and Spark
    /// read as NULL; or [`INVALID_LANGUAGE_PARTITION`].
    pub language: String,
    /// Its key prefix, ending in `/`.
    pub folder: String,
}

pub fn part_file_name(arrival_day: Date, part: u32) -> String {
    format!("part-{}-{part:05}.parquet", arrival_day.compact())
}

/// True when `key`'s file name is one of `arrival_day`'s parts (`part-YYYYMMDD-NNNNN.parquet`).
pub fn is_part_of_day(key: &str, arrival_day: Date) -> bool {
    part_number(key, arrival_day).is_some()
}

/// `NNNNN` of one of `arrival_day`'s part files (the inverse of [`part_file_name`]).
pub fn part_number(key: &str, arrival_day: Date) -> Option<u32> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let digits = name
        .strip_prefix(&format!("part-{}-", arrival_day.compact()))?
        .strip_suffix(".parquet")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How many part numbers each of a day's two banks holds: `00000`–`49999` and `50000`–`99999`.
pub const PART_BANK_SIZE: u32 = 50_000;

/// The first part number a new compaction of a day uses: the bank its last complete run did not
/// use, so no new file overwrites a file of the lake's current state before every new file is
/// complete. `last_run` is what that run wrote (its manifest); without one, the bank no existing
/// part file of the day is in (bank 0 when both or neither are).
pub fn first_part_of_next_run(
    arrival_day: Date,
    last_run: Option<&[String]>,
    existing: &[String],
) -> u32 {
    let bank = |keys: &[String]| -> [bool; 2] {
        let mut used = [false; 2];
        for n in keys.iter().filter_map(|k| part_number(k, arrival_day)) {
            used[(n / PART_BANK_SIZE).min(1) as usize] = true;
        }
        used
    };
    let used = match last_run {
        Some(files) if bank(files) != [false, false] => bank(files),
        _ => bank(existing),
    };
    match used {
        [true, false] => PART_BANK_SIZE,
        _ => 0,
    }
}

/// The file-name mark of [`Prefixes::compaction_quarantine_key`].
const COMPACTION_QUARANTINE_MARK: &str = "compaction-";

/// True for a quarantine object compaction wrote (bad staging lines), not ingest (records).
pub fn is_compaction_quarantine_key(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(COMPACTION_QUARANTINE_MARK))
}

const REDRIVEN_MARK: &str = ".redriven-";

/// The hex MD5 of `body`: what names an object by its content where no sequence number can
/// ([`Prefixes::redriven_staging_key`], [`Prefixes::unsequenced_quarantine_key`]).
pub fn content_digest(body: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `(shardId, firstSequenceNumber)` from a staging or quarantine key
/// `…/{shardId}-{firstSequenceNumber}.ndjson` or `….redriven-{digest}.ndjson` (the inverse of
/// [`Prefixes::staging_key`] and [`Prefixes::redriven_staging_key`]); `None` for another shape.
pub fn parse_minute_object_name(key: &str) -> Option<(&str, &str)> {
    let name = key.rsplit('/').next()?;
    let mut stem = name.strip_suffix(".ndjson")?;
    if let Some((rest, digest)) = stem.rsplit_once(REDRIVEN_MARK) {
        if !digest.is_empty() && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            stem = rest;
        }
    }
    let (shard, sequence) = stem.rsplit_once('-')?;
    let plausible =
        !shard.is_empty() && !sequence.is_empty() && sequence.bytes().all(|b| b.is_ascii_digit());
    plausible.then_some((shard, sequence))
}

fn day_path(day: Date) -> String {
    format!(
        "year={:04}/month={:02}/day={:02}",
        day.year, day.month, day.day
    )
}

fn minute_key(prefix: &str, minute: Minute, shard_id: &str, first_sequence: &str) -> String {
    format!(
        "{prefix}/{}/{}-{}.ndjson",
        minute.path(),
        hive_escape(shard_id),
        hive_escape(first_sequence)
    )
}

/// Where a line came from in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub shard_id: &'a str,
    pub sequence_number: &'a str,
    /// Index inside a KPL aggregate; `None` for a plain record.
    pub sub_sequence_number: Option<u32>,
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Strings that need no escaping (ids, timestamps, names) are the norm; skip serde for them.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }
}

fn push_source_fields(out: &mut Vec<u8>, source: &Source) {
    out.extend_from_slice(b"\"shard_id\":");
    push_json_str(out, source.shard_id);
    out.extend_from_slice(b",\"sequence_number\":");
    push_json_str(out, source.sequence_number);
    if let Some(sub) = source.sub_sequence_number {
        let _ = std::io::Write::write_fmt(out, format_args!(",\"sub_sequence_number\":{sub}"));
    }
}

/// Appends valid JSON text with its line ends made spaces, so an event an SDK indented (or sent with
/// CRLF) is still one NDJSON line. Exact: JSON strings cannot hold a raw CR or LF, so every one is
/// whitespace between tokens, and UTF-8 never uses those bytes inside a character.
fn push_on_one_line(out: &mut Vec<u8>, json: &str) {
    let start = out.len();
    out.extend_from_slice(json.as_bytes());
    for b in &mut out[start..] {
        if matches!(*b, b'\n' | b'\r') {
            *b = b' ';
        }
    }
}

/// Appends one staging NDJSON line (with its newline).
pub fn push_staging_line(out: &mut Vec<u8>, event: &ValidEvent, received_at: i64, source: &Source) {
    out.extend_from_slice(b"{\"event_uuid\":");
    push_json_str(out, &event.event_uuid);
    out.extend_from_slice(b",\"event_name\":");
    push_json_str(out, event.event_name);
    out.extend_from_slice(b",\"event_type\":");
    push_json_str(out, event.event_type);
    out.extend_from_slice(b",\"event_subtype\":");
    push_json_str(out, event.event_subtype);
    out.extend_from_slice(b",\"created_at\":\"");
    time::push_rfc3339_micros(out, event.created_at);
    out.extend_from_slice(b"\",\"received_at\":\"");
    time::push_rfc3339_micros(out, received_at);
    out.extend_from_slice(b"\",\"event_specifics\":");
    push_on_one_line(out, event.specifics.map_or("{}", RawValue::get));
    out.extend_from_slice(b",\"source\":{");
    push_source_fields(out, source);
    out.extend_from_slice(b"}}\n");
}

/// Appends one quarantine NDJSON line (with its newline), carrying the raw bytes in base64.
pub fn push_quarantine_line(
    out: &mut Vec<u8>,
    reason: Reason,
    detail: &str,
    source: &Source,
    received_at: i64,
    data: &[u8],
) {
    out.extend_from_slice(b"{\"reason\":");
    push_json_str(out, reason.code());
    out.extend_from_slice(b",\"detail\":");
    push_json_str(out, detail);
    out.push(b',');
    push_source_fields(out, source);
    out.extend_from_slice(b",\"received_at\":\"");
    time::push_rfc3339_micros(out, received_at);
    out.extend_from_slice(b"\",\"data_base64\":\"");
    let start = out.len();
    let encoded_len = base64::encoded_len(data.len(), true).unwrap_or(0);
    out.resize(start + encoded_len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .expect("buffer sized by encoded_len");
    out.truncate(start + written);
    out.extend_from_slice(b"\"}\n");
}

/// A quarantine line read back (the inverse of [`push_quarantine_line`]): what `redrive` needs to
/// send the record through again with the identity it arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineLine {
    pub reason: String,
    pub detail: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub sub_sequence_number: Option<u32>,
    /// Epoch microseconds.
    pub received_at: i64,
    pub data: Vec<u8>,
}

/// Reads one quarantine line; `Err` says what is wrong with it.
pub fn parse_quarantine_line(line: &str) -> Result<QuarantineLine, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        reason: String,
        #[serde(default)]
        detail: String,
        shard_id: String,
        sequence_number: String,
        sub_sequence_number: Option<u32>,
        received_at: String,
        data_base64: String,
    }
    let raw: Raw = serde_json::from_str(line).map_err(|e| format!("not a quarantine line: {e}"))?;
    let received_at = time::parse_rfc3339(&raw.received_at)
        .map_err(|e| format!("received_at `{}`: {e:?}", raw.received_at))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(&raw.data_base64)
        .map_err(|e| format!("data_base64: {e}"))?;
    Ok(QuarantineLine {
        reason: raw.reason,
        detail: raw.detail,
        shard_id: raw.shard_id,
        sequence_number: raw.sequence_number,
        sub_sequence_number: raw.sub_sequence_number,
        received_at,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;

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
    fn quarantine_lines_read_back_as_written() {
        let received_at = time::parse_rfc3339("2024-04-11T14:10:06.012345Z").unwrap();
        for (sub, data) in [
            (None, &b"{\"event_name\":\"x:y\"}\n\xff"[..]),
            (Some(7), &b""[..]),
        ] {
            let source = Source {
                shard_id: "shardId-000000000003",
                sequence_number: "4954",
                sub_sequence_number: sub,
            };
            let mut out = Vec::new();
            push_quarantine_line(
                &mut out,
                Reason::UnknownEvent,
                "no \"x:y\"",
                &source,
                received_at,
                data,
            );
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(text.matches('\n').count(), 1);
            let line = parse_quarantine_line(text.trim_end()).unwrap();
            assert_eq!(
                line,
                QuarantineLine {
                    reason: "unknown_event".into(),
                    detail: "no \"x:y\"".into(),
                    shard_id: source.shard_id.into(),
                    sequence_number: source.sequence_number.into(),
                    sub_sequence_number: sub,
                    received_at,
                    data: data.to_vec(),
                }
            );
        }
        assert!(parse_quarantine_line("{\"reason\":\"x\"}").is_err());
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
        assert_eq!(parse_minute_object_name("staging/x/notes.txt"), None);
        assert_eq!(
            parse_minute_object_name("staging/x/shardId-1-abc.ndjson"),
            None
        );
    }

    #[test]
    fn staging_line_has_every_contract_field() {
        let catalogue = Catalogue::embedded();
        let data = br#"{"event_uuid":"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573","created_at":1712844605.9512355,"event_name":"game:resumed","event_specifics":{"score":46, "x":"y"}}"#;
        let received = 1_712_844_606_012_000;
        let event = crate::validate::validate(data, received, &catalogue).unwrap();
        let mut out = Vec::new();
        let source = Source {
            shard_id: "shardId-000000000000",
            sequence_number: "4954",
            sub_sequence_number: Some(2),
        };
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
                "event_specifics": {"score": 46, "x": "y"},
                "source": {"shard_id": "shardId-000000000000", "sequence_number": "4954", "sub_sequence_number": 2}
            })
        );
        // Specifics are kept byte for byte, spacing included.
        assert!(String::from_utf8_lossy(&out).contains(r#"{"score":46, "x":"y"}"#));
    }

    #[test]
    fn an_event_spanning_lines_is_one_staging_line() {
        let catalogue = Catalogue::embedded();
        let data = b"{\r\n  \"event_uuid\": \"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573\",\r\n  \"created_at\": 1712844605,\n  \"event_name\": \"game:resumed\",\n  \"event_specifics\": {\r\n    \"score\": 46,\n    \"note\": \"a\\nb\"\r\n  }\r\n}\r\n";
        let event = crate::validate::validate(data, 1_712_844_606_012_000, &catalogue).unwrap();
        let mut out = Vec::new();
        let source = Source {
            shard_id: "s",
            sequence_number: "1",
            sub_sequence_number: None,
        };
        push_staging_line(&mut out, &event, 1_712_844_606_012_000, &source);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!out.contains(&b'\r'));
        let text = std::str::from_utf8(&out[..out.len() - 1]).unwrap();
        let line = crate::lake::decode_staging_line(text).unwrap();
        let specifics: serde_json::Value =
            serde_json::from_str(line.line.event_specifics.unwrap().get()).unwrap();
        assert_eq!(specifics, serde_json::json!({"score": 46, "note": "a\nb"}));
    }

    #[test]
    fn quarantine_line_carries_the_raw_bytes() {
        let mut out = Vec::new();
        let source = Source {
            shard_id: "s",
            sequence_number: "1",
            sub_sequence_number: None,
        };
        push_quarantine_line(
            &mut out,
            Reason::NotUtf8,
            "bad \"bytes\"",
            &source,
            0,
            b"\xff\x00a",
        );
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["reason"], "not_utf8");
        assert_eq!(line["detail"], "bad \"bytes\"");
        assert_eq!(line["data_base64"], "/wBh");
        assert_eq!(line["received_at"], "1970-01-01T00:00:00.000000Z");
        assert!(line.get("sub_sequence_number").is_none());
    }
}
