//! `POST /v1/responses` (OpenAI's Responses API), `GET` and `DELETE
//! /v1/responses/{id}`: a thin translation onto the same model-thread jobs as
//! chat completions. Input items become the engine's chat history (reasoning
//! items the assistant's reasoning, `function_call` items its tool calls,
//! `function_call_output` items tool messages); the reply's events become
//! output items (reasoning, message, function calls) and, when streamed, the
//! API's typed events. Responses are kept in a bounded, expiring in-memory
//! store for `previous_response_id`.

mod input;
mod output;
mod store;
mod stream;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use mlx_harmony_core::chat_template::ChatMessage;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{self, SharedFields};
use crate::choices;
use crate::error::ApiError;
use crate::worker::Task;
use crate::{Shared, body_bytes, now_nanos, resolve};
use mlx_harmony_grammar::OutputRules;

use input::{chat_tool_choice, chat_tools, history, response_format};
use output::Reply;
pub use store::ResponseStore;
use store::not_found;

/// `POST /v1/responses`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub max_tool_calls: Option<i64>,
    #[serde(default)]
    pub reasoning: Option<Reasoning>,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Sampling extensions, as on chat completions.
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    #[serde(default)]
    pub text: Option<TextOptions>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<Value>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub prompt: Option<Value>,
    /// Accepted and ignored (docs/SERVER.md): the prompt cache is automatic,
    /// there is one service tier, the context is never truncated silently.
    #[serde(default)]
    pub prompt_cache_key: Option<Value>,
    #[serde(default)]
    pub prompt_cache_retention: Option<Value>,
    #[serde(default)]
    pub client_metadata: Option<Value>,
    #[serde(default)]
    pub user: Option<Value>,
    #[serde(default)]
    pub safety_identifier: Option<Value>,
    #[serde(default)]
    pub service_tier: Option<Value>,
    #[serde(default)]
    pub truncation: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reasoning {
    #[serde(default)]
    pub effort: Option<String>,
    /// Accepted; the reasoning itself is returned, not a summary.
    #[serde(default)]
    pub summary: Option<Value>,
    #[serde(default)]
    pub generate_summary: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    #[serde(default)]
    pub format: Option<TextFormat>,
    #[serde(default)]
    pub verbosity: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub strict: Option<bool>,
}

pub async fn get_response(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .responses
        .get(&id)
        .map(|(response, _)| Json(response))
        .ok_or_else(|| not_found(&id))
}

pub async fn delete_response(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.responses.remove(&id) {
        Ok(Json(
            json!({"id": id, "object": "response.deleted", "deleted": true}),
        ))
    } else {
        Err(not_found(&id))
    }
}

/// Everything about a request that its response echoes back.
pub(crate) struct Echo {
    instructions: Option<String>,
    tools: Value,
    tool_choice: Value,
    parallel_tool_calls: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<i64>,
    previous_response_id: Option<String>,
    reasoning: Value,
    text: Value,
    store: bool,
    metadata: Value,
}

