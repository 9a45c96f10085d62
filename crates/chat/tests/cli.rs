//! mlx-harmony-chat end to end, driven through a pseudo-terminal as a user
//! would: several turns with \set and \save, Ctrl-C while an answer is being
//! generated, then --load-conversation continuing the saved conversation.
//! The model is the tiny random-weights Llama checkpoint with the real
//! SmolLM2 tokenizer (fixtures/parity/llama, from scripts/make-parity-models).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use expectrl::{ControlCode, Expect, Session};
use mlx_harmony_testkit::{assert_success, parity_fixture, run_with_input};

fn fixture(name: &str) -> PathBuf {
    parity_fixture(name)
}

fn chat(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mlx-harmony-chat"));
    command
        .env("MLX_HARMONY_CHAT_HISTORY", dir.join("history"))
        .env("TERM", "dumb")
        .current_dir(dir);
    command
}

fn read_conversation(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn roles(conversation: &serde_json::Value) -> Vec<String> {
    conversation["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlx-harmony-chat"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model",
        "--profile",
        "--prompt-config",
        "--save-conversation",
        "--load-conversation",
        "--debug",
        "--temperature",
        "--max-tokens",
        "--no-prewarm-cache",
        "--mlock",
        "--device",
        "--system",
        "[default: auto]",
        "[default: 0.8]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn without_a_model_it_says_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = chat(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model: give --model"));
}

#[test]
fn a_session_with_set_save_and_ctrl_c_then_resumed_from_the_saved_file() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("chat.json");
    let snapshot = dir.path().join("snapshot.json");
    let mut command = chat(dir.path());
    command
        .arg("--model")
        .arg(fixture("llama"))
        .args(["--max-tokens", "6", "--verbose", "--save-conversation"])
        .arg(&saved);
    let mut session = Session::spawn(command).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(120)));
    session.expect(">>> ").unwrap();

    // First turn: a cold prompt.
    session.send_line("Hello there").unwrap();
    session.expect("0 cached").unwrap();
    session.expect(">>> ").unwrap();
    assert_eq!(roles(&read_conversation(&saved)), ["user", "assistant"]);

    // \set changes the following turns, and is recorded with them.
    session.send_line("\\set temperature=0").unwrap();
    session.expect("temperature = 0").unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("Second question").unwrap();
    // The second turn reuses the first turn's KV cache.
    let stats = session.expect(" cached;").unwrap();
    let before = String::from_utf8_lossy(stats.before()).to_string();
    let cached: usize = before
        .rsplit(", ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cached count in {before:?}"));
    assert!(cached > 10, "{before}");
    session.expect(">>> ").unwrap();
    let conversation = read_conversation(&saved);
    assert_eq!(
        conversation["messages"][3]["hyperparameters"]["temperature"],
        0.0
    );
    assert_eq!(
        conversation["messages"][1]["hyperparameters"]["temperature"],
        0.8
    );

    // Ctrl-C during a long answer stops it and returns to the prompt.
    session.send_line("\\set max_tokens 100000").unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("Tell me everything").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    session.send(ControlCode::EndOfText).unwrap();
    session.expect("[stopped]").unwrap();
    session.expect(">>> ").unwrap();
    let conversation = read_conversation(&saved);
    assert_eq!(roles(&conversation).len(), 6);

    // A bad command does not end the chat.
    session.send_line("\\set temperature 9").unwrap();
    session.expect("error: temperature").unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("\\set max_tokens 4").unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("\\save snapshot.json").unwrap();
    session.expect("saved to snapshot.json").unwrap();
    session.expect(">>> ").unwrap();
    session.send(ControlCode::EndOfTransmission).unwrap();
    session.expect(expectrl::Eof).unwrap();

    // Resume: the model, the settings and the messages come from the file.
    let mut command = chat(dir.path());
    command
        .arg("--load-conversation")
        .arg(&snapshot)
        .arg("--verbose");
    let mut session = Session::spawn(command).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(120)));
    session.expect("resumed 6 messages").unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("\\show").unwrap();
    session
        .expect("temperature = 0.0  (saved conversation)")
        .unwrap();
    session
        .expect("max_tokens = 4  (saved conversation)")
        .unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("And now?").unwrap();
    session.expect(" cached;").unwrap();
    session.expect(">>> ").unwrap();
    session.send_line("\\quit").unwrap();
    session.expect(expectrl::Eof).unwrap();
    let resumed = read_conversation(&snapshot);
    assert_eq!(
        roles(&resumed),
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
    assert_eq!(resumed["messages"][6]["content"], "And now?");
    assert_eq!(resumed["messages"][7]["hyperparameters"]["max_tokens"], 4);
    // The line editor kept the history for the next session.
    let history = std::fs::read_to_string(dir.path().join("history")).unwrap();
    assert!(history.contains("And now?"), "{history}");
}

#[test]
fn gpt_oss_turns_are_saved_with_their_harmony_channels() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("harmony.json");
    let mut command = chat(dir.path());
    command
        .arg("--model")
        .arg(fixture("gpt-oss"))
        .args([
            "--max-tokens",
            "12",
            "--temperature",
            "1",
            "--seed",
            "3",
            "--save-conversation",
        ])
        .arg(&saved);
    let out = run_with_input(&mut command, b"Hi\n\\reasoning low\nAgain\n");
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("reasoning effort low"));
    let conversation = read_conversation(&saved);
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.iter().filter(|m| m["role"] == "user").count(), 2);
    for m in messages.iter().filter(|m| m["role"] == "assistant") {
        let channel = m["channel"].as_str().unwrap_or("");
        assert!(
            ["final", "analysis", "commentary"].contains(&channel) || m["recipient"].is_string(),
            "{m}"
        );
        assert!(m["hyperparameters"]["seed"] == 3, "{m}");
    }
}

#[test]
fn two_tensor_parallel_ranks_chat_as_one_process() {
    // MLX's launcher hands every rank the same standard input; rank 0
    // prints. Two turns: the second reuses the first's cache on each rank.
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt-oss");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--device",
        "cpu",
    ];
    let input = b"Name three colours.\nAnd three animals?\n\\quit\n";
    let mut alone = chat(dir.path());
    let one = run_with_input(alone.args(args), input);
    assert_success(&one);
    let mut launch =
        mlx_harmony_testkit::mlx_launch(2, Path::new(env!("CARGO_BIN_EXE_mlx-harmony-chat")));
    launch
        .env("MLX_HARMONY_CHAT_HISTORY", dir.path().join("history"))
        .env("TERM", "dumb")
        .current_dir(dir.path())
        .args(args)
        .arg("--tensor-parallel");
    let two = run_with_input(&mut launch, input);
    assert_success(&two);
    let (one, two) = (
        String::from_utf8_lossy(&one.stdout),
        String::from_utf8_lossy(&two.stdout),
    );
    assert!(one.lines().count() >= 2, "{one}");
    assert_eq!(two, one);
}
