//! `mlx-harmony-generate`: one prompt in, one completion out.

use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_frontend::oneshot::{self, GenerateArgs};
use mlx_harmony_frontend::report;

/// Generate text once from a prompt.
///
/// Runs GGUF models of the Llama family (e.g. SmolLM2-135M-Instruct) and
/// Hugging Face / mlx-community models (Llama, Mistral, Qwen2, Qwen3, GPT-OSS;
/// local folders or hub ids) with their own tokenizer and chat template, and
/// the random-weights demo checkpoint. GPT-OSS models get their prompt in the Harmony format; their
/// answer (the final channel) goes to stdout and their reasoning to stderr.
///
/// Sampling settings come from, in order: these flags, the prompt config,
/// then the built-in defaults (temperature 0.8, top_p 0.9, max_tokens 512).
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-generate", version)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "profile"])))]
struct Args {
    #[command(flatten)]
    generate: GenerateArgs,
}

fn main() -> ExitCode {
    report::exit_code(oneshot::run(
        &mlx_harmony_frontend::args::parse::<Args>().generate,
    ))
}
