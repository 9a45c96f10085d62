//! Our side of scripts/bench-batch: CONCURRENCY sequences of PROMPT_TOKENS
//! random prompt tokens each, all added at once to the continuous-batching
//! scheduler, GEN_TOKENS generated each (greedy, no end token). Prints one
//! JSON line per run: aggregate decode tokens/s (tokens generated once every
//! sequence is decoding, over that time), end-to-end tokens/s, and the time
//! to first token's p50/p95. CONCURRENCY may be a list (`1,4,16`): the
//! model is loaded once, and each concurrency warms up with a run of its own.
//!
//! `cargo run --release -p mlx-harmony-core --example bench_batch -- MODEL TOKENIZER_JSON PROMPT_TOKENS GEN_TOKENS CONCURRENCY RUNS`
//!
//! The model folder need not have a tokenizer (the benchmark models have
//! none): TOKENIZER_JSON is used to turn tokens into text, as a server would.
//!
//! `SHARED_PREFIX=N`: every prompt starts with the same N tokens (then its
//! PROMPT_TOKENS of its own), which a request run before the clock starts
//! leaves in the batch's prompt cache: a system prompt every client sends.
//!
//! `MLX_HARMONY_BENCH_GRAPH=PATH`: a decode step of each concurrency's
//! first timed run (after 8 tokens a row) is written to `PATH.cN.dot` (N the
//! concurrency), as examples/bench writes the single-stream path's
//! (`scripts/graph_counts.py` counts them side by side).
//!
//! `MLX_HARMONY_BENCH_LABEL=NAME`: the lines' `impl` (a run with some
//! other setting, `scripts/gpu-bench-batch`'s `COMPARE_ENV`).
//!
//! `MLX_HARMONY_BENCH_STEPS=FILE`: each timed run's decode step times,
//! one JSON line each, appended to FILE (examples/bench writes its own there).
//!
//! `GENERATOR=1`: at concurrency 1, each run's prompt also goes through
//! [`TokenGenerator`] (the chat and generate programs' loop: the same
//! sampler, detokenizing, stop checks) on the same weights, right after the
//! batch of one, as an `mlx-harmony-generator` line: #16's batch of one
//! against the path the programs keep. The two take turns going first (odd
//! runs start with TokenGenerator), and both lines of a run carry the same
//! `pair` (process and run), so that `scripts/bench_batch_table.py` can put
//! each batch of one over the TokenGenerator run beside it: seconds apart
//! on one loaded model, a host's slow spell falls on both or on neither.

#[path = "common/runs.rs"]
mod runs;
#[path = "common/stats.rs"]
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceRequest};
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::{Cancel, GenerateOptions, TokenGenerator};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

