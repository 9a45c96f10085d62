//! Text generation over a loaded model: prefill, then token by token with
//! the KV cache, streaming text as soon as it is whole UTF-8.
//!
//! [`TokenGenerator::generate`] is the one generation entry point: it keeps
//! the KV cache between calls (the prompt cache), generates as a
//! [`GenerateOptions`] says and ends with one [`FinishReason`]. The layers
//! above it call it: [`crate::reply::reply`] reads the output as an
//! assistant message, [`crate::turn::turn`] runs a whole turn with tool calls.

use std::path::Path;
use std::time::Instant;

use mlx_rs::transforms::async_eval;

use crate::draft::DraftModel;
pub use crate::loaded::LoadedModel;
use crate::lookup;
use crate::models::blocks::last_position;
use crate::models::cache::{KvCache, KvQuantization};
pub use crate::prefill::{PREFILL_CHUNK, prefill};
use crate::sampling::{Sampler, SamplingSettings, TokenLogprobs};
use crate::text::{Detokenizer, StopMatcher};
use crate::{Error, Result};

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn (an end-of-turn token).
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// One of the stop strings appeared (it is not part of the text).
    StopString,
    /// The model ended its turn with a tool call ([`crate::reply::reply`]).
    ToolCalls,
    /// [`Cancel::cancel`] was called.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason`: a stop string, like a cancelled request,
    /// ends as `stop`.
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopString | FinishReason::Cancelled => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }

    /// A name for each reason (`stop`, `length`, `stop_string`,
    /// `tool_calls`, `cancelled`), as `mlx-harmony-generate --json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::StopString => "stop_string",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// What one generation is asked for, beyond the prompt and the sampler.
/// Everything here belongs to one sequence, so that sequences generated
/// together can each have their own.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Text that ends the generation when the model writes it (not shown).
    pub stop: Vec<String>,
    /// How many tokens at the end of the prompt already begin the reply (a
    /// forced call's header): [`crate::reply::reply`] reads them as the
    /// model's own.
    pub opened: usize,
    /// Prompt-lookup decoding ([`crate::lookup`]): up to this many drafted
    /// tokens checked per forward pass; 0 turns it off. Single-sequence
    /// generation only, and only where the caches can rewind and the
    /// sampler needs no token history (no repetition penalty, no
    /// constraint); elsewhere decoding is plain.
    pub prompt_lookup: usize,
}

impl GenerateOptions {
    /// Up to `max_tokens` tokens, no stop strings.
    pub fn new(max_tokens: usize) -> Self {
        GenerateOptions {
            max_tokens,
            ..Default::default()
        }
    }

    /// The same, ending at the first of `stop` too.
    pub fn with_stop(mut self, stop: &[String]) -> Self {
        self.stop = stop.to_vec();
        self
    }
}

