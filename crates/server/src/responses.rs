//! `POST /v1/responses` (OpenAI's Responses API), `GET` and `DELETE
//! /v1/responses/{id}`: a thin translation onto the same model-thread jobs as
//! chat completions. Input items become the engine's chat history (reasoning
//! items the assistant's reasoning, `function_call` items its tool calls,
//! `function_call_output` items tool messages); the reply's events become
//! output items (reasoning, message, function calls) and, when streamed, the
//! API's typed events. Responses are kept in a bounded, expiring in-memory
//! store for `previous_response_id`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use mlx_harmony_core::chat_template::{ChatMessage, FunctionCall as TemplateCall, ToolCall};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::api::{self, FunctionSpec, ResponseFormat, SharedFields, ToolSpec, Usage};
use crate::choices::{self, Choices};
use crate::error::ApiError;
use crate::worker::{Event, FunctionCall, Step, Task};
use crate::{Shared, body_bytes, now, now_nanos, resolve};

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

/// How long a stored response is kept, and how many at most.
const STORE_TTL: Duration = Duration::from_secs(3600);
const STORE_CAPACITY: usize = 1024;

/// A stored response: what `GET` returns, and the conversation it ended
/// (its input and its output) for a request that continues it.
struct Stored {
    response: Value,
    conversation: Vec<ChatMessage>,
    at: Instant,
}

/// Responses kept for `previous_response_id` and `GET /v1/responses/{id}`:
/// at most [`STORE_CAPACITY`], each for [`STORE_TTL`]; the oldest go first.
#[derive(Default)]
pub struct ResponseStore {
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
}

impl ResponseStore {
    fn insert(&self, id: String, response: Value, conversation: Vec<ChatMessage>) {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (map, order) = &mut *guard;
        Self::expire(map, order);
        while map.len() >= STORE_CAPACITY {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            map.remove(&oldest);
        }
        order.push_back(id.clone());
        map.insert(
            id,
            Stored {
                response,
                conversation,
                at: Instant::now(),
            },
        );
    }

    fn expire(map: &mut HashMap<String, Stored>, order: &mut VecDeque<String>) {
        while let Some(oldest) = order.front() {
            match map.get(oldest) {
                Some(s) if s.at.elapsed() < STORE_TTL => break,
                _ => {
                    let id = order.pop_front().expect("front exists");
                    map.remove(&id);
                }
            }
        }
    }

    fn get(&self, id: &str) -> Option<(Value, Vec<ChatMessage>)> {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (map, order) = &mut *guard;
        Self::expire(map, order);
        map.get(id)
            .map(|s| (s.response.clone(), s.conversation.clone()))
    }

    fn remove(&self, id: &str) -> bool {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (map, order) = &mut *guard;
        order.retain(|o| o != id);
        map.remove(id).is_some()
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        code: Some("not_found"),
        ..ApiError::invalid(format!(
            "no response with id {id:?}: responses are kept in memory for an hour (at most \
             {STORE_CAPACITY}), only when `store` is not false, and are lost when the server restarts"
        ))
    }
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

fn invalid(message: impl Into<String>, param: impl Into<String>) -> ApiError {
    ApiError::invalid(message).with_param(Some(param.into()))
}

/// The text of a content value: a string, or a list of text parts
/// (`input_text`, `output_text`, `text`; a refusal counts as text).
fn content_text(content: &Value, field: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                let piece = match kind {
                    "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                        part.get("text")
                    }
                    "refusal" => part.get("refusal"),
                    _ => {
                        return Err(invalid(
                            format!(
                                "content parts of type {kind:?} are not supported; send \
                                 input_text (this server's models read text only)"
                            ),
                            format!("{field}[{i}].type"),
                        ));
                    }
                };
                match piece.and_then(Value::as_str) {
                    Some(t) => text.push_str(t),
                    None => {
                        return Err(invalid(
                            format!("a {kind} part needs its text"),
                            format!("{field}[{i}]"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(
            "content is a string or a list of content parts",
            field,
        )),
    }
}

fn string_field<'a>(item: &'a Value, key: &str, field: &str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("{field} needs `{key}` (a string)"),
            format!("{field}.{key}"),
        )
    })
}

