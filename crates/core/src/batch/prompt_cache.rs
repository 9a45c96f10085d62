//! The batch's prompt cache: caches of finished sequences, looked up by
//! their tokens, kept in memory (an LRU bounded in bytes) and saved to or
//! loaded from disk.

use mlx_rs::Array;

use crate::models::cache::KvCache;
use crate::{Error, Result};

use super::BatchGenerator;

/// Caches of finished sequences, kept so that a later prompt that starts the
/// same way (the next turn of a conversation, a repeated system prompt) runs
/// only its new tokens. The least recently used go first once the total
/// passes the byte limit.
pub(super) struct PromptCache {
    max_bytes: usize,
    /// Most recently used last.
    entries: Vec<CachedPrefix>,
}

struct CachedPrefix {
    tokens: Vec<u32>,
    caches: Vec<KvCache>,
    bytes: usize,
}

impl PromptCache {
    /// An empty cache holding at most `max_bytes` (0: it keeps nothing).
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: Vec::new(),
        }
    }

    /// Whether it keeps anything at all.
    pub(super) fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The caches of the entry sharing the longest prefix with `prompt`,
    /// trimmed to it (at least one prompt token is left to run, for the
    /// logits), and how many tokens they hold.
    pub(super) fn lookup(&mut self, prompt: &[u32]) -> Option<(usize, Vec<KvCache>)> {
        let (index, common) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common.min(prompt.len() - 1))
            })
            .max_by_key(|&(_, common)| common)?;
        if common == 0 {
            return None;
        }
        let entry = self.entries.remove(index);
        let mut caches = entry.caches.clone();
        let excess = (entry.tokens.len() - common) as i32;
        for cache in &mut caches {
            cache.trim(excess);
        }
        self.entries.push(entry);
        Some((common, caches))
    }

    /// The longest start `prompt` shares with an entry (what `lookup`
    /// would reuse, at most all but its last token), touching nothing.
    pub(super) fn longest_shared(&self, prompt: &[u32]) -> usize {
        self.entries
            .iter()
            .map(|e| shared_prefix(&e.tokens, prompt).min(prompt.len().saturating_sub(1)))
            .max()
            .unwrap_or(0)
    }

    pub(super) fn insert(&mut self, tokens: Vec<u32>, caches: Vec<KvCache>) {
        // A cache that dropped positions (a bounded one) cannot be trimmed
        // back to a prefix.
        if caches.iter().any(|c| c.len() < c.offset()) {
            return;
        }
        let bytes = caches.iter().map(KvCache::nbytes).sum();
        if bytes > self.max_bytes {
            return;
        }
        // An entry this one extends says nothing more.
        self.entries
            .retain(|e| !(e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens)));
        self.entries.push(CachedPrefix {
            tokens,
            caches,
            bytes,
        });
        let mut total: usize = self.entries.iter().map(|e| e.bytes).sum();
        while total > self.max_bytes && !self.entries.is_empty() {
            total -= self.entries.remove(0).bytes;
        }
    }
}

impl BatchGenerator {
    /// Writes the prompt cache to `path` (safetensors: each entry's layers'
    /// keys and values, its tokens in the metadata), labelled with `model`
    /// so that it is only loaded back for the same model. Returns the
    /// entries written.
    pub fn save_prompt_cache(&self, path: &std::path::Path, model: &str) -> Result<usize> {
        let mut arrays: Vec<(String, Array)> = Vec::new();
        let mut metadata = std::collections::HashMap::new();
        let mut saved = 0;
        for entry in &self.prompt_cache.entries {
            let mut layers = Vec::with_capacity(entry.caches.len());
            for cache in &entry.caches {
                match cache.positions()? {
                    Some(kv) => layers.push(kv),
                    None => break,
                }
            }
            if layers.len() != entry.caches.len() {
                continue; // a sliding-window entry: not saved
            }
            for (layer, (k, v)) in layers.into_iter().enumerate() {
                arrays.push((format!("{saved}.{layer}.keys"), k));
                arrays.push((format!("{saved}.{layer}.values"), v));
            }
            metadata.insert(
                format!("{saved}.tokens"),
                serde_json::to_string(&entry.tokens).expect("a list of numbers"),
            );
            saved += 1;
        }
        metadata.insert("model".to_string(), model.to_string());
        metadata.insert("entries".to_string(), saved.to_string());
        // One batch cache per layer.
        metadata.insert("layers".to_string(), self.caches.len().to_string());
        Array::save_safetensors(arrays.iter().map(|(k, a)| (k, a)), &metadata, path)
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
        Ok(saved)
    }

    /// Loads a prompt cache written by [`BatchGenerator::save_prompt_cache`]
    /// for the same `model`; returns the entries loaded (they count against
    /// the byte limit like any other).
    pub fn load_prompt_cache(&mut self, path: &std::path::Path, model: &str) -> Result<usize> {
        let unreadable = |why: String| Error::Invalid(format!("{}: {why}", path.display()));
        let (arrays, metadata) = Array::load_safetensors_with_metadata(path)
            .map_err(|e| unreadable(format!("not a prompt-cache file ({e})")))?;
        let field = |name: &str| {
            metadata
                .get(name)
                .ok_or_else(|| unreadable(format!("no `{name}` in its metadata")))
        };
        if field("model")? != model {
            return Err(unreadable(format!(
                "it was saved for model {:?}, not {model:?}",
                field("model")?
            )));
        }
        let layers = self.caches.len();
        if field("layers")?.parse::<usize>().ok() != Some(layers) {
            return Err(unreadable("its layer count is not this model's".into()));
        }
        let entries: usize = field("entries")?
            .parse()
            .map_err(|_| unreadable("a bad entry count".into()))?;
        // Every entry is read and checked before any is kept: a bad file
        // adds nothing.
        let mut loaded = Vec::with_capacity(entries);
        for entry in 0..entries {
            let tokens: Vec<u32> = serde_json::from_str(field(&format!("{entry}.tokens"))?)
                .map_err(|e| unreadable(format!("entry {entry}'s tokens: {e}")))?;
            let mut caches = Vec::with_capacity(layers);
            for layer in 0..layers {
                let get = |kind: &str| {
                    arrays
                        .get(&format!("{entry}.{layer}.{kind}"))
                        .cloned()
                        .ok_or_else(|| unreadable(format!("entry {entry} lacks layer {layer}")))
                };
                let (keys, values) = (get("keys")?, get("values")?);
                if keys.dim(2) as usize != tokens.len() {
                    return Err(unreadable(format!(
                        "entry {entry}: layer {layer} holds {} positions for {} tokens",
                        keys.dim(2),
                        tokens.len()
                    )));
                }
                caches.push(KvCache::from_arrays(keys, values));
            }
            loaded.push((tokens, caches));
        }
        for (tokens, caches) in loaded {
            self.prompt_cache.insert(tokens, caches);
        }
        Ok(entries)
    }

    /// Prompt-cache entries and the bytes they hold.
    pub fn prompt_cache_usage(&self) -> (usize, usize) {
        let cache = &self.prompt_cache;
        (
            cache.entries.len(),
            cache.entries.iter().map(|e| e.bytes).sum(),
        )
    }
}

/// How many tokens `a` and `b` start with in common.
pub(super) fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
