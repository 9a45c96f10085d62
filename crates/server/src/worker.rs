//! The model thread: it owns the model and decodes up to `--max-concurrency`
//! requests together in a continuous batch (`mlx_harmony_core::batch`),
//! taking them from a bounded queue and sending what each generates back as
//! events. A request whose client has gone is skipped, or cancelled at its
//! next token without disturbing the others. Requests the server's own tools
//! may answer (GPT-OSS with `--python`/`--browser`/`--apply-patch`) run their
//! tool loop alone, between batch steps.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mlx_harmony_config::settings::GenerationSettings;
use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceId, SequenceRequest};
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{
    Cancel, FinishReason, GenerateOptions, Generation, LoadedModel, TokenGenerator,
};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::reply::{ReplyEvent, ReplyReader};
use mlx_harmony_core::sampling::{Sampler, TokenLogprobs};
use mlx_harmony_core::tool_parsers;
use mlx_harmony_core::turn::{self, ToolRunner, Turn, TurnEvent, TurnOptions};
use mlx_harmony_frontend::args::ToolArgs;
use mlx_harmony_frontend::{setup as frontend_setup, tools as frontend_tools};
use tokio::sync::mpsc::{Receiver, UnboundedSender};

use crate::api::{PromptInput, Usage};
use crate::error::ApiError;
use crate::metrics::Stats;
use crate::output::OutputControl;

/// What a request asks the model to do.
#[derive(Clone)]
pub enum Task {
    Chat {
        history: Vec<ChatMessage>,
        setup: Box<PromptSetup>,
        /// Template models: hold the answer back until it is known whether
        /// it is a tool call.
        buffer_answer: bool,
    },
    Completion {
        prompt: crate::api::PromptInput,
    },
    /// Only the prompt's length in tokens (Anthropic's count_tokens): the
    /// model thread renders it, answers `Started` and a `Done` whose usage
    /// has the count, and generates nothing.
    CountTokens {
        history: Vec<ChatMessage>,
        setup: Box<PromptSetup>,
    },
}

pub struct Job {
    pub task: Task,
    pub settings: GenerationSettings,
    /// A format the output must follow; log-probabilities.
    pub output: OutputControl,
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
    /// The log-probabilities of the tokens of the `Content` that follows
    /// (when the request asked for them).
    Logprobs(Vec<TokenLogprobs>),
    Content(String),
    Reasoning(String),
    /// A function call begins (streamed as its first `tool_calls` delta).
    CallStarted(FunctionCall),
    CallArguments(String),
    /// A piece of a call the server runs itself (python, browser). The first
    /// piece of each call has `announce`: the reasoning text that shows its
    /// start where the API has no item for it (chat: "[call python]").
    ServerCall {
        recipient: String,
        text: String,
        announce: Option<String>,
    },
    /// What such a call returned, and the reasoning text that shows it.
    ServerResult {
        author: String,
        content: String,
        shown: String,
    },
    Done {
        finish_reason: &'static str,
        usage: Usage,
        content: String,
        calls: Vec<FunctionCall>,
        /// What came before the answer, in order: reasoning, the server's
        /// own tool calls and their results ([`reasoning_text`] joins them).
        steps: Vec<Step>,
        /// The request's stop string that ended the reply, if one did.
        stop_sequence: Option<String>,
    },
}

/// One part of a reply before its answer, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Reasoning(String),
    ServerCall { recipient: String, code: String },
    ServerResult { author: String, content: String },
}

impl Step {
    /// The step as the reasoning text shows it: a server call as
    /// "[call NAME]" and its code, a result as "[AUTHOR]" and its content.
    pub fn text(&self) -> String {
        match self {
            Step::Reasoning(text) => text.clone(),
            Step::ServerCall { recipient, code } => format!("[call {recipient}]\n{code}"),
            Step::ServerResult { author, content } => format!("[{author}]\n{content}"),
        }
    }
}

/// A reply's steps as one reasoning text (APIs with one reasoning field);
/// `None` when there are none.
pub fn reasoning_text(steps: &[Step]) -> Option<String> {
    (!steps.is_empty()).then(|| steps.iter().map(Step::text).collect::<Vec<_>>().join("\n"))
}

