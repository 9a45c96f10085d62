//! `POST /v1/messages` and `POST /v1/messages/count_tokens` (Anthropic's
//! Messages API, as Claude Code and the `anthropic` SDK speak it): a thin
//! translation onto the same model-thread jobs as chat completions. Content
//! blocks become the engine's chat history (`thinking` the assistant's
//! reasoning, `tool_use` its calls, `tool_result` tool messages); the reply
//! comes back as `thinking`, `text` and `tool_use` blocks, streamed with the
//! API's events. Errors keep Anthropic's shape.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use mlx_harmony_core::chat_template::{ChatMessage, FunctionCall as TemplateCall, ToolCall};
use mlx_harmony_format::model::ReasoningEffort;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{self, SharedFields, Stop, ToolSpec, Usage};
use crate::choices::{self, Choices};
use crate::error::ApiError;
use crate::worker::{Event, FunctionCall, Task};
use crate::{AppState, Shared, body_bytes, now_nanos, resolve};

/// An [`ApiError`] in Anthropic's shape:
/// `{"type": "error", "error": {"type": "invalid_request_error", "message": …}}`.
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(error: ApiError) -> Self {
        AnthropicError(error)
    }
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

impl AnthropicError {
    pub fn body(&self) -> Value {
        let error = &self.0;
        // The field at fault is named in the message, as Anthropic does.
        let message = match &error.param {
            Some(param) if !error.message.contains(param.as_str()) => {
                format!("{param}: {}", error.message)
            }
            _ => error.message.clone(),
        };
        json!({"type": "error", "error": {"type": error_type(error.status), "message": message}})
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// `POST /v1/messages`. Fields this server has no use for (`metadata`,
/// `context_management`, `service_tier`, `container`, cache controls, and
/// fields newer than this server) are accepted and ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<InputMessage>,
    #[serde(default)]
    pub system: Option<Value>,
    pub max_tokens: i64,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub thinking: Option<Value>,
    #[serde(default)]
    pub output_config: Option<Value>,
    #[serde(default)]
    pub mcp_servers: Option<Value>,
}

/// `POST /v1/messages/count_tokens`: the request without the sampling.
#[derive(Clone, Debug, Deserialize)]
pub struct CountRequest {
    pub model: String,
    pub messages: Vec<InputMessage>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub thinking: Option<Value>,
    #[serde(default)]
    pub output_config: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct InputMessage {
    pub role: String,
    pub content: Value,
}

/// The text of `system`: a string or a list of text blocks.
fn system_text(system: &Value) -> Result<String, ApiError> {
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                match (block.get("type").and_then(Value::as_str), block.get("text")) {
                    (Some("text"), Some(Value::String(text))) => parts.push(text.clone()),
                    _ => {
                        return Err(ApiError::invalid_at(
                            "system blocks are {\"type\": \"text\", \"text\": \"…\"}",
                            format!("system[{i}]"),
                        ));
                    }
                }
            }
            Ok(parts.join("\n\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err(ApiError::invalid_at(
            "system is a string or a list of text blocks",
            "system",
        )),
    }
}

