//! The files users write and keep for mlx-harmony.
//!
//! This crate's one job: read, validate and write prompt configs (with their
//! placeholders), profiles and saved conversations, with errors that name the
//! file, the key and what is allowed. It knows nothing of MLX.
//!
//! Status: not implemented yet (tracked as the Config issue); the crate exists
//! so that the workspace has its final shape.
