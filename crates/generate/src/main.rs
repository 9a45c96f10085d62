//! `mlx-harmony-generate`: one prompt in, one completion out.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::{LoadedModel, generate_greedy};
use mlx_harmony_core::generate_demo;

/// Generate text once from a prompt.
///
/// This build runs GGUF models of the Llama family (e.g. SmolLM2-135M-Instruct)
/// with their own tokenizer and chat template, decoding greedily, and the
/// random-weights demo checkpoint. Sampling options, Harmony models and
/// safetensors folders with tokenizer.json arrive with the TokenGenerator.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-generate", version)]
struct Args {
    /// Model: a .gguf file (or a folder holding one), or the demo checkpoint folder.
    #[arg(long)]
    model: PathBuf,

    /// The prompt text (sent as the user's message through the chat template).
    #[arg(long)]
    prompt: String,

    /// Maximum number of tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,

    /// Where to run: gpu (Metal or CUDA), cpu, or auto (the GPU when MLX has one).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,

    /// Print prompt/generation statistics to stderr.
    #[arg(long)]
    verbose: bool,
}

fn run_demo(args: &Args) -> anyhow::Result<()> {
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

fn run(args: Args) -> anyhow::Result<()> {
    let selected = device::select(args.device)?;
    eprintln!("device: {selected}");
    if args.model.join("config.json").is_file() {
        return run_demo(&args);
    }
    let loaded = LoadedModel::load(&args.model)?;
    let prompt_text = loaded.render(&[ChatMessage::new("user", &args.prompt)])?;
    let prompt = loaded.encode(&prompt_text)?;
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let result = generate_greedy(&loaded, &prompt, args.max_tokens, |piece| {
        if write_error.is_none() {
            if let Err(e) = stdout
                .write_all(piece.as_bytes())
                .and_then(|_| stdout.flush())
            {
                write_error = Some(e);
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(anyhow::anyhow!("cannot write the output: {e}"));
    }
    writeln!(stdout)?;
    if args.verbose {
        eprintln!(
            "{} prompt tokens ({:.1} tokens/s), {} generated tokens ({:.1} tokens/s){}",
            result.prompt_tokens,
            result.prefill_tokens_per_second,
            result.tokens.len(),
            result.decode_tokens_per_second,
            if result.finished_by_eos {
                ""
            } else {
                ", stopped at --max-tokens"
            }
        );
    }
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
