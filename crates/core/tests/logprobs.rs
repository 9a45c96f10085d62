//! Log-probabilities against mlx-lm: on every parity checkpoint, the first
//! generated token's log-probability and its top 20 equal the log-softmax
//! of the logits mlx-lm 0.32.2 computed for the prompt's last position
//! (fixtures/parity/*/reference.safetensors), sorted, the greedy token
//! first; the batch reports the same as the single-sequence loop; at a
//! temperature they are of the tempered distribution.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceRequest};
use mlx_harmony_core::generate::{Cancel, GenerateOptions, LoadedModel, generate};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings, TokenLogprobs};
use mlx_rs::Array;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/parity is missing: run scripts/make-parity-models (scripts/test does)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "expected the parity checkpoints");
    dirs
}

fn sampler(temperature: f32, top: usize) -> Sampler {
    let mut sampler = Sampler::new(SamplingSettings {
        temperature,
        seed: Some(5),
        ..Default::default()
    })
    .unwrap();
    sampler.set_logprobs(Some(top));
    sampler
}

/// mlx-lm's log-softmax of its last-position logits, in f64.
fn reference_logprobs(dir: &Path) -> (Vec<u32>, Vec<f64>) {
    let reference = Array::load_safetensors(dir.join("reference.safetensors")).unwrap();
    let prompt: Vec<u32> = reference["prompt"]
        .as_slice::<i32>()
        .iter()
        .map(|&t| t as u32)
        .collect();
    let logits = reference["logits"].as_slice::<f32>();
    let vocab = logits.len() / prompt.len();
    let last: Vec<f64> = logits[logits.len() - vocab..]
        .iter()
        .map(|&v| v as f64)
        .collect();
    let max = last.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = last.iter().map(|v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    (prompt, last.iter().map(|v| v - lse).collect())
}

#[test]
fn greedy_logprobs_equal_the_log_softmax_of_mlx_lms_logits() {
    let tolerance = if mlx_harmony_core::device::gpu_available() {
        1e-2
    } else {
        2e-3
    };
    for dir in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let loaded = LoadedModel::load(&dir).unwrap();
        let (prompt, expected) = reference_logprobs(&dir);
        let half = std::fs::read_to_string(dir.join("config.json"))
            .unwrap()
            .contains("float16");
        let tolerance = if half { 5e-2 } else { tolerance };
        let mut ours = sampler(0.0, 20);
        let generation = generate(
            &loaded,
            &prompt,
            &mut ours,
            &GenerateOptions::new(4),
            |_, _| {},
        )
        .unwrap();
        // End tokens are not part of the output and carry no entry.
        let first: &TokenLogprobs = match generation.logprobs.first() {
            Some(first) => first,
            None => continue,
        };
        assert_eq!(generation.logprobs.len(), generation.tokens.len(), "{name}");
        assert_eq!(first.token, generation.tokens[0], "{name}");
        assert_eq!(first.top.len(), 20, "{name}");
        assert_eq!(
            first.top[0].0, first.token,
            "{name}: greedy token not first"
        );
        assert!(
            first.top.windows(2).all(|w| w[0].1 >= w[1].1),
            "{name}: not sorted"
        );
        let near = |a: f32, b: f64| (a as f64 - b).abs() <= tolerance * (1.0 + b.abs());
        assert!(
            near(first.logprob, expected[first.token as usize]),
            "{name}: {} vs {}",
            first.logprob,
            expected[first.token as usize]
        );
        for &(token, logprob) in &first.top {
            assert!(
                near(logprob, expected[token as usize]),
                "{name}: token {token}: {logprob} vs mlx-lm {}",
                expected[token as usize]
            );
        }
        // The top 20 are the 20 largest of mlx-lm's (up to ties at the edge).
        let mut sorted = expected.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let twentieth = sorted[19];
        assert!(
            first
                .top
                .iter()
                .all(|&(_, lp)| lp as f64 >= twentieth - tolerance * (1.0 + twentieth.abs())),
            "{name}: a token outside mlx-lm's top 20"
        );
    }
}

#[test]
fn the_batch_reports_the_same_logprobs_and_tempered_ones_are_a_distribution() {
    let dir = mlx_harmony_testkit::parity_fixture("llama");
    let loaded = Rc::new(LoadedModel::load(&dir).unwrap());
    let prompt = loaded.encode("The weather today").unwrap();
    let options = GenerateOptions::new(12);
    let mut alone = sampler(0.0, 3);
    let single = generate(&loaded, &prompt, &mut alone, &options, |_, _| {}).unwrap();

    let mut batch = BatchGenerator::new(loaded.clone(), 4);
    let ids: Vec<_> = (0..3)
        .map(|i| {
            batch.add(SequenceRequest {
                prompt: prompt.clone(),
                sampler: if i == 1 {
                    sampler(0.7, 5)
                } else {
                    sampler(0.0, 3)
                },
                options: options.clone(),
                cancel: Cancel::new(),
            })
        })
        .collect();
    let mut streamed: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); 3];
    let mut finished = vec![None; 3];
    while !batch.is_idle() {
        for event in batch.step().unwrap() {
            match event {
                BatchEvent::Token { id, logprobs, .. } => {
                    let index = ids.iter().position(|&i| i == id).unwrap();
                    streamed[index].extend(logprobs);
                }
                BatchEvent::Finished { id, generation } => {
                    let index = ids.iter().position(|&i| i == id).unwrap();
                    finished[index] = Some(generation);
                }
                BatchEvent::Failed { message, .. } => panic!("{message}"),
            }
        }
    }
    for index in [0, 2] {
        let generation = finished[index].as_ref().unwrap();
        assert_eq!(generation.tokens, single.tokens);
        assert_eq!(
            streamed[index], generation.logprobs,
            "events and the generation differ"
        );
        for (a, b) in generation.logprobs.iter().zip(&single.logprobs) {
            assert_eq!(a.token, b.token);
            assert!(
                (a.logprob - b.logprob).abs() < 1e-4,
                "{} vs {}",
                a.logprob,
                b.logprob
            );
        }
    }
    // At temperature 0.7 each token's logprob is its share of the tempered
    // distribution: within its top 5 (or below them), all summing to at most 1.
    let tempered = finished[1].as_ref().unwrap();
    assert_eq!(tempered.logprobs.len(), tempered.tokens.len());
    for entry in &tempered.logprobs {
        let mass: f32 = entry.top.iter().map(|(_, lp)| lp.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
        assert!(entry.logprob <= entry.top[0].1 + 1e-6);
        if let Some(&(_, lp)) = entry.top.iter().find(|(t, _)| *t == entry.token) {
            assert!((lp - entry.logprob).abs() < 1e-5);
        }
    }
}
