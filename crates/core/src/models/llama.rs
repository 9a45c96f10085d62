//! Llama (1, 2, 3.x) and Mistral: the plain pre-norm decoder, with Llama 3
//! RoPE scaling where the config asks for it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::blocks::{DecoderSpec, Rope};
use crate::{Error, Result};

/// The `config.json` fields of a Llama-family checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub intermediate_size: i32,
    pub num_attention_heads: i32,
    #[serde(default)]
    pub num_key_value_heads: Option<i32>,
    #[serde(default)]
    pub head_dim: Option<i32>,
    pub vocab_size: i32,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_rms_norm_eps() -> f32 {
    1e-6
}

fn default_rope_theta() -> f32 {
    10_000.0
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

/// Reads the Llama fields of a config, naming the file's problem clearly.
pub fn parse_config(config: &Value) -> Result<LlamaConfig> {
    serde_json::from_value(config.clone()).map_err(|e| Error::Invalid(format!("config.json: {e}")))
}

/// The decoder of a Llama or Mistral config; `attention_bias` and `qk_norm`
/// are the knobs other architectures turn.
pub fn spec(config: &Value) -> Result<DecoderSpec> {
    let c = parse_config(config)?;
    let head_dim = c.head_dim();
    Ok(DecoderSpec {
        hidden_size: c.hidden_size,
        num_layers: c.num_hidden_layers,
        intermediate_size: c.intermediate_size,
        num_heads: c.num_attention_heads,
        num_kv_heads: c.kv_heads(),
        head_dim,
        vocab_size: c.vocab_size,
        rms_norm_eps: c.rms_norm_eps,
        tie_word_embeddings: c.tie_word_embeddings,
        attention_bias: config
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        qk_norm: false,
        mlp_bias: config
            .get("mlp_bias")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        rope: Rope::from_config(config, head_dim)?,
    })
}
