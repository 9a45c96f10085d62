//! The model thread: it owns the `TokenGenerator` and runs one request at a
//! time from a bounded queue, sending what it generates back as events. A
//! request whose client has gone is skipped, or cancelled at its next token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use mlx_harmony_config::settings::GenerationSettings;
use mlx_harmony_core::chat::{PromptSetup, ReplyEvent, TurnEvent};
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::cli::{self, ToolArgs};
use mlx_harmony_core::generate::{Generation, TokenGenerator};
use mlx_harmony_core::sampling::Sampler;
use tokio::sync::mpsc::{Receiver, UnboundedSender};

use crate::api::Usage;
use crate::error::ApiError;

/// What a request asks the model to do.
pub enum Task {
    Chat {
        history: Vec<ChatMessage>,
        setup: Box<PromptSetup>,
        /// Template models: hold the answer back until it is known whether
        /// it is a tool call.
        buffer_answer: bool,
    },
    Completion {
        prompt: String,
    },
}

pub struct Job {
    pub task: Task,
    pub settings: GenerationSettings,
    pub events: UnboundedSender<Event>,
}

/// A tool call the client is to run (OpenAI `tool_calls`).
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What the model thread reports about one request, in order: `Failed`
/// alone, or `Started`, pieces, then `Done`.
#[derive(Clone, Debug)]
pub enum Event {
    Failed(ApiError),
    Started,
    Content(String),
    Reasoning(String),
    /// A function call begins (streamed as its first `tool_calls` delta).
    CallStarted(FunctionCall),
    CallArguments(String),
    Done {
        finish_reason: &'static str,
        usage: Usage,
        content: String,
        reasoning: Option<String>,
        calls: Vec<FunctionCall>,
    },
}

/// Fixed replies played back instead of sampling (`--scripted-replies`):
/// for testing clients against a checkpoint without trained weights.
pub struct Script {
    pub replies: Vec<Vec<u32>>,
    pub next: usize,
}

