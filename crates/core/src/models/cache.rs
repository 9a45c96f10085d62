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
/// A sliding-window layer's cache keeps only what its window can still see.
#[derive(Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    /// Positions seen so far (the RoPE offset of the next token).
    offset: i32,
    /// For sliding-window attention: the window, and the positions kept.
    window: Option<i32>,
    kept: i32,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache for a layer that attends to the last `window` positions only.
    pub fn sliding(window: i32) -> Self {
        KvCache {
            window: Some(window),
            ..Self::default()
        }
    }

    pub fn window(&self) -> Option<i32> {
        self.window
    }

    /// Appends to a sliding-window cache: the positions a new query could
    /// still see (the last `window - 1`) are kept, older ones dropped.
    fn update_sliding(
        &mut self,
        window: i32,
        keys: &Array,
        values: &Array,
    ) -> Result<(Array, Array)> {
        let keep = self.kept.min(window - 1);
        let trimmed = |old: &Option<Array>| -> Result<Option<Array>> {
            match old {
                Some(a) if keep > 0 => Ok(Some(slice(
                    a,
                    &[0, 0, self.kept - keep, 0],
                    &[a.dim(0), a.dim(1), self.kept, a.dim(3)],
                )?)),
                _ => Ok(None),
            }
        };
        let join = |old: Option<Array>, new: &Array| -> Result<Array> {
            Ok(match old {
                Some(old) => ops::concatenate(&[old, new.clone()], 2)?,
                None => new.clone(),
            })
        };
        let k = join(trimmed(&self.keys)?, keys)?;
        let v = join(trimmed(&self.values)?, values)?;
        self.kept = keep + keys.dim(2);
        self.offset += keys.dim(2);
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        Ok((k, v))
    }

    /// Positions currently held (all of them, except in a sliding window).
    pub fn len(&self) -> i32 {
        if self.window.is_some() {
            self.kept
        } else {
            self.offset
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        if let Some(window) = self.window {
            return self.update_sliding(window, keys, values);
        }
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

    /// Forgets the last `count` positions (for reusing a shared prompt
    /// prefix); returns how many were forgotten. A sliding-window cache can
    /// only forget positions it still holds.
    pub fn trim(&mut self, count: i32) -> i32 {
        let trimmed = count.min(self.len());
        self.offset -= trimmed;
        if self.window.is_some() {
            self.kept -= trimmed;
        }
        trimmed
    }

    /// The arrays to evaluate together with the model's output.
    pub fn state(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }
}
