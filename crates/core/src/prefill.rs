//! The prompt pass: a prompt's tokens run through the model into its
//! caches, in chunks so that memory stays bounded, up to the logits of its
//! last token. Generation ([`crate::generate`]), batching and draft models
//! all start here.

use mlx_rs::Array;

use crate::models::Model;
use crate::models::cache::{KvCache, LayerCache};
use crate::{Error, Result};

/// How many prompt tokens go through the model at once: long prompts are
/// prefilled in chunks so that memory stays bounded.
pub const PREFILL_CHUNK: usize = 512;

/// The chunk in use: [`PREFILL_CHUNK`], or `MLX_HARMONY_PREFILL_CHUNK`
/// (16 to 8192 tokens; smaller chunks hold less memory in a long
/// context's prompt pass, larger ones run faster).
pub fn prefill_chunk() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| {
        let value = std::env::var("MLX_HARMONY_PREFILL_CHUNK").ok();
        let (chunk, warning) = chunk_from(value.as_deref());
        if let Some(warning) = warning {
            eprintln!("{warning}");
        }
        chunk
    })
}

/// The chunk `MLX_HARMONY_PREFILL_CHUNK=value` asks for, and a warning when
/// the value is not one (the default is used then).
fn chunk_from(value: Option<&str>) -> (usize, Option<String>) {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return (PREFILL_CHUNK, None);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (16..=8192).contains(&n) => (n, None),
        _ => (
            PREFILL_CHUNK,
            Some(format!(
                "warning: MLX_HARMONY_PREFILL_CHUNK={value:?} is not a number of tokens from 16 \
                 to 8192; using {PREFILL_CHUNK}"
            )),
        ),
    }
}

/// Runs `tokens` through the model into `caches` and returns the logits of
/// the last one (`[1, 1, vocab]`). All but the last token go in chunks of
/// [`prefill_chunk`] with only the caches evaluated, so memory stays bounded
/// and the vocabulary projection of those positions is never computed; the
/// last token's own step gives the logits.
pub fn prefill(model: &Model, caches: &mut [KvCache], tokens: &[u32]) -> Result<Array> {
    let (last, before) = tokens
        .split_last()
        .ok_or_else(|| Error::Invalid("cannot generate from an empty prompt".into()))?;
    for cache in caches.iter_mut() {
        cache.reserve(cache.offset() + tokens.len() as i32);
    }
    for chunk in before.chunks(prefill_chunk()) {
        model.forward_tokens(chunk, caches)?;
        let states: Vec<&Array> = caches.iter().flat_map(|c| c.state()).collect();
        mlx_rs::transforms::eval(states)?;
    }
    model.forward_tokens(&[*last], caches)
}

/// How many leading tokens of `tokens` caches holding `cached` can keep:
/// their common start, less one when it is the whole of `tokens` (at least
/// one token always runs, for the logits).
pub fn reusable_prefix(cached: &[u32], tokens: &[u32]) -> usize {
    cached
        .iter()
        .zip(tokens)
        .take_while(|(a, b)| a == b)
        .count()
        .min(tokens.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_prefill_chunk_is_named_and_the_default_used() {
        assert_eq!(chunk_from(None), (PREFILL_CHUNK, None));
        assert_eq!(chunk_from(Some("")), (PREFILL_CHUNK, None));
        assert_eq!(chunk_from(Some("1024")), (1024, None));
        for bad in ["8", "9000", "lots", "-5"] {
            let (chunk, warning) = chunk_from(Some(bad));
            assert_eq!(chunk, PREFILL_CHUNK);
            let warning = warning.unwrap();
            assert!(
                warning.contains(bad) && warning.contains("16 to 8192"),
                "{warning}"
            );
        }
    }
}
