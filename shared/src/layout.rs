//! Where things live in the data-lake bucket: every S3 key, built and read back (contract: Staging,
//! Quarantine, Processed).

use std::fmt::Write as _;

use crate::time::{self, Date, Instant};

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

/// A staging or quarantine object's key read back (the inverse of [`Prefixes::staging_key`],
/// [`Prefixes::redriven_staging_key`] and [`Prefixes::quarantine_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteKey<'k> {
    /// The arrival minute its folders name.
    pub minute: Minute,
    pub shard_id: &'k str,
    pub first_sequence: &'k str,
}

impl<'k> MinuteKey<'k> {
    /// `…/year=YYYY/month=MM/day=DD/hour=HH/minute=mm/{shardId}-{firstSequenceNumber}.ndjson` (or
    /// `….redriven-{digest}.ndjson`); `None` for a key of another shape.
    pub fn parse(key: &'k str) -> Option<MinuteKey<'k>> {
        let mut segments = key.rsplit('/');
        let (shard_id, first_sequence) = parse_minute_object_name(segments.next()?)?;
        let mut value = |name: &str| -> Option<u32> {
            let digits = segments.next()?.strip_prefix(name)?;
            (digits.len() == 2 || (name == "year=" && digits.len() == 4))
                .then(|| digits.parse().ok())
                .flatten()
        };
        let (minute, hour, day, month, year) = (
            value("minute=")?,
            value("hour=")?,
            value("day=")?,
            value("month=")?,
            value("year=")?,
        );
        let date = Date::parse(&format!("{year:04}-{month:02}-{day:02}"))?;
        if hour > 23 || minute > 59 {
            return None;
        }
        let micros =
            date.start_micros() + i64::from(hour * 60 + minute) * 60 * time::MICROS_PER_SECOND;
        Some(MinuteKey {
            minute: Minute::of_micros(micros),
            shard_id,
            first_sequence,
        })
    }

    /// The arrival day the key's folders name.
    pub fn arrival_day(&self) -> Date {
        Date::of_micros(self.minute.0 * 60 * time::MICROS_PER_SECOND)
    }

    /// Where the object's lines start in their shard, for [`crate::position::RedeliveryFilter`].
    pub fn object_start(&self) -> crate::position::ObjectStart<'k> {
        crate::position::ObjectStart {
            shard_id: self.shard_id,
            first_sequence: self.first_sequence,
        }
    }
}

/// `(shardId, firstSequenceNumber)` from a staging or quarantine object's file name
/// `{shardId}-{firstSequenceNumber}.ndjson` or `….redriven-{digest}.ndjson` (a whole key is read
/// by its last segment); `None` for another shape.
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

#[cfg(test)]
mod tests;