/// Stops a generation from another thread (Ctrl-C in chat, a client that
/// went away in the server). Cheap to clone; all clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Clears the flag for the next generation.
    pub fn reset(&self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a generation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the prompt cache rather than run again.
    pub cached_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// The stop string that ended it (with [`FinishReason::StopString`]).
    pub stop_string: Option<String>,
    /// Each generated token's log-probabilities, when the sampler was asked
    /// for them ([`Sampler::set_logprobs`]); else empty.
    pub logprobs: Vec<TokenLogprobs>,
    /// Speculative decoding (prompt lookup or a draft model): tokens
    /// drafted, how many of them the model kept, and the checking forward
    /// passes (all 0 without it). The first token comes from the prompt
    /// pass, so `tokens / steps` is roughly the tokens each step gave.
    pub drafted_tokens: usize,
    pub accepted_draft_tokens: usize,
    pub speculative_steps: usize,
    /// From the call to the first generated token.
    pub time_to_first_token_seconds: f64,
    /// The most memory MLX held during the call, in bytes.
    pub peak_memory_bytes: usize,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

/// One sequence's output as its tokens arrive: the tokens, the text (whole
/// UTF-8, stop strings held back and never shown) and why it ended. The
/// single-sequence loop and the batch scheduler both feed it.
pub(crate) struct Progress {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprobs>,
    pub text: String,
    pub finish: Option<FinishReason>,
    max_tokens: usize,
    detokenizer: Detokenizer,
    stops: StopMatcher,
}

impl Progress {
    pub fn new(options: &GenerateOptions) -> Self {
        Progress {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            finish: None,
            max_tokens: options.max_tokens,
            detokenizer: Detokenizer::new(),
            stops: StopMatcher::new(&options.stop),
        }
    }

    /// Takes the next generated token (with its log-probabilities, when
    /// asked for): an end-of-turn token ends the sequence (and is not passed
    /// on); any other is passed to `on_token` with the text it completes.
    /// Returns whether the sequence goes on.
    pub fn accept(
        &mut self,
        loaded: &LoadedModel,
        id: u32,
        logprobs: Option<TokenLogprobs>,
        on_token: &mut impl FnMut(u32, &str),
    ) -> bool {
        if loaded.eos_token_ids.contains(&id) {
            self.finish = Some(FinishReason::Stop);
            return false;
        }
        self.tokens.push(id);
        self.logprobs.extend(logprobs);
        let piece = self
            .detokenizer
            .push(&loaded.tokenizer, id)
            .unwrap_or_default();
        let (piece, stopped) = self.stops.push(&piece);
        on_token(id, &piece);
        self.text.push_str(&piece);
        if stopped {
            self.finish = Some(FinishReason::StopString);
            return false;
        }
        if self.tokens.len() >= self.max_tokens {
            self.finish = Some(FinishReason::Length);
            return false;
        }
        true
    }

    /// Tokens it may still produce.
    pub fn room(&self) -> usize {
        self.max_tokens.saturating_sub(self.tokens.len())
    }

    /// The stop string that ended the sequence, if one did.
    pub fn stop_string(&self) -> Option<String> {
        self.stops.matched().map(str::to_string)
    }

    /// Ends the sequence: the reason set so far, else `Length` (the one way
    /// out of a loop that sets none); text held back for a stop string that
    /// never came is passed on.
    pub fn close(&mut self, on_token: &mut impl FnMut(u32, &str)) -> FinishReason {
        let reason = *self.finish.get_or_insert(FinishReason::Length);
        if reason != FinishReason::StopString {
            let rest = self.stops.flush();
            if !rest.is_empty() {
                on_token(*self.tokens.last().unwrap_or(&0), &rest);
                self.text.push_str(&rest);
            }
        }
        reason
    }
}

/// Generates up to `options.max_tokens` tokens after `prompt` with
/// `sampler`, calling `on_token` with each token and the text it completes
/// (often empty: text is held back until it is whole UTF-8; special tokens
/// have none). Stops at an end-of-turn token, which is not passed on, or at
/// a stop string. Uses fresh caches: [`TokenGenerator::generate`] keeps them.
pub fn generate(
    loaded: &LoadedModel,
    prompt: &[u32],
    sampler: &mut Sampler,
    options: &GenerateOptions,
    on_token: impl FnMut(u32, &str),
) -> Result<Generation> {
    let mut caches = loaded.model.new_caches();
    let job = Decode {
        caches: &mut caches,
        prompt,
        cached: 0,
        options,
        cancel: &Cancel::new(),
        sliding_after_prompt: None,
        draft: None,
    };
    Ok(decode(loaded, job, sampler, on_token)?.0)
}

/// One sequence's decoding: caches that already hold `prompt[..cached]`.
/// With `sliding_after_prompt`, the sliding-window caches are copied there
/// as the whole prompt left them (`None` for the other layers).
struct Decode<'a> {
    caches: &'a mut [KvCache],
    prompt: &'a [u32],
    cached: usize,
    options: &'a GenerateOptions,
    cancel: &'a Cancel,
    sliding_after_prompt: Option<&'a mut Vec<Option<KvCache>>>,
    /// Speculative decoding with a draft model (in place of prompt lookup).
    draft: Option<&'a mut DraftModel>,
}