/// A `tool_result`'s content: a string or text blocks.
fn result_text(content: Option<&Value>, field: &str) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (i, block) in blocks.iter().enumerate() {
                match (block.get("type").and_then(Value::as_str), block.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid_at(
                            format!(
                                "tool_result content blocks of type {:?} are not supported; send text",
                                kind.unwrap_or("")
                            ),
                            format!("{field}.content[{i}]"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid_at(
            "tool_result content is a string or a list of text blocks",
            format!("{field}.content"),
        )),
    }
}

/// The request's messages as chat history (after the system prompt).
pub fn history(
    system: &Option<Value>,
    messages: &[InputMessage],
) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_at(
            "messages must not be empty",
            "messages",
        ));
    }
    let mut out = Vec::new();
    if let Some(system) = system {
        let text = system_text(system)?;
        if !text.is_empty() {
            out.push(ChatMessage::new("system", &text));
        }
    }
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let blocks = match &message.content {
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(ApiError::invalid_at(
                    "content is a string or a list of content blocks",
                    format!("{field}.content"),
                ));
            }
        };
        match message.role.as_str() {
            "user" => {
                let mut text = String::new();
                for (j, block) in blocks.iter().enumerate() {
                    let at = format!("{field}.content[{j}]");
                    match block.get("type").and_then(Value::as_str).unwrap_or("") {
                        "text" => {
                            text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        "tool_result" => {
                            let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                                return Err(ApiError::invalid_at(
                                    "a tool_result needs tool_use_id",
                                    format!("{at}.tool_use_id"),
                                ));
                            };
                            let name = out
                                .iter()
                                .rev()
                                .flat_map(|m: &ChatMessage| m.tool_calls.iter())
                                .find(|c| c.id == id)
                                .map(|c| c.function.name.clone())
                                .ok_or_else(|| {
                                    ApiError::invalid_at(
                                        format!("tool_use_id {id:?} answers no tool_use before it"),
                                        format!("{at}.tool_use_id"),
                                    )
                                })?;
                            let mut content = result_text(block.get("content"), &at)?;
                            if block.get("is_error") == Some(&Value::Bool(true)) {
                                content = format!("Error: {content}");
                            }
                            let mut tool = ChatMessage::new("tool", &content);
                            tool.tool_call_id = Some(id.to_string());
                            tool.name = Some(name);
                            out.push(tool);
                        }
                        kind => {
                            return Err(ApiError::invalid_at(
                                format!(
                                    "user content blocks of type {kind:?} are not supported; this \
                                     server's models read text (text and tool_result blocks)"
                                ),
                                format!("{at}.type"),
                            ));
                        }
                    }
                }
                if !text.is_empty() {
                    out.push(ChatMessage::new("user", &text));
                }
            }
            "assistant" => {
                let mut reply = ChatMessage::new("assistant", "");
                let mut reasoning = Vec::new();
                for (j, block) in blocks.iter().enumerate() {
                    let at = format!("{field}.content[{j}]");
                    match block.get("type").and_then(Value::as_str).unwrap_or("") {
                        "text" => reply
                            .content
                            .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
                        "thinking" => reasoning.push(
                            block
                                .get("thinking")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                        ),
                        // Another model's encrypted reasoning: nothing to read.
                        "redacted_thinking" => {}
                        "tool_use" => {
                            let (Some(id), Some(name)) = (
                                block.get("id").and_then(Value::as_str),
                                block.get("name").and_then(Value::as_str),
                            ) else {
                                return Err(ApiError::invalid_at(
                                    "a tool_use needs id and name",
                                    at,
                                ));
                            };
                            reply.tool_calls.push(ToolCall {
                                id: id.to_string(),
                                kind: "function".into(),
                                function: TemplateCall {
                                    name: name.to_string(),
                                    arguments: block
                                        .get("input")
                                        .cloned()
                                        .unwrap_or_else(|| json!({})),
                                },
                            });
                        }
                        kind => {
                            return Err(ApiError::invalid_at(
                                format!(
                                    "assistant content blocks of type {kind:?} are not supported"
                                ),
                                format!("{at}.type"),
                            ));
                        }
                    }
                }
                reply.reasoning_content = (!reasoning.is_empty()).then(|| reasoning.join("\n"));
                out.push(reply);
            }
            // Not in Anthropic's schema, but Claude Code sends system
            // reminders this way: text, taken as system text where it is.
            "system" => {
                let mut text = String::new();
                for (j, block) in blocks.iter().enumerate() {
                    match (block.get("type").and_then(Value::as_str), block.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid_at(
                                "a system message's content is text",
                                format!("{field}.content[{j}]"),
                            ));
                        }
                    }
                }
                out.push(ChatMessage::new("system", &text));
            }
            other => {
                return Err(ApiError::invalid_at(
                    format!(
                        "role {other:?}: messages are user or assistant (system goes in `system`)"
                    ),
                    format!("{field}.role"),
                ));
            }
        }
    }
    Ok(out)
}