/// The request's `input` as chat history, after `earlier` (the stored
/// conversation of `previous_response_id`).
pub fn history(input: &Value, earlier: Vec<ChatMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out = earlier;
    let items = match input {
        Value::String(text) => {
            out.push(ChatMessage::new("user", text));
            return Ok(out);
        }
        Value::Array(items) => items,
        _ => {
            return Err(invalid(
                "`input` is a string or a list of input items",
                "input",
            ));
        }
    };
    // Reasoning waits for the assistant output it belongs to.
    let mut reasoning: Option<String> = None;
    // Whether the last message of `out` is an assistant turn that function
    // calls (and reasoning) of this input extend.
    let mut open_assistant = false;
    for (i, item) in items.iter().enumerate() {
        let field = format!("input[{i}]");
        let kind =
            item.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if item.get("role").is_some() {
                    "message"
                } else {
                    ""
                });
        match kind {
            "message" => {
                let role = string_field(item, "role", &field)?;
                let content = content_text(
                    item.get("content").unwrap_or(&Value::Null),
                    &format!("{field}.content"),
                )?;
                match role {
                    "user" | "system" | "developer" => {
                        out.push(ChatMessage::new(role, &content));
                        open_assistant = false;
                    }
                    "assistant" => {
                        let mut message = ChatMessage::new("assistant", &content);
                        message.reasoning_content = reasoning.take();
                        out.push(message);
                        open_assistant = true;
                    }
                    other => {
                        return Err(invalid(
                            format!(
                                "unknown role {other:?}; use user, system, developer or assistant"
                            ),
                            format!("{field}.role"),
                        ));
                    }
                }
            }
            "reasoning" => {
                // Our reasoning items carry the text in `content` and, for
                // clients that keep only `encrypted_content`, there too.
                let mut text = content_text(
                    item.get("content").unwrap_or(&Value::Null),
                    &format!("{field}.content"),
                )?;
                if text.is_empty()
                    && let Some(opaque) = item.get("encrypted_content").and_then(Value::as_str)
                {
                    text = opaque.to_string();
                }
                if !text.is_empty() {
                    reasoning = Some(match reasoning.take() {
                        Some(before) => format!("{before}\n{text}"),
                        None => text,
                    });
                }
            }
            "function_call" => {
                let name = string_field(item, "name", &field)?;
                let call_id = string_field(item, "call_id", &field)?;
                let arguments = string_field(item, "arguments", &field)?;
                let call = ToolCall {
                    id: call_id.to_string(),
                    kind: "function".into(),
                    function: TemplateCall {
                        name: name.to_string(),
                        arguments: serde_json::from_str(arguments)
                            .unwrap_or_else(|_| Value::String(arguments.to_string())),
                    },
                };
                let extend = open_assistant
                    && reasoning.is_none()
                    && out.last().is_some_and(|m| m.role == "assistant");
                if extend {
                    out.last_mut().expect("checked").tool_calls.push(call);
                } else {
                    let mut message = ChatMessage::new("assistant", "");
                    message.reasoning_content = reasoning.take();
                    message.tool_calls.push(call);
                    out.push(message);
                    open_assistant = true;
                }
            }
            "function_call_output" => {
                let call_id = string_field(item, "call_id", &field)?;
                let output = content_text(
                    item.get("output").unwrap_or(&Value::Null),
                    &format!("{field}.output"),
                )?;
                let name = out
                    .iter()
                    .rev()
                    .flat_map(|m| m.tool_calls.iter())
                    .find(|c| c.id == call_id)
                    .map(|c| c.function.name.clone());
                let Some(name) = name else {
                    return Err(invalid(
                        format!("call_id {call_id:?} answers no function_call before it"),
                        format!("{field}.call_id"),
                    ));
                };
                let mut message = ChatMessage::new("tool", &output);
                message.tool_call_id = Some(call_id.to_string());
                message.name = Some(name);
                out.push(message);
                open_assistant = false;
            }
            "item_reference" => {
                return Err(invalid(
                    "item_reference is not supported: send the item itself, or continue a stored \
                     response with previous_response_id",
                    format!("{field}.type"),
                ));
            }
            "" => {
                return Err(invalid(
                    "an input item needs a `type` (message, function_call, function_call_output, \
                     reasoning) or a `role`",
                    field,
                ));
            }
            other => {
                return Err(invalid(
                    format!(
                        "input items of type {other:?} are not supported; this server takes \
                         message, function_call, function_call_output and reasoning items"
                    ),
                    format!("{field}.type"),
                ));
            }
        }
    }
    if let Some(left) = reasoning {
        // Reasoning with no output after it: keep it with an empty turn.
        let mut message = ChatMessage::new("assistant", "");
        message.reasoning_content = Some(left);
        out.push(message);
    }
    if out.is_empty() {
        return Err(invalid("`input` must not be empty", "input"));
    }
    Ok(out)
}

