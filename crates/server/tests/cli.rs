//! mlx-harmony-server's command line: its flags are documented, and without
//! a model or with a port it cannot have it says what is wrong.

use std::process::Command;

#[test]
fn help_lists_the_flags_and_a_missing_model_is_a_clear_error() {
    let bin = env!("CARGO_BIN_EXE_mlx-harmony-server");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--model",
        "--profile",
        "--prompt-config",
        "--host",
        "--port",
        "--api-key",
        "--queue-size",
        "--max-body-mb",
        "--device",
        "--temperature",
        "--python",
        "--browser",
        "--apply-patch",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
    // Every endpoint the router serves is named.
    for endpoint in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/health",
        "/metrics",
    ] {
        assert!(text.contains(endpoint), "{endpoint} missing from --help");
    }
    assert!(text.contains("[default: 8000]"), "{text}");
    assert!(text.contains("[default: 127.0.0.1]"), "{text}");
    assert!(
        !text.contains("scripted"),
        "the testing flag stays out of --help"
    );
    let run = Command::new(bin).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no model: give --model"));
}

#[test]
fn a_port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = Command::new(env!("CARGO_BIN_EXE_mlx-harmony-server"))
        .args(["--model", "/nonexistent", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}
