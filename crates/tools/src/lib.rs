//! The tools a GPT-OSS model can call: `python`, `functions.apply_patch` and
//! `browser.search` / `browser.open` / `browser.find`.
//!
//! This crate's one job: execute a tool call safely (sandboxed, with limits)
//! and return the result as the text the model is shown. It knows nothing of
//! MLX; the generation loop that stops at a call, runs it here and goes on
//! lives in the core crate.
//!
//! ```no_run
//! use mlx_harmony_tools::{ToolBox, ToolsConfig, PatchConfig};
//! let mut tools = ToolBox::new(ToolsConfig {
//!     apply_patch: Some(PatchConfig { root: ".".into(), dry_run: true }),
//!     ..ToolsConfig::default()
//! })?;
//! let output = tools.execute("functions.apply_patch", "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch");
//! println!("{}: {}", output.author, output.content);
//! # Ok::<(), mlx_harmony_tools::ToolError>(())
//! ```

pub mod apply_patch;
pub mod browser;
pub mod python;

use std::path::PathBuf;

use mlx_harmony_format::model::{ToolDescription, ToolNamespaceConfig};

pub use apply_patch::{PatchError, PatchSummary, apply_patch};
pub use browser::{Browser, BrowserConfig};
pub use python::{Isolation, PythonConfig, PythonSession};

/// A tool could not be set up (a bad configuration the user must fix).
/// Failures of a call itself are results for the model, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Failed(String),
}

/// Where `apply_patch` writes.
#[derive(Clone, Debug)]
pub struct PatchConfig {
    /// Every path of a patch is relative to this folder and must stay in it.
    pub root: PathBuf,
    /// Check patches and report what they would change, writing nothing.
    pub dry_run: bool,
}

/// Which tools are enabled, with their settings.
#[derive(Clone, Debug, Default)]
pub struct ToolsConfig {
    pub python: Option<PythonConfig>,
    pub apply_patch: Option<PatchConfig>,
    pub browser: Option<BrowserConfig>,
}

/// A tool's answer, ready to become a Harmony tool message: author (the
/// tool, e.g. `browser.search`), content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolOutput {
    pub author: String,
    pub content: String,
}

/// The enabled tools of one conversation, with their state (the Python
/// session, the browser's pages).
/// Asked while a tool runs; true stops it (see [`ToolBox::stop_when`]).
pub type StopCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

pub struct ToolBox {
    python: Option<PythonSession>,
    patch: Option<PatchConfig>,
    browser: Option<Browser>,
}

impl ToolBox {
    pub fn new(config: ToolsConfig) -> Result<Self, ToolError> {
        let python = config.python.map(PythonSession::new).transpose()?;
        if let Some(patch) = &config.apply_patch
            && !patch.root.is_dir()
        {
            return Err(ToolError::Setup(format!(
                "the patch root {} is not a folder; give an existing one with --patch-root",
                patch.root.display()
            )));
        }
        Ok(ToolBox {
            python,
            patch: config.apply_patch,
            browser: config.browser.map(Browser::new),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.python.is_none() && self.patch.is_none() && self.browser.is_none()
    }

    /// A check the long-running tools ask while they run: once it answers
    /// true (the client went away, the server is stopping), the python call
    /// is stopped and its session restarted.
    pub fn stop_when(&mut self, stop: StopCheck) {
        if let Some(python) = &mut self.python {
            python.stop_when(stop);
        }
    }

    /// The enabled tools' names, as conversation files list them.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.browser.is_some() {
            names.push("browser".to_string());
        }
        if self.python.is_some() {
            names.push("python".to_string());
        }
        if self.patch.is_some() {
            names.push("apply_patch".to_string());
        }
        names
    }

