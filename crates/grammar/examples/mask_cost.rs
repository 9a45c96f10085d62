//! The host's share of a held step, apart from the model: the grammar
//! engine's mask (`TokenConstraint::allowed`) and turning it into the
//! logits' mask (`sampling::apply_allowed`, graph building only), timed over
//! the tokens of a valid answer to bench_structured's schema.
//! Usage: mask_cost MODEL_DIR (its tokenizer) [VOCAB (the model's rows)]

use std::time::Instant;

use mlx_harmony_core::generate::LoadedModel;
use mlx_harmony_core::mlx_rs::Array;
use mlx_harmony_core::sampling::apply_allowed;
use mlx_harmony_grammar::{Grammars, OutputFormat, OutputRules};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(model) = args.get(1) else {
        anyhow::bail!("usage: mask_cost MODEL_DIR [VOCAB]");
    };
    let loaded = LoadedModel::load(std::path::Path::new(model))?;
    let vocab: usize = match args.get(2) {
        Some(v) => v.parse()?,
        None => loaded.model.vocab_size() as usize,
    };
    let grammars = Grammars::new(&loaded.tokenizer, vocab, &loaded.eos_token_ids, false)?;
    let schema = json!({"type": "array", "minItems": 10000, "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 100000},
        "label": {"type": "string", "maxLength": 12},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}},
        "required": ["id", "label", "score", "tags"], "additionalProperties": false}});
    let rules = OutputRules {
        answer: Some(OutputFormat::JsonSchema(schema)),
        strict_tools: Vec::new(),
    };
    let mut constraint = grammars.constraint(&rules)?.expect("a format");
    let answer = "[{\"id\": 12, \"label\": \"abc\", \"score\": 0.5, \"tags\": [\"red\"]}, \
                  {\"id\": 7, \"label\": \"x y\", \"score\": 0.25, \"tags\": []}, ";
    let tokens = loaded
        .tokenizer
        .encode(answer, false)
        .map_err(anyhow::Error::msg)?;
    let logits = Array::zeros::<f32>(&[1, vocab as i32])?;
    let (mut mask_s, mut apply_s) = (0.0, 0.0);
    for &token in tokens.get_ids() {
        let start = Instant::now();
        let bits = constraint.allowed()?.expect("a held answer");
        mask_s += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _masked = apply_allowed(&logits, &bits)?;
        apply_s += start.elapsed().as_secs_f64();
        constraint.consume(token)?;
    }
    let steps = tokens.get_ids().len() as f64;
    println!(
        "{steps} steps, vocabulary {vocab}: mask {:.3} ms a step, its logits mask (host) {:.3} ms a step",
        mask_s * 1e3 / steps,
        apply_s * 1e3 / steps
    );
    Ok(())
}