pub async fn create_response(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let request: ResponsesRequest = api::parse(&body)?;
    if request.model != state.model_id {
        return Err(ApiError::model_not_found(&request.model, &state.model_id));
    }
    api::refuse_unsupported(&[
        (
            "background",
            request
                .background
                .filter(|b| *b)
                .map(|_| &Value::Bool(true)),
            "responses run while the request is open; send it without `background`",
        ),
        (
            "conversation",
            request.conversation.as_ref(),
            "continue with previous_response_id instead",
        ),
        (
            "prompt",
            request.prompt.as_ref(),
            "stored prompt templates live on OpenAI's platform; send `instructions` and `input`",
        ),
    ])?;
    let wants_logprobs = request
        .include
        .iter()
        .flatten()
        .any(|i| i == "message.output_text.logprobs");
    let logprobs =
        crate::output::logprobs_count(wants_logprobs, request.top_logprobs, "top_logprobs")?;
    let fields = SharedFields {
        model: &request.model,
        max_tokens: request.max_output_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: request.min_p,
        seed: request.seed,
        stop: &None,
        repetition_penalty: request.repetition_penalty,
        n: None,
        frequency_penalty: None,
        presence_penalty: None,
        logit_bias: &None,
    };
    let hyper = fields.hyperparameters().map_err(|mut e| {
        if e.param.as_deref() == Some("max_tokens") {
            e.param = Some("max_output_tokens".into());
            e.message = e.message.replace("`max_tokens`", "`max_output_tokens`");
        }
        e
    })?;
    let earlier = match &request.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            state
                .responses
                .get(id)
                .ok_or_else(|| not_found(id).with_param(Some("previous_response_id".into())))?
                .1
        }
    };
    let history = history(&request.input, earlier)?;
    let tools = chat_tools(&request.tools)?;
    let tool_choice = chat_tool_choice(&request.tool_choice)?;
    let (functions, forced_call) = api::functions(&tools, &tool_choice)?;
    if forced_call.is_some() && !state.harmony {
        return Err(ApiError::invalid_at(
            "tool_choice \"required\" or a named function needs a GPT-OSS (Harmony) model: other \
             models' chat templates cannot be made to call a tool; use \"auto\"",
            "tool_choice",
        ));
    }
    let effort = api::reasoning_effort(&request.reasoning.as_ref().and_then(|r| r.effort.clone()))
        .map_err(|e| e.with_param(Some("reasoning.effort".into())))?;
    let format = response_format(&request.text);
    let rules = OutputRules {
        answer: crate::output::answer_format(&format)
            .map_err(|e| e.with_param(Some("text.format".into())))?,
        strict_tools: crate::output::strict_tools(&tools),
    };
    let wants_json = rules.answer.is_some();
    let control = crate::output::control(&state.grammars, &rules, "text.format", logprobs)?;
    let mut setup = state.setup.clone();
    if let Some(effort) = effort {
        setup.reasoning_effort = Some(effort);
    }
    let mut instructions: Vec<String> = setup.instructions.take().into_iter().collect();
    instructions.extend(request.instructions.clone());
    if wants_json {
        let schema = format
            .as_ref()
            .and_then(|f| f.json_schema.as_ref())
            .and_then(|s| s.get("schema"))
            .map(|s| format!(" It must match this JSON Schema: {s}"))
            .unwrap_or_default();
        instructions.push(format!(
            "Answer with one JSON object and nothing else.{schema}"
        ));
    }
    setup.instructions = (!instructions.is_empty()).then(|| instructions.join("\n\n"));
    let buffer_answer = !state.harmony && !functions.is_empty();
    setup.functions = functions;
    setup.forced_call = forced_call;
    let settings = resolve(&state, hyper);
    let echo = Echo {
        instructions: request.instructions.clone(),
        tools: json!(request.tools.clone().unwrap_or_default()),
        tool_choice: request.tool_choice.clone().unwrap_or(json!("auto")),
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        temperature: request.temperature,
        top_p: request.top_p,
        max_output_tokens: request.max_output_tokens,
        previous_response_id: request.previous_response_id.clone(),
        reasoning: json!({
            "effort": request.reasoning.as_ref().and_then(|r| r.effort.clone()),
            "summary": null,
        }),
        text: json!({"format": request.text.as_ref().and_then(|t| t.format.as_ref()).map_or(
        json!({"type": "text"}),
        |f| {
            let mut format = json!({"type": f.kind});
            if f.kind == "json_schema" {
                format["name"] = json!(f.name);
                format["schema"] = json!(f.schema);
                format["strict"] = json!(f.strict);
                format["description"] = json!(f.description);
            }
            format
        })}),
        store: request.store.unwrap_or(true),
        metadata: request.metadata.clone().unwrap_or_else(|| json!({})),
    };
    let task = Task::Chat {
        history: history.clone(),
        setup: Box::new(setup),
        buffer_answer,
    };
    let choices = choices::submit(&state, task, settings, control, 1).await?;
    let reply = Reply::new(format!("resp_{:x}", now_nanos()), echo);
    if request.stream {
        let grammars = logprobs.and_then(|_| state.grammars.as_ref().ok().cloned());
        Ok(stream::stream(state.clone(), choices, reply, history, grammars).into_response())
    } else {
        let (mut finished, usage) = choices::collect(choices).await?;
        let done = finished.remove(0);
        let mut reply = reply;
        reply.finish_from(&done.steps, &done.content, &done.calls);
        if let (Some(_), Ok(grammars)) = (logprobs, &state.grammars) {
            // The answer's tokens go with its (one) output_text.
            let entries = crate::output::chat_entries(grammars, &done.logprobs);
            for item in &mut reply.items {
                if let output::Item::Message { logprobs, .. } = item {
                    *logprobs = entries.clone();
                }
            }
        }
        let response = reply.response(&state.model_id, "completed", done.finish_reason, &usage);
        keep(&state, &reply, &response, history);
        Ok(Json(response).into_response())
    }
}

/// Stores a finished response with its conversation, when `store` allows.
fn keep(state: &crate::AppState, reply: &Reply, response: &Value, mut history: Vec<ChatMessage>) {
    if !reply.echo.store {
        return;
    }
    history.push(reply.as_message());
    state
        .responses
        .insert(reply.id.clone(), response.clone(), history);
}
