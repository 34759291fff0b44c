//! A borrowed, validating JSON reader for the hot paths (the Lambda payload, each record): one walk
//! over the text, strings scanned sixteen or eight bytes at a time (`special_byte`), nothing allocated.
//!
//! It reads a strict subset of JSON and says `None` to anything else: keys with escapes, `\u`
//! escapes of surrogates, nesting deeper than [`MAX_DEPTH`], and every error. A caller that gets
//! `None` falls back to serde_json, which then gives the answer (and the error message) it always
//! gave; so on what this reader accepts it must agree with serde_json exactly, which
//! `tests::agrees_with_serde_json` holds it to.

/// serde_json refuses nesting deeper than 128; this reader leaves anything near that to it.
pub const MAX_DEPTH: usize = 100;

pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// Where the first byte that ends a string's plain run is: `"`, `\\` or a control character
/// (below 0x20). On x86_64, sixteen bytes at a time with SSE2 (part of its baseline, so no
/// run-time detection); elsewhere eight at a time (SWAR). Strings are mostly short ids, keys and
/// timestamps, for which `memchr`'s set-up costs more than the search.
#[inline]
pub(crate) fn special_byte(text: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        sse2_special_byte(text)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        swar_special_byte(text)
    }
}

/// [`special_byte`] for a whole value's text (a name, an id), often shorter than 16 bytes: what
/// the walk's search does byte by byte for the last few bytes of a payload, this does in one block.
#[inline]
pub(crate) fn special_byte_of_value(text: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if text.len() < 16 {
        return sse2_special_byte_short(text);
    }
    special_byte(text)
}

/// The index in `bytes` of the first special byte at or after `from` (the walk's entry).
#[inline(always)]
fn special_byte_from(bytes: &[u8], from: usize) -> Option<usize> {
    special_byte(bytes.get(from..)?).map(|at| from + at)
}

/// Bit i set where byte i of the 16 at `bytes` is special. Always inlined: called a step from
/// the walk's loop, it is the loop.
///
/// SAFETY: 16 bytes must be readable at `bytes` (SSE2 is in every x86_64 CPU).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sse2_specials(bytes: *const u8) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let bytes = _mm_loadu_si128(bytes.cast());
    let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
    // min(b, 0x1F) == b exactly where b <= 0x1F (unsigned).
    let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1F)), bytes);
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
}

/// A text shorter than 16 bytes, copied into a block padded with plain spaces. Out of line: it is
/// a copy of variable length, and inlined into the walk's search it slowed every string.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn sse2_special_byte_short(text: &[u8]) -> Option<usize> {
    let mut block = [b' '; 16];
    block[..text.len()].copy_from_slice(text);
    // SAFETY: the block is 16 bytes.
    let mask = unsafe { sse2_specials(block.as_ptr()) };
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn sse2_special_byte(text: &[u8]) -> Option<usize> {
    // Bit i set where byte `at + i` is special.
    // SAFETY: callers load only 16 bytes inside `text`.
    let specials_at = |at: usize| unsafe { sse2_specials(text.as_ptr().add(at)) };
    if text.len() < 16 {
        return text
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
    }
    // Most strings end inside their first block: it is searched before the loop's set-up.
    let first = specials_at(0);
    if first != 0 {
        return Some(first.trailing_zeros() as usize);
    }
    let mut at = 16;
    while at + 16 <= text.len() {
        let mask = specials_at(at);
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
    }
    // The last 16 bytes, overlapping what was searched: its bits below `at` are dropped.
    let last = text.len() - 16;
    let mask = specials_at(last) >> (at - last);
    (mask != 0).then(|| at + mask.trailing_zeros() as usize)
}

