//! `mlx-harmony-generate`: one prompt in, one completion out.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate_demo;

/// Generate text once from a prompt.
///
/// This build runs the random-weights demo checkpoint only (byte-level
/// vocabulary, greedy decoding); real models and tokenizers come with the
/// model engine.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-generate", version)]
struct Args {
    /// Model folder (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,

    /// The prompt text.
    #[arg(long)]
    prompt: String,

    /// Maximum number of tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,

    /// Where to run: gpu (Metal or CUDA), cpu, or auto (the GPU when MLX has one).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

fn run(args: Args) -> anyhow::Result<()> {
    let selected = device::select(args.device)?;
    eprintln!("device: {selected}");
    let mut stdout = std::io::stdout().lock();
    let result = generate_demo::run(&args.model, &args.prompt, args.max_tokens, |token| {
        // Each token is one byte of the demo vocabulary; show it as text where
        // it is printable ASCII and as its id otherwise, so nothing is hidden.
        match token {
            0x20..=0x7e => write!(stdout, "{}", token as u8 as char),
            _ => write!(stdout, "<{token}>"),
        }
        .and_then(|_| stdout.flush())
        .map_err(anyhow::Error::from)
    })?;
    writeln!(stdout)?;
    eprintln!(
        "{} prompt tokens, {} generated tokens, {:.1} tokens/s",
        result.prompt_tokens, result.generated_tokens, result.tokens_per_second
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
