//! Key/value caches: the attention keys and values of the tokens seen so far,
//! so that each new token costs one step, not a rerun of the whole prompt.
//!
//! [`KvCache`] holds one sequence (or rows that all sit at the same
//! position); [`BatchKvCache`](super::batch_cache::BatchKvCache) holds the
//! rows of a continuous batch, each at its own position. Attention asks
//! either through [`LayerCache`]: where the new tokens are (their RoPE
//! offset), and which keys they may see.

use mlx_rs::Array;
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::ops;

use crate::array_ext::{slice, slice_update};
use crate::{Error, Result};

/// How many positions the cache grows by at once: growing per token would
/// copy the whole cache every step.
pub const GROWTH_STEP: i32 = 256;

/// The cache of one attention layer, `[batch, kv_heads, positions, head_dim]`.
/// A sliding-window layer's cache keeps only what its window can still see.
/// Cloning is cheap (MLX arrays are shared, immutable values): a clone is a
/// snapshot the original's later updates do not change.
#[derive(Clone, Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    /// Positions seen so far (the RoPE offset of the next token).
    offset: i32,
    /// For sliding-window attention: the window, and the positions kept.
    window: Option<i32>,
    kept: i32,
    /// Set once a sliding-window cache holds a full window and is fed one
    /// token at a time: the arrays are then a ring of `window` slots, the
    /// position `p` in slot `(p - ring_base) mod window`, and each step
    /// writes one slot in place instead of copying the window.
    ring_base: Option<i32>,
    /// For a bounded cache (`--max-kv-size`): see [`KvCache::rotating`].
    rotation: Option<Rotation>,
    /// For a quantized cache (`--kv-bits`): see [`KvCache::quantized`].
    quantized: Option<QuantizedStore>,
    /// A cache to be quantized once it holds `start` positions.
    quantize_later: Option<KvQuantization>,
    /// Positions the next growth makes room for at least (a prompt about
    /// to run: one allocation instead of one per [`GROWTH_STEP`]).
    reserved: i32,
}

/// `--kv-bits` / `--kv-group-size`: how a quantized cache packs its keys and
/// values (MLX's affine quantization along the head dimension, as mlx-lm's
/// `QuantizedKVCache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvQuantization {
    /// 4 or 8.
    pub bits: i32,
    /// Values per scale and bias: 32, 64 or 128, dividing the head size.
    pub group_size: i32,
    /// Positions kept at the model's precision before the cache is
    /// quantized (mlx-lm's `--quantized-kv-start`): a short conversation
    /// never loses precision, a long one is quantized once it is this long.
    pub start: i32,
}

impl KvQuantization {
    /// Checked settings: bits 4 or 8 and a group size of 32, 64 or 128.
    pub fn new(bits: i32, group_size: i32) -> Result<Self> {
        if ![4, 8].contains(&bits) {
            return Err(Error::Invalid(format!(
                "the KV cache is quantized to 4 or 8 bits, not {bits}"
            )));
        }
        if ![32, 64, 128].contains(&group_size) {
            return Err(Error::Invalid(format!(
                "the KV cache's quantization group size is 32, 64 or 128, not {group_size}"
            )));
        }
        Ok(KvQuantization {
            bits,
            group_size,
            start: 0,
        })
    }

    /// The same, quantizing only once the cache holds `start` positions.
    pub fn starting_at(self, start: i32) -> Self {
        KvQuantization {
            start: start.max(0),
            ..self
        }
    }
}

/// A quantized cache's arrays: keys and values each as the packed values,
/// scales and biases (`[B, H, capacity, D * bits / 32]` and
/// `[B, H, capacity, D / group_size]`).
#[derive(Clone)]
struct QuantizedStore {
    settings: KvQuantization,
    keys: Option<[Array; 3]>,
    values: Option<[Array; 3]>,
}

/// mlx-lm's `RotatingKVCache`: the first `keep` positions stay, and the
/// newest fill the rest of `max_size` slots, a token at a time in a ring
/// that starts after the kept ones.
#[derive(Clone, Copy, Debug)]
struct Rotation {
    max_size: i32,
    keep: i32,
    /// The next slot written (mlx-lm's `_idx`).
    next: i32,
}

