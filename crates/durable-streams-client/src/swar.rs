//! Byte tests eight bytes at a time: a word's bytes are tested together
//! with integer arithmetic. Each test gives a word whose byte high bits mark
//! matches; it is exact for "does any byte match" (a borrow can only mark a
//! byte above one that matched), which is all the callers ask. Longer input
//! can go sixteen bytes at a time through [`any_byte_wide`], whose blocks
//! the compiler vectorizes.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Bytes below `n` (`n` at most 0x80).
#[inline]
pub(crate) fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS
}

/// Bytes equal to `byte`.
#[inline]
pub(crate) fn equal(word: u64, byte: u8) -> u64 {
    below(word ^ (ONES * u64::from(byte)), 1)
}

/// Bytes 0x7F (DEL) and above: not printable ASCII.
#[inline]
pub(crate) fn del_or_above(word: u64) -> u64 {
    // Without a byte of 0x80 or more, adding one carries out of no byte.
    (word | word.wrapping_add(ONES)) & HIGH_BITS
}

/// Whether any byte of `bytes` passes `byte_test`, checked a word at a time
/// by `word_test` (which must agree with it): the tail as one more word
/// overlapping the last full one, or byte by byte when there is no full
/// word.
#[inline]
pub(crate) fn any_byte(
    bytes: &[u8],
    word_test: impl Fn(u64) -> bool,
    byte_test: impl Fn(u8) -> bool,
) -> bool {
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or_default());
    let mut words = bytes.chunks_exact(8);
    if words.by_ref().any(|w| word_test(word(w))) {
        return true;
    }
    match words.remainder() {
        [] => false,
        _ if bytes.len() >= 8 => word_test(word(&bytes[bytes.len() - 8..])),
        tail => tail.iter().any(|&b| byte_test(b)),
    }
}

/// [`any_byte`] sixteen bytes at a time from 16 bytes up: each block is
/// tested byte by byte with no early exit, which the compiler turns into a
/// few vector instructions (SSE2 on x86-64: about half the instructions of
/// the word tests for a 62-byte string). `byte_test` must be branch-free
/// (comparisons joined with `|`, no table lookups) for that to happen.
/// The tail is one more block overlapping the last full one.
#[inline]
pub(crate) fn any_byte_wide(
    bytes: &[u8],
    word_test: impl Fn(u64) -> bool,
    byte_test: impl Fn(u8) -> bool,
) -> bool {
    let Some(last) = bytes.last_chunk::<16>() else {
        return any_byte(bytes, word_test, byte_test);
    };
    let (blocks, tail) = bytes.as_chunks::<16>();
    blocks.iter().any(|block| block_any(block, &byte_test))
        || (!tail.is_empty() && block_any(last, &byte_test))
}

/// Whether any byte of `block` passes `byte_test`: no early exit, so that
/// it compiles to vector instructions (see [`any_byte_wide`]).
#[inline(always)]
fn block_any(block: &[u8; 16], byte_test: &impl Fn(u8) -> bool) -> bool {
    let mut any = false;
    for &b in block {
        any |= byte_test(b);
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytewise(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
        bytes.iter().any(|&b| test(b))
    }

    proptest! {
        /// Each word test agrees with its byte test on any bytes, at any
        /// length and alignment.
        #[test]
        fn word_tests_agree_with_byte_tests(bytes in proptest::collection::vec(any::<u8>(), 0..72), n in 1u8..=0x80, e in any::<u8>()) {
            prop_assert_eq!(any_byte(&bytes, |w| below(w, n) != 0, |b| b < n), bytewise(&bytes, |b| b < n));
            prop_assert_eq!(any_byte(&bytes, |w| equal(w, e) != 0, |b| b == e), bytewise(&bytes, |b| b == e));
            prop_assert_eq!(any_byte(&bytes, |w| del_or_above(w) != 0, |b| b >= 0x7f), bytewise(&bytes, |b| b >= 0x7f));
            prop_assert_eq!(any_byte_wide(&bytes, |w| below(w, n) != 0, |b| b < n), bytewise(&bytes, |b| b < n));
            prop_assert_eq!(any_byte_wide(&bytes, |w| equal(w, e) != 0, |b| b == e), bytewise(&bytes, |b| b == e));
        }

        /// Mostly-plain text, where a single odd byte must be found.
        #[test]
        fn one_odd_byte_is_found(len in 1usize..72, at in any::<prop::sample::Index>(), odd in any::<u8>()) {
            let mut bytes = vec![b'a'; len];
            bytes[at.index(len)] = odd;
            prop_assert_eq!(any_byte(&bytes, |w| below(w, 0x20) != 0, |b| b < 0x20), odd < 0x20);
            prop_assert_eq!(any_byte(&bytes, |w| equal(w, b',') != 0, |b| b == b','), odd == b',');
            prop_assert_eq!(any_byte(&bytes, |w| del_or_above(w) != 0, |b| b >= 0x7f), odd >= 0x7f);
            prop_assert_eq!(any_byte_wide(&bytes, |w| below(w, 0x20) != 0, |b| b < 0x20), odd < 0x20);
        }
    }
}
