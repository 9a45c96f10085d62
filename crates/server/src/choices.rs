//! Queuing a request's choices (`n` for each of its prompts) and reading
//! their events back as one stream. Each choice is a sequence of its own in
//! the batch; the model thread runs a shared prompt once (`BatchGenerator`
//! hands a prompt's cache to waiting sequences that start the same way).

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::response::sse::Event as SseEvent;
use mlx_harmony_config::settings::GenerationSettings;
use mlx_harmony_core::sampling::TokenLogprobs;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::AppState;
use crate::api::Usage;
use crate::error::ApiError;
use crate::output::OutputControl;
use crate::worker::{Event, Job, Task};

/// A request's choices: their events, each tagged with its choice's index,
/// in order within each choice. Choice `i` is prompt `i / n`'s.
pub struct Choices {
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    /// Choices per prompt.
    n: usize,
    /// Choices in all.
    total: usize,
}

/// Queues `n` jobs for `task` and waits until the model thread accepted
/// every one (their prompts checked) or refused one. Choice `i` samples with
/// the request's seed plus `i`, so that seeded choices differ from each other
/// and are each reproducible.
///
/// Dropping the returned choices cancels every one still decoding: the
/// forwarding tasks end, and with them the channels the model thread writes.
pub async fn submit(
    state: &AppState,
    task: Task,
    settings: GenerationSettings,
    output: OutputControl,
    n: usize,
) -> Result<Choices, ApiError> {
    submit_prompts(state, vec![task], settings, output, n).await
}

/// [`submit`] for several prompts (a completions request's list): `n`
/// choices each, prompt `p`'s as choices `p * n .. (p + 1) * n` (the order
/// of OpenAI's `index`), seeded `seed + i` within each prompt.
pub async fn submit_prompts(
    state: &AppState,
    tasks: Vec<Task>,
    settings: GenerationSettings,
    output: OutputControl,
    n: usize,
) -> Result<Choices, ApiError> {
    if state.stats.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let total = tasks.len() * n;
    let mut receivers = Vec::with_capacity(total);
    for index in 0..total {
        let (events, receiver) = mpsc::unbounded_channel();
        let mut settings = settings.clone();
        settings.seed = settings
            .seed
            .map(|seed| seed.wrapping_add((index % n) as u64));
        let job = Job {
            task: tasks[index / n].clone(),
            settings,
            output: output.for_choice(),
            events,
        };
        state.stats.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = state.jobs.try_send(job) {
            state.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            // The choices queued already are skipped: their receivers go now.
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => ApiError::busy(state.queue_size),
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::unavailable("the model thread has stopped")
                }
            });
        }
        receivers.push(receiver);
    }
    for receiver in &mut receivers {
        match receiver.recv().await {
            Some(Event::Started) => {}
            Some(Event::Failed(error)) => return Err(error),
            Some(_) => return Err(ApiError::internal("the model thread answered out of order")),
            None => {
                return Err(ApiError::unavailable(
                    "the request was dropped (the server is stopping)",
                ));
            }
        }
    }
    let (merged, events) = mpsc::unbounded_channel();
    for (index, mut receiver) in receivers.into_iter().enumerate() {
        let merged = merged.clone();
        tokio::spawn(async move {
            loop {
                // Also woken when the reader goes away, so that the model
                // thread learns of it while nothing is being generated (a
                // server-side tool running, say).
                tokio::select! {
                    event = receiver.recv() => {
                        let Some(event) = event else { return };
                        if merged.send((index, event)).is_err() {
                            return;
                        }
                    }
                    () = merged.closed() => return,
                }
            }
        });
    }
    Ok(Choices { events, n, total })
}

/// What a streaming handler waits for next.
pub enum Next {
    /// An event of choice `.0`.
    Event(usize, Event),
    /// Every choice has ended (the model thread dropped their channels).
    Ended,
    /// The client went away (its stream's receiving end closed).
    ClientGone,
}

/// The next event of any choice, or that the choices ended or the client
/// went away: the client's leaving is noticed even while no event comes.
pub async fn next_event<T>(choices: &mut Choices, client: &mpsc::Sender<T>) -> Next {
    tokio::select! {
        next = choices.events.recv() => match next {
            Some((index, event)) => Next::Event(index, event),
            None => Next::Ended,
        },
        () = client.closed() => Next::ClientGone,
    }
}

/// The usage of choices, each with its index: each prompt's as
/// [`prompt_usage`] counts it, added up.
fn combined_usage(usages: &[(usize, Usage)], n: usize) -> Usage {
    let prompts = usages
        .iter()
        .map(|(index, _)| index / n + 1)
        .max()
        .unwrap_or(0);
    let mut total = Usage::new(0, 0, 0);
    for prompt in 0..prompts {
        let of_prompt: Vec<Usage> = usages
            .iter()
            .filter(|(index, _)| index / n == prompt)
            .map(|(_, usage)| usage.clone())
            .collect();
        let usage = prompt_usage(&of_prompt);
        total = Usage::new(
            total.prompt_tokens + usage.prompt_tokens,
            total.completion_tokens + usage.completion_tokens,
            total.prompt_tokens_details.cached_tokens + usage.prompt_tokens_details.cached_tokens,
        )
        .with_reasoning_tokens(
            total.completion_tokens_details.reasoning_tokens
                + usage.completion_tokens_details.reasoning_tokens,
        );
    }
    total
}

