//! The error type of this crate.

use std::path::PathBuf;

/// What can go wrong in the engine, each with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An MLX operation failed (bad shapes, unsupported dtype, out of memory...).
    #[error("MLX: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint is missing something or has the wrong shape.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    /// The caller asked for something the engine cannot do, and why.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
