//! Whole conversations: the prompt config's setup (identity, instructions,
//! examples, greeting), multi-turn histories with reasoning and tool calls in
//! Harmony and through chat templates, and replies split into answer,
//! reasoning and tool-call events.

use std::path::{Path, PathBuf};

use mlx_harmony_config::prompt_config::PromptConfig;
use mlx_harmony_core::chat_template::{ChatMessage, FunctionCall, ToolCall};
use mlx_harmony_core::generate::GenerateOptions;
use mlx_harmony_core::generate::{LoadedModel, TokenGenerator};
use mlx_harmony_core::reply::{self, ReplyEvent};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
use mlx_harmony_format::RenderConfig;
use mlx_harmony_format::model::{
    Author, DeveloperContent, Message, ReasoningEffort, Role, SystemContent, ToolDescription,
};
use mlx_harmony_frontend::setup::{greeting, prompt_setup};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

const CONFIG: &str = r#"{
  "system_model_identity": "You are {assistant}.",
  "reasoning_effort": "high",
  "conversation_start_date": "2026-11-25",
  "developer_instructions": "Call the user {user}.",
  "assistant_greeting": "Hello {user}, I'm {assistant}.",
  "example_dialogues": [[
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I'm {assistant}, {user}."}
  ]],
  "placeholders": {"assistant": "Dave", "user": "Morgan"}
}"#;

fn config() -> PromptConfig {
    PromptConfig::from_json_str(CONFIG, "test.json").unwrap()
}

#[test]
fn the_prompt_config_gives_identity_instructions_examples_and_greeting() {
    let config = config();
    let setup = prompt_setup(Some(&config), None, true);
    assert_eq!(setup.model_identity.as_deref(), Some("You are Dave."));
    assert_eq!(setup.instructions.as_deref(), Some("Call the user Morgan."));
    assert_eq!(setup.reasoning_effort, Some(ReasoningEffort::High));
    assert_eq!(
        setup.examples,
        vec![vec![
            ChatMessage::new("user", "Who are you?"),
            ChatMessage::new("assistant", "I'm Dave, Morgan."),
        ]]
    );
    assert_eq!(
        greeting(&config).as_deref(),
        Some("Hello Morgan, I'm Dave.")
    );
    // --system replaces the config's instructions.
    let overridden = prompt_setup(Some(&config), Some("Be brief."), true);
    assert_eq!(overridden.instructions.as_deref(), Some("Be brief."));
    // GPT-OSS gets today's date when the config gives none; other models do not.
    let bare = prompt_setup(None, None, true);
    assert!(bare.conversation_start_date.is_some());
    assert!(
        prompt_setup(None, None, false)
            .conversation_start_date
            .is_none()
    );
}

