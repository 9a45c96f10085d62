//! Speculative decoding with a draft model: a small model of the same
//! tokenizer proposes the next few tokens greedily, and the target checks
//! them all in one forward pass ([`crate::lookup::check_on_device`],
//! shared with prompt lookup). The draft stays on the device until that
//! check: one wait per step for both models.
//!
//! The draft is the draft model's greedy continuation, so given the context
//! it is one sequence, not a distribution: comparing the target's own sample
//! at each position with it keeps a drafted token with exactly the
//! probability the target gives it and, where it is rejected, leaves the
//! target's sample, drawn from the rest of its distribution. That is the
//! standard acceptance rule for a draft of probability one, so sampled
//! output keeps the target's distribution and greedy output is the target's
//! own greedy output.
//!
//! The draft model keeps its own KV cache and the tokens it holds, like the
//! target's prompt cache: each proposal first runs whatever of the context
//! the cache lacks (the whole prompt the first time; the target's last token
//! and, after a fully kept draft, the last drafted token) and forgets what
//! was rejected.

use std::rc::Rc;

use mlx_rs::Array;
use mlx_rs::ops;
use mlx_rs::ops::indexing::argmax_axis;
use mlx_rs::transforms::eval;

use crate::loaded::LoadedModel;
use crate::lookup::{self, Checked, caches_can_rewind};
use crate::models::Model;
use crate::models::blocks::last_position;
use crate::models::cache::{KvCache, LayerCache};
use crate::prefill::{prefill, reusable_prefix};
use crate::sampling::Sampler;
use crate::{Error, Result};

/// One speculative step after `context` (whose last token is not yet in
/// `caches`): up to `room` tokens drafted by `draft` when there is one,
/// else up to `lookup_tokens` looked up in the context (prompt lookup),
/// checked with that last token by the model in one pass. Returns the
/// check and the tokens drafted. The single-sequence loop and the batch's
/// lone row both step this way.
pub fn draft_and_check<C: LayerCache>(
    model: &Model,
    caches: &mut [C],
    sampler: &mut Sampler,
    context: &[u32],
    draft: Option<&mut DraftModel>,
    lookup_tokens: usize,
    room: usize,
) -> Result<(Checked, Vec<u32>)> {
    let &last = context
        .last()
        .ok_or_else(|| Error::Invalid("a speculative step needs a context".into()))?;
    match draft {
        Some(draft) => {
            // The draft model's cache keeps the longest prefix it shares
            // with this context (another sequence's, at first).
            let on_device = draft.propose(context, room)?;
            let (checked, tokens) =
                lookup::check_on_device(model, caches, sampler, last, on_device.as_ref())?;
            draft.drafted(&tokens);
            Ok((checked, tokens))
        }
        None => {
            let proposed = lookup::draft(context, lookup_tokens.min(room)).to_vec();
            let checked = lookup::check(model, caches, sampler, last, &proposed)?;
            Ok((checked, proposed))
        }
    }
}

/// The most tokens one proposal may draft.
pub const MAX_DRAFT_TOKENS: usize = 32;

/// A draft model with its cache, ready to propose drafts for one target.
pub struct DraftModel {
    loaded: Rc<LoadedModel>,
    /// Tokens drafted per step.
    tokens_per_step: usize,
    /// The target's largest token id.
    target_last_id: u32,
    caches: Vec<KvCache>,
    /// The tokens the caches hold, in order.
    cached: Vec<u32>,
}

