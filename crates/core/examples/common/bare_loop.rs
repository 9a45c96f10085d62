//! The bare single-stream loop `bench` times and `bench_one` runs beside
//! the engine's paths (included with `#[path]`, not an example of its own):
//! the engine's prompt pass, then greedy decode steps, each queued before
//! the previous token is read, over one sequence's caches or, the prompt's
//! caches joined as a sequence joins `BatchGenerator`, over a batch's.

use std::path::Path;
use std::time::Instant;

use mlx_harmony_core::array_ext::export_to_dot;
use mlx_harmony_core::batch::StepEval;
use mlx_harmony_core::generate::prefill;
use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::blocks::last_position;
use mlx_harmony_core::models::cache::LayerCache;
use mlx_rs::Array;
use mlx_rs::ops::indexing::argmax_axis;
use mlx_rs::transforms::{async_eval, eval};

/// The decode step whose graph `export` takes (well into decoding: the
/// first steps can grow the caches, which later steps do not repeat).
pub const GRAPH_STEP: usize = 8;

/// Host time per decode step, in ms: building the graph, queueing it
/// (`async_eval` walks the graph and launches its kernels), waiting for the
/// token.
pub struct StepTimings {
    pub building: Vec<f64>,
    pub queueing: Vec<f64>,
    pub waiting: Vec<f64>,
    /// Each step's whole time, for its median and 90th percentile beside
    /// the batch's (a mean hides whether every step is slower or a few).
    pub whole: Vec<f64>,
}

/// One run of the loop: seconds to the first token (the prompt pass), from
/// it to the last, and each decode step's timings.
pub struct BareRun {
    pub first_token_seconds: f64,
    pub decode_seconds: f64,
    /// Read by `bench`; `bench_one` takes the run's whole times only.
    #[allow(dead_code)]
    pub timings: StepTimings,
}

/// `prompt`, then `gen_tokens` tokens in all, greedy; over a batch's caches
/// when `over_batch_cache`. Each step hands MLX its token alone, or with the
/// caches' arrays for [`StepEval::Caches`] (one sequence: `Auto` is the
/// token alone). `export` takes step [`GRAPH_STEP`]'s graph (or the last
/// one's).
pub fn bare_loop(
    model: &Model,
    prompt: &[u32],
    gen_tokens: usize,
    over_batch_cache: bool,
    export: Option<&Path>,
    step_eval: StepEval,
) -> Result<BareRun, Box<dyn std::error::Error>> {
    // A sequence that joins a batch runs its prompt in caches that keep
    // every position (sliding-window layers included).
    let mut caches = if over_batch_cache {
        model.new_joining_caches(None)
    } else {
        model.new_caches()
    };
    let start = Instant::now();
    // The engine's own prompt pass (what TokenGenerator runs).
    let logits = prefill(model, &mut caches, prompt)?;
    let next = argmax_axis(last_position(&logits)?, -1, None)?;
    eval([&next])?;
    let first = Instant::now();
    let (last, timings) = if over_batch_cache {
        let mut batch = model.new_batch_caches();
        for (joined, single) in batch.iter_mut().zip(&caches) {
            joined.join(single)?;
        }
        drop(caches);
        decode(model, &mut batch, next, gen_tokens, export, step_eval)?
    } else {
        decode(model, &mut caches, next, gen_tokens, export, step_eval)?
    };
    let _ = last.item_exact::<u32>();
    Ok(BareRun {
        first_token_seconds: (first - start).as_secs_f64(),
        decode_seconds: first.elapsed().as_secs_f64(),
        timings,
    })
}

/// The decode loop, pipelined: the next step is queued before this one is
/// read. Returns the last token (not yet read) and the steps' timings.
fn decode<C: LayerCache>(
    model: &Model,
    caches: &mut [C],
    mut next: Array,
    gen_tokens: usize,
    export: Option<&Path>,
    step_eval: StepEval,
) -> Result<(Array, StepTimings), Box<dyn std::error::Error>> {
    let mut timings = StepTimings {
        building: Vec::with_capacity(gen_tokens),
        queueing: Vec::with_capacity(gen_tokens),
        waiting: Vec::with_capacity(gen_tokens),
        whole: Vec::with_capacity(gen_tokens),
    };
    for step in 1..gen_tokens {
        let built = Instant::now();
        let logits = model.forward(&next.reshape(&[1, 1])?, caches)?;
        let following = argmax_axis(last_position(&logits)?, -1, None)?;
        if step == GRAPH_STEP.min(gen_tokens - 1)
            && let Some(path) = export
        {
            export_to_dot(path, &[&following])?;
        }
        let queue = Instant::now();
        if step_eval == StepEval::Caches {
            let mut outputs = vec![&following];
            outputs.extend(caches.iter().flat_map(|c| c.state()));
            async_eval(outputs)?
        } else {
            async_eval([&following])?
        }
        let queued = Instant::now();
        let _ = next.item_exact::<u32>();
        timings.building.push((queue - built).as_secs_f64() * 1e3);
        timings.queueing.push((queued - queue).as_secs_f64() * 1e3);
        timings.waiting.push(queued.elapsed().as_secs_f64() * 1e3);
        timings.whole.push(built.elapsed().as_secs_f64() * 1e3);
        next = following;
    }
    Ok((next, timings))
}
