//! The Llama forward pass on MLX against an independent reference written in
//! plain Rust (f32 loops, no MLX), on the same random-weight checkpoint.

use std::collections::HashMap;

use mlx_harmony_core::checkpoint::Checkpoint;
use mlx_harmony_core::demo;
use mlx_harmony_core::models::Model;
use mlx_harmony_core::models::llama::LlamaConfig;
use mlx_rs::ops::indexing::argmax_axis;

struct Reference {
    config: LlamaConfig,
    weights: HashMap<String, Vec<f32>>,
}

impl Reference {
    fn w(&self, name: &str) -> &[f32] {
        &self.weights[name]
    }

    /// `out[o] = Σ_i w[o][i] x[i]` for a `[out, in]` weight.
    fn linear(&self, name: &str, x: &[f32]) -> Vec<f32> {
        let w = self.w(name);
        let inputs = x.len();
        (0..w.len() / inputs)
            .map(|o| (0..inputs).map(|i| w[o * inputs + i] * x[i]).sum())
            .collect()
    }

    fn rms_norm(&self, name: &str, x: &[f32]) -> Vec<f32> {
        let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let inv = 1.0 / (mean_square + self.config.rms_norm_eps).sqrt();
        x.iter()
            .zip(self.w(name))
            .map(|(v, g)| v * inv * g)
            .collect()
    }

    /// Non-interleaved RoPE: dimension i pairs with i + d/2.
    fn rope(&self, head: &mut [f32], position: usize) {
        let d = head.len();
        let half = d / 2;
        for i in 0..half {
            let freq = self.config.rope_theta.powf(-(2.0 * i as f32) / d as f32);
            let angle = position as f32 * freq;
            let (sin, cos) = angle.sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = a * sin + b * cos;
        }
    }

    fn forward(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let hidden = c.hidden_size as usize;
        let head_dim = c.head_dim() as usize;
        let heads = c.num_attention_heads as usize;
        let kv_heads = c.kv_heads() as usize;
        let embed = self.w("model.embed_tokens.weight");
        let mut h: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| embed[t as usize * hidden..(t as usize + 1) * hidden].to_vec())
            .collect();
        for layer in 0..c.num_hidden_layers {
            let p = format!("model.layers.{layer}");
            let normed: Vec<Vec<f32>> = h
                .iter()
                .map(|x| self.rms_norm(&format!("{p}.input_layernorm.weight"), x))
                .collect();
            let project = |name: &str, n_heads: usize, rotate: bool| -> Vec<Vec<Vec<f32>>> {
                normed
                    .iter()
                    .enumerate()
                    .map(|(pos, x)| {
                        let flat = self.linear(&format!("{p}.self_attn.{name}.weight"), x);
                        (0..n_heads)
                            .map(|hd| {
                                let mut v = flat[hd * head_dim..(hd + 1) * head_dim].to_vec();
                                if rotate {
                                    self.rope(&mut v, pos);
                                }
                                v
                            })
                            .collect()
                    })
                    .collect()
            };
            let q = project("q_proj", heads, true);
            let k = project("k_proj", kv_heads, true);
            let v = project("v_proj", kv_heads, false);
            let scale = (head_dim as f32).powf(-0.5);
            for pos in 0..tokens.len() {
                let mut attended = vec![0.0f32; heads * head_dim];
                for hd in 0..heads {
                    let kv = hd / (heads / kv_heads);
                    let scores: Vec<f32> = (0..=pos)
                        .map(|j| {
                            scale
                                * q[pos][hd]
                                    .iter()
                                    .zip(&k[j][kv])
                                    .map(|(a, b)| a * b)
                                    .sum::<f32>()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = exps.iter().sum();
                    for (j, e) in exps.iter().enumerate() {
                        for d in 0..head_dim {
                            attended[hd * head_dim + d] += e / total * v[j][kv][d];
                        }
                    }
                }
                let out = self.linear(&format!("{p}.self_attn.o_proj.weight"), &attended);
                for (x, o) in h[pos].iter_mut().zip(out) {
                    *x += o;
                }
            }
            for x in h.iter_mut() {
                let n = self.rms_norm(&format!("{p}.post_attention_layernorm.weight"), x);
                let gate = self.linear(&format!("{p}.mlp.gate_proj.weight"), &n);
                let up = self.linear(&format!("{p}.mlp.up_proj.weight"), &n);
                let act: Vec<f32> = gate
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let down = self.linear(&format!("{p}.mlp.down_proj.weight"), &act);
                for (xi, d) in x.iter_mut().zip(down) {
                    *xi += d;
                }
            }
        }
        h.iter()
            .map(|x| {
                let n = self.rms_norm("model.norm.weight", x);
                self.linear("lm_head.weight", &n)
            })
            .collect()
    }
}

#[test]
fn mlx_llama_matches_plain_rust_reference() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo::tiny_llama_config();
    demo::write_random_llama(dir.path(), &config, 7).unwrap();

