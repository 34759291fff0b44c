//! Timestamps as microseconds since the Unix epoch (UTC), the lake's one time representation.
//!
//! `created_at` arrives as epoch seconds (integer or fraction) or an RFC 3339 string. Epoch seconds are
//! read from their decimal text, never through `f64`, so `1712844605.9512355` becomes exactly
//! `…05.951235Z` (truncated to the microsecond), whatever float rounding would have said.

use std::fmt::Write as _;

use crate::validate::shorten;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// 2000-01-01T00:00:00Z: nothing the apps send can be older.
pub const EARLIEST_CREATED_AT: i64 = 946_684_800 * MICROS_PER_SECOND;

/// Greatest epoch-micros value accepted at all (9999-12-31T23:59:59.999999Z).
const LATEST_REPRESENTABLE: i64 = 253_402_300_799_999_999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampError {
    /// Not a number or RFC 3339 string.
    Invalid(String),
    /// Well-formed, but outside years 0001–9999 (or negative epoch seconds).
    OutOfRange(String),
}

/// Parses the raw JSON text of `created_at` into epoch microseconds.
pub fn parse_created_at(raw_json: &str) -> Result<i64, TimestampError> {
    let text = raw_json.trim();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s = crate::validate::json_str(text)
                .ok_or_else(|| TimestampError::Invalid(format!("bad string {text}")))?;
            parse_rfc3339(&s)
        }
        Some(b'-' | b'0'..=b'9') => parse_epoch_seconds(text),
        _ => Err(TimestampError::Invalid(format!(
            "expected epoch seconds or an RFC 3339 string, got {}",
            shorten(text)
        ))),
    }
}

pub fn parse_rfc3339(s: &str) -> Result<i64, TimestampError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| TimestampError::Invalid(format!("`{}` is not RFC 3339: {e}", shorten(s))))?;
    let secs = parsed.timestamp();
    let micros = i64::from(parsed.timestamp_subsec_nanos() / 1_000);
    secs.checked_mul(MICROS_PER_SECOND)
        .and_then(|m| m.checked_add(micros))
        .filter(|m| (0..=LATEST_REPRESENTABLE).contains(m))
        .ok_or_else(|| TimestampError::OutOfRange(format!("`{s}` is outside 1970–9999")))
}

/// Exact decimal → micros, truncating below the microsecond (`created_at`: what the app said, never
/// moved forward). Accepts JSON number syntax.
pub fn parse_epoch_seconds(text: &str) -> Result<i64, TimestampError> {
    epoch_seconds_to_micros(text, Rounding::Truncate)
}

/// Exact decimal → micros, rounded half up to the microsecond: Kinesis's
/// `approximateArrivalTimestamp` (`1795219110.75` is `….750000`; an emulator's
/// `….9826107` is `….982611`), read from its text, whatever the number of decimals.
pub fn parse_arrival_seconds(text: &str) -> Result<i64, TimestampError> {
    epoch_seconds_to_micros(text, Rounding::HalfUp)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rounding {
    Truncate,
    HalfUp,
}

fn epoch_seconds_to_micros(text: &str, rounding: Rounding) -> Result<i64, TimestampError> {
    if let Some(micros) = plain_seconds_to_micros(text.as_bytes(), rounding) {
        return Ok(micros);
    }
    exact_seconds_to_micros(text, rounding)
}

/// The usual shape, `1712844605.9512355` (at most 12 integer digits, no sign or exponent), in
/// integer arithmetic without allocating; `None` sends anything else to the exact path, which
/// gives the same answer for this shape (`plain_seconds_agree_with_the_exact_path`).
fn plain_seconds_to_micros(bytes: &[u8], rounding: Rounding) -> Option<i64> {
    let (int, fraction) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], Some(&bytes[dot + 1..])),
        None => (bytes, None),
    };
    if int.is_empty() || int.len() > 12 {
        return None;
    }
    let mut micros = decimal_digits(int)? * MICROS_PER_SECOND;
    if let Some(fraction) = fraction {
        let (kept, beyond) = fraction.split_at(fraction.len().min(6));
        if kept.is_empty() || !all_decimal_digits(beyond) {
            return None;
        }
        micros += decimal_digits(kept)? * 10i64.pow(6 - kept.len() as u32);
        if rounding == Rounding::HalfUp && beyond.first().is_some_and(|&d| d >= b'5') {
            micros += 1;
        }
    }
    (micros <= LATEST_REPRESENTABLE).then_some(micros)
}

