//! Where a model comes from: a local path, or a Hugging Face repository id
//! (`mlx-community/Qwen3-0.6B-4bit`) fetched into the Hugging Face cache with
//! `hf-hub`, the same cache and layout Python's `huggingface_hub` uses, so
//! models downloaded by either are found by both.
//!
//! Online, only the files a model needs are fetched (config, tokenizer,
//! template and weights at the top level of the repository, not the
//! `original/` copies some repositories carry), with a progress bar when
//! standard error is a terminal. Offline (`HF_HUB_OFFLINE=1`, or
//! [`HubOptions::offline`]) the cache alone answers, and a model that is not
//! there is a clear error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::{Error, Result};

/// How to reach the hub.
#[derive(Clone, Debug, Default)]
pub struct HubOptions {
    /// A branch, tag or commit; `main` when unset.
    pub revision: Option<String>,
    /// Use only the local cache (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// An access token for gated or private models; unset: `HF_TOKEN`, then
    /// the token `huggingface-cli login` stored.
    pub token: Option<String>,
    /// The cache folder; unset: `HF_HUB_CACHE`, then `$HF_HOME/hub`, then
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// The hub's address; unset: `HF_ENDPOINT`, then https://huggingface.co.
    pub endpoint: Option<String>,
}

impl HubOptions {
    fn offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE")
                .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "on"))
                .unwrap_or(false)
    }

    fn cache(&self) -> Cache {
        if let Some(dir) = &self.cache_dir {
            return Cache::new(dir.clone());
        }
        if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
            return Cache::new(PathBuf::from(dir));
        }
        Cache::from_env()
    }

    fn repo(&self, id: &str) -> Repo {
        Repo::with_revision(
            id.to_string(),
            RepoType::Model,
            self.revision.clone().unwrap_or_else(|| "main".into()),
        )
    }
}

/// `~/x` as the home folder's `x`.
fn expand_home(spec: &str) -> PathBuf {
    match spec.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(rest))
            .unwrap_or_else(|| PathBuf::from(spec)),
        None => PathBuf::from(spec),
    }
}

/// Whether `spec` has the shape of a hub repository id: `owner/name`.
pub fn is_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if valid(a) && valid(b))
}

/// Whether a repository file is one a model needs.
fn wanted(file: &str) -> bool {
    if file.contains('/') {
        return false;
    }
    file.ends_with(".safetensors")
        || file.ends_with(".json")
        || file.ends_with(".jinja")
        || file == "tokenizer.model"
}

/// The local folder (or file) of a model given as a path or a hub id.
pub fn resolve_model(spec: &str, options: &HubOptions) -> Result<PathBuf> {
    let path = expand_home(spec);
    if path.exists() {
        return Ok(path);
    }
    if !is_repo_id(spec) {
        return Err(Error::Invalid(format!(
            "{spec}: no such file or folder, and not a Hugging Face model id (owner/name)"
        )));
    }
    let repo = options.repo(spec);
    let revision = repo.revision().to_string();
    let cache = options.cache();
    if options.offline() {
        return cache
            .repo(repo.clone())
            .get("config.json")
            .and_then(|config| config.parent().map(Path::to_path_buf))
            .filter(|dir| has_weights(dir))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{spec} (revision {revision}) is not in the Hugging Face cache at {} and the hub is off (offline): connect once without HF_HUB_OFFLINE, or give a local path",
                    cache.path().display()
                ))
            });
    }
    download(spec, &repo, options, &cache)
}

fn has_weights(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".safetensors"))
            })
        })
        .unwrap_or(false)
}

fn download(spec: &str, repo: &Repo, options: &HubOptions, cache: &Cache) -> Result<PathBuf> {
    let token = options
        .token
        .clone()
        .or_else(|| {
            std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
        })
        .or_else(|| cache.token());
    let mut builder = ApiBuilder::from_cache(cache.clone())
        .with_token(token.clone())
        .with_progress(std::io::stderr().is_terminal());
    if let Some(endpoint) = options
        .endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok())
    {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    let api = builder
        .build()
        .map_err(|e| Error::Invalid(format!("cannot set up the Hugging Face client: {e}")))?;
    let remote = api.repo(repo.clone());
    let hint = |e: &dyn std::fmt::Display| {
        let auth = if token.is_none() {
            " (a gated or private model needs HF_TOKEN)"
        } else {
            ""
        };
        format!(
            "cannot fetch {spec} (revision {}) from the Hugging Face hub: {e}{auth}; with no network, set HF_HUB_OFFLINE=1 to use the cache, or give a local path",
            repo.revision()
        )
    };
    let info = remote.info().map_err(|e| Error::Invalid(hint(&e)))?;
    let files: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|f| wanted(f))
        .collect();
    if !files.contains(&"config.json") {
        return Err(Error::Invalid(format!(
            "{spec} has no config.json at its top level: not a model this program loads (a GGUF repository? download the .gguf file and give its path)"
        )));
    }
    let mut folder = None;
    for file in files {
        let local = remote.get(file).map_err(|e| Error::Invalid(hint(&e)))?;
        if file == "config.json" {
            folder = local.parent().map(Path::to_path_buf);
        }
    }
    folder.ok_or_else(|| Error::Invalid(format!("{spec}: the download left no config.json")))
}
