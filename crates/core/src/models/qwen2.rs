//! Qwen2 / Qwen2.5: the Llama decoder with biases on the q, k and v projections.

use serde_json::Value;

use crate::Result;
use crate::models::blocks::DecoderSpec;

pub fn spec(config: &Value) -> Result<DecoderSpec> {
    let mut spec = super::llama::spec(config)?;
    spec.attention_bias = true;
    Ok(spec)
}
