//! `POST /v1/chat/completions`: the request checked and turned into a
//! conversation for the model thread, and its choices' events turned into a
//! `chat.completion` or a stream of `chat.completion.chunk`s.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use mlx_harmony_core::sampling::TokenLogprobs;
use mlx_harmony_grammar::OutputRules;

use crate::api::{self, ChatRequest, Usage};
use crate::choices::{self, Choices};
use crate::error::ApiError;
use crate::output;
use crate::worker::{Event, Task};
use crate::{Shared, body_bytes, now, now_nanos, resolve};

pub async fn chat_completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let request: ChatRequest = api::parse(&body)?;
    let mut shared = request.shared();
    let n = shared.accept(&state.model_id)?;
    let logprobs = output::logprobs_count(
        request.logprobs == Some(true),
        request.top_logprobs,
        "top_logprobs",
    )?;
    if request.top_logprobs.is_some_and(|n| n > 0) && request.logprobs != Some(true) {
        return Err(ApiError::invalid_at(
            "top_logprobs needs logprobs: true",
            "top_logprobs",
        ));
    }
    if let Some(modalities) = &request.modalities
        && modalities.iter().any(|m| m != "text")
    {
        return Err(ApiError::invalid("only the \"text\" modality is supported")
            .with_param(Some("modalities".into())));
    }
    api::refuse_unsupported(&[
        ("audio", request.audio.as_ref(), "the answer is text"),
        (
            "web_search_options",
            request.web_search_options.as_ref(),
            "start the server with --browser for a GPT-OSS model's own browsing",
        ),
    ])?;
    shared.max_tokens = request.max_completion_tokens.or(shared.max_tokens);
    let hyper = shared.hyperparameters()?;
    let logit_bias = shared.logit_bias()?;
    let history = api::history(&request.messages)?;
    let (tools, tool_choice) = api::legacy_functions(
        &request.tools,
        &request.tool_choice,
        &request.functions,
        &request.function_call,
    )?;
    let (functions, forced_call) = api::functions(&tools, &tool_choice)?;
    if forced_call.is_some() && !state.harmony {
        return Err(ApiError::invalid(
            "tool_choice \"required\" or a named function needs a GPT-OSS (Harmony) model: \
             other models' chat templates cannot be made to call a tool; use \"auto\"",
        )
        .with_param(Some("tool_choice".into())));
    }
    let effort = api::reasoning_effort(&request.reasoning_effort)?;
    let rules = OutputRules {
        answer: output::answer_format(&request.response_format)?,
        strict_tools: output::strict_tools(&tools),
    };
    let output = output::control(&state.grammars, &rules, "response_format", logprobs)?;
    let mut setup = state.setup.clone();
    if let Some(effort) = effort {
        setup.reasoning_effort = Some(effort);
    }
    // The model is also told: the grammar holds it to the format, and the
    // instruction helps it fill the format with a sensible answer.
    if rules.answer.is_some() {
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
    let mut settings = resolve(&state, hyper);
    settings.logit_bias = logit_bias;
    let (stream, include_usage) = request.streaming();
    let task = Task::Chat {
        history,
        setup: Box::new(setup),
        buffer_answer,
    };
    let choices = choices::submit(&state, task, settings, output, n).await?;
    let id = format!("chatcmpl-{:x}", now_nanos());
    if stream {
        Ok(stream_chat(
            state.clone(),
            choices,
            n,
            id,
            include_usage,
            logprobs.is_some(),
        )
        .into_response())
    } else {
        Ok(collect_chat(&state, choices, id, logprobs.is_some())
            .await?
            .into_response())
    }
}

