//! The building blocks every architecture shares: weights read under a
//! scope ([`Weights`]), linear layers (dense or quantized), embeddings,
//! grouped-query attention, the SwiGLU MLP, and the pre-norm decoder stack
//! (RoPE is in [`super::rope`], the quantization block in
//! [`super::quant_config`]). Architectures (`llama.rs`,
//! `qwen2.rs`, ...) only translate their config into a [`DecoderSpec`].

use std::ops::Range;

use mlx_rs::Array;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::{self, indexing::IndexOp};

use crate::checkpoint::Checkpoint;
use crate::distributed::{self, Group};
use crate::models::cache::{AttentionMask, KvCache, LayerCache};
use crate::models::fused;
pub use crate::models::quant_config::QuantConfig;
pub use crate::models::rope::Rope;
use crate::quant::{self, QuantMode, QuantizedWeight};
use crate::{Error, Result};

/// Builds layers from a checkpoint's tensors, under a name prefix: like
/// candle's `VarBuilder`, [`Weights::pp`] scopes to a sub-module
/// (`w.pp("model").pp("layers.0").pp("self_attn")`), and the layers are then
/// named relative to it (`linear("q_proj", ...)`).
pub struct Weights<'a> {
    checkpoint: &'a mut Checkpoint,
    quant: Option<&'a QuantConfig>,
    prefix: String,
    /// The tensor-parallel group whose shard is loaded, if any.
    group: Option<&'static Group>,
}

impl<'a> Weights<'a> {
    /// The whole checkpoint, quantized as `quant` says; sharded for this
    /// rank where the process runs tensor-parallel
    /// ([`crate::distributed::join_tensor_parallel`]).
    pub fn new(checkpoint: &'a mut Checkpoint, quant: Option<&'a QuantConfig>) -> Self {
        Weights {
            checkpoint,
            quant,
            prefix: String::new(),
            group: distributed::tensor_parallel(),
        }
    }

