//! Stop strings: generation ends at the first one, and no part of it is ever
//! emitted, however the text is split into tokens.

use mlx_harmony_core::generate::{FinishReason, GenerateOptions, TokenGenerator};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
use mlx_harmony_core::text::StopMatcher;

/// Feeds `pieces` and returns (everything emitted, whether it stopped).
/// Options for at most `n` tokens.
fn up_to(n: usize) -> GenerateOptions {
    GenerateOptions::new(n)
}

fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool, Vec<String>) {
    let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
    let mut matcher = StopMatcher::new(&stops);
    let mut out = String::new();
    let mut emitted = Vec::new();
    for piece in pieces {
        let (text, stopped) = matcher.push(piece);
        emitted.push(text.clone());
        out.push_str(&text);
        if stopped {
            return (out, true, emitted);
        }
    }
    out.push_str(&matcher.flush());
    (out, false, emitted)
}

#[test]
fn stops_at_the_first_stop_string_and_never_emits_part_of_it() {
    let (out, stopped, emitted) = feed(&["END"], &["Hello E", "N", "D and more"]);
    assert_eq!((out.as_str(), stopped), ("Hello ", true));
    // "E" and "EN" were held back, never shown.
    assert_eq!(emitted, vec!["Hello ", "", ""]);

    // A false start is released once it can no longer be a stop string.
    let (out, stopped, emitted) = feed(&["END"], &["E", "Nx", " done"]);
    assert_eq!((out.as_str(), stopped), ("ENx done", false));
    assert_eq!(emitted[0], "");

    // The earliest of several stop strings wins; multi-byte text is cut on boundaries.
    let (out, stopped, _) = feed(&["ü!", "###"], &["naïve ü", "! ### x"]);
    assert_eq!((out.as_str(), stopped), ("naïve ", true));

    // Held text is flushed when generation ends for another reason.
    let (out, stopped, _) = feed(&["STOP"], &["almost ST"]);
    assert_eq!((out.as_str(), stopped), ("almost ST", false));

    // No stop strings: everything passes straight through.
    let (_, _, emitted) = feed(&[], &["a", "b"]);
    assert_eq!(emitted, vec!["a", "b"]);
}

#[test]
fn generation_ends_at_a_stop_string_on_a_real_model() {
    let model = std::env::var_os("MLX_HARMONY_SMOLLM2")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/mlx-harmony/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let mut generator = TokenGenerator::load(&model).unwrap();
    let prompt = generator
        .loaded
        .prompt_tokens(&PromptSetup::default(), "What is the capital of France?")
        .unwrap();
    let mut greedy = Sampler::new(SamplingSettings::default()).unwrap();
    let full = generator
        .generate(&prompt, &mut greedy, &up_to(24), |_, _| {})
        .unwrap();
    assert_eq!(full.text, "The capital of France is Paris.");
    let mut streamed = String::new();
    let stopped = generator
        .generate(
            &prompt,
            &mut greedy,
            &up_to(24).with_stop(&["never".to_string(), "Paris".to_string()]),
            |_, piece| streamed.push_str(piece),
        )
        .unwrap();
    assert_eq!(stopped.text, "The capital of France is ");
    assert_eq!(streamed, stopped.text);
    assert!(stopped.finish_reason == FinishReason::StopString);
    // Which stop string ended it (the Messages API names it).
    assert_eq!(stopped.stop_string.as_deref(), Some("Paris"));
    assert_eq!(full.stop_string, None);
}
