//! mlx-harmony-generate as a user runs it: flags, exit codes, output.

use std::process::Command;

use mlx_harmony_core::demo;
use mlx_harmony_testkit::{assert_success, mlx_launch, parity_fixture, run_with_input, smollm2};

fn generate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlx-harmony-generate"))
}

#[test]
fn version_names_the_mlx_it_runs_on() {
    let out = generate().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // e.g. "mlx-harmony-generate 0.1.0 (MLX 0.32.4)": the library loaded, not a constant.
    let mlx = text
        .split("(MLX ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no MLX version in {text:?}"));
    assert!(
        mlx.split('.').count() == 3 && mlx.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{text:?}"
    );
    assert!(text.starts_with(&format!(
        "mlx-harmony-generate {}",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn help_lists_the_flags_with_defaults() {
    let out = generate().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model",
        "--prompt",
        "--max-tokens",
        "--device",
        "--revision",
        "--no-prewarm-cache",
        "--mlock",
        "--profile",
        "--prompt-config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(
        help.contains("[default: auto]")
            && help.contains("[default: 512]")
            && help.contains("--temperature"),
        "{help}"
    );
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let out = generate()
        .args(["--model", "x", "--prompt", "y", "--device", "tpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'tpu'") && err.contains("gpu"),
        "{err}"
    );

    let out = generate().args(["--prompt", "y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_checkpoint_generates_the_models_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    demo::write_random_llama(dir.path(), &demo::tiny_llama_config(), 3).unwrap();
    let out = generate()
        .args([
            "--model",
            dir.path().to_str().unwrap(),
            "--prompt",
            "Hi",
            "--max-tokens",
            "8",
        ])
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("device: cpu (CPU"), "{stderr}");
    assert!(
        stderr.contains("2 prompt tokens, 8 generated tokens"),
        "{stderr}"
    );

    // The printed text is exactly the library's greedy tokens, rendered as the
    // binary documents: printable ASCII as itself, anything else as <id>.
    let expected =
        mlx_harmony_frontend::byte_model::run(
            dir.path(),
            "Hi",
            8,
            |_| Ok::<(), std::io::Error>(()),
        )
        .unwrap();
    let rendered: String = expected
        .tokens
        .iter()
        .map(|&t| {
            if (0x20..=0x7e).contains(&t) {
                (t as u8 as char).to_string()
            } else {
                format!("<{t}>")
            }
        })
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'),
        rendered
    );
}

#[test]
fn a_folder_that_is_not_a_model_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate()
        .args([
            "--model",
            dir.path().to_str().unwrap(),
            "--prompt",
            "Hi",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: ") && err.contains("not a model: expected a .gguf file"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
}

#[test]
fn smollm2_answers_through_its_chat_template() {
    let model = smollm2();
    let out = generate()
        .arg("--model")
        .arg(&model)
        .args([
            "--prompt",
            "What is the capital of France?",
            "--max-tokens",
            "24",
            "--device",
            "cpu",
            "--verbose",
            "--temperature",
            "0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "The capital of France is Paris."
    );
    assert!(
        stderr.contains("prompt tokens") && !stderr.contains("stopped at --max-tokens"),
        "{stderr}"
    );
}

#[test]
fn sampling_flags_are_checked_and_a_seed_reproduces_the_answer() {
    let model = smollm2();
    let run = |extra: &[&str]| {
        generate()
            .arg("--model")
            .arg(&model)
            .args([
                "--prompt",
                "Tell me about cats.",
                "--max-tokens",
                "12",
                "--device",
                "cpu",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let a = run(&["--temperature", "1.0", "--seed", "7"]);
    let b = run(&["--temperature", "1.0", "--seed", "7"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "the same seed gives the same text");

    let bad = run(&["--temperature", "3"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("temperature: must be a number from 0 to 2, got 3"),
        "{err}"
    );
}

#[test]
fn model_folders_with_tokenizer_json_generate_including_gpt_oss_through_harmony() {
    let parity = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity");
    let out = generate()
        .arg("--model")
        .arg(parity.join("qwen2"))
        .args([
            "--prompt",
            "Hi",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--device",
            "cpu",
            "--verbose",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("prompt tokens") && stderr.contains("generated tokens"),
        "{stderr}"
    );

    // A random-weight GPT-OSS: the Harmony prompt renders, tokens stream through
    // the Harmony parser, and whatever the model emits is shown, not dropped.
    let out = generate()
        .arg("--model")
        .arg(parity.join("gpt-oss"))
        .args([
            "--prompt",
            "Hi",
            "--device",
            "cpu",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--verbose",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("prompt tokens"), "{stderr}");
    assert!(
        !out.stdout.is_empty() || stderr.contains("[analysis]"),
        "nothing shown of the generated tokens"
    );
}

#[test]
fn stop_strings_end_the_answer_without_showing_them() {
    let out = generate()
        .arg("--model")
        .arg(smollm2())
        .args([
            "--prompt",
            "What is the capital of France?",
            "--temperature",
            "0",
            "--device",
            "cpu",
        ])
        .args(["--stop", "France is", "--stop", "never-seen"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "The capital of \n");
}

#[test]
fn prompt_from_stdin_and_one_json_object_out() {
    let out = run_with_input(
        generate().arg("--model").arg(smollm2()).args([
            "--json",
            "--temperature",
            "0",
            "--device",
            "cpu",
        ]),
        b"What is the capital of France?\n",
    );
    assert_success(&out);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(json["text"], "The capital of France is Paris.");
    assert_eq!(json["finish_reason"], "stop");
    assert_eq!(
        json["tokens"].as_array().unwrap().len(),
        json["stats"]["generated_tokens"].as_u64().unwrap() as usize
    );
    assert!(json["stats"]["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(
        json["stats"]["time_to_first_token_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(json["stats"]["peak_memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn debug_shows_the_rendered_prompt_and_raw_completion() {
    let out = generate()
        .arg("--model")
        .arg(smollm2())
        .args([
            "--prompt",
            "Hi",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--device",
            "cpu",
            "--debug",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--- prompt (") && err.contains("<|im_start|>user\nHi<|im_end|>"),
        "{err}"
    );
    assert!(err.contains("--- raw completion (3 tokens) ---"), "{err}");

    // Placeholders nothing defines are reported with --debug.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"developer_instructions": "Call me {name}, not {nickname}.", "placeholders": {"name": "Ada"}}"#).unwrap();
    let out = generate()
        .arg("--model")
        .arg(smollm2())
        .arg("--prompt-config")
        .arg(&config)
        .args([
            "--prompt",
            "Hi",
            "--max-tokens",
            "1",
            "--temperature",
            "0",
            "--device",
            "cpu",
            "--debug",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("placeholders left as written (nothing defines them): {nickname}"),
        "{err}"
    );
    assert!(err.contains("Call me Ada, not {nickname}."), "{err}");
}

#[test]
fn a_prompt_config_with_unknown_or_unapplied_keys_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"temprature": 0.5, "max_kv_size": 512}"#).unwrap();
    let out = generate()
        .arg("--model")
        .arg(parity_fixture("llama"))
        .arg("--prompt-config")
        .arg(&config)
        .args(["--prompt", "Hi", "--max-tokens", "1", "--device", "cpu"])
        .output()
        .unwrap();
    assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("unknown key `temprature`"),
        "{err}"
    );
    // max_kv_size is applied now (a bounded cache), so not warned about.
    assert!(!err.contains("max_kv_size"), "{err}");
}

#[test]
fn max_kv_size_generates_past_the_bound() {
    // 60 tokens through a cache bounded to 16 positions: the prompt and the
    // first tokens are dropped as it fills (the first 4 kept), and the run
    // goes on to the end; the bound also comes from a prompt config.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"max_kv_size": 16}"#).unwrap();
    for bound in [
        &["--max-kv-size", "16"][..],
        &["--prompt-config", config.to_str().unwrap()],
    ] {
        let out = generate()
            .arg("--model")
            .arg(parity_fixture("llama"))
            .args(bound)
            .args([
                "--prompt",
                "Hi there",
                "--max-tokens",
                "60",
                "--temperature",
                "0",
            ])
            .args(["--device", "cpu", "--json"])
            .output()
            .unwrap();
        assert_success(&out);
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let generated = answer["stats"]["generated_tokens"].as_u64().unwrap();
        // Past the bound: the prompt (about 10 tokens) and 60 more pass 16;
        // the random weights may end the turn early, but not before it.
        assert!(
            generated == 60 || (answer["finish_reason"] == "stop" && generated > 16),
            "{answer}"
        );
    }
    let out = generate()
        .arg("--model")
        .arg(parity_fixture("llama"))
        .args(["--max-kv-size", "0", "--prompt", "Hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-kv-size"));
}

#[test]
fn kv_bits_quantize_the_cache_or_say_why_not() {
    let run = |model: &str, extra: &[&str]| {
        generate()
            .arg("--model")
            .arg(parity_fixture(model))
            .args([
                "--prompt",
                "Hi there",
                "--max-tokens",
                "12",
                "--temperature",
                "0",
            ])
            .args(["--device", "cpu", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    // qwen3's heads are 32 wide.
    for bits in ["4", "8"] {
        let out = run(
            "qwen3",
            &[
                "--kv-bits",
                bits,
                "--kv-group-size",
                "32",
                "--quantized-kv-start",
                "0",
            ],
        );
        assert_success(&out);
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            answer["stats"]["generated_tokens"].as_u64().unwrap() > 0,
            "{answer}"
        );
    }
    // Usage errors: bits or groups not offered, a group size alone, a
    // bounded and quantized cache at once.
    for extra in [
        &["--kv-bits", "3"][..],
        &["--kv-bits", "4", "--kv-group-size", "48"],
        &["--kv-group-size", "32"],
        &["--quantized-kv-start", "10"],
        &["--kv-bits", "4", "--max-kv-size", "64"],
    ] {
        let out = run("qwen3", extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
    }
    // A model whose cache cannot be quantized, and groups wider than the
    // heads: errors that say what to do.
    let out = run("gpt-oss", &["--kv-bits", "8"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--kv-bits") && stderr.contains("Llama-family"),
        "{stderr}"
    );
    let out = run("llama", &["--kv-bits", "8", "--quantized-kv-start", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("head size 16"), "{stderr}");
}

#[test]
fn profiles_give_the_model_and_prompt_config_and_unknown_names_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("short.json");
    std::fs::write(&config, r#"{"max_tokens": 3, "temperature": 0}"#).unwrap();
    let profiles = dir.path().join("profiles.json");
    std::fs::write(
        &profiles,
        format!(
            r#"{{"smol": {{"model": "{}", "prompt_config": "short.json"}}}}"#,
            smollm2().display()
        ),
    )
    .unwrap();
    let out = generate()
        .arg("--profiles-file")
        .arg(&profiles)
        .args([
            "--profile",
            "smol",
            "--prompt",
            "Hi",
            "--json",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["stats"]["generated_tokens"], 3,
        "max_tokens from the profile's prompt config"
    );

    let out = generate()
        .arg("--profiles-file")
        .arg(&profiles)
        .args(["--profile", "big", "--prompt", "Hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no profile named \"big\"; known profiles: smol")
    );

    // Neither --model nor --profile is a usage error.
    assert_eq!(
        generate()
            .args(["--prompt", "Hi"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn loading_prewarms_only_on_request_and_mlock_is_done_or_clearly_refused() {
    let model = parity_fixture("llama");
    let run = |extra: &[&str]| {
        generate()
            .arg("--model")
            .arg(&model)
            .args(["--prompt", "Hi", "--max-tokens", "2", "--verbose"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("prewarm:"), "{err}");
    let out = run(&["--prewarm-cache"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("prewarm: read 2 file(s)"), "{err}");
    // The prompt config can ask for it; --no-prewarm-cache overrides that.
    let config = tempfile::tempdir().unwrap();
    let config = config.path().join("prewarm.json");
    std::fs::write(&config, r#"{"prewarm_cache": true}"#).unwrap();
    let config = config.to_str().unwrap();
    let out = run(&["--prompt-config", config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("prewarm: read 2 file(s)"),
        "{err}"
    );
    let out = run(&["--prompt-config", config, "--no-prewarm-cache"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("prewarm:"), "{err}");
    let out = run(&["--prewarm-cache", "--no-prewarm-cache"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "conflicting flags are a usage error"
    );
    let out = run(&["--mlock", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => assert!(err.contains("mlock: process memory locked"), "{err}"),
        Some(1) => assert!(
            err.contains("--mlock: cannot lock memory") && err.contains("ulimit -l"),
            "{err}"
        ),
        other => panic!("exit {other:?}: {err}"),
    }
}

#[test]
fn a_hub_id_not_in_the_cache_fails_clearly_offline() {
    let cache = tempfile::tempdir().unwrap();
    let out = generate()
        .args(["--model", "mlx-community/not-downloaded", "--prompt", "Hi"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "mlx-community/not-downloaded (revision main) is not in the Hugging Face cache"
        ),
        "{err}"
    );
}

#[test]
fn json_schema_and_grammar_flags_hold_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("person.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}"#,
    )
    .unwrap();
    let out = generate()
        .arg("--model")
        .arg(smollm2())
        .args([
            "--prompt",
            "Describe a person.",
            "--temperature",
            "0.9",
            "--seed",
            "4",
        ])
        .arg("--json-schema")
        .arg(&schema)
        .args(["--device", "cpu", "--max-tokens", "60"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(text.trim()).expect("the answer is JSON");
    assert!(
        value["name"].as_str().unwrap().chars().count() <= 12,
        "{text}"
    );
    assert!(
        (0..=120).contains(&value["age"].as_i64().unwrap()),
        "{text}"
    );
    assert_eq!(value.as_object().unwrap().len(), 2, "{text}");

    let grammar = dir.path().join("yesno.lark");
    std::fs::write(&grammar, "start: \"yes\" | \"no\"\n").unwrap();
    let out = generate()
        .arg("--model")
        .arg(smollm2())
        .args(["--prompt", "Is water wet?", "--device", "cpu"])
        .arg("--grammar")
        .arg(&grammar)
        .output()
        .unwrap();
    assert_success(&out);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(["yes", "no"].contains(&answer.trim()), "{answer:?}");

    // A schema the engine cannot compile stops before generating.
    std::fs::write(
        &schema,
        r#"{"type": "integer", "minimum": 3, "maximum": 1}"#,
    )
    .unwrap();
    let out = generate()
        .arg("--model")
        .arg(smollm2())
        .args(["--prompt", "x", "--device", "cpu"])
        .arg("--json-schema")
        .arg(&schema)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the answer's format"), "{stderr}");
}

#[test]
fn prompt_lookup_keeps_the_answer_and_reports_its_drafts() {
    let prompt =
        "Repeat exactly: the red fox ran over the old stone bridge and into the dark wood.";
    let run = |extra: &[&str]| {
        let out = generate()
            .arg("--model")
            .arg(smollm2())
            .args([
                "--prompt",
                prompt,
                "--temperature",
                "0",
                "--json",
                "--device",
                "cpu",
            ])
            .args(["--max-tokens", "32"])
            .args(extra)
            .output()
            .unwrap();
        assert_success(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let plain = run(&[]);
    let fast = run(&["--prompt-lookup", "6"]);
    assert_eq!(plain["tokens"], fast["tokens"]);
    assert!(fast["stats"]["drafted_tokens"].as_u64().unwrap() > 0);
    assert!(fast["stats"]["accepted_draft_tokens"].as_u64().unwrap() > 0);
    assert_eq!(plain["stats"]["drafted_tokens"], 0);
    // A draft model: SmolLM2 drafting for itself, 4 tokens a step.
    let drafted = run(&[
        "--draft-model",
        smollm2().to_str().unwrap(),
        "--num-draft-tokens",
        "4",
    ]);
    assert_eq!(plain["tokens"], drafted["tokens"]);
    let stats = &drafted["stats"];
    assert!(stats["accepted_draft_tokens"].as_u64().unwrap() > 0);
    assert!(
        stats["speculative_steps"].as_u64().unwrap()
            < plain["tokens"].as_array().unwrap().len() as u64
    );
}

#[test]
fn draft_models_are_checked_before_generating() {
    let run = |extra: &[&str]| {
        generate()
            .arg("--model")
            .arg(parity_fixture("llama"))
            .args(["--prompt", "hi", "--max-tokens", "4", "--device", "cpu"])
            .args(extra)
            .output()
            .unwrap()
    };
    let gpt_oss = parity_fixture("gpt-oss");
    let out = run(&["--draft-model", gpt_oss.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--draft-model") && stderr.contains("tokenizer"),
        "{stderr}"
    );
    // A count without a draft model, and lookup with one, are usage errors.
    assert_eq!(run(&["--num-draft-tokens", "2"]).status.code(), Some(2));
    let q4 = parity_fixture("llama-q4");
    let both = run(&[
        "--draft-model",
        q4.to_str().unwrap(),
        "--prompt-lookup",
        "3",
    ]);
    assert_eq!(both.status.code(), Some(2));
    // A usable one generates.
    assert_success(&run(&[
        "--draft-model",
        q4.to_str().unwrap(),
        "--num-draft-tokens",
        "2",
    ]));
}

/// The same greedy answer from two tensor-parallel ranks (ring back end,
/// two processes here, each holding half of every attention and MLP layer)
/// as from one process.
fn two_ranks_answer_as_one(model: &std::path::Path) {
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "Name three colours.",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        "--device",
        "cpu",
    ];
    let one = generate().args(args).output().unwrap();
    assert_success(&one);
    let two = mlx_launch(
        2,
        std::path::Path::new(env!("CARGO_BIN_EXE_mlx-harmony-generate")),
    )
    .args(args)
    .args(["--tensor-parallel", "--verbose"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&two.stderr);
    assert!(two.status.success(), "{stderr}");
    // The group formed (only rank 0 speaks), so the answer is the sharded one.
    assert!(stderr.contains("tensor parallel: rank 0 of 2"), "{stderr}");
    assert!(!stderr.contains("rank 1"), "{stderr}");
    let (one, two) = (
        String::from_utf8_lossy(&one.stdout),
        String::from_utf8_lossy(&two.stdout),
    );
    assert!(one.trim().len() > 20, "{one:?}");
    assert_eq!(two, one);
}

#[test]
fn two_tensor_parallel_ranks_give_the_greedy_tokens_of_one_process_smollm2_gguf() {
    // SmolLM2's 3 key-value heads are shared 1 + 2.
    two_ranks_answer_as_one(&smollm2());
}

#[test]
fn two_tensor_parallel_ranks_give_the_greedy_tokens_of_one_process_gpt_oss() {
    two_ranks_answer_as_one(&parity_fixture("gpt-oss"));
}

#[test]
fn tensor_parallel_outside_a_launcher_says_how_to_start_one() {
    let out = generate()
        .args(["--model", "x", "--prompt", "y", "--tensor-parallel"])
        .env_remove("MLX_HOSTFILE")
        .env_remove("MLX_RANK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mlx.launch -n 2") && err.contains("--tensor-parallel"),
        "{err}"
    );
}
