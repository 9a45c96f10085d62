//! Conversations: rendering a whole chat history into prompt tokens (Harmony
//! for GPT-OSS, the model's chat template otherwise) and turning the model's
//! output back into an assistant message, streamed as answer, reasoning and
//! tool-call events. Chat, generate and the server all go through here.

use mlx_harmony_config::prompt_config::{self, PromptConfig};
use mlx_harmony_format::model::{
    Author, DeveloperContent, Message as HarmonyMessage, ReasoningEffort, Role, SystemContent,
    ToolDescription, ToolNamespaceConfig,
};
use mlx_harmony_format::{RenderConfig, Special, StreamParser};

use crate::chat_template::ChatMessage;
use crate::generate::{Generation, LoadedModel, TokenGenerator};
use crate::sampling::Sampler;
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

impl PromptSetup {
    /// The prompt config's identity, dates, reasoning effort, instructions
    /// and example dialogues, placeholders expanded; `instructions` (e.g.
    /// `--system`) replaces the config's developer instructions. GPT-OSS
    /// models are given today's date when the config sets none.
    pub fn from_prompt_config(
        config: Option<&PromptConfig>,
        instructions: Option<&str>,
        harmony: bool,
    ) -> Self {
        let expanded = config.map(|c| c.expanded(&c.clock()).config);
        let field =
            |f: fn(&PromptConfig) -> &Option<String>| expanded.as_ref().and_then(|c| f(c).clone());
        let mut setup = PromptSetup {
            model_identity: field(|c| &c.system_model_identity),
            knowledge_cutoff: field(|c| &c.knowledge_cutoff),
            conversation_start_date: field(|c| &c.conversation_start_date),
            reasoning_effort: expanded
                .as_ref()
                .and_then(|c| c.reasoning_effort)
                .map(effort_from_config),
            instructions: instructions
                .map(str::to_string)
                .or_else(|| field(|c| &c.developer_instructions)),
            examples: expanded
                .as_ref()
                .map(|c| {
                    c.example_dialogues
                        .iter()
                        .map(|dialogue| {
                            dialogue
                                .iter()
                                .map(|m| ChatMessage::new(&m.role, &m.content))
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default(),
            functions: Vec::new(),
            builtin_tools: Vec::new(),
            forced_call: None,
        };
        if harmony && setup.conversation_start_date.is_none() {
            setup.conversation_start_date =
                Some(chrono::Local::now().format("%Y-%m-%d").to_string());
        }
        setup
    }
}

/// The config crate's effort as Harmony's.
pub fn effort_from_config(effort: prompt_config::ReasoningEffort) -> ReasoningEffort {
    match effort {
        prompt_config::ReasoningEffort::Low => ReasoningEffort::Low,
        prompt_config::ReasoningEffort::Medium => ReasoningEffort::Medium,
        prompt_config::ReasoningEffort::High => ReasoningEffort::High,
    }
}

/// The assistant greeting of a prompt config, placeholders expanded.
pub fn greeting(config: &PromptConfig) -> Option<String> {
    config
        .expanded(&config.clock())
        .config
        .assistant_greeting
        .filter(|g| !g.trim().is_empty())
}

impl LoadedModel {
    /// The prompt's token ids for one user message (see
    /// [`LoadedModel::conversation_tokens`]).
    pub fn prompt_tokens(&self, setup: &PromptSetup, user: &str) -> Result<Vec<u32>> {
        self.conversation_tokens(setup, &[ChatMessage::new("user", user)])
    }

    /// The prompt's token ids for a conversation, ending where the
    /// assistant's next message starts.
    ///
    /// GPT-OSS: a Harmony system message (identity, dates, effort, built-in
    /// tools), a developer message (instructions, functions), the examples,
    /// then the history; an assistant message's `reasoning_content` becomes
    /// its analysis message (dropped again by Harmony once a later answer is
    /// final), a message with a `recipient` is a tool call, and a `tool`
    /// message is the tool's answer. Other models: the chat template, with
    /// identity and instructions as the system message.
    pub fn conversation_tokens(
        &self,
        setup: &PromptSetup,
        history: &[ChatMessage],
    ) -> Result<Vec<u32>> {
        if self.harmony.is_some() {
            return self.harmony_tokens(setup, history);
        }
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
            messages.insert(0, ChatMessage::new("system", &system.join("\n\n")));
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
        let text = self.render_with_tools(&messages, &tools)?;
        self.encode(&text)
    }

    /// The tokens that open the reply as the call `setup.forced_call` asks
    /// for: the header of a commentary message to `functions.NAME` (or to
    /// `functions.`, the model writing the name), which the model then
    /// continues with its arguments. Empty when no call is forced. The model
    /// gets no analysis message before such a call.
    pub fn forced_call_tokens(&self, setup: &PromptSetup) -> Result<Vec<u32>> {
        let Some(forced) = &setup.forced_call else {
            return Ok(Vec::new());
        };
        let Some(harmony) = &self.harmony else {
            return Err(Error::Invalid(
                "only GPT-OSS (Harmony) models can be made to call a tool; \
                 other models' chat templates cannot: let the model choose"
                    .into(),
            ));
        };
        let header = match forced {
            ForcedCall::AnyFunction => "commentary to=functions.".to_string(),
            ForcedCall::Function(name) => format!("commentary to=functions.{name}"),
        };
        let mut tokens = vec![harmony.special(Special::Channel)];
        tokens.extend(self.encode(&header)?);
        Ok(tokens)
    }

    fn harmony_tokens(&self, setup: &PromptSetup, history: &[ChatMessage]) -> Result<Vec<u32>> {
        let harmony = self.harmony.as_ref().expect("checked by the caller");
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
}

/// One history message as Harmony messages (none for system/developer ones,
/// which go into the developer message).
fn to_harmony(message: &ChatMessage, history: &[ChatMessage]) -> Result<Vec<HarmonyMessage>> {
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

/// A piece of the reply as it streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplyEvent<'a> {
    /// Text of the answer (Harmony: the final channel).
    Answer(&'a str),
    /// Reasoning or a tool-call preamble (Harmony: analysis and commentary
    /// channels), with its channel.
    Reasoning { channel: &'a str, text: &'a str },
    /// Arguments of a tool call being written, with the tool it is for.
    ToolCall { recipient: &'a str, text: &'a str },
}

/// The assistant's reply: the message to append to the history, and what
/// generating it took.
#[derive(Clone, Debug)]
pub struct Reply {
    /// `content` the answer (or a tool call's arguments), `reasoning_content`
    /// the reasoning; a tool call has `recipient`, `channel`, `content_type`.
    pub message: ChatMessage,
    pub generation: Generation,
}

impl Reply {
    /// The tool the reply calls, if it ends in a tool call.
    pub fn tool_call(&self) -> Option<&str> {
        self.message.recipient.as_deref()
    }
}

impl TokenGenerator {
    /// Generates the assistant's reply to `prompt` (from
    /// [`LoadedModel::conversation_tokens`]), streaming it to `on_event`.
    /// Harmony output is split by channel; a GPT-OSS tool call ends the
    /// reply (its `<|call|>` token) with the call in the returned message.
    pub fn reply(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        max_tokens: usize,
        stop: &[String],
        on_event: impl FnMut(ReplyEvent),
    ) -> Result<Reply> {
        self.reply_opened(prompt, 0, sampler, max_tokens, stop, on_event)
    }

    /// [`TokenGenerator::reply`] where the last `opened` tokens of `prompt`
    /// already begin the reply (a forced call's header): the parser reads
    /// them as the model's own.
    fn reply_opened(
        &mut self,
        prompt: &[u32],
        opened: usize,
        sampler: &mut Sampler,
        max_tokens: usize,
        stop: &[String],
        mut on_event: impl FnMut(ReplyEvent),
    ) -> Result<Reply> {
        let Some(encoding) = self.loaded.harmony.clone() else {
            let generation =
                self.generate_until(prompt, sampler, max_tokens, stop, |_, piece| {
                    if !piece.is_empty() {
                        on_event(ReplyEvent::Answer(piece))
                    }
                })?;
            let message = ChatMessage::new("assistant", &generation.text);
            return Ok(Reply {
                message,
                generation,
            });
        };
        let mut parser = StreamParser::new(&encoding, Some(Role::Assistant));
        for &id in &prompt[prompt.len() - opened..] {
            parser.process(id);
        }
        let generation = self.generate_until(prompt, sampler, max_tokens, stop, |id, _| {
            parser.process(id);
            let Some(delta) = parser.last_content_delta().filter(|d| !d.is_empty()) else {
                return;
            };
            let channel = parser.current_channel().unwrap_or("analysis");
            match parser.current_recipient() {
                Some(recipient) if recipient != "assistant" => on_event(ReplyEvent::ToolCall {
                    recipient,
                    text: delta,
                }),
                _ if channel == "final" => on_event(ReplyEvent::Answer(delta)),
                _ => on_event(ReplyEvent::Reasoning {
                    channel,
                    text: delta,
                }),
            }
        })?;
        // The end-of-turn token is not passed on; the parser still needs it
        // to close the last message.
        parser.finish();
        let mut message = ChatMessage::new("assistant", "");
        let mut reasoning = String::new();
        for parsed in parser.messages() {
            let m = &parsed.message;
            let text = m.text_content();
            if parsed.irregular.is_some() {
                // Output the parser could not structure is still the
                // model's: keep it in the answer rather than drop it.
                if !text.is_empty() {
                    on_event(ReplyEvent::Answer(&text));
                    message.content.push_str(&text);
                }
                continue;
            }
            match (&m.recipient, m.channel.as_deref()) {
                (Some(recipient), channel) if recipient != "assistant" => {
                    message.recipient = Some(recipient.clone());
                    message.channel = channel.map(str::to_string);
                    message.content_type = m.content_type.clone();
                    message.content = text;
                }
                (_, Some("final")) => message.content.push_str(&text),
                _ => {
                    if !reasoning.is_empty() {
                        reasoning.push('\n');
                    }
                    reasoning.push_str(&text);
                }
            }
        }
        if !reasoning.is_empty() {
            message.reasoning_content = Some(reasoning);
        }
        Ok(Reply {
            message,
            generation,
        })
    }
}

/// A piece of a turn as it happens: the model's reply streaming, or a tool's
/// answer once it has run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TurnEvent<'a> {
    Reply(ReplyEvent<'a>),
    /// A tool ran; `author` is the tool (`python`, `browser.search`, ...).
    ToolResult {
        author: &'a str,
        content: &'a str,
    },
}

/// Everything one user turn added: the assistant's messages (tool calls and
/// the answer) and the tools' answers, in order.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    pub messages: Vec<ChatMessage>,
    /// One per model reply.
    pub generations: Vec<Generation>,
    /// The turn ended on a tool call that was not run: a tool that is not
    /// enabled here (the caller's to answer), or the call limit.
    pub pending_call: Option<String>,
    pub hit_call_limit: bool,
}

impl Turn {
    /// The last reply's generation (its stats and how it ended).
    pub fn last_generation(&self) -> Option<&Generation> {
        self.generations.last()
    }
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

impl TokenGenerator {
    /// One user turn: replies, and while a reply calls one of `tools`, runs
    /// it, adds its answer and lets the model go on, at most
    /// `max_tool_calls` times. Each new prompt extends the previous one, so
    /// the prompt cache makes the continuation cheap.
    #[allow(clippy::too_many_arguments)]
    pub fn turn(
        &mut self,
        setup: &PromptSetup,
        history: &[ChatMessage],
        sampler: &mut Sampler,
        max_tokens: usize,
        stop: &[String],
        mut tools: Option<&mut mlx_harmony_tools::ToolBox>,
        max_tool_calls: usize,
        mut on_event: impl FnMut(TurnEvent),
    ) -> Result<Turn> {
        let mut turn = Turn::default();
        let mut conversation = history.to_vec();
        let mut calls = 0;
        let mut prompt = self.loaded.conversation_tokens(setup, &conversation)?;
        let forced = self.loaded.forced_call_tokens(setup)?;
        prompt.extend(&forced);
        // Only the first reply is forced; the prompts after it extend this one.
        let mut opened = forced.len();
        loop {
            let reply = self.reply_opened(&prompt, opened, sampler, max_tokens, stop, |event| {
                on_event(TurnEvent::Reply(event))
            })?;
            opened = 0;
            let cancelled = reply.generation.cancelled;
            let call = reply.tool_call().map(str::to_string);
            conversation.push(reply.message.clone());
            turn.messages.push(reply.message.clone());
            turn.generations.push(reply.generation);
            let Some(recipient) = call else { break };
            let runnable = tools.as_deref().is_some_and(|t| t.handles(&recipient));
            if cancelled || !runnable {
                turn.pending_call = Some(recipient);
                break;
            }
            if calls == max_tool_calls {
                turn.pending_call = Some(recipient);
                turn.hit_call_limit = true;
                break;
            }
            calls += 1;
            let toolbox = tools.as_deref_mut().expect("checked above");
            let output = toolbox.execute(&recipient, &reply.message.content);
            on_event(TurnEvent::ToolResult {
                author: &output.author,
                content: &output.content,
            });
            let answer = tool_message(&output.author, &output.content);
            prompt = match &self.loaded.harmony {
                // Go on from exactly the tokens the model wrote (a re-render
                // would place the call's recipient differently and lose the
                // prompt cache, which sliding-window layers cannot trim).
                Some(encoding) => {
                    let mut next = prompt;
                    next.extend(&turn.generations.last().expect("pushed").tokens);
                    next.push(encoding.special(Special::Call));
                    let tool = to_harmony(&answer, &conversation)?;
                    for message in &tool {
                        next.extend(
                            encoding
                                .render_message(message, !setup.functions.is_empty())
                                .map_err(|e| Error::Invalid(format!("Harmony: {e}")))?,
                        );
                    }
                    next.push(encoding.special(Special::Start));
                    next.extend(self.loaded.encode("assistant")?);
                    next
                }
                None => {
                    let mut with_answer = conversation.clone();
                    with_answer.push(answer.clone());
                    self.loaded.conversation_tokens(setup, &with_answer)?
                }
            };
            conversation.push(answer.clone());
            turn.messages.push(answer);
        }
        Ok(turn)
    }
}
