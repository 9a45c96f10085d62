//! Choosing the next token from the model's logits, on the device: logits
//! processors (logit bias, repetition penalty) and sampling filters (top-p,
//! min-p, XTC, top-k, in mlx-lm's order) before temperature sampling; a
//! temperature of 0 is greedy.
//!
//! The filters work on log-probabilities and leave removed tokens at -inf,
//! exactly as mlx-lm's `sample_utils` does, so that the same settings and
//! logits keep the same candidate tokens.
//!
//! A sampler may also carry a [`TokenConstraint`] (a grammar the output must
//! follow: structured outputs), whose allowed tokens mask the logits before
//! anything else, and may report the log-probabilities of what it sampled
//! ([`TokenLogprobs`]), computed on the device with the token.

use std::collections::VecDeque;

use mlx_rs::ops::indexing::{argmax_axis, put_along_axis, take_along_axis};
use mlx_rs::ops::{self, argpartition_axis};
use mlx_rs::transforms::async_eval;
use mlx_rs::{Array, random};

use crate::array_ext::{self, slice};
use crate::distributed;
use crate::{Error, Result};

/// Everything that decides how a token is picked.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingSettings {
    pub temperature: f32,
    /// Nucleus sampling; 0 or 1 turn it off.
    pub top_p: f32,
    /// 0 turns it off.
    pub top_k: u32,
    /// 0 turns it off.
    pub min_p: f32,
    pub min_tokens_to_keep: u32,
    pub xtc_probability: f32,
    pub xtc_threshold: f32,
    /// Tokens XTC never removes (end-of-turn tokens, typically).
    pub xtc_special_tokens: Vec<u32>,
    /// 1 (or 0) turns it off.
    pub repetition_penalty: f32,
    pub repetition_context_size: u32,
    /// Added to the logits of these tokens.
    pub logit_bias: Vec<(u32, f32)>,
    /// `None`: a fresh random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            min_tokens_to_keep: 1,
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            xtc_special_tokens: Vec::new(),
            repetition_penalty: 1.0,
            repetition_context_size: 20,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

fn neg_inf_like(a: &Array) -> Result<Array> {
    Ok(Array::from_f32(f32::NEG_INFINITY).as_dtype(a.dtype())?)
}

/// The last `k` entries along the last axis.
fn last_k(a: &Array, k: i32) -> Result<Array> {
    let shape = a.shape().to_vec();
    let mut starts = vec![0; shape.len()];
    starts[shape.len() - 1] = shape[shape.len() - 1] - k;
    slice(a, &starts, &shape)
}

/// Entries `k..` along the last axis.
fn from_k(a: &Array, k: i32) -> Result<Array> {
    let shape = a.shape().to_vec();
    let mut starts = vec![0; shape.len()];
    starts[shape.len() - 1] = k;
    slice(a, &starts, &shape)
}

/// Keeps the most likely tokens whose mass reaches `top_p`.
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    let sorted = ops::sort_axis(logprobs, -1)?;
    let probs = ops::exp(sorted.as_dtype(mlx_rs::Dtype::Float32)?)?;
    let mass_above = ops::cumsum(&probs, -1, true, false)?;
    let first = |a: &Array| -> Result<Array> {
        let mut ends = a.shape().to_vec();
        *ends.last_mut().unwrap() = 1;
        slice(a, &vec![0; ends.len()], &ends)
    };
    let total = first(&mass_above)?.add(first(&probs)?)?;
    let dropped = mass_above
        .ge(total.multiply(Array::from_f32(top_p))?)?
        .as_dtype(mlx_rs::Dtype::Int32)?
        .sum_axis(-1, true)?;
    let threshold = take_along_axis(&sorted, &dropped, -1)?;
    Ok(ops::select(
        &logprobs.lt(&threshold)?,
        &neg_inf_like(logprobs)?,
        logprobs,
    )?)
}