/// The usage of several choices of one prompt: the prompt counted once, with
/// the cached tokens of the choice that ran most of it (the others found it
/// cached), the completions summed.
pub fn prompt_usage(usages: &[Usage]) -> Usage {
    let Some(first) = usages.first() else {
        return Usage::new(0, 0, 0);
    };
    Usage::new(
        first.prompt_tokens,
        usages.iter().map(|u| u.completion_tokens).sum(),
        usages
            .iter()
            .map(|u| u.prompt_tokens_details.cached_tokens)
            .min()
            .unwrap_or(0),
    )
    .with_reasoning_tokens(
        usages
            .iter()
            .map(|u| u.completion_tokens_details.reasoning_tokens)
            .sum(),
    )
}

/// What one choice ended with (its `Done`).
pub struct Finished {
    pub finish_reason: &'static str,
    pub usage: Usage,
    pub content: String,
    pub calls: Vec<crate::worker::FunctionCall>,
    /// The reasoning and the server's own tool calls and results, in order.
    pub steps: Vec<crate::worker::Step>,
    /// The request's stop string that ended the reply, if one did.
    pub stop_sequence: Option<String>,
    /// The answer's tokens' log-probabilities, when asked for.
    pub logprobs: Vec<TokenLogprobs>,
}

impl Finished {
    /// The steps before the answer as one reasoning text.
    pub fn reasoning(&self) -> Option<String> {
        crate::worker::reasoning_text(&self.steps)
    }
}

/// Reads every choice to its end (non-streaming answers): their ends in
/// index order and their usage together; the first `Failed` ends it all with
/// that error.
pub async fn collect(choices: Choices) -> Result<(Vec<Finished>, Usage), ApiError> {
    let n = choices.n;
    let finished = collect_each(choices).await?;
    let usages: Vec<(usize, Usage)> = finished
        .iter()
        .enumerate()
        .map(|(index, f)| (index, f.usage.clone()))
        .collect();
    Ok((finished, combined_usage(&usages, n)))
}

async fn collect_each(mut choices: Choices) -> Result<Vec<Finished>, ApiError> {
    let total = choices.total;
    let mut done: Vec<Option<Finished>> = (0..total).map(|_| None).collect();
    let mut logprobs: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); total];
    let mut left = total;
    while let Some((index, event)) = choices.events.recv().await {
        match event {
            Event::Logprobs(tokens) => logprobs[index].extend(tokens),
            Event::Done {
                finish_reason,
                usage,
                content,
                calls,
                steps,
                stop_sequence,
            } => {
                done[index] = Some(Finished {
                    finish_reason,
                    usage,
                    content,
                    calls,
                    steps,
                    stop_sequence,
                    logprobs: std::mem::take(&mut logprobs[index]),
                });
                left -= 1;
                if left == 0 {
                    return Ok(done.into_iter().flatten().collect());
                }
            }
            Event::Failed(error) => return Err(error),
            _ => {}
        }
    }
    Err(ApiError::unavailable(
        "the generation was stopped (the server is stopping)",
    ))
}

/// A stream of server-sent events, as the handlers return it.
pub type EventStream =
    axum::response::sse::Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>>;

/// How one API writes its stream's chunks (chat and completions differ).
pub trait ChunkWriter: Send + 'static {
    /// The chunks that open the stream, before any event.
    fn opening(&mut self, n: usize) -> Vec<Value>;
    /// The chunk for one of choice `index`'s events (`None`: nothing to send).
    fn piece(&mut self, index: usize, event: Event) -> Option<Value>;
    /// The chunk that ends choice `index`.
    fn finish(&mut self, index: usize, finish_reason: &'static str) -> Value;
    /// The closing chunk with the usage of every choice.
    fn usage(&mut self, usage: Usage) -> Value;
}

/// Turns the choices' events into server-sent events, in a task of its own:
/// the writer's chunks as they come, each choice's end, after the last one
/// the usage chunk (with `include_usage`) and `[DONE]`; a failure sends the
/// API's error body and ends the stream. When the client goes away the chunk
/// channel closes, the task drops `choices`, and the model thread stops those
/// sequences at their next token (or their python call).
pub fn stream(
    mut choices: Choices,
    include_usage: bool,
    mut writer: impl ChunkWriter,
) -> EventStream {
    let (chunks, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let data = |value: Value| Ok(SseEvent::default().data(value.to_string()));
    tokio::spawn(async move {
        let (n, total) = (choices.n, choices.total);
        for opening in writer.opening(total) {
            if chunks.send(data(opening)).await.is_err() {
                return;
            }
        }
        let mut usages: Vec<(usize, Usage)> = Vec::with_capacity(total);
        loop {
            let (index, event) = match next_event(&mut choices, &chunks).await {
                Next::Event(index, event) => (index, event),
                Next::Ended => break,
                Next::ClientGone => return,
            };
            let out = match event {
                Event::Done {
                    finish_reason,
                    usage,
                    ..
                } => {
                    usages.push((index, usage));
                    let _ = chunks.send(data(writer.finish(index, finish_reason))).await;
                    if usages.len() < total {
                        continue;
                    }
                    if include_usage {
                        let usage = writer.usage(combined_usage(&usages, n));
                        let _ = chunks.send(data(usage)).await;
                    }
                    break;
                }
                Event::Failed(error) => {
                    let _ = chunks.send(data(error.body())).await;
                    break;
                }
                other => match writer.piece(index, other) {
                    Some(chunk) => chunk,
                    None => continue,
                },
            };
            if chunks.send(data(out)).await.is_err() {
                return;
            }
        }
        let _ = chunks.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    axum::response::sse::Sse::new(tokio_stream::wrappers::ReceiverStream::new(body))
}