/// The positions a bounded cache keeps from the start, as mlx-lm's
/// `make_prompt_cache(model, max_kv_size)` does.
pub const KEEP_FIRST: i32 = 4;

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache that holds at most `max_size` positions: the first
    /// [`KEEP_FIRST`] and the newest (mlx-lm's `RotatingKVCache`, with the
    /// same order of keys and the same masks, so that outputs agree).
    pub fn rotating(max_size: i32) -> Self {
        KvCache {
            rotation: Some(Rotation {
                max_size,
                keep: KEEP_FIRST.min(max_size - 1).max(0),
                next: 0,
            }),
            ..Self::default()
        }
    }

    /// A cache that keeps every position with its keys and values quantized
    /// as `settings` say (about a quarter of the memory at 4 bits, next to
    /// 16-bit values); attention then runs on the quantized values
    /// ([`LayerCache::attend_quantized`]).
    /// With `settings.start > 0` the cache keeps the model's precision
    /// until it holds that many positions, and is quantized then.
    pub fn quantized(settings: KvQuantization) -> Self {
        if settings.start > 0 {
            return KvCache {
                quantize_later: Some(settings),
                ..Self::default()
            };
        }
        KvCache {
            quantized: Some(QuantizedStore {
                settings,
                keys: None,
                values: None,
            }),
            ..Self::default()
        }
    }

    /// Quantizes what a cache made by [`KvCache::quantized`] with a start
    /// holds, once it holds `start` positions; from then on it is read as a
    /// quantized cache.
    fn quantize_if_due(&mut self) -> Result<()> {
        let Some(settings) = self.quantize_later else {
            return Ok(());
        };
        if self.offset < settings.start {
            return Ok(());
        }
        self.quantize_later = None;
        let mut store = QuantizedStore {
            settings,
            keys: None,
            values: None,
        };
        if let Some((keys, values)) = self.positions()? {
            store.keys = Some(pack(&keys, settings)?);
            store.values = Some(pack(&values, settings)?);
        }
        self.keys = None;
        self.values = None;
        self.quantized = Some(store);
        Ok(())
    }

    /// The settings of a quantized cache (once it is quantized).
    pub fn quantization(&self) -> Option<KvQuantization> {
        self.quantized.as_ref().map(|q| q.settings)
    }

    /// Quantizes and appends `keys`/`values` (`[B, H, L, D]`); returns the
    /// packed keys and values of every position held.
    fn update_quantized(
        &mut self,
        keys: &Array,
        values: &Array,
    ) -> Result<([Array; 3], [Array; 3])> {
        let store = self.quantized.as_mut().expect("a quantized cache");
        let group_size = store.settings.group_size;
        if keys.dim(3) % group_size != 0 || values.dim(3) % group_size != 0 {
            return Err(Error::Invalid(format!(
                "the KV cache's quantization group size {group_size} does not divide the \
                 model's head size {}: choose one that does",
                keys.dim(3)
            )));
        }
        let (start, end) = (self.offset, self.offset + keys.dim(2));
        let (new_keys, new_values) = (pack(keys, store.settings)?, pack(values, store.settings)?);
        let room = self.reserved;
        let keys = append_packed(&mut store.keys, &new_keys, start, end, room)?;
        let values = append_packed(&mut store.values, &new_values, start, end, room)?;
        self.offset = end;
        Ok((keys, values))
    }

    /// The bound of a rotating cache.
    pub fn max_size(&self) -> Option<i32> {
        self.rotation.map(|r| r.max_size)
    }

    /// `v` without the positions `keep..keep + count` (the oldest after the
    /// kept ones), then `append`.
    fn drop_oldest(v: &Array, keep: i32, count: i32, append: Option<&Array>) -> Result<Array> {
        let (b, h, len, d) = (v.dim(0), v.dim(1), v.dim(2), v.dim(3));
        let mut parts = Vec::new();
        if count > 0 {
            if keep > 0 {
                parts.push(slice(v, &[0, 0, 0, 0], &[b, h, keep, d])?);
            }
            parts.push(slice(v, &[0, 0, keep + count, 0], &[b, h, len, d])?);
        } else {
            parts.push(v.clone());
        }
        parts.extend(append.cloned());
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            ops::concatenate(&parts, 2)?
        })
    }

    /// A rotating cache's slots in temporal order: the kept positions, then
    /// oldest to newest.
    fn temporal(&self, v: &Array, r: Rotation) -> Result<Array> {
        let (b, h, len, d) = (v.dim(0), v.dim(1), v.dim(2), v.dim(3));
        if r.next == len {
            Ok(v.clone())
        } else if r.next < self.offset {
            let kept = slice(v, &[0, 0, 0, 0], &[b, h, r.keep, d])?;
            let older = slice(v, &[0, 0, r.next, 0], &[b, h, len, d])?;
            let newer = slice(v, &[0, 0, r.keep, 0], &[b, h, r.next, d])?;
            Ok(ops::concatenate(&[kept, older, newer], 2)?)
        } else {
            slice(v, &[0, 0, 0, 0], &[b, h, r.next, d])
        }
    }

    fn update_rotating(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let mut r = self.rotation.expect("a rotating cache");
        let new = keys.dim(2);
        if new > 1 {
            // A chunk: back to temporal order, the oldest dropped so that
            // each new token still sees `max_size - 1` before it.
            let (k, v) = match (&self.keys, &self.values) {
                (Some(k), Some(v)) => {
                    let (k, v) = (self.temporal(k, r)?, self.temporal(v, r)?);
                    let excess = k.dim(2) - r.max_size + 1;
                    (
                        Self::drop_oldest(&k, r.keep, excess, Some(keys))?,
                        Self::drop_oldest(&v, r.keep, excess, Some(values))?,
                    )
                }
                _ => (keys.clone(), values.clone()),
            };
            self.offset += new;
            r.next = k.dim(2);
            self.rotation = Some(r);
            self.keys = Some(k.clone());
            self.values = Some(v.clone());
            return Ok((k, v));
        }
        let previous = self.offset;
        let capacity = self.capacity();
        if self.keys.is_none() || (previous >= capacity && capacity < r.max_size) {
            let grow = GROWTH_STEP.min(r.max_size - previous);
            let extend = |existing: &Option<Array>, like: &Array| -> Result<Array> {
                let zeros =
                    ops::zeros_dtype(&[like.dim(0), like.dim(1), grow, like.dim(3)], like.dtype())?;
                Ok(match existing {
                    Some(old) => ops::concatenate(&[old.clone(), zeros], 2)?,
                    None => zeros,
                })
            };
            self.keys = Some(extend(&self.keys, keys)?);
            self.values = Some(extend(&self.values, values)?);
            r.next = previous;
        }
        let excess = self.capacity() - r.max_size;
        if excess > 0 {
            let k = Self::drop_oldest(self.keys.as_ref().expect("set"), r.keep, excess, None)?;
            let v = Self::drop_oldest(self.values.as_ref().expect("set"), r.keep, excess, None)?;
            self.keys = Some(k);
            self.values = Some(v);
            r.next = r.max_size;
        }
        if r.next == r.max_size {
            r.next = r.keep;
        }
        let write = |buffer: &Array, update: &Array| {
            let mut ends = buffer.shape().to_vec();
            ends[2] = r.next + 1;
            slice_update(buffer, update, &[0, 0, r.next, 0], &ends)
        };
        let k = write(self.keys.as_ref().expect("set"), keys)?;
        let v = write(self.values.as_ref().expect("set"), values)?;
        self.offset += 1;
        r.next += 1;
        self.rotation = Some(r);
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        if self.offset < k.dim(2) {
            let upto = |a: &Array| {
                slice(
                    a,
                    &[0, 0, 0, 0],
                    &[a.dim(0), a.dim(1), self.offset, a.dim(3)],
                )
            };
            return Ok((upto(&k)?, upto(&v)?));
        }
        Ok((k, v))
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
    ///
    /// Once the window is full, single tokens go into a ring (the order of
    /// keys does not matter to attention without a mask, and one query needs
    /// none: every key in the window is visible to it); a chunk of several
    /// tokens, which needs a mask over ordered keys, turns the ring back into
    /// order first.
    fn update_sliding(
        &mut self,
        window: i32,
        keys: &Array,
        values: &Array,
    ) -> Result<(Array, Array)> {
        let new = keys.dim(2);
        if new == 1 {
            if let Some(base) = self.ring_base {
                let slot = (self.offset - base).rem_euclid(window);
                let write = |ring: &Array, update: &Array| {
                    let mut ends = ring.shape().to_vec();
                    ends[2] = slot + 1;
                    slice_update(ring, update, &[0, 0, slot, 0], &ends)
                };
                let k = write(self.keys.as_ref().expect("ring is full"), keys)?;
                let v = write(self.values.as_ref().expect("ring is full"), values)?;
                self.offset += 1;
                self.keys = Some(k.clone());
                self.values = Some(v.clone());
                return Ok((k, v));
            }
        } else if let Some(base) = self.ring_base.take() {
            // Back to temporal order: the oldest position is in the slot the
            // next token would have been written to.
            let oldest = (self.offset - base).rem_euclid(window);
            let unroll = |ring: &Array| -> Result<Array> {
                let shape = ring.shape();
                let (b, h, d) = (shape[0], shape[1], shape[3]);
                let tail = slice(ring, &[0, 0, oldest, 0], &[b, h, window, d])?;
                let head = slice(ring, &[0, 0, 0, 0], &[b, h, oldest, d])?;
                Ok(ops::concatenate(&[tail, head], 2)?)
            };
            self.keys = Some(unroll(self.keys.as_ref().expect("ring is full"))?);
            self.values = Some(unroll(self.values.as_ref().expect("ring is full"))?);
        }
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
        self.kept = keep + new;
        self.offset += new;
        if new == 1 && self.kept == window {
            // The window is full: from here on single tokens overwrite the
            // oldest slot. Position `offset - window` sits in slot 0.
            self.ring_base = Some(self.offset - window);
        }
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        Ok((k, v))
    }

    /// Positions currently held (all of them, except in a sliding window).
    pub fn len(&self) -> i32 {
        if let Some(r) = self.rotation {
            self.offset.min(r.max_size)
        } else if self.window.is_some() {
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

    /// Makes the next growth room for `positions` in all (a prompt about to
    /// run), so that a long prompt allocates its cache once rather than a
    /// [`GROWTH_STEP`] at a time (each growth copies what is held). Caches
    /// that rotate or slide keep their own sizes.
    pub fn reserve(&mut self, positions: i32) {
        if self.rotation.is_none() && self.window.is_none() {
            self.reserved = positions;
        }
    }

    /// Capacity allocated so far.
    pub fn capacity(&self) -> i32 {
        match &self.quantized {
            Some(q) => q.keys.as_ref().map_or(0, |k| k[0].dim(2)),
            None => self.keys.as_ref().map_or(0, |k| k.dim(2)),
        }
    }

    /// Appends `keys`/`values` (`[B, H, L, D]`) and returns all cached
    /// positions including them.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        if self.quantized.is_some() {
            return Err(Error::Invalid(
                "a quantized KV cache is read through attend_quantized; this model's attention \
                 does not support --kv-bits"
                    .into(),
            ));
        }
        if self.rotation.is_some() {
            return self.update_rotating(keys, values);
        }
        if let Some(window) = self.window {
            return self.update_sliding(window, keys, values);
        }
        let end = self.offset + keys.dim(2);
        let room = self.reserved;
        let (k, fetched_k) = append_columns(self.keys.as_ref(), keys, self.offset, end, room)?;
        let (v, fetched_v) = append_columns(self.values.as_ref(), values, self.offset, end, room)?;
        self.offset = end;
        self.keys = Some(k);
        self.values = Some(v);
        Ok((fetched_k, fetched_v))
    }

    /// Forgets the last `count` positions (for reusing a shared prompt
    /// prefix); returns how many were forgotten. A sliding-window cache can
    /// only forget positions it still holds.
    pub fn trim(&mut self, count: i32) -> i32 {
        if self.ring_base.is_some() {
            // A ring's slots no longer say which positions are newest.
            return 0;
        }
        if let Some(r) = &mut self.rotation {
            // Only before anything was dropped (as mlx-lm).
            if self.offset >= r.max_size {
                return 0;
            }
            let trimmed = count.min(self.offset);
            self.offset -= trimmed;
            r.next -= trimmed;
            return trimmed;
        }
        let trimmed = count.min(self.len());
        self.offset -= trimmed;
        if self.window.is_some() {
            self.kept -= trimmed;
        }
        trimmed
    }

    /// A cache that keeps every position, holding `keys`/`values`
    /// (`[1, H, positions, D]`) as positions `0..positions`.
    pub fn from_arrays(keys: Array, values: Array) -> Self {
        KvCache {
            offset: keys.dim(2),
            keys: Some(keys),
            values: Some(values),
            ..Self::default()
        }
    }

    /// Bytes held by the arrays.
    pub fn nbytes(&self) -> usize {
        self.state().iter().map(|a| a.nbytes()).sum()
    }

    /// A quantized cache's packed keys and values (each its values, scales
    /// and biases) of positions `0..offset`; `None` for any other cache.
    pub fn packed_in_order(&self) -> Result<Option<([Array; 3], [Array; 3])>> {
        let Some(QuantizedStore {
            keys: Some(k),
            values: Some(v),
            ..
        }) = &self.quantized
        else {
            return Ok(None);
        };
        let upto = |parts: &[Array; 3]| -> Result<[Array; 3]> {
            let part = |a: &Array| {
                slice(
                    a,
                    &[0, 0, 0, 0],
                    &[a.dim(0), a.dim(1), self.offset, a.dim(3)],
                )
            };
            Ok([part(&parts[0])?, part(&parts[1])?, part(&parts[2])?])
        };
        Ok(Some((upto(k)?, upto(v)?)))
    }

    /// The keys and values it holds in the order of their positions: every
    /// position, or a rotating cache's first and newest (`None` for a
    /// sliding window or an empty cache). Positions `offset - held` are gone.
    pub fn held_in_order(&self) -> Result<Option<(Array, Array)>> {
        match (self.rotation, &self.keys, &self.values) {
            (Some(r), Some(k), Some(v)) => Ok(Some((self.temporal(k, r)?, self.temporal(v, r)?))),
            _ => self.positions(),
        }
    }

    /// The keys and values of positions `0..offset`, for a cache that keeps
    /// every position (`None` for a sliding window or an empty cache).
    pub fn positions(&self) -> Result<Option<(Array, Array)>> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Ok(None);
        };
        if self.window.is_some() || self.rotation.is_some() {
            return Ok(None);
        }
        let upto = |a: &Array| {
            slice(
                a,
                &[0, 0, 0, 0],
                &[a.dim(0), a.dim(1), self.offset, a.dim(3)],
            )
        };
        Ok(Some((upto(k)?, upto(v)?)))
    }
}

