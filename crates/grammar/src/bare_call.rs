//! A strict tool call of a model that answers a call with the bare object
//! (Llama 3.1 and later): the whole reply is one `{"name": ...,
//! "parameters": {...}}` or text without a call. The reply's first
//! character decides: `{` holds the rest to a call of a strict tool and
//! then the end of the reply; anything else sets the reply free for good.

use std::sync::Arc;

use llguidance::Matcher;
use mlx_harmony_core::Result;
use mlx_harmony_core::sampling::TokenConstraint;
use tokenizers::Tokenizer;

use crate::mask::engine_error;

pub struct BareCall {
    tokenizer: Arc<Tokenizer>,
    /// The grammar of the whole reply (a call, or text that is not one)
    /// before anything is written.
    start: Matcher,
    matcher: Matcher,
    /// The reply so far, while it is only whitespace (undecided).
    seen: String,
    /// Text, not a call: nothing more is held.
    free: bool,
}

impl BareCall {
    pub fn new(tokenizer: Arc<Tokenizer>, matcher: Matcher) -> Self {
        BareCall {
            tokenizer,
            start: matcher.deep_clone(),
            matcher,
            seen: String::new(),
            free: false,
        }
    }
}

impl TokenConstraint for BareCall {
    fn consume(&mut self, token: u32) -> Result<()> {
        if self.free {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(engine_error)?;
        if self.seen.trim_start().is_empty() {
            let piece = self.tokenizer.decode(&[token], false).unwrap_or_default();
            self.seen.push_str(&piece);
            if self
                .seen
                .trim_start()
                .chars()
                .next()
                .is_some_and(|c| c != '{')
            {
                self.free = true;
            }
        }
        Ok(())
    }

    fn allowed(&mut self) -> Result<Option<Vec<u32>>> {
        if self.free {
            return Ok(None);
        }
        // A finished call's mask is the end-of-output tokens.
        let mask = self.matcher.compute_mask_or_eos().map_err(engine_error)?;
        Ok(Some(mask.as_slice().to_vec()))
    }

    fn reset(&mut self) -> Result<()> {
        self.matcher = self.start.deep_clone();
        self.seen.clear();
        self.free = false;
        Ok(())
    }

    fn fresh(&self) -> Box<dyn TokenConstraint> {
        Box::new(BareCall::new(
            self.tokenizer.clone(),
            self.start.deep_clone(),
        ))
    }
}
