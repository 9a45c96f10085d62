//! The sampling filters and logits processors against mlx-lm 0.32.2's
//! `sample_utils` on the same fixed logits (fixtures/samplers.safetensors,
//! made by scripts/make_sampler_reference.py), and seeded sampling.

use std::collections::HashMap;

use mlx_harmony_core::sampling::{self, Sampler, SamplingSettings};
use mlx_rs::{Array, random};

fn reference() -> HashMap<String, Array> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/samplers.safetensors"
    );
    Array::load_safetensors(path)
        .unwrap_or_else(|_| panic!("{path} is missing: scripts/test makes it"))
}

fn assert_same(ours: &Array, theirs: &Array, what: &str) {
    let (a, b) = (ours.as_slice::<f32>(), theirs.as_slice::<f32>());
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if y.is_infinite() || x.is_infinite() {
            assert_eq!(
                x, y,
                "{what}[{i}]: one side removed the token, the other did not"
            );
        } else {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }
    let kept = b.iter().filter(|v| v.is_finite()).count();
    assert!(kept > 0, "{what}: nothing kept");
}

#[test]
fn filters_match_mlx_lm() {
    let r = reference();
    let lp = &r["logprobs"];
    let check = |name: &str, ours: Array| assert_same(&ours, &r[name], name);
    check("top_p_0.5", sampling::apply_top_p(lp, 0.5).unwrap());
    check("top_p_0.9", sampling::apply_top_p(lp, 0.9).unwrap());
    check("min_p_0.05", sampling::apply_min_p(lp, 0.05, 1).unwrap());
    check(
        "min_p_0.6_keep5",
        sampling::apply_min_p(lp, 0.6, 5).unwrap(),
    );
    check("top_k_1", sampling::apply_top_k(lp, 1).unwrap());
    check("top_k_10", sampling::apply_top_k(lp, 10).unwrap());
    check(
        "xtc_1.0_0.05",
        sampling::apply_xtc(lp, 1.0, 0.05, &[], 0.5).unwrap(),
    );
    let top = mlx_rs::ops::indexing::argmax_axis(lp, -1, None)
        .unwrap()
        .item_exact::<u32>();
    check(
        "xtc_1.0_0.05_special",
        sampling::apply_xtc(lp, 1.0, 0.05, &[top], 0.5).unwrap(),
    );
    let chain = sampling::apply_top_k(
        &sampling::apply_min_p(&sampling::apply_top_p(lp, 0.9).unwrap(), 0.05, 1).unwrap(),
        20,
    )
    .unwrap();
    check("chain_top_p_min_p_top_k", chain);
    let history = [5u32, 9, 9, 200, 17];
    check(
        "repetition_1.3_ctx3",
        sampling::apply_repetition_penalty(&r["logits"], &history, 1.3, 3).unwrap(),
    );
    check(
        "logit_bias",
        sampling::apply_logit_bias(&r["logits"], &[(3, 5.0), (10, -100.0)]).unwrap(),
    );

    // XTC with a draw above its probability changes nothing.
    assert_same(
        &sampling::apply_xtc(lp, 0.3, 0.05, &[], 0.9).unwrap(),
        lp,
        "xtc skipped",
    );
}

#[test]
fn the_sampler_chains_filters_in_mlx_lms_order() {
    let r = reference();
    let mut sampler = Sampler::new(SamplingSettings {
        temperature: 0.7,
        top_p: 0.9,
        min_p: 0.05,
        top_k: 20,
        seed: Some(1),
        ..Default::default()
    })
    .unwrap();
    assert_same(
        &sampler.filtered(&r["logits"], &[]).unwrap(),
        &r["chain_top_p_min_p_top_k"],
        "chain",
    );
}

#[test]
fn categorical_sampling_with_the_same_key_draws_the_same_token() {
    let r = reference();
    let scaled = r["logprobs"].multiply(Array::from_f32(1.0 / 0.7)).unwrap();
    for seed in [1u64, 2, 3] {
        let ours = random::categorical(&scaled, -1, None, &random::key(seed).unwrap()).unwrap();
        assert_eq!(
            ours.as_slice::<u32>(),
            r[&format!("categorical_t0.7_key{seed}")].as_slice::<u32>(),
            "seed {seed}"
        );
    }
}

#[test]
fn a_seed_reproduces_a_run_and_temperature_zero_is_greedy() {
    let r = reference();
    let settings = SamplingSettings {
        temperature: 1.0,
        seed: Some(42),
        ..Default::default()
    };
    let draw = |settings: &SamplingSettings| -> Vec<u32> {
        let mut sampler = Sampler::new(settings.clone()).unwrap();
        (0..16)
            .map(|_| {
                sampler
                    .sample(&r["logits"], &[])
                    .unwrap()
                    .item_exact::<u32>()
            })
            .collect()
    };
    let first = draw(&settings);
    assert_eq!(first, draw(&settings));
    assert!(
        first.iter().any(|t| *t != first[0]),
        "16 draws at temperature 1 should not all agree: {first:?}"
    );
    let other = draw(&SamplingSettings {
        seed: Some(43),
        ..settings.clone()
    });
    assert_ne!(first, other);

    let greedy = draw(&SamplingSettings {
        temperature: 0.0,
        ..settings
    });
    let best = mlx_rs::ops::indexing::argmax_axis(&r["logits"], -1, None)
        .unwrap()
        .item_exact::<u32>();
    assert!(greedy.iter().all(|t| *t == best));
}

#[test]
fn bad_settings_are_errors() {
    let r = reference();
    assert!(sampling::apply_top_k(&r["logprobs"], 0).is_err());
    let err = sampling::apply_logit_bias(&r["logits"], &[(100_000, 1.0)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
}

#[test]
fn a_bit_mask_leaves_exactly_its_tokens() {
    // 100 tokens (not a multiple of 32), bits past the vocabulary set too.
    let vocab = 100usize;
    let words: Vec<u32> = vec![0x8000_0001, 0x0000_0000, 0xF0F0_F0F0, 0xFFFF_FFFF];
    let logits = Array::from_slice(&vec![0.5f32; vocab], &[1, vocab as i32]);
    let masked = sampling::apply_allowed(&logits, &words).unwrap();
    let values = masked.as_slice::<f32>();
    for (i, v) in values.iter().enumerate() {
        let allowed = words[i / 32] >> (i % 32) & 1 == 1;
        assert_eq!(v.is_finite(), allowed, "token {i}");
    }
    // None of the vocabulary's tokens: an error, not a silent -inf row.
    let error = sampling::apply_allowed(&logits, &[0, 0, 0, 0xFFFF_FFF0]).unwrap_err();
    assert!(error.to_string().contains("allows no token"), "{error}");

    // Three rows masked at once (a batch): a held row, a free one, another
    // held row; each keeps exactly its own tokens.
    let rows = Array::from_slice(&vec![0.5f32; 3 * vocab], &[3, vocab as i32]);
    let other: Vec<u32> = vec![0x0000_0010, 0x0000_0003];
    let masked =
        sampling::apply_allowed_rows(&rows, &[Some(&words[..]), None, Some(&other[..])]).unwrap();
    let values = masked.as_slice::<f32>();
    for (i, v) in values.iter().enumerate() {
        let (row, token) = (i / vocab, i % vocab);
        let allowed = match row {
            0 => words[token / 32] >> (token % 32) & 1 == 1,
            1 => true,
            _ => other
                .get(token / 32)
                .is_some_and(|w| w >> (token % 32) & 1 == 1),
        };
        assert_eq!(v.is_finite(), allowed, "row {row}, token {token}");
    }
}
