//! Queuing a request's `n` choices and reading their events back as one
//! stream. Each choice is a sequence of its own in the batch; the model
//! thread runs their shared prompt once (`BatchGenerator` hands a prompt's
//! cache to waiting sequences that start the same way).

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

/// A choice's events, tagged with its index, in order within each choice.
pub type Choices = mpsc::UnboundedReceiver<(usize, Event)>;

/// Queues `n` jobs for `task` and waits until the model thread accepted
/// every one (their prompts checked) or refused one. Choice `i` samples with
/// the request's seed plus `i`, so that seeded choices differ from each other
/// and are each reproducible.
///
/// Dropping the returned receiver cancels every choice still decoding: the
/// forwarding tasks end, and with them the channels the model thread writes.
pub async fn submit(
    state: &AppState,
    task: Task,
    settings: GenerationSettings,
    output: OutputControl,
    n: usize,
) -> Result<Choices, ApiError> {
    if state.stats.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let mut receivers = Vec::with_capacity(n);
    for index in 0..n {
        let (events, receiver) = mpsc::unbounded_channel();
        let mut settings = settings.clone();
        settings.seed = settings.seed.map(|seed| seed.wrapping_add(index as u64));
        let job = Job {
            task: task.clone(),
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
    let (merged, choices) = mpsc::unbounded_channel();
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
    Ok(choices)
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
        next = choices.recv() => match next {
            Some((index, event)) => Next::Event(index, event),
            None => Next::Ended,
        },
        () = client.closed() => Next::ClientGone,
    }
}

/// The usage of several choices of one prompt: the prompt counted once, with
/// the cached tokens of the choice that ran most of it (the others found it
/// cached), the completions summed.
pub fn combined_usage(usages: &[Usage]) -> Usage {
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
pub async fn collect(choices: Choices, n: usize) -> Result<(Vec<Finished>, Usage), ApiError> {
    let finished = collect_each(choices, n).await?;
    let usage = combined_usage(&finished.iter().map(|f| f.usage.clone()).collect::<Vec<_>>());
    Ok((finished, usage))
}

async fn collect_each(mut choices: Choices, n: usize) -> Result<Vec<Finished>, ApiError> {
    let mut done: Vec<Option<Finished>> = (0..n).map(|_| None).collect();
    let mut logprobs: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); n];
    let mut left = n;
    while let Some((index, event)) = choices.recv().await {
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
    n: usize,
    include_usage: bool,
    mut writer: impl ChunkWriter,
) -> EventStream {
    let (chunks, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let data = |value: Value| Ok(SseEvent::default().data(value.to_string()));
    tokio::spawn(async move {
        for opening in writer.opening(n) {
            if chunks.send(data(opening)).await.is_err() {
                return;
            }
        }
        let mut usages: Vec<Usage> = Vec::with_capacity(n);
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
                    usages.push(usage);
                    let _ = chunks.send(data(writer.finish(index, finish_reason))).await;
                    if usages.len() < n {
                        continue;
                    }
                    if include_usage {
                        let usage = writer.usage(combined_usage(&usages));
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