/// Removes tokens less likely than `min_p` times the most likely one,
/// keeping at least `min_tokens_to_keep`.
pub fn apply_min_p(logprobs: &Array, min_p: f32, min_tokens_to_keep: u32) -> Result<Array> {
    let top = logprobs.max_axis(-1, true)?;
    let scaled = top.add(Array::from_f32(min_p.ln()))?;
    let mut remove = logprobs.lt(&scaled)?;
    if min_tokens_to_keep > 1 {
        let k = min_tokens_to_keep as i32;
        let vocab = logprobs.dim(-1);
        let keep = last_k(&argpartition_axis(logprobs, vocab - k, -1)?, k)?;
        remove = put_along_axis(&remove, &keep, Array::from_bool(false), -1)?;
    }
    Ok(ops::select(&remove, &neg_inf_like(logprobs)?, logprobs)?)
}

/// Keeps the `k` most likely tokens.
pub fn apply_top_k(logprobs: &Array, k: u32) -> Result<Array> {
    let vocab = logprobs.dim(-1);
    if k == 0 || k as i32 >= vocab {
        return Err(Error::Invalid(format!(
            "top_k must be between 1 and {}, got {k}",
            vocab - 1
        )));
    }
    let order = argpartition_axis(logprobs.negative()?, k as i32 - 1, -1)?;
    let removed = from_k(&order, k as i32)?;
    Ok(put_along_axis(
        logprobs,
        &removed,
        neg_inf_like(logprobs)?,
        -1,
    )?)
}

/// XTC ("exclude top choices"): with probability `probability` (decided by
/// `draw` in [0, 1)), removes every token above `threshold` probability
/// except the least likely of them; `special` tokens are never removed.
pub fn apply_xtc(
    logits: &Array,
    probability: f32,
    threshold: f32,
    special: &[u32],
    draw: f32,
) -> Result<Array> {
    if draw > probability {
        return Ok(logits.clone());
    }
    let probs = ops::softmax_axis(logits, -1, None)?;
    let infinity = Array::from_f32(f32::INFINITY);
    let above = probs.gt(Array::from_f32(threshold))?;
    let smallest_above = ops::select(&above, &probs, &infinity)?.min_axis(-1, true)?;
    let mut mask = probs.gt(&smallest_above)?;
    if !special.is_empty() {
        let ids = Array::from_slice(special, &[special.len() as i32]);
        let ids = ops::broadcast_to(&ids, &[mask.dim(0), special.len() as i32])?;
        mask = put_along_axis(&mask, &ids, Array::from_bool(false), -1)?;
    }
    Ok(ops::select(&mask, &neg_inf_like(logits)?, logits)?)
}

/// Adds each bias to its token's logit.
pub fn apply_logit_bias(logits: &Array, bias: &[(u32, f32)]) -> Result<Array> {
    if bias.is_empty() {
        return Ok(logits.clone());
    }
    let mut dense = vec![0.0f32; logits.dim(-1) as usize];
    for &(token, value) in bias {
        let slot = dense.get_mut(token as usize).ok_or_else(|| {
            Error::Invalid(format!(
                "logit_bias names token {token}, outside the vocabulary of {}",
                logits.dim(-1)
            ))
        })?;
        *slot += value;
    }
    let dense = Array::from_slice(&dense, &[logits.dim(-1)]).as_dtype(logits.dtype())?;
    Ok(logits.add(dense)?)
}

/// Divides positive logits (multiplies negative ones) of the tokens among the
/// last `context` generated by `penalty`.
pub fn apply_repetition_penalty(
    logits: &Array,
    history: &[u32],
    penalty: f32,
    context: u32,
) -> Result<Array> {
    if history.is_empty() || penalty == 1.0 || penalty == 0.0 {
        return Ok(logits.clone());
    }
    let recent = &history[history.len().saturating_sub(context as usize)..];
    let ids = Array::from_slice(recent, &[1, recent.len() as i32]);
    let ids = ops::broadcast_to(&ids, &[logits.dim(0), recent.len() as i32])?;
    let selected = take_along_axis(logits, &ids, -1)?;
    let p = Array::from_f32(penalty).as_dtype(logits.dtype())?;
    let zero = Array::from_f32(0.0).as_dtype(logits.dtype())?;
    let penalized = ops::select(
        &selected.lt(&zero)?,
        &selected.multiply(&p)?,
        &selected.divide(&p)?,
    )?;
    Ok(put_along_axis(logits, &ids, &penalized, -1)?)
}

