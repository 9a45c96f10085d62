//! One error type for every file this crate reads or writes.

use std::path::PathBuf;

/// What went wrong, naming the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid JSON (or not the expected JSON shape).
    #[error("{file}: not valid JSON: {message}")]
    Json { file: PathBuf, message: String },

    /// A key has a value of the wrong type or out of range.
    #[error("{file}: {key}: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },

    /// Anything else about the file's content, with a line number where it has one.
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Content {
        file: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn key(
        file: &std::path::Path,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Key {
            file: file.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(file: &std::path::Path, source: std::io::Error) -> Self {
        ConfigError::Io {
            file: file.to_owned(),
            source,
        }
    }
}
