//! Rotary position embeddings: plain (`rope_theta`), linear scaling, and
//! the long-context variants whose frequencies are computed here, Llama 3's
//! and YaRN, from a config's `rope_scaling`.

use mlx_rs::Array;
use mlx_rs::fast;
use serde_json::Value;

use crate::array_ext::scalar_like;
use crate::models::cache::RopeOffset;
use crate::{Error, Result};

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

    /// Rotates `x` (`[B, heads, L, head_dim]`) for tokens starting at
    /// `offset` (one for all rows, or one per row).
    pub fn apply(&self, x: &Array, offset: &RopeOffset) -> Result<Array> {
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
        Ok(match offset {
            RopeOffset::Same(offset) => fast::rope(
                x,
                self.dims,
                self.traditional,
                base,
                self.scale,
                *offset,
                self.freqs.as_ref(),
            )?,
            RopeOffset::PerRow(offsets) => fast::rope_dynamic(
                x,
                self.dims,
                self.traditional,
                base,
                self.scale,
                offsets,
                self.freqs.as_ref(),
            )?,
        })
    }
}
