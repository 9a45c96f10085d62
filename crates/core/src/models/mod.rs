//! Model architectures, one module each, in the shape of mlx-lm's `models/`;
//! the blocks they share are in [`blocks`], the KV cache in [`cache`].

pub mod batch_cache;
pub mod blocks;
pub mod cache;
pub mod fused;
pub mod gpt_oss;
pub mod llama;
pub mod quant_config;
pub mod qwen2;
pub mod qwen3;
pub mod rope;

use std::path::Path;

use mlx_rs::Array;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::{Error, Result};
use blocks::{Decoder, DecoderSpec};
use cache::KvCache;

/// The `model_type`s this build can run.
pub const SUPPORTED: [&str; 5] = ["gpt_oss", "llama", "mistral", "qwen2", "qwen3"];

/// A loaded model.
pub struct Model {
    pub model_type: String,
    /// The longest sequence the model was trained for
    /// (`max_position_embeddings`), when the config says.
    pub context_length: Option<usize>,
    arch: Arch,
}

enum Arch {
    Decoder(Decoder),
    GptOss(gpt_oss::GptOss),
}

fn spec_for(model_type: &str, config: &Value) -> Result<DecoderSpec> {
    match model_type {
        "llama" | "mistral" => llama::spec(config),
        "qwen2" => qwen2::spec(config),
        "qwen3" => qwen3::spec(config),
        other => Err(Error::Invalid(format!(
            "unsupported model_type {other:?}; supported: {}",
            SUPPORTED.join(", ")
        ))),
    }
}

