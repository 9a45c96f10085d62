//! Continuous batching: many sequences decoding together, one forward pass
//! per step for all of them.
//!
//! A [`BatchGenerator`] owns the rows of a batch (their caches, samplers and
//! output so far). Sequences join and leave at step boundaries: a new prompt
//! is run one chunk of [`crate::prefill::prefill_chunk`] tokens per step so that the
//! running rows keep flowing (prompts queued together that each fit a chunk
//! run in one pass together), and its cache then
//! joins the batch's ([`BatchKvCache::join`]); a row that ends (end of turn, length, stop
//! string, cancelled) is dropped from the batch at the next step. Each
//! sequence keeps its own sampler, stop strings, token limit and cancel
//! handle. Decoding is pipelined as in the single-sequence loop: the next
//! step is queued before the tokens of this one are read.
//!
//! This file holds the batch and its decode steps; `prompts` the prompt
//! side (chunks, several prompts in one pass, joining), `prompt_cache` the
//! caches kept across requests, `replica` tensor parallelism's hand-over
//! from rank 0.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use mlx_rs::Array;
use mlx_rs::ops;
use mlx_rs::transforms::{async_eval, eval};

use crate::array_ext::slice;
use crate::draft::DraftModel;
use crate::generate::{Cancel, FinishReason, GenerateOptions, Generation, LoadedModel, Progress};
use crate::lookup;
use crate::models::batch_cache::BatchKvCache;
use crate::models::blocks::last_position;
use crate::models::cache::{KvCache, KvQuantization, LayerCache};
use crate::sampling::{Sampler, TokenLogprobs, apply_allowed_rows, greedy_rows};
use crate::{Error, Result};

mod prompt_cache;
mod prompts;
mod replica;

use prompt_cache::PromptCache;
use replica::{Replica, SharedSequence};

/// Names a sequence of a batch.
pub type SequenceId = u64;

/// One sequence to generate.
pub struct SequenceRequest {
    pub prompt: Vec<u32>,
    pub sampler: Sampler,
    pub options: GenerateOptions,
    /// Stops this sequence only.
    pub cancel: Cancel,
}

/// What a step produced, sequence by sequence, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchEvent {
    /// A generated token and the text it completes (often empty: text is
    /// held back until it is whole UTF-8 or cannot start a stop string).
    Token {
        id: SequenceId,
        token: u32,
        text: String,
        /// Its log-probabilities, when the sequence's sampler was asked for
        /// them (`None` for text handed on at the end without a token).
        logprobs: Option<TokenLogprobs>,
    },
    /// The sequence ended; its statistics and why.
    Finished {
        id: SequenceId,
        generation: Generation,
    },
    /// The sequence could not run (its prompt failed); the others go on.
    Failed { id: SequenceId, message: String },
}

/// A sequence whose prompt is being run.
struct Prefill {
    id: SequenceId,
    request: SequenceRequest,
    caches: Vec<KvCache>,
    /// Prompt tokens already in `caches`.
    done: usize,
    /// Of those, how many came from the prompt cache.
    cached: usize,
    added: Instant,
}

/// A row of the batch.
struct Row {
    id: SequenceId,
    sampler: Sampler,
    cancel: Cancel,
    progress: Progress,
    prompt_tokens: usize,
    added: Instant,
    first_token_at: Instant,
    prefill_seconds: f64,
    /// The row's entry of `next` was read already (its first token, read
    /// when the row joined).
    first_read: bool,
    /// What the row's cache holds: the prompt, then every token fed back.
    history: Vec<u32>,
    cached_tokens: usize,
    /// `prompt_lookup`: tokens drafted from the text so far while the row
    /// decodes alone; 0: none.
    lookup: usize,
    /// Speculative statistics: tokens drafted, kept, and checks run.
    drafted: usize,
    accepted: usize,
    speculative_steps: usize,
}

