//! The building blocks every architecture shares: linear layers (dense or
//! quantized), embeddings, RoPE variants, grouped-query attention, the SwiGLU
//! MLP, and the pre-norm decoder stack. Architectures (`llama.rs`,
//! `qwen2.rs`, ...) only translate their config into a [`DecoderSpec`].

use mlx_rs::Array;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::{self, indexing::IndexOp};
use serde_json::Value;

use crate::array_ext::scalar_like;
use crate::checkpoint::Checkpoint;
use crate::models::cache::KvCache;
use crate::models::fused;
use crate::quant::{self, QuantMode, QuantizedWeight};
use crate::{Error, Result};

/// The `quantization` (mlx-community) or `quantization_config` block of a
/// config: defaults and per-module overrides.
#[derive(Clone, Debug, Default)]
pub struct QuantConfig {
    pub group_size: i32,
    pub bits: i32,
    pub mode: Option<QuantMode>,
    overrides: serde_json::Map<String, Value>,
}

impl QuantConfig {
    /// Reads the block, if the checkpoint is quantized.
    pub fn from_config(config: &Value) -> Result<Option<Self>> {
        let Some(block) = config
            .get("quantization")
            .or_else(|| config.get("quantization_config"))
        else {
            return Ok(None);
        };
        let Some(map) = block.as_object() else {
            return Ok(None);
        };
        let mode = match map.get("mode").and_then(Value::as_str) {
            Some(mode) => Some(QuantMode::parse(mode)?),
            None => None,
        };
        Ok(Some(QuantConfig {
            group_size: map.get("group_size").and_then(Value::as_i64).unwrap_or(64) as i32,
            bits: map.get("bits").and_then(Value::as_i64).unwrap_or(4) as i32,
            mode,
            overrides: map.clone(),
        }))
    }

    /// Group size, bits and mode for one module (`model.layers.0.mlp.down_proj`).
    fn for_module(&self, prefix: &str) -> (i32, i32, QuantMode) {
        let mut group_size = self.group_size;
        let mut bits = self.bits;
        let mut mode = self.mode;
        if let Some(Value::Object(o)) = self.overrides.get(prefix) {
            group_size = o
                .get("group_size")
                .and_then(Value::as_i64)
                .map_or(group_size, |v| v as i32);
            bits = o
                .get("bits")
                .and_then(Value::as_i64)
                .map_or(bits, |v| v as i32);
            if let Some(m) = o
                .get("mode")
                .and_then(Value::as_str)
                .and_then(|m| QuantMode::parse(m).ok())
            {
                mode = Some(m);
            }
        }
        (group_size, bits, mode.unwrap_or(QuantMode::Affine))
    }
}

/// Builds layers from a checkpoint's tensors.
pub struct Weights<'a> {
    pub checkpoint: &'a mut Checkpoint,
    pub quant: Option<QuantConfig>,
}

impl Weights<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.checkpoint.tensors.contains_key(name)
    }

    pub fn take(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        self.checkpoint.take_shaped(name, shape)
    }

    /// A quantized `[..lead, out, in]` matrix named `prefix`.
    fn quantized(
        &mut self,
        prefix: &str,
        lead: &[i32],
        out_features: i32,
        in_features: i32,
    ) -> Result<QuantizedWeight> {
        let (group_size, bits, mode) = self
            .quant
            .as_ref()
            .map_or((64, 4, QuantMode::Affine), |q| q.for_module(prefix));
        let shape = |last: i32| [lead, &[out_features, last]].concat();
        let scales = self.take(
            &format!("{prefix}.scales"),
            &shape(in_features / group_size),
        )?;
        let biases = match mode {
            QuantMode::Affine => Some(self.take(
                &format!("{prefix}.biases"),
                &shape(in_features / group_size),
            )?),
            QuantMode::Mxfp4 => None,
        };
        let weight = self.take(&format!("{prefix}.weight"), &shape(in_features * bits / 32))?;
        Ok(QuantizedWeight {
            weight,
            scales,
            biases,
            group_size,
            bits,
            mode,
        })
    }

    /// The quantized expert matrices `[experts, out, in]` named `prefix`, if
    /// the checkpoint has them quantized.
    pub fn quantized_experts(
        &mut self,
        prefix: &str,
        experts: i32,
        out_features: i32,
        in_features: i32,
    ) -> Result<Option<QuantizedWeight>> {
        if !self.has(&format!("{prefix}.scales")) {
            return Ok(None);
        }
        self.quantized(prefix, &[experts], out_features, in_features)
            .map(Some)
    }

    /// A `[out, in]` linear layer named `prefix`, quantized when the checkpoint
    /// has `prefix.scales`.
    pub fn linear(
        &mut self,
        prefix: &str,
        in_features: i32,
        out_features: i32,
        bias: bool,
    ) -> Result<Linear> {
        let bias = if bias {
            Some(self.take(&format!("{prefix}.bias"), &[out_features])?)
        } else {
            None
        };
        if self.has(&format!("{prefix}.scales")) {
            Ok(Linear::Quantized {
                weight: self.quantized(prefix, &[], out_features, in_features)?,
                bias,
            })
        } else {
            Ok(Linear::Dense {
                weight: self.take(&format!("{prefix}.weight"), &[out_features, in_features])?,
                bias,
            })
        }
    }

    pub fn embedding(&mut self, prefix: &str, vocab: i32, dims: i32) -> Result<Embedding> {
        if self.has(&format!("{prefix}.scales")) {
            Ok(Embedding::Quantized(self.quantized(
                prefix,
                &[],
                vocab,
                dims,
            )?))
        } else {
            Ok(Embedding::Dense(
                self.take(&format!("{prefix}.weight"), &[vocab, dims])?,
            ))
        }
    }
}

