//! The one shape of `event_uuid` the pipeline accepts: `8-4-4-4-12` hex digits, stored lower-case.
//! Every record is checked, so the check is a few vector compares on x86_64 (SSE2, part of its
//! baseline) and a table look-up a byte elsewhere, not a branch a byte.

use std::borrow::Cow;

/// The UUID's length and where its hyphens are.
const LEN: usize = 36;
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// `8-4-4-4-12` hex digits, returned lower-case (borrowed when they already are).
pub fn canonical_uuid(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let bytes: &[u8; LEN] = s.as_bytes().try_into().ok()?;
    let Shape { valid, upper } = shape(bytes);
    if !valid {
        return None;
    }
    Some(if upper {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s
    })
}

/// Whether the 36 bytes are a UUID, and whether any of its digits is upper-case.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    valid: bool,
    upper: bool,
}

#[inline]
fn shape(bytes: &[u8; LEN]) -> Shape {
    #[cfg(target_arch = "x86_64")]
    {
        sse2_shape(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        table_shape(bytes)
    }
}

/// Per byte value: a hex digit (1), an upper-case one (2 as well), a hyphen (4).
#[cfg(any(test, not(target_arch = "x86_64")))]
const CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        class[b] = if c.is_ascii_digit() || matches!(c, b'a'..=b'f') {
            1
        } else if matches!(c, b'A'..=b'F') {
            3
        } else if c == b'-' {
            4
        } else {
            0
        };
        b += 1;
    }
    class
};

/// Per position, the class a byte there must have: a hyphen or a hex digit.
#[cfg(any(test, not(target_arch = "x86_64")))]
const EXPECTED: [u8; LEN] = {
    let mut expected = [1u8; LEN];
    let mut i = 0;
    while i < HYPHENS.len() {
        expected[HYPHENS[i]] = 4;
        i += 1;
    }
    expected
};

/// The portable check: one table look-up a byte, folded without branches.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn table_shape(bytes: &[u8; LEN]) -> Shape {
    let (valid, upper) =
        bytes
            .iter()
            .zip(EXPECTED)
            .fold((true, 0u8), |(valid, upper), (&b, expected)| {
                let class = CLASS[usize::from(b)];
                (valid & (class & expected != 0), upper | class)
            });
    Shape {
        valid,
        upper: upper & 2 != 0,
    }
}

/// Three overlapping 16-byte blocks (0..16, 16..32, 20..36), each classified in a few compares.
#[cfg(target_arch = "x86_64")]
fn sse2_shape(bytes: &[u8; LEN]) -> Shape {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    /// Bits of a block's hyphens, for blocks starting at `from`.
    const fn hyphen_bits(from: usize) -> u32 {
        let mut bits = 0;
        let mut i = 0;
        while i < HYPHENS.len() {
            if HYPHENS[i] >= from && HYPHENS[i] < from + 16 {
                bits |= 1 << (HYPHENS[i] - from);
            }
            i += 1;
        }
        bits
    }
    // SAFETY: SSE2 is in every x86_64 CPU; each load reads 16 of the array's 36 bytes
    // (the last from 20).
    unsafe {
        // Signed compares: bytes from 0x80 are negative, so no range below admits them.
        let within = |v: __m128i, low: u8, high: u8| {
            _mm_and_si128(
                _mm_cmpgt_epi8(v, _mm_set1_epi8(low as i8 - 1)),
                _mm_cmplt_epi8(v, _mm_set1_epi8(high as i8 + 1)),
            )
        };
        // (bit i: byte i is what its position wants, bit i: byte i is 'A'..='F').
        let block = |from: usize| {
            let v = _mm_loadu_si128(bytes.as_ptr().add(from).cast::<__m128i>());
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let hex = _mm_or_si128(within(v, b'0', b'9'), within(folded, b'a', b'f'));
            let hyphen = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8));
            let hyphens = hyphen_bits(from);
            let hex = _mm_movemask_epi8(hex) as u32;
            let hyphen = _mm_movemask_epi8(hyphen) as u32;
            let fits = (hex & !hyphens) | (hyphen & hyphens);
            (fits, _mm_movemask_epi8(within(v, b'A', b'F')) as u32)
        };
        let (a, upper_a) = block(0);
        let (b, upper_b) = block(16);
        let (c, upper_c) = block(LEN - 16);
        Shape {
            valid: a & b & c == 0xFFFF,
            upper: upper_a | upper_b | upper_c != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position of a UUID, in both checks, against the definition.
    #[test]
    fn both_checks_agree_with_the_definition_on_every_byte_at_every_position() {
        let definition = |bytes: &[u8; LEN]| Shape {
            valid: bytes.iter().enumerate().all(|(i, b)| {
                if HYPHENS.contains(&i) {
                    *b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            }),
            upper: bytes.iter().any(|b| matches!(b, b'A'..=b'F')),
        };
        let good = *b"d7ca46d5-80b5-4b81-bf5b-c96a60c4c573";
        let mut valid = 0;
        for base in [good, good.map(|b| b.to_ascii_uppercase())] {
            for at in 0..LEN {
                for b in 0..=255u8 {
                    let mut bytes = base;
                    bytes[at] = b;
                    let want = definition(&bytes);
                    valid += usize::from(want.valid);
                    assert_eq!(table_shape(&bytes), want, "{b:#x} at {at}");
                    #[cfg(target_arch = "x86_64")]
                    assert_eq!(sse2_shape(&bytes), want, "{b:#x} at {at}");
                }
            }
        }
        // 22 hex digits are valid at each digit's place, and only '-' at a hyphen's.
        assert_eq!(valid, 2 * (32 * 22 + 4));
    }
}
