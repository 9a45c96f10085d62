//! Decode speed with a JSON Schema held vs free, on the same model, prompt
//! and sampler settings (temperature 1, seeded), runs alternating. With
//! ROWS > 1 the rows decode together in one batch (all held or all free).
//! A third mode, "unapplied", runs the schema's constraint and computes
//! every mask but leaves the logits as they are: what the decode loop's
//! waiting for each token and the parser cost, apart from applying the mask.
//! Prints one JSON line per run: {"mode", "rows", "tokens", "decode_tps"}.
//! Usage: bench_structured MODEL_DIR GEN_TOKENS RUNS [ROWS]

use std::rc::Rc;
use std::time::Instant;

use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceRequest};
use mlx_harmony_core::generate::{Cancel, GenerateOptions, LoadedModel, generate};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings, TokenConstraint};
use mlx_harmony_grammar::{Grammars, OutputFormat, OutputRules};
use serde_json::json;

/// A schema that never lets the answer end early: a long array of records
/// with bounded numbers, enums and short strings, the usual mix.
fn schema() -> serde_json::Value {
    json!({"type": "array", "minItems": 10000, "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 100000},
        "label": {"type": "string", "maxLength": 12},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}},
        "required": ["id", "label", "score", "tags"], "additionalProperties": false}})
}

/// Computes its inner constraint's masks and allows everything.
struct Unapplied(Box<dyn TokenConstraint>);

impl TokenConstraint for Unapplied {
    fn consume(&mut self, token: u32) -> mlx_harmony_core::Result<()> {
        // Free sampling can leave the grammar: then only the cost is kept.
        let _ = self.0.consume(token);
        Ok(())
    }
    fn allowed(&mut self) -> mlx_harmony_core::Result<Option<Vec<u32>>> {
        let _ = self.0.allowed();
        Ok(None)
    }
    fn reset(&mut self) -> mlx_harmony_core::Result<()> {
        self.0.reset()
    }
    fn fresh(&self) -> Box<dyn TokenConstraint> {
        Box::new(Unapplied(self.0.fresh()))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, gen_tokens, runs, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: bench_structured MODEL_DIR GEN_TOKENS RUNS [ROWS]");
    };
    let (gen_tokens, runs): (usize, usize) = (gen_tokens.parse()?, runs.parse()?);
    let rows: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(1);
    let loaded = Rc::new(LoadedModel::load(std::path::Path::new(model))?);
    let grammars = Grammars::new(
        &loaded.tokenizer,
        loaded.model.vocab_size() as usize,
        &loaded.eos_token_ids,
        false,
    )?;
    let rules = OutputRules {
        answer: Some(OutputFormat::JsonSchema(schema())),
        strict_tools: Vec::new(),
    };
    let prompt = loaded.encode("Write the records as JSON.")?;
    let options = GenerateOptions::new(gen_tokens);
    let sampler = |seed: u64, mode: &str| -> anyhow::Result<Sampler> {
        let mut sampler = Sampler::new(SamplingSettings {
            temperature: 1.0,
            seed: Some(seed),
            ..Default::default()
        })?;
        let constraint = || grammars.constraint(&rules).map(|c| c.expect("a format"));
        match mode {
            "schema" => sampler.set_constraint(constraint()?),
            "unapplied" => sampler.set_constraint(Box::new(Unapplied(constraint()?))),
            _ => {}
        }
        Ok(sampler)
    };
    // One unmeasured run of each warms MLX's kernels and the parser.
    for run in 0..=runs {
        for mode in ["free", "schema", "unapplied"] {
            let (tokens, tps) = if rows == 1 {
                let mut s = sampler(run as u64, mode)?;
                let g = generate(&loaded, &prompt, &mut s, &options, |_, _| {})?;
                (g.tokens.len(), g.decode_tokens_per_second)
            } else {
                let mut batch = BatchGenerator::new(loaded.clone(), rows);
                for row in 0..rows {
                    batch.add(SequenceRequest {
                        prompt: prompt.clone(),
                        sampler: sampler((run * rows + row) as u64, mode)?,
                        options: options.clone(),
                        cancel: Cancel::new(),
                    });
                }
                // Decode is timed once every row has joined.
                while batch.active() < rows {
                    batch.step()?;
                }
                let start = Instant::now();
                let mut tokens = 0;
                while !batch.is_idle() {
                    for event in batch.step()? {
                        if let BatchEvent::Token { .. } = event {
                            tokens += 1;
                        }
                    }
                }
                (tokens, tokens as f64 / start.elapsed().as_secs_f64())
            };
            if run > 0 {
                println!(
                    "{}",
                    json!({"mode": mode, "rows": rows, "tokens": tokens, "decode_tps": tps})
                );
            }
        }
    }
    Ok(())
}
