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
use crate::choices::Choices;
use crate::now_nanos;
use crate::worker::{Event, FunctionCall};

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
pub(super) fn stream(
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
