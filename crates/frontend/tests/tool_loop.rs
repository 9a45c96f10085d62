//! The tool-call loop end to end, on a tiny GPT-OSS checkpoint whose sampler
//! plays back a scripted Harmony token stream: the model calls python, the
//! code really runs, its answer is rendered into the prompt as a Harmony tool
//! message, and the model goes on to its final answer, reusing the cache.

use std::path::{Path, PathBuf};

use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{GenerateOptions, TokenGenerator};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::sampling::Sampler;
use mlx_harmony_core::turn::{self, Turn, TurnEvent, TurnOptions};
use mlx_harmony_frontend::tools::Runner;
use mlx_harmony_tools::{PatchConfig, PythonConfig, ToolBox, ToolsConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

fn tokens(generator: &TokenGenerator, text: &str) -> Vec<u32> {
    generator.loaded.encode(text).unwrap()
}

fn decode(generator: &TokenGenerator, ids: &[u32]) -> String {
    generator.loaded.tokenizer.decode(ids, false).unwrap()
}

/// One turn with `tools` running the calls, at most `max_tool_calls` of them.
fn turn_with(
    generator: &mut TokenGenerator,
    setup: &PromptSetup,
    history: &[ChatMessage],
    sampler: &mut Sampler,
    tools: &mut ToolBox,
    max_tool_calls: usize,
    on_event: impl FnMut(TurnEvent),
) -> Turn {
    let options = TurnOptions {
        generation: GenerateOptions::new(200),
        max_tool_calls,
    };
    turn::turn(
        generator,
        setup,
        history,
        sampler,
        &options,
        Some(&mut Runner(tools)),
        on_event,
    )
    .unwrap()
}

fn setup(tools: &ToolBox) -> PromptSetup {
    PromptSetup {
        conversation_start_date: Some("2026-11-25".into()),
        builtin_tools: tools.builtin_namespaces(),
        functions: tools.functions(),
        ..PromptSetup::default()
    }
}

#[test]
fn python_is_called_run_rendered_and_the_model_goes_on() {
    let mut generator = TokenGenerator::load(&fixture("gpt-oss")).unwrap();
    let mut tools = ToolBox::new(ToolsConfig {
        python: Some(PythonConfig::default()),
        ..ToolsConfig::default()
    })
    .unwrap();
    let setup = setup(&tools);
    let call = "<|channel|>analysis<|message|>I should compute this.<|end|>\
                <|start|>assistant<|channel|>analysis to=python code<|message|>x = 6 * 7\nprint(x)<|call|>";
    let answer = "<|channel|>final<|message|>It is 42.<|return|>";
    let mut sampler =
        Sampler::scripted(vec![tokens(&generator, call), tokens(&generator, answer)]).unwrap();
    let history = vec![ChatMessage::new("user", "What is 6 times 7?")];
    let mut events = Vec::new();
    let turn = turn_with(
        &mut generator,
        &setup,
        &history,
        &mut sampler,
        &mut tools,
        4,
        |e| {
            if let TurnEvent::ToolResult { author, content } = e {
                events.push((author.to_string(), content.to_string()));
            }
        },
    );

    assert_eq!(events, [("python".to_string(), "42".to_string())]);
    assert_eq!(turn.messages.len(), 3, "{:#?}", turn.messages);
    let call = &turn.messages[0];
    assert_eq!(call.role, "assistant");
    assert_eq!(call.recipient.as_deref(), Some("python"));
    assert_eq!(call.channel.as_deref(), Some("analysis"));
    assert_eq!(call.content, "x = 6 * 7\nprint(x)");
    assert_eq!(
        call.reasoning_content.as_deref(),
        Some("I should compute this.")
    );
    let result = &turn.messages[1];
    assert_eq!(
        (
            result.role.as_str(),
            result.name.as_deref(),
            result.content.as_str()
        ),
        ("tool", Some("python"), "42")
    );
    assert_eq!(turn.messages[2].content, "It is 42.");
    assert_eq!(turn.pending_call, None);

    // The second prompt held the call and the tool's answer as Harmony, and
    // only its new tokens went through the model.
    let context = decode(&generator, generator.cached_tokens());
    assert!(context.contains("## python\n\n"), "{context}");
    assert!(
        context.contains(
            "<|start|>assistant<|channel|>analysis<|message|>I should compute this.<|end|>\
             <|start|>assistant<|channel|>analysis to=python code<|message|>x = 6 * 7\nprint(x)<|call|>\
             <|start|>python to=assistant<|channel|>commentary<|message|>42<|end|>\
             <|start|>assistant"
        ),
        "{context}"
    );
    let first = &turn.generations[0];
    let second = &turn.generations[1];
    // The continuation is the first prompt, the model's own tokens and the
    // tool message: everything before the tool message came from the cache.
    assert!(
        second.cached_tokens >= first.prompt_tokens + first.tokens.len(),
        "{} cached, {} + {} before",
        second.cached_tokens,
        first.prompt_tokens,
        first.tokens.len()
    );

    // The session keeps its variables into the next turn.
    let mut history = history;
    history.extend(turn.messages);
    history.push(ChatMessage::new("user", "And x + 1?"));
    let call = "<|channel|>analysis to=python code<|message|>x + 1<|call|>";
    let mut sampler =
        Sampler::scripted(vec![tokens(&generator, call), tokens(&generator, answer)]).unwrap();
    let turn = turn_with(
        &mut generator,
        &setup,
        &history,
        &mut sampler,
        &mut tools,
        4,
        |_| {},
    );
    assert_eq!(turn.messages[1].content, "43");
}

#[test]
fn apply_patch_is_a_function_and_the_call_limit_holds() {
    let mut generator = TokenGenerator::load(&fixture("gpt-oss")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut tools = ToolBox::new(ToolsConfig {
        apply_patch: Some(PatchConfig {
            root: root.path().to_path_buf(),
            dry_run: false,
        }),
        ..ToolsConfig::default()
    })
    .unwrap();
    let setup = setup(&tools);
    let patch = serde_json::json!({"patch": "*** Begin Patch\n*** Add File: hello.txt\n+Hello\n*** End Patch"});
    let call = format!(
        "<|channel|>commentary to=functions.apply_patch <|constrain|>json<|message|>{patch}<|call|>"
    );
    let done = "<|channel|>final<|message|>Created hello.txt.<|return|>";
    let history = vec![ChatMessage::new("user", "Make hello.txt")];

    // Limit 0: the call is returned unrun.
    let mut sampler = Sampler::scripted(vec![tokens(&generator, &call)]).unwrap();
    let turn = turn_with(
        &mut generator,
        &setup,
        &history,
        &mut sampler,
        &mut tools,
        0,
        |_| {},
    );
    assert!(turn.hit_call_limit);
    assert_eq!(turn.pending_call.as_deref(), Some("functions.apply_patch"));
    assert_eq!(turn.messages.len(), 1);
    assert!(!root.path().join("hello.txt").exists());

    let mut sampler =
        Sampler::scripted(vec![tokens(&generator, &call), tokens(&generator, done)]).unwrap();
    let turn = turn_with(
        &mut generator,
        &setup,
        &history,
        &mut sampler,
        &mut tools,
        1,
        |_| {},
    );
    assert_eq!(turn.messages.len(), 3);
    assert_eq!(
        turn.messages[1].name.as_deref(),
        Some("functions.apply_patch")
    );
    assert!(
        turn.messages[1].content.contains("A hello.txt"),
        "{}",
        turn.messages[1].content
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("hello.txt")).unwrap(),
        "Hello\n"
    );
    let context = decode(&generator, generator.cached_tokens());
    assert!(context.contains("type apply_patch = (_: {"), "{context}");
    assert!(
        context.contains("<|start|>functions.apply_patch to=assistant<|channel|>commentary<|message|>Patch applied."),
        "{context}"
    );

    // A call to a tool that is not enabled is left to the caller.
    let other =
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{}<|call|>";
    let mut sampler = Sampler::scripted(vec![tokens(&generator, other)]).unwrap();
    let turn = turn_with(
        &mut generator,
        &setup,
        &history,
        &mut sampler,
        &mut tools,
        4,
        |_| {},
    );
    assert_eq!(turn.pending_call.as_deref(), Some("functions.get_weather"));
    assert!(!turn.hit_call_limit);
}