impl DraftModel {
    /// A draft model for `target`, drafting `tokens_per_step` tokens a step
    /// (1 to [`MAX_DRAFT_TOKENS`]). Refused when the two tokenizers do not
    /// give every token the same id (the draft's ids would mean other
    /// text), or when the draft's caches cannot forget rejected tokens (a
    /// sliding-window model such as GPT-OSS).
    pub fn new(
        draft: Rc<LoadedModel>,
        target: &LoadedModel,
        tokens_per_step: usize,
    ) -> Result<Self> {
        if !(1..=MAX_DRAFT_TOKENS).contains(&tokens_per_step) {
            return Err(Error::Invalid(format!(
                "the number of draft tokens must be from 1 to {MAX_DRAFT_TOKENS}, not {tokens_per_step}"
            )));
        }
        if draft.tokenizer.get_vocab(true) != target.tokenizer.get_vocab(true) {
            return Err(Error::Invalid(format!(
                "the draft model's tokenizer differs from the model's ({} and {} tokens): a draft \
                 model must share the model's tokenizer (a smaller model of the same family)",
                draft.tokenizer.get_vocab_size(true),
                target.tokenizer.get_vocab_size(true)
            )));
        }
        let caches = draft.model.new_caches();
        if !caches_can_rewind(&caches) {
            return Err(Error::Invalid(
                "the draft model has sliding-window layers, whose caches cannot forget rejected \
                 drafts: choose a draft model without them (a Llama-family model)"
                    .into(),
            ));
        }
        Ok(DraftModel {
            target_last_id: target.model.vocab_size() as u32 - 1,
            loaded: draft,
            tokens_per_step,
            caches,
            cached: Vec::new(),
        })
    }

    /// Forgets the cache.
    pub fn clear_cache(&mut self) {
        self.caches = self.loaded.model.new_caches();
        self.cached.clear();
    }

    /// Runs `context` into the cache, reusing what it already holds (for a
    /// prompt, while the target's own prompt pass is under way).
    pub fn catch_up(&mut self, context: &[u32]) -> Result<()> {
        if context.is_empty() {
            return Ok(());
        }
        let logits = self.feed(context)?;
        // The logits are not wanted; the caches are.
        drop(logits);
        let states: Vec<&Array> = self.caches.iter().flat_map(|c| c.state()).collect();
        eval(states)?;
        Ok(())
    }

    /// Up to `count` (at most [`DraftModel::tokens_per_step`]) tokens the
    /// draft model would write greedily after `context`, still on the device
    /// (`[n]`, uint32; `None` when none are asked for): the model's check
    /// reads them with its own choices. Pass the tokens read to
    /// [`DraftModel::drafted`] before the next proposal.
    pub fn propose(&mut self, context: &[u32], count: usize) -> Result<Option<Array>> {
        let count = count.min(self.tokens_per_step);
        if count == 0 || context.is_empty() {
            return Ok(None);
        }
        let result = self.propose_unchecked(context, count);
        if result.is_err() {
            // Caches midway through a failed step hold unknown positions.
            self.clear_cache();
        }
        result.map(Some)
    }

    fn propose_unchecked(&mut self, context: &[u32], count: usize) -> Result<Array> {
        let mut logits = self.feed(context)?;
        // The whole draft is one graph: each drafted token is fed back as an
        // array, and nothing is read until the model's check.
        let mut drafted = Vec::with_capacity(count);
        for i in 0..count {
            let token = argmax_axis(&last_position(&logits)?, -1, None)?;
            if i + 1 < count {
                logits = self
                    .loaded
                    .model
                    .forward(&token.reshape(&[1, 1])?, &mut self.caches)?;
            }
            drafted.push(token);
        }
        let drafted = ops::concatenate(&drafted, 0)?.as_dtype(mlx_rs::Dtype::Uint32)?;
        // The draft model's vocabulary may be padded past the target's: an
        // id beyond it is proposed as the target's last id, which the
        // target's choice at that position then rejects or, if it is that
        // id, keeps.
        let last_id = Array::from_slice(&[self.target_last_id], &[1]);
        Ok(ops::minimum(&drafted, &last_id)?)
    }

    /// Records the tokens of the last proposal, as read: all but the last
    /// went through the draft model's cache.
    pub fn drafted(&mut self, tokens: &[u32]) {
        if let Some((_, fed)) = tokens.split_last() {
            self.cached.extend_from_slice(fed);
        }
    }

    /// Brings the cache to hold `context` (keeping the longest common
    /// prefix, at least one token run for the logits) and returns the last
    /// position's logits.
    fn feed(&mut self, context: &[u32]) -> Result<Array> {
        let common = reusable_prefix(&self.cached, context);
        let excess = (self.cached.len() - common) as i32;
        for cache in &mut self.caches {
            cache.trim(excess);
        }
        self.cached.truncate(common);
        let logits = prefill(&self.loaded.model, &mut self.caches, &context[common..])?;
        self.cached.extend_from_slice(&context[common..]);
        Ok(logits)
    }
}
