//! The tools a GPT-OSS model can call: python, apply_patch and browser.
//!
//! This crate's one job: execute a tool call safely (sandboxed, with limits)
//! and return the result as text for the model. It knows nothing of MLX.
//!
//! Status: not implemented yet (tracked as the tools issue); the crate exists
//! so that the workspace has its final shape.
