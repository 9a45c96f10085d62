//! The decoding loop's contracts: cancellation from another thread, whole
//! UTF-8 when streaming, chunked prefill, and the per-call statistics.

use std::path::PathBuf;
use std::time::Duration;

use mlx_harmony_core::generate::{FinishReason, GenerateOptions, PREFILL_CHUNK, TokenGenerator};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
use mlx_harmony_core::text::Detokenizer;
use mlx_harmony_testkit::smollm2;

/// Options for at most `n` tokens.
fn up_to(n: usize) -> GenerateOptions {
    GenerateOptions::new(n)
}

fn greedy() -> Sampler {
    Sampler::new(SamplingSettings::default()).unwrap()
}

#[test]
fn another_thread_can_cancel_a_generation() {
    let mut generator = TokenGenerator::load(&smollm2()).unwrap();
    let prompt = generator
        .loaded
        .prompt_tokens(&PromptSetup::default(), "Count from one to a thousand.")
        .unwrap();
    let handle = generator.cancel_handle();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        handle.cancel();
    });
    let mut sampler = Sampler::new(SamplingSettings {
        temperature: 0.0,
        seed: Some(1),
        ..Default::default()
    })
    .unwrap();
    let result = generator
        .generate(&prompt, &mut sampler, &up_to(5000), |_, _| {})
        .unwrap();
    canceller.join().unwrap();
    assert!(
        result.finish_reason == FinishReason::Cancelled,
        "{result:?}"
    );
    assert!(result.tokens.len() < 5000 && result.finish_reason != FinishReason::Stop);

    // The flag is cleared for the next call, and the prompt cache still works.
    let again = generator
        .generate(&prompt, &mut greedy(), &up_to(4), |_, _| {})
        .unwrap();
    assert!(again.finish_reason != FinishReason::Cancelled);
    assert_eq!(again.tokens.len(), 4);
}

#[test]
fn streaming_never_emits_broken_utf8() {
    let generator = TokenGenerator::load(&smollm2()).unwrap();
    let tokenizer = &generator.loaded.tokenizer;
    let text = "Emoji 😀🎉, CJK 日本語, accents déjà vu — done.";
    let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    // Byte-level BPE splits some of these characters over several tokens.
    assert!(ids.len() > text.chars().count() / 2);
    let mut detokenizer = Detokenizer::new();
    let mut streamed = String::new();
    let mut held_back = 0;
    for id in ids {
        match detokenizer.push(tokenizer, id) {
            Some(piece) => {
                assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
                streamed.push_str(&piece);
            }
            None => held_back += 1,
        }
    }
    assert_eq!(streamed, text);
    assert!(
        held_back > 0,
        "no token needed holding back; the test text is too easy"
    );
}

#[test]
fn long_prompts_are_prefilled_in_chunks_with_the_same_result() {
    // A tiny random-weight Llama with SmolLM2's tokenizer: fast enough for 600 tokens twice.
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/llama");
    let mut generator = TokenGenerator::load(&tiny).unwrap();
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    let prompt = generator
        .loaded
        .prompt_tokens(&PromptSetup::default(), &format!("{long}\nSummarize."))
        .unwrap();
    assert!(prompt.len() > PREFILL_CHUNK, "{} tokens", prompt.len());
    let chunked = generator
        .generate(&prompt, &mut greedy(), &up_to(6), |_, _| {})
        .unwrap();
    // The same prompt in one pass, through the model directly.
    let model = &generator.loaded.model;
    let logits = model
        .forward_tokens(&prompt, &mut model.new_caches())
        .unwrap();
    let last = mlx_harmony_core::models::blocks::last_position(&logits).unwrap();
    let first = mlx_rs::ops::indexing::argmax_axis(&last, -1, None)
        .unwrap()
        .item_exact::<u32>();
    assert_eq!(chunked.tokens[0], first);
    assert!(chunked.time_to_first_token_seconds > 0.0);
    assert!(chunked.peak_memory_bytes > 0);
    assert!(chunked.prefill_tokens_per_second > 0.0);
}