/// The value of a run of at most 18 decimal digits, `None` when another byte is among them: eight
/// digits at a time in one word (the int part of epoch seconds is ten), the rest one by one.
fn decimal_digits(run: &[u8]) -> Option<i64> {
    debug_assert!(run.len() <= 18);
    let (mut value, mut rest) = (0i64, run);
    while let Some((eight, after)) = rest.split_first_chunk::<8>() {
        let word = u64::from_le_bytes(*eight);
        if !eight_decimal_digits(word) {
            return None;
        }
        value = value * 100_000_000 + eight_digits_value(word);
        rest = after;
    }
    for &d in rest {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(value)
}

fn all_decimal_digits(run: &[u8]) -> bool {
    run.iter().fold(true, |all, b| all & b.is_ascii_digit())
}

/// Whether all eight bytes of `word` are `0`–`9`: each is 0x3_ and stays so with 6 added.
fn eight_decimal_digits(word: u64) -> bool {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    word & HIGH_NIBBLES == ZEROS && word.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES == ZEROS
}

/// Eight decimal digits' value (first byte most significant), combined pairwise in three steps.
fn eight_digits_value(word: u64) -> i64 {
    let x = word - 0x3030_3030_3030_3030;
    let x = (x * 10 + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x * 100 + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    ((x * 10_000 + (x >> 32)) & 0xFFFF_FFFF) as i64
}

fn exact_seconds_to_micros(text: &str, rounding: Rounding) -> Result<i64, TimestampError> {
    let invalid = || TimestampError::Invalid(format!("`{}` is not a number", shorten(text)));
    let out_of_range = || TimestampError::OutOfRange(format!("{} epoch seconds", shorten(text)));
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 {
        return Err(invalid());
    }
    let mut digits: Vec<u8> = rest[..int_len].to_vec();
    let mut pos = int_len;
    let mut frac_len = 0i64;
    if rest.get(pos) == Some(&b'.') {
        let frac = rest[pos + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if frac == 0 {
            return Err(invalid());
        }
        digits.extend_from_slice(&rest[pos + 1..pos + 1 + frac]);
        frac_len = frac as i64;
        pos += 1 + frac;
    }
    let mut exponent = 0i64;
    if matches!(rest.get(pos), Some(b'e' | b'E')) {
        let exp_text = std::str::from_utf8(&rest[pos + 1..]).map_err(|_| invalid())?;
        exponent = exp_text.parse::<i64>().map_err(|_| invalid())?;
        if exponent.abs() > 1_000 {
            return Err(out_of_range());
        }
        pos = rest.len();
    }
    if pos != rest.len() {
        return Err(invalid());
    }
    let all_zero = digits.iter().all(|&d| d == b'0');
    if negative && !all_zero {
        return Err(out_of_range());
    }
    // value = digits × 10^(exponent − frac_len); micros = value × 10^6.
    let shift = exponent - frac_len + 6;
    let (kept, first_dropped) = if shift < 0 {
        let drop = usize::try_from(-shift).unwrap_or(usize::MAX);
        let keep = digits.len().saturating_sub(drop);
        // The first dropped digit is at `keep` when it exists; with fewer digits than dropped
        // places the value is below half a microsecond.
        let first = (drop <= digits.len()).then(|| digits[keep]);
        (&digits[..keep], first)
    } else {
        (&digits[..], None)
    };
    let mut micros: i128 = 0;
    for &d in kept {
        micros = micros
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(d - b'0')))
            .filter(|m| *m <= i128::from(LATEST_REPRESENTABLE))
            .ok_or_else(out_of_range)?;
    }
    for _ in 0..shift.max(0) {
        if micros == 0 {
            break;
        }
        micros = micros
            .checked_mul(10)
            .filter(|m| *m <= i128::from(LATEST_REPRESENTABLE))
            .ok_or_else(out_of_range)?;
    }
    if rounding == Rounding::HalfUp && first_dropped.is_some_and(|d| d >= b'5') {
        micros += 1;
        if micros > i128::from(LATEST_REPRESENTABLE) {
            return Err(out_of_range());
        }
    }
    Ok(micros as i64)
}

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    pub fn from_days(days_since_epoch: i64) -> Date {
        // Howard Hinnant's civil_from_days.
        let z = days_since_epoch + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn of_micros(micros: i64) -> Date {
        Date::from_days(micros.div_euclid(MICROS_PER_DAY))
    }

    pub fn start_micros(self) -> i64 {
        self.to_days() * MICROS_PER_DAY
    }

    pub fn succ(self) -> Date {
        Date::from_days(self.to_days() + 1)
    }

    pub fn pred(self) -> Date {
        Date::from_days(self.to_days() - 1)
    }

    /// Parses `YYYY-MM-DD`, rejecting impossible dates.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year: i32 = s[0..4].parse().ok()?;
        let month: u32 = s[5..7].parse().ok()?;
        let day: u32 = s[8..10].parse().ok()?;
        let date = Date { year, month, day };
        (month >= 1 && Date::from_days(date.to_days()) == date).then_some(date)
    }

    /// `YYYYMMDD`, as used in Parquet part names.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The parts of a UTC instant that keys and lines need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    pub date: Date,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micro: u32,
}