/// Writes `update` (`[B, H, L, D]`) into `buffer`'s columns `start..end`;
/// returns the new buffer and its columns `0..end` (what attention runs over).
pub(super) fn write_columns(
    buffer: &Array,
    update: &Array,
    start: i32,
    end: i32,
) -> Result<(Array, Array)> {
    let shape = |columns: i32| [buffer.dim(0), buffer.dim(1), columns, buffer.dim(3)];
    let written = slice_update(buffer, update, &[0, 0, start, 0], &shape(end))?;
    let used = slice(&written, &[0, 0, 0, 0], &shape(end))?;
    Ok((written, used))
}

/// [`write_columns`] into `buffer` grown first, when it has fewer than `end`
/// columns (`None`: none yet), by whole [`GROWTH_STEP`]s, its first `start`
/// columns kept: growing per token would copy the whole cache every step.
pub(super) fn append_columns(
    buffer: Option<&Array>,
    update: &Array,
    start: i32,
    end: i32,
    reserved: i32,
) -> Result<(Array, Array)> {
    let capacity = buffer.map_or(0, |b| b.dim(2));
    let grown;
    let buffer = match buffer {
        Some(old) if end <= capacity => old,
        _ => {
            // The new buffer keeps the first `start` columns (what is held:
            // fewer than the capacity after a trim or in a partly filled
            // buffer) and adds whole steps after them up to `end` at least.
            let grow = ((end - start + GROWTH_STEP - 1) / GROWTH_STEP) * GROWTH_STEP;
            let grow = grow.max(reserved - start);
            let shape = [update.dim(0), update.dim(1), grow, update.dim(3)];
            let zeros = ops::zeros_dtype(&shape, update.dtype())?;
            grown = match buffer {
                Some(old) => {
                    let used = slice(
                        old,
                        &[0, 0, 0, 0],
                        &[old.dim(0), old.dim(1), start, old.dim(3)],
                    )?;
                    ops::concatenate(&[used, zeros], 2)?
                }
                None => zeros,
            };
            &grown
        }
    };
    write_columns(buffer, update, start, end)
}

