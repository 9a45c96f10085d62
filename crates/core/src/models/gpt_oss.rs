//! GPT-OSS: a mixture-of-experts decoder with attention sinks, alternating
//! sliding-window (128) and full attention layers, YaRN RoPE, and the clamped
//! SwiGLU variant (`(clip(up) + 1) * g * sigmoid(1.702 g)`, `g = min(gate, 7)`).
//!
//! Two layouts load: mlx-community's (experts as `experts.{gate,up,down}_proj`,
//! quantized in any MLX mode) and OpenAI's release (MXFP4 experts stored as
//! `*_blocks` + `*_scales`, gate and up fused in one matrix with their rows
//! interleaved).

use mlx_rs::Array;
use mlx_rs::fast;
use mlx_rs::ops::{self, argpartition_axis, indexing::take_along_axis};
use serde::Deserialize;
use serde_json::Value;

use crate::array_ext::{scalar_like, slice, slice_strided};
use crate::checkpoint::Checkpoint;
use crate::distributed::{self, Group};
use crate::models::blocks::{
    AttentionShard, Embedding, Keep, Linear, QuantConfig, Rope, Weights, check_caches,
    hidden_units_part, residual, sdpa_mask, sum_over,
};
use crate::models::cache::{AttentionMask, KvCache, LayerCache};
use crate::models::fused;
use crate::qmm_rows;
use crate::quant::{self, QuantMode, QuantizedWeight};
use crate::{Error, Result};

#[derive(Clone, Debug, Deserialize)]
pub struct GptOssConfig {
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub intermediate_size: i32,
    pub num_attention_heads: i32,
    pub num_key_value_heads: i32,
    pub head_dim: i32,
    pub vocab_size: i32,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_window")]
    pub sliding_window: i32,
    pub num_local_experts: i32,
    pub num_experts_per_tok: i32,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_limit")]
    pub swiglu_limit: f32,
}

fn default_eps() -> f32 {
    1e-5
}
fn default_window() -> i32 {
    128
}
fn default_limit() -> f32 {
    7.0
}

/// From how many (token, expert) pairs the expert matmuls sort by expert.
const SORT_FROM: usize = 64;

/// Expert matrices `[experts, out, in]`, dense or quantized.
enum ExpertMatrix {
    Dense(Array),
    Quantized(QuantizedWeight),
}

struct ExpertProjection {
    matrix: ExpertMatrix,
    bias: Array,
}

impl ExpertProjection {
    /// `x`: `[B, L, 1|k, 1, in]`, `experts`: `[B, L, k]` → `[B, L, k, 1, out]`
    /// (or `[N, 1, in]` rows with `[N]` experts; `sorted`: the experts ascend).
    fn forward(&self, x: &Array, experts: &Array, sorted: bool) -> Result<Array> {
        let y = match &self.matrix {
            ExpertMatrix::Quantized(q) => {
                let stream = mlx_rs::Stream::thread_local_or_default();
                match qmm_rows::try_dense_experts(x, q, experts, sorted, &stream)? {
                    Some(y) => y,
                    None => quant::gather_qmm(x, q, experts, true, sorted)?,
                }
            }
            ExpertMatrix::Dense(w) => {
                ops::gather_mm(x, w.swap_axes(-1, -2)?, None, Some(experts), sorted)?
            }
        };
        Ok(y.add(self.bias.take_axis(experts, 0)?.expand_dims(-2)?)?)
    }

    /// The part a tensor-parallel rank keeps (see [`Keep`]).
    fn part(self, keep: &Keep) -> Result<Self> {
        Ok(ExpertProjection {
            matrix: match self.matrix {
                ExpertMatrix::Dense(w) => ExpertMatrix::Dense(keep.dense(&w)?),
                ExpertMatrix::Quantized(q) => ExpertMatrix::Quantized(keep.quantized(&q)?),
            },
            bias: keep.bias_or_zeros(&self.bias)?,
        })
    }

    /// Whether our experts' kernel takes this projection for `tokens` tokens
    /// of `dtype` activations with `k` features here.
    fn takes_ours(&self, dtype: mlx_rs::Dtype, k: i32, tokens: i32) -> bool {
        matches!(&self.matrix, ExpertMatrix::Quantized(q) if qmm_rows::wants_experts(dtype, q, k, tokens))
    }

