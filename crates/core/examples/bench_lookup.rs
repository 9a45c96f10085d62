//! Speculative decoding against plain decoding on a copy-heavy prompt (the
//! model asked to repeat a passage), greedy, same model, runs alternating:
//! prompt lookup, and with `self` as DRAFT_MODEL the model drafting for
//! itself (every draft kept: the upper bound of a draft model's speed-up;
//! the two share one copy of the weights), or another model as the draft;
//! and `batch`: prompt lookup in the continuous batch (the server's path),
//! the request decoding alone.
//! Prints one JSON line per run: {"mode", "tokens", "decode_tps",
//! "drafted", "accepted", "steps", "same"} ("same": the output equals the
//! plain run's).
//! Usage: bench_lookup MODEL GEN_TOKENS RUNS DRAFT_TOKENS [PASSAGE_REPEATS] [DRAFT_MODEL|self]

use std::rc::Rc;

use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceRequest};
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::draft::DraftModel;
use mlx_harmony_core::generate::{
    Cancel, GenerateOptions, Generation, LoadedModel, TokenGenerator,
};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

const PASSAGE: &str = "The river town of Alder Ford grew up around a wooden bridge that \
    the first settlers built in 1843. Every spring the water rose over the lower fields, and \
    every summer the farmers rebuilt their fences a little further from the bank. The bridge \
    was replaced by a stone one in 1901, paid for by a tax on the grain that crossed it, and \
    the old timbers were used to build the school, which still stands on Mill Street. ";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, gen_tokens, runs, draft, rest @ ..] = &args[..] else {
        return Err("usage: bench_lookup MODEL GEN_TOKENS RUNS DRAFT_TOKENS \
                    [PASSAGE_REPEATS] [DRAFT_MODEL|self]"
            .into());
    };
    let (gen_tokens, runs, draft): (usize, usize, usize) =
        (gen_tokens.parse()?, runs.parse()?, draft.parse()?);
    let repeats: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(1);
    let mut generator = TokenGenerator::load(std::path::Path::new(model))?;
    let draft_model = match rest.get(1).map(String::as_str) {
        None => None,
        Some("self") => Some(generator.loaded.clone()),
        Some(path) => Some(Rc::new(LoadedModel::load(std::path::Path::new(path))?)),
    };
    let text = PASSAGE.repeat(repeats);
    let messages = [ChatMessage::new(
        "user",
        format!("Repeat the following text exactly, word for word:\n\n{text}"),
    )];
    let prompt = generator
        .loaded
        .conversation_tokens(&Default::default(), &messages)?;
    let mut modes = vec!["plain", "lookup", "batch"];
    if draft_model.is_some() {
        modes.push("draft");
    }
    let mut reference = None;
    // One unmeasured run of each warms up MLX.
    for run in 0..=runs {
        for &mode in &modes {
            let drafter = match mode {
                "draft" => Some(DraftModel::new(
                    draft_model.clone().expect("a draft model"),
                    &generator.loaded,
                    draft,
                )?),
                _ => None,
            };
            generator.set_draft_model(drafter);
            generator.clear_cache();
            let mut sampler = Sampler::new(SamplingSettings::default())?;
            let options = GenerateOptions {
                prompt_lookup: if mode == "lookup" { draft } else { 0 },
                ..GenerateOptions::new(gen_tokens)
            };
            let g = if mode == "batch" {
                let options = GenerateOptions {
                    prompt_lookup: draft,
                    ..GenerateOptions::new(gen_tokens)
                };
                in_batch(&generator.loaded, &prompt, sampler, options)?
            } else {
                generator.generate(&prompt, &mut sampler, &options, |_, _| {})?
            };
            let reference = reference.get_or_insert_with(|| g.tokens.clone());
            if run > 0 {
                println!(
                    "{}",
                    serde_json::json!({"mode": mode, "tokens": g.tokens.len(),
                        "decode_tps": g.decode_tokens_per_second, "drafted": g.drafted_tokens,
                        "accepted": g.accepted_draft_tokens, "steps": g.speculative_steps,
                        "same": &g.tokens == reference, "prompt_tokens": prompt.len()})
                );
            }
        }
    }
    Ok(())
}

/// One request through the continuous batch, alone.
fn in_batch(
    loaded: &Rc<LoadedModel>,
    prompt: &[u32],
    sampler: Sampler,
    options: GenerateOptions,
) -> Result<Generation, Box<dyn std::error::Error>> {
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    batch.add(SequenceRequest {
        prompt: prompt.to_vec(),
        sampler,
        options,
        cancel: Cancel::new(),
    });
    while !batch.is_idle() {
        for event in batch.step()? {
            match event {
                BatchEvent::Finished { generation, .. } => return Ok(generation),
                BatchEvent::Failed { message, .. } => return Err(message.into()),
                BatchEvent::Token { .. } => {}
            }
        }
    }
    Err("the batch ended without finishing the request".into())
}
