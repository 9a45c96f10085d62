//! Generation settings (sampling and length), where they come from, and the
//! precedence between those sources:
//!
//! CLI flag > prompt config > saved conversation > the model's
//! `generation_config.json` > built-in default.
//!
//! Every source is a [`Hyperparameters`] value in which each setting is
//! optional; [`resolve`] picks, for each setting, the first source that has it.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigError;

/// Sampling and length settings, each optional. The same keys are used in
/// prompt configs, in a conversation's `hyperparameters`, and by `\set`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hyperparameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_tokens_to_keep: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_context_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xtc_probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xtc_threshold: Option<f64>,
    /// A fixed seed; -1 means "a fresh random seed".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Strings that end the answer when generated (never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
}

/// The kind and allowed range of one setting.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A number in `[min, max]` (`min_exclusive`: `(min, max]`).
    Real {
        min: f64,
        max: f64,
        min_exclusive: bool,
    },
    /// A whole number in `[min, max]`.
    Whole { min: i64, max: i64 },
    /// A string or a list of strings.
    Strings,
}

/// Every setting: name, kind and what it does (for `\help` and errors).
pub const SETTINGS: &[(&str, &str)] = &[
    ("temperature", "sampling temperature, 0 to 2 (0 = greedy)"),
    (
        "top_p",
        "nucleus sampling: keep the most likely tokens up to this probability mass, 0 to 1 (1 = off)",
    ),
    (
        "top_k",
        "keep only the k most likely tokens, a whole number (0 = off)",
    ),
    (
        "min_p",
        "drop tokens less likely than min_p times the most likely one, 0 to 1 (0 = off)",
    ),
    (
        "min_tokens_to_keep",
        "top_p and min_p always keep at least this many tokens, 1 or more",
    ),
    (
        "max_tokens",
        "the most tokens to generate for one answer, 1 or more",
    ),
    (
        "repetition_penalty",
        "divide the logits of recently generated tokens by this, above 0 (1 = off)",
    ),
    (
        "repetition_context_size",
        "how many recent tokens the repetition penalty looks at, 1 or more",
    ),
    (
        "xtc_probability",
        "chance per token of excluding the top choices (XTC), 0 to 1 (0 = off)",
    ),
    (
        "xtc_threshold",
        "XTC excludes the tokens above this probability but the least likely of them, 0 to 0.5",
    ),
    (
        "seed",
        "random seed for sampling, a whole number (-1 = random)",
    ),
    (
        "stop",
        "strings that end the answer, a string or a list of strings",
    ),
];

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "temperature" => Kind::Real {
            min: 0.0,
            max: 2.0,
            min_exclusive: false,
        },
        "top_p" | "min_p" | "xtc_probability" => Kind::Real {
            min: 0.0,
            max: 1.0,
            min_exclusive: false,
        },
        "xtc_threshold" => Kind::Real {
            min: 0.0,
            max: 0.5,
            min_exclusive: false,
        },
        "repetition_penalty" => Kind::Real {
            min: 0.0,
            max: f64::MAX,
            min_exclusive: true,
        },
        "top_k" => Kind::Whole {
            min: 0,
            max: u32::MAX as i64,
        },
        "min_tokens_to_keep" | "max_tokens" | "repetition_context_size" => Kind::Whole {
            min: 1,
            max: u32::MAX as i64,
        },
        "seed" => Kind::Whole {
            min: -1,
            max: i64::MAX,
        },
        "stop" => Kind::Strings,
        _ => return None,
    })
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::Real {
            min,
            max,
            min_exclusive,
        } if max == f64::MAX => {
            format!(
                "a number {} {min}",
                if min_exclusive {
                    "above"
                } else {
                    "of at least"
                }
            )
        }
        Kind::Real { min, max, .. } => format!("a number from {min} to {max}"),
        Kind::Whole { min, max } if max >= u32::MAX as i64 => {
            format!("a whole number of at least {min}")
        }
        Kind::Whole { min, max } => format!("a whole number from {min} to {max}"),
        Kind::Strings => "a string or a list of strings".into(),
    }
}