/// [`special_byte`] eight bytes at a time, with `memchr` past the first 32 (base64 data, long
/// texts) and one vectorised pass over what it skipped for control characters.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn swar_special_byte(text: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const SHORT_WORDS: usize = 4;
    let mut chunks = text.chunks_exact(8);
    for (index, chunk) in chunks.by_ref().take(SHORT_WORDS).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte's high bit is set where it is `"`, `\\` or below 0x20. Borrows can also set bits
        // above a true hit, never below one, so the lowest set bit is exact.
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let hits = hits & HIGHS;
        if hits != 0 {
            return Some(index * 8 + hits.trailing_zeros() as usize / 8);
        }
    }
    let done = (text.len() / 8).min(SHORT_WORDS) * 8;
    let rest = &text[done..];
    if rest.len() < 8 {
        let at = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        return Some(done + at);
    }
    let end = memchr::memchr2(b'"', b'\\', rest);
    let skipped = &rest[..end.unwrap_or(rest.len())];
    // A fold, not `any`: without the early exit the compiler vectorises it.
    if skipped
        .iter()
        .fold(false, |control, &b| control | (b < 0x20))
    {
        return skipped.iter().position(|&b| b < 0x20).map(|at| done + at);
    }
    end.map(|at| done + at)
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn skip_ws(&mut self) {
        let bytes = self.bytes();
        while self.pos < bytes.len() && is_ws(bytes[self.pos]) {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        // Compact JSON has no whitespace between tokens: every byte above the space is not any,
        // and one compare says so (the walk peeks a few times a token).
        match self.bytes().get(self.pos) {
            Some(&b) if b > b' ' => Some(b),
            _ => {
                self.skip_ws();
                self.bytes().get(self.pos).copied()
            }
        }
    }

    #[inline]
    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// Only whitespace is left.
    pub fn end(mut self) -> Option<()> {
        self.skip_ws();
        (self.pos == self.text.len()).then_some(())
    }

    /// The text of a string value without its quotes, when it holds no escape.
    pub fn plain_string(&mut self) -> Option<&'a str> {
        let (raw, escaped) = self.string()?;
        // SAFETY: `raw` starts and ends with ASCII quotes, so both cuts are char boundaries.
        (!escaped).then(|| unsafe { raw.get_unchecked(1..raw.len() - 1) })
    }

    /// Reads any value: `Some(text)` when it is a string without escapes (its text without quotes),
    /// `None` for anything else. The outer `None` is an error, as everywhere.
    pub fn plain_string_or_other(&mut self) -> Option<Option<&'a str>> {
        if self.peek()? != b'"' {
            return self.value().map(|_| None);
        }
        let (raw, escaped) = self.string()?;
        // SAFETY: as in `plain_string`.
        Some((!escaped).then(|| unsafe { raw.get_unchecked(1..raw.len() - 1) }))
    }

    /// The text of a string value up to its next `"`, *unchecked*: an escape or a control
    /// character is left in it, so only a caller whose own check refuses `\\` and every byte below
    /// 0x20 may take it (base64 data: `memchr` finds the end, and the decoder checks the bytes).
    /// On `None`, or when that check fails, [`Scanner::rewind`] to the [`Scanner::position`]
    /// taken before reads the value again the careful way.
    pub fn unchecked_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let end = start + memchr::memchr(b'"', &self.bytes()[start..])?;
        self.pos = end + 1;
        Some(&self.text[start..end])
    }

    /// Back to `position`, taken by [`Scanner::position`] at the same depth.
    pub fn rewind(&mut self, position: usize) {
        self.pos = position;
    }

    /// A string value (quotes included) and whether it holds escapes. The plain string, by far
    /// the most common, is inlined; escapes are read out of line.
    #[inline]
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        // Mostly the quote is next (the writers add no whitespace): the skip only when it is not.
        if bytes.get(self.pos) != Some(&b'"') {
            self.skip_ws();
            if bytes.get(self.pos) != Some(&b'"') {
                return None;
            }
        }
        let start = self.pos;
        let at = special_byte_from(bytes, start + 1)?;
        self.pos = at;
        if bytes[at] != b'"' {
            return self.string_with_escapes(start);
        }
        self.pos = at + 1;
        // SAFETY: `start` and `at` hold ASCII quotes, so `start` and `at + 1` are char boundaries.
        Some((unsafe { self.text.get_unchecked(start..at + 1) }, false))
    }

    /// The rest of a string from its first `\\` (or control character) at `pos`.
    #[inline(never)]
    fn string_with_escapes(&mut self, start: usize) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        loop {
            match bytes[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Some((&self.text[start..self.pos], true));
                }
                b'\\' => {}
                // A raw control character is not allowed inside a JSON string.
                _ => return None,
            }
            self.pos += 1;
            match *bytes.get(self.pos)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                b'u' => {
                    let hex = self.text.get(self.pos + 1..self.pos + 5)?;
                    let unit = u16::from_str_radix(hex, 16).ok()?;
                    // `from_str_radix` takes a sign; JSON does not. Surrogates are left to serde.
                    if !hex.bytes().all(|b| b.is_ascii_hexdigit())
                        || (0xD800..=0xDFFF).contains(&unit)
                    {
                        return None;
                    }
                    self.pos += 5;
                }
                _ => return None,
            }
            self.pos += special_byte(&bytes[self.pos..])?;
        }
    }

    fn digits(&mut self) -> usize {
        let bytes = self.bytes();
        let start = self.pos;
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        let bytes = self.bytes();
        if bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match bytes.get(self.pos)? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            (self.digits() > 0).then_some(())?;
        }
        if matches!(bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        Some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.text[self.pos..]
            .starts_with(word)
            .then(|| self.pos += word.len())
    }

    /// Any value, checked; its text (without surrounding whitespace), as serde_json's `RawValue`.
    pub fn value(&mut self) -> Option<&'a str> {
        let first = self.peek()?;
        let start = self.pos;
        match first {
            b'"' => {
                self.string()?;
            }
            b'{' => self.object(|_, scanner| scanner.value().map(drop))?,
            b'[' => self.array(|scanner| scanner.value().map(drop))?,
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            _ => self.number()?,
        }
        // SAFETY: a value read starts at one of the ASCII bytes matched above and ends just after
        // an ASCII byte (a quote, a bracket, a letter of a literal or a digit).
        Some(unsafe { self.text.get_unchecked(start..self.pos) })
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// An object: `entry(key, scanner)` is called for each entry and must read exactly its value.
    pub fn object(
        &mut self,
        mut entry: impl FnMut(&'a str, &mut Scanner<'a>) -> Option<()>,
    ) -> Option<()> {
        self.delimited(b'{', b'}', |scanner| {
            let key = scanner.plain_string()?;
            scanner.eat(b':')?;
            entry(key, scanner)
        })
    }

    /// An array: `element(scanner)` is called for each element and must read exactly it.
    pub fn array(&mut self, element: impl FnMut(&mut Scanner<'a>) -> Option<()>) -> Option<()> {
        self.delimited(b'[', b']', element)
    }

    /// `open`, items separated by commas, `close`: what objects and arrays share.
    fn delimited(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Scanner<'a>) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.enter()?;
        if self.eat(close).is_none() {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b if b == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Where the next value starts (after whitespace), for [`Scanner::since`].
    pub fn position(&mut self) -> usize {
        self.skip_ws();
        self.pos
    }

    /// The text from `start` (a [`Scanner::position`]) to the end of the last value read.
    pub fn since(&self, start: usize) -> &'a str {
        &self.text[start..self.pos]
    }
}

/// Every entry of an object value, as raw text, or `None` (not an object, or not simple).
pub fn entries(object: &str, mut f: impl FnMut(&str, &str)) -> Option<()> {
    let mut scanner = Scanner::new(object);
    scanner.object(|key, scanner| {
        f(key, scanner.value()?);
        Some(())
    })?;
    scanner.end()
}

#[cfg(test)]
mod tests;