/// The batch scheduler; see the module docs.
pub struct BatchGenerator {
    loaded: Rc<LoadedModel>,
    max_rows: usize,
    next_id: SequenceId,
    waiting: VecDeque<(SequenceId, SequenceRequest, Instant)>,
    prefill: Option<Prefill>,
    rows: Vec<Row>,
    caches: Vec<BatchKvCache>,
    /// The tokens the rows feed at the next step (`[rows]`, on the device).
    next: Option<Array>,
    prompt_cache: PromptCache,
    /// `--max-kv-size`: positions a row's cache holds (the first and the
    /// newest); `None`: every position.
    max_kv_size: Option<i32>,
    /// Whether the model's caches can take tokens back (no sliding-window
    /// layers), as prompt lookup's checks need.
    can_speculate: bool,
    /// `--draft-model`: drafts for a row decoding alone (every request).
    draft: Option<DraftModel>,
    /// `--kv-bits`: the rows' caches are kept packed.
    kv_quantization: Option<KvQuantization>,
    /// Where the decode steps' time went (for the benchmarks).
    decode_timing: DecodeTiming,
    /// Under tensor parallelism: how this rank's batch keeps in step with
    /// the others'.
    replica: Option<Replica>,
    /// Whether several waiting prompts may run in one forward pass
    /// ([`BatchGenerator::prefill_group`]; `MLX_HARMONY_GROUP_PROMPTS=off`
    /// or [`BatchGenerator::set_group_prompts`] runs them one at a time).
    group_prompts: bool,
    /// Whether a step with no row decoding may run more prompt tokens
    /// ([`IDLE_PREFILL_BUDGET`]; `MLX_HARMONY_IDLE_PREFILL=off` or
    /// [`BatchGenerator::set_idle_prefill`] keeps [`PREFILL_BUDGET`]).
    idle_prefill: bool,
    /// Prompts that ran in a group so far.
    grouped: usize,
    /// What a decode step hands MLX to evaluate ([`StepEval`]).
    step_eval: StepEval,
    /// Where to write the next decode step's graph (for the benchmarks).
    graph_export: Option<std::path::PathBuf>,
}

/// Where the time of the (one-token) decode steps went, summed: building
/// each next step's graph and handing it to MLX (`queue_seconds`: MLX
/// encodes the kernels on this thread, and blocks there while too much work
/// is in flight), of it the building alone (`build_seconds`: our code and
/// MLX's graph, no kernel encoded), and waiting for the current step's
/// tokens (`wait_seconds`). Waits near zero say the time is in the queueing; only
/// with the per-operation costs of `scripts/step_ops.py` beside it does it
/// say whether that is host work or the device behind (docs/PERFORMANCE.md).
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeTiming {
    pub steps: usize,
    pub queue_seconds: f64,
    pub build_seconds: f64,
    pub wait_seconds: f64,
}

impl BatchGenerator {
    /// A scheduler over `loaded` that decodes at most `max_rows` sequences
    /// at once (more wait their turn).
    pub fn new(loaded: Rc<LoadedModel>, max_rows: usize) -> Self {
        Self::with_prompt_cache(loaded, max_rows, 0)
    }

    /// Like [`BatchGenerator::new`], keeping up to `prompt_cache_bytes` of
    /// finished sequences' caches for prompts that start the same way.
    pub fn with_prompt_cache(
        loaded: Rc<LoadedModel>,
        max_rows: usize,
        prompt_cache_bytes: usize,
    ) -> Self {
        let caches = loaded.model.new_batch_caches();
        let can_speculate = lookup::caches_can_rewind(&loaded.model.new_caches());
        BatchGenerator {
            loaded,
            max_rows: max_rows.max(1),
            next_id: 0,
            waiting: VecDeque::new(),
            prefill: None,
            rows: Vec::new(),
            caches,
            next: None,
            prompt_cache: PromptCache::new(prompt_cache_bytes),
            max_kv_size: None,
            can_speculate,
            draft: None,
            kv_quantization: None,
            decode_timing: DecodeTiming::default(),
            graph_export: None,
            replica: None,
            group_prompts: groups_prompts_by_default(),
            idle_prefill: idle_prefill_by_default(),
            grouped: 0,
            step_eval: StepEval::from_env(),
        }
    }