/// `a` quantized as `settings` say: packed values, scales, biases.
pub(super) fn pack(a: &Array, settings: KvQuantization) -> Result<[Array; 3]> {
    let (q, scales, biases) = ops::quantize(a, settings.group_size, settings.bits)?;
    Ok([q, scales, biases])
}

/// [`append_columns`] for each of a packed array's three parts; returns
/// their columns `0..end`.
fn append_packed(
    stored: &mut Option<[Array; 3]>,
    update: &[Array; 3],
    start: i32,
    end: i32,
    reserved: i32,
) -> Result<[Array; 3]> {
    let part = |i: usize| {
        append_columns(
            stored.as_ref().map(|s| &s[i]),
            &update[i],
            start,
            end,
            reserved,
        )
    };
    let ((q, q_used), (s, s_used), (b, b_used)) = (part(0)?, part(1)?, part(2)?);
    *stored = Some([q, s, b]);
    Ok([q_used, s_used, b_used])
}

/// Where the tokens being added sit, for RoPE: one offset for every row, or
/// one per row (`[B]`, int32) when the rows of a batch are at different
/// positions.
pub enum RopeOffset {
    Same(i32),
    PerRow(Array),
}

/// Which cached keys the new queries may see.
pub enum AttentionMask {
    /// All of them (one query, nothing to hide).
    None,
    /// Causal over a chunk of several queries.
    Causal,
    /// A boolean array broadcast against `[B, heads, queries, keys]`.
    Array(Array),
}

