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
//! beside its token, as `BatchGenerator`'s steps of several rows do
//! (`output`, the default: the token alone, as `TokenGenerator`'s; the loop
//! is `common/bare_loop.rs`). `MLX_HARMONY_BENCH_STEPS=FILE`:
//! each timed run's step times, one JSON line each, appended to FILE.

#[path = "common/bare_loop.rs"]
mod bare;
#[path = "common/stats.rs"]
mod stats;

use std::path::PathBuf;

use mlx_harmony_core::array_ext::export_to_dot;
use mlx_harmony_core::batch::StepEval;
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::PREFILL_CHUNK;
use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::cache::LayerCache;

use bare::{BareRun, bare_loop};
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
    let step_eval = StepEval::from_env();
    for run in 0..runs + 1 {
        let export = if run == 0 {
            graph_file.as_deref()
        } else {
            None
        };
        let BareRun {
            first_token_seconds,
            decode_seconds,
            mut timings,
        } = bare_loop(
            &model,
            &prompt,
            generate_count,
            batch_cache,
            export,
            step_eval,
        )?;
        if run == 0 || !reports {
            continue; // warm-up: kernel compilation, allocator
        }
        let cache = if batch_cache { "batch" } else { "single" };
        let eval_name = if step_eval == StepEval::Caches {
            "caches"
        } else {
            "output"
        };
        write_steps(
            &format!("bench-{cache}-cache-eval-{eval_name}"),
            &timings.whole,
        )?;
        println!(
            "{{\"impl\": \"mlx-harmony\", \"ranks\": {ranks}, \"prefill_tps\": {:.2}, \"decode_tps\": {:.2}, \"ttft_s\": {:.4}, \"peak_bytes\": {}, \"step_build_ms\": {:.3}, \"step_queue_ms\": {:.3}, \"step_wait_ms\": {:.3}, \"step_p50_ms\": {:.3}, \"step_p90_ms\": {:.3}}}",
            prompt.len() as f64 / first_token_seconds,
            (generate_count - 1) as f64 / decode_seconds,
            first_token_seconds,
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

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}