/// The request's tools in chat-completions form: client tools (`custom` or
/// untyped, with `input_schema`) are declared to the model; Anthropic's own
/// server tools (bash, text editor, web search: typed and versioned) are
/// accepted and not offered.
fn chat_tools(tools: &Option<Vec<Value>>) -> Result<Option<Vec<ToolSpec>>, ApiError> {
    let Some(tools) = tools else { return Ok(None) };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str);
        if kind.is_some_and(|k| k != "custom") {
            continue;
        }
        out.push(api::flat_function_tool(
            tool,
            "input_schema",
            &format!("tools[{i}]"),
        )?);
    }
    Ok(Some(out))
}

fn chat_tool_choice(choice: &Option<Value>) -> Result<Option<Value>, ApiError> {
    let Some(choice) = choice else {
        return Ok(None);
    };
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(Some(json!("auto"))),
        Some("none") => Ok(Some(json!("none"))),
        Some("any") => Ok(Some(json!("required"))),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => Ok(Some(
                json!({"type": "function", "function": {"name": name}}),
            )),
            None => Err(ApiError::invalid_at(
                "tool_choice {\"type\": \"tool\"} needs a name",
                "tool_choice.name",
            )),
        },
        _ => Err(ApiError::invalid_at(
            "tool_choice is {\"type\": \"auto\"}, {\"type\": \"any\"}, {\"type\": \"tool\", \"name\": \"…\"} or {\"type\": \"none\"}",
            "tool_choice",
        )),
    }
}

/// The reasoning effort a GPT-OSS model is told: `output_config.effort`
/// (low, medium, high; max as high), else low when thinking is disabled.
fn effort(
    thinking: &Option<Value>,
    output_config: &Option<Value>,
) -> Result<Option<ReasoningEffort>, ApiError> {
    if let Some(effort) = output_config
        .as_ref()
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str)
    {
        let effort = if effort == "max" { "high" } else { effort };
        return api::reasoning_effort(&Some(effort.to_string()))
            .map_err(|e| e.with_param(Some("output_config.effort".into())));
    }
    match thinking
        .as_ref()
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
    {
        Some("disabled") => Ok(Some(ReasoningEffort::Low)),
        _ => Ok(None),
    }
}

/// The prompt setup and history a request makes (shared by messages and
/// count_tokens).
fn conversation(
    state: &AppState,
    system: &Option<Value>,
    messages: &[InputMessage],
    tools: &Option<Vec<Value>>,
    tool_choice: &Option<Value>,
    thinking: &Option<Value>,
    output_config: &Option<Value>,
) -> Result<
    (
        Vec<ChatMessage>,
        mlx_harmony_core::prompt::PromptSetup,
        bool,
    ),
    ApiError,
> {
    let history = history(system, messages)?;
    let tools = chat_tools(tools)?;
    let tool_choice = chat_tool_choice(tool_choice)?;
    let (functions, forced_call) = api::functions(&tools, &tool_choice)?;
    if forced_call.is_some() && !state.harmony {
        return Err(ApiError::invalid_at(
            "tool_choice \"any\" or a named tool needs a GPT-OSS (Harmony) model: other models' \
             chat templates cannot be made to call a tool; use \"auto\"",
            "tool_choice",
        ));
    }
    let mut setup = state.setup.clone();
    if let Some(effort) = effort(thinking, output_config)? {
        setup.reasoning_effort = Some(effort);
    }
    let buffer_answer = !state.harmony && !functions.is_empty();
    setup.functions = functions;
    setup.forced_call = forced_call;
    Ok((history, setup, buffer_answer))
}

/// `GET /` and `HEAD /` (Claude Code checks that the server is there).
pub async fn root(State(state): State<Shared>) -> Json<Value> {
    Json(json!({"name": "mlx-harmony-server", "status": "ok",
        "apis": ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"],
        "model": if state.api_key.is_some() { Value::Null } else { json!(state.model_id) }}))
}