/// What attention needs from a layer's cache. The model's layers are
/// written once against this, so that the same code runs one sequence or a
/// batch of sequences at different positions.
pub trait LayerCache {
    /// The arrays it holds: what a step evaluates together with the
    /// model's output, and what its bytes are counted on.
    fn state(&self) -> Vec<&Array>;

    /// The RoPE offset of the tokens about to be added.
    fn rope_offset(&self) -> Result<RopeOffset>;

    /// Appends `keys`/`values` (`[B, H, L, D]`) and returns the keys and
    /// values attention runs over.
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)>;

    /// The mask for the `queries` tokens just added, over what
    /// `update_and_fetch` returned; with `window`, a query sees no key more
    /// than `window - 1` positions before it. Every layer of a model with
    /// the same `window` gets the same mask in one forward pass, so models
    /// compute it once per pass.
    fn mask(&self, queries: i32, window: Option<i32>) -> Result<AttentionMask>;

    /// The first of the fetched key columns the `queries` tokens just added
    /// can see with `window`: attention runs over the columns from it only,
    /// and `mask` covers those columns. 0 (every column) unless the cache
    /// holds positions no query of a sliding layer sees (a batch cache keeps
    /// every position of its rows).
    fn first_attended(&self, queries: i32, window: Option<i32>) -> i32 {
        let _ = (queries, window);
        0
    }

    /// For a cache that keeps its keys and values quantized: appends
    /// `keys`/`values` and returns attention of `queries` (`[B, heads, L,
    /// D]`, grouped-query heads allowed) over every position held, computed
    /// on the quantized values (`mask` as in `mask`, set by the first layer
    /// of a pass). `None`, touching nothing, for a cache that does not:
    /// then `update_and_fetch` gives the keys and values.
    fn attend_quantized(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        scale: f32,
        mask: &mut Option<AttentionMask>,
    ) -> Result<Option<Array>> {
        let _ = (queries, keys, values, scale, mask);
        Ok(None)
    }

    /// For a cache that runs a decode step's attention itself (a batch
    /// cache whose newest columns are kept apart: see
    /// [`crate::attend_rows`]): appends `keys`/`values` (one token a row)
    /// and returns attention of `queries` (`[B, heads, 1, D]`) over the
    /// positions each row sees with `window`, `sinks` (`[heads]`) as one
    /// more logit per head. `None`, touching nothing, otherwise: then
    /// [`LayerCache::attend_quantized`] or `update_and_fetch` run.
    fn attend_rows(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        scale: f32,
        window: Option<i32>,
        sinks: Option<&Array>,
    ) -> Result<Option<Array>> {
        let _ = (queries, keys, values, scale, window, sinks);
        Ok(None)
    }

    /// Forgets the last `count` positions just added (the rejected tokens
    /// of a speculative check); returns how many it forgot (fewer, or 0,
    /// where it cannot: see [`KvCache::trim`], [`BatchKvCache`]). An error
    /// where the cache could not be brought into a state to forget from.
    fn forget_last(&mut self, count: i32) -> Result<i32>;
}

