//! `POST /v1/completions`: plain text continued, as `text_completion`
//! objects or a stream of them. A request may carry several prompts (a
//! list of texts or of token-id lists): each runs as its own `n` sequences
//! of the batch, its choices numbered after the previous prompt's.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use mlx_harmony_core::sampling::TokenLogprobs;

use crate::api::{self, CompletionRequest, Usage};
use crate::choices;
use crate::error::ApiError;
use crate::output;
use crate::worker::{Event, Task};
use crate::{Shared, body_bytes, now, now_nanos, resolve};

pub async fn completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let request: CompletionRequest = api::parse(&body)?;
    let shared = request.shared();
    let n = shared.accept(&state.model_id)?;
    if request.echo == Some(true) {
        return Err(ApiError::invalid_at("echo is not supported", "echo"));
    }
    let top = match &request.logprobs {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_i64().ok_or_else(|| {
            ApiError::invalid_at("logprobs is a whole number (0 to 20)", "logprobs")
        })?),
    };
    let logprobs = output::logprobs_count(false, top, "logprobs")?;
    let control = output::control(&state.grammars, &Default::default(), "logprobs", logprobs)?;
    let grammars = state
        .grammars
        .as_ref()
        .ok()
        .filter(|_| logprobs.is_some())
        .cloned();
    api::refuse_unsupported(&[(
        "suffix",
        request.suffix.as_ref(),
        "text is only continued, not inserted",
    )])?;
    if request.best_of.is_some_and(|b| b != 1 && b != n as i64) {
        return Err(ApiError::invalid(
            "`best_of` other than 1 (or n) is not supported: ask for `n` choices instead",
        )
        .with_param(Some("best_of".into())));
    }
    let prompts = request.prompts()?;
    if prompts.len() * n > api::MAX_COMPLETION_SEQUENCES {
        return Err(ApiError::invalid(format!(
            "{} prompts with n = {n} would start {} sequences; at most {} a request: \
             send the prompts in several requests",
            prompts.len(),
            prompts.len() * n,
            api::MAX_COMPLETION_SEQUENCES
        ))
        .with_param(Some("prompt".into())));
    }
    let total = prompts.len() * n;
    let hyper = shared.hyperparameters()?;
    let mut settings = resolve(&state, hyper);
    settings.logit_bias = shared.logit_bias()?;
    let (stream, include_usage) = request.streaming();
    let tasks = prompts
        .into_iter()
        .map(|prompt| Task::Completion { prompt })
        .collect();
    let choices = choices::submit_prompts(&state, tasks, settings, control, n).await?;
    let id = format!("cmpl-{:x}", now_nanos());
    let created = now();
    let model = state.model_id.clone();
    if !stream {
        let (finished, usage) = choices::collect(choices).await?;
        let choices: Vec<Value> = finished
            .into_iter()
            .enumerate()
            .map(|(index, done)| {
                let logprobs = grammars
                    .as_ref()
                    .map(|g| output::completion_logprobs(g, &done.logprobs, 0))
                    .unwrap_or(Value::Null);
                json!({"index": index, "text": done.content, "logprobs": logprobs,
                    "finish_reason": done.finish_reason})
            })
            .collect();
        return Ok(axum::Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": choices,
            "usage": usage,
        }))
        .into_response());
    }
    let writer = CompletionChunks {
        id,
        model,
        created,
        grammars,
        logprobs: vec![Vec::new(); total],
        offsets: vec![0; total],
    };
    Ok(choices::stream(choices, include_usage, writer).into_response())
}

/// `text_completion` chunks: the text of each event.
struct CompletionChunks {
    id: String,
    model: String,
    created: u64,
    /// The model's vocabulary, when the request asked for log-probabilities.
    grammars: Option<mlx_harmony_grammar::Grammars>,
    /// Per choice: log-probabilities waiting for their text's chunk, and
    /// the length of the text sent so far.
    logprobs: Vec<Vec<TokenLogprobs>>,
    offsets: Vec<usize>,
}

impl CompletionChunks {
    fn chunk(&self, index: usize, text: &str, finish: Option<&str>, logprobs: Value) -> Value {
        json!({
            "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        })
    }
}

impl choices::ChunkWriter for CompletionChunks {
    fn opening(&mut self, _n: usize) -> Vec<Value> {
        Vec::new()
    }

    fn piece(&mut self, index: usize, event: Event) -> Option<Value> {
        match event {
            Event::Logprobs(tokens) => {
                self.logprobs[index].extend(tokens);
                None
            }
            Event::Content(text) => {
                let logprobs = match &self.grammars {
                    Some(grammars) => output::completion_logprobs(
                        grammars,
                        &std::mem::take(&mut self.logprobs[index]),
                        self.offsets[index],
                    ),
                    None => Value::Null,
                };
                self.offsets[index] += text.len();
                Some(self.chunk(index, &text, None, logprobs))
            }
            _ => None,
        }
    }

    fn finish(&mut self, index: usize, finish_reason: &'static str) -> Value {
        self.chunk(index, "", Some(finish_reason), Value::Null)
    }

    fn usage(&mut self, usage: Usage) -> Value {
        json!({"id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model, "choices": [], "usage": usage})
    }
}