    /// Whether several waiting prompts may run together in one forward pass
    /// (the default; `false` runs each alone, as before, to compare).
    pub fn set_group_prompts(&mut self, group: bool) {
        self.group_prompts = group;
    }

    /// Whether a step with no row decoding runs up to
    /// [`IDLE_PREFILL_BUDGET`] prompt tokens, in larger groups (the
    /// default), or [`PREFILL_BUDGET`] as a step with rows does (`false`, to
    /// compare).
    pub fn set_idle_prefill(&mut self, idle: bool) {
        self.idle_prefill = idle;
    }

    /// What a decode step hands MLX to evaluate: [`StepEval::Auto`] unless
    /// `MLX_HARMONY_STEP_EVAL` says otherwise. The tokens depend on every
    /// array a step writes, so all of it runs whichever is chosen.
    pub fn set_step_eval(&mut self, step_eval: StepEval) {
        self.step_eval = step_eval;
    }

    /// How many prompts ran in a group with others so far.
    pub fn grouped_prompts(&self) -> usize {
        self.grouped
    }

    /// Keeps every row's keys and values quantized as `settings` say
    /// (`None`: the model's precision), as the single-sequence `--kv-bits`:
    /// prompts run in quantized caches and join the batch packed, once the
    /// batch holds `settings.start` columns at the latest. Llama family; not
    /// with [`BatchGenerator::set_max_kv_size`]. Only while nothing is
    /// running.
    pub fn set_kv_quantization(&mut self, settings: Option<KvQuantization>) -> Result<()> {
        self.check_cache_change(self.max_kv_size.is_some(), settings.is_some())?;
        self.caches = match settings {
            Some(settings) => self.loaded.model.new_batch_caches_quantized(settings)?,
            None => self.loaded.model.new_batch_caches_bounded(self.max_kv_size),
        };
        self.kv_quantization = settings;
        Ok(())
    }

    /// The caches' settings change only while nothing runs, and a cache is
    /// bounded or quantized, not both.
    fn check_cache_change(&self, bounded: bool, quantized: bool) -> Result<()> {
        if !self.is_idle() {
            return Err(Error::Invalid(
                "the KV cache's settings are set before sequences are added".into(),
            ));
        }
        if bounded && quantized {
            return Err(crate::generate::bounded_and_quantized());
        }
        Ok(())
    }

    /// Fresh caches for the batch, as set.
    fn fresh_batch_caches(&self) -> Vec<BatchKvCache> {
        match self.kv_quantization {
            Some(settings) => self
                .loaded
                .model
                .new_batch_caches_quantized(settings)
                .expect("checked when set"),
            None => self.loaded.model.new_batch_caches_bounded(self.max_kv_size),
        }
    }

    /// Fresh caches for one prompt that will join the batch.
    fn fresh_joining_caches(&self) -> Vec<KvCache> {
        match self.kv_quantization {
            Some(settings) => self
                .loaded
                .model
                .new_caches_quantized(settings)
                .expect("checked when set"),
            None => self.loaded.model.new_joining_caches(self.max_kv_size),
        }
    }

    /// Speculative decoding with a draft model (`None`: none) for a row
    /// while it decodes alone, as prompt lookup (a draft model, when set,
    /// drafts instead of the lookup).
    pub fn set_draft_model(&mut self, draft: Option<DraftModel>) {
        self.draft = draft;
    }

    /// The draft model, taken out (to move it to another scheduler).
    pub fn take_draft_model(&mut self) -> Option<DraftModel> {
        self.draft.take()
    }

    /// Bounds every row's KV cache to `max_kv_size` positions (`None`:
    /// unbounded), as the single-sequence `--max-kv-size`: a row keeps its
    /// first positions and its newest, and decodes past the bound (Llama
    /// family; GPT-OSS's sliding layers already see only their window, and
    /// its caches stay as they are). Only while nothing is running.
    pub fn set_max_kv_size(&mut self, max_kv_size: Option<u32>) -> Result<()> {
        self.check_cache_change(max_kv_size.is_some(), self.kv_quantization.is_some())?;
        self.max_kv_size = crate::generate::kv_size_bound(max_kv_size)?;
        self.caches = self.fresh_batch_caches();
        Ok(())
    }

