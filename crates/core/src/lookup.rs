//! Prompt-lookup decoding: speculative decoding whose draft is taken from
//! the text so far instead of a second model. The last few tokens are looked
//! up earlier in the prompt and the output; the tokens that followed their
//! latest occurrence are the draft. One forward pass then checks the whole
//! draft: the model's own choice at each drafted position is sampled, and
//! the draft is kept up to the first position where the two differ, plus the
//! model's token there. Greedy output is exactly what plain decoding gives;
//! sampled output has the same distribution (a drafted token is kept with
//! the probability the model gives it). It pays where outputs repeat their
//! inputs: code edits, summaries with quotes, extraction.

use mlx_rs::transforms::eval;
use mlx_rs::{Array, ops};

use crate::Result;
use crate::array_ext::slice;
use crate::models::Model;
use crate::models::cache::{KvCache, LayerCache};
use crate::sampling::{Sampler, TokenLogprobs};

/// The longest run of tokens at the end of the context that is looked up.
pub const MAX_NGRAM: usize = 3;

/// The draft for `context`: up to `count` tokens that followed the latest
/// earlier occurrence of its last `MAX_NGRAM` tokens (or fewer, down to one,
/// when the longer run never occurred before); empty when none did.
pub fn draft(context: &[u32], count: usize) -> &[u32] {
    if count == 0 {
        return &[];
    }
    for n in (1..=MAX_NGRAM.min(context.len().saturating_sub(1))).rev() {
        let tail = &context[context.len() - n..];
        // The latest occurrence that ends before the tail itself.
        if let Some(start) = (0..context.len() - n)
            .rev()
            .find(|&i| &context[i..i + n] == tail)
        {
            let from = start + n;
            let to = (from + count).min(context.len());
            if from < to {
                return &context[from..to];
            }
        }
    }
    &[]
}

/// Whether every cache can forget positions it was just given: rejected
/// draft tokens are removed from the caches after the check. Sliding-window
/// and bounded caches cannot always.
pub fn caches_can_rewind(caches: &[KvCache]) -> bool {
    caches
        .iter()
        .all(|c| c.window().is_none() && c.max_size().is_none())
}

/// One check of a draft: what was kept and the caches rewound.
pub struct Checked {
    /// The tokens the model chose at each position, up to and including the
    /// first one that differs from the draft (or the one after the draft).
    pub tokens: Vec<u32>,
    /// How many of them are draft tokens (all but the last).
    pub accepted: usize,
    /// The log-probabilities of `tokens`, when the sampler reports them.
    pub logprobs: Vec<Option<TokenLogprobs>>,
}

/// Feeds `last` (the newest token, not yet in the caches) and `draft` in one
/// forward pass, samples the model's token at each of their positions, keeps
/// the draft up to the first difference and rewinds the caches past it.
pub fn check<C: LayerCache>(
    model: &Model,
    caches: &mut [C],
    sampler: &mut Sampler,
    last: u32,
    draft: &[u32],
) -> Result<Checked> {
    // No array of zero tokens is made for an empty draft.
    let on_device = (!draft.is_empty()).then(|| Array::from_slice(draft, &[draft.len() as i32]));
    Ok(check_on_device(model, caches, sampler, last, on_device.as_ref())?.0)
}

/// [`check`] with the draft still on the device (`[n]`, uint32 ids of the
/// model's vocabulary, as a draft model leaves it; `None`: no draft, one
/// plain step): it is read with the model's choices, one wait for both.
/// Returns the draft's tokens too.
pub fn check_on_device<C: LayerCache>(
    model: &Model,
    caches: &mut [C],
    sampler: &mut Sampler,
    last: u32,
    draft: Option<&Array>,
) -> Result<(Checked, Vec<u32>)> {
    let drafted = draft.map_or(0, |d| d.dim(0));
    let last = Array::from_slice(&[last], &[1]);
    let input = match draft {
        Some(draft) => ops::concatenate(&[&last, draft], 0)?,
        None => last,
    };
    let input = input.reshape(&[1, drafted + 1])?;
    let logits = model.forward(&input, caches)?;
    let vocab = logits.dim(2);
    let mut sampled = Vec::with_capacity(drafted as usize + 1);
    for p in 0..=drafted {
        let row = slice(&logits, &[0, p, 0], &[1, p + 1, vocab])?.reshape(&[1, vocab])?;
        // The sampler needs no history here: one that does (a repetition
        // penalty, a constraint) is not used with speculation.
        sampled.push(sampler.sample(&row, &[])?);
    }
    // The model's choices and the draft in one array: one read.
    sampled.extend(draft.cloned());
    let all = ops::concatenate(&sampled, 0)?.as_dtype(mlx_rs::Dtype::Uint32)?;
    eval([&all])?;
    let read = all.as_slice::<u32>();
    let (chosen, draft) = read.split_at(drafted as usize + 1);
    let (chosen, draft) = (chosen.to_vec(), draft.to_vec());
    let mut logprobs = Vec::with_capacity(chosen.len());
    for _ in 0..chosen.len() {
        logprobs.push(sampler.take_logprobs()?);
    }
    let accepted = draft
        .iter()
        .zip(&chosen)
        .take_while(|(d, c)| d == c)
        .count();
    let rejected = (draft.len() - accepted) as i32;
    if rejected > 0 {
        for (layer, cache) in caches.iter_mut().enumerate() {
            // A cache still holding rejected tokens would be attended by
            // every later step: stop rather than decode from it.
            let forgotten = cache.forget_last(rejected)?;
            if forgotten != rejected {
                return Err(crate::Error::Invalid(format!(
                    "speculative decoding: layer {layer}'s cache could forget only {forgotten} \
                     of the {rejected} rejected draft tokens (sliding-window, bounded or \
                     multi-row caches cannot rewind); decode without a draft for this model"
                )));
            }
        }
    }
    logprobs.truncate(accepted + 1);
    let checked = Checked {
        tokens: chosen[..=accepted].to_vec(),
        accepted,
        logprobs,
    };
    Ok((checked, draft))
}

#[cfg(test)]
mod tests {
    use super::draft;

    #[test]
    fn the_latest_longest_match_gives_the_draft() {
        // "a b c d | a b c" → after the earlier "a b c" came "d".
        assert_eq!(draft(&[1, 2, 3, 4, 9, 1, 2, 3], 4), &[4, 9, 1, 2]);
        // Two earlier matches: the latest wins.
        assert_eq!(draft(&[7, 5, 7, 6, 7], 1), &[6]);
        // Only a shorter run occurred before.
        assert_eq!(draft(&[1, 2, 8, 3, 2], 2), &[8, 3]);
        // Nothing repeats, or nothing asked.
        assert!(draft(&[1, 2, 3], 3).is_empty());
        assert!(draft(&[1, 1, 1], 0).is_empty());
        // Bounded by what follows.
        assert_eq!(draft(&[5, 6, 5], 10), &[6, 5]);
    }
}
