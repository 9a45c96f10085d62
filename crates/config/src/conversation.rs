//! Saved conversations (`--save-conversation` / `--load-conversation`).
//!
//! The shape is the Python program's, plus a `format_version`:
//!
//! ```json
//! {"metadata": {"format_version": 1, "model_path": "...", "prompt_config_path": null,
//!               "tools": ["python"], "hyperparameters": {"temperature": 0.7},
//!               "tool_settings": {}, "created_at": "2026-01-02T03:04:05.000006Z",
//!               "updated_at": "..."},
//!  "messages": [{"role": "user", "content": "Hi", "timestamp": "..."},
//!               {"role": "assistant", "content": "Hello!", "channel": "final",
//!                "timestamp": "...", "hyperparameters": {"temperature": 0.7}}]}
//! ```
//!
//! Files are written atomically (a temporary file in the same folder, then a
//! rename), and a file that exists but cannot be read as a conversation is
//! never overwritten. Fields this version does not know are kept as they are.
//!
//! Versions: a bare JSON list of messages (the oldest files), version 0 (the
//! Python program's files, which have no `format_version`) and version 1
//! (this program). Older versions are migrated when loaded.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigError;
pub use crate::message::Message;
use crate::settings::Hyperparameters;

/// The version this program writes.
pub const FORMAT_VERSION: u32 = 1;

/// The roles a saved message may have.
pub const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Now, as the files write it: ISO 8601 UTC with microseconds and `Z`.
pub fn timestamp_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Rewrites a timestamp into the canonical form; naive times (as older
/// Python versions wrote them) are taken as UTC. `None` if unparseable.
pub fn normalize_timestamp(text: &str) -> Option<String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        );
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
        .map(|naive| naive.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// Facts about the whole conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub format_version: u32,
    #[serde(default)]
    pub model_path: Option<String>,
    #[serde(default)]
    pub prompt_config_path: Option<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    /// The settings in force when last saved.
    #[serde(default)]
    pub hyperparameters: Map<String, Value>,
    /// Tool options (e.g. the patch root, the browser's backend).
    #[serde(default)]
    pub tool_settings: Map<String, Value>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A whole saved conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub metadata: Metadata,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A loaded conversation and the version it was migrated from, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub conversation: Conversation,
    /// `Some("0")`, `Some("list")`: the file was older and has been migrated
    /// in memory (the next save writes the current version).
    pub migrated_from: Option<String>,
}

impl Conversation {
    /// A new, empty conversation created now.
    pub fn new(model_path: Option<String>, prompt_config_path: Option<String>) -> Self {
        let now = timestamp_now();
        Conversation {
            metadata: Metadata {
                format_version: FORMAT_VERSION,
                model_path,
                prompt_config_path,
                created_at: Some(now.clone()),
                updated_at: Some(now),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The validated settings saved in the metadata.
    pub fn hyperparameters(&self) -> Result<Hyperparameters, ConfigError> {
        Hyperparameters::from_json_map(
            &self.metadata.hyperparameters,
            Path::new("metadata.hyperparameters"),
        )
    }

    /// Reads a conversation file, migrating older versions.
    pub fn load(path: impl AsRef<Path>) -> Result<Loaded, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses conversation JSON (any supported version); `file` names it in errors.
    pub fn from_json_str(text: &str, file: &Path) -> Result<Loaded, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        let (value, migrated_from) = migrate(value, file)?;
        let mut conversation: Conversation =
            serde_json::from_value(value).map_err(|e| ConfigError::Content {
                file: file.to_owned(),
                line: None,
                message: format!("not a conversation file: {e}"),
            })?;
        for (index, message) in conversation.messages.iter().enumerate() {
            if !ROLES.contains(&message.role.as_str()) {
                return Err(ConfigError::key(
                    file,
                    format!("messages[{index}].role"),
                    format!(
                        "must be one of {}, got {:?}",
                        ROLES.join(", "),
                        message.role
                    ),
                ));
            }
            message.hyperparameters().map_err(|e| {
                ConfigError::key(
                    file,
                    format!("messages[{index}].hyperparameters"),
                    e.to_string(),
                )
            })?;
        }
        conversation
            .hyperparameters()
            .map_err(|e| ConfigError::key(file, "metadata.hyperparameters", e.to_string()))?;
        if migrated_from.is_some() {
            for message in &mut conversation.messages {
                if let Some(t) = message.timestamp.as_deref().and_then(normalize_timestamp) {
                    message.timestamp = Some(t);
                }
            }
            for stamp in [
                &mut conversation.metadata.created_at,
                &mut conversation.metadata.updated_at,
            ] {
                if let Some(t) = stamp.as_deref().and_then(normalize_timestamp) {
                    *stamp = Some(t);
                }
            }
        }
        Ok(Loaded {
            conversation,
            migrated_from,
        })
    }

    /// Writes the conversation to `path` atomically, stamping `updated_at`.
    /// Refuses to replace an existing file that is not a readable
    /// conversation, so that nothing the user has is lost.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        if path.exists()
            && let Err(err) = Self::load(path)
        {
            return Err(ConfigError::Content {
                file: path.to_owned(),
                line: None,
                message: format!(
                    "exists but is not a conversation file this program can read ({err}); \
                         not overwriting it: move it away or save to another file"
                ),
            });
        }
        self.metadata.format_version = FORMAT_VERSION;
        self.metadata.updated_at = Some(timestamp_now());
        if self.metadata.created_at.is_none() {
            self.metadata.created_at = self.metadata.updated_at.clone();
        }
        let json = serde_json::to_string_pretty(self).expect("a conversation serializes") + "\n";
        write_atomically(path, json.as_bytes())
    }
}

/// Writes `bytes` to a temporary file next to `path`, flushes it to disk and
/// renames it over `path`, so that a crash leaves the old or the new file,
/// never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| ConfigError::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(ConfigError::io(path, err));
    }
    Ok(())
}

/// Brings any supported version to the current shape.
fn migrate(value: Value, file: &Path) -> Result<(Value, Option<String>), ConfigError> {
    match value {
        // The oldest files: only the messages.
        Value::Array(messages) => {
            let mut metadata = Map::new();
            metadata.insert("format_version".into(), FORMAT_VERSION.into());
            let mut root = Map::new();
            root.insert("metadata".into(), Value::Object(metadata));
            root.insert("messages".into(), Value::Array(messages));
            Ok((Value::Object(root), Some("list".into())))
        }
        Value::Object(mut root) => {
            let version = root
                .get("metadata")
                .and_then(|m| m.get("format_version"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if version > FORMAT_VERSION as u64 {
                return Err(ConfigError::Content {
                    file: file.to_owned(),
                    line: None,
                    message: format!(
                        "format_version {version} is newer than this program understands ({FORMAT_VERSION}); upgrade mlx-harmony"
                    ),
                });
            }
            if version == FORMAT_VERSION as u64 {
                return Ok((Value::Object(root), None));
            }
            // Version 0 (the Python program): add the version and tool settings.
            let metadata = root
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(metadata) = metadata else {
                return Err(ConfigError::key(file, "metadata", "must be an object"));
            };
            metadata.insert("format_version".into(), FORMAT_VERSION.into());
            metadata
                .entry("tool_settings")
                .or_insert_with(|| Value::Object(Map::new()));
            Ok((Value::Object(root), Some(version.to_string())))
        }
        other => Err(ConfigError::Content {
            file: file.to_owned(),
            line: None,
            message: format!(
                "not a conversation file: expected an object with metadata and messages, got {}",
                kind(&other)
            ),
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
