//! Our side of scripts/bench: prefill and decode speed on a model folder, for
//! a given prompt of token ids. Prints one JSON line per run.
//!
//! `cargo run --release -p mlx-harmony-core --example bench -- MODEL PROMPT_IDS_FILE GEN_TOKENS RUNS`
//!
//! With `MLX_HARMONY_BENCH_GRAPH=FILE.dot` the graph of one decode step is
//! written to FILE.dot and that of the prompt's first chunk to
//! FILE.prefill.dot (Graphviz), for `scripts/graph_counts.py`.
//!
//! With `MLX_HARMONY_BENCH_CACHE=batch` the decode loop runs over a
//! continuous batch's cache (`BatchKvCache`, the prompt's caches joined as a
//! sequence joins `BatchGenerator`) instead of one sequence's `KvCache`: the
//! same bare loop, so that a batch of one's cost can be told apart from its
//! scheduler's (#16).
//!
//! `MLX_HARMONY_STEP_EVAL=caches`: each step hands MLX the caches' arrays
//! beside its token, as `BatchGenerator`'s steps do (`output`, the default:
//! the token alone, as `TokenGenerator`'s). `MLX_HARMONY_BENCH_STEPS=FILE`:
//! each timed run's step times, one JSON line each, appended to FILE.

#[path = "common/stats.rs"]
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use mlx_harmony_core::array_ext::export_to_dot;
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::{PREFILL_CHUNK, prefill};
use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::blocks::last_position;
use mlx_harmony_core::models::cache::LayerCache;
use mlx_rs::Array;
use mlx_rs::ops::indexing::argmax_axis;
use mlx_rs::transforms::{async_eval, eval};

use stats::{percentile, write_steps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, prompt_file, generate_count, runs] = args.as_slice() else {
        return Err("usage: bench MODEL PROMPT_IDS_FILE GEN_TOKENS RUNS".into());
    };
    let selected = device::select(DeviceChoice::Auto)?;
    eprintln!("device: {selected}");
    // Under MLX's launcher (scripts/bench-tensor-parallel): one rank of a
    // tensor-parallel group, the model sharded as the programs'
    // --tensor-parallel does; rank 0 reports.
    let ranks = if std::env::var_os("MLX_HARMONY_BENCH_TENSOR_PARALLEL").is_some() {
        mlx_harmony_core::distributed::join_tensor_parallel(None)?.size()
    } else {
        1
    };
    let reports = mlx_harmony_core::distributed::tensor_parallel().is_none_or(|g| g.rank() == 0);
    let prompt: Vec<u32> = std::fs::read_to_string(prompt_file)?
        .split_whitespace()
        .map(|t| t.parse())
        .collect::<Result<_, _>>()?;
    let generate_count: usize = generate_count.parse()?;
    let runs: usize = runs.parse()?;
    let model = Model::load(PathBuf::from(model_dir))?;
    let graph_file = std::env::var_os("MLX_HARMONY_BENCH_GRAPH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if let Some(path) = &graph_file {
        // The graph of the prompt's first chunk, built and written but not run.
        let mut caches = model.new_caches();
        let chunk = (prompt.len() - 1).clamp(1, PREFILL_CHUNK);
        model.forward_tokens(&prompt[..chunk], &mut caches)?;
        let states: Vec<&mlx_rs::Array> = caches.iter().flat_map(|c| c.state()).collect();
        export_to_dot(&path.with_extension("prefill.dot"), &states)?;
    }
    let batch_cache = match std::env::var("MLX_HARMONY_BENCH_CACHE").as_deref() {
        Ok("batch") => true,
        Ok("single") | Ok("") | Err(_) => false,
        Ok(other) => {
            return Err(
                format!("MLX_HARMONY_BENCH_CACHE={other:?}: use \"batch\" or \"single\"").into(),
            );
        }
    };
    let step_eval = StepEval::from_env()?;
    for run in 0..runs + 1 {
        // A sequence that joins a batch runs its prompt in caches that keep
        // every position (sliding-window layers included).
        let mut caches = if batch_cache {
            model.new_joining_caches(None)
        } else {
            model.new_caches()
        };
        let start = Instant::now();
        // The engine's own prompt pass (what TokenGenerator runs).
        let logits = prefill(&model, &mut caches, &prompt)?;
        let next = argmax_axis(last_position(&logits)?, -1, None)?;
        eval([&next])?;
        let first = Instant::now();
        let export = if run == 0 {
            graph_file.as_deref()
        } else {
            None
        };
        let (next, mut timings) = if batch_cache {
            // The prompt's caches joined into a batch's, as a sequence
            // joins BatchGenerator: the same loop over the batch's cache.
            let mut batch = model.new_batch_caches();
            for (joined, single) in batch.iter_mut().zip(&caches) {
                joined.join(single)?;
            }
            drop(caches);
            decode(&model, &mut batch, next, generate_count, export, step_eval)?
        } else {
            decode(&model, &mut caches, next, generate_count, export, step_eval)?
        };
        let _ = next.item_exact::<u32>();
        let end = Instant::now();
        if run == 0 || !reports {
            continue; // warm-up: kernel compilation, allocator
        }
        let cache = if batch_cache { "batch" } else { "single" };
        write_steps(
            &format!("bench-{cache}-cache-eval-{}", step_eval.name()),
            &timings.whole,
        )?;
        println!(
            "{{\"impl\": \"mlx-harmony\", \"ranks\": {ranks}, \"prefill_tps\": {:.2}, \"decode_tps\": {:.2}, \"ttft_s\": {:.4}, \"peak_bytes\": {}, \"step_build_ms\": {:.3}, \"step_queue_ms\": {:.3}, \"step_wait_ms\": {:.3}, \"step_p50_ms\": {:.3}, \"step_p90_ms\": {:.3}}}",
            prompt.len() as f64 / (first - start).as_secs_f64(),
            (generate_count - 1) as f64 / (end - first).as_secs_f64(),
            (first - start).as_secs_f64(),
            mlx_rs::memory::peak_memory().unwrap_or(0),
            median(&mut timings.building),
            median(&mut timings.queueing),
            median(&mut timings.waiting),
            percentile(&mut timings.whole, 0.5),
            percentile(&mut timings.whole, 0.9),
        );
    }
    Ok(())
}

