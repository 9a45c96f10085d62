//! Our side of scripts/bench: prefill and decode speed on a model folder, for
//! a given prompt of token ids. Prints one JSON line per run.
//!
//! `cargo run --release -p mlx-harmony-core --example bench -- MODEL PROMPT_IDS_FILE GEN_TOKENS RUNS`

use std::path::PathBuf;
use std::time::Instant;

use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::prefill;
use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::blocks::last_position;
use mlx_rs::ops::indexing::argmax_axis;
use mlx_rs::transforms::{async_eval, eval};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, prompt_file, generate_count, runs] = args.as_slice() else {
        return Err("usage: bench MODEL PROMPT_IDS_FILE GEN_TOKENS RUNS".into());
    };
    let selected = device::select(DeviceChoice::Auto)?;
    eprintln!("device: {selected}");
    let prompt: Vec<u32> = std::fs::read_to_string(prompt_file)?
        .split_whitespace()
        .map(|t| t.parse())
        .collect::<Result<_, _>>()?;
    let generate_count: usize = generate_count.parse()?;
    let runs: usize = runs.parse()?;
    let model = Model::load(PathBuf::from(model_dir))?;
    for run in 0..runs + 1 {
        let mut caches = model.new_caches();
        let start = Instant::now();
        // The engine's own prompt pass (what TokenGenerator runs).
        let logits = prefill(&model, &mut caches, &prompt)?;
        let mut next = argmax_axis(last_position(&logits)?, -1, None)?;
        eval([&next])?;
        let first = Instant::now();
        // The decode loop, pipelined: the next step is queued before this one is read.
        for _ in 1..generate_count {
            let logits = model.forward(&next.reshape(&[1, 1])?, &mut caches)?;
            let following = argmax_axis(last_position(&logits)?, -1, None)?;
            async_eval([&following])?;
            let _ = next.item_exact::<u32>();
            next = following;
        }
        let _ = next.item_exact::<u32>();
        let end = Instant::now();
        if run == 0 {
            continue; // warm-up: kernel compilation, allocator
        }
        println!(
            "{{\"impl\": \"mlx-harmony\", \"prefill_tps\": {:.2}, \"decode_tps\": {:.2}, \"ttft_s\": {:.4}, \"peak_bytes\": {}}}",
            prompt.len() as f64 / (first - start).as_secs_f64(),
            (generate_count - 1) as f64 / (end - first).as_secs_f64(),
            (first - start).as_secs_f64(),
            mlx_rs::memory::peak_memory().unwrap_or(0),
        );
    }
    Ok(())
}