    /// The tensor-parallel group the layers are sharded over, if any.
    pub fn group(&self) -> Option<&'static Group> {
        self.group
    }

    /// The quantization group size of the layer `name` in this scope, when
    /// the checkpoint has it quantized: a shard of its input features must
    /// hold whole groups.
    pub fn group_size_of(&self, name: &str) -> Option<i32> {
        let path = self.path(name);
        self.checkpoint
            .tensors
            .contains_key(&format!("{path}.scales"))
            .then(|| self.quantization_of(&path).0)
    }

    /// Group size, bits and mode of the module at `path`, as the config
    /// says (MLX's defaults without a quantization block).
    fn quantization_of(&self, path: &str) -> (i32, i32, QuantMode) {
        self.quant
            .map_or((64, 4, QuantMode::Affine), |q| q.for_module(path))
    }

    /// The weights under `name` (joined to this scope's prefix with a dot).
    pub fn pp(&mut self, name: impl std::fmt::Display) -> Weights<'_> {
        Weights {
            prefix: self.path(&name.to_string()),
            checkpoint: &mut *self.checkpoint,
            quant: self.quant,
            group: self.group,
        }
    }

    /// The full name of `name` in this scope.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else if name.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.checkpoint.tensors.contains_key(&self.path(name))
    }

    pub fn take(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        let name = self.path(name);
        self.checkpoint.take_shaped(&name, shape)
    }

    /// A quantized `[..lead, out, in]` matrix: this scope's `weight`,
    /// `scales` and (affine) `biases`.
    fn quantized(
        &mut self,
        lead: &[i32],
        out_features: i32,
        in_features: i32,
    ) -> Result<QuantizedWeight> {
        let (group_size, bits, mode) = self.quantization_of(&self.prefix);
        let shape = |last: i32| [lead, &[out_features, last]].concat();
        let scales = self.take("scales", &shape(in_features / group_size))?;
        let biases = match mode {
            QuantMode::Affine => Some(self.take("biases", &shape(in_features / group_size))?),
            QuantMode::Mxfp4 => None,
        };
        let weight = self.take("weight", &shape(in_features * bits / 32))?;
        Ok(QuantizedWeight {
            weight,
            scales,
            biases,
            group_size,
            bits,
            mode,
        })
    }

    /// The quantized expert matrices `[experts, out, in]` of this scope, if
    /// the checkpoint has them quantized.
    pub fn quantized_experts(
        &mut self,
        experts: i32,
        out_features: i32,
        in_features: i32,
    ) -> Result<Option<QuantizedWeight>> {
        if !self.has("scales") {
            return Ok(None);
        }
        self.quantized(&[experts], out_features, in_features)
            .map(Some)
    }

    /// The `[out, in]` linear layer `name`, quantized when the checkpoint
    /// has `name.scales`.
    pub fn linear(
        &mut self,
        name: &str,
        in_features: i32,
        out_features: i32,
        bias: bool,
    ) -> Result<Linear> {
        let mut w = self.pp(name);
        let bias = if bias {
            Some(w.take("bias", &[out_features])?)
        } else {
            None
        };
        if w.has("scales") {
            Ok(Linear::Quantized {
                weight: w.quantized(&[], out_features, in_features)?,
                bias,
            })
        } else {
            Ok(Linear::Dense {
                weight: w.take("weight", &[out_features, in_features])?,
                bias,
            })
        }
    }

    /// The linear layer `name` keeping `keep` of its features (all of them
    /// with `None`): this rank's shard under tensor parallelism.
    pub fn linear_part(
        &mut self,
        name: &str,
        in_features: i32,
        out_features: i32,
        bias: bool,
        keep: Option<&Keep>,
    ) -> Result<Linear> {
        let linear = self.linear(name, in_features, out_features, bias)?;
        match keep {
            None => Ok(linear),
            Some(keep) => linear.part(keep).map_err(|e| match e {
                Error::Invalid(message) => {
                    Error::Invalid(format!("{}: {message}", self.path(name)))
                }
                other => other,
            }),
        }
    }

    /// The embedding table `name`, quantized or not.
    pub fn embedding(&mut self, name: &str, vocab: i32, dims: i32) -> Result<Embedding> {
        let mut w = self.pp(name);
        if w.has("scales") {
            Ok(Embedding::Quantized(w.quantized(&[], vocab, dims)?))
        } else {
            Ok(Embedding::Dense(w.take("weight", &[vocab, dims])?))
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
    /// The products of projections that read the same `x` (a layer's q, k
    /// and v; its gate and up), biases added: in one kernel launch where
    /// [`crate::qmm_rows::matmul_shared`] takes them (quantized, on CUDA,
    /// 2–64 rows), one by one otherwise.
    pub fn forward_shared<const N: usize>(x: &Array, linears: [&Linear; N]) -> Result<[Array; N]> {
        let weights: Option<Vec<&QuantizedWeight>> = linears
            .iter()
            .map(|l| match l {
                Linear::Quantized { weight, .. } => Some(weight),
                Linear::Dense { .. } => None,
            })
            .collect();
        let shared = match weights {
            Some(weights) => crate::qmm_rows::matmul_shared(x, &weights)?,
            None => None,
        };
        let ys = match shared {
            Some(ys) => ys
                .into_iter()
                .zip(linears)
                .map(|(y, l)| l.with_bias(y))
                .collect::<Result<Vec<_>>>()?,
            None => linears
                .iter()
                .map(|l| l.forward(x))
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(ys
            .try_into()
            .unwrap_or_else(|_| unreachable!("one product per projection")))
    }

    fn with_bias(&self, y: Array) -> Result<Array> {
        let (Linear::Dense { bias, .. } | Linear::Quantized { bias, .. }) = self;
        Ok(match bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = match self {
            Linear::Dense { weight, .. } => rows_flattened(x, |x| Ok(ops::matmul(x, weight.t())?))?,
            Linear::Quantized { weight, .. } => {
                rows_flattened(x, |x| crate::qmm_rows::matmul(x, weight, true))?
            }
        };
        self.with_bias(y)
    }
}

/// Which features of a projection a rank keeps under tensor parallelism.
#[derive(Clone, Debug, PartialEq)]
pub enum Keep {
    /// Output features (rows): the rank computes its slice of the output
    /// (queries, keys and values of its heads; its part of the MLP's hidden
    /// units).
    Outputs(Range<i32>),
    /// Input features (columns): the rank's product is a partial sum, which
    /// the model sums over the group; `bias` says whether this rank adds
    /// the bias (one rank does).
    Inputs { features: Range<i32>, bias: bool },
}

impl Keep {
    /// `a`'s part along its features axis (`-2` for outputs, `-1` for
    /// inputs, of a `[.., out, in]` matrix), in a buffer of its own.
    /// `per_feature`: columns per input feature (packed quantized weights
    /// hold several in a word; quantization scales one per group).
    fn slice(&self, a: &Array, per_feature: Option<(i32, i32)>) -> Result<Array> {
        let (axis, range) = match self {
            Keep::Outputs(range) => (a.ndim() - 2, range.clone()),
            Keep::Inputs { features, .. } => (a.ndim() - 1, features.clone()),
        };
        let range = match (self, per_feature) {
            (Keep::Inputs { .. }, Some((num, den))) => {
                range.start * num / den..range.end * num / den
            }
            _ => range,
        };
        distributed::own_part(a, axis, range)
    }

    /// A `[.., out]` bias of a projection cut this way: its outputs' part,
    /// or all of it (or none) for an input cut.
    fn bias(&self, bias: &Array) -> Result<Option<Array>> {
        match self {
            Keep::Outputs(range) => Ok(Some(distributed::own_part(
                bias,
                bias.ndim() - 1,
                range.clone(),
            )?)),
            Keep::Inputs { bias: true, .. } => Ok(Some(bias.clone())),
            Keep::Inputs { bias: false, .. } => Ok(None),
        }
    }

    /// A quantized `[.., out, in]` matrix's part; an input cut must keep
    /// whole quantization groups.
    pub fn quantized(&self, q: &QuantizedWeight) -> Result<QuantizedWeight> {
        if let Keep::Inputs { features, .. } = self
            && (features.start % q.group_size != 0 || features.end % q.group_size != 0)
        {
            return Err(Error::Invalid(format!(
                "input features {features:?} of a layer quantized in groups of {} cannot be one \
                 rank's shard: run on fewer ranks",
                q.group_size
            )));
        }
        Ok(QuantizedWeight {
            weight: self.slice(&q.weight, Some((q.bits, 32)))?,
            scales: self.slice(&q.scales, Some((1, q.group_size)))?,
            biases: q
                .biases
                .as_ref()
                .map(|b| self.slice(b, Some((1, q.group_size))))
                .transpose()?,
            group_size: q.group_size,
            bits: q.bits,
            mode: q.mode,
        })
    }

    /// A dense `[.., out, in]` matrix's part.
    pub fn dense(&self, w: &Array) -> Result<Array> {
        self.slice(w, None)
    }

    /// A `[.., out]` bias's part where every rank must add one of the same
    /// shape: zeros on the ranks that do not add it.
    pub fn bias_or_zeros(&self, bias: &Array) -> Result<Array> {
        match self.bias(bias)? {
            Some(b) => Ok(b),
            None => Ok(ops::zeros_like(bias)?),
        }
    }
}

impl Linear {
    /// This layer's part that a rank keeps (see [`Keep`]).
    pub fn part(self, keep: &Keep) -> Result<Linear> {
        Ok(match self {
            Linear::Dense { weight, bias } => Linear::Dense {
                weight: keep.dense(&weight)?,
                bias: bias.map(|b| keep.bias(&b)).transpose()?.flatten(),
            },
            Linear::Quantized { weight, bias } => Linear::Quantized {
                weight: keep.quantized(&weight)?,
                bias: bias.map(|b| keep.bias(&b)).transpose()?.flatten(),
            },
        })
    }
}

/// `y` summed over the tensor-parallel group (a row-parallel projection's
/// partial products), or `y` itself without one.
pub fn sum_over(group: Option<&Group>, y: Array) -> Result<Array> {
    match group {
        Some(group) => group.all_sum(&y),
        None => Ok(y),
    }
}

/// `product(x)` with the rows of a batch (`[B, L, K]`, B > 1) flattened to
/// `[B·L, K]` and the result shaped back: MLX's CUDA matrix products treat
/// each batch element of a `[B, 1, K]` input as its own product and read the
/// weights again for each, while `[B, K]` rows read them once (measured on
/// an H200: 0.43 against 0.064 ms for a 4096×14336 4-bit layer at B = 16).
/// One sequence (`B = 1`) is passed as it is.
pub fn rows_flattened(x: &Array, product: impl FnOnce(&Array) -> Result<Array>) -> Result<Array> {
    let shape = x.shape();
    if shape.len() != 3 || shape[0] == 1 {
        return product(x);
    }
    let (batch, length) = (shape[0], shape[1]);
    let y = product(&x.reshape(&[batch * length, shape[2]])?)?;
    Ok(y.reshape(&[batch, length, y.dim(-1)])?)
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
        rows_flattened(x, |x| match self {
            Embedding::Dense(table) => Ok(ops::matmul(x, table.t())?),
            Embedding::Quantized(q) => crate::qmm_rows::matmul(x, q, true),
        })
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
    /// Query and key-value heads this rank computes (all of them without
    /// tensor parallelism).
    heads: i32,
    kv_heads: i32,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<Array>,
    k_norm: Option<Array>,
}

/// The heads a rank computes under tensor parallelism: whole key-value
/// heads, each with the query heads that share it, and the projections'
/// features that go with them. Without a group: every head, nothing cut.
pub struct AttentionShard {
    pub heads: i32,
    pub kv_heads: i32,
    /// This rank's query heads, as a range of heads (for per-head tensors
    /// such as GPT-OSS's sinks).
    pub q_heads: Range<i32>,
    pub q: Option<Keep>,
    pub kv: Option<Keep>,
    pub o: Option<Keep>,
}

impl AttentionShard {
    pub fn new(
        group: Option<&Group>,
        heads: i32,
        kv_heads: i32,
        head_dim: i32,
    ) -> Result<AttentionShard> {
        let Some(group) = group else {
            return Ok(AttentionShard {
                heads,
                kv_heads,
                q_heads: 0..heads,
                q: None,
                kv: None,
                o: None,
            });
        };
        let per_kv = heads / kv_heads;
        let kv = group.part(kv_heads, "key-value heads")?;
        let q = kv.start * per_kv..kv.end * per_kv;
        let features = |r: &Range<i32>| r.start * head_dim..r.end * head_dim;
        Ok(AttentionShard {
            heads: q.len() as i32,
            kv_heads: kv.len() as i32,
            q: Some(Keep::Outputs(features(&q))),
            kv: Some(Keep::Outputs(features(&kv))),
            o: Some(Keep::Inputs {
                features: features(&q),
                bias: group.rank() == 0,
            }),
            q_heads: q,
        })
    }
}

/// How a rank cuts `inter` hidden units (an MLP's, or each expert's) under
/// tensor parallelism: whole runs of `unit` features (the down projection's
/// quantization group, so that its input cut keeps whole groups), shared as
/// evenly as the group allows; `what` names them in an error. Returns the
/// gate and up projections' cut (their outputs) and the down projection's
/// (its inputs, its bias added by rank 0 alone).
pub fn hidden_units_part(group: &Group, inter: i32, unit: i32, what: &str) -> Result<(Keep, Keep)> {
    let units = group.part(inter / unit, what)?;
    let features = units.start * unit..units.end * unit;
    Ok((
        Keep::Outputs(features.clone()),
        Keep::Inputs {
            features,
            bias: group.rank() == 0,
        },
    ))
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    /// Under tensor parallelism each rank holds a part of the hidden units,
    /// and the down projection's partial products are summed over the group.
    group: Option<&'static Group>,
}

impl Mlp {
    /// The MLP of the scope `w` (a layer's `mlp`): this rank's hidden units
    /// under tensor parallelism (whole quantization groups of the down
    /// projection's input each).
    pub fn load(w: &mut Weights, hidden: i32, inter: i32, bias: bool) -> Result<Self> {
        let group = w.group();
        let (up_keep, down_keep) = match group {
            None => None,
            Some(g) => {
                let unit = w.group_size_of("down_proj").unwrap_or(1);
                Some(hidden_units_part(g, inter, unit, "MLP hidden-unit groups")?)
            }
        }
        .unzip();
        Ok(Mlp {
            gate_proj: w.linear_part("gate_proj", hidden, inter, bias, up_keep.as_ref())?,
            up_proj: w.linear_part("up_proj", hidden, inter, bias, up_keep.as_ref())?,
            down_proj: w.linear_part("down_proj", inter, hidden, bias, down_keep.as_ref())?,
            group,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let [gate, up] = Linear::forward_shared(x, [&self.gate_proj, &self.up_proj])?;
        let y = self.down_proj.forward(&fused::swiglu(&gate, &up)?)?;
        sum_over(self.group, y)
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
    /// The whole model's shape (a tensor-parallel rank computes a part of
    /// its heads and hidden units).
    pub spec: DecoderSpec,
    group: Option<&'static Group>,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: Array,
    lm_head: Option<Linear>,
}

impl Decoder {
    /// Loads the Hugging Face / mlx-community weight names under `model.`.
    pub fn load(spec: DecoderSpec, checkpoint: &mut Checkpoint) -> Result<Self> {
        let quant = QuantConfig::from_config(&checkpoint.config)?;
        let mut w = Weights::new(checkpoint, quant.as_ref());
        let (hidden, head_dim) = (spec.hidden_size, spec.head_dim);
        let q_out = spec.num_heads * head_dim;
        let kv_out = spec.num_kv_heads * head_dim;
        let group = w.group();
        let heads = AttentionShard::new(group, spec.num_heads, spec.num_kv_heads, head_dim)?;
        let mut model = w.pp("model");
        let embed_tokens = model.embedding("embed_tokens", spec.vocab_size, hidden)?;
        let mut layers = Vec::with_capacity(spec.num_layers as usize);
        for i in 0..spec.num_layers {
            let mut layer = model.pp(format_args!("layers.{i}"));
            let mut a = layer.pp("self_attn");
            let bias = spec.attention_bias;
            let attention = Attention {
                heads: heads.heads,
                kv_heads: heads.kv_heads,
                q_proj: a.linear_part("q_proj", hidden, q_out, bias, heads.q.as_ref())?,
                k_proj: a.linear_part("k_proj", hidden, kv_out, bias, heads.kv.as_ref())?,
                v_proj: a.linear_part("v_proj", hidden, kv_out, bias, heads.kv.as_ref())?,
                o_proj: a.linear_part("o_proj", q_out, hidden, false, heads.o.as_ref())?,
                q_norm: spec
                    .qk_norm
                    .then(|| a.take("q_norm.weight", &[head_dim]))
                    .transpose()?,
                k_norm: spec
                    .qk_norm
                    .then(|| a.take("k_norm.weight", &[head_dim]))
                    .transpose()?,
            };
            layers.push(Layer {
                input_norm: layer.take("input_layernorm.weight", &[hidden])?,
                attention,
                post_attention_norm: layer.take("post_attention_layernorm.weight", &[hidden])?,
                mlp: Mlp::load(
                    &mut layer.pp("mlp"),
                    hidden,
                    spec.intermediate_size,
                    spec.mlp_bias,
                )?,
            });
        }
        let norm = model.take("norm.weight", &[hidden])?;
        let lm_head = if spec.tie_word_embeddings {
            None
        } else {
            Some(w.linear("lm_head", hidden, spec.vocab_size, false)?)
        };
        Ok(Decoder {
            spec,
            group,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// `mask` carries the mask from the first layer of a forward pass to the
    /// others: their caches hold the same positions.
    fn attention<C: LayerCache>(
        &self,
        layer: &Layer,
        x: &Array,
        cache: &mut C,
        mask: &mut Option<AttentionMask>,
    ) -> Result<Array> {
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
        let [q, k, v] = Linear::forward_shared(x, [&a.q_proj, &a.k_proj, &a.v_proj])?;
        let q = heads(q, a.heads, a.q_norm.as_ref())?;
        let k = heads(k, a.kv_heads, a.k_norm.as_ref())?;
        let v = heads(v, a.kv_heads, None)?;
        let offset = cache.rope_offset()?;
        let q = s.rope.apply(&q, &offset)?;
        let k = s.rope.apply(&k, &offset)?;
        let scale = (s.head_dim as f32).powf(-0.5);
        let out = if let Some(out) = cache.attend_rows(&q, &k, &v, scale, None, None)? {
            out
        } else if let Some(out) = cache.attend_quantized(&q, &k, &v, scale, mask)? {
            out
        } else {
            let (k, v) = cache.update_and_fetch(&k, &v)?;
            // MLX aligns the causal mask to the last query, so chunks
            // after the first see every cached position.
            if mask.is_none() {
                *mask = Some(cache.mask(seq, None)?);
            }
            let mask = sdpa_mask(mask.as_ref().expect("set above"));
            fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, None)?
        };
        let out =
            out.transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[batch, seq, a.heads * s.head_dim])?;
        sum_over(self.group, a.o_proj.forward(&out)?)
    }

    /// Logits `[B, L, vocab]` for token ids `[B, L]`, extending `caches`.
    pub fn forward<C: LayerCache>(&self, ids: &Array, caches: &mut [C]) -> Result<Array> {
        check_caches(caches.len(), self.layers.len())?;
        let eps = self.spec.rms_norm_eps;
        let mut h = self.embed_tokens.lookup(ids)?;
        let mut mask = None;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = residual(&h, &layer.input_norm, eps, |x| {
                self.attention(layer, x, cache, &mut mask)
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

/// The cache's mask as MLX's attention takes it.
pub fn sdpa_mask(mask: &AttentionMask) -> Option<ScaledDotProductAttentionMask<'_>> {
    match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => Some(ScaledDotProductAttentionMask::Causal),
        AttentionMask::Array(mask) => Some(ScaledDotProductAttentionMask::Array(mask)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array_ext::slice;

    fn max_difference(a: &Array, b: &Array) -> f32 {
        a.subtract(b)
            .unwrap()
            .abs()
            .unwrap()
            .max(None)
            .unwrap()
            .item_exact::<f32>()
    }

    /// Two ranks' parts of a layer give the whole layer's product: split
    /// outputs side by side, split inputs summed (as the group's sum does).
    fn parts_make_the_whole(linear: impl Fn() -> Linear, out_features: i32, in_features: i32) {
        let x = mlx_rs::random::normal::<f32>(&[3, in_features], None, None, None).unwrap();
        let whole = linear().forward(&x).unwrap();
        let half = |n: i32, rank: i32| rank * n / 2..(rank + 1) * n / 2;
        let outputs: Vec<Array> = (0..2)
            .map(|rank| {
                let keep = Keep::Outputs(half(out_features, rank));
                linear().part(&keep).unwrap().forward(&x).unwrap()
            })
            .collect();
        let joined = ops::concatenate(&outputs, -1).unwrap();
        assert!(max_difference(&joined, &whole) < 1e-4);
        let inputs: Vec<Array> = (0..2)
            .map(|rank| {
                let features = half(in_features, rank);
                let part = slice(&x, &[0, features.start], &[3, features.end]).unwrap();
                let keep = Keep::Inputs {
                    features,
                    bias: rank == 0,
                };
                linear().part(&keep).unwrap().forward(&part).unwrap()
            })
            .collect();
        let summed = inputs[0].add(&inputs[1]).unwrap();
        assert!(
            max_difference(&summed, &whole) < 1e-3,
            "{summed:?} {whole:?}"
        );
    }

    #[test]
    fn a_dense_layers_parts_make_the_whole() {
        mlx_rs::random::seed(3).unwrap();
        let weight = mlx_rs::random::normal::<f32>(&[8, 128], None, None, None).unwrap();
        let bias = mlx_rs::random::normal::<f32>(&[8], None, None, None).unwrap();
        parts_make_the_whole(
            || Linear::Dense {
                weight: weight.clone(),
                bias: Some(bias.clone()),
            },
            8,
            128,
        );
    }

    #[test]
    fn a_quantized_layers_parts_make_the_whole() {
        mlx_rs::random::seed(4).unwrap();
        let dense = mlx_rs::random::normal::<f32>(&[8, 256], None, None, None).unwrap();
        let bias = mlx_rs::random::normal::<f32>(&[8], None, None, None).unwrap();
        for (group, bits, mode) in [(64, 4, QuantMode::Affine), (32, 4, QuantMode::Mxfp4)] {
            let q = quant::quantize(&dense, group, bits, mode).unwrap();
            parts_make_the_whole(
                || Linear::Quantized {
                    weight: QuantizedWeight {
                        weight: q.weight.clone(),
                        scales: q.scales.clone(),
                        biases: q.biases.clone(),
                        ..q
                    },
                    bias: Some(bias.clone()),
                },
                8,
                256,
            );
        }
    }

    #[test]
    fn ranks_take_whole_key_value_heads_with_their_query_heads() {
        // SmolLM2: 9 query heads over 3 key-value heads, head size 64, on 2 ranks.
        let shards: Vec<AttentionShard> = (0..2)
            .map(|rank| {
                let group = Group::pretend(rank, 2);
                AttentionShard::new(Some(&group), 9, 3, 64).unwrap()
            })
            .collect();
        assert_eq!((shards[0].heads, shards[0].kv_heads), (6, 2));
        assert_eq!((shards[1].heads, shards[1].kv_heads), (3, 1));
        assert_eq!(shards[1].q_heads, 6..9);
        assert_eq!(shards[1].kv, Some(Keep::Outputs(128..192)));
        assert_eq!(
            shards[1].o,
            Some(Keep::Inputs {
                features: 384..576,
                bias: false
            })
        );
        let group = Group::pretend(0, 4);
        let err = AttentionShard::new(Some(&group), 9, 3, 64)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("3 key-value heads") && err.contains("4 ranks"),
            "{err}"
        );
    }

    #[test]
    fn an_input_part_must_keep_whole_quantization_groups() {
        let dense = Array::zeros::<f32>(&[8, 128]).unwrap();
        let weight = quant::quantize(&dense, 64, 4, QuantMode::Affine).unwrap();
        let keep = Keep::Inputs {
            features: 0..32,
            bias: true,
        };
        let err = keep.quantized(&weight).err().unwrap().to_string();
        assert!(
            err.contains("groups of 64") && err.contains("fewer ranks"),
            "{err}"
        );
    }
}
