//! The inference engine of mlx-harmony: everything that touches MLX.
//!
//! This crate owns device selection, checkpoint loading (safetensors folders
//! and GGUF), the model architectures (`models`, one module each, with the KV
//! cache), the raw MLX bindings they need beyond what `mlx-rs` exposes
//! (MXFP4 and expert matmuls), sampling, chat templates, and generation
//! (`generate`: [`generate::LoadedModel`] and the prompt-caching
//! [`generate::TokenGenerator`] shared by the programs). Everything above it
//! (configs, tools, binaries) stays free of MLX; the Harmony format comes from
//! the `mlx-harmony-format` crate.

pub mod array_ext;
pub mod chat;
pub mod chat_template;
pub mod checkpoint;
pub mod demo;
pub mod device;
pub mod error;
pub mod generate;
pub mod generate_demo;
pub mod gguf;
pub mod models;
pub mod quant;
pub mod sampling;

mod platform;

pub use error::{Error, Result};

/// Re-exported so that dependants use exactly the `mlx-rs` this crate was built with.
pub use mlx_rs;
