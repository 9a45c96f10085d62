//! Prompts from conversations: what goes before the history ([`PromptSetup`]:
//! identity, instructions, tools, examples) and how a whole chat history
//! becomes the model's input: Harmony messages for GPT-OSS, the messages
//! and tool declarations a chat template takes otherwise.
//! [`crate::loaded::LoadedModel::conversation_tokens`] turns them into tokens.

use mlx_harmony_format::model::{
    Author, DeveloperContent, Message as HarmonyMessage, ReasoningEffort, Role, SystemContent,
    ToolDescription, ToolNamespaceConfig,
};
use mlx_harmony_format::{HarmonyEncoding, RenderConfig};

use crate::chat_template::ChatMessage;
use crate::{Error, Result};

/// What goes before the conversation: who the model is, how it should
/// behave, which tools it has, and example exchanges (from the prompt config
/// and the command line).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptSetup {
    pub model_identity: Option<String>,
    pub knowledge_cutoff: Option<String>,
    pub conversation_start_date: Option<String>,
    pub reasoning_effort: Option<ReasoningEffort>,
    pub instructions: Option<String>,
    /// Few-shot exchanges placed before the conversation.
    pub examples: Vec<Vec<ChatMessage>>,
    /// Functions the model may call (Harmony: the developer message's
    /// `functions` namespace; templates: their `tools` variable).
    pub functions: Vec<ToolDescription>,
    /// Harmony's built-in tools (`browser`, `python`), declared in the system message.
    pub builtin_tools: Vec<ToolNamespaceConfig>,
    /// Harmony only: the turn's first reply begins as a call to one of
    /// `functions` (OpenAI's `tool_choice` "required" or a named function).
    pub forced_call: Option<ForcedCall>,
}

/// Which call a reply is made to begin with.
#[derive(Clone, Debug, PartialEq)]
pub enum ForcedCall {
    /// One of the declared functions; the model picks which.
    AnyFunction,
    /// This function (its name, without the `functions.` namespace).
    Function(String),
}

/// The header that opens a reply as a forced call: a commentary message to
/// `functions.NAME` (or to `functions.`, the model writing the name), which
/// the model then continues with its arguments. The model gets no analysis
/// message before such a call.
pub fn forced_call_header(forced: &ForcedCall) -> String {
    match forced {
        ForcedCall::AnyFunction => "commentary to=functions.".to_string(),
        ForcedCall::Function(name) => format!("commentary to=functions.{name}"),
    }
}

/// A chat template's messages and `tools` for a conversation: identity and
/// instructions as the system message (which system messages of the
/// history join), then the examples and the history; the functions as
/// OpenAI-style tool definitions.
pub(crate) fn template_messages(
    setup: &PromptSetup,
    history: &[ChatMessage],
) -> (Vec<ChatMessage>, Vec<serde_json::Value>) {
    let mut system: Vec<String> = [&setup.model_identity, &setup.instructions]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let mut messages = Vec::new();
    for message in setup.examples.iter().flatten().chain(history) {
        // System messages in the history join the one at the top:
        // several templates accept a system message only first.
        if message.role == "system" || message.role == "developer" {
            system.push(message.content.clone());
        } else {
            messages.push(message.clone());
        }
    }
    if !system.is_empty() {
        messages.insert(0, ChatMessage::new("system", system.join("\n\n")));
    }
    let tools: Vec<serde_json::Value> = setup
        .functions
        .iter()
        .map(|f| {
            serde_json::json!({
                "type": "function",
                "function": {
                    "name": f.name,
                    "description": f.description,
                    "parameters": f.parameters.clone().unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                }
            })
        })
        .collect();
    (messages, tools)
}

