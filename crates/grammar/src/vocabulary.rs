//! The model's vocabulary as the grammar engine reads it: each token's bytes
//! (special tokens marked, so that a grammar never produces them unless it
//! names them) in a trie, and the tokenizer for the grammar's literals.

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use tokenizers::Tokenizer;

struct Vocabulary {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<TokenId> {
        // The grammar's literals: the tokenizer's own split where the text is
        // UTF-8, the trie's greedy one for what is not.
        self.trie.tokenize_with_greedy_fallback(bytes, |text| {
            self.tokenizer
                .encode(text, false)
                .map(|encoding| encoding.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// The token environment of `tokenizer`, with `model_vocab` tokens (ids the
/// tokenizer lacks are padding, never allowed) and `eos` as the tokens that
/// end the output.
pub fn token_env(tokenizer: &Tokenizer, model_vocab: usize, eos: &[u32]) -> anyhow::Result<TokEnv> {
    let json: serde_json::Value = serde_json::from_str(
        &tokenizer
            .to_string(false)
            .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?,
    )?;
    let mut words = llguidance::token_bytes_from_tokenizer_json(&json)?;
    let size = words.len().max(model_vocab);
    for (id, word) in words.iter_mut().enumerate() {
        if word.is_empty() {
            *word = padding(id);
        }
    }
    while words.len() < size {
        words.push(padding(words.len()));
    }
    let first_eos = *eos
        .first()
        .ok_or_else(|| anyhow::anyhow!("the model has no end-of-output token"))?;
    let info = TokRxInfo::new(size as u32, first_eos);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
    Ok(Arc::new(Vocabulary {
        trie,
        tokenizer: tokenizer.clone(),
    }))
}

/// The name of an id with no text: a special token no grammar names.
fn padding(id: usize) -> Vec<u8> {
    let mut name = format!(".<[{id}]>").into_bytes();
    name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
    name
}
