//! Prompt-lookup decoding against plain decoding: greedy outputs equal token
//! for token (with drafts actually kept, on SmolLM2-135M copying its input,
//! and on the random-weight parity checkpoints), ends (end token, stop
//! string, max_tokens) land where they do without it, the prompt cache
//! holds exactly what was fed, and models whose caches cannot rewind
//! (GPT-OSS's sliding windows) decode plainly.

use mlx_harmony_core::generate::{GenerateOptions, Generation, LoadedModel, TokenGenerator};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

mod common;
use common::{assert_same, greedy, run};

fn with_lookup(options: &GenerateOptions, n: usize) -> GenerateOptions {
    GenerateOptions {
        prompt_lookup: n,
        ..options.clone()
    }
}

#[test]
fn smollm2_copying_its_input_keeps_drafts_and_the_output_is_unchanged() {
    let loaded = LoadedModel::load(&mlx_harmony_testkit::smollm2()).unwrap();
    let passage = "The committee met on Tuesday to review the budget for the new library, \
                   which includes funds for books, computers and a reading room for children.";
    let messages = [mlx_harmony_core::chat_template::ChatMessage::new(
        "user",
        format!("Repeat this sentence exactly, word for word: {passage}"),
    )];
    let prompt = loaded
        .conversation_tokens(&Default::default(), &messages)
        .unwrap();
    let mut generator = TokenGenerator::new(loaded);
    let options = GenerateOptions::new(48);
    let plain = run(&mut generator, &prompt, &options);
    generator.clear_cache();
    let fast = run(&mut generator, &prompt, &with_lookup(&options, 6));
    assert_same(&plain, &fast, "smollm2");
    assert!(fast.drafted_tokens > 0, "nothing was drafted");
    assert!(
        fast.accepted_draft_tokens * 2 > plain.tokens.len(),
        "copying text, most tokens should come from kept drafts: {} of {}",
        fast.accepted_draft_tokens,
        plain.tokens.len()
    );
    // The prompt cache holds exactly what was fed: the next turn, reusing
    // it, answers as a fresh generator does.
    let mut next = prompt.clone();
    next.extend(&fast.tokens);
    next.extend(generator.loaded.encode(" Now once more.").unwrap());
    let continued = run(&mut generator, &next, &with_lookup(&options, 6));
    assert!(continued.cached_tokens > prompt.len());
    let mut fresh =
        TokenGenerator::new(LoadedModel::load(&mlx_harmony_testkit::smollm2()).unwrap());
    assert_same(&run(&mut fresh, &next, &options), &continued, "next turn");
}

#[test]
fn every_rewindable_parity_checkpoint_gives_the_plain_greedy_output() {
    for name in [
        "llama",
        "llama-q4",
        "qwen2",
        "mistral",
        "llama-tied-llama3rope",
    ] {
        let loaded = LoadedModel::load(&mlx_harmony_testkit::parity_fixture(name)).unwrap();
        // A prompt that repeats itself, so that drafts are found.
        let prompt = loaded
            .encode("one two three four one two three four one two three")
            .unwrap();
        let mut generator = TokenGenerator::new(loaded);
        for (max_tokens, stop) in [(40, vec![]), (25, vec!["e".to_string()])] {
            let options = GenerateOptions::new(max_tokens).with_stop(&stop);
            generator.clear_cache();
            let plain = run(&mut generator, &prompt, &options);
            for n in [1, 3, 8] {
                generator.clear_cache();
                let fast = run(&mut generator, &prompt, &with_lookup(&options, n));
                // Random weights rarely repeat the prompt, so drafts are
                // few and mostly rejected: the rewinding is what is checked.
                assert_same(&plain, &fast, &format!("{name}, lookup {n}, stop {stop:?}"));
            }
        }
    }
}

#[test]
fn sliding_window_models_decode_plainly_and_sampling_keeps_its_bounds() {
    let loaded = LoadedModel::load(&mlx_harmony_testkit::parity_fixture("gpt-oss")).unwrap();
    let prompt = loaded.encode("a b a b a b a").unwrap();
    let mut generator = TokenGenerator::new(loaded);
    let options = GenerateOptions::new(20);
    let plain = run(&mut generator, &prompt, &options);
    generator.clear_cache();
    let fast = run(&mut generator, &prompt, &with_lookup(&options, 4));
    assert_same(&plain, &fast, "gpt-oss");
    assert_eq!(fast.drafted_tokens, 0, "a sliding-window model drafted");

    // Sampled, on a Llama: exactly max_tokens unless it ended, logprobs one
    // per token.
    let loaded = LoadedModel::load(&mlx_harmony_testkit::parity_fixture("llama")).unwrap();
    let prompt = loaded.encode("x y z x y z x y").unwrap();
    let mut generator = TokenGenerator::new(loaded);
    for seed in 0..3 {
        let mut sampler = Sampler::new(SamplingSettings {
            temperature: 0.8,
            seed: Some(seed),
            ..Default::default()
        })
        .unwrap();
        sampler.set_logprobs(Some(2));
        generator.clear_cache();
        let generation = generator
            .generate(
                &prompt,
                &mut sampler,
                &with_lookup(&GenerateOptions::new(30), 5),
                |_, _| {},
            )
            .unwrap();
        assert!(generation.tokens.len() <= 30);
        if generation.finish_reason == mlx_harmony_core::generate::FinishReason::Length {
            assert_eq!(generation.tokens.len(), 30);
        }
        assert_eq!(generation.logprobs.len(), generation.tokens.len());
        for (entry, &token) in generation.logprobs.iter().zip(&generation.tokens) {
            assert_eq!(entry.token, token);
        }
    }
}