/// The decoding loop. Returns the generation and the tokens fed to the
/// model after the prompt (what the caches now hold beyond it).
fn decode(
    loaded: &LoadedModel,
    job: Decode,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32, &str),
) -> Result<(Generation, Vec<u32>)> {
    let Decode {
        caches,
        prompt,
        cached,
        options,
        cancel,
        sliding_after_prompt,
        mut draft,
    } = job;
    let max_tokens = options.max_tokens;
    let model = &loaded.model;
    let start = Instant::now();
    // A failed peak-memory query only loses a statistic.
    let _ = mlx_rs::memory::reset_peak_memory();
    // The next step's forward pass is queued before this token is read.
    // Its sample too, unless the sampler needs this token on the host first
    // (a repetition penalty, a constraint's mask): then the sample follows
    // the read, while the device runs the forward pass.
    let pipelined = !sampler.needs_each_token();
    let logits = prefill(model, caches, &prompt[cached..])?;
    if let Some(saved) = sliding_after_prompt {
        *saved = caches
            .iter()
            .map(|c| c.window().is_some().then(|| c.clone()))
            .collect();
    }
    let mut next = sampler.sample(&last_position(&logits)?, &[])?;
    async_eval([&next])?;
    let mut first_token_at = None;
    let mut fed = Vec::new();
    let mut progress = Progress::new(options);
    // Speculative decoding: drafts from a draft model, else from the text
    // so far (prompt lookup); checked and rewound as one.
    let speculative = (draft.is_some() || options.prompt_lookup > 0)
        && !sampler.needs_each_token()
        && lookup::caches_can_rewind(caches);
    let (mut drafted, mut accepted, mut steps) = (0, 0, 0);
    if speculative && max_tokens > 0 {
        if let Some(draft) = draft.as_deref_mut() {
            // The draft model's prompt pass, counted with the target's.
            draft.catch_up(prompt)?;
        }
        let mut last = next.item_exact::<u32>();
        let mut last_logprobs = sampler.take_logprobs()?;
        first_token_at = Some(Instant::now());
        let mut context = prompt.to_vec();
        loop {
            if cancel.is_cancelled() {
                progress.finish = Some(FinishReason::Cancelled);
                break;
            }
            if !progress.accept(loaded, last, last_logprobs.take(), &mut on_token) {
                break;
            }
            context.push(last);
            // The last token of the room comes from the check itself.
            let room = (max_tokens - progress.tokens.len()).saturating_sub(1);
            let (checked, proposed) = crate::draft::draft_and_check(
                model,
                caches,
                sampler,
                &context,
                draft.as_deref_mut(),
                options.prompt_lookup,
                room,
            )?;
            fed.push(last);
            fed.extend_from_slice(&proposed[..checked.accepted]);
            drafted += proposed.len();
            accepted += checked.accepted;
            steps += 1;
            let mut logprobs = checked.logprobs.into_iter();
            let mut ended = false;
            for &token in &checked.tokens[..checked.accepted] {
                context.push(token);
                if !progress.accept(loaded, token, logprobs.next().flatten(), &mut on_token) {
                    ended = true;
                    break;
                }
            }
            if ended {
                break;
            }
            last = checked.tokens[checked.accepted];
            last_logprobs = logprobs.next().flatten();
        }
    }
    while !speculative && progress.tokens.len() < max_tokens {
        if cancel.is_cancelled() {
            progress.finish = Some(FinishReason::Cancelled);
            break;
        }
        let more = progress.tokens.len() + 1 < max_tokens;
        let mut following = None;
        let mut queued_logits = None;
        if more {
            let logits = last_position(&model.forward(&next.reshape(&[1, 1])?, caches)?)?;
            if pipelined {
                let f = sampler.sample(&logits, &progress.tokens)?;
                async_eval([&f])?;
                following = Some(f);
            } else {
                async_eval([&logits])?;
                queued_logits = Some(logits);
            }
        }
        let id = next.item_exact::<u32>();
        if more {
            fed.push(id);
        }
        first_token_at.get_or_insert_with(Instant::now);
        let logprobs = sampler.take_logprobs()?;
        if !progress.accept(loaded, id, logprobs, &mut on_token) {
            break;
        }
        next = match (following, queued_logits) {
            (Some(f), _) => f,
            (None, Some(logits)) => {
                // Started now, not with the next forward pass's graph: the
                // device samples while the host builds that pass.
                let sample = sampler.sample(&logits, &progress.tokens)?;
                async_eval([&sample])?;
                sample
            }
            (None, None) => {
                let logits = model.forward_tokens(&[id], caches)?;
                fed.push(id);
                sampler.sample(&last_position(&logits)?, &progress.tokens)?
            }
        };
    }
    let finish_reason = progress.close(&mut on_token);
    let stop_string = progress.stop_string();
    let Progress {
        tokens,
        text,
        logprobs,
        ..
    } = progress;
    let end = Instant::now();
    let first = first_token_at.unwrap_or(end);
    let prefill = (first - start).as_secs_f64();
    let decode = (end - first).as_secs_f64();
    let prefilled = prompt.len() - cached;
    let generation = Generation {
        prompt_tokens: prompt.len(),
        cached_tokens: cached,
        finish_reason,
        stop_string,
        logprobs,
        drafted_tokens: drafted,
        accepted_draft_tokens: accepted,
        speculative_steps: steps,
        time_to_first_token_seconds: prefill,
        peak_memory_bytes: mlx_rs::memory::peak_memory().unwrap_or(0),
        prefill_tokens_per_second: if prefill > 0.0 {
            prefilled as f64 / prefill
        } else {
            0.0
        },
        decode_tokens_per_second: if decode > 0.0 && tokens.len() > 1 {
            (tokens.len() - 1) as f64 / decode
        } else {
            0.0
        },
        tokens,
        text,
    };
    Ok((generation, fed))
}

