//! The prompt cache: a second turn runs only its new tokens through the model
//! and produces exactly what a cold run produces.

use std::path::{Path, PathBuf};

use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{GenerateOptions, TokenGenerator};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

/// Options for at most `n` tokens.
fn up_to(n: usize) -> GenerateOptions {
    GenerateOptions::new(n)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

fn greedy() -> Sampler {
    Sampler::new(SamplingSettings::default()).unwrap()
}

#[test]
fn second_turn_prefills_only_new_tokens_and_matches_a_cold_run() {
    let mut warm = TokenGenerator::load(&fixture("llama")).unwrap();
    let first_prompt = warm
        .loaded
        .prompt_tokens(&PromptSetup::default(), "Hello there")
        .unwrap();
    let first = warm
        .generate(&first_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();
    assert_eq!(first.cached_tokens, 0);

    // The next turn: the history re-rendered through the chat template, then a new question.
    let history = [
        ChatMessage::new("user", "Hello there"),
        ChatMessage::new("assistant", &first.text),
        ChatMessage::new("user", "And then?"),
    ];
    let second_prompt = warm
        .loaded
        .encode(&warm.loaded.render(&history).unwrap())
        .unwrap();
    let second = warm
        .generate(&second_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();
    assert!(
        second.cached_tokens >= first_prompt.len(),
        "only {} of {} prompt tokens came from the cache",
        second.cached_tokens,
        second_prompt.len()
    );

    let mut cold = TokenGenerator::load(&fixture("llama")).unwrap();
    let reference = cold
        .generate(&second_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();
    assert_eq!(reference.cached_tokens, 0);
    assert_eq!(
        second.tokens, reference.tokens,
        "the cache changed the answer"
    );

    // The same prompt again: everything but the last prompt token is reused.
    let again = warm
        .generate(&second_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();
    assert_eq!(again.cached_tokens, second_prompt.len() - 1);
    assert_eq!(again.tokens, reference.tokens);

    // A different conversation shares only the template's opening (its
    // default system message): exactly that common prefix is reused.
    let other = warm
        .loaded
        .prompt_tokens(&PromptSetup::default(), "Something else entirely")
        .unwrap();
    let shared = warm
        .cached_tokens()
        .iter()
        .zip(&other)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared > 0 && shared < other.len());
    let other_warm = warm
        .generate(&other, &mut greedy(), &up_to(8), |_, _| {})
        .unwrap();
    assert_eq!(other_warm.cached_tokens, shared);
    let other_cold = TokenGenerator::load(&fixture("llama"))
        .unwrap()
        .generate(&other, &mut greedy(), &up_to(8), |_, _| {})
        .unwrap();
    assert_eq!(other_warm.tokens, other_cold.tokens);
}

#[test]
fn sliding_window_models_reuse_an_exact_extension_and_otherwise_start_afresh() {
    let mut warm = TokenGenerator::load(&fixture("gpt-oss")).unwrap();
    let setup = PromptSetup {
        conversation_start_date: Some("2026-11-24".into()),
        ..Default::default()
    };
    let prompt = warm.loaded.prompt_tokens(&setup, "Hi").unwrap();
    let first = warm
        .generate(&prompt, &mut greedy(), &up_to(6), |_, _| {})
        .unwrap();

    // Extending exactly what the cache holds reuses all of it.
    let mut extended = warm.cached_tokens().to_vec();
    let held = extended.len();
    extended.extend(&prompt[prompt.len() - 3..]);
    let reused = warm
        .generate(&extended, &mut greedy(), &up_to(6), |_, _| {})
        .unwrap();
    assert_eq!(reused.cached_tokens, held);
    let cold = TokenGenerator::load(&fixture("gpt-oss"))
        .unwrap()
        .generate(&extended, &mut greedy(), &up_to(6), |_, _| {})
        .unwrap();
    assert_eq!(reused.tokens, cold.tokens);

    // Going back to the first prompt needs trimming, which a sliding window cannot do.
    let again = warm
        .generate(&prompt, &mut greedy(), &up_to(6), |_, _| {})
        .unwrap();
    assert_eq!(again.cached_tokens, 0);
    assert_eq!(again.tokens, first.tokens);
}

#[test]
fn a_gpt_oss_chat_turn_reuses_the_previous_prompt_though_the_reasoning_is_dropped() {
    let setup = PromptSetup {
        conversation_start_date: Some("2026-11-24".into()),
        ..Default::default()
    };
    let mut warm = TokenGenerator::load(&fixture("gpt-oss")).unwrap();
    let first_turn = [ChatMessage::new("user", "Hi")];
    let first_prompt = warm
        .loaded
        .conversation_tokens(&setup, &first_turn)
        .unwrap();
    // More tokens than the fixture's window of 8, so that the sliding layers
    // have dropped positions of the prompt by the end of the reply.
    warm.generate(&first_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();

    // The next turn: Harmony keeps the final answer and drops the reasoning,
    // so the new prompt extends the first prompt but not the reply.
    let mut answer = ChatMessage::new("assistant", "Hello!");
    answer.reasoning_content = Some("The user greets me.".into());
    let second_turn = [
        first_turn[0].clone(),
        answer,
        ChatMessage::new("user", "And then?"),
    ];
    let second_prompt = warm
        .loaded
        .conversation_tokens(&setup, &second_turn)
        .unwrap();
    assert_eq!(second_prompt[..first_prompt.len()], first_prompt[..]);
    let second = warm
        .generate(&second_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();
    assert_eq!(second.cached_tokens, first_prompt.len());

    let cold = TokenGenerator::load(&fixture("gpt-oss"))
        .unwrap()
        .generate(&second_prompt, &mut greedy(), &up_to(12), |_, _| {})
        .unwrap();
    assert_eq!(cold.cached_tokens, 0);
    assert_eq!(
        second.tokens, cold.tokens,
        "the restored cache changed the answer"
    );
}

#[test]
fn a_bounded_cache_reuses_turns_until_its_bound_then_starts_afresh() {
    let turn = |generator: &mut TokenGenerator, prompt: &[u32]| {
        generator
            .generate(prompt, &mut greedy(), &up_to(8), |_, _| {})
            .unwrap()
    };
    let mut bounded = TokenGenerator::load(&fixture("llama")).unwrap();
    bounded.set_max_kv_size(Some(200)).unwrap();
    let first_prompt = bounded
        .loaded
        .prompt_tokens(&PromptSetup::default(), "Hello there")
        .unwrap();
    let first = turn(&mut bounded, &first_prompt);
    // Within the bound the next prompt reuses the cache.
    let mut second_prompt = first_prompt.clone();
    second_prompt.extend(&first.tokens);
    second_prompt.extend(&first_prompt[first_prompt.len() - 3..]);
    let second = turn(&mut bounded, &second_prompt);
    assert!(
        second.cached_tokens >= first_prompt.len(),
        "{}",
        second.cached_tokens
    );

    // Past the bound positions are gone: a prompt that diverges from the
    // cache runs afresh, and answers as a fresh generator with the same bound.
    bounded.set_max_kv_size(Some(16)).unwrap();
    let long: Vec<u32> = second_prompt.iter().copied().cycle().take(40).collect();
    turn(&mut bounded, &long);
    let mut diverging = long[..20].to_vec();
    diverging.extend(&first_prompt);
    let warm = turn(&mut bounded, &diverging);
    assert_eq!(warm.cached_tokens, 0);
    let mut fresh = TokenGenerator::load(&fixture("llama")).unwrap();
    fresh.set_max_kv_size(Some(16)).unwrap();
    assert_eq!(turn(&mut fresh, &diverging).tokens, warm.tokens);
    assert_eq!(fresh.max_kv_size(), Some(16));
}
