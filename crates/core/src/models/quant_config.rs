//! How a checkpoint is quantized: the `quantization` (mlx-community) or
//! `quantization_config` block of config.json, with per-module overrides.

use serde_json::Value;

use crate::Result;
use crate::quant::QuantMode;

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
    pub fn for_module(&self, prefix: &str) -> (i32, i32, QuantMode) {
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
