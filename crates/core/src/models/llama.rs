//! The Llama decoder: RMSNorm, grouped-query attention with RoPE, SwiGLU MLP.
//!
//! This first version recomputes the whole sequence on every call (no KV
//! cache yet); it exists to prove loading and the forward pass end to end.

use mlx_rs::Array;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::{self, indexing::IndexOp};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::{Error, Result};

/// The `config.json` fields a Llama checkpoint needs.
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

struct Layer {
    input_norm: Array,
    q_proj: Array,
    k_proj: Array,
    v_proj: Array,
    o_proj: Array,
    post_attention_norm: Array,
    gate_proj: Array,
    up_proj: Array,
    down_proj: Array,
}

/// A loaded Llama model.
pub struct Llama {
    pub config: LlamaConfig,
    embed_tokens: Array,
    layers: Vec<Layer>,
    norm: Array,
    /// `None` when the output projection shares the embedding matrix.
    lm_head: Option<Array>,
}

/// `x @ wᵀ` for a weight stored as `[out_features, in_features]`.
fn linear(x: &Array, weight: &Array) -> Result<Array> {
    Ok(ops::matmul(x, weight.t())?)
}

impl Llama {
    /// Builds the model from an opened checkpoint (Hugging Face weight names).
    pub fn from_checkpoint(mut checkpoint: Checkpoint) -> Result<Self> {
        let config: LlamaConfig =
            serde_json::from_value(checkpoint.config.clone()).map_err(|err| Error::Checkpoint {
                path: checkpoint.dir.join("config.json"),
                message: format!("not a Llama configuration: {err}"),
            })?;
        let hidden = config.hidden_size;
        let q_out = config.num_attention_heads * config.head_dim();
        let kv_out = config.kv_heads() * config.head_dim();
        let inter = config.intermediate_size;
        let embed_tokens =
            checkpoint.take_shaped("model.embed_tokens.weight", &[config.vocab_size, hidden])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers as usize);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: checkpoint
                    .take_shaped(&format!("{p}.input_layernorm.weight"), &[hidden])?,
                q_proj: checkpoint
                    .take_shaped(&format!("{p}.self_attn.q_proj.weight"), &[q_out, hidden])?,
                k_proj: checkpoint
                    .take_shaped(&format!("{p}.self_attn.k_proj.weight"), &[kv_out, hidden])?,
                v_proj: checkpoint
                    .take_shaped(&format!("{p}.self_attn.v_proj.weight"), &[kv_out, hidden])?,
                o_proj: checkpoint
                    .take_shaped(&format!("{p}.self_attn.o_proj.weight"), &[hidden, q_out])?,
                post_attention_norm: checkpoint
                    .take_shaped(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
                gate_proj: checkpoint
                    .take_shaped(&format!("{p}.mlp.gate_proj.weight"), &[inter, hidden])?,
                up_proj: checkpoint
                    .take_shaped(&format!("{p}.mlp.up_proj.weight"), &[inter, hidden])?,
                down_proj: checkpoint
                    .take_shaped(&format!("{p}.mlp.down_proj.weight"), &[hidden, inter])?,
            });
        }
        let norm = checkpoint.take_shaped("model.norm.weight", &[hidden])?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(checkpoint.take_shaped("lm_head.weight", &[config.vocab_size, hidden])?)
        };
        Ok(Llama {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    fn attention(&self, layer: &Layer, x: &Array) -> Result<Array> {
        let c = &self.config;
        let seq = x.dim(1);
        let head_dim = c.head_dim();
        // [1, L, heads * head_dim] -> [1, heads, L, head_dim]
        let split_heads = |t: Array, heads: i32| -> Result<Array> {
            Ok(t.reshape(&[1, seq, heads, head_dim])?
                .transpose_axes(&[0, 2, 1, 3])?)
        };
        let q = split_heads(linear(x, &layer.q_proj)?, c.num_attention_heads)?;
        let k = split_heads(linear(x, &layer.k_proj)?, c.kv_heads())?;
        let v = split_heads(linear(x, &layer.v_proj)?, c.kv_heads())?;
        let q = fast::rope(&q, head_dim, false, c.rope_theta, 1.0, 0, None)?;
        let k = fast::rope(&k, head_dim, false, c.rope_theta, 1.0, 0, None)?;
        let scale = (head_dim as f32).powf(-0.5);
        let mask = (seq > 1).then_some(ScaledDotProductAttentionMask::Causal);
        let out = fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, None)?;
        let out = out.transpose_axes(&[0, 2, 1, 3])?.reshape(&[1, seq, -1])?;
        linear(&out, &layer.o_proj)
    }

    fn mlp(layer: &Layer, x: &Array) -> Result<Array> {
        let gate = linear(x, &layer.gate_proj)?;
        let up = linear(x, &layer.up_proj)?;
        let hidden = mlx_rs::nn::silu(&gate)?.multiply(&up)?;
        linear(&hidden, &layer.down_proj)
    }

    /// Logits `[1, L, vocab]` for a token sequence.
    pub fn forward(&self, tokens: &[u32]) -> Result<Array> {
        if tokens.is_empty() {
            return Err(Error::Invalid(
                "cannot run the model on an empty prompt".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t >= self.config.vocab_size as u32) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        let ids = Array::from_slice(tokens, &[1, tokens.len() as i32]);
        let mut h = self.embed_tokens.take_axis(&ids, 0)?;
        let eps = self.config.rms_norm_eps;
        for layer in &self.layers {
            let normed = fast::rms_norm(&h, Some(&layer.input_norm), eps)?;
            h = h.add(self.attention(layer, &normed)?)?;
            let normed = fast::rms_norm(&h, Some(&layer.post_attention_norm), eps)?;
            h = h.add(Self::mlp(layer, &normed)?)?;
        }
        let h = fast::rms_norm(&h, Some(&self.norm), eps)?;
        linear(&h, self.lm_head.as_ref().unwrap_or(&self.embed_tokens))
    }

    /// The most likely next token after `tokens`.
    pub fn greedy_next(&self, tokens: &[u32]) -> Result<u32> {
        let logits = self.forward(tokens)?;
        let last = logits.index((0, -1));
        let best = ops::indexing::argmax(&last, None)?;
        Ok(best.item_exact::<u32>())
    }
}