    /// The bound set by [`BatchGenerator::set_max_kv_size`].
    pub fn max_kv_size(&self) -> Option<i32> {
        self.max_kv_size
    }

    pub fn loaded(&self) -> &LoadedModel {
        &self.loaded
    }

    /// Queues a sequence; it joins the batch at a following step.
    pub fn add(&mut self, mut request: SequenceRequest) -> SequenceId {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(replica) = &mut self.replica {
            // The batch reads a flag of its own, set at the next step from
            // the caller's (see `Replica`).
            let inside = Cancel::new();
            let outside = std::mem::replace(&mut request.cancel, inside.clone());
            replica.cancels.insert(id, (outside, inside));
            if replica.group.rank() == 0 {
                replica.added.push(SharedSequence {
                    id,
                    prompt: request.prompt.clone(),
                    sampler: request.sampler.shape(),
                    options: request.options.clone(),
                });
            }
        }
        self.waiting.push_back((id, request, Instant::now()));
        id
    }

    /// Sequences decoding now.
    pub fn active(&self) -> usize {
        self.rows.len()
    }

    /// Sequences not decoding yet (queued, or their prompt running).
    pub fn waiting(&self) -> usize {
        self.waiting.len() + usize::from(self.prefill.is_some())
    }

    /// Whether nothing is left to do.
    pub fn is_idle(&self) -> bool {
        self.rows.is_empty() && self.waiting.is_empty() && self.prefill.is_none()
    }

    /// Writes the next one-token decode step's graph, as built and before
    /// it runs, to `path` in Graphviz form (MLX's `export_to_dot`; the
    /// caches' arrays with the step's output): what the benchmarks count
    /// against the single-stream path's (`scripts/graph_counts.py`).
    pub fn export_next_decode_graph(&mut self, path: std::path::PathBuf) {
        self.graph_export = Some(path);
    }

    /// Where the one-token decode steps' time went so far.
    pub fn decode_timing(&self) -> DecodeTiming {
        self.decode_timing
    }

