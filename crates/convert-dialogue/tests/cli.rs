//! mlx-harmony-convert-dialogue as a user runs it.

use std::process::Command;

use mlx_harmony_testkit::{assert_success, run_with_input};

fn convert() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlx-harmony-convert-dialogue"))
}

const SEED_EXAMPLE: &str = "assistant: Hello, how may I help you today?\n\
user: I'd like to know something about fruit.\n\
assistant: What would you like to know about fruit?\n\
user: What is the difference between a fruit and a vegetable?\n";

#[test]
fn converts_the_seed_example_to_example_dialogues() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dialogue.txt");
    let output = dir.path().join("out/examples.json");
    std::fs::write(&input, SEED_EXAMPLE).unwrap();
    let out = convert()
        .arg(&input)
        .arg(&output)
        .arg("--as-example-dialogues")
        .output()
        .unwrap();
    assert_success(&out);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let turns = json["example_dialogues"][0].as_array().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0]["role"], "assistant");
    assert_eq!(
        turns[3]["content"],
        "What is the difference between a fruit and a vegetable?"
    );

    // The output loads as a prompt config.
    let config = mlx_harmony_config::prompt_config::PromptConfig::load(&output).unwrap();
    assert_eq!(config.example_dialogues[0].len(), 4);
}

#[test]
fn stdin_to_stdout_gives_plain_messages() {
    let out = run_with_input(
        convert().args(["-", "-"]),
        b"user: Hi\n\n  there\nassistant: Hello\n",
    );
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"role": "user", "content": "Hi\n\n  there"},
            {"role": "assistant", "content": "Hello"}
        ])
    );
}

#[test]
fn an_unknown_role_is_an_error_with_its_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.txt");
    let output = dir.path().join("out.json");
    std::fs::write(&input, "user: Hi\nnarrator: It was a dark night.\n").unwrap();
    let out = convert().arg(&input).arg(&output).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.txt:2") && err.contains("unknown role \"narrator\""),
        "{err}"
    );
    assert!(!output.exists());
}

#[test]
fn missing_arguments_exit_2() {
    let out = convert().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = convert().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--as-example-dialogues"));
}
