//! `mlx-harmony-convert-dialogue`: dialogue text (`role: text` lines) to JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Convert `role: text` dialogue files to JSON messages or example_dialogues.
///
/// Not available yet in this build: it arrives with the config crate.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-convert-dialogue", version)]
struct Args {
    /// Dialogue text file, or - for standard input.
    input: PathBuf,
    /// JSON file to write, or - for standard output.
    output: PathBuf,
    /// Wrap the messages as a prompt config's `example_dialogues`.
    #[arg(long)]
    as_example_dialogues: bool,
}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("error: mlx-harmony-convert-dialogue is not implemented yet in this build");
    ExitCode::FAILURE
}