    /// One step: a chunk of a waiting prompt (when there is room), then one
    /// token for every row. Returns what happened, in order.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        self.lead()?;
        let mut events = Vec::new();
        // Prompt chunks up to the step's budget: several short prompts can
        // join in one step, a long one takes a chunk per step. With no row
        // decoding, no stream waits on this step: the budget is larger, and
        // so are the groups (fewer passes, each one's fixed costs paid
        // fewer times).
        let none_decoding = self.rows.is_empty();
        let idle = self.idle_prefill && none_decoding;
        let mut budget = if idle {
            IDLE_PREFILL_BUDGET
        } else {
            PREFILL_BUDGET
        };
        while budget > 0 {
            let mut ran = 0;
            if self.group_prompts {
                ran = self.prefill_group(budget, idle, &mut events)?;
            }
            if ran == 0 {
                ran = self.prefill_chunk(&mut events)?;
            }
            if ran == 0 {
                break;
            }
            budget = budget.saturating_sub(ran);
        }
        // Rows that joined a batch with no row decoding have their first
        // tokens in `events` already: they go back now, and their first
        // decode step is queued by the next call. Queueing it here would
        // hold those tokens back by the queueing's time (on the CPU the
        // whole step, on CUDA its encoding, a few ms) with no other row to
        // gain from it.
        if !none_decoding {
            self.decode(&mut events)?;
        }
        if let Some(replica) = &mut self.replica {
            for event in &events {
                if let BatchEvent::Finished { id, .. } | BatchEvent::Failed { id, .. } = event {
                    replica.cancels.remove(id);
                }
            }
        }
        Ok(events)
    }

    /// One token for every row: the next step is queued, then this step's
    /// tokens are read and handed on, and the rows that ended leave.
    fn decode(&mut self, events: &mut Vec<BatchEvent>) -> Result<()> {
        if self.lone_speculation() {
            return self.decode_speculative(events);
        }
        let Some(current) = self.next.take() else {
            return Ok(());
        };
        let rows = self.rows.len() as i32;
        // When the tokens read now are every row's last (each has room for
        // one more token, and it is not a joiner's first, read already),
        // nothing is fed: no step is queued that no one would read (as
        // TokenGenerator's loop stops; a finished batch of one would
        // otherwise pay a step's building and queueing before its last
        // token goes back).
        let last = self
            .rows
            .iter()
            .all(|r| !r.first_read && r.progress.room() == 1);
        // The next step's forward pass is queued before this step is read;
        // its samples too, unless a row needs its newest token on the host
        // first (a repetition penalty, a constraint's mask): then they are
        // taken after the read, while the device runs the forward pass.
        let pipelined = self.rows.iter().all(|r| !r.sampler.needs_each_token());
        let begun = Instant::now();
        let mut logits = None;
        let mut following = None;
        if !last {
            let queued_logits = self.forward(&current, rows)?;
            if pipelined {
                following = Some(self.samples(&queued_logits)?);
            }
            self.decode_timing.build_seconds += begun.elapsed().as_secs_f64();
            let output = following.as_ref().unwrap_or(&queued_logits);
            if let Some(path) = self.graph_export.take() {
                crate::array_ext::export_to_dot(&path, &self.step_outputs(output))?;
            }
            async_eval(self.step_outputs(output))?;
            logits = Some(queued_logits);
        }
        let queued = Instant::now();
        let tokens: Vec<u32> = {
            eval([&current])?;
            current.as_slice::<u32>().to_vec()
        };
        if !last {
            self.decode_timing.steps += 1;
            self.decode_timing.queue_seconds += (queued - begun).as_secs_f64();
            self.decode_timing.wait_seconds += queued.elapsed().as_secs_f64();
        }
        let mut keep = Vec::with_capacity(self.rows.len());
        let mut ended = Vec::new();
        for (index, (row, &token)) in self.rows.iter_mut().zip(&tokens).enumerate() {
            // Read or not, the token was fed to the model at this step,
            // unless it was the last (the row's cache holds its history).
            if !last {
                row.history.push(token);
            }
            if row.first_read {
                row.first_read = false;
            } else if !row.cancel.is_cancelled() {
                let id = row.id;
                let logprobs = row.sampler.take_logprobs()?;
                row.progress
                    .accept(&self.loaded, token, logprobs.clone(), &mut |token, text| {
                        events.push(BatchEvent::Token {
                            id,
                            token,
                            text: text.to_string(),
                            logprobs: logprobs.clone(),
                        })
                    });
            }
            if row.progress.finish.is_none() && row.cancel.is_cancelled() {
                row.progress.finish = Some(FinishReason::Cancelled);
            }
            match row.progress.finish {
                None => keep.push(index),
                Some(_) => ended.push(index),
            }
        }
        let following = match (following, logits) {
            (Some(f), _) => Some(f),
            (None, Some(logits)) => {
                let next = self.samples(&logits)?;
                async_eval([&next])?;
                Some(next)
            }
            // The last tokens: every row ended with them.
            (None, None) => None,
        };
        self.close_rows(&keep, &ended, following, events)
    }

    /// Whether this step checks drafts: one row decoding, alone, that asked
    /// for prompt lookup or with a draft model set, with a sampler that
    /// needs no token on the host before the next is drawn and caches that
    /// can take tokens back. With other rows the GPU has work enough: they
    /// decode one token a step.
    fn lone_speculation(&self) -> bool {
        match self.rows.as_slice() {
            [row] => {
                (row.lookup > 0 || self.draft.is_some())
                    && self.can_speculate
                    && self.max_kv_size.is_none()
                    && !row.sampler.needs_each_token()
            }
            _ => false,
        }
    }

    /// A speculative step of the lone row: its pending token, read now,
    /// and a draft (the draft model's, else one from its text so far) are
    /// checked in one forward pass (`draft::draft_and_check`, as the
    /// single-sequence loop); what the model kept is handed on, and its own
    /// next token becomes the row's pending one.
    fn decode_speculative(&mut self, events: &mut Vec<BatchEvent>) -> Result<()> {
        let Some(current) = self.next.take() else {
            return Ok(());
        };
        eval([&current])?;
        let last = current.as_slice::<u32>()[0];
        let loaded = self.loaded.clone();
        let row = &mut self.rows[0];
        let id = row.id;
        let mut emit = |row: &mut Row, token: u32, logprobs: Option<TokenLogprobs>| {
            row.progress
                .accept(&loaded, token, logprobs.clone(), &mut |token, text| {
                    events.push(BatchEvent::Token {
                        id,
                        token,
                        text: text.to_string(),
                        logprobs: logprobs.clone(),
                    })
                })
        };
        let goes_on = if row.first_read {
            row.first_read = false;
            true
        } else if row.cancel.is_cancelled() {
            false
        } else {
            let logprobs = row.sampler.take_logprobs()?;
            emit(row, last, logprobs)
        };
        if row.cancel.is_cancelled() && row.progress.finish.is_none() {
            row.progress.finish = Some(FinishReason::Cancelled);
        }
        if !goes_on || row.progress.finish.is_some() {
            // Nothing is queued: the row leaves with its cache as it is.
            return self.close_rows(&[], &[0], Some(current), events);
        }
        let mut context = row.history.clone();
        context.push(last);
        let room = row.progress.room().saturating_sub(1);
        let (checked, proposed) = crate::draft::draft_and_check(
            &loaded.model,
            &mut self.caches,
            &mut row.sampler,
            &context,
            self.draft.as_mut(),
            row.lookup,
            room,
        )?;
        row.history.push(last);
        row.history.extend_from_slice(&proposed[..checked.accepted]);
        row.drafted += proposed.len();
        row.accepted += checked.accepted;
        row.speculative_steps += 1;
        // Every token the model chose is handed on now; the last, not yet
        // fed, waits as the row's pending token (read already).
        let mut logprobs = checked.logprobs.into_iter();
        for &token in &checked.tokens {
            if !emit(row, token, logprobs.next().flatten()) {
                break;
            }
        }
        let pending = *checked.tokens.last().expect("the model's own token");
        row.first_read = true;
        let pending = Array::from_slice(&[pending], &[1]);
        if row.progress.finish.is_some() {
            return self.close_rows(&[], &[0], Some(pending), events);
        }
        self.next = Some(pending);
        Ok(())
    }

    /// After a step: the rows at `ended` leave (their caches to the prompt
    /// cache, their entries of the queued step `following` dropped); the
    /// rows at `keep` go on. `following` is `None` only when no step was
    /// queued, as every row ends.
    fn close_rows(
        &mut self,
        keep: &[usize],
        ended: &[usize],
        following: Option<Array>,
        events: &mut Vec<BatchEvent>,
    ) -> Result<()> {
        if following.is_none() && !keep.is_empty() {
            // Those rows would wait forever for a step never queued.
            return Err(Error::Invalid(
                "internal: rows go on with no decode step queued for them".into(),
            ));
        }
        if ended.is_empty() {
            self.next = following;
            return Ok(());
        }
        // Rows leave: their caches go to the prompt cache, their entries of
        // the queued step are dropped.
        if self.prompt_cache.enabled() {
            for &index in ended {
                let caches = self
                    .caches
                    .iter()
                    .map(|c| c.extract(index))
                    .collect::<Result<Option<Vec<_>>>>()?;
                // A bounded row that dropped positions is not kept.
                let Some(caches) = caches else { continue };
                let states: Vec<&Array> = caches.iter().flat_map(|c| c.state()).collect();
                eval(states)?;
                let tokens = self.rows[index].history.clone();
                self.prompt_cache.insert(tokens, caches);
            }
        }
        let (kept_rows, finished): (Vec<Row>, Vec<Row>) = std::mem::take(&mut self.rows)
            .into_iter()
            .partition(|row| row.progress.finish.is_none());
        for row in finished {
            finish(row_done(row), events);
        }
        self.rows = kept_rows;
        for cache in &mut self.caches {
            cache.retain(keep)?;
        }
        self.next = match following {
            Some(following) if !keep.is_empty() => {
                let index = Array::from_slice(
                    &keep.iter().map(|&k| k as i32).collect::<Vec<_>>(),
                    &[keep.len() as i32],
                );
                Some(following.take_axis(&index, 0)?)
            }
            _ => None,
        };
        Ok(())
    }

    /// The forward pass of `tokens` (`[rows]`): the last position's logits
    /// (`[rows, vocab]`).
    fn forward(&mut self, tokens: &Array, rows: i32) -> Result<Array> {
        let logits = self
            .loaded
            .model
            .forward(&tokens.reshape(&[rows, 1])?, &mut self.caches)?;
        last_position(&logits)
    }

    /// What a step hands MLX to run: `output` and the caches it updates.
    fn step_outputs<'a>(&'a self, output: &'a Array) -> Vec<&'a Array> {
        let mut outputs = vec![output];
        let caches_too = match self.step_eval {
            StepEval::Auto => self.rows.len() > 1,
            StepEval::Tokens => false,
            StepEval::Caches => true,
        };
        if caches_too {
            outputs.extend(self.caches.iter().flat_map(|c| c.state()));
        }
        outputs
    }

    /// Each row's sample of `last` (`[rows, vocab]`). Plain greedy rows (the
    /// common case for benchmarks and tools) are sampled together in one
    /// operation; the others each by their sampler.
    fn samples(&mut self, last: &Array) -> Result<Array> {
        let next = if self.rows.iter().all(|r| r.sampler.is_plain_greedy()) {
            greedy_rows(last)?
        } else {
            // Held rows' masks go to the device together: one upload and one
            // expansion a step, however many rows are held.
            let mut allowed = Vec::with_capacity(self.rows.len());
            for row in &mut self.rows {
                allowed.push(row.sampler.allowed_next(&row.progress.tokens)?);
            }
            let masked;
            let last = if allowed.iter().any(Option::is_some) {
                let rows: Vec<Option<&[u32]>> = allowed.iter().map(Option::as_deref).collect();
                masked = apply_allowed_rows(last, &rows)?;
                &masked
            } else {
                last
            };
            let mut sampled = Vec::with_capacity(self.rows.len());
            for (index, row) in self.rows.iter_mut().enumerate() {
                let row_logits =
                    slice(last, &[index as i32, 0], &[index as i32 + 1, last.dim(-1)])?;
                sampled.push(
                    row.sampler
                        .sample_allowed(&row_logits, &row.progress.tokens)?,
                );
            }
            ops::concatenate(&sampled, 0)?
        };
        Ok(next)
    }

    /// Every row fails (the batch's caches are in an unknown state).
    fn fail_all(&mut self, events: &mut Vec<BatchEvent>, error: &Error) {
        for row in self.rows.drain(..) {
            events.push(BatchEvent::Failed {
                id: row.id,
                message: error.to_string(),
            });
        }
        self.caches = self.fresh_batch_caches();
        self.next = None;
    }
}

