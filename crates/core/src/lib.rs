//! The inference engine of mlx-harmony: everything that touches MLX.
//!
//! This crate owns device selection, model resolution (local paths and
//! Hugging Face ids: [`hub`]) and loading ([`loading`]: prewarm, mlock),
//! checkpoints (safetensors folders and GGUF), the model architectures
//! (`models`, one module each, with the KV cache), the raw MLX bindings they
//! need beyond what `mlx-rs` exposes (MXFP4 and expert matmuls), sampling,
//! chat templates, conversations ([`chat`]: Harmony for GPT-OSS, the chat
//! template otherwise) and generation ([`generate::TokenGenerator`], with its
//! prompt cache, shared by the programs). Everything above it (configs,
//! tools, binaries) stays free of MLX; the Harmony format comes from the
//! `mlx-harmony-format` crate.
//!
//! # Example
//!
//! Open a model (a path, or a Hugging Face id such as
//! `mlx-community/Qwen3-0.6B-4bit`), render a conversation, and stream the
//! reply:
//!
//! ```
//! use mlx_harmony_core::chat::{PromptSetup, ReplyEvent};
//! use mlx_harmony_core::chat_template::ChatMessage;
//! use mlx_harmony_core::loading::{self, LoadOptions};
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
//! let reply = generator.reply(&prompt, &mut sampler, 16, &[], |event| {
//!     if let ReplyEvent::Answer(text) = event {
//!         print!("{text}");
//!     }
//! })?;
//! println!();
//! assert!(reply.generation.tokens.len() <= 16);
//! // The next turn reuses the KV cache of this one (the prompt cache).
//! let mut history = messages.to_vec();
//! history.push(reply.message);
//! history.push(ChatMessage::new("user", "And then?"));
//! let prompt = generator
//!     .loaded
//!     .conversation_tokens(&PromptSetup::default(), &history)?;
//! let second = generator.reply(&prompt, &mut sampler, 16, &[], |_| {})?;
//! assert!(second.generation.cached_tokens > 0);
//! # Ok::<(), mlx_harmony_core::Error>(())
//! ```

pub mod array_ext;
pub mod chat;
pub mod chat_template;
pub mod checkpoint;
pub mod cli;
pub mod demo;
pub mod device;
pub mod error;
pub mod generate;
pub mod generate_demo;
pub mod gguf;
pub mod hub;
pub mod loading;
pub mod models;
pub mod quant;
pub mod sampling;

mod platform;

pub use error::{Error, Result};

/// Re-exported so that dependants use exactly the `mlx-rs` this crate was built with.
pub use mlx_rs;