async fn collect_chat(
    state: &crate::AppState,
    choices: Choices,
    id: String,
    wants_logprobs: bool,
) -> Result<axum::Json<Value>, ApiError> {
    let (finished, usage) = choices::collect(choices).await?;
    let choices: Vec<Value> = finished
        .into_iter()
        .enumerate()
        .map(|(index, done)| {
            let mut message = json!({"role": "assistant", "content": done.content});
            if let Some(reasoning) = done.reasoning() {
                message["reasoning_content"] = json!(reasoning);
            }
            if !done.calls.is_empty() {
                if done.content.is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = json!(
                    done.calls
                        .iter()
                        .map(|c| json!({
                            "id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }))
                        .collect::<Vec<_>>()
                );
            }
            let logprobs = match (&state.grammars, wants_logprobs) {
                (Ok(grammars), true) => {
                    json!({"content": output::chat_entries(grammars, &done.logprobs), "refusal": null})
                }
                _ => Value::Null,
            };
            json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": done.finish_reason})
        })
        .collect();
    Ok(axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": state.model_id,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage,
    })))
}

/// `chat.completion.chunk`s: a delta per event, the function calls of each
/// choice numbered as they start.
struct ChatChunks {
    id: String,
    model: String,
    created: u64,
    /// Per choice: the function calls started so far.
    calls: Vec<usize>,
    /// The model's vocabulary, when the request asked for log-probabilities.
    grammars: Option<mlx_harmony_grammar::Grammars>,
    /// Per choice: log-probabilities waiting for their content's chunk.
    logprobs: Vec<Vec<TokenLogprobs>>,
}

impl ChatChunks {
    fn chunk(&self, index: usize, delta: Value, finish: Option<&str>) -> Value {
        self.chunk_with(index, delta, finish, Value::Null)
    }

    fn chunk_with(
        &self,
        index: usize,
        delta: Value,
        finish: Option<&str>,
        logprobs: Value,
    ) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": null,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        })
    }
}

impl choices::ChunkWriter for ChatChunks {
    fn opening(&mut self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|index| self.chunk(index, json!({"role": "assistant", "content": ""}), None))
            .collect()
    }

    fn piece(&mut self, index: usize, event: Event) -> Option<Value> {
        // The server's own tool calls show in the reasoning.
        let delta = match event.as_reasoning() {
            Event::Logprobs(tokens) => {
                self.logprobs[index].extend(tokens);
                return None;
            }
            Event::Content(text) => {
                let logprobs = match &self.grammars {
                    Some(grammars) => json!({
                        "content": output::chat_entries(grammars, &std::mem::take(&mut self.logprobs[index])),
                        "refusal": null,
                    }),
                    None => Value::Null,
                };
                return Some(self.chunk_with(index, json!({"content": text}), None, logprobs));
            }
            Event::Reasoning(text) => json!({"reasoning_content": text}),
            Event::CallStarted(call) => {
                self.calls[index] += 1;
                json!({"tool_calls": [{"index": self.calls[index] - 1, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]})
            }
            Event::CallArguments(text) => {
                json!({"tool_calls": [{"index": self.calls[index].saturating_sub(1), "function": {"arguments": text}}]})
            }
            Event::Started
            | Event::Done { .. }
            | Event::Failed(_)
            | Event::ServerCall { .. }
            | Event::ServerResult { .. } => return None,
        };
        Some(self.chunk(index, delta, None))
    }

    fn finish(&mut self, index: usize, finish_reason: &'static str) -> Value {
        self.chunk(index, json!({}), Some(finish_reason))
    }

    fn usage(&mut self, usage: Usage) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": null, "choices": [], "usage": usage,
        })
    }
}

fn stream_chat(
    state: Shared,
    choices: Choices,
    n: usize,
    id: String,
    include_usage: bool,
    wants_logprobs: bool,
) -> choices::EventStream {
    let writer = ChatChunks {
        id,
        model: state.model_id.clone(),
        created: now(),
        calls: vec![0; n],
        grammars: state
            .grammars
            .as_ref()
            .ok()
            .filter(|_| wants_logprobs)
            .cloned(),
        logprobs: vec![Vec::new(); n],
    };
    choices::stream(choices, include_usage, writer)
}
