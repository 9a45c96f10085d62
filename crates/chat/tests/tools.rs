//! Tools in a chat: a GPT-OSS turn that calls python shows the call and the
//! result in the transcript, records both in the conversation file (tool
//! message with name and recipient, per-turn settings), and a resumed
//! conversation renders them back as Harmony. The tiny checkpoint's sampler
//! plays back a scripted reply, so no trained weights are needed.

use std::path::{Path, PathBuf};

use mlx_harmony_chat::{Session, Style, to_chat_history};
use mlx_harmony_config::conversation::Conversation;
use mlx_harmony_core::generate::TokenGenerator;
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::sampling::Sampler;
use mlx_harmony_tools::{PatchConfig, PythonConfig, ToolBox, ToolsConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

fn session(dir: &Path) -> Session {
    let model = fixture("gpt-oss");
    let tools = ToolBox::new(ToolsConfig {
        python: Some(PythonConfig::default()),
        apply_patch: Some(PatchConfig {
            root: dir.to_path_buf(),
            dry_run: false,
        }),
        ..ToolsConfig::default()
    })
    .unwrap();
    let mut conversation = Conversation::new(Some(model.display().to_string()), None);
    conversation.metadata.tools = tools.names();
    Session {
        generator: TokenGenerator::load(&model).unwrap(),
        model_spec: model.display().to_string(),
        prompt_config: None,
        prompt_config_path: None,
        instructions: None,
        overrides: Default::default(),
        generation_config: None,
        restored: Default::default(),
        conversation,
        save_path: Some(dir.join("chat.json")),
        effort: None,
        show_reasoning: true,
        debug: false,
        verbose: false,
        profiles_file: dir.join("profiles.json"),
        style: Style { color: false },
        tools: Some(tools),
        max_tool_calls: 4,
        output: None,
        prompt_lookup: 0,
    }
}

#[test]
fn a_python_call_is_run_shown_saved_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = session(dir.path());
    let encode = |s: &Session, text: &str| s.generator.loaded.encode(text).unwrap();
    let call = "<|channel|>analysis<|message|>Compute it.<|end|>\
                <|start|>assistant<|channel|>analysis to=python code<|message|>print(2 ** 10)<|call|>";
    let answer = "<|channel|>final<|message|>It is 1024.<|return|>";
    let sampler =
        Sampler::scripted(vec![encode(&session, call), encode(&session, answer)]).unwrap();
    let mut out = Vec::new();
    session
        .turn_with("What is 2 to the 10th?", sampler, &mut out)
        .unwrap();
    let transcript = String::from_utf8(out).unwrap();
    assert_eq!(
        transcript,
        "[analysis] Compute it.\n[call python]\nprint(2 ** 10)\n[python answered]\n1024\nIt is 1024.\n"
    );

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("chat.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["metadata"]["tools"],
        serde_json::json!(["python", "apply_patch"])
    );
    let messages = saved["messages"].as_array().unwrap();
    let shape: Vec<(String, String, String, String)> = messages
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap_or("").to_string();
            (
                field("role"),
                field("channel"),
                field("recipient"),
                field("name"),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
    assert_eq!(
        shape,
        [
            s("user", "", "", ""),
            s("assistant", "analysis", "", ""),
            s("assistant", "analysis", "python", ""),
            s("tool", "commentary", "assistant", "python"),
            s("assistant", "final", "", ""),
        ]
    );
    assert_eq!(messages[3]["content"], "1024");
    assert!(messages[3]["hyperparameters"]["temperature"].is_number());

    // Resumed: the call and its result render back as Harmony messages.
    let loaded = Conversation::load(dir.path().join("chat.json")).unwrap();
    let mut history = to_chat_history(&loaded.conversation.messages);
    history.push(mlx_harmony_core::chat_template::ChatMessage::new(
        "user", "Thanks",
    ));
    let setup = PromptSetup {
        builtin_tools: session.tools.as_ref().unwrap().builtin_namespaces(),
        ..PromptSetup::default()
    };
    let prompt = session
        .generator
        .loaded
        .conversation_tokens(&setup, &history)
        .unwrap();
    let text = session
        .generator
        .loaded
        .tokenizer
        .decode(&prompt, false)
        .unwrap();
    assert!(
        text.contains("<|start|>python to=assistant<|channel|>commentary<|message|>1024<|end|>"),
        "{text}"
    );
    // As openai-harmony renders it: once the turn has a final answer, its
    // analysis-channel messages (this call among them) are dropped.
    assert!(!text.contains("print(2 ** 10)<|call|>"), "{text}");
    assert!(
        text.contains("<|channel|>final<|message|>It is 1024.<|end|>"),
        "{text}"
    );
}

#[test]
fn the_tools_command_and_python_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = session(dir.path());
    let mut out = Vec::new();
    let parse = |s: &str| mlx_harmony_chat::Command::parse(s).unwrap().unwrap();
    session.command(parse("\\tools"), &mut out).unwrap();
    session.command(parse("\\python reset"), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("python: "), "{text}");
    assert!(text.contains("apply_patch: writes files under"), "{text}");
    assert!(text.contains("python session restarted"), "{text}");
    assert!(
        mlx_harmony_chat::Command::parse("\\python start")
            .unwrap()
            .is_err()
    );
}