/// The request's tools in chat-completions form. Function tools are
/// declared to the model; `web_search` (answered by the server's own
/// browser tool when it runs with --browser) and `namespace` groups (not
/// offered to the model) are accepted and left out; other hosted tools are
/// refused.
fn chat_tools(tools: &Option<Vec<Value>>) -> Result<Option<Vec<ToolSpec>>, ApiError> {
    let Some(tools) = tools else { return Ok(None) };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let field = format!("tools[{i}]");
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "function" => {
                let spec: FunctionSpec = serde_json::from_value(json!({
                    "name": tool.get("name").cloned().unwrap_or(Value::Null),
                    "description": tool.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": tool.get("parameters").cloned().unwrap_or(Value::Null),
                    "strict": tool.get("strict").cloned().unwrap_or(Value::Null),
                }))
                .map_err(|e| invalid(format!("{field}: {e}"), field.clone()))?;
                out.push(ToolSpec {
                    kind: "function".into(),
                    function: spec,
                });
            }
            "web_search" | "web_search_preview" | "namespace" => {}
            other => {
                return Err(invalid(
                    format!(
                        "tools of type {other:?} are not supported; declare function tools (the \
                         server runs python and browser itself with --python/--browser)"
                    ),
                    format!("{field}.type"),
                ));
            }
        }
    }
    Ok(Some(out))
}

/// `tool_choice` in chat-completions form.
fn chat_tool_choice(choice: &Option<Value>) -> Result<Option<Value>, ApiError> {
    match choice {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!(s))),
        Some(Value::Object(o)) if o.get("type") == Some(&json!("function")) => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                )),
                None => Err(invalid(
                    "a named tool_choice is {\"type\": \"function\", \"name\": \"…\"}",
                    "tool_choice.name",
                )),
            }
        }
        Some(other) => Err(invalid(
            format!(
                "tool_choice {other} is not supported: use \"auto\", \"none\", \"required\" or \
                 {{\"type\": \"function\", \"name\": \"…\"}}"
            ),
            "tool_choice",
        )),
    }
}

/// `text.format` as a chat `response_format`.
fn response_format(text: &Option<TextOptions>) -> Option<ResponseFormat> {
    let format = text.as_ref()?.format.as_ref()?;
    Some(ResponseFormat {
        kind: format.kind.clone(),
        json_schema: (format.kind == "json_schema").then(
            || json!({"name": format.name, "schema": format.schema, "strict": format.strict}),
        ),
    })
}