/// What a decode step hands MLX to evaluate, beside nothing else it needs:
/// the step's tokens, or its tokens and every cache array it writes.
///
/// On CUDA the two run the same kernels but pace the steps differently: with
/// the caches, steps come evenly (Llama-3-8B on the H200: 5.7-5.8 ms each);
/// with the tokens alone, as `TokenGenerator`'s loop, fast steps alternate
/// with one about twice as long every few. A batch of one whose steps took
/// the caches too decoded ~1% more slowly than with its tokens alone, 15
/// runs in 16 (docs/PERFORMANCE.md, "A batch of one against the
/// single-stream paths, run by run").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepEval {
    /// The tokens alone while one row decodes (a batch of one runs as the
    /// single-stream path does), the caches too with more rows (as the
    /// batch's concurrency figures were measured).
    #[default]
    Auto,
    /// The tokens alone (`MLX_HARMONY_STEP_EVAL=output`).
    Tokens,
    /// The tokens and the caches' arrays (`MLX_HARMONY_STEP_EVAL=caches`).
    Caches,
}

impl StepEval {
    /// `MLX_HARMONY_STEP_EVAL`: `output`, `caches`, or `auto` (unset; another
    /// value is named in a warning): a benchmark's switch, not a user setting.
    pub fn from_env() -> Self {
        match crate::cuda_kernel::env_setting(
            "MLX_HARMONY_STEP_EVAL",
            &["auto", "output", "caches"],
        ) {
            "output" => StepEval::Tokens,
            "caches" => StepEval::Caches,
            _ => StepEval::Auto,
        }
    }
}

