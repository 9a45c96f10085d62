//! The prompt pass: a prompt's tokens run through the model into its
//! caches, in chunks so that memory stays bounded, up to the logits of its
//! last token. Generation ([`crate::generate`]), batching and draft models
//! all start here.

use mlx_rs::Array;

use crate::models::Model;
use crate::models::cache::KvCache;
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
        std::env::var("MLX_HARMONY_PREFILL_CHUNK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (16..=8192).contains(n))
            .unwrap_or(PREFILL_CHUNK)
    })
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