/// Everything about a request that its response echoes back.
struct Echo {
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
    if request.top_logprobs.is_some_and(|n| n > 0) {
        return Err(invalid("logprobs are not supported", "top_logprobs"));
    }
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
        return Err(invalid(
            "tool_choice \"required\" or a named function needs a GPT-OSS (Harmony) model: other \
             models' chat templates cannot be made to call a tool; use \"auto\"",
            "tool_choice",
        ));
    }
    let effort = api::reasoning_effort(&request.reasoning.as_ref().and_then(|r| r.effort.clone()))
        .map_err(|e| e.with_param(Some("reasoning.effort".into())))?;
    let format = response_format(&request.text);
    let wants_json =
        api::wants_json(&format).map_err(|e| e.with_param(Some("text.format".into())))?;
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
    let choices = choices::submit(&state, task, settings, 1).await?;
    let reply = Reply::new(format!("resp_{:x}", now_nanos()), echo);
    if request.stream {
        Ok(stream(state.clone(), choices, reply, history).into_response())
    } else {
        let (mut finished, usage) = choices::collect(choices, 1).await?;
        let done = finished.remove(0);
        let mut reply = reply;
        reply.finish_from(&done.steps, &done.content, &done.calls);
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

/// One output item as it is built.
#[derive(Clone, Debug)]
enum Item {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call: FunctionCall,
    },
    /// A call the server ran itself: python as a `code_interpreter_call`,
    /// browser as a `web_search_call`.
    Tool {
        id: String,
        recipient: String,
        code: String,
        output: Option<String>,
    },
}

/// Whether a server-side call has an item of its own (python, browser);
/// others (apply_patch) stay in the reasoning text.
fn has_item(recipient: &str) -> bool {
    recipient == "python" || recipient == "browser" || recipient.starts_with("browser.")
}

/// A browser call's `action`: what it searched, opened or looked for.
fn browser_action(recipient: &str, code: &str) -> Value {
    let args: Value = serde_json::from_str(code).unwrap_or(Value::Null);
    match recipient.strip_prefix("browser.").unwrap_or("") {
        "open" => json!({"type": "open_page", "url": args.get("id").filter(|v| v.is_string())}),
        "find" => json!({"type": "find", "pattern": args.get("pattern"), "url": null}),
        _ => json!({"type": "search", "query": args.get("query").cloned().unwrap_or(json!(code))}),
    }
}

impl Item {
    fn id(&self) -> &str {
        match self {
            Item::Reasoning { id, .. }
            | Item::Message { id, .. }
            | Item::Call { id, .. }
            | Item::Tool { id, .. } => id,
        }
    }

    /// The item as the API shows it, `status` "in_progress" or "completed".
    fn json(&self, status: &str) -> Value {
        match self {
            Item::Reasoning { id, text } => json!({
                "type": "reasoning", "id": id, "summary": [],
                "content": if status == "completed" || !text.is_empty() {
                    json!([{"type": "reasoning_text", "text": text}])
                } else { json!([]) },
                // Clients that keep the conversation themselves (store:
                // false) send this back; it is the reasoning's text.
                "encrypted_content": text,
                "status": status,
            }),
            Item::Message { id, text } => json!({
                "type": "message", "id": id, "role": "assistant", "status": status,
                "content": if status == "completed" || !text.is_empty() {
                    json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
                } else { json!([]) },
            }),
            Item::Call { id, call } => json!({
                "type": "function_call", "id": id, "call_id": call.id, "name": call.name,
                "arguments": call.arguments, "status": status,
            }),
            Item::Tool {
                id,
                recipient,
                code,
                output,
            } if recipient == "python" => json!({
                "type": "code_interpreter_call", "id": id, "status": status, "code": code,
                "container_id": "local",
                "outputs": output.as_ref().map(|logs| json!([{"type": "logs", "logs": logs}])),
            }),
            Item::Tool {
                id,
                recipient,
                code,
                ..
            } => json!({
                "type": "web_search_call", "id": id, "status": status,
                "action": browser_action(recipient, code),
            }),
        }
    }
}