/// The greedy tokens of a batch's logits (`[rows, vocab]` → `[rows]`), each
/// row exactly as [`Sampler::sample`] picks it for a plain greedy sampler
/// (the most likely token of the log-probabilities), in one operation.
pub fn greedy_rows(logits: &Array) -> Result<Array> {
    let logprobs = logits.subtract(logits.logsumexp_axis(-1, true)?)?;
    distributed::agree(argmax_axis(&logprobs, -1, None)?)
}

/// Which tokens may come next, decided outside the model: a grammar the
/// output must follow (JSON Schema, Lark, a regular expression). The sampler
/// feeds it each generated token and masks the logits with what it allows.
pub trait TokenConstraint: Send {
    /// The model generated `token`, the next token of the output.
    fn consume(&mut self, token: u32) -> Result<()>;
    /// The tokens allowed next, as bits (token `i` is bit `i % 32` of word
    /// `i / 32`), or `None` when any token may come.
    fn allowed(&mut self) -> Result<Option<Vec<u32>>>;
    /// A new generation starts: back to the state before any token.
    fn reset(&mut self) -> Result<()>;
    /// Another constraint with the same rules, at the start: for the other
    /// sequences of one request (`n` choices).
    fn fresh(&self) -> Box<dyn TokenConstraint>;
}

/// The log-probability of a sampled token and of the most likely tokens at
/// its step, in the distribution it was drawn from (see [`Sampler::set_logprobs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens, most likely first (ties: lower id first);
    /// tokens the filters removed are left out.
    pub top: Vec<(u32, f32)>,
}

/// A step's log-probabilities, still on the device.
struct PendingLogprobs {
    token: Array,
    logprob: Array,
    top_ids: Option<Array>,
    top_values: Option<Array>,
}

/// `logits` with every token the bit set `allowed` leaves out at -inf. Only
/// the bit words go to the device (a 32nd of a mask of the vocabulary's
/// size); each token's bit is picked out there.
pub fn apply_allowed(logits: &Array, allowed: &[u32]) -> Result<Array> {
    apply_allowed_rows(logits, &[Some(allowed)])
}

/// [`apply_allowed`] for `[rows, vocab]` logits, a bit set per row (`None`:
/// the row is free): one upload and one expansion for every row.
pub fn apply_allowed_rows(logits: &Array, allowed: &[Option<&[u32]>]) -> Result<Array> {
    let vocab = logits.dim(-1);
    let words = (vocab as usize).div_ceil(32);
    let mut stacked = Vec::with_capacity(words * allowed.len());
    for row in allowed {
        let start = stacked.len();
        match row {
            Some(bits) => stacked.extend(bits.iter().take(words)),
            None => stacked.resize(start + words, u32::MAX),
        }
        stacked.resize(start + words, 0);
        if vocab % 32 != 0 {
            // Bits past the vocabulary do not count.
            stacked[start + words - 1] &= (1u32 << (vocab % 32)) - 1;
        }
        if stacked[start..].iter().all(|&w| w == 0) {
            return Err(Error::Invalid(
                "the output's grammar allows no token of this model's vocabulary here".into(),
            ));
        }
    }
    let bits = Array::from_slice(&stacked, &[allowed.len() as i32, words as i32]);
    let ids = ops::arange::<_, u32>(0, vocab, None)?;
    let word = array_ext::right_shift(&ids, &Array::from_slice(&[5u32], &[1]))?;
    let place = array_ext::bitwise_and(&ids, &Array::from_slice(&[31u32], &[1]))?;
    let bit = array_ext::bitwise_and(
        &array_ext::right_shift(&bits.take_axis(&word, 1)?, &place)?,
        &Array::from_slice(&[1u32], &[1]),
    )?;
    let mask = bit.eq(Array::from_slice(&[1u32], &[1]))?;
    let mask = mask.reshape(logits.shape())?;
    Ok(ops::select(&mask, logits, &neg_inf_like(logits)?)?)
}

/// See [`Sampler::shape`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerShape {
    pub settings: SamplingSettings,
    pub top_logprobs: Option<usize>,
    pub constrained: bool,
    pub scripted: bool,
}

/// A constraint that allows every token: a follower's stand-in for rank
/// 0's real one.
struct AnyToken;

impl TokenConstraint for AnyToken {
    fn consume(&mut self, _token: u32) -> Result<()> {
        Ok(())
    }

    fn allowed(&mut self) -> Result<Option<Vec<u32>>> {
        Ok(None)
    }