impl Event {
    /// Server-side calls and results as reasoning text, for APIs that have
    /// no items for them (chat completions, Anthropic messages).
    pub fn as_reasoning(self) -> Event {
        match self {
            Event::ServerCall { text, announce, .. } => {
                Event::Reasoning(format!("{}{text}", announce.unwrap_or_default()))
            }
            Event::ServerResult { shown, .. } => Event::Reasoning(shown),
            other => other,
        }
    }
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

/// How the model thread serves: the server-side tools and, in test builds,
/// scripted replies.
#[derive(Default)]
pub struct WorkerConfig {
    /// The GPT-OSS tools the server runs itself (a fresh set per request).
    pub tools: Option<ToolArgs>,
    pub max_tool_calls: usize,
    /// Sequences decoded together at most.
    pub max_concurrency: usize,
    /// `--prompt-lookup N`: a request decoding alone drafts up to N tokens
    /// from its text so far each step (0: off).
    pub prompt_lookup: usize,
    /// Bytes of finished requests' caches kept for prompts that start the same way.
    pub prompt_cache_bytes: usize,
    /// Where the prompt cache is kept across restarts, and the model's name
    /// it is saved under (`--prompt-cache-file`).
    pub prompt_cache_file: Option<(std::path::PathBuf, String)>,
    #[cfg(feature = "scripted-replies")]
    pub script: Option<Script>,
}

impl WorkerConfig {
    /// The scripted replies when there are, else the request's sampling.
    fn sampler(
        &self,
        settings: &GenerationSettings,
        loaded: &LoadedModel,
    ) -> Result<Sampler, ApiError> {
        // Checked here, where the vocabulary is known: a bad id would
        // otherwise fail at sampling time, inside a batch step shared with
        // other requests.
        let vocab = loaded.model.vocab_size().max(0) as u32;
        if let Some((id, _)) = settings.logit_bias.iter().find(|(id, _)| *id >= vocab) {
            return Err(ApiError::invalid(format!(
                "logit_bias: token {id} is not in the model's vocabulary (ids 0 to {})",
                vocab.saturating_sub(1)
            ))
            .with_param(Some(format!("logit_bias.{id}"))));
        }
        #[cfg(feature = "scripted-replies")]
        if let Some(script) = &self.script {
            return script.sampler();
        }
        frontend_setup::sampler(settings, loaded).map_err(|e| ApiError::internal(e.to_string()))
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

/// A request decoding in the batch.
struct Live {
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    cancel: Cancel,
    gone: bool,
    kind: LiveKind,
    /// Log-probabilities of tokens not yet handed on with text.
    logprobs: Vec<TokenLogprobs>,
}

enum LiveKind {
    Completion,
    Chat(Box<ChatLive>),
}

/// A chat request's reply as it streams.
struct ChatLive {
    reader: ReplyReader,
    stream: ChatStream,
    prompt_tokens: usize,
    has_functions: bool,
}

impl Live {
    fn send(&mut self, event: Event) {
        if self.events.send(event).is_err() && !self.gone {
            // The client went away: this sequence stops at its next step.
            self.gone = true;
            self.cancel.cancel();
        }
    }
}

/// The model thread's loop: until the queue closes.
pub fn run(
    mut generator: TokenGenerator,
    mut jobs: Receiver<Job>,
    stats: Arc<Stats>,
    mut config: WorkerConfig,
) {
    let loaded = generator.loaded.clone();
    let max = config.max_concurrency.max(1);
    let new_batch = batch_maker(&generator, &config);
    let mut batch = new_batch();
    // `--draft-model`: the batch drafts with it for a request decoding alone.
    batch.set_draft_model(generator.take_draft_model());
    if let Some((path, model)) = &config.prompt_cache_file
        && path.exists()
    {
        match batch.load_prompt_cache(path, model) {
            Ok(entries) => eprintln!("prompt cache: {entries} entries from {}", path.display()),
            Err(e) => eprintln!("warning: the prompt cache was not loaded: {e}"),
        }
    }
    let mut live: HashMap<SequenceId, Live> = HashMap::new();
    'serve: loop {
        // Take requests while there is room: wait for one when idle.
        while live.len() < max {
            let job = if live.is_empty() {
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => break 'serve,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
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
            if let Task::CountTokens { history, setup } = &job.task {
                let events = match loaded.conversation_tokens(setup, history) {
                    Ok(tokens) => vec![
                        Event::Started,
                        Event::Done {
                            finish_reason: "stop",
                            usage: Usage::new(tokens.len(), 0, 0),
                            content: String::new(),
                            calls: Vec::new(),
                            steps: Vec::new(),
                            stop_sequence: None,
                        },
                    ],
                    Err(e) => vec![Event::Failed(
                        ApiError::invalid(e.to_string()).with_param(Some("messages".into())),
                    )],
                };
                for event in events {
                    let _ = job.events.send(event);
                }
                continue;
            }
            let job = match placement(job, &config, &loaded) {
                Placement::Alone(alone) => {
                    stats.generating.store(true, Ordering::SeqCst);
                    run_alone(&mut generator, *alone, &stats, &mut config);
                    stats.generating.store(!live.is_empty(), Ordering::SeqCst);
                    continue;
                }
                Placement::Batch(job) => job,
            };
            let events = job.events.clone();
            match start(&loaded, &mut batch, &mut config, job) {
                Ok((id, entry)) => {
                    live.insert(id, entry);
                }
                Err(error) => {
                    let _ = events.send(Event::Failed(error));
                }
            }
        }
        if live.is_empty() {
            continue;
        }
        if stats.shutting_down.load(Ordering::SeqCst) {
            // The answers in progress end now, cleanly (finish_reason "stop").
            for entry in live.values() {
                entry.cancel.cancel();
            }
        }
        stats.generating.store(true, Ordering::SeqCst);
        stats.active.store(batch.active(), Ordering::SeqCst);
        match batch.step() {
            Ok(events) => {
                for event in events {
                    route(&mut live, event, &stats);
                }
            }
            Err(error) => {
                // The batch's state is unknown: every request in it fails.
                for (_, mut entry) in live.drain() {
                    stats.metrics.failed.fetch_add(1, Ordering::SeqCst);
                    entry.send(Event::Failed(ApiError::internal(format!(
                        "generation failed: {error}"
                    ))));
                }
                if mlx_harmony_core::distributed::tensor_parallel().is_some() {
                    // The other ranks' batches cannot be rebuilt in step
                    // with a new one here: the group ends (MLX's launcher
                    // stops the others).
                    eprintln!("error: a tensor-parallel step failed: {error}; stopping");
                    std::process::exit(1);
                }
                let draft = batch.take_draft_model();
                batch = new_batch();
                batch.set_draft_model(draft);
            }
        }
        stats.active.store(batch.active(), Ordering::SeqCst);
        stats.generating.store(!live.is_empty(), Ordering::SeqCst);
    }
    // The queue has closed (shutdown): the other tensor-parallel ranks stop
    // too, and the prompt cache is kept for the next start.
    if let Err(e) = batch.release_followers() {
        eprintln!("warning: the other tensor-parallel ranks were not told to stop: {e}");
    }
    if let Some((path, model)) = &config.prompt_cache_file {
        match batch.save_prompt_cache(path, model) {
            Ok(entries) => eprintln!(
                "prompt cache: {entries} entries written to {}",
                path.display()
            ),
            Err(e) => eprintln!("warning: the prompt cache was not written: {e}"),
        }
    }
}

/// What makes the worker's batch: `--max-kv-size` (or the prompt
/// config's) bounds every row's cache, `--kv-bits` keeps them quantized.
fn batch_maker(
    generator: &TokenGenerator,
    config: &WorkerConfig,
) -> impl Fn() -> BatchGenerator + use<> {
    let loaded = generator.loaded.clone();
    let max = config.max_concurrency.max(1);
    let max_kv_size = generator.max_kv_size().map(|n| n as u32);
    let kv_quantization = generator.kv_quantization();
    let prompt_cache_bytes = config.prompt_cache_bytes;
    move || {
        let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), max, prompt_cache_bytes);
        batch
            .set_max_kv_size(max_kv_size)
            .and_then(|()| batch.set_kv_quantization(kv_quantization))
            // Under --tensor-parallel the other ranks run rank 0's batch.
            .and_then(|()| batch.replicate())
            .expect("a new batch is idle and the settings were checked at start");
        batch
    }
}

/// A tensor-parallel rank other than 0: runs the same batch as rank 0's
/// worker, step for step, until rank 0's worker stops (see
/// [`BatchGenerator::follow`]). Rank 0 answers the requests.
pub fn follow(mut generator: TokenGenerator, config: &WorkerConfig) -> anyhow::Result<()> {
    let mut batch = batch_maker(&generator, config)();
    batch.set_draft_model(generator.take_draft_model());
    while batch
        .follow()
        .map_err(|e| anyhow::anyhow!("tensor-parallel step: {e}"))?
    {}
    Ok(())
}

/// A chat request the server's own tools may answer: its tool loop runs
/// alone, on the single-sequence path.
struct AloneJob {
    history: Vec<ChatMessage>,
    setup: Box<PromptSetup>,
    buffer_answer: bool,
    settings: GenerationSettings,
    output: OutputControl,
    events: UnboundedSender<Event>,
}

/// Where a request runs.
enum Placement {
    Batch(Job),
    Alone(Box<AloneJob>),
}

/// Alone when the server's tools may answer the request (a chat, GPT-OSS,
/// server tools on), else in the batch.
fn placement(job: Job, config: &WorkerConfig, loaded: &LoadedModel) -> Placement {
    if config.tools.is_none() || loaded.harmony.is_none() {
        return Placement::Batch(job);
    }
    match job.task {
        Task::Chat {
            history,
            setup,
            buffer_answer,
        } => Placement::Alone(Box::new(AloneJob {
            history,
            setup,
            buffer_answer,
            settings: job.settings,
            output: job.output,
            events: job.events,
        })),
        task => Placement::Batch(Job { task, ..job }),
    }
}

/// One request through the single-sequence tool loop.
fn run_alone(
    generator: &mut TokenGenerator,
    job: AloneJob,
    stats: &Arc<Stats>,
    config: &mut WorkerConfig,
) {
    let cancel = generator.cancel_handle();
    let stop: mlx_harmony_tools::StopCheck = {
        let (events, stats) = (job.events.clone(), stats.clone());
        Arc::new(move || events.is_closed() || stats.shutting_down.load(Ordering::SeqCst))
    };
    let gone = AtomicBool::new(false);
    // The answer's end (and anything after it) waits until the request is
    // counted, so that a client reading /metrics once answered finds it.
    let held = std::sync::Mutex::new(Vec::new());
    let send = |event: Event| {
        let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.is_empty() || matches!(event, Event::Done { .. }) {
            held.push(event);
            return;
        }
        drop(held);
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
    let outcome = chat(
        generator,
        config,
        ChatJob {
            history: &job.history,
            setup: &job.setup,
            settings: &job.settings,
            output: job.output,
            buffer_answer: job.buffer_answer,
            stop,
        },
        &send,
    );
    match outcome {
        Ok(generations) => {
            for generation in &generations {
                stats.metrics.record(generation);
            }
        }
        Err(error) => {
            stats.metrics.failed.fetch_add(1, Ordering::SeqCst);
            send(Event::Failed(error));
        }
    }
    if gone.load(Ordering::SeqCst) || job.events.is_closed() {
        stats.cancelled.fetch_add(1, Ordering::SeqCst);
    } else {
        stats.completed.fetch_add(1, Ordering::SeqCst);
    }
    for event in held.into_inner().unwrap_or_else(|e| e.into_inner()) {
        // The client may have gone meanwhile; nothing is left to stop.
        let _ = job.events.send(event);
    }
}

/// Renders a request, says it started, and adds it to the batch.
fn start(
    loaded: &LoadedModel,
    batch: &mut BatchGenerator,
    config: &mut WorkerConfig,
    job: Job,
) -> Result<(SequenceId, Live), ApiError> {
    let (prompt, opened, max_tokens, kind) = match &job.task {
        Task::Chat {
            history,
            setup,
            buffer_answer,
        } => {
            let prompt = loaded.conversation_tokens(setup, history).map_err(|e| {
                ApiError::invalid(e.to_string()).with_param(Some("messages".into()))
            })?;
            let forced = loaded.forced_call_tokens(setup).map_err(|e| {
                ApiError::invalid(e.to_string()).with_param(Some("tool_choice".into()))
            })?;
            let max_tokens = room(loaded, prompt.len() + forced.len(), job.settings.max_tokens)?;
            let chat = ChatLive {
                reader: ReplyReader::new(loaded, &forced),
                stream: ChatStream::new(*buffer_answer, Vec::new()),
                prompt_tokens: prompt.len() + forced.len(),
                has_functions: !setup.functions.is_empty(),
            };
            let opened = forced.len();
            let mut prompt = prompt;
            prompt.extend(forced);
            (prompt, opened, max_tokens, LiveKind::Chat(Box::new(chat)))
        }
        Task::CountTokens { .. } => {
            return Err(ApiError::internal(
                "a token count reached the batch (it is answered before)",
            ));
        }
        Task::Completion { prompt } => {
            let ids = match prompt {
                PromptInput::Text(text) => loaded
                    .tokenizer
                    .encode(text.as_str(), true)
                    .map_err(|e| ApiError::invalid(format!("the prompt cannot be tokenized: {e}")))?
                    .get_ids()
                    .to_vec(),
                PromptInput::Tokens(ids) => {
                    let vocab = loaded.model.vocab_size().max(1) as usize;
                    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                        return Err(ApiError::invalid(format!(
                            "token id {bad} in `prompt` is not in the model's vocabulary \
                             (ids 0 to {})",
                            vocab - 1
                        ))
                        .with_param(Some("prompt".into())));
                    }
                    ids.clone()
                }
            };
            if ids.is_empty() {
                return Err(
                    ApiError::invalid("`prompt` is empty").with_param(Some("prompt".into()))
                );
            }
            let max_tokens = room(loaded, ids.len(), job.settings.max_tokens)?;
            (ids, 0, max_tokens, LiveKind::Completion)
        }
    };
    let mut sampler = config.sampler(&job.settings, loaded)?;
    let forced = match &job.task {
        Task::Chat { .. } => &prompt[prompt.len() - opened..],
        _ => &[][..],
    };
    apply_output(&mut sampler, job.output, forced)?;
    config.played(1);
    let cancel = Cancel::new();
    let id = batch.add(SequenceRequest {
        prompt,
        sampler,
        options: GenerateOptions {
            max_tokens,
            stop: job.settings.stop.clone(),
            opened,
            prompt_lookup: config.prompt_lookup,
        },
        cancel: cancel.clone(),
    });
    let mut entry = Live {
        events: job.events,
        cancel,
        gone: false,
        kind,
        logprobs: Vec::new(),
    };
    entry.send(Event::Started);
    Ok((id, entry))
}

/// Gives `sampler` the request's constraint (which first reads the forced
/// call's header that ends the prompt, as the model's own) and its
/// log-probabilities.
fn apply_output(
    sampler: &mut Sampler,
    output: OutputControl,
    forced: &[u32],
) -> Result<(), ApiError> {
    if let Some(mut constraint) = output.constraint {
        for &token in forced {
            constraint
                .consume(token)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        sampler.set_constraint(constraint);
    }
    sampler.set_logprobs(output.logprobs);
    Ok(())
}

/// Hands one batch event to its request.
fn route(live: &mut HashMap<SequenceId, Live>, event: BatchEvent, stats: &Stats) {
    match event {
        BatchEvent::Token {
            id,
            token,
            text,
            logprobs,
        } => {
            let Some(entry) = live.get_mut(&id) else {
                return;
            };
            let mut out = Vec::new();
            entry.logprobs.extend(logprobs);
            match &mut entry.kind {
                LiveKind::Completion => {
                    // Every token is the completion's, text or not yet.
                    if !entry.logprobs.is_empty() {
                        out.push(Event::Logprobs(std::mem::take(&mut entry.logprobs)));
                    }
                    if !text.is_empty() {
                        out.push(Event::Content(text));
                    }
                }
                LiveKind::Chat(chat) => {
                    let ChatLive { reader, stream, .. } = &mut **chat;
                    reader.token(token, &text, &mut |event| {
                        stream.on_event(TurnEvent::Reply(event), &mut |e| out.push(e))
                    });
                    // The answer's tokens: those up to one that shows answer
                    // text (one whose text is held back goes with the next);
                    // reasoning and calls drop theirs.
                    if out.iter().any(|e| matches!(e, Event::Content(_))) {
                        out.insert(0, Event::Logprobs(std::mem::take(&mut entry.logprobs)));
                    } else if !out.is_empty() {
                        entry.logprobs.clear();
                    }
                }
            }
            for event in out {
                entry.send(event);
            }
        }
        BatchEvent::Finished { id, generation } => {
            let Some(mut entry) = live.remove(&id) else {
                return;
            };
            stats.metrics.record(&generation);
            let mut out = Vec::new();
            match std::mem::replace(&mut entry.kind, LiveKind::Completion) {
                LiveKind::Completion => out.push(Event::Done {
                    finish_reason: generation.finish_reason.as_openai(),
                    usage: Usage::new(
                        generation.prompt_tokens,
                        generation.tokens.len(),
                        generation.cached_tokens,
                    ),
                    content: generation.text.clone(),
                    calls: Vec::new(),
                    steps: Vec::new(),
                    stop_sequence: None,
                }),
                LiveKind::Chat(chat) => {
                    let ChatLive {
                        reader,
                        mut stream,
                        prompt_tokens,
                        has_functions,
                    } = *chat;
                    let (message, reason) =
                        reader.finish(&generation.text, generation.finish_reason, &mut |event| {
                            stream.on_event(TurnEvent::Reply(event), &mut |e| out.push(e))
                        });
                    let turn = Turn {
                        pending_call: message.recipient.clone(),
                        messages: vec![message],
                        generations: vec![Generation {
                            finish_reason: reason,
                            ..generation
                        }],
                        hit_call_limit: false,
                    };
                    stream.finish(&turn, prompt_tokens, has_functions, &mut |e| out.push(e));
                }
            }
            // Counted before the answer goes out: a client that reads
            // /metrics once it has its answer finds the request there.
            let counter = if entry.gone || entry.events.is_closed() {
                &stats.cancelled
            } else {
                &stats.completed
            };
            counter.fetch_add(1, Ordering::SeqCst);
            for event in out {
                entry.send(event);
            }
        }
        BatchEvent::Failed { id, message } => {
            let Some(mut entry) = live.remove(&id) else {
                return;
            };
            entry.send(Event::Failed(ApiError::internal(format!(
                "generation failed: {message}"
            ))));
            stats.metrics.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The room left for the answer, or a 400 when the prompt alone fills the context.
fn room(loaded: &LoadedModel, prompt: usize, max_tokens: u32) -> Result<usize, ApiError> {
    let Some(context) = loaded.model.context_length else {
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
    output: OutputControl,
    /// Template models: hold the answer back until it is known whether it
    /// is a tool call.
    buffer_answer: bool,
    /// Asked while a server-side tool runs: the client went away or the
    /// server is stopping.
    stop: mlx_harmony_tools::StopCheck,
}

fn chat(
    generator: &mut TokenGenerator,
    config: &mut WorkerConfig,
    job: ChatJob,
    send: &dyn Fn(Event),
) -> Result<Vec<Generation>, ApiError> {
    let ChatJob {
        history,
        setup,
        settings,
        output,
        buffer_answer,
        stop,
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
    if let Some(tools) = &mut toolbox {
        tools.stop_when(stop);
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
    let max_tokens = room(
        &generator.loaded,
        prompt.len() + forced.len(),
        settings.max_tokens,
    )?;
    let mut sampler = config.sampler(settings, &generator.loaded)?;
    apply_output(&mut sampler, output, &forced)?;
    send(Event::Started);
    let server_side: Vec<String> = toolbox.as_ref().map(|t| t.names()).unwrap_or_default();
    let mut stream = ChatStream::new(buffer_answer, server_side);
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
        |event| stream.on_event(event, &mut |e| send(e)),
    )
    .map_err(|e| ApiError::internal(format!("generation failed: {e}")))?;
    config.played(turn.generations.len());
    stream.finish(&turn, prompt.len(), !setup.functions.is_empty(), &mut |e| {
        send(e)
    });
    Ok(turn.generations)
}

/// A chat reply turned into the API's events as it streams, and its
/// closing `Done`: answer text (held back for template models that may be
/// writing a call), reasoning, calls for the client, and the server's own
/// tool calls and results, announced in the reasoning.
struct ChatStream {
    buffer_answer: bool,
    /// The tools the server runs itself.
    server_side: Vec<String>,
    /// The call for the client being streamed.
    call: Option<FunctionCall>,
    /// Streamed reasoning so far, and the server-side call being streamed:
    /// each such call is announced as "[call NAME]", as the full reply shows it.
    reasoning_sent: bool,
    announced: Option<String>,
    /// Pieces of the model's own reasoning streamed: one per generated token
    /// (a token that ends mid-character is held and sent with the next).
    reasoning_tokens: usize,
}

impl ChatStream {
    fn new(buffer_answer: bool, server_side: Vec<String>) -> Self {
        ChatStream {
            buffer_answer,
            server_side,
            call: None,
            reasoning_sent: false,
            announced: None,
            reasoning_tokens: 0,
        }
    }

    fn on_event(&mut self, event: TurnEvent, send: &mut dyn FnMut(Event)) {
        match event {
            TurnEvent::Reply(ReplyEvent::Answer(text)) => {
                if !self.buffer_answer {
                    send(Event::Content(text.to_string()))
                }
            }
            TurnEvent::Reply(ReplyEvent::Reasoning { text, .. }) => {
                self.announced = None;
                self.reasoning_sent = true;
                self.reasoning_tokens += 1;
                send(Event::Reasoning(text.to_string()))
            }
            TurnEvent::Reply(ReplyEvent::ToolCall { recipient, text }) => {
                let runs_here = self.server_side.iter().any(|n| {
                    recipient == n
                        || recipient.starts_with(&format!("{n}."))
                        || recipient == format!("functions.{n}")
                });
                if runs_here {
                    let announce = (self.announced.as_deref() != Some(recipient)).then(|| {
                        let gap = if self.reasoning_sent { "\n" } else { "" };
                        self.announced = Some(recipient.to_string());
                        format!("{gap}[call {recipient}]\n")
                    });
                    self.reasoning_sent = true;
                    send(Event::ServerCall {
                        recipient: recipient.to_string(),
                        text: text.to_string(),
                        announce,
                    });
                    return;
                }
                let name = recipient.strip_prefix("functions.").unwrap_or(recipient);
                if self.call.as_ref().is_none_or(|c| c.name != name) {
                    let started = FunctionCall {
                        id: call_id(),
                        name: name.to_string(),
                        arguments: String::new(),
                    };
                    send(Event::CallStarted(started.clone()));
                    self.call = Some(started);
                }
                send(Event::CallArguments(text.to_string()));
            }
            TurnEvent::ToolResult { author, content } => {
                self.announced = None;
                self.reasoning_sent = true;
                send(Event::ServerResult {
                    author: author.to_string(),
                    content: content.to_string(),
                    shown: format!("\n[{author}]\n{content}\n"),
                })
            }
        }
    }

    /// The closing events of a finished turn: a template model's answer
    /// (and the calls found in it), then `Done`.
    fn finish(
        self,
        turn: &Turn,
        prompt_len: usize,
        has_functions: bool,
        send: &mut dyn FnMut(Event),
    ) {
        let buffer_answer = self.buffer_answer;
        let first = turn.generations.first();
        let prompt_tokens = first.map_or(prompt_len, |g| g.prompt_tokens);
        let cached = first.map_or(0, |g| g.cached_tokens);
        let completion: usize = turn.generations.iter().map(|g| g.tokens.len()).sum();
        let last = turn
            .messages
            .last()
            .cloned()
            .unwrap_or_else(|| ChatMessage::new("assistant", ""));
        // The reasoning, with the server-side tool calls and their results in
        // order (as they were streamed).
        let mut steps: Vec<Step> = Vec::new();
        for m in &turn.messages {
            steps.extend(m.reasoning_content.clone().map(Step::Reasoning));
            match (m.role.as_str(), &m.recipient) {
                ("assistant", Some(recipient)) if turn.pending_call.as_ref() != Some(recipient) => {
                    steps.push(Step::ServerCall {
                        recipient: recipient.clone(),
                        code: m.content.clone(),
                    });
                }
                ("tool", _) => steps.push(Step::ServerResult {
                    author: m.name.as_deref().unwrap_or("tool").to_string(),
                    content: m.content.clone(),
                }),
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
        match (&turn.pending_call, self.call) {
            (Some(recipient), Some(mut streamed)) if !turn.hit_call_limit => {
                let name = recipient.strip_prefix("functions.").unwrap_or(recipient);
                streamed.name = name.to_string();
                streamed.arguments = last.content.clone();
                calls.push(streamed);
                reason = "tool_calls";
            }
            _ if buffer_answer && has_functions => {
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
            usage: Usage::new(prompt_tokens, completion, cached)
                .with_reasoning_tokens(self.reasoning_tokens),
            content,
            calls,
            steps,
            stop_sequence: turn.last_generation().and_then(|g| g.stop_string.clone()),
        });
    }
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
