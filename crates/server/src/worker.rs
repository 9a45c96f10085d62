//! The model thread: it owns the `TokenGenerator` and runs one request at a
//! time from a bounded queue, sending what it generates back as events. A
//! request whose client has gone is skipped, or cancelled at its next token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use mlx_harmony_config::settings::GenerationSettings;
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{FinishReason, GenerateOptions, TokenGenerator};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::reply::ReplyEvent;
use mlx_harmony_core::sampling::Sampler;
use mlx_harmony_core::tool_parsers;
use mlx_harmony_core::turn::{self, ToolRunner, TurnEvent, TurnOptions};
use mlx_harmony_frontend::args::ToolArgs;
use mlx_harmony_frontend::{setup as frontend_setup, tools as frontend_tools};
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
/// for testing clients against a checkpoint without trained weights. Test
/// support: only with the `scripted-replies` feature.
#[cfg(feature = "scripted-replies")]
pub struct Script {
    pub replies: Vec<Vec<u32>>,
    pub next: usize,
}

#[cfg(feature = "scripted-replies")]
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

/// How the model thread serves: the server-side tools and, in test builds,
/// scripted replies.
#[derive(Default)]
pub struct WorkerConfig {
    /// The GPT-OSS tools the server runs itself (a fresh set per request).
    pub tools: Option<ToolArgs>,
    pub max_tool_calls: usize,
    #[cfg(feature = "scripted-replies")]
    pub script: Option<Script>,
}

impl WorkerConfig {
    /// The scripted replies when there are, else the request's sampling.
    fn sampler(
        &self,
        settings: &GenerationSettings,
        generator: &TokenGenerator,
    ) -> Result<Sampler, ApiError> {
        #[cfg(feature = "scripted-replies")]
        if let Some(script) = &self.script {
            return script.sampler();
        }
        frontend_setup::sampler(settings, &generator.loaded)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// `replies` replies were generated: a script moves on by as many.
    fn played(&mut self, replies: usize) {
        #[cfg(feature = "scripted-replies")]
        if let Some(script) = &mut self.script {
            script.next += replies;
        }
        let _ = replies;
    }
}

/// The model thread's loop: until the queue closes.
pub fn run(
    mut generator: TokenGenerator,
    mut jobs: Receiver<Job>,
    stats: Arc<Stats>,
    mut config: WorkerConfig,
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
                &mut config,
                ChatJob {
                    history: &history,
                    setup: &setup,
                    settings: &job.settings,
                    buffer_answer,
                },
                &send,
            ),
            Task::Completion { prompt } => {
                completion(&mut generator, &mut config, &prompt, &job.settings, &send)
            }
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

/// One chat request as the model thread takes it.
struct ChatJob<'a> {
    history: &'a [ChatMessage],
    setup: &'a PromptSetup,
    settings: &'a GenerationSettings,
    /// Template models: hold the answer back until it is known whether it
    /// is a tool call.
    buffer_answer: bool,
}

fn chat(
    generator: &mut TokenGenerator,
    config: &mut WorkerConfig,
    job: ChatJob,
    send: &dyn Fn(Event),
) -> Result<(), ApiError> {
    let ChatJob {
        history,
        setup,
        settings,
        buffer_answer,
    } = job;
    let harmony = generator.loaded.harmony.is_some();
    // Server-side tools: a fresh set per request (no state shared between clients).
    let mut toolbox = match config.tools.as_ref().filter(|_| harmony) {
        Some(args) => args
            .toolbox()
            .map_err(|e| ApiError::internal(format!("the server's tools cannot start: {e}")))?,
        None => None,
    };
    let mut setup = setup.clone();
    if let Some(tools) = &toolbox {
        frontend_tools::declare(&mut setup, tools);
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
    let mut sampler = config.sampler(settings, generator)?;
    send(Event::Started);
    let mut call: Option<FunctionCall> = None;
    // Streamed reasoning so far, and the server-side call being streamed:
    // each such call is announced as "[call NAME]", as the full reply shows it.
    let mut reasoning_sent = false;
    let mut announced: Option<String> = None;
    let server_side: Vec<String> = toolbox.as_ref().map(|t| t.names()).unwrap_or_default();
    let options = TurnOptions {
        generation: GenerateOptions::new(max_tokens).with_stop(&settings.stop),
        max_tool_calls: config.max_tool_calls,
    };
    let mut runner = toolbox.as_mut().map(frontend_tools::Runner);
    let turn = turn::turn(
        generator,
        &setup,
        history,
        &mut sampler,
        &options,
        runner.as_mut().map(|r| r as &mut dyn ToolRunner),
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
    config.played(turn.generations.len());
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
        .map_or("stop", |g| finish_reason(g.finish_reason));
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
            let (text, found) = tool_parsers::parse_tool_calls(&content);
            if !found.is_empty() {
                for f in found.into_iter().map(|c| FunctionCall {
                    id: call_id(),
                    name: c.name,
                    arguments: c.arguments,
                }) {
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

/// The `finish_reason` of the last reply of a turn, before what the turn
/// adds (a call for the client is `tool_calls`): a server-side call that
/// hit the call limit ends as `stop`.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::ToolCalls => "stop",
        other => other.as_openai(),
    }
}

fn completion(
    generator: &mut TokenGenerator,
    config: &mut WorkerConfig,
    prompt: &str,
    settings: &GenerationSettings,
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
    let mut sampler = config.sampler(settings, generator)?;
    send(Event::Started);
    config.played(1);
    let options = GenerateOptions::new(max_tokens).with_stop(&settings.stop);
    let generation = generator
        .generate(&ids, &mut sampler, &options, |_, piece| {
            if !piece.is_empty() {
                send(Event::Content(piece.to_string()))
            }
        })
        .map_err(|e| ApiError::internal(format!("generation failed: {e}")))?;
    send(Event::Done {
        finish_reason: generation.finish_reason.as_openai(),
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