/// What a decode step hands MLX to run: its token alone (as
/// `TokenGenerator`), or with the caches' arrays (as `BatchGenerator`):
/// `MLX_HARMONY_STEP_EVAL=output|caches`, output by default.
#[derive(Clone, Copy)]
enum StepEval {
    Output,
    Caches,
}

impl StepEval {
    fn from_env() -> Result<Self, String> {
        match std::env::var("MLX_HARMONY_STEP_EVAL").as_deref() {
            Ok("output") | Ok("") | Err(_) => Ok(StepEval::Output),
            Ok("caches") => Ok(StepEval::Caches),
            Ok(other) => Err(format!(
                "MLX_HARMONY_STEP_EVAL={other:?}: use \"output\" or \"caches\""
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            StepEval::Output => "output",
            StepEval::Caches => "caches",
        }
    }
}

/// The decode step whose graph `MLX_HARMONY_BENCH_GRAPH` writes.
const GRAPH_STEP: usize = 8;

/// Host time per decode step, in ms: building the graph, queueing it
/// (`async_eval` walks the graph and launches its kernels), waiting for the
/// token.
struct StepTimings {
    building: Vec<f64>,
    queueing: Vec<f64>,
    waiting: Vec<f64>,
    /// Each step's whole time, for its median and 90th percentile beside
    /// the batch's (a mean hides whether every step is slower or a few).
    whole: Vec<f64>,
}

/// The decode loop, pipelined: the next step is queued before this one is
/// read. Returns the last token (not yet read) and the steps' timings;
/// `export` takes step [`GRAPH_STEP`]'s graph (or the last one's).
fn decode<C: LayerCache>(
    model: &Model,
    caches: &mut [C],
    mut next: Array,
    generate_count: usize,
    export: Option<&std::path::Path>,
    step_eval: StepEval,
) -> Result<(Array, StepTimings), Box<dyn std::error::Error>> {
    let mut timings = StepTimings {
        building: Vec::with_capacity(generate_count),
        queueing: Vec::with_capacity(generate_count),
        waiting: Vec::with_capacity(generate_count),
        whole: Vec::with_capacity(generate_count),
    };
    for step in 1..generate_count {
        let built = Instant::now();
        let logits = model.forward(&next.reshape(&[1, 1])?, caches)?;
        let following = argmax_axis(last_position(&logits)?, -1, None)?;
        // A step well into decoding (as examples/bench_batch takes the
        // batch's): the first ones can grow the caches, which later steps
        // do not repeat.
        if step == GRAPH_STEP.min(generate_count - 1)
            && let Some(path) = export
        {
            export_to_dot(path, &[&following])?;
        }
        let queue = Instant::now();
        match step_eval {
            StepEval::Output => async_eval([&following])?,
            StepEval::Caches => {
                let mut outputs = vec![&following];
                outputs.extend(caches.iter().flat_map(|c| c.state()));
                async_eval(outputs)?
            }
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

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}
