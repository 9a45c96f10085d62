//! Masks as the sampler takes them (token `i` is bit `i % 32` of word
//! `i / 32`), and the grammar engine's errors as the engine's.

use llguidance::Matcher;

/// The bits of the matcher's mask as the sampler takes them, with `clear`
/// left out and `add` let in.
pub fn mask_bits(
    matcher: &mut Matcher,
    clear: &[u32],
    add: &[u32],
) -> mlx_harmony_core::Result<Vec<u32>> {
    let mask = matcher.compute_mask().map_err(engine_error)?;
    let mut bits = mask.as_slice().to_vec();
    let mut set = |token: u32, on: bool| {
        let word = token as usize / 32;
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        if on {
            bits[word] |= 1 << (token % 32);
        } else {
            bits[word] &= !(1 << (token % 32));
        }
    };
    for &token in clear {
        set(token, false);
    }
    for &token in add {
        set(token, true);
    }
    Ok(bits)
}

/// Only `tokens`, as mask bits.
pub fn only(tokens: &[u32]) -> Vec<u32> {
    let mut bits = Vec::new();
    for &token in tokens {
        let word = token as usize / 32;
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        bits[word] |= 1 << (token % 32);
    }
    bits
}

pub fn engine_error(error: impl std::fmt::Display) -> mlx_harmony_core::Error {
    mlx_harmony_core::Error::Invalid(format!("structured output: {error}"))
}
