//! The real server on loopback with tiny checkpoints: the official openai SDK
//! (chat, streaming, a tool-call round trip, models), raw HTTP for every
//! error path, the API key, 32 concurrent streaming clients against a small
//! queue, a client that disconnects mid-stream, and a graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::NamedTempFile;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures/parity").join(name)
}

struct Server {
    child: Child,
    port: u16,
    model: String,
    /// Started by MLX's launcher as tensor-parallel ranks.
    ranks: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.ranks {
            // Killing the launcher would leave its ranks running: the ranks
            // are asked to stop (rank 0 as on Ctrl-C; it then releases the
            // others), and the launcher ends with them.
            for pid in server_processes(self.port) {
                // SAFETY: a plain signal to a process of this test.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            for pid in server_processes(self.port) {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server processes listening (or about to) on `port`, by their
/// command lines.
fn server_processes(port: u16) -> Vec<i32> {
    let binary = env!("CARGO_BIN_EXE_mlx-harmony-server");
    let port_arg = format!("\0--port\0{port}\0");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with(binary) && cmdline.contains(&port_arg) {
            pids.push(pid);
        }
    }
    pids
}

fn start(model: &Path, extra: &[&str]) -> Server {
    start_with(
        Command::new(env!("CARGO_BIN_EXE_mlx-harmony-server")),
        model,
        extra,
        false,
    )
}

/// The server as two tensor-parallel ranks (ring back end, this machine).
fn start_tensor_parallel(model: &Path, extra: &[&str]) -> Server {
    let launch =
        mlx_harmony_testkit::mlx_launch(2, Path::new(env!("CARGO_BIN_EXE_mlx-harmony-server")));
    let mut args = vec!["--tensor-parallel"];
    args.extend(extra);
    start_with(launch, model, &args, true)
}

fn start_with(mut command: Command, model: &Path, extra: &[&str], ranks: bool) -> Server {
    let port = mlx_harmony_testkit::free_ports(1);
    let child = command
        .arg("--model")
        .arg(model)
        .args(["--port", &port.to_string(), "--served-model-name", "tiny"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        model: "tiny".into(),
        ranks,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok((200, _, _)) = try_request(port, "GET", "/health", &[], b"") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the server did not come up on port {port}");
}

/// A server that plays `replies` (Harmony or template text, special tokens
/// written out) instead of sampling, with `--scripted-replies`; the script
/// file lives as long as the server.
fn start_scripted(model: &Path, replies: Value, extra: &[&str]) -> (Server, NamedTempFile) {
    let script = NamedTempFile::new().unwrap();
    std::fs::write(script.path(), replies.to_string()).unwrap();
    let mut args = vec!["--scripted-replies", script.path().to_str().unwrap()];
    args.extend(extra);
    (start(model, &args), script)
}

/// One HTTP/1.1 request (Connection: close): status, headers, body.
fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

fn request(port: u16, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, text) =
        try_request(port, method, path, &[], body.to_string().as_bytes()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn chat(server: &Server, extra: Value) -> Value {
    let mut body = json!({"model": server.model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The error body's shape, and its `param`/`code`.
fn assert_error(
    status: u16,
    body: &Value,
    want_status: u16,
    param: Option<&str>,
    code: Option<&str>,
) {
    assert_eq!(status, want_status, "{body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert_eq!(error["param"].as_str(), param, "{body}");
    assert_eq!(error["code"].as_str(), code, "{body}");
}

/// The SDK scripts' scripted model: a get_weather call for Oslo (with
/// reasoning), then the answer, as GPT-OSS writes them.
fn weather_replies_gpt_oss() -> Value {
    json!([
        "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Oslo\"}<|call|>",
        "<|channel|>final<|message|>Sunny, 21 °C in Oslo.<|return|>"
    ])
}

/// The same as a template model writes it (a Hermes-style call).
fn weather_replies_template() -> Value {
    json!([
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
        "Sunny, 21 °C in Oslo."
    ])
}

#[test]
fn the_openai_sdk_chats_streams_and_round_trips_a_tool_call() {
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        weather_replies_gpt_oss(),
        &["--api-key", "test-key"],
    );
    run_sdk_script(&server, "openai_sdk.py");
}

#[test]
fn the_openai_sdk_gets_n_choices_plain_and_streamed() {
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        json!([
            "<|channel|>final<|message|>Alpha.<|return|>",
            "<|channel|>final<|message|>Beta.<|return|>",
            "<|channel|>final<|message|>Gamma.<|return|>"
        ]),
        &[],
    );
    run_sdk_script(&server, "openai_choices.py");
}

#[test]
fn the_openai_sdk_completes_lists_of_prompts_and_token_ids() {
    let model = fixture("llama");
    let server = start(&model, &[]);
    let tokenizer = model.join("tokenizer.json");
    run_sdk_script_with(
        &server,
        "openai_completions.py",
        &[tokenizer.to_str().unwrap()],
    );
}

#[test]
fn the_openai_sdk_speaks_the_responses_api_to_gpt_oss() {
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        weather_replies_gpt_oss(),
        &["--api-key", "test-key"],
    );
    run_sdk_script_with(&server, "openai_responses.py", &["tools"]);
}

#[test]
fn the_servers_own_python_call_is_a_code_interpreter_item_in_the_responses_api() {
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        json!([
            "<|channel|>analysis<|message|>Compute it.<|end|><|start|>assistant<|channel|>analysis to=python code<|message|>print(6*7)<|call|>",
            "<|channel|>final<|message|>It is 42.<|return|>"
        ]),
        &["--python"],
    );
    run_sdk_script_with(&server, "openai_responses.py", &["python"]);
}

#[test]
fn the_openai_sdk_speaks_the_responses_api_to_a_template_model() {
    // SmolLM2 (the real checkpoint) with scripted replies: a Hermes-style
    // call as a template model writes it, then the answer.
    let (server, _script) = start_scripted(&smollm2(), weather_replies_template(), &[]);
    run_sdk_script_with(&server, "openai_responses.py", &["tools"]);
}

#[test]
fn the_openai_sdk_gets_free_answers_from_smollm2_through_the_responses_api() {
    let server = start(&smollm2(), &[]);
    run_sdk_script_with(&server, "openai_responses.py", &["plain"]);
}

#[test]
fn the_anthropic_sdk_speaks_the_messages_api_to_gpt_oss() {
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        weather_replies_gpt_oss(),
        &["--api-key", "test-key"],
    );
    run_sdk_script_with(&server, "anthropic_sdk.py", &["tools"]);
}

#[test]
fn the_anthropic_sdk_speaks_the_messages_api_to_a_template_model() {
    let (server, _script) = start_scripted(
        &smollm2(),
        weather_replies_template(),
        &["--api-key", "test-key"],
    );
    run_sdk_script_with(&server, "anthropic_sdk.py", &["tools"]);
}

#[test]
fn the_anthropic_sdk_gets_free_answers_from_smollm2() {
    let server = start(&smollm2(), &[]);
    run_sdk_script_with(&server, "anthropic_sdk.py", &["plain"]);
}

/// A coding agent's command (scripts/agent-clients installs them; scripts/test
/// runs it and sets MLX_HARMONY_AGENTS).
fn agent(name: &str) -> PathBuf {
    let dir = std::env::var_os("MLX_HARMONY_AGENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".agent-clients/bin"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/agent-clients (scripts/test does)",
        path.display()
    );
    path
}

/// Runs `command` to its end (at most `limit`): exit success, stdout, stderr.
fn run_with_limit(mut command: Command, limit: Duration) -> (bool, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.is_some(), "ran past {limit:?}\n{out}\n{err}");
    (status.unwrap().success(), out, err)
}

/// A GPT-OSS reply that calls `tool` with `arguments`, then the answer.
fn agent_script(tool: &str, arguments: Value, answer: &str) -> Value {
    json!([
        format!(
            "<|channel|>analysis<|message|>Run the command.<|end|><|start|>assistant<|channel|>commentary to=functions.{tool} <|constrain|>json<|message|>{arguments}<|call|>"
        ),
        format!("<|channel|>final<|message|>{answer}<|return|>")
    ])
}

#[test]
fn codex_runs_a_shell_command_and_answers_through_the_responses_api() {
    // Codex CLI in `codex exec` mode, configured through its documented
    // provider settings, against a GPT-OSS checkpoint whose scripted reply
    // calls Codex's shell tool (exec_command) and then answers.
    let answer = "The file proof.txt now says codex-ran-this.";
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        agent_script(
            "exec_command",
            json!({"cmd": "echo codex-ran-this > proof.txt"}),
            answer,
        ),
        &[],
    );
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let base_url = format!("http://127.0.0.1:{}/v1", server.port);
    let mut codex = Command::new(agent("codex"));
    codex
        .current_dir(work.path())
        .env("CODEX_HOME", home.path())
        .args(["exec", "--skip-git-repo-check"])
        // The container runs as root without the namespaces Codex's sandbox needs.
        .arg("--dangerously-bypass-approvals-and-sandbox")
        .args([
            "-c",
            "model_provider=local",
            "-c",
            "model_providers.local.name=local",
        ])
        .arg("-c")
        .arg(format!("model_providers.local.base_url={base_url}"))
        .args(["-c", "model_providers.local.wire_api=responses"])
        .arg("-c")
        .arg(format!("model={}", server.model))
        .args(["-c", "model_providers.local.request_max_retries=0"])
        .args(["-c", "model_providers.local.stream_max_retries=0"])
        .arg("Write codex-ran-this into proof.txt");
    let (ok, out, err) = run_with_limit(codex, Duration::from_secs(300));
    assert!(ok, "codex failed\n{out}\n{err}");
    let proof = std::fs::read_to_string(work.path().join("proof.txt"))
        .unwrap_or_else(|e| panic!("the command did not run ({e})\n{out}\n{err}"));
    assert_eq!(proof, "codex-ran-this\n");
    assert!(out.contains(answer), "no final answer\n{out}\n{err}");
}

#[test]
fn claude_code_runs_a_shell_command_and_answers_through_the_messages_api() {
    // Claude Code in print mode (`claude -p`) against the same kind of
    // checkpoint: its Bash tool is called, then the answer comes.
    let answer = "The file proof.txt now says claude-ran-this.";
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        agent_script(
            "Bash",
            json!({"command": "echo claude-ran-this > proof.txt", "description": "Write the proof"}),
            answer,
        ),
        &["--api-key", "agent-key"],
    );
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut claude = Command::new(agent("claude"));
    claude
        .current_dir(work.path())
        .env("HOME", home.path())
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", server.port),
        )
        .env("ANTHROPIC_API_KEY", "agent-key")
        .env("DISABLE_TELEMETRY", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .args(["-p", "Write claude-ran-this into proof.txt"])
        .args(["--model", &server.model])
        // Bash pre-approved (print mode cannot ask; root may not skip permissions).
        .args(["--allowedTools", "Bash"]);
    let (ok, out, err) = run_with_limit(claude, Duration::from_secs(300));
    assert!(ok, "claude failed\n{out}\n{err}");
    let proof = std::fs::read_to_string(work.path().join("proof.txt"))
        .unwrap_or_else(|e| panic!("the command did not run ({e})\n{out}\n{err}"));
    assert_eq!(proof, "claude-ran-this\n");
    assert!(out.contains(answer), "no final answer\n{out}\n{err}");
}

/// The real trained model (scripts/fetch-default-model; scripts/test sets
/// MLX_HARMONY_SMOLLM2).
fn smollm2() -> PathBuf {
    let path = std::env::var_os("MLX_HARMONY_SMOLLM2").expect(
        "MLX_HARMONY_SMOLLM2 names SmolLM2-135M-Instruct's GGUF file; run scripts/test, or set it \
         to the path scripts/fetch-default-model prints",
    );
    PathBuf::from(path)
}

fn run_sdk_script(server: &Server, script: &str) {
    run_sdk_script_with(server, script, &[]);
}

/// Runs `tests/SCRIPT` (the official openai SDK, in .venv-fixtures) against
/// the server; it prints "all checks passed" when every check held.
fn run_sdk_script_with(server: &Server, script: &str, args: &[&str]) {
    let python = repo().join(".venv-fixtures/bin/python");
    assert!(
        python.exists(),
        "run scripts/fixtures-env (scripts/test does) for the openai SDK"
    );
    let output = Command::new(python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(script),
        )
        .arg(format!("http://127.0.0.1:{}/v1", server.port))
        .arg(&server.model)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn every_bad_request_gets_an_openai_error_and_the_server_stays_up() {
    // A copy of the tiny Llama that declares a 64-token context.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("llama")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "config.json" {
            let mut config: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            config["max_position_embeddings"] = json!(64);
            std::fs::write(dir.path().join(name), config.to_string()).unwrap();
        } else {
            std::os::unix::fs::symlink(&path, dir.path().join(name)).unwrap();
        }
    }
    let server = start(dir.path(), &["--max-body-mb", "1"]);
    let port = server.port;
    let post = |body: &Value| request(port, "POST", "/v1/chat/completions", body);

