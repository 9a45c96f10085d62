//! #16's measure of a batch of one against the single-stream paths: one
//! loaded model, one process, and every run tries each path in turn on the
//! same prompt (the order rotating from run to run), so that the host's
//! speed, which drifts over seconds on the GPU machines, falls on all of a
//! run's paths alike. Greedy, no end token: GEN_TOKENS generated each.
//!
//! `cargo run --release -p mlx-harmony-core --example bench_one -- MODEL TOKENIZER_JSON PROMPT_TOKENS GEN_TOKENS RUNS`
//!
//! The paths, one JSON line each a run (`impl`), all of a run's lines
//! carrying the same `pair` for `scripts/bench_batch_table.py`'s paired
//! ratios (each over `mlx-harmony-generator` of its run):
//! - `mlx-harmony`: [`BatchGenerator`] with one request, as the server runs it;
//! - `mlx-harmony-eval-caches`: the same, its steps handing MLX the caches'
//!   arrays beside their tokens (`StepEval::Caches`, what a batch of several
//!   rows does; a batch of one hands its tokens alone);
//! - `mlx-harmony-generator`: [`TokenGenerator`], the chat and generate
//!   programs' loop;
//! - `mlx-harmony-loop`: the bare pipelined loop `bench` times (forward,
//!   argmax, `async_eval` of the token) over one sequence's caches;
//! - `mlx-harmony-loop-batchcache`: the same loop over a batch's caches, the
//!   prompt's joined as a sequence joins a batch.
//!
//! The first run of each path warms up and is not printed.

#[path = "common/bare_loop.rs"]
mod bare_loop;
#[path = "common/runs.rs"]
mod runs;

use std::rc::Rc;
use std::time::Instant;

use bare_loop::bare_loop;
use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceRequest, StepEval};
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::{Cancel, GenerateOptions, LoadedModel, TokenGenerator};
use mlx_harmony_core::models::Model;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
use runs::{generate_from_empty, load_without_end, random_tokens};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// One path's run: seconds to the first token, then from it to the last,
/// and the tokens generated.
struct Timed {
    first_token_seconds: f64,
    decode_seconds: f64,
    generated: usize,
}

const PATHS: [&str; 5] = [
    "mlx-harmony",
    "mlx-harmony-eval-caches",
    "mlx-harmony-generator",
    "mlx-harmony-loop",
    "mlx-harmony-loop-batchcache",
];

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, tokenizer, prompt_tokens, gen_tokens, runs] = args.as_slice() else {
        return Err("usage: bench_one MODEL TOKENIZER_JSON PROMPT_TOKENS GEN_TOKENS RUNS".into());
    };
    let selected = device::select(DeviceChoice::Auto)?;
    eprintln!("device: {selected}");
    let (prompt_tokens, gen_tokens): (usize, usize) = (prompt_tokens.parse()?, gen_tokens.parse()?);
    let runs: usize = runs.parse()?;
    if gen_tokens < 2 {
        return Err("GEN_TOKENS: at least 2 (decode speed is timed from the first token)".into());
    }
    let loaded = load_without_end(model_dir, tokenizer)?;
    let vocab = loaded.model.vocab_size() as u32;
    let mut generator = TokenGenerator::from_shared(loaded.clone());
    let pid = std::process::id();
    for run in 0..=runs {
        let prompt = random_tokens(run as u64, prompt_tokens, vocab);
        for turn in 0..PATHS.len() {
            let path = PATHS[(run + turn) % PATHS.len()];
            let timed = match path {
                "mlx-harmony" => batch_of_one(&loaded, &prompt, gen_tokens, StepEval::Auto)?,
                "mlx-harmony-eval-caches" => {
                    batch_of_one(&loaded, &prompt, gen_tokens, StepEval::Caches)?
                }
                "mlx-harmony-generator" => generate(&mut generator, &prompt, gen_tokens)?,
                "mlx-harmony-loop" => bare(&loaded.model, &prompt, gen_tokens, false)?,
                _ => bare(&loaded.model, &prompt, gen_tokens, true)?,
            };
            if timed.generated != gen_tokens {
                return Err(format!(
                    "{path}: {} tokens generated, not {gen_tokens}",
                    timed.generated
                )
                .into());
            }
            if run == 0 {
                continue;
            }
            let whole = timed.first_token_seconds + timed.decode_seconds;
            println!(
                "{{\"impl\": \"{path}\", \"concurrency\": 1, \"decode_tps\": {:.2}, \"e2e_tps\": {:.2}, \"ttft_p50_s\": {:.4}, \"ttft_p95_s\": {:.4}, \"generated\": {}, \"pair\": \"{pid}-{run}\"}}",
                (timed.generated - 1) as f64 / timed.decode_seconds,
                timed.generated as f64 / whole,
                timed.first_token_seconds,
                timed.first_token_seconds,
                timed.generated,
            );
        }
    }
    Ok(())
}

/// One request through a fresh [`BatchGenerator`], stepped until it ends.
fn batch_of_one(
    loaded: &Rc<LoadedModel>,
    prompt: &[u32],
    gen_tokens: usize,
    step_eval: StepEval,
) -> BenchResult<Timed> {
    let mut batch = BatchGenerator::new(loaded.clone(), 1);
    batch.set_step_eval(step_eval);
    let start = Instant::now();
    batch.add(SequenceRequest {
        prompt: prompt.to_vec(),
        sampler: Sampler::new(SamplingSettings::default())?,
        options: GenerateOptions::new(gen_tokens),
        cancel: Cancel::new(),
    });
    let mut first = None;
    let mut generated = 0;
    while !batch.is_idle() {
        for event in batch.step()? {
            match event {
                BatchEvent::Token { .. } => {
                    generated += 1;
                    first.get_or_insert_with(Instant::now);
                }
                BatchEvent::Failed { message, .. } => return Err(message.into()),
                BatchEvent::Finished { .. } => {}
            }
        }
    }
    let end = Instant::now();
    let first = first.unwrap_or(end);
    Ok(Timed {
        first_token_seconds: (first - start).as_secs_f64(),
        decode_seconds: (end - first).as_secs_f64(),
        generated,
    })
}

/// The prompt through [`TokenGenerator`] from an empty cache.
fn generate(
    generator: &mut TokenGenerator,
    prompt: &[u32],
    gen_tokens: usize,
) -> BenchResult<Timed> {
    let start = Instant::now();
    let generation = generate_from_empty(generator, prompt, gen_tokens)?;
    let end = Instant::now();
    // The generator's own time to its first token (text can trail its
    // token, so the callback's first call is not it).
    let first_token_seconds = generation.time_to_first_token_seconds;
    Ok(Timed {
        first_token_seconds,
        decode_seconds: (end - start).as_secs_f64() - first_token_seconds,
        generated: generation.tokens.len(),
    })
}

/// The bare loop (`common/bare_loop.rs`, what `bench` times), each step
/// handing MLX its token alone.
fn bare(
    model: &Model,
    prompt: &[u32],
    gen_tokens: usize,
    over_batch_cache: bool,
) -> BenchResult<Timed> {
    let run = bare_loop(
        model,
        prompt,
        gen_tokens,
        over_batch_cache,
        None,
        StepEval::Tokens,
    )?;
    Ok(Timed {
        first_token_seconds: run.first_token_seconds,
        decode_seconds: run.decode_seconds,
        generated: gen_tokens,
    })
}