    /// Through our experts' kernel (quantized experts, checked by
    /// [`Self::takes_ours`]): `x` `[R, in]`, `picks` `[R · per_row]`
    /// (row `r`'s experts at `r · per_row ..`) → `[R · per_row, out]`, one
    /// row per pick, in the picks' order: nothing sorted or gathered first.
    /// `tokens` bounds the picks of one expert. Dense experts, or a kernel
    /// that failed its self-check: [`Self::forward`] on the same rows.
    fn forward_picked(&self, x: &Array, picks: &Array, per_row: i32, tokens: i32) -> Result<Array> {
        let ours = match &self.matrix {
            ExpertMatrix::Quantized(q) => qmm_rows::experts_matmul(x, q, picks, per_row, tokens)?,
            ExpertMatrix::Dense(_) => None,
        };
        match ours {
            Some(y) => Ok(y.add(self.bias.take_axis(picks, 0)?)?),
            None => {
                let rows = x.dim(0);
                let y = self.forward(
                    &x.reshape(&[rows, 1, 1, x.dim(-1)])?,
                    &picks.reshape(&[rows, per_row])?,
                    false,
                )?;
                Ok(y.reshape(&[picks.dim(0), -1])?)
            }
        }
    }
}

struct MoeLayer {
    input_norm: Array,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    sinks: Array,
    sliding: bool,
    post_attention_norm: Array,
    router: Linear,
    gate: ExpertProjection,
    up: ExpertProjection,
    down: ExpertProjection,
}

pub struct GptOss {
    /// The whole model's shape (a tensor-parallel rank computes a part of
    /// its heads and of each expert's hidden units).
    pub config: GptOssConfig,
    heads: i32,
    kv_heads: i32,
    group: Option<&'static Group>,
    rope: Rope,
    embed_tokens: Embedding,
    layers: Vec<MoeLayer>,
    norm: Array,
    lm_head: Linear,
}

fn err(message: String) -> Error {
    Error::Invalid(message)
}

type Experts = (ExpertProjection, ExpertProjection, ExpertProjection);

/// Reads the experts of one layer (the scope `w`, a layer's `mlp.experts`)
/// in either layout; under tensor parallelism, this rank's part of every
/// expert's hidden units (whole quantization groups of the down
/// projection's input each). Every rank then runs every expert on its
/// part, so the work is even whatever the router picks.
fn load_experts(w: &mut Weights, c: &GptOssConfig) -> Result<Experts> {
    let (gate, up, down) = load_whole_experts(w, c)?;
    let Some(group) = w.group() else {
        return Ok((gate, up, down));
    };
    let unit = match &down.matrix {
        ExpertMatrix::Quantized(q) => q.group_size,
        ExpertMatrix::Dense(_) => 1,
    };
    let (outputs, inputs) = hidden_units_part(
        group,
        c.intermediate_size,
        unit,
        "expert hidden-unit groups",
    )?;
    Ok((
        gate.part(&outputs)?,
        up.part(&outputs)?,
        down.part(&inputs)?,
    ))
}

