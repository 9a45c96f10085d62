//! The inference engine of mlx-harmony: everything that touches MLX.
//!
//! This crate owns device selection, checkpoint loading, the model
//! architectures and the raw MLX bindings they need beyond what `mlx-rs`
//! exposes (MXFP4 quantized matmul). Later it also holds the KV cache,
//! samplers and the `TokenGenerator` shared by the chat, generate and server
//! programs. Everything above it (prompt formats, configs, tools, binaries)
//! stays free of MLX.
//!
//! The model layer is young: today it runs a Llama-shaped decoder from a
//! safetensors checkpoint, enough to prove the MLX plumbing end to end on
//! every back end (Metal, CPU, CUDA).

pub mod array_ext;
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
