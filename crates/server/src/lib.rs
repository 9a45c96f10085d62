//! `mlx-harmony-server`'s behaviour: OpenAI's (Chat Completions, Completions,
//! Responses) and Anthropic's (Messages) HTTP APIs over the
//! shared `TokenGenerator`.
//!
//! One model thread decodes up to `--max-concurrency` requests together
//! (continuous batching); more wait in a bounded queue (429 when it is full). Handlers are plain async functions
//! over one [`AppState`]: they check the request, queue a job and turn the
//! model thread's events into an OpenAI response or server-sent events.

pub mod anthropic;
pub mod api;
pub mod chat;
pub mod choices;
pub mod completions;
pub mod error;
pub mod metrics;
pub mod output;
pub mod responses;
pub mod serve;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mlx_harmony_config::settings::{self, Hyperparameters};
use mlx_harmony_core::generate::Cancel;
use mlx_harmony_core::prompt::PromptSetup;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::metrics::Stats;
use crate::worker::Job;

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
    /// Responses kept for `previous_response_id` (the Responses API).
    pub responses: responses::ResponseStore,
    /// The model's vocabulary for structured outputs and log-probabilities,
    /// or why it could not be read.
    pub grammars: Result<mlx_harmony_grammar::Grammars, String>,
}

pub type Shared = Arc<AppState>;

pub(crate) fn now() -> u64 {
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
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/responses", post(responses::create_response))
        .route("/", get(anthropic::root))
        .route("/v1/messages", post(anthropic::create_message))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route(
            "/v1/responses/{id}",
            get(responses::get_response).delete(responses::delete_response),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .with_state(state)
}

async fn require_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let open = matches!(
        request.uri().path(),
        "/" | "/health" | "/v1/health" | "/metrics"
    );
    if let Some(key) = state.api_key.as_deref().filter(|_| !open) {
        let headers = request.headers();
        // OpenAI clients send `Authorization: Bearer`, Anthropic's `x-api-key`.
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        if !given.is_some_and(|given| same_secret(given.as_bytes(), key.as_bytes())) {
            if request.uri().path().starts_with("/v1/messages") {
                return anthropic::AnthropicError(ApiError {
                    message: "missing or wrong API key: send `x-api-key: <key>` with the key the \
                              server was started with (--api-key)"
                        .into(),
                    ..ApiError::unauthorized()
                })
                .into_response();
            }
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name is case-insensitive (RFC 9110).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Compares a given key with the server's in time that does not depend on
/// where they differ, so that response times do not reveal the key.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
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
        // /health needs no key: with one set, the model's name (by default
        // its path) is only for those who have it (GET /v1/models).
        "model": if state.api_key.is_some() { Value::Null } else { json!(state.model_id) },
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

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
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
pub(crate) fn resolve(state: &AppState, request: Hyperparameters) -> settings::GenerationSettings {
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

pub(crate) fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
        assert!(!same_secret(b"x3cret", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
