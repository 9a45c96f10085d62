//! What `bench_batch` and `bench_one` share (included with `#[path]`, not an
//! example of its own): the model loaded for runs of a fixed length, the
//! same random prompts on every machine, and a `TokenGenerator` run from an
//! empty cache.

use std::path::PathBuf;
use std::rc::Rc;

use mlx_harmony_core::generate::{GenerateOptions, Generation, LoadedModel, TokenGenerator};
use mlx_harmony_core::models::Model;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

/// The model at `model_dir` with the tokenizer `tokenizer` (a benchmark
/// model folder has none: token ids become text through it, as a server's
/// would) and no end token, so that every run generates all it asks for.
pub fn load_without_end(
    model_dir: &str,
    tokenizer: &str,
) -> Result<Rc<LoadedModel>, Box<dyn std::error::Error>> {
    Ok(Rc::new(LoadedModel {
        model: Model::load(PathBuf::from(model_dir))?,
        tokenizer: tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| format!("{tokenizer}: {e}"))?,
        chat_template: None,
        harmony: None,
        eos_token_ids: Vec::new(),
        bos_token: String::new(),
        eos_token: String::new(),
    }))
}

/// `count` prompt tokens from `seed`, the same on every run and machine
/// (ids from 1 000 to `vocab` - 1 000, clear of special tokens).
pub fn random_tokens(seed: u64, count: usize, vocab: u32) -> Vec<u32> {
    let mut rng = mlx_harmony_core::demo::SplitMix64::new(seed);
    (0..count)
        .map(|_| 1000 + (rng.next_u64() % u64::from(vocab - 2000)) as u32)
        .collect()
}

/// `prompt` through `generator` from an empty cache, greedy, `gen_tokens`
/// tokens.
pub fn generate_from_empty(
    generator: &mut TokenGenerator,
    prompt: &[u32],
    gen_tokens: usize,
) -> Result<Generation, Box<dyn std::error::Error>> {
    generator.clear_cache();
    Ok(generator.generate(
        prompt,
        &mut Sampler::new(SamplingSettings::default())?,
        &GenerateOptions::new(gen_tokens),
        |_, _| {},
    )?)
}