/// The Harmony prompt of a conversation for GPT-OSS: a system message
/// (identity, dates, effort, built-in tools), a developer message
/// (instructions, functions), the examples, then the history; an assistant
/// message's `reasoning_content` becomes its analysis message (dropped again
/// by Harmony once a later answer is final), a message with a `recipient` is
/// a tool call, and a `tool` message is the tool's answer.
pub(crate) fn harmony_tokens(
    harmony: &HarmonyEncoding,
    setup: &PromptSetup,
    history: &[ChatMessage],
) -> Result<Vec<u32>> {
    let mut system = SystemContent::default();
    if let Some(identity) = &setup.model_identity {
        system = system.with_model_identity(identity.clone());
    }
    if let Some(cutoff) = &setup.knowledge_cutoff {
        system = system.with_knowledge_cutoff(cutoff.clone());
    }
    if let Some(date) = &setup.conversation_start_date {
        system = system.with_conversation_start_date(date.clone());
    }
    if let Some(effort) = setup.reasoning_effort {
        system = system.with_reasoning_effort(effort);
    }
    for namespace in &setup.builtin_tools {
        system = system.with_tools(namespace.clone());
    }
    // Instructions: the setup's, then any system/developer messages of the history.
    let mut instructions: Vec<String> = setup.instructions.iter().cloned().collect();
    instructions.extend(
        history
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer")
            .map(|m| m.content.clone()),
    );
    let mut messages = vec![HarmonyMessage::system(system)];
    if !instructions.is_empty() || !setup.functions.is_empty() {
        let mut developer = DeveloperContent::default();
        if !instructions.is_empty() {
            developer = developer.with_instructions(instructions.join("\n\n"));
        }
        if !setup.functions.is_empty() {
            developer = developer.with_function_tools(setup.functions.clone());
        }
        messages.push(HarmonyMessage::developer(developer));
    }
    for message in setup.examples.iter().flatten().chain(history) {
        messages.extend(to_harmony(message, history)?);
    }
    harmony
        .render_conversation_for_completion(&messages, Role::Assistant, RenderConfig::default())
        .map_err(|e| Error::Invalid(format!("Harmony: {e}")))
}

/// One history message as Harmony messages (none for system/developer ones,
/// which go into the developer message).
pub(crate) fn to_harmony(
    message: &ChatMessage,
    history: &[ChatMessage],
) -> Result<Vec<HarmonyMessage>> {
    let mut out = Vec::new();
    match message.role.as_str() {
        "system" | "developer" => {}
        "user" => out.push(HarmonyMessage::text(Role::User, message.content.clone())),
        "assistant" => {
            if let Some(reasoning) = message
                .reasoning_content
                .as_deref()
                .filter(|r| !r.is_empty())
            {
                out.push(HarmonyMessage::text(Role::Assistant, reasoning).with_channel("analysis"));
            }
            if let Some(recipient) = &message.recipient {
                let mut call = HarmonyMessage::text(Role::Assistant, message.content.clone())
                    .with_channel(message.channel.as_deref().unwrap_or("commentary"))
                    .with_recipient(recipient.clone());
                if let Some(content_type) = &message.content_type {
                    call = call.with_content_type(content_type.clone());
                }
                out.push(call);
            }
            // OpenAI-style calls (from the server): functions namespace, JSON arguments.
            for call in &message.tool_calls {
                let arguments = match &call.function.arguments {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push(
                    HarmonyMessage::text(Role::Assistant, arguments)
                        .with_channel("commentary")
                        .with_recipient(format!("functions.{}", call.function.name))
                        .with_content_type("<|constrain|>json"),
                );
            }
            if message.recipient.is_none()
                && (message.tool_calls.is_empty() || !message.content.is_empty())
            {
                out.push(
                    HarmonyMessage::text(Role::Assistant, message.content.clone())
                        .with_channel(message.channel.as_deref().unwrap_or("final")),
                );
            }
        }
        "tool" => {
            // The tool's name: given, or found from the call this answers.
            let name = message
                .name
                .clone()
                .or_else(|| {
                    let id = message.tool_call_id.as_deref()?;
                    history
                        .iter()
                        .flat_map(|m| &m.tool_calls)
                        .find(|c| c.id == id)
                        .map(|c| format!("functions.{}", c.function.name))
                })
                .ok_or_else(|| {
                    Error::Invalid(
                        "a tool message needs the tool's name (or a tool_call_id of an earlier call)"
                            .into(),
                    )
                })?;
            let name = if name.contains('.') || name == "python" {
                name
            } else {
                format!("functions.{name}")
            };
            out.push(
                HarmonyMessage::text(Author::new(Role::Tool, name), message.content.clone())
                    .with_channel(message.channel.as_deref().unwrap_or("commentary"))
                    .with_recipient("assistant"),
            );
        }
        other => {
            return Err(Error::Invalid(format!(
                "unknown message role {other:?}: expected system, developer, user, assistant or tool"
            )));
        }
    }
    Ok(out)
}

/// The tool message that answers a call: author the tool, addressed to the
/// assistant, on the commentary channel (as GPT-OSS was trained).
pub fn tool_message(author: &str, content: &str) -> ChatMessage {
    let mut message = ChatMessage::new("tool", content);
    message.name = Some(author.to_string());
    message.recipient = Some("assistant".to_string());
    message.channel = Some("commentary".to_string());
    message
}
