//! Qwen3: the Llama decoder with RMSNorm on each head's queries and keys
//! (and an explicit `head_dim`), no projection biases.

use serde_json::Value;

use crate::Result;
use crate::models::blocks::DecoderSpec;

pub fn spec(config: &Value) -> Result<DecoderSpec> {
    let mut spec = super::llama::spec(config)?;
    spec.attention_bias = config
        .get("attention_bias")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    spec.qk_norm = true;
    Ok(spec)
}