    fn reset(&mut self) -> Result<()> {
        Ok(())
    }

    fn fresh(&self) -> Box<dyn TokenConstraint> {
        Box::new(AnyToken)
    }
}

/// Picks tokens; holds the random key so that a seed reproduces a run.
pub struct Sampler {
    settings: SamplingSettings,
    key: Array,
    constraint: Option<Box<dyn TokenConstraint>>,
    /// How many tokens of the current generation the constraint has taken.
    constrained_through: usize,
    /// `Some(n)`: each sample also computes its log-probability and the
    /// `n` most likely tokens'.
    top_logprobs: Option<usize>,
    /// Log-probabilities of samples whose tokens have not been read yet
    /// (two while decoding pipelines), oldest first.
    pending: VecDeque<PendingLogprobs>,
    #[cfg(feature = "testing")]
    script: Option<Script>,
}

/// Fixed replies a scripted sampler plays back instead of sampling.
#[cfg(feature = "testing")]
struct Script {
    replies: Vec<Vec<u32>>,
    reply: usize,
    next: usize,
}

#[cfg(feature = "testing")]
impl Script {
    /// The next token: reply after reply. When a reply is used up its last
    /// token (an end token) repeats, until a new generation starts (the
    /// history is empty again), which moves on to the next reply.
    fn next_token(&mut self, history: &[u32]) -> Result<u32> {
        let used_up = self.next >= self.replies.get(self.reply).map_or(0, Vec::len);
        if used_up && history.is_empty() && self.reply + 1 < self.replies.len() {
            self.reply += 1;
            self.next = 0;
        }
        let reply = self
            .replies
            .get(self.reply)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Error::Invalid("the sampler's script has no tokens".into()))?;
        let token = reply[self.next.min(reply.len() - 1)];
        self.next += 1;
        Ok(token)
    }
}

impl Sampler {
    pub fn new(settings: SamplingSettings) -> Result<Self> {
        let seed = settings.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(Sampler {
            key: random::key(seed)?,
            settings,
            constraint: None,
            constrained_through: 0,
            top_logprobs: None,
            pending: VecDeque::new(),
            #[cfg(feature = "testing")]
            script: None,
        })
    }

