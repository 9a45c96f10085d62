//! Errors of rendering (parsing never fails: it flags what it cannot structure).

use crate::model::Role;

#[derive(Debug, thiserror::Error)]
pub enum HarmonyError {
    /// The tokenizer could not be loaded, lacks Harmony tokens, or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Tool messages are rendered under the tool's name, so they need one.
    #[error(
        "a tool message needs the tool's name as its author name (e.g. \"functions.get_weather\")"
    )]
    ToolWithoutName,
    /// System content outside a system message, or developer content outside a developer message.
    #[error("{0} may only appear in its own kind of message, not in a {1} message")]
    MisplacedContent(&'static str, Role),
}