impl Model {
    /// Loads a model folder (config.json + safetensors, Hugging Face or
    /// mlx-community layout, dense or quantized).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_checkpoint(Checkpoint::open(dir)?)
    }

    pub fn from_checkpoint(mut checkpoint: Checkpoint) -> Result<Self> {
        let model_type = checkpoint
            .config
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Checkpoint {
                path: checkpoint.dir.join("config.json"),
                message: format!("has no \"model_type\"; supported: {}", SUPPORTED.join(", ")),
            })?
            .to_string();
        let context_length = checkpoint
            .config
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let in_config = |e: Error| Error::Checkpoint {
            path: checkpoint.dir.join("config.json"),
            message: e.to_string(),
        };
        if model_type == "gpt_oss" {
            let model = gpt_oss::GptOss::load(&mut checkpoint)?;
            return Ok(Model {
                model_type,
                context_length,
                arch: Arch::GptOss(model),
            });
        }
        let spec = spec_for(&model_type, &checkpoint.config).map_err(in_config)?;
        // Buffers some converters leave in the file; nothing reads them.
        checkpoint
            .tensors
            .retain(|name, _| !name.contains("rotary_emb.inv_freq"));
        if spec.tie_word_embeddings {
            for suffix in ["weight", "scales", "biases"] {
                checkpoint.tensors.remove(&format!("lm_head.{suffix}"));
            }
        }
        let decoder = Decoder::load(spec, &mut checkpoint)?;
        Ok(Model {
            model_type,
            context_length,
            arch: Arch::Decoder(decoder),
        })
    }

    pub fn vocab_size(&self) -> i32 {
        match &self.arch {
            Arch::Decoder(d) => d.spec.vocab_size,
            Arch::GptOss(g) => g.config.vocab_size,
        }
    }

    /// Fresh caches, one per layer (sliding-window ones where the model has them).
    pub fn new_caches(&self) -> Vec<KvCache> {
        match &self.arch {
            Arch::Decoder(d) => d.new_caches(),
            Arch::GptOss(g) => g.new_caches(),
        }
    }

    /// Fresh caches bounded to `max_kv_size` positions (rotating, keeping
    /// the first ones, as mlx-lm's `--max-kv-size`), for the Llama family;
    /// GPT-OSS's sliding layers already rotate and its full layers keep
    /// every position, so it gets its usual caches. `None`: unbounded.
    pub fn new_caches_bounded(&self, max_kv_size: Option<i32>) -> Vec<KvCache> {
        match (&self.arch, max_kv_size) {
            (Arch::Decoder(d), Some(max)) => (0..d.spec.num_layers)
                .map(|_| KvCache::rotating(max))
                .collect(),
            _ => self.new_caches(),
        }
    }

    /// Fresh caches keeping keys and values quantized (`--kv-bits`), for the
    /// Llama family; an error that says why for a model whose caches cannot
    /// be (GPT-OSS: its sliding layers rotate, and its attention adds sinks
    /// to the scores) or whose heads the group size does not divide.
    pub fn new_caches_quantized(&self, settings: cache::KvQuantization) -> Result<Vec<KvCache>> {
        let d = match &self.arch {
            Arch::Decoder(d) => d,
            Arch::GptOss(_) => {
                return Err(Error::Invalid(
                    "this model's KV cache cannot be quantized (GPT-OSS's sliding-window layers \
                     rotate): --kv-bits applies to Llama-family models"
                        .into(),
                ));
            }
        };
        if d.spec.head_dim % settings.group_size != 0 {
            return Err(Error::Invalid(format!(
                "the KV cache's quantization group size {} does not divide the model's head \
                 size {}: choose one that does (--kv-group-size)",
                settings.group_size, d.spec.head_dim
            )));
        }
        Ok((0..d.spec.num_layers)
            .map(|_| KvCache::quantized(settings))
            .collect())
    }

    /// Logits `[B, L, vocab]` for `[B, L]` token ids, extending the caches
    /// (one sequence's [`KvCache`]s, or a batch's [`batch_cache::BatchKvCache`]s).
    pub fn forward<C: cache::LayerCache>(&self, ids: &Array, caches: &mut [C]) -> Result<Array> {
        match &self.arch {
            Arch::Decoder(d) => d.forward(ids, caches),
            Arch::GptOss(g) => g.forward(ids, caches),
        }
    }

    /// Fresh caches for a batch, one per layer (sliding-window layers keep
    /// every position there, and masks keep to the window).
    pub fn new_batch_caches(&self) -> Vec<batch_cache::BatchKvCache> {
        self.new_batch_caches_bounded(None)
    }

    /// Batch caches bounded to `max_kv_size` positions a row (the first
    /// ones and the newest, as [`Model::new_caches_bounded`]) for the Llama
    /// family; GPT-OSS and `None` get the usual ones.
    pub fn new_batch_caches_bounded(
        &self,
        max_kv_size: Option<i32>,
    ) -> Vec<batch_cache::BatchKvCache> {
        (0..self.num_layers())
            .map(|_| match (&self.arch, max_kv_size) {
                (Arch::Decoder(_), Some(max)) => {
                    batch_cache::BatchKvCache::bounded(batch_cache::BatchBound::max_kv_size(max))
                }
                _ => batch_cache::BatchKvCache::new(),
            })
            .collect()
    }

    /// Batch caches that pack their keys and values as `settings` say
    /// (`--kv-bits`); refused, with the reason, where
    /// [`Model::new_caches_quantized`] is.
    pub fn new_batch_caches_quantized(
        &self,
        settings: cache::KvQuantization,
    ) -> Result<Vec<batch_cache::BatchKvCache>> {
        self.new_caches_quantized(settings)?;
        Ok((0..self.num_layers())
            .map(|_| batch_cache::BatchKvCache::quantized(settings))
            .collect())
    }

    /// Caches for one sequence's prompt that will join a batch: every
    /// layer keeps every position (see [`batch_cache::BatchKvCache::join`]), or,
    /// bounded to `max_kv_size` (Llama family), rotates as
    /// [`Model::new_caches_bounded`]'s.
    pub fn new_joining_caches(&self, max_kv_size: Option<i32>) -> Vec<KvCache> {
        match (&self.arch, max_kv_size) {
            (Arch::Decoder(_), Some(_)) => self.new_caches_bounded(max_kv_size),
            _ => (0..self.num_layers()).map(|_| KvCache::new()).collect(),
        }
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        match &self.arch {
            Arch::Decoder(d) => d.spec.num_layers as usize,
            Arch::GptOss(g) => g.config.num_hidden_layers as usize,
        }
    }

    /// Logits for a sequence of ids (batch of one).
    pub fn forward_tokens(&self, tokens: &[u32], caches: &mut [KvCache]) -> Result<Array> {
        if tokens.is_empty() {
            return Err(Error::Invalid("cannot run the model on zero tokens".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t >= self.vocab_size() as u32) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab_size()
            )));
        }
        self.forward(
            &Array::from_slice(tokens, &[1, tokens.len() as i32]),
            caches,
        )
    }
}