    let (status, _, text) =
        try_request(port, "POST", "/v1/chat/completions", &[], b"{\"model\": ").unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_error(status, &body, 400, None, None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let cases: Vec<(Value, u16, Option<&str>, Option<&str>)> = vec![
        (json!({"messages": []}), 400, None, None),
        (
            chat(&server, json!({"temperature": "hot"})),
            400,
            Some("temperature"),
            None,
        ),
        (
            chat(&server, json!({"temperature": 2.5})),
            400,
            Some("temperature"),
            None,
        ),
        (
            chat(&server, json!({"top_p": -0.1})),
            400,
            Some("top_p"),
            None,
        ),
        (
            chat(&server, json!({"max_tokens": 0})),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            chat(&server, json!({"max_tokens": 4294967296u64})),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            chat(&server, json!({"top_k": -1})),
            400,
            Some("top_k"),
            None,
        ),
        (chat(&server, json!({"stop": 7})), 400, Some("stop"), None),
        (chat(&server, json!({"n": 0})), 400, Some("n"), None),
        (
            chat(&server, json!({"logit_bias": {"9999999": 5}})),
            400,
            Some("logit_bias.9999999"),
            None,
        ),
        (
            chat(&server, json!({"logit_bias": {"5": 200}})),
            400,
            Some("logit_bias.5"),
            None,
        ),
        (
            chat(&server, json!({"logit_bias": {"five": 1}})),
            400,
            Some("logit_bias.five"),
            None,
        ),
        (
            chat(&server, json!({"modalities": ["text", "audio"]})),
            400,
            Some("modalities"),
            None,
        ),
        (
            chat(
                &server,
                json!({"audio": {"voice": "alloy", "format": "wav"}}),
            ),
            400,
            Some("audio"),
            None,
        ),
        (
            chat(
                &server,
                json!({"functions": [{"name": "f"}], "tools": [{"type": "function", "function": {"name": "g"}}]}),
            ),
            400,
            Some("functions"),
            None,
        ),
        (
            chat(
                &server,
                json!({"messages": [{"role": "function", "name": "f", "content": "1"}]}),
            ),
            400,
            Some("messages[0].name"),
            None,
        ),
        (chat(&server, json!({"n": 17})), 400, Some("n"), None),
        (
            chat(&server, json!({"frequency_penalty": 0.5})),
            400,
            Some("frequency_penalty"),
            None,
        ),
        (
            chat(&server, json!({"not_a_field": 1})),
            400,
            Some("not_a_field"),
            None,
        ),
        (
            chat(&server, json!({"messages": []})),
            400,
            Some("messages"),
            None,
        ),
        (
            chat(&server, json!({"messages": "hi"})),
            400,
            Some("messages"),
            None,
        ),
        (
            chat(
                &server,
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
            ),
            400,
            Some("messages[0].role"),
            None,
        ),
        (
            chat(&server, json!({"messages": [{"role": "user"}]})),
            400,
            Some("messages[0].content"),
            None,
        ),
        (
            chat(
                &server,
                json!({"messages": [{"role": "tool", "content": "x"}]}),
            ),
            400,
            Some("messages[0].tool_call_id"),
            None,
        ),
        (
            chat(
                &server,
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            ),
            400,
            Some("messages[0].content"),
            None,
        ),
        (
            chat(&server, json!({"tool_choice": "required"})),
            400,
            Some("tool_choice"),
            None,
        ),
        (
            chat(
                &server,
                json!({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}),
            ),
            400,
            Some("tools[0].type"),
            None,
        ),
        (
            chat(&server, json!({"response_format": {"type": "xml"}})),
            400,
            Some("response_format"),
            None,
        ),
        (
            chat(&server, json!({"reasoning_effort": "extreme"})),
            400,
            Some("reasoning_effort"),
            None,
        ),
        (
            chat(&server, json!({"model": "gpt-9"})),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            chat(
                &server,
                json!({"messages": [{"role": "user", "content": "word ".repeat(200)}]}),
            ),
            400,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
    ];
    for (body, want, param, code) in cases {
        let (status, answer) = post(&body);
        assert_error(status, &answer, want, param, code);
    }

    // Completions: the same checks.
    let (status, answer) = request(
        port,
        "POST",
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "x", "max_tokens": -1}),
    );
    assert_error(status, &answer, 400, Some("max_tokens"), None);
    let (status, answer) = request(port, "POST", "/v1/completions", &json!({"model": "tiny"}));
    assert_error(status, &answer, 400, None, None);
    let (status, answer) = request(
        port,
        "POST",
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "x", "suffix": "y"}),
    );
    assert_error(status, &answer, 400, Some("suffix"), None);

    // Too large a body, a wrong method, an unknown path.
    let big =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "x".repeat(2 << 20)}]});
    let (status, answer) = post(&big);
    assert_error(status, &answer, 413, None, Some("request_too_large"));
    let (status, answer) = request(port, "GET", "/v1/chat/completions", &json!({}));
    assert_error(status, &answer, 405, None, None);
    let (status, answer) = request(port, "GET", "/v2/anything", &json!({}));
    assert_error(status, &answer, 404, None, Some("unknown_url"));
    let (status, answer) = request(port, "GET", "/v1/models/other", &json!({}));
    assert_error(status, &answer, 404, Some("model"), Some("model_not_found"));

    // Still serving, and the completion endpoint works.
    let (status, answer) = request(
        port,
        "POST",
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "Once", "max_tokens": 3}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["usage"]["completion_tokens"], 3);
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    let (status, health) = request(port, "GET", "/health", &json!({}));
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
}

