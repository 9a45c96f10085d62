//! Speculative decoding with a draft model against plain decoding: greedy
//! outputs equal token for token (the target as its own draft, which keeps
//! nearly every draft, and a quantized copy as the draft, which keeps fewer),
//! the next turn reuses both caches and still answers as a fresh generator
//! does, sampling keeps the target's distribution, and draft models that
//! cannot serve are refused with a reason.

use std::rc::Rc;

use mlx_harmony_core::draft::DraftModel;
use mlx_harmony_core::generate::{GenerateOptions, Generation, LoadedModel, TokenGenerator};

mod common;
use common::{assert_same, run};

fn parity(name: &str) -> LoadedModel {
    LoadedModel::load(&mlx_harmony_testkit::parity_fixture(name)).unwrap()
}

/// A generator of `target` drafting with `draft`, `k` tokens a step.
fn with_draft(target: &str, draft: &str, k: usize) -> TokenGenerator {
    let mut generator = TokenGenerator::new(parity(target));
    let draft = DraftModel::new(Rc::new(parity(draft)), &generator.loaded, k).unwrap();
    generator.set_draft_model(Some(draft));
    generator
}

#[test]
fn smollm2_as_its_own_draft_keeps_nearly_every_draft_and_the_output() {
    let loaded = LoadedModel::load(&mlx_harmony_testkit::smollm2()).unwrap();
    let messages = [mlx_harmony_core::chat_template::ChatMessage::new(
        "user",
        "Name three rivers in Europe.",
    )];
    let prompt = loaded
        .conversation_tokens(&Default::default(), &messages)
        .unwrap();
    let draft = Rc::new(LoadedModel::load(&mlx_harmony_testkit::smollm2()).unwrap());
    let mut plain_generator = TokenGenerator::new(loaded);
    let options = GenerateOptions::new(32);
    let plain = run(&mut plain_generator, &prompt, &options);
    let mut generator =
        TokenGenerator::new(LoadedModel::load(&mlx_harmony_testkit::smollm2()).unwrap());
    generator.set_draft_model(Some(DraftModel::new(draft, &generator.loaded, 4).unwrap()));
    let fast = run(&mut generator, &prompt, &options);
    assert_same(&plain, &fast, "smollm2 drafting for itself");
    // The same model drafts what it then samples greedily; only a float
    // difference between one-token and several-token passes can reject.
    assert!(fast.drafted_tokens > 0);
    assert!(
        fast.accepted_draft_tokens * 10 >= fast.drafted_tokens * 9,
        "kept {} of {} drafted tokens",
        fast.accepted_draft_tokens,
        fast.drafted_tokens
    );
    assert!(
        fast.speculative_steps * 2 < fast.tokens.len(),
        "{} steps",
        fast.speculative_steps
    );
}

#[test]
fn a_quantized_draft_gives_the_plain_greedy_output_and_the_next_turn_too() {
    let prompt = parity("llama")
        .encode("one two three four five six")
        .unwrap();
    let mut plain_generator = TokenGenerator::new(parity("llama"));
    for k in [1, 3, 6] {
        let mut generator = with_draft("llama", "llama-q4", k);
        for (max_tokens, stop) in [(40, vec![]), (25, vec!["e".to_string()])] {
            let options = GenerateOptions::new(max_tokens).with_stop(&stop);
            plain_generator.clear_cache();
            let plain = run(&mut plain_generator, &prompt, &options);
            generator.clear_cache();
            let fast = run(&mut generator, &prompt, &options);
            assert_same(&plain, &fast, &format!("k {k}, stop {stop:?}"));
            assert!(fast.drafted_tokens > 0, "k {k}: nothing drafted");
        }
        // The next turn starts from both prompt caches (the target's and the
        // draft's), each trimmed to what the new prompt shares.
        let options = GenerateOptions::new(30);
        generator.clear_cache();
        let first = run(&mut generator, &prompt, &options);
        let mut next = prompt.clone();
        next.extend(&first.tokens[..first.tokens.len() / 2]);
        next.extend(generator.loaded.encode(" and again").unwrap());
        let continued = run(&mut generator, &next, &options);
        assert!(continued.cached_tokens > prompt.len());
        plain_generator.clear_cache();
        assert_same(
            &run(&mut plain_generator, &next, &options),
            &continued,
            "next turn",
        );
    }
}

#[test]
fn sampling_with_a_draft_model_keeps_the_targets_distribution() {
    // The draft (the model itself, unbiased) proposes its greedy path `g`;
    // the target samples with a bias that makes `g`'s tokens and one other,
    // `b`, far likelier than the rest, so drafts are kept often but not
    // always. How often the 2nd and 3rd tokens follow `g` must match plain
    // sampling's: a rule that kept drafts too often would raise it.
    let prompt = parity("llama").encode("x y z x y z x y").unwrap();
    let mut plain_generator = TokenGenerator::new(parity("llama"));
    let g = run(&mut plain_generator, &prompt, &GenerateOptions::new(3)).tokens;
    let b = (0..5000).find(|t| !g.contains(t)).unwrap();
    let mut bias: Vec<(u32, f32)> = vec![(b, 30.0)];
    for &t in &g {
        if !bias.iter().any(|&(id, _)| id == t) {
            bias.push((t, 31.0));
        }
    }
    let mut drafting = TokenGenerator::new(parity("llama"));
    let draft = DraftModel::new(Rc::new(parity("llama")), &drafting.loaded, 2).unwrap();
    drafting.set_draft_model(Some(draft));
    let runs = 300;
    let follows = |out: &Generation, position: usize| out.tokens[position] == g[position];
    let options = GenerateOptions::new(3);
    let (plain, ..) = common::sampled_hits(
        &mut plain_generator,
        &prompt,
        &bias,
        &options,
        0,
        runs,
        follows,
    );
    let (drafted, proposed, kept) = common::sampled_hits(
        &mut drafting,
        &prompt,
        &bias,
        &options,
        10_000,
        runs,
        follows,
    );
    assert!(
        kept > 0 && kept < proposed,
        "drafts kept {kept} of {proposed}: the test needs some of each"
    );
    for (position, (plain, drafted)) in plain.iter().zip(&drafted).enumerate() {
        mlx_harmony_testkit::assert_same_rate(
            *plain,
            *drafted,
            runs,
            &format!(
                "token {} follows the greedy path, with a draft model",
                position + 2
            ),
        );
    }
}

#[test]
fn draft_models_that_cannot_serve_are_refused_with_the_reason() {
    let llama = parity("llama");
    let other_tokenizer = DraftModel::new(Rc::new(parity("gpt-oss")), &llama, 3)
        .err()
        .expect("a draft with another tokenizer was taken")
        .to_string();
    assert!(other_tokenizer.contains("tokenizer"), "{other_tokenizer}");
    let gpt_oss = parity("gpt-oss");
    let sliding = DraftModel::new(Rc::new(parity("gpt-oss")), &gpt_oss, 3)
        .err()
        .expect("a sliding-window draft was taken")
        .to_string();
    assert!(sliding.contains("sliding-window"), "{sliding}");
    for k in [0, 33] {
        let count = DraftModel::new(Rc::new(parity("llama-q4")), &llama, k)
            .err()
            .expect("a draft count out of range was taken")
            .to_string();
        assert!(count.contains("from 1 to 32"), "{count}");
    }
}