    let model = Model::from_checkpoint(Checkpoint::open(dir.path()).unwrap()).unwrap();
    let tokens: Vec<u32> = "The quick brown fox".bytes().map(u32::from).collect();
    let logits = model
        .forward_tokens(&tokens, &mut model.new_caches())
        .unwrap();
    assert_eq!(logits.shape(), &[1, tokens.len() as i32, config.vocab_size]);
    let ours: Vec<f32> = logits.as_slice::<f32>().to_vec();

    let reference = Reference {
        weights: demo::random_llama_tensors(&config, 7)
            .into_iter()
            .map(|(name, _, values)| (name, values))
            .collect(),
        config: config.clone(),
    };
    let expected: Vec<f32> = reference.forward(&tokens).into_iter().flatten().collect();
    assert_eq!(ours.len(), expected.len());
    let scale = expected.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    // On CUDA, MLX computes f32 matrix products in TF32 (about 1e-3 relative).
    let relative = if mlx_harmony_core::device::gpu_available() {
        5e-3
    } else {
        1e-4
    };
    let worst = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= relative * scale.max(1.0),
        "largest logit difference {worst} (logit scale {scale}, relative tolerance {relative})"
    );

    // And the greedy choice at the last position agrees.
    let last = &expected[expected.len() - config.vocab_size as usize..];
    let best = last
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32;
    let ours_best = argmax_axis(
        mlx_harmony_core::models::blocks::last_position(&logits).unwrap(),
        -1,
        None,
    )
    .unwrap();
    assert_eq!(ours_best.item_exact::<u32>(), best);

    // The same logits come out when the prompt goes in chunks through the KV
    // cache (5 + 1 + the rest), and one token at a time.
    for chunks in [vec![5usize, 1, tokens.len() - 6], vec![1; tokens.len()]] {
        let mut caches = model.new_caches();
        let mut start = 0;
        let mut pieces = Vec::new();
        for size in chunks {
            let part = model
                .forward_tokens(&tokens[start..start + size], &mut caches)
                .unwrap();
            pieces.extend_from_slice(part.as_slice::<f32>());
            start += size;
        }
        let worst = pieces
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= relative * scale.max(1.0),
            "chunked prefill differs by {worst}"
        );
    }
    println!(
        "logits [1, {}, {}]: largest difference {worst:.3e} at logit scale {scale:.3}; \
         greedy next token {best} on both",
        tokens.len(),
        config.vocab_size
    );
}

#[test]
fn missing_tensor_and_wrong_shape_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo::tiny_llama_config();
    demo::write_random_llama(dir.path(), &config, 1).unwrap();

    // Claim more layers than the file has.
    config.num_hidden_layers = 3;
    let mut checkpoint = Checkpoint::open(dir.path()).unwrap();
    checkpoint.config = serde_json::to_value(&config).unwrap();
    checkpoint.config["model_type"] = "llama".into();
    let err = Model::from_checkpoint(checkpoint).err().expect("must fail");
    assert!(
        err.to_string().contains("missing tensor \"model.layers.2."),
        "{err}"
    );

    // Claim a wider model than the file has.
    let mut config = demo::tiny_llama_config();
    config.hidden_size = 96;
    let mut checkpoint = Checkpoint::open(dir.path()).unwrap();
    checkpoint.config = serde_json::to_value(&config).unwrap();
    checkpoint.config["model_type"] = "llama".into();
    let err = Model::from_checkpoint(checkpoint).err().expect("must fail");
    assert!(
        err.to_string()
            .contains("has shape [256, 64], expected [256, 96]"),
        "{err}"
    );
}