impl Script {
    /// A sampler that plays the replies from the next one on, in a cycle.
    fn sampler(&self) -> Result<Sampler, ApiError> {
        let n = self.replies.len();
        let order = (0..n)
            .map(|i| self.replies[(self.next + i) % n].clone())
            .collect();
        Sampler::scripted(order).map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// Counters for `/health` and the tests.
#[derive(Default)]
pub struct Stats {
    pub generating: AtomicBool,
    pub completed: AtomicU64,
    /// Requests whose client went away (skipped in the queue or stopped mid-way).
    pub cancelled: AtomicU64,
    pub waiting: AtomicUsize,
    pub shutting_down: AtomicBool,
}

/// The model thread's loop: until the queue closes.
pub fn run(
    mut generator: TokenGenerator,
    mut jobs: Receiver<Job>,
    stats: Arc<Stats>,
    tools: Option<ToolArgs>,
    max_tool_calls: usize,
    mut script: Option<Script>,
) {
    let cancel = generator.cancel_handle();
    while let Some(job) = jobs.blocking_recv() {
        stats.waiting.fetch_sub(1, Ordering::SeqCst);
        if stats.shutting_down.load(Ordering::SeqCst) {
            let _ = job.events.send(Event::Failed(ApiError::unavailable(
                "the server is shutting down",
            )));
            continue;
        }
        if job.events.is_closed() {
            stats.cancelled.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        stats.generating.store(true, Ordering::SeqCst);
        let gone = AtomicBool::new(false);
        let send = |event: Event| {
            if job.events.send(event).is_err() && !gone.swap(true, Ordering::SeqCst) {
                // The client went away: stop at the next token.
                cancel.cancel();
            }
            // Checked at every token too: a shutdown that came just as this
            // generation started (which resets the cancel flag) still stops it.
            if stats.shutting_down.load(Ordering::SeqCst) {
                cancel.cancel();
            }
        };
        let outcome = match job.task {
            Task::Chat {
                history,
                setup,
                buffer_answer,
            } => chat(
                &mut generator,
                &history,
                &setup,
                &job.settings,
                buffer_answer,
                tools.as_ref(),
                max_tool_calls,
                script.as_mut(),
                &send,
            ),
            Task::Completion { prompt } => completion(
                &mut generator,
                &prompt,
                &job.settings,
                script.as_mut(),
                &send,
            ),
        };
        if let Err(error) = outcome {
            send(Event::Failed(error));
        }
        stats.generating.store(false, Ordering::SeqCst);
        if gone.load(Ordering::SeqCst) {
            stats.cancelled.fetch_add(1, Ordering::SeqCst);
        } else {
            stats.completed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The scripted replies when there are, else the request's sampling.
fn sampler(
    script: Option<&Script>,
    settings: &GenerationSettings,
    generator: &TokenGenerator,
) -> Result<Sampler, ApiError> {
    match script {
        Some(script) => script.sampler(),
        None => {
            cli::sampler(settings, &generator.loaded).map_err(|e| ApiError::internal(e.to_string()))
        }
    }
}

/// The room left for the answer, or a 400 when the prompt alone fills the context.
fn room(generator: &TokenGenerator, prompt: usize, max_tokens: u32) -> Result<usize, ApiError> {
    let Some(context) = generator.loaded.model.context_length else {
        return Ok(max_tokens as usize);
    };
    if prompt >= context {
        return Err(ApiError::invalid(format!(
            "the prompt is {prompt} tokens, which does not fit the model's context of {context} \
             tokens; shorten the messages"
        ))
        .with_param(Some("messages".into()))
        .with_code("context_length_exceeded"));
    }
    Ok((max_tokens as usize).min(context - prompt))
}

fn finish_reason(generation: &Generation, max_tokens: usize) -> &'static str {
    if !generation.finished_by_eos
        && !generation.finished_by_stop
        && !generation.cancelled
        && generation.tokens.len() >= max_tokens
    {
        "length"
    } else {
        "stop"
    }
}

fn call_id() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "call_{:x}{:04x}",
        nanos & 0xffff_ffff_ffff,
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

#[allow(clippy::too_many_arguments)]
fn chat(
    generator: &mut TokenGenerator,
    history: &[ChatMessage],
    setup: &PromptSetup,
    settings: &GenerationSettings,
    buffer_answer: bool,
    tool_args: Option<&ToolArgs>,
    max_tool_calls: usize,
    script: Option<&mut Script>,
    send: &dyn Fn(Event),
) -> Result<(), ApiError> {
    let harmony = generator.loaded.harmony.is_some();
    // Server-side tools: a fresh set per request (no state shared between clients).
    let mut toolbox = match tool_args.filter(|_| harmony) {
        Some(args) => args
            .toolbox()
            .map_err(|e| ApiError::internal(format!("the server's tools cannot start: {e}")))?,
        None => None,
    };
    let mut setup = setup.clone();
    if let Some(tools) = &toolbox {
        setup.builtin_tools = tools.builtin_namespaces();
        setup.functions.extend(tools.functions());
    }
    let prompt = generator
        .loaded
        .conversation_tokens(&setup, history)
        .map_err(|e| ApiError::invalid(e.to_string()).with_param(Some("messages".into())))?;
    let forced = generator
        .loaded
        .forced_call_tokens(&setup)
        .map_err(|e| ApiError::invalid(e.to_string()).with_param(Some("tool_choice".into())))?;
    let max_tokens = room(generator, prompt.len() + forced.len(), settings.max_tokens)?;
    let mut sampler = sampler(script.as_deref(), settings, generator)?;
    send(Event::Started);
    let mut call: Option<FunctionCall> = None;
    // Streamed reasoning so far, and the server-side call being streamed:
    // each such call is announced as "[call NAME]", as the full reply shows it.
    let mut reasoning_sent = false;
    let mut announced: Option<String> = None;
    let server_side: Vec<String> = toolbox.as_ref().map(|t| t.names()).unwrap_or_default();
    let turn = generator
        .turn(
            &setup,
            history,
            &mut sampler,
            max_tokens,
            &settings.stop,
            toolbox.as_mut(),
            max_tool_calls,
            |event| match event {
                TurnEvent::Reply(ReplyEvent::Answer(text)) => {
                    if !buffer_answer {
                        send(Event::Content(text.to_string()))
                    }
                }
                TurnEvent::Reply(ReplyEvent::Reasoning { text, .. }) => {
                    announced = None;
                    reasoning_sent = true;
                    send(Event::Reasoning(text.to_string()))
                }
                TurnEvent::Reply(ReplyEvent::ToolCall { recipient, text }) => {
                    let runs_here = server_side.iter().any(|n| {
                        recipient == n
                            || recipient.starts_with(&format!("{n}."))
                            || recipient == format!("functions.{n}")
                    });
                    if runs_here {
                        if announced.as_deref() != Some(recipient) {
                            let gap = if reasoning_sent { "\n" } else { "" };
                            send(Event::Reasoning(format!("{gap}[call {recipient}]\n")));
                            announced = Some(recipient.to_string());
                        }
                        reasoning_sent = true;
                        send(Event::Reasoning(text.to_string()));
                        return;
                    }
                    let name = recipient.strip_prefix("functions.").unwrap_or(recipient);
                    if call.as_ref().is_none_or(|c| c.name != name) {
                        let started = FunctionCall {
                            id: call_id(),
                            name: name.to_string(),
                            arguments: String::new(),
                        };
                        send(Event::CallStarted(started.clone()));
                        call = Some(started);
                    }
                    send(Event::CallArguments(text.to_string()));
                }
                TurnEvent::ToolResult { author, content } => {
                    announced = None;
                    reasoning_sent = true;
                    send(Event::Reasoning(format!("\n[{author}]\n{content}\n")))
                }
            },
        )
        .map_err(|e| ApiError::internal(format!("generation failed: {e}")))?;
    if let Some(script) = script {
        script.next += turn.generations.len();
    }
    let first = turn.generations.first();
    let prompt_tokens = first.map_or(prompt.len(), |g| g.prompt_tokens);
    let cached = first.map_or(0, |g| g.cached_tokens);
    let completion: usize = turn.generations.iter().map(|g| g.tokens.len()).sum();
    let last = turn
        .messages
        .last()
        .cloned()
        .unwrap_or_else(|| ChatMessage::new("assistant", ""));
    // The reasoning, with the server-side tool calls and their results in
    // order (as they were streamed).
    let mut reasoning: Vec<String> = Vec::new();
    for m in &turn.messages {
        reasoning.extend(m.reasoning_content.clone());
        match (m.role.as_str(), &m.recipient) {
            ("assistant", Some(recipient)) if turn.pending_call.as_ref() != Some(recipient) => {
                reasoning.push(format!("[call {recipient}]\n{}", m.content))
            }
            ("tool", _) => reasoning.push(format!(
                "[{}]\n{}",
                m.name.as_deref().unwrap_or("tool"),
                m.content
            )),
            _ => {}
        }
    }
    let mut content = if last.recipient.is_some() {
        String::new()
    } else {
        last.content.clone()
    };
    let mut calls = Vec::new();
    let mut reason = turn
        .last_generation()
        .map_or("stop", |g| finish_reason(g, max_tokens));
    match (&turn.pending_call, call) {
        (Some(recipient), Some(mut streamed)) if !turn.hit_call_limit => {
            let name = recipient.strip_prefix("functions.").unwrap_or(recipient);
            streamed.name = name.to_string();
            streamed.arguments = last.content.clone();
            calls.push(streamed);
            reason = "tool_calls";
        }
        _ if buffer_answer && !setup.functions.is_empty() => {
            // Template models write calls as text; find them.
            let (text, found) = parse_template_calls(&content);
            if !found.is_empty() {
                for f in found {
                    send(Event::CallStarted(f.clone()));
                    calls.push(f);
                }
                content = text;
                reason = "tool_calls";
            }
        }
        _ => {}
    }
    if buffer_answer && !content.is_empty() {
        send(Event::Content(content.clone()));
    }
    send(Event::Done {
        finish_reason: reason,
        usage: Usage::new(prompt_tokens, completion, cached),
        content,
        reasoning: (!reasoning.is_empty()).then(|| reasoning.join("\n")),
        calls,
    });
    Ok(())
}

/// Tool calls in a template model's answer: `<tool_call>{"name", "arguments"}</tool_call>`
/// blocks (Qwen, Hermes), or an answer that is one `{"name", "parameters"|"arguments"}`
/// object (Llama 3.1). Returns the remaining text and the calls.
pub fn parse_template_calls(text: &str) -> (String, Vec<FunctionCall>) {
    let as_call = |json: &str| -> Option<FunctionCall> {
        let value: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
        let name = value.get("name")?.as_str()?.to_string();
        let arguments = value
            .get("arguments")
            .or_else(|| value.get("parameters"))
            .cloned()
            .unwrap_or(serde_json::json!({}));
        let arguments = match arguments {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        Some(FunctionCall {
            id: call_id(),
            name,
            arguments,
        })
    };
    let mut calls = Vec::new();
    let mut rest = String::new();
    let mut remaining = text;
    while let Some(start) = remaining.find("<tool_call>") {
        let after = &remaining[start + "<tool_call>".len()..];
        let Some(end) = after.find("</tool_call>") else {
            break;
        };
        match as_call(&after[..end]) {
            Some(call) => {
                rest.push_str(&remaining[..start]);
                calls.push(call);
            }
            None => rest
                .push_str(&remaining[..start + "<tool_call>".len() + end + "</tool_call>".len()]),
        }
        remaining = &after[end + "</tool_call>".len()..];
    }
    rest.push_str(remaining);
    if calls.is_empty()
        && let Some(call) = as_call(text)
    {
        return (String::new(), vec![call]);
    }
    (rest.trim().to_string(), calls)
}

fn completion(
    generator: &mut TokenGenerator,
    prompt: &str,
    settings: &GenerationSettings,
    script: Option<&mut Script>,
    send: &dyn Fn(Event),
) -> Result<(), ApiError> {
    let ids = generator
        .loaded
        .tokenizer
        .encode(prompt, true)
        .map_err(|e| ApiError::invalid(format!("the prompt cannot be tokenized: {e}")))?
        .get_ids()
        .to_vec();
    if ids.is_empty() {
        return Err(ApiError::invalid("`prompt` is empty").with_param(Some("prompt".into())));
    }
    let max_tokens = room(generator, ids.len(), settings.max_tokens)?;
    let mut sampler = sampler(script.as_deref(), settings, generator)?;
    send(Event::Started);
    if let Some(script) = script {
        script.next += 1;
    }
    let generation = generator
        .generate_until(
            &ids,
            &mut sampler,
            max_tokens,
            &settings.stop,
            |_, piece| {
                if !piece.is_empty() {
                    send(Event::Content(piece.to_string()))
                }
            },
        )
        .map_err(|e| ApiError::internal(format!("generation failed: {e}")))?;
    send(Event::Done {
        finish_reason: finish_reason(&generation, max_tokens),
        usage: Usage::new(
            generation.prompt_tokens,
            generation.tokens.len(),
            generation.cached_tokens,
        ),
        content: generation.text.clone(),
        reasoning: None,
        calls: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_tool_calls_are_found() {
        let (rest, calls) = parse_template_calls(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
        );
        assert_eq!(rest, "Let me check.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
        let (_, llama) = parse_template_calls(r#"{"name": "f", "parameters": {"x": 1}}"#);
        assert_eq!(llama[0].arguments, r#"{"x":1}"#);
        let (text, none) = parse_template_calls("just text {not json}");
        assert!(none.is_empty());
        assert_eq!(text, "just text {not json}");
    }
}
