//! GGUF files of the Llama family, as llama.cpp users have them.
//!
//! MLX's own GGUF reader loads the tensors: Q4_0, Q4_1 and Q8_0 arrive as MLX
//! affine group-32 weights (packed values, scales, biases) and stay
//! quantized; other types arrive dequantized. This module renames them to
//! the Hugging Face layout the model code expects, writes the matching
//! config, and rebuilds the tokenizer and chat template from the metadata.
//!
//! llama.cpp's converter reorders the rows of the query and key projections
//! so that its RoPE can rotate adjacent pairs; the Llama model here therefore
//! runs GGUF weights with "traditional" (adjacent-pair) RoPE, which is the
//! same computation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlx_rs::Array;
use mlx_rs::io::{GgufFile, GgufMetadataValue};
use serde_json::{Value, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::checkpoint::Checkpoint;
use crate::{Error, Result};

/// What a GGUF file holds besides the tensors.
pub struct GgufExtras {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub add_bos_token: bool,
}

fn gguf_error(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_owned(),
        message: format!("GGUF: {err}"),
    }
}

struct Meta<'a> {
    file: &'a GgufFile,
    path: &'a Path,
}

impl Meta<'_> {
    fn value(&self, key: &str) -> Result<Option<GgufMetadataValue>> {
        self.file
            .get_metadata(key)
            .map_err(|e| gguf_error(self.path, e))
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        Ok(match self.value(key)? {
            // Read through f32: exact for every count, id and size a model
            // has (below 2^24), and float64 is not available on every device.
            Some(GgufMetadataValue::Array(a)) if a.size() == 1 => Some(
                a.as_dtype(mlx_rs::Dtype::Float32)
                    .map_err(|e| gguf_error(self.path, e))?
                    .item_exact::<f32>() as f64,
            ),
            _ => None,
        })
    }

    fn required(&self, key: &str) -> Result<f64> {
        self.number(key)?
            .ok_or_else(|| gguf_error(self.path, format!("metadata {key:?} is missing")))
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        Ok(match self.value(key)? {
            Some(GgufMetadataValue::String(s)) => Some(s),
            _ => None,
        })
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        Ok(match self.value(key)? {
            Some(GgufMetadataValue::Strings(s)) => s,
            _ => Vec::new(),
        })
    }

    fn ints(&self, key: &str) -> Result<Vec<i64>> {
        Ok(match self.value(key)? {
            Some(GgufMetadataValue::Array(a)) => a
                .as_dtype(mlx_rs::Dtype::Int64)
                .map(|a| a.as_slice::<i64>().to_vec())
                .unwrap_or_default(),
            _ => Vec::new(),
        })
    }
}

/// GGUF tensor name → Hugging Face name (`None` for names this module does not know).
fn hf_name(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let module = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let part = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{part}")
        }
    };
    Some(format!("{module}.{suffix}"))
}

/// The path of the `.gguf` file a user named: the file, or the only one in a folder.
pub fn find_gguf(path: &Path) -> Option<PathBuf> {
    if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        return Some(path.to_owned());
    }
    if path.is_dir() && !path.join("config.json").is_file() {
        let found: Vec<PathBuf> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        if found.len() == 1 {
            return found.into_iter().next();
        }
    }
    None
}