/// A model with a prompt cache: the KV cache of the last call is kept, and a
/// following prompt that starts the same way (the next turn of a chat, a
/// repeated server request) only runs its new tokens through the model.
pub struct TokenGenerator {
    /// Shared, so that a batch scheduler can run the same model.
    pub loaded: std::rc::Rc<LoadedModel>,
    cancel: Cancel,
    caches: Vec<KvCache>,
    /// The tokens the caches hold, in order.
    cached: Vec<u32>,
    /// Sliding-window models: the sliding caches as the last prompt left
    /// them, and that prompt's length. Such caches cannot rewind, and the
    /// next chat turn usually drops what came after the prompt (Harmony
    /// leaves the reasoning out), so they are restored from here instead.
    after_prompt: Option<(usize, Vec<Option<KvCache>>)>,
    /// `--max-kv-size`: the caches hold at most this many positions.
    max_kv_size: Option<i32>,
    /// `--kv-bits`: the caches keep keys and values quantized.
    kv_quantization: Option<KvQuantization>,
    /// `--draft-model`: speculative decoding with a second, smaller model.
    draft: Option<DraftModel>,
}

impl TokenGenerator {
    pub fn new(loaded: LoadedModel) -> Self {
        Self::from_shared(std::rc::Rc::new(loaded))
    }

    /// A generator over a model loaded once and shared on this thread (with
    /// a [`crate::batch::BatchGenerator`], say: a benchmark runs both paths
    /// on the same weights); its caches are its own.
    pub fn from_shared(loaded: std::rc::Rc<LoadedModel>) -> Self {
        let caches = loaded.model.new_caches();
        TokenGenerator {
            loaded,
            cancel: Cancel::new(),
            caches,
            cached: Vec::new(),
            after_prompt: None,
            max_kv_size: None,
            kv_quantization: None,
            draft: None,
        }
    }

    /// Keeps the KV cache quantized as `settings` say (`None`: 16-bit, the
    /// model's own type), as mlx-lm's `--kv-bits`: about a quarter of the
    /// memory at 4 bits, attention run on the quantized values. Llama-family
    /// models, not with [`TokenGenerator::set_max_kv_size`]. Forgets the
    /// prompt cache.
    pub fn set_kv_quantization(&mut self, settings: Option<KvQuantization>) -> Result<()> {
        if let Some(settings) = settings {
            if self.max_kv_size.is_some() {
                return Err(bounded_and_quantized());
            }
            self.loaded.model.new_caches_quantized(settings)?;
        }
        self.kv_quantization = settings;
        self.clear_cache();
        Ok(())
    }

    /// Decodes speculatively with `draft` from now on (`None`: without a
    /// draft model): each step it drafts a few tokens and the model checks
    /// them in one forward pass ([`crate::draft`]). Used where prompt lookup
    /// would be (caches that can rewind, a sampler that needs no token
    /// history), in its place.
    pub fn set_draft_model(&mut self, draft: Option<DraftModel>) {
        self.draft = draft;
    }

    /// The draft model, taken out (the server's batch uses it instead).
    pub fn take_draft_model(&mut self) -> Option<DraftModel> {
        self.draft.take()
    }

    /// Bounds the KV cache to `max_kv_size` positions (`None`: unbounded):
    /// past the bound the first positions and the newest are kept, as
    /// mlx-lm's `--max-kv-size` does (Llama family; GPT-OSS's sliding layers
    /// are bounded already). Forgets the prompt cache.
    pub fn set_max_kv_size(&mut self, max_kv_size: Option<u32>) -> Result<()> {
        if max_kv_size.is_some() && self.kv_quantization.is_some() {
            return Err(bounded_and_quantized());
        }
        self.max_kv_size = kv_size_bound(max_kv_size)?;
        self.clear_cache();
        Ok(())
    }

    /// The quantization set by [`TokenGenerator::set_kv_quantization`].
    pub fn kv_quantization(&self) -> Option<KvQuantization> {
        self.kv_quantization
    }

    /// The bound set by [`TokenGenerator::set_max_kv_size`].
    pub fn max_kv_size(&self) -> Option<i32> {
        self.max_kv_size
    }

