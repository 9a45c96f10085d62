//! Parity with mlx-lm 0.32.2: every architecture and layout in
//! fixtures/parity (made by scripts/make-parity-models with mlx-lm's own
//! loader and generate_step) gives the same logits at every position, with
//! and without the KV cache, and the same 48 greedy tokens.

use std::path::{Path, PathBuf};

use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::blocks::last_position;
use mlx_rs::ops::indexing::argmax_axis;
use mlx_rs::{Array, Dtype};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run scripts/make-parity-models (scripts/test does)",
                root.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 8,
        "expected at least 8 parity checkpoints, found {}",
        dirs.len()
    );
    dirs
}

/// The largest relative error over positions: max |ours - theirs| / max |theirs|, per row.
fn worst_relative_error(ours: &[f32], theirs: &[f32], vocab: usize) -> (f32, usize) {
    let mut worst = (0.0f32, 0);
    for (position, (a, b)) in ours.chunks(vocab).zip(theirs.chunks(vocab)).enumerate() {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, position);
        }
    }
    worst
}

/// Greedy decoding as mlx-lm's `generate_step` does it: the argmax of the
/// log-probabilities, computed in the model's dtype (in half precision the
/// subtraction can tie two logits, and the first index wins on both sides).
fn greedy(model: &Model, prompt: &[u32], count: usize) -> Vec<u32> {
    greedy_with(model, model.new_caches(), prompt, count, false)
}

/// The cache bound of the reference's `greedy_rotating` (scripts/make_parity_models.py).
const ROTATING_MAX_KV_SIZE: i32 = 24;

/// Greedy decoding over `caches`. With `last_alone`, the prompt's last token
/// goes in a step of its own, as mlx-lm's `generate_step` runs it (which a
/// bounded cache sees: a chunk and a single token are cached differently).
fn greedy_with(
    model: &Model,
    mut caches: Vec<mlx_harmony_core::models::cache::KvCache>,
    prompt: &[u32],
    count: usize,
    last_alone: bool,
) -> Vec<u32> {
    let mut input = prompt.to_vec();
    if last_alone {
        let (head, last) = prompt.split_at(prompt.len() - 1);
        model.forward_tokens(head, &mut caches).unwrap();
        input = last.to_vec();
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let logits = model.forward_tokens(&input, &mut caches).unwrap();
        let last = last_position(&logits).unwrap();
        let logprobs = last
            .subtract(last.logsumexp_axis(-1, true).unwrap())
            .unwrap();
        let next = argmax_axis(&logprobs, -1, None)
            .unwrap()
            .item_exact::<u32>();
        out.push(next);
        input = vec![next];
    }
    out
}

#[test]
fn every_architecture_and_layout_matches_mlx_lm() {
    let tolerance: f32 = if mlx_harmony_core::device::gpu_available() {
        5e-3
    } else {
        1e-3
    };
    for dir in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let reference = Array::load_safetensors(dir.join("reference.safetensors")).unwrap();
        let prompt: Vec<u32> = reference["prompt"]
            .as_slice::<i32>()
            .iter()
            .map(|&t| t as u32)
            .collect();
        let expected = reference["logits"].as_slice::<f32>().to_vec();
        let expected_greedy: Vec<u32> = reference["greedy"]
            .as_slice::<i32>()
            .iter()
            .map(|&t| t as u32)
            .collect();
        let model = Model::load(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vocab = model.vocab_size() as usize;

        let one_pass = model
            .forward_tokens(&prompt, &mut model.new_caches())
            .unwrap();
        // Half-precision checkpoints compute in their dtype (about 3 significant
        // digits), so they are held to 1e-2; f32 ones to 1e-3.
        let tolerance = if one_pass.dtype() == Dtype::Float32 {
            tolerance
        } else {
            tolerance.max(1e-2)
        };
        let one_pass = one_pass.as_dtype(Dtype::Float32).unwrap();
        let (err, at) = worst_relative_error(one_pass.as_slice::<f32>(), &expected, vocab);
        assert!(
            err < tolerance,
            "{name}: one pass: relative error {err:.2e} at position {at}"
        );

        // Chunked prefill through the KV cache: 1, 15, 16, 32 tokens.
        let mut caches = model.new_caches();
        let mut chunked = Vec::new();
        let mut start = 0;
        for size in [1usize, 15, 16, 32] {
            let part = model
                .forward_tokens(&prompt[start..start + size], &mut caches)
                .unwrap()
                .as_dtype(Dtype::Float32)
                .unwrap();
            chunked.extend_from_slice(part.as_slice::<f32>());
            start += size;
        }
        let (err, at) = worst_relative_error(&chunked, &expected, vocab);
        assert!(
            err < tolerance,
            "{name}: chunked prefill: relative error {err:.2e} at position {at}"
        );

        assert_eq!(
            greedy(&model, &prompt, 48),
            expected_greedy,
            "{name}: greedy tokens differ from mlx-lm"
        );
        // A cache bounded to 24 positions (--max-kv-size): 64 prompt tokens
        // and 48 more go past it, as mlx-lm's RotatingKVCache takes them.
        let expected_rotating: Vec<u32> = reference["greedy_rotating"]
            .as_slice::<i32>()
            .iter()
            .map(|&t| t as u32)
            .collect();
        assert_eq!(
            greedy_with(
                &model,
                model.new_caches_bounded(Some(ROTATING_MAX_KV_SIZE)),
                &prompt,
                48,
                true
            ),
            expected_rotating,
            "{name}: greedy tokens with a cache bounded to {ROTATING_MAX_KV_SIZE} differ from mlx-lm"
        );
        println!(
            "{name}: logits within {err:.1e} of mlx-lm, 48 greedy tokens equal, also with a bounded cache"
        );
    }
}

