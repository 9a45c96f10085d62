//! The JSON prompt config: Harmony fragments, placeholders, and defaults for
//! sampling and model loading. Every key is optional; see
//! `docs/PROMPT_CONFIG_REFERENCE.md` for each one's type, default and effect.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigError;
use crate::placeholders::{Clock, Expander};
use crate::settings::Hyperparameters;

/// How much the model reasons before answering (GPT-OSS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    /// Parses `low`, `Medium`, `HIGH`, … (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(ReasoningEffort::Low),
            "medium" => Some(ReasoningEffort::Medium),
            "high" => Some(ReasoningEffort::High),
            _ => None,
        }
    }
}

impl fmt::Display for ReasoningEffort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        })
    }
}

/// One message of an example dialogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogueMessage {
    pub role: String,
    pub content: String,
}

/// The roles an example dialogue may use.
pub const DIALOGUE_ROLES: [&str; 4] = ["user", "assistant", "system", "developer"];

/// A prompt config as read from its file. Absent keys are `None` (or empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptConfig {
    // Harmony fragments.
    pub system_model_identity: Option<String>,
    pub reasoning_effort: Option<ReasoningEffort>,
    pub conversation_start_date: Option<String>,
    pub knowledge_cutoff: Option<String>,
    pub developer_instructions: Option<String>,
    pub assistant_greeting: Option<String>,
    pub example_dialogues: Vec<Vec<DialogueMessage>>,
    // Placeholders and the clock.
    pub placeholders: BTreeMap<String, String>,
    pub deterministic_time_enabled: bool,
    pub deterministic_time_iso: Option<String>,
    // Sampling and generation.
    pub sampling: Hyperparameters,
    pub reseed_each_turn: Option<bool>,
    pub xtc_special_tokens: Option<Vec<String>>,
    pub end_token_strings: Option<Vec<String>>,
    // Context and loading.
    pub max_context_tokens: Option<u32>,
    pub max_context_tokens_margin: Option<u32>,
    pub max_kv_size: Option<u32>,
    pub prewarm_cache: Option<bool>,
    pub mlock: Option<bool>,
    pub lazy: Option<bool>,
    // Display and files.
    pub truncate_thinking: Option<u32>,
    pub truncate_response: Option<u32>,
    pub logs_dir: Option<String>,
    pub chats_dir: Option<String>,
    /// Keys this program does not know (reported as warnings, not errors,
    /// so that files made for other versions still load). Keys starting
    /// with `_` are comments and are not reported.
    pub unknown_keys: Vec<String>,
}

/// Every key a prompt config may have, in the order of the reference.
pub const KEYS: &[&str] = &[
    "system_model_identity",
    "reasoning_effort",
    "conversation_start_date",
    "knowledge_cutoff",
    "developer_instructions",
    "assistant_greeting",
    "example_dialogues",
    "placeholders",
    "deterministic_time_enabled",
    "deterministic_time_iso",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "min_tokens_to_keep",
    "max_tokens",
    "repetition_penalty",
    "repetition_context_size",
    "xtc_probability",
    "xtc_threshold",
    "xtc_special_tokens",
    "seed",
    "reseed_each_turn",
    "stop",
    "end_token_strings",
    "max_context_tokens",
    "max_context_tokens_margin",
    "max_kv_size",
    "prewarm_cache",
    "mlock",
    "lazy",
    "truncate_thinking",
    "truncate_response",
    "logs_dir",
    "chats_dir",
];

/// Reads typed values out of a JSON object, with errors naming file and key.
struct Reader<'a> {
    file: &'a Path,
    map: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::key(self.file, key, message)
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(key, format!("must be a string, got {other}"))),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, format!("must be true or false, got {other}"))),
        }
    }

    fn whole(&self, key: &str, min: u32) -> Result<Option<u32>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v >= min)
                .map(Some)
                .ok_or_else(|| {
                    self.err(
                        key,
                        format!("must be a whole number of at least {min}, got {value}"),
                    )
                }),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(Some(
                items
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect(),
            )),
            Some(other) => Err(self.err(
                key,
                format!("must be a string or a list of strings, got {other}"),
            )),
        }
    }
}