#[test]
fn a_harmony_conversation_with_reasoning_and_a_tool_call_renders_as_harmony_messages() {
    let model = LoadedModel::load(&fixture("gpt-oss")).unwrap();
    let harmony = model.harmony.clone().unwrap();
    let mut setup = prompt_setup(Some(&config()), None, true);
    let weather = ToolDescription::new(
        "get_weather",
        "The weather in a city.",
        Some(serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}})),
    );
    setup.functions = vec![weather.clone()];
    let mut answer = ChatMessage::new("assistant", "Seven.");
    answer.reasoning_content = Some("Small primes: 2, 3, 5, 7.".into());
    let mut call = ChatMessage::new("assistant", r#"{"city":"Paris"}"#);
    call.recipient = Some("functions.get_weather".into());
    call.channel = Some("commentary".into());
    call.content_type = Some("<|constrain|>json".into());
    let mut result = ChatMessage::new("tool", r#"{"temperature":21}"#);
    result.name = Some("functions.get_weather".into());
    let history = [
        ChatMessage::new("user", "A prime above five?"),
        answer,
        ChatMessage::new("user", "Weather in Paris?"),
        call,
        result,
    ];
    let ours = model.conversation_tokens(&setup, &history).unwrap();

    let system = SystemContent::default()
        .with_model_identity("You are Dave.")
        .with_reasoning_effort(ReasoningEffort::High)
        .with_conversation_start_date("2026-11-25");
    let developer = DeveloperContent::default()
        .with_instructions("Call the user Morgan.")
        .with_function_tools(vec![weather]);
    let messages = [
        Message::system(system),
        Message::developer(developer),
        Message::text(Role::User, "Who are you?"),
        Message::text(Role::Assistant, "I'm Dave, Morgan.").with_channel("final"),
        Message::text(Role::User, "A prime above five?"),
        Message::text(Role::Assistant, "Small primes: 2, 3, 5, 7.").with_channel("analysis"),
        Message::text(Role::Assistant, "Seven.").with_channel("final"),
        Message::text(Role::User, "Weather in Paris?"),
        Message::text(Role::Assistant, r#"{"city":"Paris"}"#)
            .with_channel("commentary")
            .with_recipient("functions.get_weather")
            .with_content_type("<|constrain|>json"),
        Message::text(
            Author::new(Role::Tool, "functions.get_weather"),
            r#"{"temperature":21}"#,
        )
        .with_channel("commentary")
        .with_recipient("assistant"),
    ];
    let expected = harmony
        .render_conversation_for_completion(&messages, Role::Assistant, RenderConfig::default())
        .unwrap();
    assert_eq!(harmony.decode_lossy(&ours), harmony.decode_lossy(&expected));
    assert_eq!(ours, expected);
    // An OpenAI-style call (tool_calls + tool_call_id) renders the same.
    let mut openai_call = ChatMessage::new("assistant", "");
    openai_call.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "get_weather".into(),
            arguments: serde_json::json!({"city": "Paris"}),
        },
    }];
    let mut openai_result = ChatMessage::new("tool", r#"{"temperature":21}"#);
    openai_result.tool_call_id = Some("call_1".into());
    let mut openai_history = history[..3].to_vec();
    openai_history.extend([openai_call, openai_result]);
    assert_eq!(
        model.conversation_tokens(&setup, &openai_history).unwrap(),
        expected
    );
    // A tool message that names no tool is refused, not guessed.
    let mut orphan = openai_history.clone();
    orphan[4].tool_call_id = Some("call_unknown".into());
    let error = model.conversation_tokens(&setup, &orphan).unwrap_err();
    assert!(error.to_string().contains("tool's name"), "{error}");
}

#[test]
fn template_conversations_put_identity_instructions_and_examples_first() {
    let model = LoadedModel::load(&fixture("llama")).unwrap();
    let setup = prompt_setup(Some(&config()), None, false);
    let history = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("system", "Answer in French."),
        ChatMessage::new("user", "Bye"),
    ];
    let ours = model.conversation_tokens(&setup, &history).unwrap();
    let expected = model
        .render(&[
            ChatMessage::new(
                "system",
                "You are Dave.\n\nCall the user Morgan.\n\nAnswer in French.",
            ),
            ChatMessage::new("user", "Who are you?"),
            ChatMessage::new("assistant", "I'm Dave, Morgan."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ])
        .unwrap();
    assert_eq!(ours, model.encode(&expected).unwrap());
}

#[test]
fn harmony_replies_stream_as_events_that_add_up_to_the_message() {
    let mut generator = TokenGenerator::load(&fixture("gpt-oss")).unwrap();
    let setup = prompt_setup(Some(&config()), None, true);
    let prompt = generator
        .loaded
        .conversation_tokens(&setup, &[ChatMessage::new("user", "Hi")])
        .unwrap();
    for seed in 0..4 {
        let mut sampler = Sampler::new(SamplingSettings {
            temperature: 1.0,
            seed: Some(seed),
            ..Default::default()
        })
        .unwrap();
        let mut answer = String::new();
        let mut streamed_reasoning = String::new();
        let reply = reply::reply(
            &mut generator,
            &prompt,
            &mut sampler,
            &GenerateOptions::new(24),
            |event| match event {
                ReplyEvent::Answer(text) => answer.push_str(text),
                ReplyEvent::Reasoning { text, .. } | ReplyEvent::ToolCall { text, .. } => {
                    streamed_reasoning.push_str(text)
                }
            },
        )
        .unwrap();
        assert_eq!(reply.message.role, "assistant");
        assert_eq!(answer, reply.message.content, "seed {seed}");
        let reasoning = reply.message.reasoning_content.clone().unwrap_or_default();
        assert_eq!(
            reasoning.replace('\n', ""),
            streamed_reasoning.replace('\n', ""),
            "seed {seed}"
        );
        assert!(reply.generation.tokens.len() <= 24);
    }
}