/// A response's output as it is built, and what it echoes of the request.
struct Reply {
    id: String,
    created_at: u64,
    items: Vec<Item>,
    echo: Echo,
}

fn item_id(prefix: &str) -> String {
    format!("{prefix}_{:x}", now_nanos())
}

impl Reply {
    fn new(id: String, echo: Echo) -> Self {
        Reply {
            id,
            created_at: now(),
            items: Vec::new(),
            echo,
        }
    }

    /// The items of a reply read whole (not streamed): its steps in order
    /// (reasoning, the server's own calls), then the message, then the calls.
    fn finish_from(&mut self, steps: &[Step], content: &str, calls: &[FunctionCall]) {
        for step in steps {
            let text = match step {
                Step::Reasoning(text) => text.clone(),
                Step::ServerCall { recipient, code } if has_item(recipient) => {
                    self.items.push(Item::Tool {
                        id: item_id(if recipient == "python" { "ci" } else { "ws" }),
                        recipient: recipient.clone(),
                        code: code.clone(),
                        output: None,
                    });
                    continue;
                }
                Step::ServerCall { recipient, code } => format!("[call {recipient}]\n{code}"),
                Step::ServerResult { author, content } => {
                    if let Some(Item::Tool { output, .. }) = self.items.last_mut()
                        && output.is_none()
                    {
                        *output = Some(content.clone());
                        continue;
                    }
                    format!("[{author}]\n{content}")
                }
            };
            match self.items.last_mut() {
                Some(Item::Reasoning { text: all, .. }) => {
                    all.push('\n');
                    all.push_str(&text);
                }
                _ => self.items.push(Item::Reasoning {
                    id: item_id("rs"),
                    text,
                }),
            }
        }
        if !content.is_empty() || calls.is_empty() {
            self.items.push(Item::Message {
                id: item_id("msg"),
                text: content.to_string(),
            });
        }
        for call in calls {
            self.items.push(Item::Call {
                id: item_id("fc"),
                call: call.clone(),
            });
        }
    }

    /// The reply as the assistant's turn of the stored conversation.
    fn as_message(&self) -> ChatMessage {
        let mut message = ChatMessage::new("assistant", "");
        let mut reasoning = Vec::new();
        for item in &self.items {
            match item {
                Item::Reasoning { text, .. } => reasoning.push(text.clone()),
                Item::Message { text, .. } => message.content.push_str(text),
                // The server's own calls belonged to this turn's reasoning.
                Item::Tool { .. } => {}
                Item::Call { call, .. } => message.tool_calls.push(ToolCall {
                    id: call.id.clone(),
                    kind: "function".into(),
                    function: TemplateCall {
                        name: call.name.clone(),
                        arguments: serde_json::from_str(&call.arguments)
                            .unwrap_or_else(|_| Value::String(call.arguments.clone())),
                    },
                }),
            }
        }
        message.reasoning_content = (!reasoning.is_empty()).then(|| reasoning.join("\n"));
        message
    }

    /// The response object. `finish_reason` "length" makes it incomplete.
    fn response(&self, model: &str, status: &str, finish_reason: &str, usage: &Usage) -> Value {
        let incomplete = status == "completed" && finish_reason == "length";
        let status = if incomplete { "incomplete" } else { status };
        let item_status = if status == "in_progress" {
            "in_progress"
        } else {
            "completed"
        };
        let output: Vec<Value> = self.items.iter().map(|i| i.json(item_status)).collect();
        let text: String = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let echo = &self.echo;
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": echo.instructions,
            "max_output_tokens": echo.max_output_tokens,
            "model": model,
            "output": output,
            "output_text": text,
            "parallel_tool_calls": echo.parallel_tool_calls,
            "previous_response_id": echo.previous_response_id,
            "reasoning": echo.reasoning,
            "store": echo.store,
            "temperature": echo.temperature,
            "text": echo.text,
            "tool_choice": echo.tool_choice,
            "tools": echo.tools,
            "top_p": echo.top_p,
            "truncation": "disabled",
            "metadata": echo.metadata,
            "usage": null,
        });
        if status != "in_progress" {
            response["usage"] = usage_json(usage);
        }
        response
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_tokens_details.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.completion_tokens_details.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    })
}

