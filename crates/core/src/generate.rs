//! Text generation over a loaded model and its tokenizer: the prompt through
//! the chat template, prefill, then token by token with the KV cache,
//! streaming text as soon as it is whole UTF-8.
//!
//! [`TokenGenerator`] keeps the KV cache between calls (the prompt cache);
//! [`crate::chat`] builds prompts from conversations and streams replies.

use std::path::Path;
use std::time::Instant;

use mlx_rs::Array;
use mlx_rs::transforms::async_eval;
use tokenizers::Tokenizer;

use mlx_harmony_format::HarmonyEncoding;

pub use crate::chat::PromptSetup;
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::models::Model;
use crate::models::blocks::last_position;
use crate::models::cache::KvCache;
use crate::sampling::{Sampler, SamplingSettings};
use crate::{Error, Result};

/// A model with its tokenizer and chat template.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Set for GPT-OSS models, which take their prompt in the Harmony format.
    pub harmony: Option<HarmonyEncoding>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token: String,
    pub eos_token: String,
}

impl LoadedModel {
    /// Loads a model: a GGUF file (or a folder holding one), or a Hugging
    /// Face / mlx-community folder with `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        if let Some(file) = crate::gguf::find_gguf(path) {
            return Self::load_gguf(&file);
        }
        if path.join("config.json").is_file() {
            return Self::load_folder(path);
        }
        Err(Error::Invalid(format!(
            "{}: not a model: expected a .gguf file or a folder with config.json and tokenizer.json",
            path.display()
        )))
    }

    fn load_gguf(file: &Path) -> Result<Self> {
        let (checkpoint, extras) = crate::gguf::open(file)?;
        let model = Model::from_checkpoint(checkpoint)?;
        let token = |id: Option<u32>| {
            id.and_then(|i| extras.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        Ok(LoadedModel {
            bos_token: token(extras.bos_token_id),
            eos_token: token(extras.eos_token_ids.first().copied()),
            chat_template: extras
                .chat_template
                .as_deref()
                .map(ChatTemplate::new)
                .transpose()?,
            harmony: None,
            eos_token_ids: extras.eos_token_ids,
            tokenizer: extras.tokenizer,
            model,
        })
    }

    fn load_folder(dir: &Path) -> Result<Self> {
        let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Checkpoint {
                    path,
                    message: format!("not valid JSON: {e}"),
                })
        };
        let config = read_json("config.json")?.unwrap_or_default();
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::Checkpoint {
            path: tokenizer_path.clone(),
            message: format!("cannot load the tokenizer: {e}"),
        })?;
        if config.get("model_type").and_then(|v| v.as_str()) == Some("gpt_oss") {
            // GPT-OSS speaks Harmony: its turn ends with <|return|> (done) or
            // <|call|> (a tool call); the chat template is not used.
            let harmony =
                HarmonyEncoding::new(tokenizer.clone()).map_err(|e| Error::Checkpoint {
                    path: tokenizer_path.clone(),
                    message: e.to_string(),
                })?;
            return Ok(LoadedModel {
                model: Model::load(dir)?,
                eos_token_ids: harmony.stop_tokens_for_assistant_actions().to_vec(),
                harmony: Some(harmony),
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
                tokenizer,
            });
        }
        let tokenizer_config = read_json("tokenizer_config.json")?.unwrap_or_default();
        // A token is written as a string or as {"content": ...}.
        let token_text = |v: Option<&serde_json::Value>| -> String {
            match v {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        let template = match tokenizer_config.get("chat_template") {
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            // Several named templates: the default one.
            Some(serde_json::Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| {
                    t.get("template")
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                }),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        // End-of-turn ids: generation_config.json, then config.json, then the tokenizer's eos.
        let ids_of = |v: Option<&serde_json::Value>| -> Vec<u32> {
            match v {
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
                }
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|n| n.as_u64())
                    .map(|n| n as u32)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let eos_token = token_text(tokenizer_config.get("eos_token"));
        let mut eos_token_ids = ids_of(
            read_json("generation_config.json")?
                .as_ref()
                .and_then(|g| g.get("eos_token_id")),
        );
        if eos_token_ids.is_empty() {
            eos_token_ids = ids_of(config.get("eos_token_id"));
        }
        if eos_token_ids.is_empty() {
            eos_token_ids.extend(tokenizer.token_to_id(&eos_token));
        }
        Ok(LoadedModel {
            model: Model::load(dir)?,
            bos_token: token_text(tokenizer_config.get("bos_token")),
            eos_token,
            chat_template: template.as_deref().map(ChatTemplate::new).transpose()?,
            harmony: None,
            eos_token_ids,
            tokenizer,
        })
    }

    /// The prompt text for a conversation (the chat template, or the plain
    /// text of the last message when the model has no template).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.render_with_tools(messages, &[])
    }

    /// Like [`LoadedModel::render`], declaring `tools` (OpenAI-style function
    /// definitions) to the template.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
    ) -> Result<String> {
        match &self.chat_template {
            Some(template) => {
                template.render(messages, tools, true, &self.bos_token, &self.eos_token)
            }
            None => Ok(messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default()),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// How many prompt tokens go through the model at once: long prompts are
/// prefilled in chunks so that memory stays bounded.
pub const PREFILL_CHUNK: usize = 512;

/// Runs `tokens` through the model into `caches` and returns the logits of
/// the last one (`[1, 1, vocab]`). All but the last token go in chunks of
/// [`PREFILL_CHUNK`] with only the caches evaluated, so memory stays bounded
/// and the vocabulary projection of those positions is never computed; the
/// last token's own step gives the logits.
pub fn prefill(model: &Model, caches: &mut [KvCache], tokens: &[u32]) -> Result<Array> {
    let (last, before) = tokens
        .split_last()
        .ok_or_else(|| Error::Invalid("cannot generate from an empty prompt".into()))?;
    for chunk in before.chunks(PREFILL_CHUNK) {
        model.forward_tokens(chunk, caches)?;
        let states: Vec<&Array> = caches.iter().flat_map(|c| c.state()).collect();
        mlx_rs::transforms::eval(states)?;
    }
    model.forward_tokens(&[*last], caches)
}

/// Stops a generation from another thread (Ctrl-C in chat, a client that
/// went away in the server). Cheap to clone; all clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Clears the flag for the next generation.
    pub fn reset(&self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

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
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds generated text; returns the text that is safe to emit, and
    /// whether a stop string was reached (then nothing after it is emitted).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
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

    /// The text still held when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// What a generation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the prompt cache rather than run again.
    pub cached_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    pub finished_by_eos: bool,
    /// Ended because a stop string appeared (it is not part of `text`).
    pub finished_by_stop: bool,
    /// Ended because [`Cancel::cancel`] was called.
    pub cancelled: bool,
    /// From the call to the first generated token.
    pub time_to_first_token_seconds: f64,
    /// The most memory MLX held during the call, in bytes.
    pub peak_memory_bytes: usize,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

/// Generates up to `max_tokens` tokens after `prompt` with `sampler`, calling
/// `on_token` with each token and the text it completes (often empty: text
/// is held back until it is whole UTF-8; special tokens have none). Stops at
/// an end-of-turn token, which is not passed on.
pub fn generate(
    loaded: &LoadedModel,
    prompt: &[u32],
    sampler: &mut Sampler,
    max_tokens: usize,
    on_token: impl FnMut(u32, &str),
) -> Result<Generation> {
    let mut caches = loaded.model.new_caches();
    Ok(run(
        loaded,
        &mut caches,
        prompt,
        0,
        sampler,
        max_tokens,
        &[],
        &Cancel::new(),
        None,
        on_token,
    )?
    .0)
}

/// The decoding loop over caches that already hold `prompt[..cached]`.
/// Returns the generation and the tokens fed to the model after the prompt
/// (what the caches now hold beyond it). With `sliding_after_prompt`, the
/// sliding-window caches are copied there as the whole prompt left them
/// (`None` for the other layers).
#[allow(clippy::too_many_arguments)]
fn run(
    loaded: &LoadedModel,
    caches: &mut [KvCache],
    prompt: &[u32],
    cached: usize,
    sampler: &mut Sampler,
    max_tokens: usize,
    stop: &[String],
    cancel: &Cancel,
    sliding_after_prompt: Option<&mut Vec<Option<KvCache>>>,
    mut on_token: impl FnMut(u32, &str),
) -> Result<(Generation, Vec<u32>)> {
    let model = &loaded.model;
    let start = Instant::now();
    // A failed peak-memory query only loses a statistic.
    let _ = mlx_rs::memory::reset_peak_memory();
    // The repetition penalty needs every token on the host before the next
    // step; otherwise the next step is queued before this token is read.
    let pipelined = sampler.settings().repetition_penalty == 1.0;
    let logits = prefill(model, caches, &prompt[cached..])?;
    if let Some(saved) = sliding_after_prompt {
        *saved = caches
            .iter()
            .map(|c| c.window().is_some().then(|| c.clone()))
            .collect();
    }
    let mut tokens: Vec<u32> = Vec::new();
    let mut next = sampler.sample(&last_position(&logits)?, &tokens)?;
    async_eval([&next])?;
    let mut first_token_at = None;
    let mut fed = Vec::new();
    let mut text = String::new();
    let mut detokenizer = Detokenizer::new();
    let mut finished_by_eos = false;
    let mut finished_by_stop = false;
    let mut stops = StopMatcher::new(stop);
    let mut cancelled = false;
    while tokens.len() < max_tokens {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let more = tokens.len() + 1 < max_tokens;
        let mut following = None;
        if pipelined && more {
            let logits = model.forward(&next.reshape(&[1, 1])?, caches)?;
            let f = sampler.sample(&last_position(&logits)?, &tokens)?;
            async_eval([&f])?;
            following = Some(f);
        }
        let id = next.item_exact::<u32>();
        if following.is_some() {
            fed.push(id);
        }
        first_token_at.get_or_insert_with(Instant::now);
        if loaded.eos_token_ids.contains(&id) {
            finished_by_eos = true;
            break;
        }
        tokens.push(id);
        let piece = detokenizer.push(&loaded.tokenizer, id).unwrap_or_default();
        let (piece, stopped) = stops.push(&piece);
        on_token(id, &piece);
        text.push_str(&piece);
        if stopped {
            finished_by_stop = true;
            break;
        }
        if !more {
            break;
        }
        next = match following {
            Some(f) => f,
            None => {
                let logits = model.forward_tokens(&[id], caches)?;
                fed.push(id);
                sampler.sample(&last_position(&logits)?, &tokens)?
            }
        };
    }
    if !finished_by_stop {
        let rest = stops.flush();
        if !rest.is_empty() {
            on_token(*tokens.last().unwrap_or(&0), &rest);
            text.push_str(&rest);
        }
    }
    let end = Instant::now();
    let first = first_token_at.unwrap_or(end);
    let prefill = (first - start).as_secs_f64();
    let decode = (end - first).as_secs_f64();
    let prefilled = prompt.len() - cached;
    let generation = Generation {
        prompt_tokens: prompt.len(),
        cached_tokens: cached,
        finished_by_eos,
        finished_by_stop,
        cancelled,
        time_to_first_token_seconds: prefill,
        peak_memory_bytes: mlx_rs::memory::peak_memory().unwrap_or(0),
        prefill_tokens_per_second: if prefill > 0.0 {
            prefilled as f64 / prefill
        } else {
            0.0
        },
        decode_tokens_per_second: if decode > 0.0 && tokens.len() > 1 {
            (tokens.len() - 1) as f64 / decode
        } else {
            0.0
        },
        tokens,
        text,
    };
    Ok((generation, fed))
}

/// A model with a prompt cache: the KV cache of the last call is kept, and a
/// following prompt that starts the same way (the next turn of a chat, a
/// repeated server request) only runs its new tokens through the model.
pub struct TokenGenerator {
    pub loaded: LoadedModel,
    cancel: Cancel,
    caches: Vec<KvCache>,
    /// The tokens the caches hold, in order.
    cached: Vec<u32>,
    /// Sliding-window models: the sliding caches as the last prompt left
    /// them, and that prompt's length. Such caches cannot rewind, and the
    /// next chat turn usually drops what came after the prompt (Harmony
    /// leaves the reasoning out), so they are restored from here instead.
    after_prompt: Option<(usize, Vec<Option<KvCache>>)>,
}

impl TokenGenerator {
    pub fn new(loaded: LoadedModel) -> Self {
        let caches = loaded.model.new_caches();
        TokenGenerator {
            loaded,
            cancel: Cancel::new(),
            caches,
            cached: Vec::new(),
            after_prompt: None,
        }
    }

    /// Loads a model (see [`LoadedModel::load`]).
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::new(LoadedModel::load(path)?))
    }

    /// A handle that stops the generation in progress (from another thread);
    /// each call to `generate` clears it first.
    pub fn cancel_handle(&self) -> Cancel {
        self.cancel.clone()
    }

    /// Tokens currently held in the prompt cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the prompt cache.
    pub fn clear_cache(&mut self) {
        self.caches = self.loaded.model.new_caches();
        self.cached.clear();
        self.after_prompt = None;
    }

    /// Like [`generate`], reusing the longest common prefix of the cache and
    /// `prompt` (at least one prompt token always runs, for the logits).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        max_tokens: usize,
        on_token: impl FnMut(u32, &str),
    ) -> Result<Generation> {
        self.generate_until(prompt, sampler, max_tokens, &[], on_token)
    }

    /// Like [`TokenGenerator::generate`], also ending at the first of the
    /// `stop` strings (which is not emitted).
    pub fn generate_until(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        max_tokens: usize,
        stop: &[String],
        on_token: impl FnMut(u32, &str),
    ) -> Result<Generation> {
        self.cancel.reset();
        if prompt.is_empty() {
            return Err(Error::Invalid(
                "cannot generate from an empty prompt".into(),
            ));
        }
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        let excess = (self.cached.len() - common) as i32;
        // A sliding-window cache cannot give back positions it has dropped:
        // such a model goes back to where the last prompt ended if the new
        // prompt starts with it (the next turn of a chat), else starts afresh.
        let sliding_model = self.caches.iter().any(|c| c.window().is_some());
        let trimmable = excess == 0 || !sliding_model;
        let saved = self
            .after_prompt
            .take()
            .filter(|(position, _)| !trimmable && *position <= common);
        let reuse = if trimmable {
            for cache in &mut self.caches {
                cache.trim(excess);
            }
            common
        } else if let Some((position, sliding)) = saved {
            let beyond = (self.cached.len() - position) as i32;
            for (cache, saved) in self.caches.iter_mut().zip(sliding) {
                match saved {
                    Some(saved) => *cache = saved,
                    None => {
                        cache.trim(beyond);
                    }
                }
            }
            position
        } else {
            self.clear_cache();
            0
        };
        self.cached.truncate(reuse);
        let mut sliding_after_prompt = Vec::new();
        // If anything fails midway the caches are in an unknown state: forget them.
        let result = run(
            &self.loaded,
            &mut self.caches,
            prompt,
            reuse,
            sampler,
            max_tokens,
            stop,
            &self.cancel,
            sliding_model.then_some(&mut sliding_after_prompt),
            on_token,
        );
        match result {
            Ok((generation, fed)) => {
                self.cached = prompt.to_vec();
                self.cached.extend(fed);
                if sliding_model {
                    self.after_prompt = Some((prompt.len(), sliding_after_prompt));
                }
                Ok(generation)
            }
            Err(err) => {
                self.clear_cache();
                Err(err)
            }
        }
    }
}

/// Greedy generation (temperature 0, no other processing).
pub fn generate_greedy(
    loaded: &LoadedModel,
    prompt: &[u32],
    max_tokens: usize,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mut sampler = Sampler::new(SamplingSettings::default())?;
    generate(loaded, prompt, &mut sampler, max_tokens, |_, piece| {
        if !piece.is_empty() {
            on_text(piece)
        }
    })
}
