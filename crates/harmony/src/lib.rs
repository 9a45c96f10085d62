//! OpenAI's Harmony format for GPT-OSS models.
//!
//! This crate's one job: turn a conversation into the token sequence a GPT-OSS
//! model expects, and turn the model's tokens back into messages while they
//! stream. It knows nothing of MLX or of how tokens are generated.
//!
//! Status: not implemented yet (tracked as the Harmony issue); the crate
//! exists so that the workspace has its final shape.
