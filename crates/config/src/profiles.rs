//! `profiles.json`: named pairs of a model and a prompt config, chosen with
//! `--profile NAME [--profiles-file F]`.
//!
//! ```json
//! { "gpt-oss-20b": { "model": "~/models/gpt-oss-20b",
//!                    "prompt_config": "configs/prompt-config.example.json" } }
//! ```
//!
//! `~` is the home folder; relative paths are resolved against the folder of
//! the profiles file. A model that is not a path and looks like
//! `owner/name` is a Hugging Face id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ConfigError;

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelRef {
    Path(PathBuf),
    HubId(String),
}

/// One profile, with its paths resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub model: ModelRef,
    pub prompt_config: Option<PathBuf>,
}

/// A profiles file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profiles {
    pub file: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
}

/// Expands `~` and makes a relative path relative to `base`.
pub fn resolve_path(text: &str, base: &Path) -> PathBuf {
    if text == "~" {
        return home().unwrap_or_else(|| PathBuf::from("~"));
    }
    if let Some(rest) = text.strip_prefix("~/")
        && let Some(home) = home()
    {
        return home.join(rest);
    }
    let path = Path::new(text);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

fn looks_like_hub_id(text: &str) -> bool {
    let mut parts = text.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && p != "."
                && p != ".."
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Decides whether a `model` value is a local path or a hub id.
pub fn model_ref(text: &str, base: &Path) -> ModelRef {
    let explicit_path =
        text.starts_with('~') || text.starts_with('.') || Path::new(text).is_absolute();
    let local = resolve_path(text, base);
    if explicit_path || local.exists() || !looks_like_hub_id(text) {
        ModelRef::Path(local)
    } else {
        ModelRef::HubId(text.to_string())
    }
}

impl Profiles {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Json {
            file: path.to_owned(),
            message: e.to_string(),
        })?;
        let Value::Object(entries) = value else {
            return Err(ConfigError::Content {
                file: path.to_owned(),
                line: None,
                message:
                    "must be an object of profile name: {\"model\": ..., \"prompt_config\": ...}"
                        .into(),
            });
        };
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut profiles = BTreeMap::new();
        for (name, entry) in entries {
            let Value::Object(fields) = entry else {
                return Err(ConfigError::key(
                    path,
                    &name,
                    "must be an object with \"model\" and optionally \"prompt_config\"",
                ));
            };
            let model = match fields.get("model") {
                Some(Value::String(m)) if !m.trim().is_empty() => model_ref(m, &base),
                Some(other) => {
                    return Err(ConfigError::key(
                        path,
                        format!("{name}.model"),
                        format!("must be a path or model id, got {other}"),
                    ));
                }
                None => {
                    return Err(ConfigError::key(
                        path,
                        format!("{name}.model"),
                        "is missing",
                    ));
                }
            };
            let prompt_config = match fields.get("prompt_config") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(resolve_path(p, &base)),
                Some(other) => {
                    return Err(ConfigError::key(
                        path,
                        format!("{name}.prompt_config"),
                        format!("must be a path, got {other}"),
                    ));
                }
            };
            profiles.insert(
                name.clone(),
                Profile {
                    name,
                    model,
                    prompt_config,
                },
            );
        }
        Ok(Profiles {
            file: path.to_owned(),
            profiles,
        })
    }

    /// The profile called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&Profile, ConfigError> {
        self.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            ConfigError::Content {
                file: self.file.clone(),
                line: None,
                message: if known.is_empty() {
                    format!("no profile named {name:?}: the file defines no profiles")
                } else {
                    format!(
                        "no profile named {name:?}; known profiles: {}",
                        known.join(", ")
                    )
                },
            }
        })
    }
}