use runs::{generate_from_empty, load_without_end, random_tokens};
use stats::{percentile, write_steps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        model_dir,
        tokenizer,
        prompt_tokens,
        gen_tokens,
        concurrency,
        runs,
    ] = args.as_slice()
    else {
        return Err(
            "usage: bench_batch MODEL TOKENIZER_JSON PROMPT_TOKENS GEN_TOKENS CONCURRENCY RUNS"
                .into(),
        );
    };
    let selected = device::select(DeviceChoice::Auto)?;
    eprintln!("device: {selected}");
    let (prompt_tokens, gen_tokens): (usize, usize) = (prompt_tokens.parse()?, gen_tokens.parse()?);
    let concurrencies: Vec<usize> = concurrency
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let runs: usize = runs.parse()?;
    let shared_prefix: usize = match std::env::var("SHARED_PREFIX") {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("SHARED_PREFIX={value}: not a token count"))?,
        Err(_) => 0,
    };
    let with_generator = std::env::var("GENERATOR").is_ok_and(|v| v == "1");
    let label = std::env::var("MLX_HARMONY_BENCH_LABEL")
        .ok()
        .filter(|l| !l.is_empty());
    let graph_file = std::env::var_os("MLX_HARMONY_BENCH_GRAPH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let loaded = load_without_end(model_dir, tokenizer)?;
    let vocab = loaded.model.vocab_size() as u32;
    let mut generator = with_generator.then(|| TokenGenerator::from_shared(loaded.clone()));
    // The first run of each concurrency warms up (kernels for its shapes,
    // allocations) and is not printed.
    for (concurrency, run) in concurrencies
        .iter()
        .flat_map(|&c| (0..runs + 1).map(move |run| (c, run)))
    {
        let request = |prompt: Vec<u32>,
                       tokens: usize|
         -> Result<SequenceRequest, Box<dyn std::error::Error>> {
            Ok(SequenceRequest {
                prompt,
                sampler: Sampler::new(SamplingSettings::default())?,
                options: GenerateOptions::new(tokens),
                cancel: Cancel::new(),
            })
        };
        let prefix = random_tokens(u64::MAX, shared_prefix, vocab);
        let mut batch = if shared_prefix > 0 {
            let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), concurrency, 8 << 30);
            // The prefix and one token, into the prompt cache.
            let mut first = prefix.clone();
            first.push(random_tokens(u64::MAX - 1, 1, vocab)[0]);
            batch.add(request(first, 1)?);
            while !batch.is_idle() {
                for event in batch.step()? {
                    if let BatchEvent::Failed { message, .. } = event {
                        return Err(message.into());
                    }
                }
            }
            batch
        } else {
            BatchGenerator::new(loaded.clone(), concurrency)
        };
        let prompt_of = |i: usize| {
            let own = random_tokens((run * 1000 + i) as u64, prompt_tokens, vocab);
            [prefix.as_slice(), &own].concat()
        };
        // The programs' loop on this run's prompt, first on odd runs and
        // after the batch of one on even ones (its line printed after the
        // batch's either way).
        let pair = format!("{}-{run}", std::process::id());
        let generator_first = run % 2 == 1;
        let mut generator_line = None;
        if let Some(generator) = generator
            .as_mut()
            .filter(|_| concurrency == 1 && generator_first)
        {
            generator_line = Some(generate_alone(generator, &prompt_of(0), gen_tokens, &pair)?);
        }
        // The graph of a step well into decoding (its caches grown, no row
        // joining): what every step repeats.
        let mut graph_wanted = graph_file.as_ref().filter(|_| run == 1);
        let start = Instant::now();
        let mut ids = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            ids.push(batch.add(request(prompt_of(i), gen_tokens)?));
        }
        let mut first_token = vec![None; concurrency];
        let mut generated = 0usize;
        let mut generated_when_all_started = 0usize;
        let mut all_started = None;
        // Each step's whole time once every sequence decodes (the loop's
        // own work included), for its median and 90th percentile.
        let mut steps_ms = Vec::with_capacity(gen_tokens);
        while !batch.is_idle() {
            let stepped = Instant::now();
            let decoding = all_started.is_some();
            for event in batch.step()? {
                match event {
                    BatchEvent::Token { id, .. } => {
                        generated += 1;
                        let i = ids.iter().position(|&x| x == id).expect("one of ours");
                        first_token[i].get_or_insert_with(|| start.elapsed());
                    }
                    BatchEvent::Failed { message, .. } => return Err(message.into()),
                    BatchEvent::Finished { .. } => {}
                }
            }
            if generated >= 8 * concurrency
                && let Some(path) = graph_wanted.take()
            {
                let mut named = path.clone().into_os_string();
                named.push(format!(".c{concurrency}.dot"));
                batch.export_next_decode_graph(named.into());
            }
            if decoding {
                steps_ms.push(stepped.elapsed().as_secs_f64() * 1e3);
            }
            if all_started.is_none() && first_token.iter().all(Option::is_some) {
                all_started = Some(Instant::now());
                generated_when_all_started = generated;
            }
        }
        let end = Instant::now();
        let timing = batch.decode_timing();
        let all_started = all_started.unwrap_or(end);
        let decode_seconds = (end - all_started).as_secs_f64();
        let mut ttft: Vec<f64> = first_token
            .iter()
            .map(|t| t.map_or(f64::NAN, |t| t.as_secs_f64()))
            .collect();
        if let Some(generator) = generator
            .as_mut()
            .filter(|_| concurrency == 1 && !generator_first)
        {
            generator_line = Some(generate_alone(generator, &prompt_of(0), gen_tokens, &pair)?);
        }
        if run == 0 {
            continue;
        }
        write_steps(
            &format!(
                "{}-c{concurrency}",
                label.as_deref().unwrap_or("mlx-harmony")
            ),
            &steps_ms,
        )?;
        // A batch of one beside the TokenGenerator run of its turn carries
        // that run's pair.
        let paired = if generator_line.is_some() {
            format!(", \"pair\": \"{pair}\"")
        } else {
            String::new()
        };
        println!(
            "{{\"impl\": \"{}\", \"concurrency\": {concurrency}, \"decode_tps\": {:.2}, \"e2e_tps\": {:.2}, \"ttft_p50_s\": {:.4}, \"ttft_p95_s\": {:.4}, \"generated\": {generated}, \"step_queue_ms\": {:.3}, \"step_build_ms\": {:.3}, \"step_wait_ms\": {:.3}, \"step_p50_ms\": {:.3}, \"step_p90_ms\": {:.3}{paired}}}",
            // MLX_HARMONY_QMM=mlx: the same engine with MLX's quantized
            // products; =unshared: ours, one launch per matrix; =wide: the
            // wide form; MLX_HARMONY_ATTEND=mlx: MLX's attention over one
            // cache array; MLX_HARMONY_GROUP_PROMPTS=off: each prompt run
            // alone; MLX_HARMONY_IDLE_PREFILL=off: an idle batch's steps
            // with the decoding budget; MLX_HARMONY_QMM_STAGES=N: N chunks of
            // weights in flight a warp of our kernels.
            label.as_deref().unwrap_or(
                match (
                    mlx_harmony_core::qmm_rows::setting(),
                    mlx_harmony_core::attend_rows::setting(),
                    mlx_harmony_core::batch::groups_prompts_by_default(),
                    mlx_harmony_core::batch::idle_prefill_by_default(),
                    mlx_harmony_core::qmm_rows::stages(),
                ) {
                    ("mlx", ..) => "mlx-harmony-mlxqmm",
                    ("unshared", ..) => "mlx-harmony-unshared",
                    ("wide", ..) => "mlx-harmony-wide",
                    (_, "mlx", ..) => "mlx-harmony-mlxattend",
                    (_, _, false, ..) => "mlx-harmony-ungrouped",
                    (_, _, _, false, _) => "mlx-harmony-idle-off",
                    (.., 2) => "mlx-harmony-stages2",
                    (.., 3) => "mlx-harmony-stages3",
                    (.., 4) => "mlx-harmony-stages4",
                    _ => "mlx-harmony",
                }
            ),
            if decode_seconds > 0.0 {
                (generated - generated_when_all_started) as f64 / decode_seconds
            } else {
                0.0
            },
            generated as f64 / (end - start).as_secs_f64(),
            percentile(&mut ttft, 0.5),
            percentile(&mut ttft, 0.95),
            // Per one-token decode step: building and queueing the next step,
            // of that the building alone, and waiting for this one's tokens (BatchGenerator::decode_timing).
            timing.queue_seconds * 1e3 / timing.steps.max(1) as f64,
            timing.build_seconds * 1e3 / timing.steps.max(1) as f64,
            timing.wait_seconds * 1e3 / timing.steps.max(1) as f64,
            percentile(&mut steps_ms, 0.5),
            percentile(&mut steps_ms, 0.9),
        );
        if let Some(line) = generator_line {
            println!("{line}");
        }
    }
    Ok(())
}

/// `prompt` through [`TokenGenerator`] from an empty cache: its result
/// line, an `mlx-harmony-generator` one in `pair`.
fn generate_alone(
    generator: &mut TokenGenerator,
    prompt: &[u32],
    gen_tokens: usize,
    pair: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let generation = generate_from_empty(generator, prompt, gen_tokens)?;
    let seconds = started.elapsed().as_secs_f64();
    let ttft = generation.time_to_first_token_seconds;
    Ok(format!(
        "{{\"impl\": \"mlx-harmony-generator\", \"concurrency\": 1, \"decode_tps\": {:.2}, \"e2e_tps\": {:.2}, \"ttft_p50_s\": {ttft:.4}, \"ttft_p95_s\": {ttft:.4}, \"generated\": {}, \"pair\": \"{pair}\"}}",
        generation.decode_tokens_per_second,
        generation.tokens.len() as f64 / seconds,
        generation.tokens.len(),
    ))
}
