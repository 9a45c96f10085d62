//! What the programs' tests share: where the fixtures are, running a
//! program with standard input, and failing with its standard error when it
//! did not succeed. A dev-dependency of the program crates only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The offline default model (scripts/test points `MLX_HARMONY_SMOLLM2` at
/// it; otherwise where scripts/fetch-default-model puts it).
pub fn smollm2() -> PathBuf {
    let default = std::env::var_os("HOME")
        .map(|home| {
            PathBuf::from(home).join(".cache/mlx-harmony/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .unwrap_or_default();
    let model = std::env::var_os("MLX_HARMONY_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or(default);
    assert!(
        model.is_file(),
        "{} is missing: run scripts/fetch-default-model",
        model.display()
    );
    model
}

/// A parity checkpoint written by scripts/make-parity-models (`llama`,
/// `gpt-oss`, ...).
pub fn parity_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

/// Runs `command` with `input` on its standard input, capturing its output.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .expect("the program reads its input");
    child.wait_with_output().expect("the program ends")
}

/// Fails the test, showing how the program ended (its exit code, or the
/// signal that killed it), the end of what it wrote to standard output (a
/// crash after the answer was written is not one before) and its standard
/// error, unless it exited 0.
pub fn assert_success(out: &Output) {
    if out.status.success() {
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The last 400 characters.
    let start = stdout.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
    let tail = &stdout[start..];
    panic!(
        "the program ended with {} after writing {} bytes to stdout, ending:\n{tail}\n\
         its stderr:\n{}",
        out.status,
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that two independent counts of the same event over `runs` runs
/// each (`plain` and `other` hits) estimate the same probability: their
/// difference is within 4 standard deviations of the largest a binomial's
/// can be (`sqrt(2 * 0.25 / runs)`, 0.041 at 300 runs).
pub fn assert_same_rate(plain: usize, other: usize, runs: usize, what: &str) {
    let (p, q) = (plain as f64 / runs as f64, other as f64 / runs as f64);
    assert!(
        (p - q).abs() < 4.0 * (0.5f64 / runs as f64).sqrt(),
        "{what}: {p:.3} plain, {q:.3} the other way"
    );
}

/// `program` started as `ranks` ranks of a tensor-parallel group by MLX's
/// own launcher (ring back end, on this machine), from the reference
/// environment that scripts/test makes (or `MLX_HARMONY_MLX_LAUNCH`). Each
/// call gets ring ports of its own, so tests can run side by side.
pub fn mlx_launch(ranks: usize, program: &Path) -> Command {
    let launcher = std::env::var_os("MLX_HARMONY_MLX_LAUNCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-reference/bin/mlx.launch")
        });
    assert!(
        launcher.is_file(),
        "{} is missing: run scripts/reference-env (MLX's launcher comes with it)",
        launcher.display()
    );
    let mut command = Command::new(launcher);
    command
        .args(["-n", &ranks.to_string(), "--backend", "ring"])
        .args(["--starting-port", &free_ports(ranks).to_string(), "--"])
        .arg(program);
    command
}

/// The first of `count` consecutive TCP ports free on 127.0.0.1 now (a
/// server's port: `free_ports(1)`; MLX's ring ranks take consecutive ones).
pub fn free_ports(count: usize) -> u16 {
    use std::net::TcpListener;
    for _ in 0..200 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(address) = first.local_addr() else {
            continue;
        };
        let start = address.port();
        if start as usize + count > u16::MAX as usize {
            continue;
        }
        let rest: Vec<_> = (1..count)
            .map_while(|i| TcpListener::bind(("127.0.0.1", start + i as u16)).ok())
            .collect();
        if rest.len() + 1 == count {
            return start;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}