/// Checks one JSON value against a setting's kind; returns the normalised value.
fn check(name: &str, kind: Kind, value: &Value) -> Result<Value, String> {
    let shown = value.to_string();
    let wrong = || format!("must be {}, got {shown}", describe(kind));
    match kind {
        Kind::Real {
            min,
            max,
            min_exclusive,
        } => {
            let v = value.as_f64().ok_or_else(wrong)?;
            let low_ok = if min_exclusive { v > min } else { v >= min };
            if !low_ok || v > max || !v.is_finite() {
                return Err(wrong());
            }
            Ok(value.clone())
        }
        Kind::Whole { min, max } => {
            // Too large says the largest allowed, not only the smallest.
            let too_large = || format!("must be at most {max}, got {shown}");
            match value.as_i64() {
                Some(v) if v > max => Err(too_large()),
                Some(v) if v < min => Err(wrong()),
                Some(_) => Ok(value.clone()),
                None if value.as_u64().is_some() => Err(too_large()),
                None => Err(wrong()),
            }
        }
        Kind::Strings => match value {
            Value::String(s) => Ok(Value::Array(vec![Value::String(s.clone())])),
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
            _ => Err(format!("{name} {}", wrong())),
        },
    }
}

impl Hyperparameters {
    /// Reads the settings present in a JSON object (other keys are ignored;
    /// `null` means "not set"). Errors name `file` and the key.
    pub fn from_json_map(map: &Map<String, Value>, file: &Path) -> Result<Self, ConfigError> {
        let mut checked = Map::new();
        for (name, _) in SETTINGS {
            match map.get(*name) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    let kind = kind_of(name).expect("every listed setting has a kind");
                    let value =
                        check(name, kind, value).map_err(|m| ConfigError::key(file, *name, m))?;
                    checked.insert(name.to_string(), value);
                }
            }
        }
        serde_json::from_value(Value::Object(checked)).map_err(|err| ConfigError::Json {
            file: file.to_owned(),
            message: err.to_string(),
        })
    }

    /// The settings as a JSON object (only those that are set).
    pub fn to_json_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("settings serialize") {
            Value::Object(map) => map,
            _ => unreachable!("a struct serializes to an object"),
        }
    }

    /// Sets one setting from text, as `\set name value` does. Accepts JSON
    /// (`0.7`, `["a","b"]`) or a bare string for `stop`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let Some(kind) = kind_of(name) else {
            let names: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown setting {name:?}; valid: {}",
                names.join(", ")
            ));
        };
        let parsed: Value = serde_json::from_str(value.trim())
            .unwrap_or_else(|_| Value::String(value.trim().to_string()));
        let parsed = check(name, kind, &parsed).map_err(|m| format!("{name} {m}"))?;
        let mut map = self.to_json_map();
        map.insert(name.to_string(), parsed);
        *self = Self::from_json_map(&map, Path::new("\\set")).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The `generation_config.json` defaults a model ships with
    /// (`temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`,
    /// `max_new_tokens`). Values out of our ranges are ignored, not fatal:
    /// the file is the model author's, not the user's.
    pub fn from_generation_config(json: &Value) -> Self {
        let mut map = Map::new();
        if let Some(object) = json.as_object() {
            for name in [
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repetition_penalty",
            ] {
                if let Some(value) = object.get(name)
                    && check(name, kind_of(name).unwrap(), value).is_ok()
                {
                    map.insert(name.into(), value.clone());
                }
            }
            if let Some(value) = object.get("max_new_tokens")
                && check("max_tokens", kind_of("max_tokens").unwrap(), value).is_ok()
            {
                map.insert("max_tokens".into(), value.clone());
            }
        }
        Self::from_json_map(&map, Path::new("generation_config.json")).unwrap_or_default()
    }
}

