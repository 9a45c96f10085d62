//! A streamed response: the API's typed, numbered server-sent events.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use mlx_harmony_core::chat_template::ChatMessage;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::keep;
use super::output::{Item, Reply, has_item, item_id};
use crate::Shared;
use crate::api::Usage;
use crate::choices::{self, Choices};
use crate::now_nanos;
use crate::worker::{Event, FunctionCall};
use mlx_harmony_core::sampling::TokenLogprobs;

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

/// A response as it streams: its events, its items so far, and which one
/// is open.
struct Writer {
    events: Events,
    reply: Reply,
    /// The item being streamed (its index in `reply.items`).
    open: Option<usize>,
    /// The model's vocabulary, when the request asked for log-probabilities.
    grammars: Option<mlx_harmony_grammar::Grammars>,
    /// Log-probabilities waiting for their answer text's delta.
    pending: Vec<TokenLogprobs>,
}

/// Streams a response: `response.created`, `response.in_progress`, each
/// output item opened, its deltas, closed, then `response.completed` (or
/// `response.incomplete`); a failure is an `error` event. The finished
/// response is stored as a non-streamed one would be.
pub(super) fn stream(
    state: Shared,
    mut choices: Choices,
    reply: Reply,
    history: Vec<ChatMessage>,
    grammars: Option<mlx_harmony_grammar::Grammars>,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
    let (sender, body) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut w = Writer {
            events: Events {
                sender,
                sequence: 0,
            },
            reply,
            open: None,
            grammars,
            pending: Vec::new(),
        };
        let model = state.model_id.clone();
        let opening = w
            .reply
            .response(&model, "in_progress", "", &Usage::new(0, 0, 0));
        for kind in ["response.created", "response.in_progress"] {
            if !w
                .events
                .send(kind, fields(json!({"response": opening})))
                .await
            {
                return;
            }
        }
        loop {
            let choices::Next::Event(_, event) =
                choices::next_event(&mut choices, &w.events.sender).await
            else {
                return;
            };
            let ok = match event {
                // They come before the answer text they belong to.
                Event::Logprobs(tokens) => {
                    w.pending.extend(tokens);
                    true
                }
                Event::Reasoning(text) => w.delta(Kind::Reasoning, &text).await,
                Event::Content(text) => w.delta(Kind::Message, &text).await,
                Event::CallStarted(call) => w.start_call(call).await,
                Event::CallArguments(text) => w.delta(Kind::Call, &text).await,
                Event::ServerCall {
                    recipient,
                    text,
                    announce,
                } if has_item(&recipient) => {
                    let same = w.open.is_some_and(|i| {
                        matches!(&w.reply.items[i], Item::Tool { recipient: r, output: None, .. } if *r == recipient)
                    });
                    if (announce.is_some() || !same) && !w.open_tool(&recipient).await {
                        return;
                    }
                    w.delta(Kind::Tool, &text).await
                }
                Event::ServerResult { content, shown, .. } => {
                    match w
                        .open
                        .filter(|&i| matches!(w.reply.items[i], Item::Tool { .. }))
                    {
                        Some(index) => {
                            if let Item::Tool {
                                output, recipient, ..
                            } = &mut w.reply.items[index]
                                && recipient == "python"
                            {
                                *output = Some(content);
                            }
                            w.close().await
                        }
                        None => w.delta(Kind::Reasoning, &shown).await,
                    }
                }
                // A server-side call without an item of its own: reasoning text.
                server @ Event::ServerCall { .. } => {
                    let Event::Reasoning(text) = server.as_reasoning() else {
                        unreachable!("as_reasoning turns a server call into reasoning")
                    };
                    w.delta(Kind::Reasoning, &text).await
                }
                Event::Done {
                    finish_reason,
                    usage,
                    ..
                } => {
                    if !w.close().await {
                        return;
                    }
                    let response = w.reply.response(&model, "completed", finish_reason, &usage);
                    let kind = if response["status"] == "incomplete" {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    keep(&state, &w.reply, &response, history);
                    w.events
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
                    w.events.send("error", fields(data)).await;
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

impl Writer {
    /// Adds `item` after closing the open one, announces it (with its
    /// content part, for text items) and opens it; returns its index.
    async fn open_item(&mut self, item: Item) -> Option<usize> {
        if !self.close().await {
            return None;
        }
        let index = self.reply.items.len();
        let id = item.id().to_string();
        let added = json!({"output_index": index, "item": item.json("in_progress")});
        let part = match &item {
            Item::Reasoning { .. } => Some(json!({"type": "reasoning_text", "text": ""})),
            Item::Message { .. } => {
                Some(json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}))
            }
            Item::Call { .. } | Item::Tool { .. } => None,
        };
        self.reply.items.push(item);
        self.open = Some(index);
        if !self
            .events
            .send("response.output_item.added", fields(added))
            .await
        {
            return None;
        }
        if let Some(part) = part {
            let data =
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part});
            if !self
                .events
                .send("response.content_part.added", fields(data))
                .await
            {
                return None;
            }
        }
        Some(index)
    }

    /// Opens a call for the client. One found whole (a template model's)
    /// opens empty and gets its arguments as one delta, as a streamed one would.
    async fn start_call(&mut self, mut call: FunctionCall) -> bool {
        let arguments = std::mem::take(&mut call.arguments);
        let item = Item::Call {
            id: item_id("fc"),
            call,
        };
        match self.open_item(item).await {
            Some(index) => self.append(index, &arguments).await,
            None => false,
        }
    }

    /// Opens the item of a server-side call (closing the open one).
    async fn open_tool(&mut self, recipient: &str) -> bool {
        let python = recipient == "python";
        let item = Item::Tool {
            id: item_id(if python { "ci" } else { "ws" }),
            recipient: recipient.to_string(),
            code: String::new(),
            output: None,
        };
        let id = item.id().to_string();
        let Some(index) = self.open_item(item).await else {
            return false;
        };
        let progress = if python {
            "response.code_interpreter_call.in_progress"
        } else {
            "response.web_search_call.in_progress"
        };
        self.events
            .send(
                progress,
                fields(json!({"item_id": id, "output_index": index})),
            )
            .await
    }

    /// Adds `text` to the open item of `kind`, opening one first when needed
    /// (a call's arguments with no call open start a nameless one).
    async fn delta(&mut self, kind: Kind, text: &str) -> bool {
        if let Some(index) = self.open.filter(|&i| kind_of(&self.reply.items[i]) == kind) {
            return self.append(index, text).await;
        }
        let item = match kind {
            Kind::Reasoning => Item::Reasoning {
                id: item_id("rs"),
                text: String::new(),
            },
            Kind::Message => Item::Message {
                id: item_id("msg"),
                text: String::new(),
                logprobs: Vec::new(),
            },
            Kind::Call => Item::Call {
                id: item_id("fc"),
                call: FunctionCall {
                    id: format!("call_{:x}", now_nanos()),
                    name: String::new(),
                    arguments: String::new(),
                },
            },
            Kind::Tool => unreachable!("server calls open through open_tool"),
        };
        match self.open_item(item).await {
            Some(index) => self.append(index, text).await,
            None => false,
        }
    }

    /// Adds `text` to item `index` and sends its delta event.
    async fn append(&mut self, index: usize, text: &str) -> bool {
        if text.is_empty() {
            return true;
        }
        let id = self.reply.items[index].id().to_string();
        let (event, data) = match &mut self.reply.items[index] {
            Item::Reasoning { text: all, .. } => {
                all.push_str(text);
                (
                    "response.reasoning_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
                )
            }
            Item::Message {
                text: all,
                logprobs,
                ..
            } => {
                all.push_str(text);
                let entries = match &self.grammars {
                    Some(grammars) => {
                        crate::output::chat_entries(grammars, &std::mem::take(&mut self.pending))
                    }
                    None => Vec::new(),
                };
                logprobs.extend(entries.iter().cloned());
                (
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": entries}),
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
        self.events.send(event, fields(data)).await
    }

    /// Closes the open item: its text's `done`, its part's `done`, the item's.
    async fn close(&mut self) -> bool {
        let Some(index) = self.open.take() else {
            return true;
        };
        let item = self.reply.items[index].clone();
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
            Item::Message { text, logprobs, .. } => {
                steps.push((
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": logprobs}),
                ));
                steps.push((
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}}),
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
            if !self.events.send(kind, fields(data)).await {
                return false;
            }
        }
        true
    }
}