#[test]
fn every_fixture_has_a_real_tokenizer_that_fits_its_model() {
    for dir in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .unwrap_or_else(|e| panic!("{name}: tokenizer.json: {e}"));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let vocab = config["vocab_size"].as_u64().unwrap() as usize;
        assert_eq!(
            tokenizer.get_vocab_size(true),
            vocab,
            "{name}: tokenizer and model vocabularies differ"
        );
        let text = "Hello, world! Ünïcødé 123";
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "{name}");
        assert!(
            dir.join("tokenizer_config.json").is_file()
                && dir.join("generation_config.json").is_file()
        );
    }
}

#[test]
fn smollm2_tokenizer_json_and_our_gguf_tokenizer_agree() {
    // Two independent builds of one vocabulary: Python `tokenizers` from gguf-py's
    // reading of the file (the fixtures), and our Rust GGUF loader.
    let Some(gguf) = std::env::var_os("MLX_HARMONY_SMOLLM2") else {
        panic!("MLX_HARMONY_SMOLLM2 is not set: run the tests through scripts/test")
    };
    let (_, extras) = mlx_harmony_core::gguf::open(Path::new(&gguf)).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/llama");
    let json = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    for text in [
        "<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n",
        "  Leading spaces, tabs\t\tand ünïcödé — 日本語 😀\n\n",
        "def f(x):\n    return x ** 2  # square\n",
    ] {
        let a = extras
            .tokenizer
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec();
        let b = json.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(a, b, "{text:?}");
    }
}

#[test]
fn model_folders_load_with_their_tokenizer_template_and_end_tokens() {
    use mlx_harmony_core::chat_template::ChatMessage;
    use mlx_harmony_core::generate::LoadedModel;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/llama");
    let loaded = LoadedModel::load(&dir).unwrap();
    assert_eq!(
        loaded.eos_token_ids,
        vec![2],
        "generation_config.json's eos_token_id"
    );
    let prompt = loaded.render(&[ChatMessage::new("user", "Hi")]).unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let ids = loaded.encode(&prompt).unwrap();
    assert_eq!(
        ids[0],
        loaded.tokenizer.token_to_id("<|im_start|>").unwrap()
    );
    // GPT-OSS folders speak Harmony: the prompt is the Harmony rendering of the
    // setup and the user message, and generation stops at <|return|> or <|call|>.
    use mlx_harmony_core::prompt::PromptSetup;
    use mlx_harmony_format::RenderConfig;
    use mlx_harmony_format::model::{
        DeveloperContent, Message, ReasoningEffort, Role, SystemContent,
    };
    let gpt_oss = LoadedModel::load(&dir.with_file_name("gpt-oss")).unwrap();
    let harmony = gpt_oss.harmony.as_ref().expect("GPT-OSS uses Harmony");
    let setup = PromptSetup {
        conversation_start_date: Some("2026-11-24".into()),
        reasoning_effort: Some(ReasoningEffort::High),
        instructions: Some("Be brief.".into()),
        ..Default::default()
    };
    let system = SystemContent::default()
        .with_conversation_start_date("2026-11-24")
        .with_reasoning_effort(ReasoningEffort::High);
    let messages = [
        Message::system(system),
        Message::developer(DeveloperContent::default().with_instructions("Be brief.")),
        Message::text(Role::User, "Hi"),
    ];
    let expected = harmony
        .render_conversation_for_completion(&messages, Role::Assistant, RenderConfig::default())
        .unwrap();
    assert_eq!(gpt_oss.prompt_tokens(&setup, "Hi").unwrap(), expected);
    let mut stops = gpt_oss.eos_token_ids.clone();
    stops.sort();
    assert_eq!(stops, vec![200002, 200012]);
}