fn load_whole_experts(w: &mut Weights, c: &GptOssConfig) -> Result<Experts> {
    let (e, hidden, inter) = (c.num_local_experts, c.hidden_size, c.intermediate_size);
    if w.has("gate_up_proj_blocks") {
        // OpenAI's release: uint8 blocks [E, out, in/32, 16] are the MXFP4
        // values MLX packs as uint32 [E, out, in/8]; scales are E8M0 bytes.
        let packed =
            |w: &mut Weights, name: &str, out: i32, input: i32| -> Result<(Array, Array)> {
                let blocks = w.take(&format!("{name}_blocks"), &[e, out, input / 32, 16])?;
                let weight = blocks.view::<u32>()?.reshape(&[e, out, input / 8])?;
                let scales = w.take(&format!("{name}_scales"), &[e, out, input / 32])?;
                Ok((weight, scales))
            };
        let (gate_up, gate_up_scales) = packed(w, "gate_up_proj", 2 * inter, hidden)?;
        let gate_up_bias = w.take("gate_up_proj_bias", &[e, 2 * inter])?;
        let (down, down_scales) = packed(w, "down_proj", hidden, inter)?;
        let down_bias = w.take("down_proj_bias", &[e, hidden])?;
        // Gate and up rows alternate: gate on even rows, up on odd ones.
        let rows = |a: &Array, first: i32| -> Result<Array> {
            let shape = a.shape().to_vec();
            let mut starts = vec![0; shape.len()];
            let mut strides = vec![1; shape.len()];
            starts[1] = first;
            strides[1] = 2;
            slice_strided(a, &starts, &shape, &strides)
        };
        let mxfp4 = |weight: Array, scales: Array| QuantizedWeight {
            weight,
            scales,
            biases: None,
            group_size: 32,
            bits: 4,
            mode: QuantMode::Mxfp4,
        };
        let gate = ExpertProjection {
            matrix: ExpertMatrix::Quantized(mxfp4(rows(&gate_up, 0)?, rows(&gate_up_scales, 0)?)),
            bias: rows(&gate_up_bias, 0)?,
        };
        let up = ExpertProjection {
            matrix: ExpertMatrix::Quantized(mxfp4(rows(&gate_up, 1)?, rows(&gate_up_scales, 1)?)),
            bias: rows(&gate_up_bias, 1)?,
        };
        let down = ExpertProjection {
            matrix: ExpertMatrix::Quantized(mxfp4(down, down_scales)),
            bias: down_bias,
        };
        return Ok((gate, up, down));
    }
    let mut projection = |name: &str, out: i32, input: i32| -> Result<ExpertProjection> {
        let mut w = w.pp(name);
        let matrix = match w.quantized_experts(e, out, input)? {
            Some(q) => ExpertMatrix::Quantized(q),
            None => ExpertMatrix::Dense(w.take("weight", &[e, out, input])?),
        };
        Ok(ExpertProjection {
            matrix,
            bias: w.take("bias", &[e, out])?,
        })
    };
    Ok((
        projection("gate_proj", inter, hidden)?,
        projection("up_proj", inter, hidden)?,
        projection("down_proj", hidden, inter)?,
    ))
}