/// `y = x Wᵀ + b`.
pub enum Linear {
    Dense {
        weight: Array,
        bias: Option<Array>,
    },
    Quantized {
        weight: QuantizedWeight,
        bias: Option<Array>,
    },
}

impl Linear {
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (y, bias) = match self {
            Linear::Dense { weight, bias } => (ops::matmul(x, weight.t())?, bias),
            Linear::Quantized { weight, bias } => (quant::quantized_matmul(x, weight, true)?, bias),
        };
        Ok(match bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}

/// Token embeddings, also usable as the output projection (tied weights).
pub enum Embedding {
    Dense(Array),
    Quantized(QuantizedWeight),
}

impl Embedding {
    pub fn lookup(&self, ids: &Array) -> Result<Array> {
        match self {
            Embedding::Dense(table) => Ok(table.take_axis(ids, 0)?),
            Embedding::Quantized(q) => {
                let rows = QuantizedWeight {
                    weight: q.weight.take_axis(ids, 0)?,
                    scales: q.scales.take_axis(ids, 0)?,
                    biases: q.biases.as_ref().map(|b| b.take_axis(ids, 0)).transpose()?,
                    group_size: q.group_size,
                    bits: q.bits,
                    mode: q.mode,
                };
                quant::dequantize(&rows)
            }
        }
    }

    /// `x Eᵀ`: logits from hidden states with the embedding matrix.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            Embedding::Dense(table) => Ok(ops::matmul(x, table.t())?),
            Embedding::Quantized(q) => quant::quantized_matmul(x, q, true),
        }
    }
}

/// Rotary position embedding: the frequencies come from `base`, or are given
/// (Llama 3 scaling, YaRN).
pub struct Rope {
    pub dims: i32,
    pub base: f32,
    pub traditional: bool,
    pub scale: f32,
    pub freqs: Option<Array>,
    /// YaRN's magnitude correction, applied to the input (1 elsewhere).
    pub input_scale: f32,
}

