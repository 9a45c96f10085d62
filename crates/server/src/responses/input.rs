//! A Responses request's input items, tools and text format in the shapes
//! chat completions use: the engine's chat history and tool declarations.

use mlx_harmony_core::chat_template::{ChatMessage, FunctionCall as TemplateCall, ToolCall};
use serde_json::{Value, json};

use super::TextOptions;
use crate::api::{self, ResponseFormat, ToolSpec};
use crate::error::ApiError;

/// The text of a content value: a string, or a list of text parts
/// (`input_text`, `output_text`, `text`; a refusal counts as text).
pub(super) fn content_text(content: &Value, field: &str) -> Result<String, ApiError> {
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
                        return Err(ApiError::invalid_at(
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
                        return Err(ApiError::invalid_at(
                            format!("a {kind} part needs its text"),
                            format!("{field}[{i}]"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(ApiError::invalid_at(
            "content is a string or a list of content parts",
            field,
        )),
    }
}

pub(super) fn string_field<'a>(
    item: &'a Value,
    key: &str,
    field: &str,
) -> Result<&'a str, ApiError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_at(
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
            return Err(ApiError::invalid_at(
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
                        return Err(ApiError::invalid_at(
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
                    return Err(ApiError::invalid_at(
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
                return Err(ApiError::invalid_at(
                    "item_reference is not supported: send the item itself, or continue a stored \
                     response with previous_response_id",
                    format!("{field}.type"),
                ));
            }
            "" => {
                return Err(ApiError::invalid_at(
                    "an input item needs a `type` (message, function_call, function_call_output, \
                     reasoning) or a `role`",
                    field,
                ));
            }
            other => {
                return Err(ApiError::invalid_at(
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
        return Err(ApiError::invalid_at("`input` must not be empty", "input"));
    }
    Ok(out)
}

/// The request's tools in chat-completions form. Function tools are
/// declared to the model; `web_search` (answered by the server's own
/// browser tool when it runs with --browser) and `namespace` groups (not
/// offered to the model) are accepted and left out; other hosted tools are
/// refused.
pub(super) fn chat_tools(tools: &Option<Vec<Value>>) -> Result<Option<Vec<ToolSpec>>, ApiError> {
    let Some(tools) = tools else { return Ok(None) };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let field = format!("tools[{i}]");
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "function" => out.push(api::flat_function_tool(tool, "parameters", &field)?),
            "web_search" | "web_search_preview" | "namespace" => {}
            other => {
                return Err(ApiError::invalid_at(
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
pub(super) fn chat_tool_choice(choice: &Option<Value>) -> Result<Option<Value>, ApiError> {
    match choice {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!(s))),
        Some(Value::Object(o)) if o.get("type") == Some(&json!("function")) => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                )),
                None => Err(ApiError::invalid_at(
                    "a named tool_choice is {\"type\": \"function\", \"name\": \"…\"}",
                    "tool_choice.name",
                )),
            }
        }
        Some(other) => Err(ApiError::invalid_at(
            format!(
                "tool_choice {other} is not supported: use \"auto\", \"none\", \"required\" or \
                 {{\"type\": \"function\", \"name\": \"…\"}}"
            ),
            "tool_choice",
        )),
    }
}

/// `text.format` as a chat `response_format`.
pub(super) fn response_format(text: &Option<TextOptions>) -> Option<ResponseFormat> {
    let format = text.as_ref()?.format.as_ref()?;
    Some(ResponseFormat {
        kind: format.kind.clone(),
        json_schema: (format.kind == "json_schema").then(
            || json!({"name": format.name, "schema": format.schema, "strict": format.strict}),
        ),
    })
}
