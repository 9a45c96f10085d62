//! Parsing a model's completion back into messages, one token at a time.
//!
//! The parser follows openai-harmony on well-formed output, and goes further
//! where real models misbehave: it never fails and never drops text. What it
//! cannot structure (text outside any message, a header that never reached
//! `<|message|>`, a malformed header) comes back as a message whose
//! `irregular` field says what was wrong, with the text kept.

use crate::encoding::{HarmonyEncoding, Special};
use crate::model::{Author, Content, Message, Role};

/// A message as parsed, with how it ended and anything irregular about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedMessage {
    pub message: Message,
    /// The token that ended it (`End`, `Return` or `Call`); `None` when the
    /// stream ended first (e.g. cut off by `max_tokens`).
    pub ended_by: Option<Special>,
    /// Why the tokens could not be structured as a proper message, if so.
    pub irregular: Option<String>,
}

#[derive(Clone, Debug)]
struct Header {
    author: Author,
    recipient: Option<String>,
    channel: Option<String>,
    content_type: Option<String>,
    irregular: Option<String>,
}

#[derive(Clone, Debug)]
enum State {
    /// Between messages; tokens that are not `<|start|>` collect as stray text.
    ExpectStart { stray: Vec<u32> },
    Header {
        tokens: Vec<u32>,
        role: Option<Role>,
        implicit_start: bool,
    },
    Content {
        header: Header,
        text: String,
        pending: Vec<u8>,
    },
}

/// The streaming parser. Feed tokens with [`StreamParser::process`], end with
/// [`StreamParser::finish`].
#[derive(Clone, Debug)]
pub struct StreamParser {
    encoding: HarmonyEncoding,
    state: State,
    messages: Vec<ParsedMessage>,
    last_delta: Option<String>,
    tokens: Vec<u32>,
}

const REPLACEMENT: char = '\u{FFFD}';

impl StreamParser {
    /// `role`: the role whose header follows (`Some(Role::Assistant)` after a
    /// prompt that ends with `<|start|>assistant`), or `None` to expect
    /// `<|start|>` first.
    pub fn new(encoding: &HarmonyEncoding, role: Option<Role>) -> Self {
        let state = match role {
            Some(role) => State::Header {
                tokens: Vec::new(),
                role: Some(role),
                implicit_start: false,
            },
            None => State::ExpectStart { stray: Vec::new() },
        };
        StreamParser {
            encoding: encoding.clone(),
            state,
            messages: Vec::new(),
            last_delta: None,
            tokens: Vec::new(),
        }
    }

    /// Consumes one token.
    pub fn process(&mut self, token: u32) {
        self.tokens.push(token);
        self.last_delta = None;
        let special = self.encoding.special_of(token);
        let is_stop = matches!(
            special,
            Some(Special::End | Special::Return | Special::Call)
        );
        let state = std::mem::replace(&mut self.state, State::ExpectStart { stray: Vec::new() });
        self.state = match state {
            State::ExpectStart { mut stray } => match special {
                Some(Special::Start) => {
                    self.flush_stray(&stray, Some(Special::Start));
                    State::Header {
                        tokens: Vec::new(),
                        role: None,
                        implicit_start: false,
                    }
                }
                // A header without its `<|start|>assistant`: take it as the assistant's.
                Some(Special::Channel) if stray.is_empty() => State::Header {
                    tokens: vec![token],
                    role: Some(Role::Assistant),
                    implicit_start: true,
                },
                _ => {
                    stray.push(token);
                    State::ExpectStart { stray }
                }
            },
            State::Header {
                mut tokens,
                role,
                implicit_start,
            } => match special {
                Some(Special::Message) => {
                    let header = self.parse_header(&tokens, role, implicit_start);
                    State::Content {
                        header,
                        text: String::new(),
                        pending: Vec::new(),
                    }
                }
                Some(Special::Start) if tokens.is_empty() => State::Header {
                    tokens,
                    role,
                    implicit_start,
                },
                Some(Special::Start) => {
                    self.flush_headless(
                        &tokens,
                        role,
                        None,
                        "a message header that never reached <|message|>",
                    );
                    State::Header {
                        tokens: Vec::new(),
                        role: None,
                        implicit_start: false,
                    }
                }
                _ if is_stop => {
                    self.flush_headless(
                        &tokens,
                        role,
                        special,
                        "text without a message header (no <|message|>)",
                    );
                    State::ExpectStart { stray: Vec::new() }
                }
                _ => {
                    tokens.push(token);
                    State::Header {
                        tokens,
                        role,
                        implicit_start,
                    }
                }
            },
            State::Content {
                header,
                mut text,
                mut pending,
            } => {
                if is_stop {
                    self.finish_content(header, text, pending, special);
                    State::ExpectStart { stray: Vec::new() }
                } else {
                    pending.extend_from_slice(self.encoding.token_bytes(token));
                    let delta = drain_utf8(&mut pending);
                    if !delta.is_empty() {
                        text.push_str(&delta);
                        self.last_delta = Some(delta);
                    }
                    State::Content {
                        header,
                        text,
                        pending,
                    }
                }
            }
        };
    }

