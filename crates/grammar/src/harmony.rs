//! A GPT-OSS model's constraint. Its reply is a run of Harmony messages,
//! each a header (`<|channel|>final`, `to=functions.name`,
//! `<|constrain|>json`) then `<|message|>` and a body. Headers, and the
//! bodies of the analysis channel and of anything not held to a format,
//! stay free; a body that is held gets its grammar, and may end (with the
//! message's end token) only where the grammar may:
//!
//! - a call to a strict tool: the tool's parameter schema, ended by `<|call|>`;
//! - any other `<|constrain|>json` message: any JSON object;
//! - the final channel, when the answer has a format: that format, ended by
//!   `<|return|>` or `<|end|>`.

use std::sync::Arc;

use llguidance::Matcher;
use mlx_harmony_core::Result;
use mlx_harmony_core::sampling::TokenConstraint;
use tokenizers::Tokenizer;

use crate::mask::{engine_error, mask_bits, only};

/// The Harmony control tokens of a vocabulary, and the tokenizer that reads
/// headers.
#[derive(Clone)]
pub struct HarmonyTokens {
    start: u32,
    channel: u32,
    message: u32,
    constrain: u32,
    end: u32,
    call: u32,
    return_: u32,
    tokenizer: Arc<Tokenizer>,
}

impl HarmonyTokens {
    pub fn find(tokenizer: Arc<Tokenizer>) -> std::result::Result<Self, String> {
        let id = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| format!("the Harmony token {name} is not in the vocabulary"))
        };
        Ok(HarmonyTokens {
            start: id("<|start|>")?,
            channel: id("<|channel|>")?,
            message: id("<|message|>")?,
            constrain: id("<|constrain|>")?,
            end: id("<|end|>")?,
            call: id("<|call|>")?,
            return_: id("<|return|>")?,
            tokenizer,
        })
    }
}

/// Where in the reply the last token left it.
enum Place {
    /// In a header: its text so far (control tokens written out).
    Header(String),
    /// In a body, held to a grammar or not.
    Body(Option<Box<Held>>),
    /// After a message's end, before the next `<|start|>`.
    Between,
}

/// A body held to a grammar, and the tokens that may end it.
struct Held {
    matcher: Matcher,
    ends: Vec<u32>,
}

pub struct HarmonyConstraint {
    tokens: HarmonyTokens,
    answer: Option<Matcher>,
    tools: Vec<(String, Matcher)>,
    any_json: Matcher,
    /// Every token that ends a reply: never allowed inside a held body
    /// except as its own ends.
    eos: Vec<u32>,
    place: Place,
}

impl HarmonyConstraint {
    pub fn new(
        tokens: HarmonyTokens,
        answer: Option<Matcher>,
        tools: Vec<(String, Matcher)>,
        any_json: Matcher,
        eos: Vec<u32>,
    ) -> Self {
        HarmonyConstraint {
            tokens,
            answer,
            tools,
            any_json,
            eos,
            // A reply starts after the prompt's `<|start|>assistant`.
            place: Place::Header(String::new()),
        }
    }

    /// The body a finished header opens.
    fn body_for(&self, header: &str) -> Option<Held> {
        let t = &self.tokens;
        let recipient = header
            .split(|c: char| c.is_whitespace() || c == '<')
            .find_map(|word| word.strip_prefix("to="));
        let channel = header
            .split("<|channel|>")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '<').next())
            .unwrap_or("");
        let json = header
            .split("<|constrain|>")
            .nth(1)
            .is_some_and(|rest| rest.trim_start().starts_with("json"));
        let call_ends = vec![t.call];
        if let Some(tool) = recipient.and_then(|r| r.strip_prefix("functions."))
            && let Some((_, matcher)) = self.tools.iter().find(|(name, _)| name == tool)
        {
            return Some(Held {
                matcher: matcher.deep_clone(),
                ends: call_ends,
            });
        }
        if json {
            let ends = if recipient.is_some() {
                call_ends
            } else {
                vec![t.end, t.return_]
            };
            return Some(Held {
                matcher: self.any_json.deep_clone(),
                ends,
            });
        }
        if channel == "final" && recipient.is_none() {
            return self.answer.as_ref().map(|matcher| Held {
                matcher: matcher.deep_clone(),
                ends: vec![t.return_, t.end],
            });
        }
        None
    }
}

impl TokenConstraint for HarmonyConstraint {
    fn consume(&mut self, token: u32) -> Result<()> {
        let t = &self.tokens;
        let ends_message = token == t.end || token == t.call || token == t.return_;
        let place = std::mem::replace(&mut self.place, Place::Between);
        self.place = match place {
            Place::Header(header) if token == t.message => {
                Place::Body(self.body_for(&header).map(Box::new))
            }
            Place::Header(_) if ends_message => Place::Between,
            Place::Header(mut header) => {
                if token == t.channel {
                    header.push_str("<|channel|>");
                } else if token == t.constrain {
                    header.push_str("<|constrain|>");
                } else {
                    header.push_str(&t.tokenizer.decode(&[token], false).unwrap_or_default());
                }
                Place::Header(header)
            }
            Place::Body(_) if ends_message => Place::Between,
            Place::Body(Some(mut held)) => {
                held.matcher.consume_token(token).map_err(engine_error)?;
                Place::Body(Some(held))
            }
            Place::Body(None) => Place::Body(None),
            Place::Between if token == t.start => Place::Header(String::new()),
            Place::Between => Place::Between,
        };
        Ok(())
    }

    fn allowed(&mut self) -> Result<Option<Vec<u32>>> {
        let Place::Body(Some(held)) = &mut self.place else {
            return Ok(None);
        };
        if held.matcher.is_stopped() {
            return Ok(Some(only(&held.ends)));
        }
        let accepting = held.matcher.is_accepting().map_err(engine_error)?;
        let ends: &[u32] = if accepting { &held.ends } else { &[] };
        Ok(Some(mask_bits(&mut held.matcher, &self.eos, ends)?))
    }

    fn reset(&mut self) -> Result<()> {
        self.place = Place::Header(String::new());
        Ok(())
    }

    fn fresh(&self) -> Box<dyn TokenConstraint> {
        Box::new(HarmonyConstraint::new(
            self.tokens.clone(),
            self.answer.as_ref().map(Matcher::deep_clone),
            self.tools
                .iter()
                .map(|(name, matcher)| (name.clone(), matcher.deep_clone()))
                .collect(),
            self.any_json.deep_clone(),
            self.eos.clone(),
        ))
    }
}