    /// Loads a model (see [`LoadedModel::load`]).
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::new(LoadedModel::load(path)?))
    }

    /// A handle that stops the generation in progress (from another thread);
    /// each call to `generate` clears it first.
    pub fn cancel_handle(&self) -> Cancel {
        self.cancel.clone()
    }

    /// Tokens currently held in the prompt cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Bytes the KV cache's arrays hold now (capacity included).
    pub fn cache_bytes(&self) -> usize {
        self.caches.iter().map(KvCache::nbytes).sum()
    }

    /// Forgets the prompt cache.
    pub fn clear_cache(&mut self) {
        self.caches = self
            .kv_quantization
            // Checked by set_kv_quantization: these settings make caches.
            .and_then(|settings| self.loaded.model.new_caches_quantized(settings).ok())
            .unwrap_or_else(|| self.loaded.model.new_caches_bounded(self.max_kv_size));
        self.cached.clear();
        self.after_prompt = None;
        if let Some(draft) = &mut self.draft {
            draft.clear_cache();
        }
    }

    /// Generates after `prompt` as `options` say (see [`generate`]), reusing
    /// the longest common prefix of the prompt cache and `prompt` (at least
    /// one prompt token always runs, for the logits). Clears the cancel flag
    /// first.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        options: &GenerateOptions,
        on_token: impl FnMut(u32, &str),
    ) -> Result<Generation> {
        self.cancel.reset();
        if prompt.is_empty() {
            return Err(Error::Invalid(
                "cannot generate from an empty prompt".into(),
            ));
        }
        let common = crate::prefill::reusable_prefix(&self.cached, prompt);
        let excess = (self.cached.len() - common) as i32;
        // A sliding-window cache cannot give back positions it has dropped:
        // such a model goes back to where the last prompt ended if the new
        // prompt starts with it (the next turn of a chat), else starts afresh.
        let sliding_model = self.caches.iter().any(|c| c.window().is_some());
        // A bounded cache gives positions back only until it has dropped one.
        let bound_passed = self
            .caches
            .iter()
            .any(|c| c.max_size().is_some_and(|max| c.offset() >= max));
        let trimmable = excess == 0 || (!sliding_model && !bound_passed);
        let saved = self
            .after_prompt
            .take()
            .filter(|(position, _)| !trimmable && *position <= common);
        let reuse = if trimmable {
            for cache in &mut self.caches {
                cache.trim(excess);
            }
            common
        } else if let Some((position, sliding)) = saved {
            let beyond = (self.cached.len() - position) as i32;
            for (cache, saved) in self.caches.iter_mut().zip(sliding) {
                match saved {
                    Some(saved) => *cache = saved,
                    None => {
                        cache.trim(beyond);
                    }
                }
            }
            position
        } else {
            self.clear_cache();
            0
        };
        self.cached.truncate(reuse);
        let mut sliding_after_prompt = Vec::new();
        // If anything fails midway the caches are in an unknown state: forget them.
        let result = decode(
            &self.loaded,
            Decode {
                caches: &mut self.caches,
                prompt,
                cached: reuse,
                options,
                cancel: &self.cancel,
                sliding_after_prompt: sliding_model.then_some(&mut sliding_after_prompt),
                draft: self.draft.as_mut(),
            },
            sampler,
            on_token,
        );
        match result {
            Ok((generation, fed)) => {
                self.cached = prompt.to_vec();
                self.cached.extend(fed);
                if sliding_model {
                    self.after_prompt = Some((prompt.len(), sliding_after_prompt));
                }
                Ok(generation)
            }
            Err(err) => {
                self.clear_cache();
                Err(err)
            }
        }
    }
}

/// Greedy generation (temperature 0, no other processing) with fresh caches.
pub fn generate_greedy(
    loaded: &LoadedModel,
    prompt: &[u32],
    max_tokens: usize,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mut sampler = Sampler::new(SamplingSettings::default())?;
    let options = GenerateOptions::new(max_tokens);
    generate(loaded, prompt, &mut sampler, &options, |_, piece| {
        if !piece.is_empty() {
            on_text(piece)
        }
    })
}

/// A `max_kv_size` as the caches take it: 1 to `i32::MAX` positions.
pub(crate) fn kv_size_bound(max_kv_size: Option<u32>) -> Result<Option<i32>> {
    match max_kv_size {
        None => Ok(None),
        Some(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Some(n as i32)),
        Some(n) => Err(Error::Invalid(format!(
            "max_kv_size must be from 1 to {}, not {n}",
            i32::MAX
        ))),
    }
}

/// Why a KV cache cannot be both bounded and quantized (the caches' kinds
/// are one or the other).
pub(crate) fn bounded_and_quantized() -> Error {
    Error::Invalid(
        "a quantized KV cache cannot also be bounded: use --kv-bits or --max-kv-size, not both"
            .into(),
    )
}