impl LayerCache for KvCache {
    fn state(&self) -> Vec<&Array> {
        let quantized = self
            .quantized
            .iter()
            .flat_map(|q| q.keys.iter().chain(q.values.iter()))
            .flatten();
        self.keys
            .iter()
            .chain(self.values.iter())
            .chain(quantized)
            .collect()
    }

    fn rope_offset(&self) -> Result<RopeOffset> {
        Ok(RopeOffset::Same(self.offset))
    }

    fn forget_last(&mut self, count: i32) -> Result<i32> {
        Ok(self.trim(count))
    }

    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        KvCache::update_and_fetch(self, keys, values)
    }

    fn attend_quantized(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        scale: f32,
        mask: &mut Option<AttentionMask>,
    ) -> Result<Option<Array>> {
        self.quantize_if_due()?;
        let Some(settings) = self.quantization() else {
            return Ok(None);
        };
        let (k, v) = self.update_quantized(keys, values)?;
        if mask.is_none() {
            *mask = Some(self.mask(queries.dim(2), None)?);
        }
        let mask = mask.as_ref().expect("set above");
        attend_packed(queries, &k, &v, scale, mask, settings).map(Some)
    }

    fn mask(&self, queries: i32, window: Option<i32>) -> Result<AttentionMask> {
        if let Some(r) = self.rotation {
            // mlx-lm's mask for a rotating cache: a chunk's keys are the
            // (at most `max_size - 1`) kept before it and the chunk, masked
            // as a window of `max_size` over their order.
            if queries == 1 {
                return Ok(AttentionMask::None);
            }
            let before = (self.offset - queries).min(r.max_size - 1);
            return Ok(if before + queries > r.max_size {
                AttentionMask::Array(sliding_mask(before, queries, before + queries, r.max_size))
            } else {
                AttentionMask::Causal
            });
        }
        let keys = self.len();
        Ok(match window {
            // A sliding cache holds no more than one query can see.
            Some(window) if queries > 1 || keys > window => {
                AttentionMask::Array(sliding_mask(self.offset - queries, queries, keys, window))
            }
            _ if queries > 1 => AttentionMask::Causal,
            _ => AttentionMask::None,
        })
    }
}

/// Attention of `queries` over packed keys and values: through quantized
/// products for a few queries, else one layer's keys and values expanded.
pub(super) fn attend_packed(
    queries: &Array,
    k: &[Array; 3],
    v: &[Array; 3],
    scale: f32,
    mask: &AttentionMask,
    settings: KvQuantization,
) -> Result<Array> {
    // MLX 0.32.4's CUDA back end has no quantized product with a batched
    // quantized operand ("No implementation for problem shape"), so there
    // every pass takes the expanded route.
    if queries.dim(2) <= QUANTIZED_ATTENTION_QUERIES && !crate::device::default_is_cuda() {
        return quantized_attention(queries, k, v, scale, mask, settings);
    }
    // A prompt chunk: its scores over a long cache would take more memory
    // than the cache saves, so this layer's keys and values are expanded
    // (one layer at a time, freed after it) for MLX's fused attention,
    // which never holds the scores.
    let KvQuantization {
        bits, group_size, ..
    } = settings;
    let expand = |p: &[Array; 3]| ops::dequantize(&p[0], &p[1], &p[2], group_size, bits);
    let (k, v) = (expand(k)?, expand(v)?);
    let mask = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => Some(ScaledDotProductAttentionMask::Causal),
        AttentionMask::Array(m) => Some(ScaledDotProductAttentionMask::Array(m)),
    };
    let out = mlx_rs::fast::scaled_dot_product_attention(queries, &k, &v, scale, mask, None)?;
    // Run this layer now: MLX's CUDA back end frees a pass's temporary
    // arrays only when the pass ends, so every layer's expansion would
    // otherwise be held at once. Measured at 32k positions on the H200
    // (4-bit cache of 1.2 GB): 7.7 GB above the weights without this, 1.6 GB
    // with it; decoding 0.63x as fast there. A quantized cache is for long
    // contexts (`--quantized-kv-start`), where memory is the point.
    mlx_rs::transforms::eval([&out])?;
    Ok(out)
}

