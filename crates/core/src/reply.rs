//! The model's output as an assistant message: Harmony output split by
//! channel as it streams (answer, reasoning, tool-call arguments), a tool
//! call recognised at its end; plain text for other models.

use mlx_harmony_format::StreamParser;
use mlx_harmony_format::model::Role;

use crate::Result;
use crate::chat_template::ChatMessage;
use crate::generate::{FinishReason, GenerateOptions, Generation, TokenGenerator};
use crate::sampling::Sampler;

/// A piece of the reply as it streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplyEvent<'a> {
    /// Text of the answer (Harmony: the final channel).
    Answer(&'a str),
    /// Reasoning or a tool-call preamble (Harmony: analysis and commentary
    /// channels), with its channel.
    Reasoning { channel: &'a str, text: &'a str },
    /// Arguments of a tool call being written, with the tool it is for.
    ToolCall { recipient: &'a str, text: &'a str },
}

/// The assistant's reply: the message to append to the history, and what
/// generating it took.
#[derive(Clone, Debug)]
pub struct Reply {
    /// `content` the answer (or a tool call's arguments), `reasoning_content`
    /// the reasoning; a tool call has `recipient`, `channel`, `content_type`.
    pub message: ChatMessage,
    pub generation: Generation,
}

impl Reply {
    /// The tool the reply calls, if it ends in a tool call.
    pub fn tool_call(&self) -> Option<&str> {
        self.message.recipient.as_deref()
    }
}

/// Generates the assistant's reply to `prompt` (from
/// [`crate::loaded::LoadedModel::conversation_tokens`]) with
/// [`TokenGenerator::generate`], streaming it to `on_event`. Harmony output
/// is split by channel; a GPT-OSS tool call ends the reply (its `<|call|>`
/// token) with the call in the returned message and
/// [`FinishReason::ToolCalls`]. With `options.opened`, the last tokens of the
/// prompt already begin the reply (a forced call's header).
pub fn reply(
    generator: &mut TokenGenerator,
    prompt: &[u32],
    sampler: &mut Sampler,
    options: &GenerateOptions,
    mut on_event: impl FnMut(ReplyEvent),
) -> Result<Reply> {
    let Some(encoding) = generator.loaded.harmony.clone() else {
        let generation = generator.generate(prompt, sampler, options, |_, piece| {
            if !piece.is_empty() {
                on_event(ReplyEvent::Answer(piece))
            }
        })?;
        let message = ChatMessage::new("assistant", &generation.text);
        return Ok(Reply {
            message,
            generation,
        });
    };
    let mut parser = StreamParser::new(&encoding, Some(Role::Assistant));
    let opened = options.opened.min(prompt.len());
    for &id in &prompt[prompt.len() - opened..] {
        parser.process(id);
    }
    let mut generation = generator.generate(prompt, sampler, options, |id, _| {
        parser.process(id);
        let Some(delta) = parser.last_content_delta().filter(|d| !d.is_empty()) else {
            return;
        };
        let channel = parser.current_channel().unwrap_or("analysis");
        match parser.current_recipient() {
            Some(recipient) if recipient != "assistant" => on_event(ReplyEvent::ToolCall {
                recipient,
                text: delta,
            }),
            _ if channel == "final" => on_event(ReplyEvent::Answer(delta)),
            _ => on_event(ReplyEvent::Reasoning {
                channel,
                text: delta,
            }),
        }
    })?;
    // The end-of-turn token is not passed on; the parser still needs it
    // to close the last message.
    parser.finish();
    let message = harmony_message(&parser, &mut on_event);
    if message.recipient.is_some() && generation.finish_reason == FinishReason::Stop {
        generation.finish_reason = FinishReason::ToolCalls;
    }
    Ok(Reply {
        message,
        generation,
    })
}

/// The assistant message of a finished Harmony parse: the final channel is
/// the answer, the other channels the reasoning, a message to a recipient
/// the tool call. Output the parser could not structure is still the
/// model's: it is kept in the answer (and shown) rather than dropped.
fn harmony_message(parser: &StreamParser, on_event: &mut impl FnMut(ReplyEvent)) -> ChatMessage {
    let mut message = ChatMessage::new("assistant", "");
    let mut reasoning = String::new();
    for parsed in parser.messages() {
        let m = &parsed.message;
        let text = m.text_content();
        if parsed.irregular.is_some() {
            if !text.is_empty() {
                on_event(ReplyEvent::Answer(&text));
                message.content.push_str(&text);
            }
            continue;
        }
        match (&m.recipient, m.channel.as_deref()) {
            (Some(recipient), channel) if recipient != "assistant" => {
                message.recipient = Some(recipient.clone());
                message.channel = channel.map(str::to_string);
                message.content_type = m.content_type.clone();
                message.content = text;
            }
            (_, Some("final")) => message.content.push_str(&text),
            _ => {
                if !reasoning.is_empty() {
                    reasoning.push('\n');
                }
                reasoning.push_str(&text);
            }
        }
    }
    if !reasoning.is_empty() {
        message.reasoning_content = Some(reasoning);
    }
    message
}
