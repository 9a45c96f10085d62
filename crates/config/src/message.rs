//! One chat message, the one shape every part of mlx-harmony passes
//! around: what conversation files save, what chat templates and Harmony
//! render, what the server's OpenAI messages become. Fields a use does not
//! need stay empty and are not written.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigError;
use crate::conversation::timestamp_now;
use crate::settings::Hyperparameters;

/// One message (the OpenAI / transformers shape, with Harmony's recipient,
/// channel and content type, and what a saved conversation records).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// When it was written (saved conversations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The settings used to generate this message (assistant and tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Map<String, Value>>,
    /// The author's name: the tool for tool messages (`python`, `functions.x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Harmony recipient (`python`, `functions.get_weather`, `assistant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Harmony channel (`analysis`, `commentary`, `final`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Harmony content type (`json`, `<|constrain|>json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The model's reasoning, for templates that show or strip it (saved
    /// conversations keep it as an analysis message instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Function calls made by an assistant message (OpenAI-style).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A function call in an assistant message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON object (templates print them with `tojson`).
    pub arguments: Value,
}

impl Message {
    /// A message with only its role and text.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    /// A message stamped with the current time (for a conversation file).
    pub fn now(role: &str, content: impl Into<String>) -> Self {
        Message {
            timestamp: Some(timestamp_now()),
            ..Message::new(role, content)
        }
    }

    /// The validated settings recorded on this message, if any.
    pub fn hyperparameters(&self) -> Result<Option<Hyperparameters>, ConfigError> {
        self.hyperparameters
            .as_ref()
            .map(|map| Hyperparameters::from_json_map(map, Path::new("message hyperparameters")))
            .transpose()
    }
}
