//! `mlx-harmony-convert-dialogue`: dialogue text (`role: text` lines) to JSON.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mlx_harmony_config::{conversation, dialogue};

/// Convert a `role: text` dialogue file to JSON messages, or to a prompt
/// config's `example_dialogues`.
///
/// A line `role: text` starts a turn (roles: user, assistant, system,
/// developer); following lines continue it until the next role line, blank
/// lines included. A line `---` separates example dialogues.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-convert-dialogue", version)]
struct Args {
    /// Dialogue text file, or - for standard input.
    input: PathBuf,
    /// JSON file to write, or - for standard output.
    output: PathBuf,
    /// Write `{"example_dialogues": [[...]]}`, ready to paste into a prompt config.
    #[arg(long)]
    as_example_dialogues: bool,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let (text, name) = if args.input == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        (text, PathBuf::from("<stdin>"))
    } else {
        let text = std::fs::read_to_string(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?;
        (text, args.input.clone())
    };
    let dialogues = dialogue::parse(&text, &name)?;
    let json =
        serde_json::to_string_pretty(&dialogue::to_json(&dialogues, args.as_example_dialogues))?
            + "\n";
    if args.output == Path::new("-") {
        std::io::stdout().write_all(json.as_bytes())?;
    } else {
        conversation::write_atomically(&args.output, json.as_bytes())?;
        let turns: usize = dialogues.iter().map(Vec::len).sum();
        eprintln!(
            "wrote {turns} turns in {} dialogue(s) to {}",
            dialogues.len(),
            args.output.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