impl Instant {
    pub fn of_micros(micros: i64) -> Instant {
        let date = Date::of_micros(micros);
        let in_day = micros.rem_euclid(MICROS_PER_DAY);
        let secs = (in_day / MICROS_PER_SECOND) as u32;
        Instant {
            date,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            micro: (in_day % MICROS_PER_SECOND) as u32,
        }
    }
}

/// The system clock in epoch microseconds (0 if it is before 1970).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `2024-04-11T14:10:05.951235Z`: RFC 3339, UTC, `Z`, microseconds.
pub fn write_rfc3339_micros(out: &mut String, micros: i64) {
    let t = Instant::of_micros(micros);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.date.year, t.date.month, t.date.day, t.hour, t.minute, t.second, t.micro
    );
}

pub fn format_rfc3339_micros(micros: i64) -> String {
    let mut s = String::with_capacity(27);
    write_rfc3339_micros(&mut s, micros);
    s
}

/// Fast path for the hot loops: appends the same 27 bytes as [`write_rfc3339_micros`], without `fmt`.
pub fn push_rfc3339_micros(out: &mut Vec<u8>, micros: i64) {
    // "00" to "99": two digits a lookup, where a division a digit was most of the cost.
    const PAIRS: [u8; 200] = {
        let mut pairs = [0; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    // Filled in place, then appended at once; every value given is below 100.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, value: u32| {
        let from = (value as usize % 100) * 2;
        text[at..at + 2].copy_from_slice(&PAIRS[from..from + 2]);
    };
    let t = Instant::of_micros(micros);
    let year = t.date.year.clamp(0, 9999) as u32;
    put(0, year / 100);
    put(2, year % 100);
    put(5, t.date.month);
    put(8, t.date.day);
    put(11, t.hour);
    put(14, t.minute);
    put(17, t.second);
    put(20, t.micro / 10_000);
    put(22, t.micro / 100 % 100);
    put(24, t.micro % 100);
    out.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_fraction_is_truncated_exactly_to_the_microsecond() {
        let micros = parse_created_at("1712844605.9512355").unwrap();
        assert_eq!(format_rfc3339_micros(micros), "2024-04-11T14:10:05.951235Z");
    }

    #[test]
    fn arrival_time_is_exact_whatever_the_number_of_decimals() {
        // Kinesis sends milliseconds, and a JSON float drops trailing zeros: `.75` is 750 ms, never
        // 75 ms (what aws_lambda_events 1.2 read). Emulators may send microseconds or more.
        let cases = [
            ("1712844606.75", "2024-04-11T14:10:06.750000Z"),
            ("1712844606.5", "2024-04-11T14:10:06.500000Z"),
            ("1712844606.12", "2024-04-11T14:10:06.120000Z"),
            ("1712844606.987", "2024-04-11T14:10:06.987000Z"),
            ("1712844606.9826107", "2024-04-11T14:10:06.982611Z"),
            ("1712844606.9826104", "2024-04-11T14:10:06.982610Z"),
            ("1712844606.9999995", "2024-04-11T14:10:07.000000Z"),
            ("1712844606", "2024-04-11T14:10:06.000000Z"),
            ("1.71284460675e9", "2024-04-11T14:10:06.750000Z"),
            ("1712844606.00000049", "2024-04-11T14:10:06.000000Z"),
        ];
        for (text, expected) in cases {
            let micros = parse_arrival_seconds(text).unwrap();
            assert_eq!(format_rfc3339_micros(micros), expected, "{text}");
        }
        // Below half a microsecond in total: 0.
        assert_eq!(parse_arrival_seconds("0.0000004").unwrap(), 0);
        assert_eq!(parse_arrival_seconds("0.0000005").unwrap(), 1);
        assert!(parse_arrival_seconds("1712844606.").is_err());
        assert!(parse_arrival_seconds("\"1712844606\"").is_err());
    }

    #[test]
    fn epoch_forms() {
        assert_eq!(
            parse_created_at("1712844605").unwrap(),
            1_712_844_605_000_000
        );
        assert_eq!(
            parse_created_at("1712844605.5").unwrap(),
            1_712_844_605_500_000
        );
        assert_eq!(
            parse_created_at("1.7128446055e9").unwrap(),
            1_712_844_605_500_000
        );
        assert_eq!(
            parse_created_at("17128446055E-1").unwrap(),
            1_712_844_605_500_000
        );
        assert_eq!(parse_created_at("0").unwrap(), 0);
        assert!(matches!(
            parse_created_at("-5"),
            Err(TimestampError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_created_at("1e300"),
            Err(TimestampError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_created_at("99999999999999999999999"),
            Err(TimestampError::OutOfRange(_))
        ));
        for bad in ["true", "null", "{}", "[1]", "1.", "1e", "--1"] {
            assert!(
                matches!(parse_created_at(bad), Err(TimestampError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc3339_forms() {
        let utc = parse_created_at("\"2024-04-11T14:10:05.951235Z\"").unwrap();
        assert_eq!(format_rfc3339_micros(utc), "2024-04-11T14:10:05.951235Z");
        let offset = parse_created_at("\"2024-04-11T16:10:05.9512359+02:00\"").unwrap();
        assert_eq!(offset, utc);
        let whole = parse_created_at("\"2024-04-11T14:10:05Z\"").unwrap();
        assert_eq!(format_rfc3339_micros(whole), "2024-04-11T14:10:05.000000Z");
        for bad in [
            "\"yesterday\"",
            "\"2024-04-11\"",
            "\"1712844605\"",
            "\"2024-13-01T00:00:00Z\"",
        ] {
            assert!(
                matches!(parse_created_at(bad), Err(TimestampError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn dates_round_trip_through_days() {
        for days in [-1, 0, 1, 10_957, 19_824, 2_932_896] {
            assert_eq!(Date::from_days(days).to_days(), days);
        }
        assert_eq!(
            Date::of_micros(EARLIEST_CREATED_AT).to_string(),
            "2000-01-01"
        );
        assert_eq!(
            Date::parse("2024-02-29").unwrap().succ().to_string(),
            "2024-03-01"
        );
        assert_eq!(
            Date::parse("2024-01-01").unwrap().pred().to_string(),
            "2023-12-31"
        );
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Date::parse("2023-2-28"), None);
        assert_eq!(Date::parse("2023-02-28").unwrap().compact(), "20230228");
    }

    #[test]
    fn fast_formatter_matches_the_reference() {
        for micros in [
            0,
            1_712_844_605_951_235,
            946_684_799_999_999,
            253_402_300_799_999_999,
        ]
        .into_iter()
        // Every digit position through its values: a stride prime to each unit, over 10,000 years.
        .chain(
            (0..20_000)
                .map(|i: i128| (i * 12_670_115_039_999_937 % 253_402_300_800_000_000) as i64),
        ) {
            let mut fast = Vec::new();
            push_rfc3339_micros(&mut fast, micros);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                format_rfc3339_micros(micros)
            );
        }
    }

    /// The fast path answers exactly as the exact path on every text it takes, and declines the
    /// rest (signs, exponents, a bare dot, too many digits, a value past year 9999).
    #[test]
    fn plain_seconds_agree_with_the_exact_path() {
        let texts = [
            "0",
            "1",
            "1712844605",
            "1712844605.9",
            "1712844605.95",
            "1712844605.951235",
            "1712844605.9512355",
            "1712844605.9512345",
            "1795219110.75",
            "1795219110.9999995",
            "1795219110.99999949",
            "0001712844605.5",
            "253402300799.999999",
            "253402300799.9999995",
            "999999999999",
            "999999999999.999",
            "1712844605.",
            "1712844605.x",
            "1712844605e3",
            "-1",
            "-0",
            "1.5e2",
            "12.34.5",
            "1712844605.0000005",
            "1234567890123",
            "",
            ".5",
            "1712844605.12345678901234567890",
        ];
        for text in texts {
            for rounding in [Rounding::Truncate, Rounding::HalfUp] {
                let exact = exact_seconds_to_micros(text, rounding).ok();
                if let Some(fast) = plain_seconds_to_micros(text.as_bytes(), rounding) {
                    assert_eq!(Some(fast), exact, "{text}");
                }
                assert_eq!(
                    epoch_seconds_to_micros(text, rounding).ok(),
                    exact,
                    "{text}"
                );
            }
        }
        // Every byte value at every place of the usual shapes (the word-at-a-time digit check).
        for base in ["1712844605.9512355", "1712844605", "123456789012.123"] {
            for at in 0..base.len() {
                for b in 0..=255u8 {
                    let mut bytes = base.as_bytes().to_vec();
                    bytes[at] = b;
                    let Ok(text) = std::str::from_utf8(&bytes) else {
                        assert_eq!(plain_seconds_to_micros(&bytes, Rounding::HalfUp), None);
                        continue;
                    };
                    for rounding in [Rounding::Truncate, Rounding::HalfUp] {
                        let exact = exact_seconds_to_micros(text, rounding).ok();
                        let fast = plain_seconds_to_micros(text.as_bytes(), rounding);
                        assert!(fast.is_none() || fast == exact, "{text:?}");
                        assert_eq!(
                            epoch_seconds_to_micros(text, rounding).ok(),
                            exact,
                            "{text:?}"
                        );
                    }
                }
            }
        }
        assert!(plain_seconds_to_micros(b"1712844605.9512355", Rounding::HalfUp).is_some());
        assert!(plain_seconds_to_micros(b"1712844605", Rounding::Truncate).is_some());
    }
}