impl GptOss {
    pub fn load(checkpoint: &mut Checkpoint) -> Result<Self> {
        let c: GptOssConfig = serde_json::from_value(checkpoint.config.clone())
            .map_err(|e| err(format!("config.json: {e}")))?;
        let rope = Rope::from_config(&checkpoint.config, c.head_dim)?;
        let quant = QuantConfig::from_config(&checkpoint.config)?;
        let mut w = Weights::new(checkpoint, quant.as_ref());
        let group = w.group();
        let (hidden, head_dim) = (c.hidden_size, c.head_dim);
        let heads = AttentionShard::new(
            group,
            c.num_attention_heads,
            c.num_key_value_heads,
            head_dim,
        )?;
        let (q_out, kv_out) = (
            c.num_attention_heads * head_dim,
            c.num_key_value_heads * head_dim,
        );
        let default_types: Vec<String> = (0..c.num_hidden_layers)
            .map(|i| {
                if i % 2 == 0 {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
                .to_string()
            })
            .collect();
        let types = c.layer_types.clone().unwrap_or(default_types);
        if types.len() != c.num_hidden_layers as usize {
            return Err(err(format!(
                "config.json: layer_types has {} entries for {} layers",
                types.len(),
                c.num_hidden_layers
            )));
        }
        let mut model = w.pp("model");
        let embed_tokens = model.embedding("embed_tokens", c.vocab_size, hidden)?;
        let mut layers = Vec::new();
        for (i, kind) in types.iter().enumerate() {
            let mut layer = model.pp(format_args!("layers.{i}"));
            let (gate, up, down) = load_experts(&mut layer.pp("mlp.experts"), &c)?;
            let router = layer
                .pp("mlp")
                .linear("router", hidden, c.num_local_experts, true)?;
            let mut a = layer.pp("self_attn");
            let (q_proj, k_proj, v_proj, o_proj) = (
                a.linear_part("q_proj", hidden, q_out, true, heads.q.as_ref())?,
                a.linear_part("k_proj", hidden, kv_out, true, heads.kv.as_ref())?,
                a.linear_part("v_proj", hidden, kv_out, true, heads.kv.as_ref())?,
                a.linear_part("o_proj", q_out, hidden, true, heads.o.as_ref())?,
            );
            let sinks = a.take("sinks", &[c.num_attention_heads])?;
            let sinks = match group {
                Some(_) => distributed::own_part(&sinks, 0, heads.q_heads.clone())?,
                None => sinks,
            };
            layers.push(MoeLayer {
                input_norm: layer.take("input_layernorm.weight", &[hidden])?,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                sinks,
                sliding: kind == "sliding_attention",
                post_attention_norm: layer.take("post_attention_layernorm.weight", &[hidden])?,
                router,
                gate,
                up,
                down,
            });
        }
        let norm = model.take("norm.weight", &[hidden])?;
        let lm_head = w.linear("lm_head", hidden, c.vocab_size, false)?;
        Ok(GptOss {
            config: c,
            heads: heads.heads,
            kv_heads: heads.kv_heads,
            group,
            rope,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn new_caches(&self) -> Vec<KvCache> {
        self.layers
            .iter()
            .map(|l| {
                if l.sliding {
                    KvCache::sliding(self.config.sliding_window)
                } else {
                    KvCache::new()
                }
            })
            .collect()
    }

    /// `masks` (full, sliding) carry each kind's mask from the first layer of
    /// that kind in a forward pass to the others: their caches hold the same
    /// positions, so one mask serves them all.
    fn attention<C: LayerCache>(
        &self,
        layer: &MoeLayer,
        x: &Array,
        cache: &mut C,
        masks: &mut [Option<AttentionMask>; 2],
    ) -> Result<Array> {
        let c = &self.config;
        let (batch, seq) = (x.dim(0), x.dim(1));
        let heads = |t: Array, n: i32| -> Result<Array> {
            Ok(t.reshape(&[batch, seq, n, c.head_dim])?
                .transpose_axes(&[0, 2, 1, 3])?)
        };
        let [q, k, v] = Linear::forward_shared(x, [&layer.q_proj, &layer.k_proj, &layer.v_proj])?;
        let q = heads(q, self.heads)?;
        let k = heads(k, self.kv_heads)?;
        let v = heads(v, self.kv_heads)?;
        let offset = cache.rope_offset()?;
        let q = self.rope.apply(&q, &offset)?;
        let k = self.rope.apply(&k, &offset)?;
        let scale = (c.head_dim as f32).powf(-0.5);
        let sinks = layer.sinks.as_dtype(q.dtype())?;
        let kind = usize::from(layer.sliding);
        let window = layer.sliding.then_some(c.sliding_window);
        if let Some(out) = cache.attend_rows(&q, &k, &v, scale, window, Some(&sinks))? {
            return self.attention_output(layer, out, batch, seq);
        }
        let (k, v) = cache.update_and_fetch(&k, &v)?;
        if masks[kind].is_none() {
            masks[kind] = Some(cache.mask(seq, window)?);
        }
        // A batch cache keeps every position; a sliding layer attends over
        // its window's columns only (the mask covers those).
        let first = cache.first_attended(seq, window);
        let (k, v) = if first > 0 {
            let starts = [0, 0, first, 0];
            (
                slice(&k, &starts, k.shape())?,
                slice(&v, &starts, v.shape())?,
            )
        } else {
            (k, v)
        };
        let mask = sdpa_mask(masks[kind].as_ref().expect("set above"));
        let out = fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, Some(&sinks))?;
        self.attention_output(layer, out, batch, seq)
    }

    /// Attention's `[B, heads, L, D]` through the output projection.
    fn attention_output(
        &self,
        layer: &MoeLayer,
        out: Array,
        batch: i32,
        seq: i32,
    ) -> Result<Array> {
        let out = out.transpose_axes(&[0, 2, 1, 3])?.reshape(&[
            batch,
            seq,
            self.heads * self.config.head_dim,
        ])?;
        sum_over(self.group, layer.o_proj.forward(&out)?)
    }

    /// The experts' output for `x`, summed over the tensor-parallel group
    /// (each rank holds a part of every expert's hidden units).
    fn moe(&self, layer: &MoeLayer, x: &Array) -> Result<Array> {
        sum_over(self.group, self.experts(layer, x)?)
    }

    fn experts(&self, layer: &MoeLayer, x: &Array) -> Result<Array> {
        let k = self.config.num_experts_per_tok;
        let scores = layer.router.forward(x)?;
        let experts_dim = scores.dim(-1);
        let order = argpartition_axis(&scores, experts_dim - k, -1)?;
        let shape = order.shape().to_vec();
        let mut starts = vec![0; shape.len()];
        starts[shape.len() - 1] = experts_dim - k;
        let chosen = slice(&order, &starts, &shape)?;
        let weights = ops::softmax_axis(take_along_axis(&scores, &chosen, -1)?, -1, true)?;
        let hidden = x.dim(-1);
        let tokens = (chosen.size() / k as usize) as i32;
        if layer.gate.takes_ours(x.dtype(), hidden, tokens) {
            // A batched or speculative decode step on CUDA (2–64 tokens): our
            // experts' kernel reads each picked expert's matrix once for all
            // the tokens that picked it, straight from the picks, so nothing
            // is sorted, gathered or put back in order around it.
            let rows = x.reshape(&[tokens, hidden])?;
            let picks = chosen.reshape(&[-1])?;
            let up = layer.up.forward_picked(&rows, &picks, k, tokens)?;
            let gate = layer.gate.forward_picked(&rows, &picks, k, tokens)?;
            let limit = scalar_like(self.config.swiglu_limit, &gate)?;
            let act = fused::clamped_swiglu(&gate, &up, &limit)?;
            let mut shape = chosen.shape().to_vec();
            shape.push(hidden);
            let down = layer
                .down
                .forward_picked(&act, &picks, 1, tokens)?
                .reshape(&shape)?;
            return Ok(down
                .multiply(weights.expand_dims(-1)?)?
                .sum_axis(-2, None)?);
        }
        // Many tokens (prefill): group the rows by expert first, so that each
        // expert's matrix is read once for all its rows, and restore the
        // order afterwards (as mlx-lm's SwitchGLU does).
        let sort = chosen.size() >= SORT_FROM;
        let (xe, experts, restore) = if sort {
            let flat = chosen.flatten(None, None)?;
            let order = ops::argsort_axis(&flat, 0)?;
            let restore = ops::argsort_axis(&order, 0)?;
            let rows = order.floor_divide(Array::from_int(k).as_dtype(order.dtype())?)?;
            let xs = x.reshape(&[-1, 1, hidden])?.take_axis(&rows, 0)?;
            (xs, flat.take_axis(&order, 0)?, Some(restore))
        } else {
            (x.expand_dims(-2)?.expand_dims(-2)?, chosen.clone(), None)
        };
        let up = layer.up.forward(&xe, &experts, sort)?;
        let gate = layer.gate.forward(&xe, &experts, sort)?;
        let limit = scalar_like(self.config.swiglu_limit, &gate)?;
        let act = fused::clamped_swiglu(&gate, &up, &limit)?;
        let down = layer.down.forward(&act, &experts, sort)?;
        let down = match restore {
            Some(restore) => {
                let mut shape = chosen.shape().to_vec();
                shape.push(down.dim(-1));
                down.take_axis(&restore, 0)?.reshape(&shape)?
            }
            None => down.squeeze_axes(&[-2])?,
        };
        Ok(down
            .multiply(weights.expand_dims(-1)?)?
            .sum_axis(-2, None)?)
    }

    pub fn forward<C: LayerCache>(&self, ids: &Array, caches: &mut [C]) -> Result<Array> {
        check_caches(caches.len(), self.layers.len())?;
        let eps = self.config.rms_norm_eps;
        let mut h = self.embed_tokens.lookup(ids)?;
        let mut masks = [None, None];
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = residual(&h, &layer.input_norm, eps, |x| {
                self.attention(layer, x, cache, &mut masks)
            })?;
            h = residual(&h, &layer.post_attention_norm, eps, |x| self.moe(layer, x))?;
        }
        self.lm_head
            .forward(&fast::rms_norm(&h, Some(&self.norm), eps)?)
    }
}

/// Whether a config describes GPT-OSS (used by the loader and by format choice).
pub fn is_gpt_oss(config: &Value) -> bool {
    config.get("model_type").and_then(Value::as_str) == Some("gpt_oss")
}
