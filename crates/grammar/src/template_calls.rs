//! A plain-text model's strict tool calls. Hermes-style templates (Qwen,
//! Hermes) write a call as `<tool_call>{"name": ..., "arguments": {...}}
//! </tool_call>` anywhere in the reply; the text around calls stays free.
//! Once the reply's text ends with the opening tag, the call is held to
//! `{"name": <a strict tool>, "arguments": <its schema>}` and the closing tag.

use std::sync::Arc;

use llguidance::Matcher;
use mlx_harmony_core::Result;
use mlx_harmony_core::sampling::TokenConstraint;
use tokenizers::Tokenizer;

use crate::mask::{engine_error, mask_bits};

pub use mlx_harmony_core::tool_parsers::hermes::{CLOSE, OPEN};

pub struct TemplateCalls {
    tokenizer: Arc<Tokenizer>,
    call: Matcher,
    eos: Vec<u32>,
    /// The free text's tail, long enough to see the opening tag.
    tail: String,
    /// The call being written, when one is.
    held: Option<Matcher>,
}

impl TemplateCalls {
    pub fn new(tokenizer: Arc<Tokenizer>, call: Matcher, eos: Vec<u32>) -> Self {
        TemplateCalls {
            tokenizer,
            call,
            eos,
            tail: String::new(),
            held: None,
        }
    }
}

impl TokenConstraint for TemplateCalls {
    fn consume(&mut self, token: u32) -> Result<()> {
        if let Some(held) = &mut self.held {
            held.consume_token(token).map_err(engine_error)?;
            if held.is_stopped() || held.is_accepting().map_err(engine_error)? {
                self.held = None;
            }
            return Ok(());
        }
        let piece = self.tokenizer.decode(&[token], false).unwrap_or_default();
        self.tail.push_str(&piece);
        if self.tail.ends_with(OPEN) {
            self.held = Some(self.call.deep_clone());
            self.tail.clear();
        } else if self.tail.len() > 4 * OPEN.len() {
            let cut = self.tail.len() - OPEN.len();
            let cut = (cut..self.tail.len())
                .find(|&i| self.tail.is_char_boundary(i))
                .unwrap_or(self.tail.len());
            self.tail.drain(..cut);
        }
        Ok(())
    }

    fn allowed(&mut self) -> Result<Option<Vec<u32>>> {
        match &mut self.held {
            // A call cannot be cut short by the end of the reply.
            Some(held) => Ok(Some(mask_bits(held, &self.eos, &[])?)),
            None => Ok(None),
        }
    }

    fn reset(&mut self) -> Result<()> {
        self.tail.clear();
        self.held = None;
        Ok(())
    }

    fn fresh(&self) -> Box<dyn TokenConstraint> {
        Box::new(TemplateCalls::new(
            self.tokenizer.clone(),
            self.call.deep_clone(),
            self.eos.clone(),
        ))
    }
}
