//! Greedy generation on the random-weights demo checkpoint, which has no
//! tokenizer: its 256-token vocabulary is the bytes, so the prompt is fed as
//! its UTF-8 bytes. Such checkpoints are written by the engine's test
//! support (`cargo run -p mlx-harmony-core --example make-demo-checkpoint`)
//! and mark themselves in config.json; any other checkpoint is refused.

use std::path::Path;
use std::time::Instant;

use mlx_harmony_core::checkpoint::Checkpoint;
use mlx_harmony_core::mlx_rs::ops::indexing::argmax_axis;
use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::blocks::last_position;
use mlx_harmony_core::{Error, Result};

/// Whether `dir` is the random-weights demo checkpoint (no tokenizer; bytes as tokens).
pub fn is_demo_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|c| {
            c.get("mlx_harmony_random_weights") == Some(&serde_json::Value::Bool(true))
        })
}

/// What one run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoRun {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub tokens: Vec<u32>,
    pub tokens_per_second: f64,
}

/// Loads the demo checkpoint at `model_dir` and generates up to `max_tokens`
/// tokens greedily, handing each to `on_token` as soon as it is known.
pub fn run<E>(
    model_dir: &Path,
    prompt: &str,
    max_tokens: usize,
    mut on_token: impl FnMut(u32) -> std::result::Result<(), E>,
) -> Result<DemoRun>
where
    E: std::fmt::Display,
{
    let checkpoint = Checkpoint::open(model_dir)?;
    let is_demo =
        checkpoint.config.get("mlx_harmony_random_weights") == Some(&serde_json::Value::Bool(true));
    if !is_demo {
        return Err(Error::Invalid(format!(
            "{}: not the random-weights demo checkpoint (made by \
             `cargo run -p mlx-harmony-core --example make-demo-checkpoint`); \
             open other models with their tokenizer",
            model_dir.display()
        )));
    }
    let model = Model::from_checkpoint(checkpoint)?;
    let mut tokens: Vec<u32> = prompt.bytes().map(u32::from).collect();
    let prompt_tokens = tokens.len();
    let start = Instant::now();
    let mut caches = model.new_caches();
    let mut input = tokens.clone();
    for _ in 0..max_tokens {
        let logits = model.forward_tokens(&input, &mut caches)?;
        let next = argmax_axis(last_position(&logits)?, -1, None)?.item_exact::<u32>();
        tokens.push(next);
        input = vec![next];
        on_token(next).map_err(|err| Error::Invalid(format!("cannot write output: {err}")))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(DemoRun {
        prompt_tokens,
        generated_tokens: max_tokens,
        tokens_per_second: if seconds > 0.0 {
            max_tokens as f64 / seconds
        } else {
            0.0
        },
        tokens: tokens[prompt_tokens..].to_vec(),
    })
}
