//! A response's output items as they are built (whole or streamed), and
//! the response object that carries them.

use mlx_harmony_core::chat_template::{ChatMessage, FunctionCall as TemplateCall, ToolCall};
use serde_json::{Value, json};

use super::Echo;
use crate::api::Usage;
use crate::worker::{FunctionCall, Step};
use crate::{now, now_nanos};

/// One output item as it is built.
#[derive(Clone, Debug)]
pub(super) enum Item {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
        /// Its tokens' log-probabilities as the API shows them, when the
        /// request included `message.output_text.logprobs`.
        logprobs: Vec<Value>,
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
pub(super) fn has_item(recipient: &str) -> bool {
    recipient == "python" || recipient == "browser" || recipient.starts_with("browser.")
}

/// A browser call's `action`: what it searched, opened or looked for.
pub(super) fn browser_action(recipient: &str, code: &str) -> Value {
    let args: Value = serde_json::from_str(code).unwrap_or(Value::Null);
    match recipient.strip_prefix("browser.").unwrap_or("") {
        "open" => json!({"type": "open_page", "url": args.get("id").filter(|v| v.is_string())}),
        "find" => json!({"type": "find", "pattern": args.get("pattern"), "url": null}),
        _ => json!({"type": "search", "query": args.get("query").cloned().unwrap_or(json!(code))}),
    }
}

impl Item {
    pub(super) fn id(&self) -> &str {
        match self {
            Item::Reasoning { id, .. }
            | Item::Message { id, .. }
            | Item::Call { id, .. }
            | Item::Tool { id, .. } => id,
        }
    }

    /// The item as the API shows it, `status` "in_progress" or "completed".
    pub(super) fn json(&self, status: &str) -> Value {
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
            Item::Message { id, text, logprobs } => json!({
                "type": "message", "id": id, "role": "assistant", "status": status,
                "content": if status == "completed" || !text.is_empty() {
                    json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}])
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
pub(super) struct Reply {
    pub(super) id: String,
    created_at: u64,
    pub(super) items: Vec<Item>,
    pub(super) echo: Echo,
}

pub(super) fn item_id(prefix: &str) -> String {
    format!("{prefix}_{:x}", now_nanos())
}

impl Reply {
    pub(super) fn new(id: String, echo: Echo) -> Self {
        Reply {
            id,
            created_at: now(),
            items: Vec::new(),
            echo,
        }
    }

    /// The items of a reply read whole (not streamed): its steps in order
    /// (reasoning, the server's own calls), then the message, then the calls.
    pub(super) fn finish_from(&mut self, steps: &[Step], content: &str, calls: &[FunctionCall]) {
        for step in steps {
            match step {
                Step::ServerCall { recipient, code } if has_item(recipient) => {
                    self.items.push(Item::Tool {
                        id: item_id(if recipient == "python" { "ci" } else { "ws" }),
                        recipient: recipient.clone(),
                        code: code.clone(),
                        output: None,
                    });
                    continue;
                }
                Step::ServerResult { content, .. } => {
                    if let Some(Item::Tool { output, .. }) = self.items.last_mut()
                        && output.is_none()
                    {
                        *output = Some(content.clone());
                        continue;
                    }
                }
                _ => {}
            }
            // Anything else is reasoning text, as chat completions show it.
            let text = step.text();
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
                logprobs: Vec::new(),
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
    pub(super) fn as_message(&self) -> ChatMessage {
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
    pub(super) fn response(
        &self,
        model: &str,
        status: &str,
        finish_reason: &str,
        usage: &Usage,
    ) -> Value {
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

pub(super) fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_tokens_details.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.completion_tokens_details.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    })
}