#[test]
fn drafts_rejected_midway_leave_the_caches_as_plain_decoding_does() {
    use mlx_harmony_core::generate::prefill;
    use mlx_harmony_core::lookup;
    use mlx_harmony_core::models::blocks::last_position;
    for name in ["llama", "qwen2", "mistral"] {
        let loaded = LoadedModel::load(&mlx_harmony_testkit::parity_fixture(name)).unwrap();
        let prompt = loaded.encode("The quick brown fox").unwrap();
        let mut generator = TokenGenerator::new(loaded);
        let plain = run(&mut generator, &prompt, &GenerateOptions::new(24)).tokens;
        let model = &generator.loaded.model;
        let mut caches = model.new_caches();
        let logits = prefill(model, &mut caches, &prompt).unwrap();
        let first = greedy()
            .sample(&last_position(&logits).unwrap(), &[])
            .unwrap();
        let mut out = vec![first.item_exact::<u32>()];
        while out.len() < plain.len() {
            // Two right tokens, then two wrong ones: two kept, the rest
            // rejected and rewound, every step.
            let i = out.len();
            let wrong = |t: u32| if t == 7 { 8 } else { 7 };
            let mut draft: Vec<u32> = plain[i..].iter().take(2).copied().collect();
            let next_wrong = wrong(*plain.get(i + draft.len()).unwrap_or(&0));
            draft.extend([next_wrong, next_wrong]);
            let last = *out.last().unwrap();
            let checked = lookup::check(model, &mut caches, &mut greedy(), last, &draft).unwrap();
            assert_eq!(
                checked.accepted,
                draft.len().min(2).min(plain.len() - i),
                "{name}"
            );
            out.extend(&checked.tokens);
        }
        out.truncate(plain.len());
        assert_eq!(out, plain, "{name}: rewound caches changed the output");
    }
}

#[test]
fn a_check_whose_caches_cannot_rewind_fails_instead_of_decoding_on() {
    use mlx_harmony_core::lookup;
    use mlx_harmony_core::models::cache::KvCache;
    let loaded = LoadedModel::load(&mlx_harmony_testkit::parity_fixture("llama")).unwrap();
    let model = &loaded.model;
    // Bounded caches already full: a rotating cache cannot take back what
    // it was just given once it has dropped positions.
    let mut caches: Vec<KvCache> = (0..model.new_caches().len())
        .map(|_| KvCache::rotating(4))
        .collect();
    let prompt = loaded.encode("The quick brown fox jumps over").unwrap();
    mlx_harmony_core::generate::prefill(model, &mut caches, &prompt).unwrap();
    let error = match lookup::check(model, &mut caches, &mut greedy(), prompt[0], &[7, 7, 7]) {
        Err(error) => error.to_string(),
        Ok(checked) => panic!(
            "a wrong draft was checked on caches that cannot rewind: kept {}",
            checked.accepted
        ),
    };
    assert!(
        error.contains("could forget only 0 of the"),
        "unclear error: {error}"
    );
}

#[test]
fn sampling_with_lookup_keeps_the_models_distribution() {
    // Two tokens made far more likely than the rest (logit bias; `a` about
    // four times as likely as `b`), a prompt that alternates them: every
    // step drafts one of them, against the odds half of the time, and the
    // frequencies of the 2nd and 3rd tokens must match plain sampling's
    // (a rule that kept drafts too often would pull them towards 1/2).
    let loaded = LoadedModel::load(&mlx_harmony_testkit::parity_fixture("llama")).unwrap();
    let (a, b) = (1000u32, 2000u32);
    let prompt = vec![a, b, a, b, a, b, a];
    let mut generator = TokenGenerator::new(loaded);
    let runs = 300;
    let bias = [(a, 31.4), (b, 30.0)];
    let is_a = |g: &Generation, position: usize| {
        assert!(g.tokens.iter().all(|&t| t == a || t == b), "{:?}", g.tokens);
        g.tokens[position] == a
    };
    let options = GenerateOptions::new(3);
    let (plain, ..) = common::sampled_hits(&mut generator, &prompt, &bias, &options, 0, runs, is_a);
    let lookup = GenerateOptions {
        prompt_lookup: 4,
        ..options
    };
    let (fast, drafted, _) =
        common::sampled_hits(&mut generator, &prompt, &bias, &lookup, 10_000, runs, is_a);
    assert!(drafted > 0);
    let counts = [plain, fast];
    for (position, (plain, other)) in counts[0].iter().zip(&counts[1]).enumerate() {
        mlx_harmony_testkit::assert_same_rate(
            *plain,
            *other,
            runs,
            &format!("token {} is `a`, lookup", position + 2),
        );
    }
}
