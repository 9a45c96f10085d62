//! `mlx-harmony-server`'s behaviour: an OpenAI-compatible HTTP API over the
//! shared `TokenGenerator`.
//!
//! One model thread decodes up to `--max-concurrency` requests together
//! (continuous batching); more wait in a bounded queue (429 when it is full). Handlers are plain async functions
//! over one [`AppState`]: they check the request, queue a job and turn the
//! model thread's events into an OpenAI response or server-sent events.

pub mod api;
pub mod error;
pub mod metrics;
pub mod serve;
pub mod worker;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mlx_harmony_config::settings::{self, Hyperparameters};
use mlx_harmony_core::generate::Cancel;
use mlx_harmony_core::prompt::PromptSetup;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{ChatRequest, CompletionRequest};
use crate::error::ApiError;
use crate::worker::{Event, Job, Stats, Task};

/// Everything the handlers share.
pub struct AppState {
    /// The name clients use for the model (`model` in requests).
    pub model_id: String,
    pub api_key: Option<String>,
    pub jobs: mpsc::Sender<Job>,
    pub queue_size: usize,
    pub stats: Arc<Stats>,
    /// Stops the generation in progress (shutdown).
    pub cancel: Cancel,
    pub created: u64,
    pub harmony: bool,
    /// What goes before every conversation (prompt config, --system).
    pub setup: PromptSetup,
    /// The server's flags over the prompt config's sampling settings.
    pub cli_settings: Hyperparameters,
    pub prompt_config_settings: Option<Hyperparameters>,
    pub generation_config: Option<Hyperparameters>,
}

pub type Shared = Arc<AppState>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The API's routes, with the key check and the body size limit.
pub fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(one_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .with_state(state)
}

async fn require_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let open = matches!(request.uri().path(), "/health" | "/v1/health" | "/metrics");
    if let Some(key) = state.api_key.as_deref().filter(|_| !open) {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::invalid(format!("{} does not take this method", uri.path()))
    }
}

async fn health(State(state): State<Shared>) -> axum::Json<Value> {
    let stats = &state.stats;
    axum::Json(json!({
        "status": if stats.shutting_down.load(Ordering::SeqCst) { "shutting_down" } else { "ok" },
        "model": state.model_id,
        "generating": stats.generating.load(Ordering::SeqCst),
        "active": stats.active.load(Ordering::SeqCst),
        "waiting": stats.waiting.load(Ordering::SeqCst),
        "completed_requests": stats.completed.load(Ordering::SeqCst),
        "cancelled_requests": stats.cancelled.load(Ordering::SeqCst),
    }))
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state.stats),
    )
        .into_response()
}

fn model_object(state: &AppState) -> Value {
    json!({"id": state.model_id, "object": "model", "created": state.created, "owned_by": "mlx-harmony"})
}

async fn list_models(State(state): State<Shared>) -> axum::Json<Value> {
    axum::Json(json!({"object": "list", "data": [model_object(&state)]}))
}

async fn one_model(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    if id == state.model_id {
        axum::Json(model_object(&state)).into_response()
    } else {
        ApiError::model_not_found(&id, &state.model_id).into_response()
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        ApiError {
            status,
            code: (status == StatusCode::PAYLOAD_TOO_LARGE).then_some("request_too_large"),
            ..ApiError::invalid(format!(
                "the request body could not be read: {}",
                rejection.body_text()
            ))
        }
    })
}

/// The settings of a request over the server's layers.
fn resolve(state: &AppState, request: Hyperparameters) -> settings::GenerationSettings {
    let mut merged = state.cli_settings.to_json_map();
    merged.extend(request.to_json_map());
    let layer = Hyperparameters::from_json_map(&merged, std::path::Path::new("request"))
        .expect("both layers were checked");
    settings::resolve(
        Some(&layer),
        state.prompt_config_settings.as_ref(),
        None,
        state.generation_config.as_ref(),
        state.harmony,
    )
    .settings
}

