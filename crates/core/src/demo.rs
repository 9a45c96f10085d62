//! Tiny random-weight checkpoints, written in the Hugging Face layout, for
//! demos and tests that must run offline. Their output is meaningless text:
//! they prove the machinery, not a model.

use std::collections::HashMap;
use std::path::Path;

use mlx_rs::Array;

use crate::models::llama::LlamaConfig;
use crate::{Error, Result};

/// A small deterministic generator (SplitMix64), so that the same seed gives
/// the same weights on every machine and MLX version.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, bound: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * bound
    }
}

/// The shape of the demo model: byte-sized vocabulary, two layers, GQA.
pub fn tiny_llama_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 64,
        num_hidden_layers: 2,
        intermediate_size: 128,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        vocab_size: 256,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_word_embeddings: false,
    }
}

/// The tensors of a Llama checkpoint with the given config, as `(name, shape, values)`.
pub fn random_llama_tensors(config: &LlamaConfig, seed: u64) -> Vec<(String, Vec<i32>, Vec<f32>)> {
    let mut rng = SplitMix64::new(seed);
    let hidden = config.hidden_size;
    let q_out = config.num_attention_heads * config.head_dim();
    let kv_out = config.kv_heads() * config.head_dim();
    let inter = config.intermediate_size;
    let mut tensors = Vec::new();
    let mut add = |name: String, shape: Vec<i32>, rng: &mut SplitMix64, norm: bool| {
        let count: i32 = shape.iter().product();
        let fan_in = *shape.last().unwrap() as f32;
        let values = (0..count)
            .map(|_| {
                if norm {
                    1.0 + rng.uniform(0.1)
                } else {
                    rng.uniform(fan_in.powf(-0.5))
                }
            })
            .collect();
        tensors.push((name, shape, values));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![config.vocab_size, hidden],
        &mut rng,
        false,
    );
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        add(
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            &mut rng,
            true,
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q_out, hidden],
            &mut rng,
            false,
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_out, hidden],
            &mut rng,
            false,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_out, hidden],
            &mut rng,
            false,
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, q_out],
            &mut rng,
            false,
        );
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            &mut rng,
            true,
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![inter, hidden],
            &mut rng,
            false,
        );
        add(
            format!("{p}.mlp.up_proj.weight"),
            vec![inter, hidden],
            &mut rng,
            false,
        );
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, inter],
            &mut rng,
            false,
        );
    }
    add("model.norm.weight".into(), vec![hidden], &mut rng, true);
    if !config.tie_word_embeddings {
        add(
            "lm_head.weight".into(),
            vec![config.vocab_size, hidden],
            &mut rng,
            false,
        );
    }
    tensors
}

/// Writes `config.json` and `model.safetensors` of a random-weight Llama into `dir`.
pub fn write_random_llama(dir: &Path, config: &LlamaConfig, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut json = serde_json::to_value(config).expect("LlamaConfig serializes");
    let object = json.as_object_mut().expect("an object");
    object.insert("model_type".into(), "llama".into());
    object.insert(
        "architectures".into(),
        serde_json::json!(["LlamaForCausalLM"]),
    );
    object.insert("torch_dtype".into(), "float32".into());
    object.insert("mlx_harmony_random_weights".into(), true.into());
    let config_path = dir.join("config.json");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )
    .map_err(|source| Error::Io {
        path: config_path,
        source,
    })?;
    let arrays: HashMap<String, Array> = random_llama_tensors(config, seed)
        .into_iter()
        .map(|(name, shape, values)| (name, Array::from_slice(&values, &shape)))
        .collect();
    let weights_path = dir.join("model.safetensors");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    Array::save_safetensors(&arrays, &metadata, &weights_path).map_err(|err| {
        Error::Checkpoint {
            path: weights_path,
            message: format!("cannot write: {err}"),
        }
    })?;
    Ok(())
}