impl PromptConfig {
    /// Reads and validates a prompt config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates prompt-config JSON; `file` names it in errors.
    pub fn from_json_str(text: &str, file: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let file = file.into();
        let value: Value = serde_json::from_str(text).map_err(|err| ConfigError::Json {
            file: file.clone(),
            message: err.to_string(),
        })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::Content {
                file,
                line: None,
                message: "a prompt config must be a JSON object ({ \"key\": value, ... })".into(),
            });
        };
        let r = Reader {
            file: &file,
            map: &map,
        };

        let reasoning_effort = match r.get("reasoning_effort") {
            None => None,
            Some(Value::String(s)) => Some(ReasoningEffort::parse(s).ok_or_else(|| {
                r.err(
                    "reasoning_effort",
                    format!("must be Low, Medium or High (any case), got {s:?}"),
                )
            })?),
            Some(other) => {
                return Err(r.err(
                    "reasoning_effort",
                    format!("must be Low, Medium or High, got {other}"),
                ));
            }
        };

        let example_dialogues = match r.get("example_dialogues") {
            None => Vec::new(),
            Some(value) => parse_dialogues(value).map_err(|m| r.err("example_dialogues", m))?,
        };

        let placeholders = match r.get("placeholders") {
            None => BTreeMap::new(),
            Some(Value::Object(entries)) => entries
                .iter()
                .map(|(key, value)| match value {
                    Value::String(s) => Ok((key.clone(), s.clone())),
                    Value::Number(n) => Ok((key.clone(), n.to_string())),
                    other => Err(r.err(
                        &format!("placeholders.{key}"),
                        format!("must be a string (or number), got {other}"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(r.err(
                    "placeholders",
                    format!("must be an object of name: text, got {other}"),
                ));
            }
        };

        let deterministic_time_iso = r.string("deterministic_time_iso")?;
        if let Some(iso) = &deterministic_time_iso {
            Clock::fixed_local(iso).map_err(|_| {
                r.err(
                    "deterministic_time_iso",
                    format!(
                        "must be an ISO 8601 date-time such as 2026-03-01T09:30:00, got {iso:?}"
                    ),
                )
            })?;
        }
        let deterministic_time_enabled = r.boolean("deterministic_time_enabled")?.unwrap_or(false);
        if deterministic_time_enabled && deterministic_time_iso.is_none() {
            return Err(r.err(
                "deterministic_time_enabled",
                "is true but deterministic_time_iso is not set; give the fixed time there",
            ));
        }

        let mut sampling = Hyperparameters::from_json_map(&map, &file)?;
        // `seed` is part of the sampling settings; `stop` accepts a single string too.
        if let Some(stop) = r.strings("stop")? {
            sampling.stop = Some(stop);
        }

        let config = PromptConfig {
            system_model_identity: r.string("system_model_identity")?,
            reasoning_effort,
            conversation_start_date: r.string("conversation_start_date")?,
            knowledge_cutoff: r.string("knowledge_cutoff")?,
            developer_instructions: r.string("developer_instructions")?,
            assistant_greeting: r.string("assistant_greeting")?,
            example_dialogues,
            placeholders,
            deterministic_time_enabled,
            deterministic_time_iso,
            sampling,
            reseed_each_turn: r.boolean("reseed_each_turn")?,
            xtc_special_tokens: r.strings("xtc_special_tokens")?,
            end_token_strings: r.strings("end_token_strings")?,
            max_context_tokens: r.whole("max_context_tokens", 1)?,
            max_context_tokens_margin: r.whole("max_context_tokens_margin", 0)?,
            max_kv_size: r.whole("max_kv_size", 1)?,
            prewarm_cache: r.boolean("prewarm_cache")?,
            mlock: r.boolean("mlock")?,
            lazy: r.boolean("lazy")?,
            truncate_thinking: r.whole("truncate_thinking", 0)?,
            truncate_response: r.whole("truncate_response", 0)?,
            logs_dir: r.string("logs_dir")?,
            chats_dir: r.string("chats_dir")?,
            unknown_keys: map
                .keys()
                .filter(|key| !KEYS.contains(&key.as_str()) && !key.starts_with('_'))
                .cloned()
                .collect(),
        };
        if let (Some(limit), Some(margin)) =
            (config.max_context_tokens, config.max_context_tokens_margin)
            && margin >= limit
        {
            return Err(r.err(
                "max_context_tokens_margin",
                format!("({margin}) must be smaller than max_context_tokens ({limit})"),
            ));
        }
        Ok(config)
    }

    /// The clock placeholders are expanded against: the fixed time when
    /// `deterministic_time_enabled`, else the system clock.
    pub fn clock(&self) -> Clock {
        match (
            &self.deterministic_time_iso,
            self.deterministic_time_enabled,
        ) {
            (Some(iso), true) => Clock::fixed_local(iso).expect("validated when loaded"),
            _ => Clock::System,
        }
    }

    /// Loading defaults: no pre-warm read unless the config asks for one
    /// (measured slower than MLX's own reads, cold or warm: docs/PERFORMANCE.md).
    pub fn prewarm_cache_or_default(&self) -> bool {
        self.prewarm_cache.unwrap_or(false)
    }

    /// What the user is told when the file is loaded: keys this version
    /// does not know.
    pub fn warnings(&self) -> Vec<String> {
        self.unknown_keys
            .iter()
            .map(|key| format!("unknown key `{key}` (ignored; a typo, or a newer version's key?)"))
            .collect()
    }

    /// Loading defaults: no wired-memory limit unless asked.
    pub fn mlock_or_default(&self) -> bool {
        self.mlock.unwrap_or(false)
    }

    /// A copy with placeholders expanded in every text field and in the
    /// example dialogues, and the placeholders that were not recognised.
    pub fn expanded(&self, clock: &Clock) -> Expanded {
        let expander = Expander::new(clock, &self.placeholders);
        let mut unknown = Vec::new();
        let mut text =
            |field: &Option<String>| field.as_ref().map(|t| expander.expand(t, &mut unknown));
        let mut config = self.clone();
        config.system_model_identity = text(&self.system_model_identity);
        config.conversation_start_date = text(&self.conversation_start_date);
        config.knowledge_cutoff = text(&self.knowledge_cutoff);
        config.developer_instructions = text(&self.developer_instructions);
        config.assistant_greeting = text(&self.assistant_greeting);
        for dialogue in &mut config.example_dialogues {
            for message in dialogue {
                message.content = expander.expand(&message.content, &mut unknown);
            }
        }
        unknown.dedup();
        Expanded {
            config,
            unknown_placeholders: unknown,
        }
    }
}

/// The result of [`PromptConfig::expanded`].
#[derive(Clone, Debug, PartialEq)]
pub struct Expanded {
    pub config: PromptConfig,
    /// Placeholders left as written because nothing defines them, in order
    /// of first appearance (shown with `--debug`).
    pub unknown_placeholders: Vec<String>,
}

fn parse_dialogues(value: &Value) -> Result<Vec<Vec<DialogueMessage>>, String> {
    let Value::Array(dialogues) = value else {
        return Err(format!(
            "must be a list of dialogues (each a list of {{role, content}}), got {value}"
        ));
    };
    dialogues
        .iter()
        .enumerate()
        .map(|(d, dialogue)| {
            let Value::Array(messages) = dialogue else {
                return Err(format!("[{d}] must be a list of {{role, content}} messages, got {dialogue}"));
            };
            messages
                .iter()
                .enumerate()
                .map(|(m, message)| {
                    let message: DialogueMessage = serde_json::from_value(message.clone())
                        .map_err(|_| format!("[{d}][{m}] must be {{\"role\": ..., \"content\": ...}}, got {message}"))?;
                    if !DIALOGUE_ROLES.contains(&message.role.as_str()) {
                        return Err(format!(
                            "[{d}][{m}].role must be one of {}, got {:?}",
                            DIALOGUE_ROLES.join(", "),
                            message.role
                        ));
                    }
                    Ok(message)
                })
                .collect()
        })
        .collect()
}