/// Queues a job and waits for the model thread to accept it (its prompt
/// checked) or refuse it.
async fn submit(
    state: &AppState,
    task: Task,
    settings: settings::GenerationSettings,
) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    if state.stats.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let (events, mut receiver) = mpsc::unbounded_channel();
    let job = Job {
        task,
        settings,
        events,
    };
    state.stats.waiting.fetch_add(1, Ordering::SeqCst);
    if let Err(e) = state.jobs.try_send(job) {
        state.stats.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(match e {
            mpsc::error::TrySendError::Full(_) => ApiError::busy(state.queue_size),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable("the model thread has stopped")
            }
        });
    }
    match receiver.recv().await {
        Some(Event::Started) => Ok(receiver),
        Some(Event::Failed(error)) => Err(error),
        Some(_) => Err(ApiError::internal("the model thread answered out of order")),
        None => Err(ApiError::unavailable(
            "the request was dropped (the server is stopping)",
        )),
    }
}

async fn chat_completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let request: ChatRequest = api::parse(&body)?;
    let mut shared = request.shared();
    shared.accept(&state.model_id)?;
    if request.logprobs == Some(true) {
        return Err(
            ApiError::invalid("logprobs are not supported").with_param(Some("logprobs".into()))
        );
    }
    shared.max_tokens = request.max_completion_tokens.or(shared.max_tokens);
    let hyper = shared.hyperparameters()?;
    let history = api::history(&request.messages)?;
    let (functions, forced_call) = api::functions(&request.tools, &request.tool_choice)?;
    if forced_call.is_some() && !state.harmony {
        return Err(ApiError::invalid(
            "tool_choice \"required\" or a named function needs a GPT-OSS (Harmony) model: \
             other models' chat templates cannot be made to call a tool; use \"auto\"",
        )
        .with_param(Some("tool_choice".into())));
    }
    let effort = api::reasoning_effort(&request.reasoning_effort)?;
    let wants_json = api::wants_json(&request.response_format)?;
    let mut setup = state.setup.clone();
    if let Some(effort) = effort {
        setup.reasoning_effort = Some(effort);
    }
    if wants_json {
        let schema = request
            .response_format
            .as_ref()
            .and_then(|f| f.json_schema.as_ref())
            .and_then(|s| s.get("schema"))
            .map(|s| format!(" It must match this JSON Schema: {s}"))
            .unwrap_or_default();
        let rule = format!("Answer with one JSON object and nothing else.{schema}");
        setup.instructions = Some(match setup.instructions.take() {
            Some(i) => format!("{i}\n\n{rule}"),
            None => rule,
        });
    }
    let buffer_answer = !state.harmony && !functions.is_empty();
    setup.functions = functions;
    setup.forced_call = forced_call;
    let settings = resolve(&state, hyper);
    let (stream, include_usage) = request.streaming();
    let receiver = submit(
        &state,
        Task::Chat {
            history,
            setup: Box::new(setup),
            buffer_answer,
        },
        settings,
    )
    .await?;
    let id = format!("chatcmpl-{:x}", now_nanos());
    if stream {
        Ok(stream_chat(state.clone(), receiver, id, include_usage).into_response())
    } else {
        Ok(collect_chat(&state, receiver, id).await?.into_response())
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn collect_chat(
    state: &AppState,
    mut receiver: mpsc::UnboundedReceiver<Event>,
    id: String,
) -> Result<axum::Json<Value>, ApiError> {
    while let Some(event) = receiver.recv().await {
        match event {
            Event::Done {
                finish_reason,
                usage,
                content,
                reasoning,
                calls,
            } => {
                let mut message = json!({"role": "assistant", "content": content});
                if let Some(reasoning) = reasoning {
                    message["reasoning_content"] = json!(reasoning);
                }
                if !calls.is_empty() {
                    if content.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = json!(
                        calls
                            .iter()
                            .map(|c| json!({
                                "id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments},
                            }))
                            .collect::<Vec<_>>()
                    );
                }
                return Ok(axum::Json(json!({
                    "id": id,
                    "object": "chat.completion",
                    "created": now(),
                    "model": state.model_id,
                    "system_fingerprint": null,
                    "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
                    "usage": usage,
                })));
            }
            Event::Failed(error) => return Err(error),
            _ => {}
        }
    }
    Err(ApiError::unavailable(
        "the generation was stopped (the server is stopping)",
    ))
}

/// Turns the model thread's events into OpenAI chunks, in a task of its
/// own: when the client goes away the chunk channel closes, the task drops
/// the event channel, and the model thread stops at its next token.
fn stream_chat(
    state: Shared,
    mut receiver: mpsc::UnboundedReceiver<Event>,
    id: String,
    include_usage: bool,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
    let (chunks, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let created = now();
        let chunk = |delta: Value, finish: Option<&str>| {
            let data = json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": state.model_id, "system_fingerprint": null,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            Ok(SseEvent::default().data(data.to_string()))
        };
        if chunks
            .send(chunk(json!({"role": "assistant", "content": ""}), None))
            .await
            .is_err()
        {
            return;
        }
        let mut calls = 0usize;
        while let Some(event) = receiver.recv().await {
            let out = match event {
                Event::Content(text) => chunk(json!({"content": text}), None),
                Event::Reasoning(text) => chunk(json!({"reasoning_content": text}), None),
                Event::CallStarted(call) => {
                    calls += 1;
                    chunk(
                        json!({"tool_calls": [{"index": calls - 1, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": ""}}]}),
                        None,
                    )
                }
                Event::CallArguments(text) => chunk(
                    json!({"tool_calls": [{"index": calls.saturating_sub(1), "function": {"arguments": text}}]}),
                    None,
                ),
                Event::Done {
                    finish_reason,
                    usage,
                    ..
                } => {
                    let _ = chunks.send(chunk(json!({}), Some(finish_reason))).await;
                    if include_usage {
                        let data = json!({
                            "id": id, "object": "chat.completion.chunk", "created": created,
                            "model": state.model_id, "system_fingerprint": null,
                            "choices": [], "usage": usage,
                        });
                        let _ = chunks
                            .send(Ok(SseEvent::default().data(data.to_string())))
                            .await;
                    }
                    break;
                }
                Event::Failed(error) => {
                    let _ = chunks
                        .send(Ok(SseEvent::default().data(error.body().to_string())))
                        .await;
                    break;
                }
                Event::Started => continue,
            };
            if chunks.send(out).await.is_err() {
                // The client is gone; dropping `receiver` stops the model.
                return;
            }
        }
        let _ = chunks.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(body))
}

async fn completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let request: CompletionRequest = api::parse(&body)?;
    let shared = request.shared();
    shared.accept(&state.model_id)?;
    if request.echo == Some(true) || request.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
        return Err(ApiError::invalid("echo and logprobs are not supported"));
    }
    let prompt = request.prompt.text("prompt")?;
    let hyper = shared.hyperparameters()?;
    let settings = resolve(&state, hyper);
    let (stream, include_usage) = request.streaming();
    let mut receiver = submit(&state, Task::Completion { prompt }, settings).await?;
    let id = format!("cmpl-{:x}", now_nanos());
    let created = now();
    let model = state.model_id.clone();
    if !stream {
        while let Some(event) = receiver.recv().await {
            match event {
                Event::Done {
                    finish_reason,
                    usage,
                    content,
                    ..
                } => {
                    return Ok(axum::Json(json!({
                        "id": id, "object": "text_completion", "created": created, "model": model,
                        "choices": [{"index": 0, "text": content, "logprobs": null, "finish_reason": finish_reason}],
                        "usage": usage,
                    }))
                    .into_response());
                }
                Event::Failed(error) => return Err(error),
                _ => {}
            }
        }
        return Err(ApiError::unavailable(
            "the generation was stopped (the server is stopping)",
        ));
    }
    let (chunks, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let chunk = |text: &str, finish: Option<&str>| {
            let data = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            });
            Ok(SseEvent::default().data(data.to_string()))
        };
        while let Some(event) = receiver.recv().await {
            let out = match event {
                Event::Content(text) => chunk(&text, None),
                Event::Done {
                    finish_reason,
                    usage,
                    ..
                } => {
                    let _ = chunks.send(chunk("", Some(finish_reason))).await;
                    if include_usage {
                        let data = json!({"id": id, "object": "text_completion", "created": created,
                            "model": model, "choices": [], "usage": usage});
                        let _ = chunks
                            .send(Ok(SseEvent::default().data(data.to_string())))
                            .await;
                    }
                    break;
                }
                Event::Failed(error) => {
                    let _ = chunks
                        .send(Ok(SseEvent::default().data(error.body().to_string())))
                        .await;
                    break;
                }
                _ => continue,
            };
            if chunks.send(out).await.is_err() {
                return;
            }
        }
        let _ = chunks.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(body)).into_response())
}
