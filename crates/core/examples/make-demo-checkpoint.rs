//! Writes the tiny random-weights Llama checkpoint used by the README demo and
//! the tests: `cargo run -p mlx-harmony-core --example make-demo-checkpoint -- DIR [SEED]`.

use std::path::PathBuf;
use std::process::ExitCode;

use mlx_harmony_core::demo;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: make-demo-checkpoint DIR [SEED]");
        return ExitCode::from(2);
    };
    let seed = match args.next().map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(seed)) => seed,
        Some(Err(err)) => {
            eprintln!("error: SEED must be a whole number: {err}");
            return ExitCode::from(2);
        }
    };
    match demo::write_random_llama(&dir, &demo::tiny_llama_config(), seed) {
        Ok(()) => {
            println!(
                "wrote a random-weights Llama checkpoint to {}",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