    /// Marks the end of the stream: a message in progress is completed with
    /// `ended_by: None`, and leftovers become irregular messages.
    pub fn finish(&mut self) {
        self.last_delta = None;
        let state = std::mem::replace(&mut self.state, State::ExpectStart { stray: Vec::new() });
        match state {
            State::ExpectStart { stray } => self.flush_stray(&stray, None),
            State::Header { tokens, role, .. } => self.flush_headless(
                &tokens,
                role,
                None,
                "cut off in the message header, before <|message|>",
            ),
            State::Content {
                header,
                text,
                pending,
            } => self.finish_content(header, text, pending, None),
        }
    }

    fn finish_content(
        &mut self,
        header: Header,
        mut text: String,
        pending: Vec<u8>,
        ended_by: Option<Special>,
    ) {
        if !pending.is_empty() {
            let rest = String::from_utf8_lossy(&pending).into_owned();
            text.push_str(&rest);
            self.last_delta = Some(rest);
        }
        let message = Message {
            author: header.author,
            content: vec![Content::text(text)],
            channel: header.channel,
            recipient: header.recipient,
            content_type: header.content_type,
        };
        self.messages.push(ParsedMessage {
            message,
            ended_by,
            irregular: header.irregular,
        });
    }

    fn flush_stray(&mut self, stray: &[u32], ended_by: Option<Special>) {
        if stray.is_empty() {
            return;
        }
        let text = self.encoding.decode_lossy(stray);
        self.messages.push(ParsedMessage {
            message: Message::text(Role::Assistant, text),
            ended_by: ended_by.filter(|s| *s != Special::Start),
            irregular: Some(
                "text outside any message (after its end token, or without <|start|>)".into(),
            ),
        });
    }

    fn flush_headless(
        &mut self,
        tokens: &[u32],
        role: Option<Role>,
        ended_by: Option<Special>,
        why: &str,
    ) {
        if tokens.is_empty() {
            return;
        }
        let text = self.encoding.decode_lossy(tokens);
        self.messages.push(ParsedMessage {
            message: Message::text(role.unwrap_or(Role::Assistant), text),
            ended_by,
            irregular: Some(why.into()),
        });
    }