/// Opens a Llama-family GGUF file as a checkpoint plus its tokenizer.
pub fn open(path: &Path) -> Result<(Checkpoint, GgufExtras)> {
    let file = GgufFile::load(path).map_err(|e| gguf_error(path, e))?;
    let meta = Meta { file: &file, path };
    let arch = meta.string("general.architecture")?.unwrap_or_default();
    if arch != "llama" {
        return Err(gguf_error(
            path,
            format!(
                "architecture {arch:?} is not supported for GGUF; supported: \"llama\" (Llama, Mistral, SmolLM)"
            ),
        ));
    }
    let raw = file.arrays().map_err(|e| gguf_error(path, e))?;
    let mut tensors: HashMap<String, Array> = HashMap::new();
    for (name, array) in raw {
        let renamed = hf_name(&name)
            .ok_or_else(|| gguf_error(path, format!("unexpected tensor {name:?}")))?;
        // MLX keeps GGUF block scales in float16, which would make every
        // activation float16; widen them so the model computes in float32,
        // like llama.cpp (and faster on CPUs without native f16 math).
        let array = if renamed.ends_with(".scales") || renamed.ends_with(".biases") {
            array
                .as_dtype(mlx_rs::Dtype::Float32)
                .map_err(|e| gguf_error(path, e))?
        } else {
            array
        };
        tensors.insert(renamed, array);
    }

    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let hidden = meta.required("llama.embedding_length")? as i64;
    let heads = meta.required("llama.attention.head_count")? as i64;
    let head_dim = meta
        .number("llama.rope.dimension_count")?
        .map_or(hidden / heads, |d| d as i64);
    let vocab = meta
        .number("llama.vocab_size")?
        .map_or(tokens.len() as i64, |v| v as i64);
    let tied = !tensors.contains_key("lm_head.weight");

    // Quantized modules: group 32 (all GGUF block types MLX keeps packed),
    // bits from each module's packed width.
    let mut quantization = serde_json::Map::new();
    quantization.insert("group_size".into(), 32.into());
    quantization.insert("bits".into(), 4.into());
    for (name, scales) in tensors.iter().filter(|(n, _)| n.ends_with(".scales")) {
        let module = name.trim_end_matches(".scales");
        if let Some(weight) = tensors.get(&format!("{module}.weight")) {
            let in_features = scales.dim(-1) * 32;
            let bits = weight.dim(-1) * 32 / in_features;
            quantization.insert(module.to_string(), json!({"group_size": 32, "bits": bits}));
        }
    }
    let mut config = json!({
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": meta.required("llama.block_count")? as i64,
        "intermediate_size": meta.required("llama.feed_forward_length")? as i64,
        "num_attention_heads": heads,
        "num_key_value_heads": meta.number("llama.attention.head_count_kv")?.map_or(heads, |v| v as i64),
        "head_dim": head_dim,
        "vocab_size": vocab,
        "rms_norm_eps": meta.number("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        "rope_theta": meta.number("llama.rope.freq_base")?.unwrap_or(10_000.0),
        "rope_traditional": true,
        "tie_word_embeddings": tied,
        "max_position_embeddings": meta.number("llama.context_length")?.unwrap_or(4096.0) as i64,
    });
    if quantization.len() > 2 {
        config["quantization"] = Value::Object(quantization);
    }

    let extras = GgufExtras {
        tokenizer: build_tokenizer(&meta, &tokens)?,
        chat_template: meta.string("tokenizer.chat_template")?,
        bos_token_id: meta
            .number("tokenizer.ggml.bos_token_id")?
            .map(|v| v as u32),
        eos_token_ids: meta
            .number("tokenizer.ggml.eos_token_id")?
            .map(|v| vec![v as u32])
            .unwrap_or_default(),
        add_bos_token: matches!(meta.value("tokenizer.ggml.add_bos_token")?, Some(GgufMetadataValue::Array(a)) if a.as_dtype(mlx_rs::Dtype::Int32).map(|a| a.item_exact::<i32>() != 0).unwrap_or(false)),
    };
    Ok((
        Checkpoint {
            dir: path.to_owned(),
            config,
            tensors,
        },
        extras,
    ))
}

/// The pre-tokenizer regexes llama.cpp names in `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Option<PreTokenizerWrapper> {
    let byte_level =
        |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    let split = |regex: &str| {
        PreTokenizerWrapper::Split(
            Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .expect("valid regex"),
        )
    };
    Some(match pre {
        // GPT-2's own regex inside the byte-level step.
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        // Digits one by one, then GPT-2's regex (StarCoder, SmolLM, ...).
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]))
        }
        // Llama 3.
        "llama-bpe" | "llama3" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ),
            byte_level(false),
        ])),
        _ => return None,
    })
}

fn build_tokenizer(meta: &Meta, tokens: &[String]) -> Result<Tokenizer> {
    let model = meta.string("tokenizer.ggml.model")?.unwrap_or_default();
    if model != "gpt2" {
        return Err(gguf_error(
            meta.path,
            format!(
                "tokenizer model {model:?} is not supported for GGUF; supported: \"gpt2\" (byte-level BPE)"
            ),
        ));
    }
    let pre = meta
        .string("tokenizer.ggml.pre")?
        .unwrap_or_else(|| "default".into());
    let pre_tokenizer = pre_tokenizer(&pre).ok_or_else(|| {
        gguf_error(meta.path, format!("pre-tokenizer {pre:?} is not supported; supported: default, gpt2, smollm, starcoder, llama-bpe"))
    })?;
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = meta
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .build()
        .map_err(|e| gguf_error(meta.path, format!("cannot build the BPE tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    // Control tokens (type 3) are special; user-defined ones (type 4) are
    // added tokens that still show in text.
    let types = meta.ints("tokenizer.ggml.token_type")?;
    let added: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(id, t)| AddedToken::from(tokens[id].clone(), *t == 3))
        .collect();
    tokenizer.add_special_tokens(
        &added
            .iter()
            .filter(|t| t.special)
            .cloned()
            .collect::<Vec<_>>(),
    );
    tokenizer.add_tokens(&added.into_iter().filter(|t| !t.special).collect::<Vec<_>>());
    Ok(tokenizer)
}
