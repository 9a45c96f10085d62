//! `POST /v1/completions`: plain text continued, as `text_completion`
//! objects or a stream of them.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{self, CompletionRequest, Usage};
use crate::choices;
use crate::error::ApiError;
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
    if request.echo == Some(true) || request.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
        return Err(ApiError::invalid("echo and logprobs are not supported"));
    }
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
    let prompt = request.prompt.text("prompt")?;
    let hyper = shared.hyperparameters()?;
    let mut settings = resolve(&state, hyper);
    settings.logit_bias = shared.logit_bias()?;
    let (stream, include_usage) = request.streaming();
    let mut choices = choices::submit(&state, Task::Completion { prompt }, settings, n).await?;
    let id = format!("cmpl-{:x}", now_nanos());
    let created = now();
    let model = state.model_id.clone();
    if !stream {
        let finished = choices::collect(choices, n).await?;
        let usage =
            choices::combined_usage(&finished.iter().map(|f| f.usage.clone()).collect::<Vec<_>>());
        let choices: Vec<Value> = finished
            .into_iter()
            .enumerate()
            .map(|(index, done)| {
                json!({"index": index, "text": done.content, "logprobs": null,
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
    let (chunks, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let chunk = |index: usize, text: &str, finish: Option<&str>| {
            let data = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": index, "text": text, "logprobs": null, "finish_reason": finish}],
            });
            Ok(SseEvent::default().data(data.to_string()))
        };
        let mut usages: Vec<Usage> = Vec::with_capacity(n);
        loop {
            // The client's leaving is noticed even while no event comes.
            let (index, event) = tokio::select! {
                next = choices.recv() => match next {
                    Some(next) => next,
                    None => break,
                },
                () = chunks.closed() => return,
            };
            let out = match event {
                Event::Content(text) => chunk(index, &text, None),
                Event::Done {
                    finish_reason,
                    usage,
                    ..
                } => {
                    usages.push(usage);
                    let _ = chunks.send(chunk(index, "", Some(finish_reason))).await;
                    if usages.len() < n {
                        continue;
                    }
                    if include_usage {
                        let data = json!({"id": id, "object": "text_completion", "created": created,
                            "model": model, "choices": [], "usage": choices::combined_usage(&usages)});
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