    /// Lines for the user: what each tool can reach.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(python) = &self.python {
            notes.push(format!(
                "python: {}; working folder {}",
                python.isolation(),
                python.workdir().display()
            ));
        }
        if let Some(patch) = &self.patch {
            notes.push(format!(
                "apply_patch: {} under {}",
                if patch.dry_run {
                    "dry run (nothing is written)"
                } else {
                    "writes files"
                },
                patch.root.display()
            ));
        }
        if self.browser.is_some() {
            notes.push("browser: fetches web pages over http(s)".to_string());
        }
        notes
    }

    /// The built-in namespaces declared in the Harmony system message.
    pub fn builtin_namespaces(&self) -> Vec<ToolNamespaceConfig> {
        let mut namespaces = Vec::new();
        if self.browser.is_some() {
            namespaces.push(browser::namespace());
        }
        if let Some(python) = &self.python {
            namespaces.push(ToolNamespaceConfig::new(
                "python",
                Some(python.description()),
                Vec::new(),
            ));
        }
        namespaces
    }

    /// The functions declared in the developer message (`functions.apply_patch`).
    pub fn functions(&self) -> Vec<ToolDescription> {
        match &self.patch {
            Some(_) => vec![ToolDescription::new(
                "apply_patch",
                apply_patch::DESCRIPTION,
                Some(serde_json::json!({
                    "type": "object",
                    "properties": {"patch": {"type": "string", "description": "the whole patch, from *** Begin Patch to *** End Patch"}},
                    "required": ["patch"],
                })),
            )],
            None => Vec::new(),
        }
    }

    /// Whether a call to `recipient` is one of these tools.
    pub fn handles(&self, recipient: &str) -> bool {
        match recipient {
            "python" => self.python.is_some(),
            "functions.apply_patch" | "apply_patch" => self.patch.is_some(),
            r => r.starts_with("browser.") && self.browser.is_some(),
        }
    }

    /// Ends the Python session (its variables are lost).
    pub fn reset_python(&mut self) -> bool {
        match &mut self.python {
            Some(python) => {
                python.reset();
                true
            }
            None => false,
        }
    }

    /// Runs a call; failures become an `Error: ...` text the model can act on.
    pub fn execute(&mut self, recipient: &str, arguments: &str) -> ToolOutput {
        let content = match self.run(recipient, arguments) {
            Ok(text) => text,
            Err(message) => format!("Error: {message}"),
        };
        ToolOutput {
            author: recipient.to_string(),
            content,
        }
    }

    fn run(&mut self, recipient: &str, arguments: &str) -> Result<String, String> {
        match recipient {
            "python" => {
                let python = self
                    .python
                    .as_mut()
                    .ok_or("the python tool is not enabled")?;
                python
                    .run(&python_code(arguments))
                    .map_err(|e| e.to_string())
            }
            "functions.apply_patch" | "apply_patch" => {
                let patch = self.patch.as_ref().ok_or("apply_patch is not enabled")?;
                let text = patch_text(arguments);
                apply_patch(&patch.root, &text, patch.dry_run)
                    .map(|summary| summary.to_string())
                    .map_err(|e| format!("the patch was not applied, nothing changed: {e}"))
            }
            r => match r.strip_prefix("browser.") {
                Some(function) => {
                    let browser = self.browser.as_mut().ok_or("the browser is not enabled")?;
                    browser.call(function, arguments)
                }
                None => Err(format!("there is no tool `{r}`")),
            },
        }
    }
}

/// The code of a python call: the message text, or `{"code": "..."}`.
fn python_code(arguments: &str) -> String {
    json_field(arguments, &["code"]).unwrap_or_else(|| arguments.to_string())
}

/// The patch of an apply_patch call: raw, or `{"patch"|"input": "..."}`.
fn patch_text(arguments: &str) -> String {
    json_field(arguments, &["patch", "input"]).unwrap_or_else(|| arguments.to_string())
}

fn json_field(arguments: &str, keys: &[&str]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(arguments.trim()).ok()?;
    let object = value.as_object()?;
    keys.iter()
        .find_map(|k| object.get(*k).and_then(|v| v.as_str()).map(str::to_string))
}

/// Keeps the first `limit` characters, saying how much was cut.
pub fn truncate_output(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    if count <= limit {
        return text.to_string();
    }
    let kept: String = text.chars().take(limit).collect();
    format!("{kept}\n[... {} more characters not shown]", count - limit)
}