impl Rope {
    /// Builds the RoPE of a config's `rope_theta` and `rope_scaling`.
    pub fn from_config(config: &Value, dims: i32) -> Result<Self> {
        let base = config
            .get("rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0) as f32;
        let traditional = config
            .get("rope_traditional")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut rope = Rope {
            dims,
            base,
            traditional,
            scale: 1.0,
            freqs: None,
            input_scale: 1.0,
        };
        let Some(scaling) = config.get("rope_scaling").filter(|s| !s.is_null()) else {
            return Ok(rope);
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number =
            |key: &str, default: f64| scaling.get(key).and_then(Value::as_f64).unwrap_or(default);
        match kind {
            "default" => {}
            "linear" => rope.scale = 1.0 / number("factor", 1.0) as f32,
            "llama3" => {
                // Long wavelengths are slowed by `factor`, short ones kept, and
                // those in between interpolated (Llama 3.1's scheme).
                let factor = number("factor", 8.0);
                let low = number("low_freq_factor", 1.0);
                let high = number("high_freq_factor", 4.0);
                let original = number("original_max_position_embeddings", 8192.0);
                let low_wavelen = original / low;
                let high_wavelen = original / high;
                let freqs: Vec<f32> = (0..dims / 2)
                    .map(|i| {
                        let freq = (base as f64).powf(2.0 * i as f64 / dims as f64);
                        let wavelen = 2.0 * std::f64::consts::PI * freq;
                        let scaled = if wavelen > low_wavelen {
                            freq * factor
                        } else {
                            freq
                        };
                        if wavelen > high_wavelen && wavelen < low_wavelen {
                            let smooth = (original / wavelen - low) / (high - low);
                            (scaled / ((1.0 - smooth) / factor + smooth)) as f32
                        } else {
                            scaled as f32
                        }
                    })
                    .collect();
                rope.freqs = Some(Array::from_slice(&freqs, &[dims / 2]));
            }
            "yarn" => {
                // YaRN: frequencies interpolated between the original ones and
                // ones slowed by `factor`, with a ramp between the dimensions
                // that turn `beta_fast` and `beta_slow` times over the original
                // context; the input is scaled by the magnitude correction.
                let factor = number("factor", 1.0);
                let original = number("original_max_position_embeddings", 4096.0);
                let beta_fast = number("beta_fast", 32.0);
                let beta_slow = number("beta_slow", 1.0);
                let mscale = number("mscale", 1.0);
                let mscale_all_dim = number("mscale_all_dim", 0.0);
                let base = base as f64;
                let correction_dim = |rotations: f64| {
                    dims as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let low = correction_dim(beta_fast).floor().max(0.0);
                let mut high = correction_dim(beta_slow).ceil().min(dims as f64 - 1.0);
                if low == high {
                    high += 0.001;
                }
                let magnitude = |m: f64| {
                    if factor <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * factor.ln() + 1.0
                    }
                };
                rope.input_scale = (magnitude(mscale) / magnitude(mscale_all_dim)) as f32;
                let freqs: Vec<f32> = (0..dims / 2)
                    .map(|i| {
                        let extra = (base.powf(2.0 * i as f64 / dims as f64)) as f32;
                        let inter = factor as f32 * extra;
                        let ramp =
                            ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                        let mask = 1.0 - ramp;
                        (inter * extra) / (inter * mask + extra * (1.0 - mask))
                    })
                    .collect();
                rope.freqs = Some(Array::from_slice(&freqs, &[dims / 2]));
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unsupported rope_scaling type {other:?}; supported: default, linear, llama3, yarn"
                )));
            }
        }
        Ok(rope)
    }

    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        let base = if self.freqs.is_some() {
            None
        } else {
            Some(self.base)
        };
        let scaled;
        let x = if self.input_scale != 1.0 {
            // Every model that uses YaRN here rotates the whole head.
            scaled = x.multiply(scalar_like(self.input_scale, x)?)?;
            &scaled
        } else {
            x
        };
        Ok(fast::rope(
            x,
            self.dims,
            self.traditional,
            base,
            self.scale,
            offset,
            self.freqs.as_ref(),
        )?)
    }
}

/// What differs between the decoder architectures.
pub struct DecoderSpec {
    pub hidden_size: i32,
    pub num_layers: i32,
    pub intermediate_size: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub vocab_size: i32,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (Qwen2).
    pub attention_bias: bool,
    /// RMSNorm of queries and keys per head (Qwen3).
    pub qk_norm: bool,
    /// Biases on the MLP projections (some Llama variants).
    pub mlp_bias: bool,
    pub rope: Rope,
}

/// Grouped-query attention.
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<Array>,
    k_norm: Option<Array>,
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        hidden: i32,
        inter: i32,
        bias: bool,
    ) -> Result<Self> {
        Ok(Mlp {
            gate_proj: w.linear(&format!("{prefix}.gate_proj"), hidden, inter, bias)?,
            up_proj: w.linear(&format!("{prefix}.up_proj"), hidden, inter, bias)?,
            down_proj: w.linear(&format!("{prefix}.down_proj"), inter, hidden, bias)?,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let gate = self.gate_proj.forward(x)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&fused::swiglu(&gate, &up)?)
    }
}

struct Layer {
    input_norm: Array,
    attention: Attention,
    post_attention_norm: Array,
    mlp: Mlp,
}

/// The pre-norm decoder stack shared by Llama, Mistral, Qwen2 and Qwen3.
pub struct Decoder {
    pub spec: DecoderSpec,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: Array,
    lm_head: Option<Linear>,
}

