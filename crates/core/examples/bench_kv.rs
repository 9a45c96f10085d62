//! The KV cache at 16 bits against `--kv-bits 8` and `4` (runs alternating,
//! greedy): with CONTEXT_TOKENS > 0, one prompt of that many tokens (a text
//! repeated) and the peak memory of its prompt pass and GEN_TOKENS decoded;
//! with 0, a few short chat prompts and how many of the first GEN_TOKENS
//! greedy tokens each quantized cache shares with the 16-bit one.
//! With a long prompt, a second call then continues it (the next turn of a
//! chat: the cache reused, GEN_TOKENS more): its peak is what holding the
//! context costs, without the prompt pass's temporaries.
//! Prints one JSON line per run: {"mode", "context", "peak_bytes", "held_peak_bytes", "cache_bytes",
//! "weights_bytes", "agree", "tokens", "decode_tps", "prefill_tps"}
//! ("weights_bytes": MLX's active memory once the caches are dropped;
//! "cache_bytes": the KV cache's own arrays after the prompt; "agree": the
//! leading tokens equal to the 16-bit run's, summed over the prompts).
//! Usage: bench_kv MODEL CONTEXT_TOKENS GEN_TOKENS RUNS [GROUP_SIZE]

use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{GenerateOptions, TokenGenerator};
use mlx_harmony_core::models::cache::KvQuantization;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

const TEXT: &str = "The river town of Alder Ford grew up around a wooden bridge that the \
    first settlers built in 1843. Every spring the water rose over the lower fields, and every \
    summer the farmers rebuilt their fences a little further from the bank. ";

const QUESTIONS: [&str; 4] = [
    "Write a short poem about the sea.",
    "Explain in three sentences how a bicycle works.",
    "List five fruits and one fact about each.",
    "What should I pack for a weekend of hiking?",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, context, gen_tokens, runs, rest @ ..] = &args[..] else {
        return Err("usage: bench_kv MODEL CONTEXT_TOKENS GEN_TOKENS RUNS [GROUP_SIZE]".into());
    };
    let (context, gen_tokens, runs): (usize, usize, usize) =
        (context.parse()?, gen_tokens.parse()?, runs.parse()?);
    let group: i32 = rest.first().map(|g| g.parse()).transpose()?.unwrap_or(64);
    let mut generator = TokenGenerator::load(std::path::Path::new(model))?;
    let prompts: Vec<Vec<u32>> = if context > 0 {
        let piece = generator.loaded.encode(TEXT)?;
        vec![piece.iter().copied().cycle().take(context).collect()]
    } else {
        QUESTIONS
            .iter()
            .map(|q| {
                generator
                    .loaded
                    .conversation_tokens(&Default::default(), &[ChatMessage::new("user", *q)])
            })
            .collect::<Result<_, _>>()?
    };
    let mut reference: Option<Vec<Vec<u32>>> = None;
    for run in 0..runs {
        for bits in [None, Some(8), Some(4)] {
            generator
                .set_kv_quantization(bits.map(|b| KvQuantization::new(b, group)).transpose()?)?;
            let (mut peak, mut held_peak, mut agree, mut tokens) = (0, 0, 0, 0);
            let mut cache_bytes = 0;
            let (mut decode, mut prefill) = (0.0, 0.0);
            let mut outputs = Vec::new();
            for (i, prompt) in prompts.iter().enumerate() {
                generator.clear_cache();
                let mut sampler = Sampler::new(SamplingSettings::default())?;
                let options = GenerateOptions::new(gen_tokens);
                let g = generator.generate(prompt, &mut sampler, &options, |_, _| {})?;
                peak = peak.max(g.peak_memory_bytes);
                cache_bytes = cache_bytes.max(generator.cache_bytes());
                if context > 0 {
                    // Holding the context: its next turn reuses the cache,
                    // so its peak is the cache and the decode steps'.
                    let mut next = prompt.clone();
                    next.extend(&g.tokens);
                    let held = generator.generate(&next, &mut sampler, &options, |_, _| {})?;
                    held_peak = held_peak.max(held.peak_memory_bytes);
                }
                tokens += g.tokens.len();
                decode += g.decode_tokens_per_second / prompts.len() as f64;
                prefill += g.prefill_tokens_per_second / prompts.len() as f64;
                if let Some(reference) = &reference {
                    agree += reference[i]
                        .iter()
                        .zip(&g.tokens)
                        .take_while(|(a, b)| a == b)
                        .count();
                }
                outputs.push(g.tokens);
            }
            // What stays once the caches are gone: the weights.
            generator.clear_cache();
            mlx_rs::memory::clear_cache()?;
            let weights = mlx_rs::memory::active_memory()?;
            if bits.is_none() {
                agree = tokens;
                reference.get_or_insert(outputs);
            }
            let mode = bits.map_or("16-bit".to_string(), |b| format!("{b}-bit"));
            println!(
                "{}",
                serde_json::json!({"mode": mode, "run": run, "context": prompts[0].len(),
                    "peak_bytes": peak, "held_peak_bytes": held_peak, "weights_bytes": weights,
                    "cache_bytes": cache_bytes, "agree": agree,
                    "tokens": tokens, "decode_tps": decode, "prefill_tps": prefill})
            );
        }
    }
    Ok(())
}