    fn parse_header(
        &self,
        tokens: &[u32],
        given_role: Option<Role>,
        implicit_start: bool,
    ) -> Header {
        let raw = self.encoding.decode_lossy(tokens);
        let mut problems = Vec::new();
        if implicit_start {
            problems.push("the message did not begin with <|start|>".to_string());
        }
        let mut text = raw.clone();
        let mut channel = None;
        let marker = Special::Channel.as_str();
        if let Some(at) = text.find(marker) {
            let after = &text[at + marker.len()..];
            let end = after
                .find(|c: char| c.is_whitespace() || c == '<')
                .unwrap_or(after.len());
            if end == 0 {
                problems.push("<|channel|> without a channel name".into());
            } else {
                channel = Some(after[..end].to_string());
            }
            text = format!("{}{}", &text[..at], &after[end..]);
        }
        let constrain = Special::Constrain.as_str();
        let mut text = text.trim().to_string();
        if text.contains(constrain) {
            text = text
                .replace(constrain, &format!(" {constrain}"))
                .trim()
                .to_string();
        }
        let mut parts: Vec<&str> = text.split_ascii_whitespace().collect();
        let mut tool_name = None;
        let role = match given_role {
            Some(role) => role,
            None => match parts.first().copied() {
                None => {
                    problems.push("no role in the header".into());
                    Role::Assistant
                }
                Some(word) => match Role::parse(word) {
                    Some(role) => role,
                    None => {
                        // An unknown first word is a tool's name (`functions.x to=assistant`).
                        if parts.len() == 1 && !word.starts_with("to=") {
                            problems.push(format!("unknown role {word:?}"));
                        }
                        parts.remove(0);
                        tool_name = Some(word.to_string());
                        Role::Tool
                    }
                },
            },
        };
        if parts.first() == Some(&role.as_str()) {
            parts.remove(0);
        }
        let mut recipient = None;
        let mut content_type = None;
        if let Some(last) = parts.pop() {
            if let Some(to) = last.strip_prefix("to=") {
                recipient = Some(to.to_string());
            } else if parts.is_empty() {
                recipient = Some(last.to_string());
            } else {
                content_type = Some(last.to_string());
                if let Some(to) = parts.pop() {
                    recipient = Some(to.strip_prefix("to=").unwrap_or(to).to_string());
                }
            }
        }
        if !parts.is_empty() {
            problems.push(format!(
                "unexpected words in the header: {:?}",
                parts.join(" ")
            ));
        }
        Header {
            author: Author {
                role,
                name: if role == Role::Tool { tool_name } else { None },
            },
            recipient,
            channel,
            content_type,
            irregular: (!problems.is_empty())
                .then(|| format!("header {raw:?}: {}", problems.join("; "))),
        }
    }

    /// Messages completed so far.
    pub fn messages(&self) -> &[ParsedMessage] {
        &self.messages
    }

    pub fn into_messages(self) -> Vec<ParsedMessage> {
        self.messages
    }

    /// Every token fed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The text the last token added to the current message, if any.
    pub fn last_content_delta(&self) -> Option<&str> {
        self.last_delta.as_deref()
    }

    /// The role of the message being parsed (known before its header ends
    /// when the parser was started with a role).
    pub fn current_role(&self) -> Option<Role> {
        match &self.state {
            State::Content { header, .. } => Some(header.author.role),
            State::Header { role, .. } => *role,
            State::ExpectStart { .. } => None,
        }
    }

    fn header(&self) -> Option<&Header> {
        match &self.state {
            State::Content { header, .. } => Some(header),
            _ => None,
        }
    }

    pub fn current_channel(&self) -> Option<&str> {
        self.header().and_then(|h| h.channel.as_deref())
    }

    pub fn current_recipient(&self) -> Option<&str> {
        self.header().and_then(|h| h.recipient.as_deref())
    }

    pub fn current_content_type(&self) -> Option<&str> {
        self.header().and_then(|h| h.content_type.as_deref())
    }

    /// The text of the message being parsed so far.
    pub fn current_content(&self) -> Option<&str> {
        match &self.state {
            State::Content { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Moves the longest valid UTF-8 prefix of `pending` out as text, replacing
/// invalid sequences with U+FFFD; an incomplete sequence at the end stays.
fn drain_utf8(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(pending) {
            Ok(text) => {
                out.push_str(text);
                pending.clear();
                return out;
            }
            Err(err) => {
                let valid = err.valid_up_to();
                out.push_str(std::str::from_utf8(&pending[..valid]).unwrap());
                match err.error_len() {
                    Some(bad) => {
                        out.push(REPLACEMENT);
                        pending.drain(..valid + bad);
                    }
                    None => {
                        pending.drain(..valid);
                        return out;
                    }
                }
            }
        }
    }
}

impl HarmonyEncoding {
    /// Parses a whole completion.
    pub fn parse_completion(&self, tokens: &[u32], role: Option<Role>) -> Vec<ParsedMessage> {
        let mut parser = StreamParser::new(self, role);
        for &token in tokens {
            parser.process(token);
        }
        parser.finish();
        parser.into_messages()
    }
}
