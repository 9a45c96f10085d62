//! The quantized KV cache (`--kv-bits`) against the 16-bit one on whole
//! models: the logits of a prompt pass (expanded attention) and of single
//! steps and a speculative check (quantized attention) stay close, 8 bits
//! closer than 4; it holds about a quarter of the bytes at 4 bits; lookup
//! decoding rewinds it and still gives its plain greedy output; the prompt
//! cache is reused; and the settings that cannot work are refused.

use mlx_harmony_core::generate::{GenerateOptions, LoadedModel, TokenGenerator, prefill};
use mlx_harmony_core::models::cache::{KvCache, KvQuantization};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
use mlx_rs::Array;

fn parity(name: &str) -> LoadedModel {
    LoadedModel::load(&mlx_harmony_testkit::parity_fixture(name)).unwrap()
}

/// The largest difference of two logit arrays over the largest magnitude.
fn relative_gap(a: &Array, b: &Array) -> f32 {
    let gap = a.subtract(b).unwrap().abs().unwrap().max(None).unwrap();
    let scale = b.abs().unwrap().max(None).unwrap();
    gap.item_exact::<f32>() / scale.item_exact::<f32>()
}

#[test]
fn quantized_caches_give_logits_close_to_the_16_bit_ones() {
    // qwen3's heads are 32 wide: groups of 32.
    let loaded = parity("qwen3");
    let model = &loaded.model;
    let prompt: Vec<u32> = (0..80).map(|i| (i * 37 % 900 + 5) as u32).collect();
    let steps: [&[u32]; 3] = [&[11], &[12, 13, 14, 15], &[16]];
    let run = |caches: &mut Vec<KvCache>| -> Vec<Array> {
        let mut logits = vec![prefill(model, caches, &prompt).unwrap()];
        for tokens in steps {
            logits.push(model.forward_tokens(tokens, caches).unwrap());
        }
        logits
    };
    let dense = run(&mut model.new_caches());
    let mut gaps = Vec::new();
    for bits in [8, 4] {
        let settings = KvQuantization::new(bits, 32).unwrap();
        let mut caches = model.new_caches_quantized(settings).unwrap();
        let quantized = run(&mut caches);
        let worst = dense
            .iter()
            .zip(&quantized)
            .map(|(d, q)| relative_gap(q, d))
            .fold(0.0f32, f32::max);
        gaps.push(worst);
        // 80 + 1 + 4 + 1 positions held.
        assert_eq!(caches[0].offset(), 86);
        let dense_bytes: usize = {
            let mut c = model.new_caches();
            run(&mut c);
            c.iter().map(KvCache::nbytes).sum()
        };
        let bytes: usize = caches.iter().map(KvCache::nbytes).sum();
        let ratio = bytes as f64 / dense_bytes as f64;
        // Packed values plus a scale and a bias per 32 (float32 model).
        let expected = (bits as f64 + 2.0 * 32.0 / 32.0) / 32.0;
        assert!(
            (ratio - expected).abs() < 0.01,
            "{bits} bits: {ratio:.3} of the 16-bit cache's bytes, expected {expected:.3}"
        );
    }
    assert!(gaps[0] < 0.02, "8 bits: logits off by {:.4}", gaps[0]);
    assert!(gaps[1] < 0.15, "4 bits: logits off by {:.4}", gaps[1]);
    assert!(
        gaps[0] < gaps[1],
        "8 bits {} not closer than 4 bits {}",
        gaps[0],
        gaps[1]
    );
}

#[test]
fn a_cache_with_a_start_keeps_full_precision_until_it_is_that_long() {
    let loaded = parity("qwen3");
    let model = &loaded.model;
    let prompt: Vec<u32> = (0..40).map(|i| (i * 53 % 900 + 5) as u32).collect();
    let settings = KvQuantization::new(4, 32).unwrap().starting_at(42);
    let mut dense = model.new_caches();
    let mut later = model.new_caches_quantized(settings).unwrap();
    let bytes = |c: &[KvCache]| c.iter().map(KvCache::nbytes).sum::<usize>();
    // Below the start: the same logits as a 16-bit cache, bit for bit.
    let a = prefill(model, &mut dense, &prompt).unwrap();
    let b = prefill(model, &mut later, &prompt).unwrap();
    assert_eq!(relative_gap(&b, &a), 0.0);
    for token in [7, 8] {
        let a = model.forward_tokens(&[token], &mut dense).unwrap();
        let b = model.forward_tokens(&[token], &mut later).unwrap();
        assert_eq!(relative_gap(&b, &a), 0.0, "before the start");
    }
    assert!(later.iter().all(|c| c.quantization().is_none()));
    // 42 positions held: the next step quantizes them, and reads close.
    let a = model.forward_tokens(&[9], &mut dense).unwrap();
    let b = model.forward_tokens(&[9], &mut later).unwrap();
    assert!(later.iter().all(|c| c.quantization().is_some()));
    assert!(relative_gap(&b, &a) < 0.15, "{}", relative_gap(&b, &a));
    assert!(
        bytes(&later) * 4 < bytes(&dense),
        "{} vs {}",
        bytes(&later),
        bytes(&dense)
    );
    assert_eq!(later[0].offset(), 43);
}

#[test]
fn a_quantized_cache_decodes_with_lookup_and_reuses_the_prompt_cache() {
    let mut generator = TokenGenerator::new(parity("qwen3"));
    generator
        .set_kv_quantization(Some(KvQuantization::new(4, 32).unwrap()))
        .unwrap();
    let prompt = generator
        .loaded
        .encode("one two three four one two three four one two three")
        .unwrap();
    let greedy = || Sampler::new(SamplingSettings::default()).unwrap();
    let options = GenerateOptions::new(30);
    let plain = generator
        .generate(&prompt, &mut greedy(), &options, |_, _| {})
        .unwrap();
    generator.clear_cache();
    let lookup = GenerateOptions {
        prompt_lookup: 4,
        ..options.clone()
    };
    let fast = generator
        .generate(&prompt, &mut greedy(), &lookup, |_, _| {})
        .unwrap();
    assert_eq!(plain.tokens, fast.tokens);
    // The next turn reuses the quantized prompt cache and answers as a
    // fresh quantized generator does.
    let mut next = prompt.clone();
    next.extend(&plain.tokens[..10]);
    let continued = generator
        .generate(&next, &mut greedy(), &options, |_, _| {})
        .unwrap();
    assert!(continued.cached_tokens > prompt.len());
    generator.clear_cache();
    let fresh = generator
        .generate(&next, &mut greedy(), &options, |_, _| {})
        .unwrap();
    assert_eq!(continued.tokens, fresh.tokens);
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let mut gpt_oss = TokenGenerator::new(parity("gpt-oss"));
    let err = gpt_oss
        .set_kv_quantization(Some(KvQuantization::new(8, 32).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Llama-family"), "{err}");
    let mut llama = TokenGenerator::new(parity("llama"));
    llama.set_max_kv_size(Some(64)).unwrap();
    let err = llama
        .set_kv_quantization(Some(KvQuantization::new(8, 32).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-kv-size"), "{err}");
    // Groups wider than the heads (llama's are 16 wide): refused before
    // anything runs, with what to do.
    let mut llama = TokenGenerator::new(parity("llama"));
    let err = llama
        .set_kv_quantization(Some(KvQuantization::new(4, 32).unwrap().starting_at(5000)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head size 16") && err.contains("--kv-group-size"),
        "{err}"
    );
}