impl Decoder {
    /// Loads the Hugging Face / mlx-community weight names under `model.`.
    pub fn load(spec: DecoderSpec, checkpoint: &mut Checkpoint) -> Result<Self> {
        let quant = QuantConfig::from_config(&checkpoint.config)?;
        let mut w = Weights { checkpoint, quant };
        let (hidden, head_dim) = (spec.hidden_size, spec.head_dim);
        let q_out = spec.num_heads * head_dim;
        let kv_out = spec.num_kv_heads * head_dim;
        let embed_tokens = w.embedding("model.embed_tokens", spec.vocab_size, hidden)?;
        let mut layers = Vec::with_capacity(spec.num_layers as usize);
        for i in 0..spec.num_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let attention = Attention {
                q_proj: w.linear(&format!("{a}.q_proj"), hidden, q_out, spec.attention_bias)?,
                k_proj: w.linear(&format!("{a}.k_proj"), hidden, kv_out, spec.attention_bias)?,
                v_proj: w.linear(&format!("{a}.v_proj"), hidden, kv_out, spec.attention_bias)?,
                o_proj: w.linear(&format!("{a}.o_proj"), q_out, hidden, false)?,
                q_norm: spec
                    .qk_norm
                    .then(|| w.take(&format!("{a}.q_norm.weight"), &[head_dim]))
                    .transpose()?,
                k_norm: spec
                    .qk_norm
                    .then(|| w.take(&format!("{a}.k_norm.weight"), &[head_dim]))
                    .transpose()?,
            };
            layers.push(Layer {
                input_norm: w.take(&format!("{p}.input_layernorm.weight"), &[hidden])?,
                attention,
                post_attention_norm: w
                    .take(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
                mlp: Mlp::load(
                    &mut w,
                    &format!("{p}.mlp"),
                    hidden,
                    spec.intermediate_size,
                    spec.mlp_bias,
                )?,
            });
        }
        let norm = w.take("model.norm.weight", &[hidden])?;
        let lm_head = if spec.tie_word_embeddings {
            None
        } else {
            Some(w.linear("lm_head", hidden, spec.vocab_size, false)?)
        };
        Ok(Decoder {
            spec,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    fn attention(&self, layer: &Layer, x: &Array, cache: &mut KvCache) -> Result<Array> {
        let s = &self.spec;
        let a = &layer.attention;
        let (batch, seq) = (x.dim(0), x.dim(1));
        let heads = |t: Array, n: i32, norm: Option<&Array>| -> Result<Array> {
            let t = t.reshape(&[batch, seq, n, s.head_dim])?;
            let t = match norm {
                Some(weight) => fast::rms_norm(&t, Some(weight), s.rms_norm_eps)?,
                None => t,
            };
            Ok(t.transpose_axes(&[0, 2, 1, 3])?)
        };
        let q = heads(a.q_proj.forward(x)?, s.num_heads, a.q_norm.as_ref())?;
        let k = heads(a.k_proj.forward(x)?, s.num_kv_heads, a.k_norm.as_ref())?;
        let v = heads(a.v_proj.forward(x)?, s.num_kv_heads, None)?;
        let offset = cache.offset();
        let q = s.rope.apply(&q, offset)?;
        let k = s.rope.apply(&k, offset)?;
        let (k, v) = cache.update_and_fetch(&k, &v)?;
        let scale = (s.head_dim as f32).powf(-0.5);
        // MLX aligns the causal mask to the last query, so chunks after the
        // first see every cached position.
        let mask = (seq > 1).then_some(ScaledDotProductAttentionMask::Causal);
        let out = fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, None)?;
        let out =
            out.transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[batch, seq, s.num_heads * s.head_dim])?;
        a.o_proj.forward(&out)
    }

    /// Logits `[B, L, vocab]` for token ids `[B, L]`, extending `caches`.
    pub fn forward(&self, ids: &Array, caches: &mut [KvCache]) -> Result<Array> {
        check_caches(caches.len(), self.layers.len())?;
        let eps = self.spec.rms_norm_eps;
        let mut h = self.embed_tokens.lookup(ids)?;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = residual(&h, &layer.input_norm, eps, |x| {
                self.attention(layer, x, cache)
            })?;
            h = residual(&h, &layer.post_attention_norm, eps, |x| {
                layer.mlp.forward(x)
            })?;
        }
        let h = fast::rms_norm(&h, Some(&self.norm), eps)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => self.embed_tokens.as_linear(&h),
        }
    }

    pub fn new_caches(&self) -> Vec<KvCache> {
        (0..self.layers.len()).map(|_| KvCache::new()).collect()
    }
}

/// `h + f(rms_norm(h))`: one pre-norm residual step of a decoder layer.
pub fn residual(
    h: &Array,
    norm: &Array,
    eps: f32,
    f: impl FnOnce(&Array) -> Result<Array>,
) -> Result<Array> {
    Ok(h.add(f(&fast::rms_norm(h, Some(norm), eps)?)?)?)
}

/// A model needs one cache per layer.
pub fn check_caches(caches: usize, layers: usize) -> Result<()> {
    if caches == layers {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{caches} caches for {layers} layers"
        )))
    }
}

/// The logits of the last position of `[B, L, V]` logits, `[B, V]`.
pub fn last_position(logits: &Array) -> Result<Array> {
    Ok(logits.index((.., -1, ..)))
}