pub async fn count_tokens(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AnthropicError> {
    let body = body_bytes(body)?;
    let request: CountRequest = api::parse(&body)?;
    if request.model != state.model_id {
        return Err(ApiError::model_not_found(&request.model, &state.model_id).into());
    }
    let (history, setup, _) = conversation(
        &state,
        &request.system,
        &request.messages,
        &request.tools,
        &request.tool_choice,
        &request.thinking,
        &request.output_config,
    )?;
    let task = Task::CountTokens {
        history,
        setup: Box::new(setup),
    };
    let settings = resolve(&state, Default::default());
    let choices = choices::submit(&state, task, settings, Default::default(), 1).await?;
    let (_, usage) = choices::collect(choices).await?;
    Ok(Json(json!({"input_tokens": usage.prompt_tokens})))
}

pub async fn create_message(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let body = body_bytes(body)?;
    let request: MessagesRequest = api::parse(&body)?;
    if request.model != state.model_id {
        return Err(ApiError::model_not_found(&request.model, &state.model_id).into());
    }
    if request
        .mcp_servers
        .as_ref()
        .is_some_and(|m| m.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(ApiError::invalid_at(
            "mcp_servers are not supported: run the MCP client yourself",
            "mcp_servers",
        )
        .into());
    }
    if request.max_tokens < 1 {
        return Err(ApiError::invalid_at("max_tokens must be at least 1", "max_tokens").into());
    }
    let stop = request.stop_sequences.clone().map(Stop::Many);
    let fields = SharedFields {
        model: &request.model,
        // More than the context leaves is clamped to what it leaves.
        max_tokens: Some(request.max_tokens.min(u32::MAX as i64)),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: None,
        seed: None,
        stop: &stop,
        repetition_penalty: None,
        n: None,
        frequency_penalty: None,
        presence_penalty: None,
        logit_bias: &None,
    };
    let hyper = fields.hyperparameters().map_err(|mut e| {
        if e.param.as_deref() == Some("stop") {
            e.param = Some("stop_sequences".into());
        }
        e
    })?;
    let (history, setup, buffer_answer) = conversation(
        &state,
        &request.system,
        &request.messages,
        &request.tools,
        &request.tool_choice,
        &request.thinking,
        &request.output_config,
    )?;
    let settings = resolve(&state, hyper);
    let task = Task::Chat {
        history,
        setup: Box::new(setup),
        buffer_answer,
    };
    let choices = choices::submit(&state, task, settings, Default::default(), 1).await?;
    let id = format!("msg_{:x}", now_nanos());
    if request.stream {
        Ok(stream(state.model_id.clone(), id, choices).into_response())
    } else {
        let (mut finished, usage) = choices::collect(choices).await?;
        let done = finished.remove(0);
        let mut content = Vec::new();
        if let Some(reasoning) = done.reasoning() {
            content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
        }
        if !done.content.is_empty() || done.calls.is_empty() {
            content.push(json!({"type": "text", "text": done.content}));
        }
        for call in &done.calls {
            content.push(
                json!({"type": "tool_use", "id": tool_use_id(call), "name": call.name,
                "input": tool_input(&call.arguments)}),
            );
        }
        Ok(Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": state.model_id,
            "content": content,
            "stop_reason": stop_reason(done.finish_reason, &done.stop_sequence),
            "stop_sequence": done.stop_sequence,
            "usage": usage_json(&usage),
        }))
        .into_response())
    }
}

fn tool_use_id(call: &FunctionCall) -> String {
    format!("toolu_{}", call.id.trim_start_matches("call_"))
}

/// A call's arguments as the `input` object (a model that wrote something
/// other than a JSON object has it kept as text under "arguments").
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({"arguments": arguments}),
    }
}

fn stop_reason(finish_reason: &str, stop_sequence: &Option<String>) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ if stop_sequence.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