/// Whether a new [`BatchGenerator`] runs several waiting prompts in one pass:
/// yes unless `MLX_HARMONY_GROUP_PROMPTS=off` (to compare).
pub fn groups_prompts_by_default() -> bool {
    std::env::var("MLX_HARMONY_GROUP_PROMPTS").as_deref() != Ok("off")
}

/// Whether a new [`BatchGenerator`] runs up to [`IDLE_PREFILL_BUDGET`]
/// prompt tokens in a step with no row decoding: yes unless
/// `MLX_HARMONY_IDLE_PREFILL=off` (to compare).
pub fn idle_prefill_by_default() -> bool {
    std::env::var("MLX_HARMONY_IDLE_PREFILL").as_deref() != Ok("off")
}

/// How many prompt tokens a step may run (in chunks of [`crate::prefill::prefill_chunk`]
/// for one prompt at a time) before the rows decode their next token.
pub const PREFILL_BUDGET: usize = 2048;

/// How many prompt tokens a step may run when no row decodes (requests that
/// arrive together at an idle batch): nothing waits on the step, and larger
/// groups pay a pass's fixed costs fewer times (on CUDA, GPT-OSS's experts
/// dequantized once a pass and layer: ~67 ms of a 512-token pass's ~157,
/// docs/PERFORMANCE.md).
pub const IDLE_PREFILL_BUDGET: usize = 4 * PREFILL_BUDGET;

