//! The prompt side of a batch: prompts run in chunks between decode steps,
//! or several short ones in one pass, then join the batch.

use std::time::Instant;

use mlx_rs::Array;
use mlx_rs::ops;
use mlx_rs::transforms::eval;

use crate::array_ext::{owned_copy, slice};
use crate::generate::{FinishReason, Generation, Progress};
use crate::models::blocks::last_position;
use crate::models::cache::{KvCache, LayerCache};
use crate::{Error, Result};

use super::prompt_cache::shared_prefix;
use super::{BatchEvent, BatchGenerator, Prefill, Row, SequenceRequest, finish, row_done};

/// The most tokens a pass of several prompts runs, in chunks of
/// [`crate::prefill::prefill_chunk`] (at the default chunk, the step's whole
/// [`PREFILL_BUDGET`](super::PREFILL_BUDGET)).
const GROUP_CHUNKS: usize = 4;

/// The same in a step with no row decoding (at the default chunk, the whole
/// [`IDLE_PREFILL_BUDGET`](super::IDLE_PREFILL_BUDGET)).
const IDLE_GROUP_CHUNKS: usize = 16;

/// The shortest common start (in tokens) for which a prompt's caches are
/// handed to a waiting sequence; a whole shorter prompt is handed on too.
const MIN_SHARED_PREFIX: usize = 32;

/// The most positions of a cached prefix a group's pass copies to its rows
/// (prompts × prefix): the copies live while the pass runs, besides the
/// rows' own caches.
const GROUP_PREFIX_POSITIONS: usize = 65_536;