fn usage_json(usage: &Usage) -> Value {
    let cached = usage.prompt_tokens_details.cached_tokens;
    json!({
        "input_tokens": usage.prompt_tokens - cached.min(usage.prompt_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Thinking,
    Text,
    ToolUse,
}

struct Writer {
    sender: mpsc::Sender<Result<SseEvent, Infallible>>,
    /// The open block: its kind and index.
    open: Option<(Block, usize)>,
    next_index: usize,
}

impl Writer {
    async fn send(&mut self, kind: &str, mut data: Value) -> bool {
        data["type"] = json!(kind);
        let event = SseEvent::default().event(kind).data(data.to_string());
        self.sender.send(Ok(event)).await.is_ok()
    }

    async fn close(&mut self) -> bool {
        match self.open.take() {
            Some((_, index)) => {
                self.send("content_block_stop", json!({"index": index}))
                    .await
            }
            None => true,
        }
    }

    /// Opens a block of `kind` unless one is open (a tool_use always opens
    /// its own); returns its index.
    async fn ensure(&mut self, kind: Block, start: Value, fresh: bool) -> Option<usize> {
        if let Some((open, index)) = self.open
            && open == kind
            && !fresh
        {
            return Some(index);
        }
        if !self.close().await {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        self.send(
            "content_block_start",
            json!({"index": index, "content_block": start}),
        )
        .await
        .then_some(index)
    }

    async fn delta(&mut self, index: usize, delta: Value) -> bool {
        self.send(
            "content_block_delta",
            json!({"index": index, "delta": delta}),
        )
        .await
    }
}

/// The stream: `message_start`, each content block's start, deltas and
/// stop, `message_delta` with the stop reason and usage, `message_stop`; a
/// failure is an `error` event.
fn stream(
    model: String,
    id: String,
    mut choices: Choices,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
    let (sender, body) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut writer = Writer {
            sender,
            open: None,
            next_index: 0,
        };
        let start = json!({"message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0},
        }});
        if !writer.send("message_start", start).await {
            return;
        }
        // Calls whose arguments came whole (template models): their id.
        loop {
            let choices::Next::Event(_, event) =
                choices::next_event(&mut choices, &writer.sender).await
            else {
                return;
            };
            // The server's own tool calls show in the thinking.
            let ok = match event.as_reasoning() {
                Event::Started
                | Event::Logprobs(_)
                | Event::ServerCall { .. }
                | Event::ServerResult { .. } => true,
                Event::Reasoning(text) => {
                    match writer
                        .ensure(
                            Block::Thinking,
                            json!({"type": "thinking", "thinking": "", "signature": ""}),
                            false,
                        )
                        .await
                    {
                        Some(index) => {
                            writer
                                .delta(index, json!({"type": "thinking_delta", "thinking": text}))
                                .await
                        }
                        None => false,
                    }
                }
                Event::Content(text) => {
                    match writer
                        .ensure(Block::Text, json!({"type": "text", "text": ""}), false)
                        .await
                    {
                        Some(index) => {
                            writer
                                .delta(index, json!({"type": "text_delta", "text": text}))
                                .await
                        }
                        None => false,
                    }
                }
                Event::CallStarted(call) => {
                    let start = json!({"type": "tool_use", "id": tool_use_id(&call), "name": call.name, "input": {}});
                    match writer.ensure(Block::ToolUse, start, true).await {
                        Some(index) if !call.arguments.is_empty() => writer
                            .delta(
                                index,
                                json!({"type": "input_json_delta", "partial_json": call.arguments}),
                            )
                            .await,
                        Some(_) => true,
                        None => false,
                    }
                }
                Event::CallArguments(text) => match writer.open {
                    Some((Block::ToolUse, index)) => {
                        writer
                            .delta(
                                index,
                                json!({"type": "input_json_delta", "partial_json": text}),
                            )
                            .await
                    }
                    _ => true,
                },
                Event::Done {
                    finish_reason,
                    usage,
                    stop_sequence,
                    ..
                } => {
                    if !writer.close().await {
                        return;
                    }
                    let usage = usage_json(&usage);
                    let delta = json!({"delta": {"stop_reason": stop_reason(finish_reason, &stop_sequence),
                        "stop_sequence": stop_sequence, "stop_details": null, "container": null}, "usage": usage});
                    if writer.send("message_delta", delta).await {
                        writer.send("message_stop", json!({})).await;
                    }
                    return;
                }
                Event::Failed(error) => {
                    let body = AnthropicError(error).body();
                    writer.send("error", json!({"error": body["error"]})).await;
                    return;
                }
            };
            if !ok {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(body))
}
