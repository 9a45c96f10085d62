//! `mlx-harmony-chat`: Chat with a model in the terminal.

use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_core::device::DeviceChoice;

/// Chat with a model in the terminal.
///
/// Not available yet in this build: it arrives with the TokenGenerator.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-chat", version)]
struct Args {
    /// Model folder or Hugging Face id.
    #[arg(long)]
    model: Option<String>,

    /// Where to run: gpu (Metal or CUDA), cpu, or auto (the GPU when MLX has one).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!(
        "error: mlx-harmony-chat is not implemented yet in this build; use mlx-harmony-generate"
    );
    ExitCode::FAILURE
}
