//! Helpers shared by the speculative-decoding tests (each test file uses
//! its own share of them).
#![allow(dead_code)]

use mlx_harmony_core::generate::{GenerateOptions, Generation, TokenGenerator};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

/// Samples 3 tokens after `prompt` `runs` times at temperature 1 with
/// `logit_bias` (seeds `seed_base..`), fresh caches each time, and counts
/// the runs where the 2nd and the 3rd token are the ones `hit` names.
/// Returns the counts and the tokens drafted and kept over all runs.
pub fn sampled_hits(
    generator: &mut TokenGenerator,
    prompt: &[u32],
    logit_bias: &[(u32, f32)],
    options: &GenerateOptions,
    seed_base: u64,
    runs: usize,
    hit: impl Fn(&Generation, usize) -> bool,
) -> ([usize; 2], usize, usize) {
    let (mut counts, mut drafted, mut accepted) = ([0usize; 2], 0, 0);
    for seed in 0..runs as u64 {
        let mut sampler = Sampler::new(SamplingSettings {
            temperature: 1.0,
            seed: Some(seed_base + seed),
            logit_bias: logit_bias.to_vec(),
            ..Default::default()
        })
        .unwrap();
        generator.clear_cache();
        let options = GenerateOptions {
            max_tokens: 3,
            ..options.clone()
        };
        let g = generator
            .generate(prompt, &mut sampler, &options, |_, _| {})
            .unwrap();
        assert_eq!(g.tokens.len(), 3, "{:?}", g.tokens);
        drafted += g.drafted_tokens;
        accepted += g.accepted_draft_tokens;
        for position in [1, 2] {
            if hit(&g, position) {
                counts[position - 1] += 1;
            }
        }
    }
    (counts, drafted, accepted)
}

/// Plain greedy sampling.
pub fn greedy() -> Sampler {
    Sampler::new(SamplingSettings::default()).unwrap()
}

/// A greedy generation.
pub fn run(
    generator: &mut TokenGenerator,
    prompt: &[u32],
    options: &GenerateOptions,
) -> Generation {
    generator
        .generate(prompt, &mut greedy(), options, |_, _| {})
        .unwrap()
}

/// Two generations gave the same tokens, text and ending.
pub fn assert_same(plain: &Generation, fast: &Generation, what: &str) {
    assert_eq!(plain.tokens, fast.tokens, "{what}: tokens");
    assert_eq!(plain.text, fast.text, "{what}: text");
    assert_eq!(plain.finish_reason, fast.finish_reason, "{what}: finish");
}
