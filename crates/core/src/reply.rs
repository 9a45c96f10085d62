//! The model's output as an assistant message: Harmony output split by
//! channel as it streams (answer, reasoning, tool-call arguments), a tool
//! call recognised at its end; plain text for other models.

use mlx_harmony_format::StreamParser;
use mlx_harmony_format::model::Role;

use crate::Result;
use crate::chat_template::ChatMessage;
use crate::generate::{FinishReason, GenerateOptions, Generation, LoadedModel, TokenGenerator};
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

/// Reads a reply as its tokens arrive: Harmony output split by channel,
/// plain text for other models. The single-sequence [`reply`] and a batch's
/// sequences (the server) both use it.
pub struct ReplyReader {
    parser: Option<StreamParser>,
}

impl ReplyReader {
    /// A reader for `loaded`'s output; `opened` are the prompt's last tokens
    /// that already begin the reply (a forced call's header), read as the
    /// model's own.
    pub fn new(loaded: &LoadedModel, opened: &[u32]) -> Self {
        let parser = loaded.harmony.as_ref().map(|encoding| {
            let mut parser = StreamParser::new(encoding, Some(Role::Assistant));
            for &id in opened {
                parser.process(id);
            }
            parser
        });
        ReplyReader { parser }
    }

    /// One generated token and the text it completes.
    pub fn token(&mut self, id: u32, piece: &str, on_event: &mut impl FnMut(ReplyEvent)) {
        let Some(parser) = &mut self.parser else {
            if !piece.is_empty() {
                on_event(ReplyEvent::Answer(piece));
            }
            return;
        };
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
    }

    /// The reply as a message once the generation ended (`text`: the
    /// generation's text, the answer of a model without Harmony), and its
    /// finish reason: a Harmony reply that ends in a tool call is
    /// [`FinishReason::ToolCalls`].
    pub fn finish(
        self,
        text: &str,
        reason: FinishReason,
        on_event: &mut impl FnMut(ReplyEvent),
    ) -> (ChatMessage, FinishReason) {
        let Some(mut parser) = self.parser else {
            return (ChatMessage::new("assistant", text), reason);
        };
        // The end-of-turn token is not passed on; the parser still needs it
        // to close the last message.
        parser.finish();
        let message = harmony_message(&parser, on_event);
        let reason = if message.recipient.is_some() && reason == FinishReason::Stop {
            FinishReason::ToolCalls
        } else {
            reason
        };
        (message, reason)
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
    let opened = options.opened.min(prompt.len());
    let mut reader = ReplyReader::new(&generator.loaded, &prompt[prompt.len() - opened..]);
    let mut generation = generator.generate(prompt, sampler, options, |id, piece| {
        reader.token(id, piece, &mut on_event)
    })?;
    let (message, reason) =
        reader.finish(&generation.text, generation.finish_reason, &mut on_event);
    generation.finish_reason = reason;
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
