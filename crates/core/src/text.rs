//! Text out of generated tokens: whole UTF-8 pieces as tokens arrive
//! ([`Detokenizer`]) and stop strings that are never shown ([`StopMatcher`]).

use tokenizers::Tokenizer;

/// Turns a growing list of token ids into text pieces, holding back text that
/// ends in an incomplete UTF-8 character.
///
/// Each step decodes only a short window (the tokens since the last emitted
/// piece, plus the ones before them for context), not the whole answer, so a
/// long generation does not pay for decoding everything again every token.
#[derive(Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    /// Start of the decoding window: tokens before it are settled.
    prefix: usize,
    /// End of the text already emitted, in tokens.
    read: usize,
}

impl Detokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the new text, if any is complete.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Option<String> {
        self.ids.push(id);
        // The window's text with and without the unemitted tokens: decoding
        // from `prefix` rather than from `read` keeps tokenizers that treat a
        // sequence's first token specially (leading spaces) correct.
        let before = tokenizer
            .decode(&self.ids[self.prefix..self.read], true)
            .ok()?;
        let after = tokenizer.decode(&self.ids[self.prefix..], true).ok()?;
        if after.ends_with('\u{FFFD}')
            || after.len() <= before.len()
            || !after.is_char_boundary(before.len())
        {
            return None;
        }
        let piece = after[before.len()..].to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Some(piece)
    }
}

/// Holds back text that might be the start of a stop string, and says when
/// one has appeared: the stop string itself is never emitted, nor any part of
/// it.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    /// The stop string that ended the text, once one has.
    matched: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            matched: None,
        }
    }

    /// Adds generated text; returns the text that is safe to emit, and
    /// whether a stop string was reached (then nothing after it is emitted).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        // The stop string that starts first (the longest where two start at once).
        if let Some((at, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, stop)| (*at, std::cmp::Reverse(stop.len())))
        {
            let out = self.held[..at].to_string();
            self.matched = Some(stop.clone());
            self.held.clear();
            return (out, true);
        }
        // The longest tail of the held text that could still grow into a stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n))
                    .find(|&n| self.held.ends_with(&stop[..n]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// The stop string that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// The text still held when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}
