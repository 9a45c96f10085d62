//! Key/value caches: the attention keys and values of the tokens seen so far,
//! so that each new token costs one step, not a rerun of the whole prompt.

use mlx_rs::Array;
use mlx_rs::ops;

use crate::Result;
use crate::array_ext::{slice, slice_update};

/// How many positions the cache grows by at once: growing per token would
/// copy the whole cache every step.
pub const GROWTH_STEP: i32 = 256;

/// The cache of one attention layer, `[batch, kv_heads, positions, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    /// Positions filled.
    offset: i32,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions already in the cache (the RoPE offset of the next token).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Capacity allocated so far.
    pub fn capacity(&self) -> i32 {
        self.keys.as_ref().map_or(0, |k| k.dim(2))
    }

    /// Appends `keys`/`values` (`[B, H, L, D]`) and returns all cached
    /// positions including them.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let new = keys.dim(2);
        let end = self.offset + new;
        if end > self.capacity() {
            let grow = ((end - self.capacity() + GROWTH_STEP - 1) / GROWTH_STEP) * GROWTH_STEP;
            let extend = |existing: &Option<Array>, like: &Array| -> Result<Array> {
                let shape = [like.dim(0), like.dim(1), grow, like.dim(3)];
                let zeros = ops::zeros::<f32>(&shape)?.as_dtype(like.dtype())?;
                Ok(match existing {
                    Some(old) => {
                        let used = slice(
                            old,
                            &[0, 0, 0, 0],
                            &[old.dim(0), old.dim(1), self.offset, old.dim(3)],
                        )?;
                        ops::concatenate(&[used, zeros], 2)?
                    }
                    None => zeros,
                })
            };
            self.keys = Some(extend(&self.keys, keys)?);
            self.values = Some(extend(&self.values, values)?);
        }
        let (k, v) = (self.keys.as_ref().unwrap(), self.values.as_ref().unwrap());
        let starts = [0, 0, self.offset, 0];
        let k = slice_update(k, keys, &starts, &[k.dim(0), k.dim(1), end, k.dim(3)])?;
        let v = slice_update(v, values, &starts, &[v.dim(0), v.dim(1), end, v.dim(3)])?;
        self.offset = end;
        let fetched_k = slice(&k, &[0, 0, 0, 0], &[k.dim(0), k.dim(1), end, k.dim(3)])?;
        let fetched_v = slice(&v, &[0, 0, 0, 0], &[v.dim(0), v.dim(1), end, v.dim(3)])?;
        self.keys = Some(k);
        self.values = Some(v);
        Ok((fetched_k, fetched_v))
    }

    /// Forgets the last `count` positions (for reusing a shared prompt prefix).
    pub fn trim(&mut self, count: i32) -> i32 {
        let trimmed = count.min(self.offset);
        self.offset -= trimmed;
        trimmed
    }

    /// The arrays to evaluate together with the model's output.
    pub fn state(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }
}