#[test]
fn legacy_functions_and_logit_bias_are_honoured() {
    let server = start(&fixture("llama"), &[]);
    let port = server.port;
    // A conversation in the legacy style: functions, an assistant
    // function_call and the function's answer.
    let (status, answer) = request(
        port,
        "POST",
        "/v1/chat/completions",
        &chat(
            &server,
            json!({
                "functions": [{"name": "get_time", "parameters": {"type": "object"}}],
                "function_call": "auto",
                "messages": [
                    {"role": "user", "content": "What time is it?"},
                    {"role": "assistant", "content": null,
                     "function_call": {"name": "get_time", "arguments": "{}"}},
                    {"role": "function", "name": "get_time", "content": "12:00"},
                ],
                "max_tokens": 4,
            }),
        ),
    );
    assert_eq!(status, 200, "{answer}");
    // logit_bias moves greedy decoding: +100 on one token makes it the
    // answer, so two different tokens give two different answers, each
    // different from the unbiased one and each the same when asked again.
    let complete = |bias: Value| {
        let (status, answer) = request(
            port,
            "POST",
            "/v1/completions",
            &json!({"model": "tiny", "prompt": "Once", "max_tokens": 3, "temperature": 0,
                    "logit_bias": bias}),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["usage"]["completion_tokens"], 3, "{answer}");
        answer["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let plain = complete(json!({}));
    let a = complete(json!({"1000": 100}));
    let b = complete(json!({"2000": 100}));
    assert_ne!(a, plain);
    assert_ne!(b, plain);
    assert_ne!(a, b);
    assert_eq!(complete(json!({"1000": 100})), a);
}

#[test]
fn the_prompt_cache_file_carries_prompts_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.safetensors");
    let file_arg = file.to_str().unwrap();
    let body = |server: &Server| {
        chat(
            server,
            json!({"messages": [{"role": "system", "content": "You are terse and exact."},
                                {"role": "user", "content": "Name three colours."}],
                   "max_tokens": 4, "temperature": 0}),
        )
    };
    let mut first = start(&fixture("llama"), &["--prompt-cache-file", file_arg]);
    let (status, answer) = request(first.port, "POST", "/v1/chat/completions", &body(&first));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    unsafe {
        libc_kill(first.child.id() as i32, 15);
    }
    assert!(wait_for_exit(&mut first, Duration::from_secs(10)).success());
    assert!(file.exists(), "the cache was not written at shutdown");

    let second = start(&fixture("llama"), &["--prompt-cache-file", file_arg]);
    let (status, again) = request(second.port, "POST", "/v1/chat/completions", &body(&second));
    assert_eq!(status, 200, "{again}");
    let prompt = again["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(prompt - 1),
        "{again}"
    );
    assert_eq!(
        again["choices"][0]["message"]["content"],
        answer["choices"][0]["message"]["content"]
    );
}

#[test]
fn the_api_key_is_required_when_set() {
    let server = start(&fixture("llama"), &["--api-key", "s3cret"]);
    let body = chat(&server, json!({})).to_string();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Bearer s3cre")],
        vec![("Authorization", "Bearer s3cret2")],
        vec![("Authorization", "s3cret")],
        vec![("Authorization", "Basic s3cret")],
    ] {
        let (status, head, text) = try_request(
            server.port,
            "POST",
            "/v1/chat/completions",
            &headers,
            body.as_bytes(),
        )
        .unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_error(status, &answer, 401, None, Some("invalid_api_key"));
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
    }
    // The scheme's name is case-insensitive.
    let (status, _, text) = try_request(
        server.port,
        "GET",
        "/v1/models",
        &[("Authorization", "bearer s3cret")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, _, _) = try_request(
        server.port,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer s3cret")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, _, text) = try_request(
        server.port,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer s3cret")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    // Health stays open for load balancers, without naming the model (by
    // default its path) to those without the key.
    let (status, _, text) = try_request(server.port, "GET", "/health", &[], b"").unwrap();
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["model"].is_null(), "{health}");
}

#[test]
fn the_prompt_cache_is_reused_across_requests() {
    let server = start(&fixture("llama"), &[]);
    let body = chat(
        &server,
        json!({"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]}),
    );
    let (_, first) = request(server.port, "POST", "/v1/chat/completions", &body);
    let (_, second) = request(server.port, "POST", "/v1/chat/completions", &body);
    let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        prompt - 1
    );

    // What /metrics says of those two requests (open, in Prometheus' text
    // format). A finished row leaves the batch at the step boundary after its
    // last token was sent, so the active-sequences gauge may still count it
    // for a moment after the response: read until it is back to zero.
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (head, text) = loop {
        let (status, head, text) = try_request(server.port, "GET", "/metrics", &[], b"").unwrap();
        assert_eq!(status, 200, "{text}");
        if metric(&text, "mlx_harmony_active_sequences") == 0.0
            || std::time::Instant::now() > deadline
        {
            break (head, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let value = |name: &str| metric(&text, name);
    let generated = first["usage"]["completion_tokens"].as_u64().unwrap()
        + second["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        value("mlx_harmony_requests_total{status=\"completed\"}"),
        2.0
    );
    assert_eq!(
        value("mlx_harmony_prompt_tokens_total"),
        2.0 * prompt as f64
    );
    assert_eq!(
        value("mlx_harmony_generated_tokens_total"),
        generated as f64
    );
    assert_eq!(
        value("mlx_harmony_cached_prompt_tokens_total"),
        (prompt - 1) as f64
    );
    assert_eq!(value("mlx_harmony_prompt_cache_hits_total"), 1.0);
    assert_eq!(value("mlx_harmony_time_to_first_token_seconds_count"), 2.0);
    assert_eq!(
        value("mlx_harmony_time_to_first_token_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(value("mlx_harmony_active_sequences"), 0.0);
    assert_eq!(value("mlx_harmony_waiting_requests"), 0.0);
}

/// Reads a streaming response until `[DONE]`: (status, data lines).
fn stream(port: u16, body: &Value) -> (u16, Vec<String>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let text = body.to_string();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut data = Vec::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(d) = line.strip_prefix("data: ") {
            data.push(d.to_string());
        } else if line.starts_with("{\"error\"") {
            data.push(line);
        }
    }
    (status, data)
}

/// The server's resident memory: /proc on Linux, `ps` elsewhere (macOS).
fn rss_kib(pid: u32) -> u64 {
    if cfg!(target_os = "linux") {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        return status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
    }
    let out = Command::new("ps")
        .args(["-o", "rss=", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn thirty_two_streaming_clients_all_finish_or_get_a_clean_429() {
    let server = start(&fixture("llama"), &["--queue-size", "8"]);
    let wave = |server: &Server| {
        let clients: Vec<_> = (0..32)
            .map(|i| {
                let port = server.port;
                let body = chat(
                    server,
                    json!({"stream": true, "max_tokens": 24, "seed": i,
                    "messages": [{"role": "user", "content": format!("Client {i} says hello")}]}),
                );
                std::thread::spawn(move || stream(port, &body))
            })
            .collect();
        let mut done = 0;
        let mut busy = 0;
        for client in clients {
            let (status, data) = client.join().unwrap();
            match status {
                200 => {
                    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
                    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
                    assert_eq!(finish["choices"][0]["finish_reason"], "length", "{finish}");
                    done += 1;
                }
                429 => {
                    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
                    assert_eq!(error["error"]["code"], "queue_full");
                    busy += 1;
                }
                other => panic!("status {other}: {data:?}"),
            }
        }
        assert_eq!(done + busy, 32);
        assert!(
            done >= 9,
            "one running and eight waiting must get through, got {done}"
        );
        done
    };
    wave(&server);
    let after_first = rss_kib(server.child.id());
    wave(&server);
    wave(&server);
    let after_third = rss_kib(server.child.id());
    assert!(
        after_third < after_first + after_first / 5 + 20_000,
        "memory grew from {after_first} KiB to {after_third} KiB"
    );
    let (_, health) = request(server.port, "GET", "/health", &json!({}));
    assert_eq!(health["status"], "ok");
    assert_eq!(health["waiting"], 0);
}

#[test]
fn a_client_that_disconnects_stops_its_generation() {
    let server = start(&fixture("llama"), &[]);
    let body = chat(
        &server,
        json!({"stream": true, "max_tokens": 100000, "temperature": 0.8}),
    )
    .to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut chunks = 0;
    let mut line = String::new();
    while chunks < 5 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("data: ") {
            chunks += 1;
        }
    }
    let (_, health) = request(server.port, "GET", "/health", &json!({}));
    assert_eq!(health["generating"], true, "{health}");
    drop(reader);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let left = Instant::now();
    loop {
        let (_, health) = request(server.port, "GET", "/health", &json!({}));
        if health["generating"] == false {
            assert_eq!(health["cancelled_requests"], 1, "{health}");
            assert_eq!(health["completed_requests"], 0, "{health}");
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "still generating after the client left: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_ends_the_stream_in_progress_cleanly_and_exits() {
    let mut server = start(&fixture("llama"), &[]);
    let port = server.port;
    // Bounded, so that a lost cancel fails the test ("length") instead of hanging it.
    let body = chat(&server, json!({"stream": true, "max_tokens": 3000}));
    let client = std::thread::spawn(move || stream(port, &body));
    let started = Instant::now();
    loop {
        let (_, health) = request(port, "GET", "/health", &json!({}));
        if health["generating"] == true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc_kill(server.child.id() as i32, 15);
    }
    let (status, data) = client.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{finish}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = server.child.try_wait().unwrap() {
            assert!(code.success(), "{code}");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection that sent half a request and then nothing.
fn half_sent_request(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{{\"model\": "
    )
    .unwrap();
    stream
}

fn wait_for_exit(server: &mut Server, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_half_sent_request_exits_at_the_shutdown_deadline() {
    let mut server = start(&fixture("llama"), &["--shutdown-timeout", "1"]);
    let _held = half_sent_request(server.port);
    std::thread::sleep(Duration::from_millis(200));
    unsafe {
        libc_kill(server.child.id() as i32, 15);
    }
    let status = wait_for_exit(&mut server, Duration::from_secs(8));
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_during_a_server_side_tool_call_exits_cleanly() {
    let (mut server, _script) = start_scripted(
        &fixture("gpt-oss"),
        json!(["<|channel|>analysis to=python code<|message|>while True:\n    pass<|call|>"]),
        &[
            "--python",
            "--python-timeout",
            "60",
            "--shutdown-timeout",
            "2",
        ],
    );
    let port = server.port;
    let body = chat(&server, json!({"max_tokens": 64, "stream": true}));
    let client = std::thread::spawn(move || stream(port, &body));
    let started = Instant::now();
    loop {
        let (_, health) = request(port, "GET", "/health", &json!({}));
        if health["generating"] == true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{health}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the python call start.
    std::thread::sleep(Duration::from_millis(800));
    unsafe {
        libc_kill(server.child.id() as i32, 15);
    }
    let status = wait_for_exit(&mut server, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let (status, data) = client.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
}

/// The fault suite's shutdown part: SIGTERM while clients stream, one
/// holds a half-sent request and another's request waits in the queue; every
/// time the server exits with status 0 within the deadline and no client is
/// left hanging.
#[test]
fn sigterm_under_load_exits_cleanly_every_time() {
    for round in 0..20 {
        let mut server = start(
            &fixture("llama"),
            &["--shutdown-timeout", "1", "--max-concurrency", "2"],
        );
        let port = server.port;
        let body = chat(&server, json!({"stream": true, "max_tokens": 3000}));
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let body = body.clone();
                std::thread::spawn(move || stream(port, &body))
            })
            .collect();
        let _held = half_sent_request(port);
        let started = Instant::now();
        loop {
            let (_, health) = request(port, "GET", "/health", &json!({}));
            if health["active"] == 2 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{health}");
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe {
            libc_kill(server.child.id() as i32, 15);
        }
        let killed = Instant::now();
        let status = wait_for_exit(&mut server, Duration::from_secs(10));
        assert!(status.success(), "round {round}: {status}");
        for client in clients {
            let (status, data) = client.join().unwrap();
            // Streams in progress end with [DONE]; the queued one gets 503.
            assert!(
                (status == 200 && data.last().map(String::as_str) == Some("[DONE]"))
                    || status == 503,
                "round {round}: {status} {data:?}"
            );
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "round {round}: a client hung past the deadline"
        );
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn a_template_model_returns_its_tool_calls_as_tool_calls() {
    let (server, _script) = start_scripted(
        &fixture("qwen2"),
        json!([
            "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"
        ]),
        &[],
    );
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let (status, answer) = request(
        server.port,
        "POST",
        "/v1/chat/completions",
        &chat(&server, json!({"tools": tools, "max_tokens": 64})),
    );
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    assert_eq!(choice["message"]["content"], "Checking.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    // A chat template cannot be made to call a tool: said, not ignored.
    let (status, body) = request(
        server.port,
        "POST",
        "/v1/chat/completions",
        &chat(&server, json!({"tools": tools, "tool_choice": "required"})),
    );
    assert_error(status, &body, 400, Some("tool_choice"), None);
}

#[test]
fn tool_choice_required_or_named_makes_gpt_oss_reply_with_a_call() {
    // What the model writes after the forced header: for a named function
    // only the arguments, for "required" the name too.
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        json!([
            " <|constrain|>json<|message|>{\"city\": \"Oslo\"}<|call|>",
            "get_time <|constrain|>json<|message|>{\"zone\": \"UTC\"}<|call|>"
        ]),
        &[],
    );
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]);
    let ask = |choice: Value| {
        request(
            server.port,
            "POST",
            "/v1/chat/completions",
            &chat(
                &server,
                json!({"tools": tools, "tool_choice": choice, "max_tokens": 64}),
            ),
        )
    };
    for (choice, name, arguments) in [
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            "get_weather",
            "{\"city\": \"Oslo\"}",
        ),
        (json!("required"), "get_time", "{\"zone\": \"UTC\"}"),
    ] {
        let (status, answer) = ask(choice);
        assert_eq!(status, 200, "{answer}");
        let choice = &answer["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], name, "{answer}");
        assert_eq!(call["function"]["arguments"], arguments, "{answer}");
        // The forced header is the prompt's, not the completion's.
        assert!(
            answer["usage"]["completion_tokens"].as_u64().unwrap() < 20,
            "{answer}"
        );
    }
    let (status, body) = ask(json!({"type": "function", "function": {"name": "get_stock"}}));
    assert_error(status, &body, 400, Some("tool_choice.function.name"), None);
    let (status, body) = ask(json!({"type": "function"}));
    assert_error(status, &body, 400, Some("tool_choice.function.name"), None);
    let (status, body) = ask(json!("sometimes"));
    assert_error(status, &body, 400, Some("tool_choice"), None);
}

#[test]
fn a_client_that_leaves_during_a_tool_call_stops_the_tool() {
    // The model's first reply runs a python loop that would take the whole
    // 60 s timeout; the second client is answered by the same model thread.
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        json!([
            "<|channel|>analysis to=python code<|message|>while True:\n    pass<|call|>",
            "<|channel|>final<|message|>Done.<|return|>"
        ]),
        &["--python", "--python-timeout", "60"],
    );
    let port = server.port;
    let body = chat(&server, json!({"max_tokens": 64, "stream": true})).to_string();
    let mut leaving = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        leaving,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until the call is announced: the tool is running.
    let mut reader = BufReader::new(leaving.try_clone().unwrap());
    let started = Instant::now();
    let mut line = String::new();
    while !line.contains("[call python]") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(reader);
    leaving.shutdown(std::net::Shutdown::Both).unwrap();
    drop(leaving);
    let left = Instant::now();
    let (status, answer) = request(
        port,
        "POST",
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "x", "max_tokens": 2}),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        left.elapsed() < Duration::from_secs(15),
        "the next request waited {:?} for the abandoned tool call",
        left.elapsed()
    );
}

#[test]
fn gpt_oss_built_in_tools_run_on_the_server() {
    let (server, _script) = start_scripted(
        &fixture("gpt-oss"),
        json!([
            "<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>",
            "<|channel|>final<|message|>It is 42.<|return|>"
        ]),
        &["--python"],
    );
    let (status, answer) = request(
        server.port,
        "POST",
        "/v1/chat/completions",
        &chat(&server, json!({"max_tokens": 64})),
    );
    assert_eq!(status, 200, "{answer}");
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "It is 42.", "{answer}");
    assert!(message.get("tool_calls").is_none(), "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // The call ran on the server; its result is part of the reasoning shown.
    let reasoning = message["reasoning_content"].as_str().unwrap_or_default();
    assert_eq!(
        reasoning, "[call python]\nprint(6 * 7)\n[python]\n42",
        "{answer}"
    );
    // Two model replies: the call and the answer.
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() > 10,
        "{answer}"
    );
    // Streamed, the reasoning shows the call the same way.
    let (status, events) = stream(
        server.port,
        &chat(&server, json!({"max_tokens": 64, "stream": true})),
    );
    assert_eq!(status, 200, "{events:?}");
    let (mut streamed_reasoning, mut streamed_content) = (String::new(), String::new());
    for event in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let delta = &chunk["choices"][0]["delta"];
        streamed_reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        streamed_content.push_str(delta["content"].as_str().unwrap_or_default());
    }
    assert_eq!(streamed_reasoning.trim_end(), reasoning, "{events:?}");
    assert_eq!(streamed_content, "It is 42.", "{events:?}");
}

#[test]
fn a_streaming_client_is_answered_while_another_is_still_decoding() {
    // A long scripted reply (no end token for 600 tokens), so that the first
    // client's answer is long whatever the random weights would say.
    let long = "one two three four five six seven eight nine ten ".repeat(60);
    let (server, _script) = start_scripted(
        &fixture("llama"),
        json!([long]),
        &["--max-concurrency", "4"],
    );
    let port = server.port;
    let first_body = chat(&server, json!({"stream": true, "max_tokens": 500}));
    let (first_chunk_tx, first_chunk) = std::sync::mpsc::channel();
    let long_client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let text = first_body.to_string();
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .unwrap();
        let mut chunks = 0;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("data: ") {
                chunks += 1;
                if chunks == 2 {
                    let _ = first_chunk_tx.send(());
                }
                if line == "data: [DONE]" {
                    break;
                }
            }
        }
        (Instant::now(), chunks)
    });
    first_chunk
        .recv_timeout(Duration::from_secs(120))
        .expect("the first client's answer starts");
    let (status, data) = stream(
        port,
        &chat(&server, json!({"stream": true, "max_tokens": 3})),
    );
    let short_done = Instant::now();
    assert_eq!(status, 200);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let (long_done, chunks) = long_client.join().unwrap();
    assert!(chunks > 400, "the first answer streamed {chunks} chunks");
    assert!(
        short_done < long_done,
        "the second client waited for the first to finish"
    );
    // The model thread updates the count after the step that sent the last
    // chunk: on a loaded machine /health can ask just before.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = request(port, "GET", "/health", &json!({}));
        if health["active"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{health}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn smollm2_answers_and_strict_tool_calls_always_match_their_schemas_and_logprobs_are_reported() {
    // The token id of `{` in SmolLM2's vocabulary, for the strict-tool part.
    let loaded = mlx_harmony_core::generate::LoadedModel::load(&smollm2()).unwrap();
    let brace = loaded.tokenizer.token_to_id("{").expect("`{` is one token");
    drop(loaded);
    let server = start(&smollm2(), &["--max-concurrency", "4"]);
    run_sdk_script_with(&server, "structured_outputs.py", &[&brace.to_string()]);
}

#[test]
fn with_max_kv_size_requests_decode_together_past_the_bound() {
    // Each row's cache holds its first 4 and newest 12 positions; 300
    // tokens pass the point where the batch cuts the dropped columns away.
    let server = start(
        &fixture("llama"),
        &["--max-kv-size", "16", "--max-concurrency", "4"],
    );
    let prompts = [
        "Once upon a time",
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",
        "Hi",
    ];
    let alone = assert_same_completions(&server, &server, &prompts, 300);
    let longest = alone
        .iter()
        .map(|r| r["usage"]["completion_tokens"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(longest > 280, "no reply passed the cut ({longest} tokens)");
}

/// Greedy completions of `prompts` from `other` equal `plain`'s (which may
/// be the same server), each sent alone and all at once; returns `plain`'s.
fn assert_same_completions(
    plain: &Server,
    other: &Server,
    prompts: &[&str],
    max_tokens: u32,
) -> Vec<Value> {
    let body = |server: &Server, prompt: &str| json!({"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0});
    let expected: Vec<Value> = prompts
        .iter()
        .map(|p| request(plain.port, "POST", "/v1/completions", &body(plain, p)).1)
        .collect();
    for (prompt, expected) in prompts.iter().zip(&expected) {
        let (status, reply) = request(other.port, "POST", "/v1/completions", &body(other, prompt));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["choices"][0]["text"], expected["choices"][0]["text"],
            "alone"
        );
        assert_eq!(
            reply["usage"]["completion_tokens"],
            expected["usage"]["completion_tokens"]
        );
    }
    let port = other.port;
    let together: Vec<(u16, Value)> = prompts
        .iter()
        .map(|p| {
            let body = body(other, p);
            std::thread::spawn(move || request(port, "POST", "/v1/completions", &body))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for ((status, reply), expected) in together.iter().zip(&expected) {
        assert_eq!(*status, 200, "{reply}");
        assert_eq!(
            reply["choices"][0]["text"], expected["choices"][0]["text"],
            "together"
        );
    }
    expected
}

#[test]
fn with_prompt_lookup_a_lone_request_answers_as_without_it() {
    // Greedy answers are the same tokens with drafts checked (the core
    // batch test shows the drafts kept); three at once decode batched.
    let plain = start(&fixture("llama"), &[]);
    let lookup = start(&fixture("llama"), &["--prompt-lookup", "6"]);
    assert_same_completions(
        &plain,
        &lookup,
        &["Once upon a time", "1 2 3 4 5 6 7 8", "Hi"],
        60,
    );
}

#[test]
fn with_a_draft_model_requests_answer_as_without_it() {
    let plain = start(&fixture("llama"), &[]);
    let draft = fixture("llama-q4");
    let drafting = start(
        &fixture("llama"),
        &[
            "--draft-model",
            draft.to_str().unwrap(),
            "--num-draft-tokens",
            "4",
        ],
    );
    assert_same_completions(
        &plain,
        &drafting,
        &["Once upon a time", "1 2 3 4 5 6 7 8", "Hi"],
        40,
    );
}

#[test]
fn with_kv_bits_requests_decode_together_on_quantized_caches() {
    // Rows join packed and decode on 4-bit keys and values: three requests
    // at once answer as each alone (the core batch test compares them with
    // one quantized sequence).
    let server = start(
        &fixture("qwen3"),
        &[
            "--kv-bits",
            "4",
            "--kv-group-size",
            "32",
            "--quantized-kv-start",
            "0",
        ],
    );
    let prompts = ["Once upon a time", "1 2 3 4 5 6 7 8 9 10 11 12", "Hi"];
    assert_same_completions(&server, &server, &prompts, 40);
}

#[test]
fn two_tensor_parallel_ranks_serve_the_openai_sdk_as_one_process_does() {
    let model = mlx_harmony_testkit::smollm2();
    let one = start(&model, &[]);
    let two = start_tensor_parallel(&model, &[]);
    // Rank 1 follows rank 0's batch and does not listen.
    assert_eq!(server_processes(two.port).len(), 2);
    run_sdk_script_with(
        &two,
        "openai_tensor_parallel.py",
        &[&format!("http://127.0.0.1:{}/v1", one.port)],
    );
    drop(two);
}
