//! The inference engine of mlx-harmony: everything that touches MLX.
//!
//! This crate owns device selection, model resolution (local paths and
//! Hugging Face ids: [`hub`]) and loading ([`loading`]: prewarm, mlock),
//! checkpoints (safetensors folders and GGUF), the model architectures
//! (`models`, one module each, with the KV cache), the raw MLX bindings they
//! need beyond what `mlx-rs` exposes (MXFP4 and expert matmuls), sampling,
//! tokenization ([`loaded`], [`text`]), chat templates, prompts from
//! conversations ([`prompt`]: Harmony for GPT-OSS, the chat template
//! otherwise), replies read back as messages ([`reply`], with
//! [`tool_parsers`] for template models' calls), the tool loop ([`turn`],
//! over a [`turn::ToolRunner`] the caller supplies) and generation
//! ([`generate::TokenGenerator`], over the prompt pass of [`prefill`], with its prompt cache, shared by the
//! programs; `reply` and `turn` are layers over its one `generate`), with
//! speculative decoding (drafts from the text so far, [`lookup`], or from a
//! smaller model, [`draft`]) and continuous batching
//! ([`batch`]); a [`sampling::TokenConstraint`] (structured outputs,
//! compiled by `mlx-harmony-grammar`) masks what may be sampled. It knows nothing of command lines, prompt-config files or how
//! a tool runs: the front end (`mlx-harmony-frontend`) maps those onto it.
//!
//! Test support (scripted sampling, random-weight checkpoints) is behind the
//! `testing` feature, which this crate's own tests turn on.
//!
//! # Example
//!
//! Open a model (a path, or a Hugging Face id such as
//! `mlx-community/Qwen3-0.6B-4bit`), render a conversation, and stream the
//! reply:
//!
//! ```
//! use mlx_harmony_core::chat_template::ChatMessage;
//! use mlx_harmony_core::generate::GenerateOptions;
//! use mlx_harmony_core::loading::{self, LoadOptions};
//! use mlx_harmony_core::prompt::PromptSetup;
//! use mlx_harmony_core::reply::{ReplyEvent, reply};
//! use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
//!
//! # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/parity/llama");
//! let (mut generator, _path) = loading::open(model, &LoadOptions::default(), |_| {})?;
//! let messages = [ChatMessage::new("user", "Hello!")];
//! let prompt = generator
//!     .loaded
//!     .conversation_tokens(&PromptSetup::default(), &messages)?;
//! let mut sampler = Sampler::new(SamplingSettings {
//!     temperature: 0.7,
//!     seed: Some(1),
//!     ..Default::default()
//! })?;
//! let options = GenerateOptions::new(16);
//! let first = reply(&mut generator, &prompt, &mut sampler, &options, |event| {
//!     if let ReplyEvent::Answer(text) = event {
//!         print!("{text}");
//!     }
//! })?;
//! println!();
//! assert!(first.generation.tokens.len() <= 16);
//! // The next turn reuses the KV cache of this one (the prompt cache).
//! let mut history = messages.to_vec();
//! history.push(first.message);
//! history.push(ChatMessage::new("user", "And then?"));
//! let prompt = generator
//!     .loaded
//!     .conversation_tokens(&PromptSetup::default(), &history)?;
//! let second = reply(&mut generator, &prompt, &mut sampler, &options, |_| {})?;
//! assert!(second.generation.cached_tokens > 0);
//! # Ok::<(), mlx_harmony_core::Error>(())
//! ```

pub mod array_ext;
pub mod attend_rows;
pub mod batch;
pub mod chat_template;
pub mod checkpoint;
#[cfg(feature = "testing")]
pub mod demo;
pub mod device;
pub mod distributed;
pub mod draft;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod loaded;
pub mod loading;
pub mod lookup;
pub mod models;
pub mod prefill;
pub mod prompt;
pub mod qmm_rows;
pub mod quant;
pub mod reply;
pub mod sampling;
pub mod text;
pub mod tool_parsers;
pub mod turn;

mod cuda_kernel;
mod platform;

pub use error::{Error, Result};

/// Re-exported so that dependants use exactly the `mlx-rs` this crate was built with.
pub use mlx_rs;