impl BatchGenerator {
    /// Runs the prompts at the front of the queue together, when two or
    /// more can: all of them start with the same cached prefix (the prompt
    /// cache's longest match for the first of them, if at least
    /// [`MIN_SHARED_PREFIX`] tokens: a shared system prompt) or none does,
    /// what each has past it fits one chunk
    /// ([`crate::prefill::prefill_chunk`]), all of them padded to the
    /// longest fit what is left of the step's `budget` (or one chunk, where
    /// less is left) and [`GROUP_CHUNKS`] chunks ([`IDLE_GROUP_CHUNKS`] when
    /// `idle`: no row decodes; so that `MLX_HARMONY_PREFILL_CHUNK` still
    /// bounds a pass's memory, attention over the prefix counted too), none
    /// starts past the prefix the way an earlier one of them does, or shares
    /// more with the prompt cache than the prefix (those run alone, reusing
    /// what is shared), and the batch has rows for them. One forward pass
    /// over `[prompts, longest]` runs all but each prompt's last token, over
    /// the prefix's caches copied to every row: a prompt pass costs far less
    /// per token over more rows (on CUDA, MLX's products and GPT-OSS's
    /// dequantized experts are paid once for all of them). Prompts are
    /// padded on the right, so every real position sees only its own prompt
    /// under the plain causal mask, and every row's RoPE positions start
    /// where the prefix ends; each row's positions are then copied into a
    /// cache of its own and it joins as a prompt run alone does
    /// ([`BatchGenerator::join`]). Returns the padded tokens run (0: no
    /// group).
    pub(super) fn prefill_group(
        &mut self,
        budget: usize,
        idle: bool,
        events: &mut Vec<BatchEvent>,
    ) -> Result<usize> {
        if self.prefill.is_some() || self.kv_quantization.is_some() || self.max_kv_size.is_some() {
            return Ok(0);
        }
        let chunk = crate::prefill::prefill_chunk();
        let widest_pass = if idle {
            IDLE_GROUP_CHUNKS
        } else {
            GROUP_CHUNKS
        } * chunk;
        let room = self.max_rows.saturating_sub(self.rows.len());
        // A group needs two rows: no scan of the queue and the prompt cache
        // on the steps of a full batch with prompts waiting.
        let Some((_, first, _)) = self.waiting.front().filter(|_| room >= 2) else {
            return Ok(0);
        };
        let vocab = self.loaded.model.vocab_size() as u32;
        let cached = |prompt: &[u32]| match self.prompt_cache.longest_shared(prompt) {
            shared if shared >= MIN_SHARED_PREFIX => shared,
            _ => 0,
        };
        // The cached prefix every prompt of the group starts with.
        let base = cached(&first.prompt);
        let prefix = &first.prompt[..base];
        let (mut taken, mut longest) = (0usize, 0usize);
        for (_, request, _) in &self.waiting {
            let run = request.prompt.len().saturating_sub(base + 1);
            // What share_with_waiting would hand on from an earlier prompt
            // of the group had it run alone, past the prefix.
            let shares = |earlier: &[u32]| {
                let head = &earlier[..earlier.len() - 1];
                shared_prefix(head, &request.prompt) >= head.len().min(base + MIN_SHARED_PREFIX)
            };
            let widest = longest.max(run);
            if taken == room
                || run == 0
                || run > chunk
                || widest * (taken + 1) > budget.max(chunk).min(widest_pass)
                || widest * (base + widest) * (taken + 1) > widest_pass * chunk
                || base * (taken + 1) > GROUP_PREFIX_POSITIONS
                || request.cancel.is_cancelled()
                || request.prompt.iter().any(|&t| t >= vocab)
                || !request.prompt.starts_with(prefix)
                || cached(&request.prompt) >= base + MIN_SHARED_PREFIX
                || self
                    .waiting
                    .iter()
                    .take(taken)
                    .any(|(_, earlier, _)| shares(&earlier.prompt))
            {
                break;
            }
            (taken, longest) = (taken + 1, widest);
        }
        if taken < 2 {
            return Ok(0);
        }
        let mut caches = if base == 0 {
            self.fresh_joining_caches()
        } else {
            // The prefix's caches, every row's the same (broadcast: the
            // pass's first cache write copies them out). The lookup leaves
            // one token to run: given the prefix and one more, it returns
            // exactly the prefix's positions.
            let key = &self.waiting[0].1.prompt[..=base];
            let Some((held, prefix_caches)) = self.prompt_cache.lookup(key) else {
                return Ok(0);
            };
            if held != base {
                return Ok(0);
            }
            match tiled(&prefix_caches, taken as i32) {
                Ok(caches) => caches,
                Err(_) => return Ok(0),
            }
        };
        let group: Vec<_> = self.waiting.drain(..taken).collect();
        let mut ids = Vec::with_capacity(taken * longest);
        for (_, request, _) in &group {
            let run = &request.prompt[base..request.prompt.len() - 1];
            ids.extend_from_slice(run);
            // Any token of the vocabulary pads: causal attention keeps the
            // real positions from seeing it.
            ids.extend(std::iter::repeat_n(run[0], longest - run.len()));
        }
        let ids = Array::from_slice(&ids, &[taken as i32, longest as i32]);
        let ran = self.loaded.model.forward(&ids, &mut caches).and_then(|_| {
            let states: Vec<&Array> = caches.iter().flat_map(|c| c.state()).collect();
            Ok(eval(states)?)
        });
        let padded = taken * longest;
        self.grouped += taken;
        if let Err(e) = ran {
            for (id, _, _) in group {
                events.push(BatchEvent::Failed {
                    id,
                    message: e.to_string(),
                });
            }
            return Ok(padded);
        }
        let mut group = group.into_iter().enumerate();
        while let Some((row, (id, request, added))) = group.next() {
            let run = request.prompt.len() - 1;
            let joined = caches
                .iter()
                .map(|c| row_cache(c, row as i32, run as i32))
                .collect::<Result<Vec<_>>>()
                .and_then(|row_caches| {
                    let prefill = Prefill {
                        id,
                        request,
                        caches: row_caches,
                        done: run,
                        cached: base,
                        added,
                    };
                    self.join(prefill, events)
                });
            if let Err(e) = joined {
                events.push(BatchEvent::Failed {
                    id,
                    message: e.to_string(),
                });
                // As in prefill_chunk: the batch's caches may be half
                // extended; the rows and the rest of the group cannot go on.
                self.fail_all(events, &e);
                for (_, (id, _, _)) in group.by_ref() {
                    events.push(BatchEvent::Failed {
                        id,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(padded)
    }

    /// Runs the next chunk of the prompt being prefilled (starting the next
    /// waiting one if none is), and joins it to the batch when done. Returns
    /// how many prompt tokens it ran (0: nothing to do).
    pub(super) fn prefill_chunk(&mut self, events: &mut Vec<BatchEvent>) -> Result<usize> {
        if self.prefill.is_none() {
            if self.rows.len() >= self.max_rows {
                return Ok(0);
            }
            let Some((id, request, added)) = self.waiting.pop_front() else {
                return Ok(0);
            };
            if request.prompt.is_empty() {
                events.push(BatchEvent::Failed {
                    id,
                    message: "cannot generate from an empty prompt".into(),
                });
                return Ok(1);
            }
            // Past the bound, a prompt runs in rotating caches from its
            // start (a cached prefix keeps every position).
            let fits = self
                .max_kv_size
                .is_none_or(|max| request.prompt.len() <= max as usize);
            let (done, caches) = fits
                .then(|| self.prompt_cache.lookup(&request.prompt))
                .flatten()
                .unwrap_or_else(|| (0, self.fresh_joining_caches()));
            self.prefill = Some(Prefill {
                id,
                request,
                caches,
                done,
                cached: done,
                added,
            });
        }
        let prefill = self.prefill.as_mut().expect("set above");
        if prefill.request.cancel.is_cancelled() {
            let prefill = self.prefill.take().expect("present");
            events.push(finished_before_decoding(&prefill, FinishReason::Cancelled));
            return Ok(1);
        }
        let model = &self.loaded.model;
        let prompt = &prefill.request.prompt;
        // All but the last token in chunks, caches evaluated; the last one
        // alone, for the logits.
        let before_last = prompt.len() - 1;
        let start = prefill.done;
        if prefill.done < before_last {
            let end = (prefill.done + crate::prefill::prefill_chunk()).min(before_last);
            let ran = model
                .forward_tokens(&prompt[prefill.done..end], &mut prefill.caches)
                .and_then(|_| {
                    let states: Vec<&Array> =
                        prefill.caches.iter().flat_map(|c| c.state()).collect();
                    Ok(eval(states)?)
                });
            if let Err(e) = ran {
                let prefill = self.prefill.take().expect("present");
                events.push(BatchEvent::Failed {
                    id: prefill.id,
                    message: e.to_string(),
                });
                return Ok(end - start);
            }
            prefill.done = end;
            if end < before_last {
                return Ok(end - start);
            }
        }
        let prefill = self.prefill.take().expect("present");
        let id = prefill.id;
        let ran = prefill.request.prompt.len() - start;
        match self.join(prefill, events) {
            Ok(()) => Ok(ran),
            Err(e) => {
                events.push(BatchEvent::Failed {
                    id,
                    message: e.to_string(),
                });
                // A failed join may have left the batch's caches half
                // extended: the rows cannot go on.
                self.fail_all(events, &e);
                Ok(ran)
            }
        }
    }

    /// The prompt's last token, the first sampled token (read now, so that
    /// the first token is not held back a step), and the row's place in the
    /// batch.
    pub(super) fn join(&mut self, prefill: Prefill, events: &mut Vec<BatchEvent>) -> Result<()> {
        let Prefill {
            id,
            request,
            mut caches,
            added,
            cached,
            ..
        } = prefill;
        let SequenceRequest {
            prompt,
            mut sampler,
            options,
            cancel,
        } = request;
        let (head, last) = prompt.split_at(prompt.len() - 1);
        self.share_with_waiting(head, &caches);
        let logits = self.loaded.model.forward_tokens(last, &mut caches)?;
        let first = sampler.sample(&last_position(&logits)?, &[])?;
        eval([&first])?;
        let token = first.item_exact::<u32>();
        let logprobs = sampler.take_logprobs()?;
        let now = Instant::now();
        let mut progress = Progress::new(&options);
        let goes_on = options.max_tokens > 0
            && progress.accept(&self.loaded, token, logprobs.clone(), &mut |token, text| {
                events.push(BatchEvent::Token {
                    id,
                    token,
                    text: text.to_string(),
                    logprobs: logprobs.clone(),
                })
            });
        let row = Row {
            id,
            sampler,
            cancel,
            progress,
            prompt_tokens: prompt.len(),
            added,
            first_token_at: now,
            prefill_seconds: (now - added).as_secs_f64(),
            first_read: true,
            history: prompt.clone(),
            cached_tokens: cached,
            lookup: options.prompt_lookup,
            drafted: 0,
            accepted: 0,
            speculative_steps: 0,
        };
        if !goes_on {
            // The caches hold the prompt: keep them for the next prompt.
            let done = row_done(row);
            self.prompt_cache.insert(prompt, caches);
            finish(done, events);
            return Ok(());
        }
        for (batch, single) in self.caches.iter_mut().zip(&caches) {
            batch.join(single)?;
        }
        self.next = Some(match self.next.take() {
            Some(next) => ops::concatenate(&[next, first], 0)?,
            None => first,
        });
        self.rows.push(row);
        Ok(())
    }

    /// When a waiting sequence starts the way this prompt does (the other
    /// choices of an `n > 1` request, clients sending one system prompt), the
    /// prompt's caches go to the prompt cache now rather than when the
    /// sequence ends, so that the waiting one runs only what differs. The
    /// arrays are shared, not copied: MLX's updates make new ones.
    pub(super) fn share_with_waiting(&mut self, head: &[u32], caches: &[KvCache]) {
        let shared = |prompt: &[u32]| shared_prefix(prompt, head);
        let worth = head.len().min(MIN_SHARED_PREFIX);
        if worth > 0
            && self
                .waiting
                .iter()
                .any(|(_, waiting, _)| shared(&waiting.prompt) >= worth)
        {
            self.prompt_cache.insert(head.to_vec(), caches.to_vec());
        }
    }
}

/// Caches holding `prefix`'s positions in each of `rows` rows
/// (`[rows, heads, positions, D]`, broadcast, not copied).
fn tiled(prefix: &[KvCache], rows: i32) -> Result<Vec<KvCache>> {
    prefix
        .iter()
        .map(|cache| {
            let (keys, values) = cache
                .positions()?
                .ok_or_else(|| Error::Invalid("a cached prefix without its positions".into()))?;
            let rows_of = |a: &Array| -> Result<Array> {
                let mut shape = a.shape().to_vec();
                shape[0] = rows;
                Ok(ops::broadcast_to(a, &shape)?)
            };
            Ok(KvCache::from_arrays(rows_of(&keys)?, rows_of(&values)?))
        })
        .collect()
}

/// Row `row`'s first `positions` positions of a grouped prompt pass's cache
/// (`[prompts, heads, longest, D]`), copied into a cache of its own
/// ([`owned_copy`]: a slice would keep the whole group's arrays alive).
fn row_cache(group: &KvCache, row: i32, positions: i32) -> Result<KvCache> {
    let (keys, values) = group
        .positions()?
        .ok_or_else(|| Error::Invalid("a grouped prompt pass left an empty cache".into()))?;
    let part = |a: &Array| -> Result<Array> {
        let rows = slice(
            a,
            &[row, 0, 0, 0],
            &[row + 1, a.dim(1), positions, a.dim(3)],
        )?;
        owned_copy(&rows)
    };
    Ok(KvCache::from_arrays(part(&keys)?, part(&values)?))
}

/// The event of a sequence that ended before it joined the batch.
fn finished_before_decoding(prefill: &Prefill, reason: FinishReason) -> BatchEvent {
    let now = Instant::now();
    BatchEvent::Finished {
        id: prefill.id,
        generation: Generation {
            prompt_tokens: prefill.request.prompt.len(),
            cached_tokens: 0,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            drafted_tokens: 0,
            speculative_steps: 0,
            accepted_draft_tokens: 0,
            text: String::new(),
            finish_reason: reason,
            stop_string: None,
            time_to_first_token_seconds: (now - prefill.added).as_secs_f64(),
            peak_memory_bytes: 0,
            prefill_tokens_per_second: 0.0,
            decode_tokens_per_second: 0.0,
        },
    }
}