/// Up to this many queries (a decode step, a speculative check) attend
/// through quantized products; more (a prompt chunk) through one layer's
/// keys and values expanded.
const QUANTIZED_ATTENTION_QUERIES: i32 = 32;

/// Scaled dot-product attention over quantized keys and values (mlx-lm's
/// `quantized_scaled_dot_product_attention`): the scores and the weighted
/// sum are both quantized matrix products, so the cache is never expanded
/// to floats. Grouped-query heads share their key/value head by a reshape.
fn quantized_attention(
    queries: &Array,
    keys: &[Array; 3],
    values: &[Array; 3],
    scale: f32,
    mask: &AttentionMask,
    settings: KvQuantization,
) -> Result<Array> {
    let (b, heads, l, d) = (
        queries.dim(0),
        queries.dim(1),
        queries.dim(2),
        queries.dim(3),
    );
    let kv_heads = keys[0].dim(1);
    let repeats = heads / kv_heads;
    let mut q = queries.multiply(Array::from_f32(scale).as_dtype(queries.dtype())?)?;
    let grouped = |parts: &[Array; 3]| -> Result<Vec<Array>> {
        parts
            .iter()
            .map(|p| {
                Ok(if repeats > 1 {
                    ops::expand_dims(p, -3)?
                } else {
                    p.clone()
                })
            })
            .collect()
    };
    let (k, v) = (grouped(keys)?, grouped(values)?);
    if repeats > 1 {
        q = q.reshape(&[b, kv_heads, repeats, l, d])?;
    }
    let KvQuantization {
        bits, group_size, ..
    } = settings;
    let mut scores = ops::quantized_matmul(&q, &k[0], &k[1], &k[2], true, group_size, bits)?;
    let positions = keys[0].dim(2);
    let allowed = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => {
            // Query i (the last being the newest position) sees keys up to
            // its own position.
            let rows = ops::arange::<_, i32>(positions - l, positions, None)?.reshape(&[l, 1])?;
            let columns = ops::arange::<_, i32>(0, positions, None)?.reshape(&[1, positions])?;
            Some(columns.le(&rows)?)
        }
        AttentionMask::Array(m) => Some(if repeats > 1 && m.ndim() == 4 {
            ops::expand_dims(m, 2)?
        } else {
            m.clone()
        }),
    };
    if let Some(allowed) = allowed {
        let hidden = Array::from_f32(f32::NEG_INFINITY).as_dtype(scores.dtype())?;
        scores = ops::select(&allowed, &scores, &hidden)?;
    }
    let weights = ops::softmax_axis(&scores, -1, true)?;
    let out = ops::quantized_matmul(&weights, &v[0], &v[1], &v[2], false, group_size, bits)?;
    Ok(if repeats > 1 {
        out.reshape(&[b, heads, l, d])?
    } else {
        out
    })
}

