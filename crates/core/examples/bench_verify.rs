//! What a speculative check costs (#23): one forward pass of K tokens (the
//! pending token and K - 1 drafted ones, as prompt lookup or a draft model
//! hands them to the model) against a one-token decode step, at the same
//! context, on one sequence. After a prompt of PROMPT_TOKENS random tokens,
//! steps of 1 and of K tokens alternate; each step's logits are read back (a
//! check needs them on the host before the next step), and the cache forgets
//! the step's tokens again where it can (layers without a sliding window), so
//! the context stays the same. Prints one JSON line: the median, min and max
//! milliseconds of each step kind and their ratio (#23's goal: a 5-token check
//! within 1.5x a one-token step).
//!
//! `cargo run --release -p mlx-harmony-core --example bench_verify -- MODEL [PROMPT_TOKENS] [K] [STEPS]`

use std::time::Instant;

use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::LoadedModel;
use mlx_harmony_core::models::cache::LayerCache;

/// A fixed stream of token ids inside the vocabulary.
fn tokens(count: usize, vocab: u32, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            100 + ((state >> 33) % u64::from(vocab - 200)) as u32
        })
        .collect()
}

fn stats(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model) = args.first() else {
        return Err("usage: bench_verify MODEL [PROMPT_TOKENS] [K] [STEPS]".into());
    };
    let number = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (prompt_tokens, k, steps) = (number(1, 512)?, number(2, 5)?, number(3, 20)?);
    if k < 2 || steps == 0 || prompt_tokens == 0 {
        return Err("K must be at least 2, PROMPT_TOKENS and STEPS at least 1".into());
    }
    let selected = device::select(DeviceChoice::Auto)?;
    let loaded = LoadedModel::load(std::path::Path::new(model))?;
    let vocab = loaded.model.vocab_size() as u32;
    let mut caches = loaded.model.new_caches();
    loaded
        .model
        .forward_tokens(&tokens(prompt_tokens, vocab, 1), &mut caches)?
        .eval()?;
    let mut forgets = true;
    let mut step = |count: usize, seed: u64| -> Result<f64, Box<dyn std::error::Error>> {
        let ids = tokens(count, vocab, seed);
        let start = Instant::now();
        let logits = loaded.model.forward_tokens(&ids, &mut caches)?;
        logits.eval()?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        for cache in caches.iter_mut() {
            if cache.forget_last(count as i32)? != count as i32 {
                forgets = false;
            }
        }
        Ok(ms)
    };
    // Warm-up: kernels compiled for both shapes.
    for i in 0..3 {
        step(1, 10 + i)?;
        step(k, 20 + i)?;
    }
    let (mut one, mut several) = (Vec::new(), Vec::new());
    for i in 0..steps as u64 {
        one.push(step(1, 100 + i)?);
        several.push(step(k, 200 + i)?);
    }
    let (one, several) = (stats(one), stats(several));
    println!(
        "{}",
        serde_json::json!({
            "device": selected.to_string(),
            "prompt_tokens": prompt_tokens,
            "k": k,
            "steps": steps,
            "context_kept": forgets,
            "one_token_ms": [one.0, one.1, one.2],
            "k_tokens_ms": [several.0, several.1, several.2],
            "ratio": several.0 / one.0,
        })
    );
    Ok(())
}