/// A row that ended, closed: its text complete, its statistics taken.
struct Done {
    id: SequenceId,
    generation: Generation,
    /// Text held back for a stop string that never came, handed on last.
    rest: Option<(u32, String)>,
}

fn row_done(mut row: Row) -> Done {
    let mut rest = None;
    let finish_reason = row.progress.close(&mut |token, text: &str| {
        rest = Some((token, text.to_string()));
    });
    let end = Instant::now();
    let decode = (end - row.first_token_at).as_secs_f64();
    let generated = row.progress.tokens.len();
    Done {
        id: row.id,
        rest,
        generation: Generation {
            prompt_tokens: row.prompt_tokens,
            cached_tokens: row.cached_tokens,
            tokens: std::mem::take(&mut row.progress.tokens),
            logprobs: std::mem::take(&mut row.progress.logprobs),
            drafted_tokens: row.drafted,
            speculative_steps: row.speculative_steps,
            accepted_draft_tokens: row.accepted,
            text: std::mem::take(&mut row.progress.text),
            finish_reason,
            stop_string: row.progress.stop_string(),
            time_to_first_token_seconds: (row.first_token_at - row.added).as_secs_f64(),
            peak_memory_bytes: mlx_rs::memory::peak_memory().unwrap_or(0),
            prefill_tokens_per_second: if row.prefill_seconds > 0.0 {
                row.prompt_tokens as f64 / row.prefill_seconds
            } else {
                0.0
            },
            decode_tokens_per_second: if decode > 0.0 && generated > 1 {
                (generated - 1) as f64 / decode
            } else {
                0.0
            },
        },
    }
}

/// A finished row's last events: the held-back text, then `Finished`.
fn finish(done: Done, events: &mut Vec<BatchEvent>) {
    if let Some((token, text)) = done.rest {
        events.push(BatchEvent::Token {
            id: done.id,
            token,
            text,
            logprobs: None,
        });
    }
    events.push(BatchEvent::Finished {
        id: done.id,
        generation: done.generation,
    });
}