/// The typed events of a streamed response, numbered.
struct Events {
    sender: mpsc::Sender<Result<SseEvent, Infallible>>,
    sequence: u64,
}

impl Events {
    /// Sends one event; false when the client has gone.
    async fn send(&mut self, kind: &str, mut data: Map<String, Value>) -> bool {
        data.insert("type".into(), json!(kind));
        data.insert("sequence_number".into(), json!(self.sequence));
        self.sequence += 1;
        let event = SseEvent::default()
            .event(kind)
            .data(Value::Object(data).to_string());
        self.sender.send(Ok(event)).await.is_ok()
    }
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Streams a response: `response.created`, `response.in_progress`, each
/// output item opened, its deltas, closed, then `response.completed` (or
/// `response.incomplete`); a failure is an `error` event. The finished
/// response is stored as a non-streamed one would be.
fn stream(
    state: Shared,
    mut choices: Choices,
    mut reply: Reply,
    history: Vec<ChatMessage>,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
    let (sender, body) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut events = Events {
            sender,
            sequence: 0,
        };
        let model = state.model_id.clone();
        let opening = reply.response(&model, "in_progress", "", &Usage::new(0, 0, 0));
        for kind in ["response.created", "response.in_progress"] {
            if !events
                .send(kind, fields(json!({"response": opening})))
                .await
            {
                return;
            }
        }
        // The item being streamed (its index in reply.items).
        let mut open: Option<usize> = None;
        loop {
            let event = tokio::select! {
                next = choices.recv() => match next {
                    Some((_, event)) => event,
                    None => return,
                },
                () = events.sender.closed() => return,
            };
            let ok = match event {
                Event::Reasoning(text) => {
                    delta(
                        &mut events,
                        &mut reply,
                        &mut open,
                        Kind::Reasoning,
                        &text,
                        None,
                    )
                    .await
                }
                Event::Content(text) => {
                    delta(
                        &mut events,
                        &mut reply,
                        &mut open,
                        Kind::Message,
                        &text,
                        None,
                    )
                    .await
                }
                Event::CallStarted(call) => {
                    if !close(&mut events, &mut reply, &mut open).await {
                        return;
                    }
                    delta(
                        &mut events,
                        &mut reply,
                        &mut open,
                        Kind::Call,
                        "",
                        Some(call),
                    )
                    .await
                }
                Event::CallArguments(text) => {
                    delta(&mut events, &mut reply, &mut open, Kind::Call, &text, None).await
                }
                Event::ServerCall {
                    recipient,
                    text,
                    announce,
                } if has_item(&recipient) => {
                    let same = open.is_some_and(|i| {
                        matches!(&reply.items[i], Item::Tool { recipient: r, output: None, .. } if *r == recipient)
                    });
                    if (announce.is_some() || !same)
                        && !open_tool(&mut events, &mut reply, &mut open, &recipient).await
                    {
                        return;
                    }
                    delta(&mut events, &mut reply, &mut open, Kind::Tool, &text, None).await
                }
                Event::ServerResult { content, shown, .. } => {
                    let tool = open.filter(|&i| matches!(reply.items[i], Item::Tool { .. }));
                    match tool {
                        Some(index) => {
                            if let Item::Tool {
                                output, recipient, ..
                            } = &mut reply.items[index]
                                && recipient == "python"
                            {
                                *output = Some(content);
                            }
                            close(&mut events, &mut reply, &mut open).await
                        }
                        None => {
                            delta(
                                &mut events,
                                &mut reply,
                                &mut open,
                                Kind::Reasoning,
                                &shown,
                                None,
                            )
                            .await
                        }
                    }
                }
                // A server-side call without an item of its own: reasoning text.
                server @ Event::ServerCall { .. } => {
                    let Event::Reasoning(text) = server.as_reasoning() else {
                        unreachable!("as_reasoning turns a server call into reasoning")
                    };
                    delta(
                        &mut events,
                        &mut reply,
                        &mut open,
                        Kind::Reasoning,
                        &text,
                        None,
                    )
                    .await
                }
                Event::Done {
                    finish_reason,
                    usage,
                    calls,
                    ..
                } => {
                    // A template model's calls are found once the reply is
                    // whole: their arguments arrive here.
                    for call in &calls {
                        for (index, item) in reply.items.iter_mut().enumerate() {
                            if let Item::Call { call: streamed, id } = item
                                && streamed.id == call.id
                                && streamed.arguments.is_empty()
                                && !call.arguments.is_empty()
                            {
                                streamed.arguments = call.arguments.clone();
                                let data = json!({"item_id": id, "output_index": index, "delta": call.arguments});
                                if !events
                                    .send("response.function_call_arguments.delta", fields(data))
                                    .await
                                {
                                    return;
                                }
                            }
                        }
                    }
                    if !close(&mut events, &mut reply, &mut open).await {
                        return;
                    }
                    let response = reply.response(&model, "completed", finish_reason, &usage);
                    let kind = if response["status"] == "incomplete" {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    keep(&state, &reply, &response, history);
                    events
                        .send(kind, fields(json!({"response": response})))
                        .await;
                    return;
                }
                Event::Failed(error) => {
                    let body = error.body();
                    let data = json!({
                        "code": body["error"]["code"],
                        "message": body["error"]["message"],
                        "param": body["error"]["param"],
                    });
                    events.send("error", fields(data)).await;
                    return;
                }
                Event::Started => true,
            };
            if !ok {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(body))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Reasoning,
    Message,
    Call,
    Tool,
}

fn kind_of(item: &Item) -> Kind {
    match item {
        Item::Reasoning { .. } => Kind::Reasoning,
        Item::Message { .. } => Kind::Message,
        Item::Call { .. } => Kind::Call,
        Item::Tool { .. } => Kind::Tool,
    }
}

/// Adds `text` to the open item of `kind`, opening one (and closing the
/// previous) first when needed.
async fn delta(
    events: &mut Events,
    reply: &mut Reply,
    open: &mut Option<usize>,
    kind: Kind,
    text: &str,
    new_call: Option<FunctionCall>,
) -> bool {
    let current = open.filter(|&i| kind_of(&reply.items[i]) == kind && new_call.is_none());
    // A call found whole (a template model's) opens empty and gets its
    // arguments as one delta, as a streamed one would.
    let mut new_call = new_call;
    let whole_arguments = new_call
        .as_mut()
        .map(|c| std::mem::take(&mut c.arguments))
        .unwrap_or_default();
    let text = if text.is_empty() {
        whole_arguments.as_str()
    } else {
        text
    };
    let index = match current {
        Some(index) => index,
        None => {
            if !close(events, reply, open).await {
                return false;
            }
            let item = match kind {
                Kind::Reasoning => Item::Reasoning {
                    id: item_id("rs"),
                    text: String::new(),
                },
                Kind::Message => Item::Message {
                    id: item_id("msg"),
                    text: String::new(),
                },
                Kind::Tool => unreachable!("server calls open through open_tool"),
                Kind::Call => Item::Call {
                    id: item_id("fc"),
                    call: new_call.unwrap_or_else(|| FunctionCall {
                        id: format!("call_{:x}", now_nanos()),
                        name: String::new(),
                        arguments: String::new(),
                    }),
                },
            };
            let index = reply.items.len();
            let added = json!({"output_index": index, "item": item.json("in_progress")});
            reply.items.push(item);
            if !events
                .send("response.output_item.added", fields(added))
                .await
            {
                return false;
            }
            let part = match kind {
                Kind::Reasoning => Some(json!({"type": "reasoning_text", "text": ""})),
                Kind::Message => Some(
                    json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}),
                ),
                Kind::Call | Kind::Tool => None,
            };
            if let Some(part) = part {
                let data = json!({"item_id": reply.items[index].id(), "output_index": index,
                    "content_index": 0, "part": part});
                if !events
                    .send("response.content_part.added", fields(data))
                    .await
                {
                    return false;
                }
            }
            *open = Some(index);
            index
        }
    };
    if text.is_empty() {
        return true;
    }
    let id = reply.items[index].id().to_string();
    let (event, data) = match &mut reply.items[index] {
        Item::Reasoning { text: all, .. } => {
            all.push_str(text);
            (
                "response.reasoning_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
            )
        }
        Item::Message { text: all, .. } => {
            all.push_str(text);
            (
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
            )
        }
        Item::Call { call, .. } => {
            call.arguments.push_str(text);
            (
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": text}),
            )
        }
        Item::Tool {
            code, recipient, ..
        } => {
            code.push_str(text);
            if recipient != "python" {
                // A web search's arguments are not streamed.
                return true;
            }
            (
                "response.code_interpreter_call_code.delta",
                json!({"item_id": id, "output_index": index, "delta": text}),
            )
        }
    };
    events.send(event, fields(data)).await
}

/// Opens the item of a server-side call (closing the open one).
async fn open_tool(
    events: &mut Events,
    reply: &mut Reply,
    open: &mut Option<usize>,
    recipient: &str,
) -> bool {
    if !close(events, reply, open).await {
        return false;
    }
    let python = recipient == "python";
    let item = Item::Tool {
        id: item_id(if python { "ci" } else { "ws" }),
        recipient: recipient.to_string(),
        code: String::new(),
        output: None,
    };
    let index = reply.items.len();
    let id = item.id().to_string();
    let added = json!({"output_index": index, "item": item.json("in_progress")});
    reply.items.push(item);
    *open = Some(index);
    let progress = if python {
        "response.code_interpreter_call.in_progress"
    } else {
        "response.web_search_call.in_progress"
    };
    events
        .send("response.output_item.added", fields(added))
        .await
        && events
            .send(
                progress,
                fields(json!({"item_id": id, "output_index": index})),
            )
            .await
}

/// Closes the open item: its text's `done`, its part's `done`, the item's.
async fn close(events: &mut Events, reply: &mut Reply, open: &mut Option<usize>) -> bool {
    let Some(index) = open.take() else {
        return true;
    };
    let item = reply.items[index].clone();
    let id = item.id().to_string();
    let mut steps: Vec<(&str, Value)> = Vec::new();
    match &item {
        Item::Reasoning { text, .. } => {
            steps.push((
                "response.reasoning_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
            ));
            steps.push((
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "reasoning_text", "text": text}}),
            ));
        }
        Item::Message { text, .. } => {
            steps.push((
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            ));
            steps.push((
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
            ));
        }
        Item::Call { call, .. } => steps.push((
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": call.arguments, "name": call.name}),
        )),
        Item::Tool {
            recipient, code, ..
        } => {
            let at = json!({"item_id": id, "output_index": index});
            if recipient == "python" {
                steps.push((
                    "response.code_interpreter_call_code.done",
                    json!({"item_id": id, "output_index": index, "code": code}),
                ));
                steps.push(("response.code_interpreter_call.interpreting", at.clone()));
                steps.push(("response.code_interpreter_call.completed", at));
            } else {
                steps.push(("response.web_search_call.searching", at.clone()));
                steps.push(("response.web_search_call.completed", at));
            }
        }
    }
    steps.push((
        "response.output_item.done",
        json!({"output_index": index, "item": item.json("completed")}),
    ));
    for (kind, data) in steps {
        if !events.send(kind, fields(data)).await {
            return false;
        }
    }
    true
}