/// The mask of a chunk of `queries` new positions (starting at absolute
/// position `offset`) over the last `keys` positions (the last of which is
/// the chunk's last): causal, and no further back than `window` positions.
pub fn sliding_mask(offset: i32, queries: i32, keys: i32, window: i32) -> Array {
    let first_key = offset + queries - keys;
    let mut allowed = Vec::with_capacity((queries * keys) as usize);
    for q in 0..queries {
        let query = offset + q;
        for k in 0..keys {
            let key = first_key + k;
            allowed.push(key <= query && key > query - window);
        }
    }
    Array::from_slice(&allowed, &[queries, keys])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Keys that carry their own position, `[1, 1, n, 1]`.
    pub(in crate::models) fn positions(from: i32, count: i32) -> Array {
        let values: Vec<f32> = (from..from + count).map(|p| p as f32).collect();
        Array::from_slice(&values, &[1, 1, count, 1])
    }

    pub(in crate::models) fn held(keys: &Array) -> Vec<i32> {
        keys.as_slice::<f32>().iter().map(|&p| p as i32).collect()
    }

    /// Feeds the next `count` positions; returns the positions handed to attention.
    pub(in crate::models) fn feed(cache: &mut KvCache, count: i32) -> Vec<i32> {
        let keys = positions(cache.offset(), count);
        let (k, v) = cache.update_and_fetch(&keys, &keys).unwrap();
        assert_eq!(held(&k), held(&v));
        held(&k)
    }

    #[test]
    fn a_chunk_past_the_capacity_is_written_from_a_partly_filled_or_trimmed_cache() {
        // 700 positions in 768 columns, then 268 more: the grown buffer
        // starts from the 700 held, not from the capacity.
        let mut cache = KvCache::new();
        feed(&mut cache, 700);
        assert_eq!(cache.capacity(), 768);
        assert_eq!(feed(&mut cache, 268), (0..968).collect::<Vec<_>>());
        // Trimmed back to 500 of 768 columns, then 300 more.
        let mut cache = KvCache::new();
        feed(&mut cache, 700);
        assert_eq!(cache.trim(200), 200);
        assert_eq!(feed(&mut cache, 300), (0..800).collect::<Vec<_>>());
        // A reservation counts from what is held too.
        let mut cache = KvCache::new();
        feed(&mut cache, 700);
        cache.trim(200);
        cache.reserve(1100);
        feed(&mut cache, 300);
        assert!(cache.capacity() >= 1100, "{}", cache.capacity());
    }

    #[test]
    fn a_sliding_cache_keeps_exactly_the_window_through_ring_and_chunks() {
        let window = 4;
        let mut cache = KvCache::sliding(window);
        // A prompt chunk: every key, in order (the mask picks the window).
        assert_eq!(feed(&mut cache, 6), vec![0, 1, 2, 3, 4, 5]);
        // Single tokens: the last window positions, in any order.
        for _ in 0..7 {
            let mut got = feed(&mut cache, 1);
            got.sort();
            let newest = cache.offset() - 1;
            assert_eq!(got, ((newest - window + 1)..=newest).collect::<Vec<_>>());
        }
        // Another chunk after the ring: the window before it in order, then the chunk.
        let next = cache.offset();
        let expected: Vec<i32> = ((next - window + 1)..next + 3).collect();
        assert_eq!(feed(&mut cache, 3), expected);
        // And single tokens again.
        let mut got = feed(&mut cache, 1);
        got.sort();
        let next = cache.offset();
        assert_eq!(got, ((next - window)..next).collect::<Vec<_>>());
        // A short start grows until the window is full.
        let mut short = KvCache::sliding(window);
        assert_eq!(feed(&mut short, 2), vec![0, 1]);
        assert_eq!(feed(&mut short, 1), vec![0, 1, 2]);
        assert_eq!(feed(&mut short, 1), vec![0, 1, 2, 3]);
        let mut got = feed(&mut short, 1);
        got.sort();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    /// A quantized cache's attention, step by step and in chunks, with
    /// grouped-query heads, equals MLX's fused attention over the same
    /// quantized values expanded (so only the packing, not the arithmetic,
    /// differs from a 16-bit cache).
    #[test]
    fn quantized_attention_matches_fused_attention_on_the_same_values() {
        use mlx_rs::fast::scaled_dot_product_attention;
        mlx_rs::random::seed(7).unwrap();
        let (heads, kv_heads, d) = (8, 2, 64);
        for bits in [4, 8] {
            let settings = KvQuantization::new(bits, 32).unwrap();
            let mut cache = KvCache::quantized(settings);
            let mut all_k: Vec<Array> = Vec::new();
            let mut all_v: Vec<Array> = Vec::new();
            // A prompt chunk longer than the quantized path takes, a
            // speculative check's few queries, then single steps.
            for len in [40, 5, 1, 1] {
                let normal =
                    |h| mlx_rs::random::normal::<f32>(&[1, h, len, d], None, None, None).unwrap();
                let (q, k, v) = (normal(heads), normal(kv_heads), normal(kv_heads));
                let mut mask = None;
                let out = cache
                    .attend_quantized(&q, &k, &v, 0.125, &mut mask)
                    .unwrap()
                    .expect("a quantized cache attends");
                let round = |a: &Array| {
                    let (w, s, b) = ops::quantize(a, 32, bits).unwrap();
                    ops::dequantize(&w, &s, &b, 32, bits).unwrap()
                };
                all_k.push(round(&k));
                all_v.push(round(&v));
                let (keys, values) = (
                    ops::concatenate(&all_k, 2).unwrap(),
                    ops::concatenate(&all_v, 2).unwrap(),
                );
                let causal = (len > 1).then_some(ScaledDotProductAttentionMask::Causal);
                let expected =
                    scaled_dot_product_attention(&q, &keys, &values, 0.125, causal, None).unwrap();
                assert_eq!(out.shape(), expected.shape());
                let worst = out
                    .subtract(&expected)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max(None)
                    .unwrap()
                    .item_exact::<f32>();
                assert!(worst < 1e-4, "{bits} bits, {len} queries: off by {worst}");
            }
            assert_eq!(cache.offset(), 47);
            // A quantized cache can forget positions (a rejected draft).
            assert_eq!(cache.trim(3), 3);
            assert_eq!(cache.offset(), 44);
        }
        let err = KvQuantization::new(3, 64).unwrap_err().to_string();
        assert!(err.contains("4 or 8"), "{err}");
        let err = KvQuantization::new(4, 48).unwrap_err().to_string();
        assert!(err.contains("32, 64 or 128"), "{err}");
    }
}