    /// A sampler that ignores the model and plays back `replies`, one per
    /// generation: for tests and demos of everything around the model (the
    /// Harmony parser, the tool loop, the prompt cache) without trained
    /// weights. The model still runs, so timing and caching are real.
    /// Test support: only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn scripted(replies: Vec<Vec<u32>>) -> Result<Self> {
        let mut sampler = Sampler::new(SamplingSettings {
            temperature: 0.0,
            seed: Some(0),
            ..SamplingSettings::default()
        })?;
        sampler.script = Some(Script {
            replies,
            reply: 0,
            next: 0,
        });
        Ok(sampler)
    }

    /// What a tensor-parallel follower's sampler must share with this one
    /// for both to run the same operations (their tokens are rank 0's).
    pub fn shape(&self) -> SamplerShape {
        SamplerShape {
            settings: self.settings.clone(),
            top_logprobs: self.top_logprobs,
            constrained: self.constraint.is_some(),
            #[cfg(feature = "testing")]
            scripted: self.script.is_some(),
            #[cfg(not(feature = "testing"))]
            scripted: false,
        }
    }

    /// A follower's sampler of `shape`: the same settings and the same
    /// path through a step. A constraint stands in as one that allows
    /// every token (rank 0 applies the real one, and its tokens decide);
    /// a scripted sampler as a plain one that does not take the quick
    /// greedy path either.
    pub fn follower(shape: SamplerShape) -> Result<Self> {
        let mut sampler = Sampler::new(shape.settings)?;
        sampler.top_logprobs = shape.top_logprobs;
        if shape.constrained || shape.scripted {
            sampler.constraint = Some(Box::new(AnyToken));
        }
        Ok(sampler)
    }

    pub fn settings(&self) -> &SamplingSettings {
        &self.settings
    }

    /// Every following token must be one `constraint` allows. It sees the
    /// tokens of each generation from its start (and is reset when a new
    /// generation starts).
    pub fn set_constraint(&mut self, constraint: Box<dyn TokenConstraint>) {
        self.constraint = Some(constraint);
        self.constrained_through = 0;
    }

    /// Whether a constraint masks the logits.
    pub fn is_constrained(&self) -> bool {
        self.constraint.is_some()
    }

    /// With `Some(n)`, each sample also gives its token's log-probability
    /// and the `n` most likely tokens' ([`Sampler::take_logprobs`]): those of
    /// the distribution the token is drawn from, after the logits processors
    /// and filters and divided by the temperature (the plain log-softmax of
    /// the processed logits when greedy).
    pub fn set_logprobs(&mut self, top: Option<usize>) {
        self.top_logprobs = top;
        self.pending.clear();
    }

    /// Whether the next sample needs every earlier token of the generation
    /// on the host first (a repetition penalty, a constraint): then decoding
    /// cannot queue a step before reading the token before it.
    pub fn needs_each_token(&self) -> bool {
        (self.settings.repetition_penalty != 1.0 && self.settings.repetition_penalty != 0.0)
            || self.constraint.is_some()
    }

    /// The log-probabilities of the oldest sample not yet taken, read from
    /// the device (where they were computed with the token, so this adds no
    /// wait once the token is read); `None` unless asked for.
    pub fn take_logprobs(&mut self) -> Result<Option<TokenLogprobs>> {
        let Some(pending) = self.pending.pop_front() else {
            return Ok(None);
        };
        let token = pending.token.as_dtype(mlx_rs::Dtype::Uint32)?;
        let logprob = pending.logprob.as_dtype(mlx_rs::Dtype::Float32)?;
        let mut top = Vec::new();
        if let (Some(ids), Some(values)) = (&pending.top_ids, &pending.top_values) {
            let ids = ids.as_dtype(mlx_rs::Dtype::Uint32)?;
            let values = values.as_dtype(mlx_rs::Dtype::Float32)?;
            top = ids
                .as_slice::<u32>()
                .iter()
                .copied()
                .zip(values.as_slice::<f32>().iter().copied())
                .filter(|(_, v)| v.is_finite())
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        Ok(Some(TokenLogprobs {
            token: token.as_slice::<u32>()[0],
            logprob: logprob.as_slice::<f32>()[0],
            top,
        }))
    }

    /// Whether this sampler only takes the most likely token of the logits
    /// as they are (temperature 0, no bias, no penalty, no script): then
    /// rows of a batch can be sampled together ([`greedy_rows`]).
    pub fn is_plain_greedy(&self) -> bool {
        #[cfg(feature = "testing")]
        if self.script.is_some() {
            return false;
        }
        let s = &self.settings;
        s.temperature == 0.0
            && s.logit_bias.is_empty()
            && (s.repetition_penalty == 1.0 || s.repetition_penalty == 0.0)
            && self.constraint.is_none()
            && self.top_logprobs.is_none()
    }

    fn next_key(&mut self) -> Result<Array> {
        let (next, sub) = random::split(&self.key, 2)?;
        self.key = next;
        Ok(sub)
    }

    /// The filtered log-probabilities the sample is drawn from (`logits`:
    /// `[1, vocab]`), after processors and filters.
    pub fn filtered(&mut self, logits: &Array, history: &[u32]) -> Result<Array> {
        let s = self.settings.clone();
        let logits = apply_logit_bias(logits, &s.logit_bias)?;
        let logits = apply_repetition_penalty(
            &logits,
            history,
            s.repetition_penalty,
            s.repetition_context_size,
        )?;
        let mut logprobs = logits.subtract(logits.logsumexp_axis(-1, true)?)?;
        if s.temperature == 0.0 {
            return Ok(logprobs);
        }
        if s.top_p > 0.0 && s.top_p < 1.0 {
            logprobs = apply_top_p(&logprobs, s.top_p)?;
        }
        if s.min_p != 0.0 {
            logprobs = apply_min_p(&logprobs, s.min_p, s.min_tokens_to_keep)?;
        }
        if s.xtc_probability > 0.0 {
            let draw =
                random::uniform::<f32, f32>(0.0, 1.0, &[], &self.next_key()?)?.item_exact::<f32>();
            logprobs = apply_xtc(
                &logprobs,
                s.xtc_probability,
                s.xtc_threshold,
                &s.xtc_special_tokens,
                draw,
            )?;
        }
        if s.top_k > 0 && (s.top_k as i32) < logprobs.dim(-1) {
            logprobs = apply_top_k(&logprobs, s.top_k)?;
        }
        Ok(logprobs)
    }

    /// The next token (`[1]`, left on the device so decoding can pipeline).
    pub fn sample(&mut self, logits: &Array, history: &[u32]) -> Result<Array> {
        let masked;
        let mut logits = logits;
        if self.constraint.is_some() {
            // The device runs the step while the host works out the mask.
            async_eval([logits])?;
            if let Some(allowed) = self.allowed_next(history)? {
                masked = apply_allowed(logits, &allowed)?;
                logits = &masked;
            }
        }
        self.sample_allowed(logits, history)
    }

    /// The constraint's bit set of the tokens allowed after `history` (the
    /// tokens generated so far), `None` without a constraint or where any
    /// token may come. For a caller that masks several samplers' logits at
    /// once ([`apply_allowed_rows`]) before [`Sampler::sample_allowed`].
    pub fn allowed_next(&mut self, history: &[u32]) -> Result<Option<Vec<u32>>> {
        #[cfg(feature = "testing")]
        if self.script.is_some() {
            // A scripted reply is what it is.
            return Ok(None);
        }
        let Some(constraint) = &mut self.constraint else {
            return Ok(None);
        };
        if history.len() < self.constrained_through {
            constraint.reset()?;
            self.constrained_through = 0;
        }
        for &token in &history[self.constrained_through..] {
            constraint.consume(token)?;
        }
        self.constrained_through = history.len();
        constraint.allowed()
    }

    /// [`Sampler::sample`] of logits the constraint's mask was already
    /// applied to (or that need none).
    pub fn sample_allowed(&mut self, logits: &Array, history: &[u32]) -> Result<Array> {
        #[cfg(feature = "testing")]
        if let Some(script) = &mut self.script {
            // The model's step is still computed, as when sampling.
            mlx_rs::transforms::eval([logits])?;
            let token = Array::from_slice(&[script.next_token(history)?], &[1]);
            return distributed::agree(token);
        }
        let logprobs = self.filtered(logits, history)?;
        let (token, distribution) = if self.settings.temperature == 0.0 {
            (argmax_axis(&logprobs, -1, None)?, logprobs)
        } else {
            let key = self.next_key()?;
            let scaled = logprobs.multiply(Array::from_f32(1.0 / self.settings.temperature))?;
            let token = random::categorical(&scaled, -1, None, &key)?;
            (token, scaled)
        };
        // Tensor-parallel ranks compute the same logits; rank 0's draw
        // decides, whatever the others' random keys are.
        let token = distributed::agree(token)?;
        if let Some(top) = self.top_logprobs {
            // Tempered logits are normalized only when they are reported.
            let distribution = if self.settings.temperature == 0.0 {
                distribution
            } else {
                distribution.subtract(distribution.logsumexp_axis(-1, true)?)?
            };
            self.queue_logprobs(&token, &distribution, top)?;
        }
        Ok(token)
    }

    /// Queues the log-probabilities of `token` (`[1]`) and of the `top` most
    /// likely tokens of `distribution` (`[1, vocab]`), evaluated with it.
    fn queue_logprobs(&mut self, token: &Array, distribution: &Array, top: usize) -> Result<()> {
        let logprob = take_along_axis(distribution, &token.reshape(&[1, 1])?, -1)?.reshape(&[1])?;
        let vocab = distribution.dim(-1);
        let top = (top as i32).min(vocab);
        let (top_ids, top_values) = if top > 0 {
            let ids = if top == vocab {
                ops::argsort_axis(distribution, -1)?
            } else {
                let order = argpartition_axis(distribution.negative()?, top - 1, -1)?;
                slice(&order, &[0, 0], &[1, top])?
            };
            let values = take_along_axis(distribution, &ids, -1)?;
            (Some(ids), Some(values))
        } else {
            (None, None)
        };
        let mut outputs = vec![token, &logprob];
        outputs.extend(top_ids.iter());
        outputs.extend(top_values.iter());
        async_eval(outputs)?;
        self.pending.push_back(PendingLogprobs {
            token: token.clone(),
            logprob,
            top_ids,
            top_values,
        });
        Ok(())
    }
}