/// Where a resolved setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cli,
    PromptConfig,
    Conversation,
    GenerationConfig,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Cli => "command line",
            Source::PromptConfig => "prompt config",
            Source::Conversation => "saved conversation",
            Source::GenerationConfig => "model's generation_config.json",
            Source::Default => "built-in default",
        })
    }
}

/// Every setting with a value, ready for the generator.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationSettings {
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub min_p: f64,
    pub min_tokens_to_keep: u32,
    pub max_tokens: u32,
    pub repetition_penalty: f64,
    pub repetition_context_size: u32,
    pub xtc_probability: f64,
    pub xtc_threshold: f64,
    /// `None`: a fresh random seed.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// Added to the logits of these token ids: a request's own (the API's
    /// `logit_bias`), never from a prompt config; empty after `resolve`.
    pub logit_bias: Vec<(u32, f32)>,
}

/// The built-in defaults. `max_tokens` is 1024 for Harmony (GPT-OSS)
/// models, whose answers include their reasoning, and 512 otherwise.
pub fn built_in_defaults(harmony: bool) -> Hyperparameters {
    Hyperparameters {
        temperature: Some(0.8),
        top_p: Some(0.9),
        top_k: Some(0),
        min_p: Some(0.0),
        min_tokens_to_keep: Some(1),
        max_tokens: Some(if harmony { 1024 } else { 512 }),
        repetition_penalty: Some(1.0),
        repetition_context_size: Some(20),
        xtc_probability: Some(0.0),
        xtc_threshold: Some(0.1),
        seed: Some(-1),
        stop: Some(Vec::new()),
    }
}

/// The settings and, for each, where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub settings: GenerationSettings,
    /// `(setting name, source)` in the order of [`SETTINGS`].
    pub sources: Vec<(&'static str, Source)>,
}

/// Resolves every setting by precedence. Absent layers are `None`.
pub fn resolve(
    cli: Option<&Hyperparameters>,
    prompt_config: Option<&Hyperparameters>,
    conversation: Option<&Hyperparameters>,
    generation_config: Option<&Hyperparameters>,
    harmony: bool,
) -> Resolved {
    let defaults = built_in_defaults(harmony);
    let layers = [
        (Source::Cli, cli),
        (Source::PromptConfig, prompt_config),
        (Source::Conversation, conversation),
        (Source::GenerationConfig, generation_config),
        (Source::Default, Some(&defaults)),
    ];
    let maps: Vec<(Source, Map<String, Value>)> = layers
        .iter()
        .filter_map(|(source, layer)| layer.map(|h| (*source, h.to_json_map())))
        .collect();
    let mut merged = Map::new();
    let mut sources = Vec::new();
    for (name, _) in SETTINGS {
        let (source, value) = maps
            .iter()
            .find_map(|(source, map)| map.get(*name).map(|v| (*source, v.clone())))
            .expect("the built-in defaults set every setting");
        merged.insert(name.to_string(), value);
        sources.push((*name, source));
    }
    let h = Hyperparameters::from_json_map(&merged, Path::new("settings"))
        .expect("every layer was validated");
    let settings = GenerationSettings {
        temperature: h.temperature.unwrap(),
        top_p: h.top_p.unwrap(),
        top_k: h.top_k.unwrap(),
        min_p: h.min_p.unwrap(),
        min_tokens_to_keep: h.min_tokens_to_keep.unwrap(),
        max_tokens: h.max_tokens.unwrap(),
        repetition_penalty: h.repetition_penalty.unwrap(),
        repetition_context_size: h.repetition_context_size.unwrap(),
        xtc_probability: h.xtc_probability.unwrap(),
        xtc_threshold: h.xtc_threshold.unwrap(),
        seed: h.seed.and_then(|s| u64::try_from(s).ok()),
        stop: h.stop.unwrap(),
        logit_bias: Vec::new(),
    };
    Resolved { settings, sources }
}
