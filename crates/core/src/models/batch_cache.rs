//! The KV cache of a continuous batch: the rows' keys and values side by
//! side, right-aligned, each row at its own position (its RoPE offset and
//! mask from its padding, its bound, the positions it dropped), dense or
//! packed (`--kv-bits`). One sequence's cache is [`KvCache`]; both answer
//! attention through [`LayerCache`].

use mlx_rs::Array;
use mlx_rs::ops;

use super::cache::{
    AttentionMask, GROWTH_STEP, KEEP_FIRST, KvCache, KvQuantization, LayerCache, RopeOffset,
    append_columns, attend_packed, pack, write_columns,
};
use crate::array_ext::{owned_copy, slice};
use crate::attend_rows::{self, Route, Spans};
use crate::{Error, Result};

/// The cache of one attention layer for the rows of a continuous batch,
/// `[rows, kv_heads, columns, head_dim]`. Rows are right-aligned: every row
/// writes its next token into the same column, and a row that joined with a
/// shorter history has `left_padding` empty columns before its first
/// position (masked out). Decoding adds one token per row per step; prompts
/// are run one sequence at a time in a [`KvCache`] and then
/// [`BatchKvCache::join`]ed. Sliding-window layers keep every position here
/// and rely on the window mask (so that a finished row's cache can serve a
/// later prompt from any of its positions). A bounded cache
/// ([`BatchKvCache::bounded`], `--max-kv-size`) shows each row only its
/// first and newest positions and drops the others from time to time.
///
/// Where a decode step's attention takes our kernel ([`attend_rows`]), the
/// newest columns (at most [`attend_rows::RECENT_COLUMNS`]) are kept apart
/// in a small `recent` array and moved into the store all at once: writing
/// a step's token into the store would copy all of it on CUDA. Every other
/// operation first moves them in ([`BatchKvCache::flush`]).
#[derive(Clone, Default)]
pub struct BatchKvCache {
    /// The keys' then the values' arrays, `[rows, kv_heads, capacity, _]`:
    /// one each, or, packed (`--kv-bits`), each's values, scales and
    /// biases; empty without rows.
    store: Vec<Array>,
    /// `--kv-bits`: the rows' keys and values are packed once the columns
    /// reach `start` (at once when a row joins packed).
    quantization: Option<KvQuantization>,
    packed: bool,
    /// Columns written so far (the column of the next token).
    end: i32,
    left_padding: Vec<i32>,
    /// The newest columns' keys and values, `[rows, kv_heads,
    /// RECENT_COLUMNS, _]` (empty when none are kept apart); the first
    /// `recent_count` are in use and are the columns `end - recent_count ..
    /// end`.
    recent: Vec<Array>,
    recent_count: i32,
    /// Per row: positions no longer held (RoPE positions go on past them).
    dropped: Vec<i32>,
    bound: Option<BatchBound>,
}

/// What a bounded batch cache keeps of each row, as mlx-lm's rotating cache
/// does for one sequence: the first `keep` positions and the newest
/// `window` (the token being written included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchBound {
    pub keep: i32,
    pub window: i32,
}

impl BatchBound {
    /// The bound of `--max-kv-size max_size` ([`KvCache::rotating`]'s).
    pub fn max_kv_size(max_size: i32) -> Self {
        let keep = KEEP_FIRST.min(max_size - 1).max(0);
        BatchBound {
            keep,
            window: max_size - keep,
        }
    }

    fn held(&self) -> i32 {
        self.keep + self.window
    }
}

impl BatchKvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache that keeps, of each row, what `bound` says: every row sees
    /// only those positions, and once the columns pass the bound by a
    /// [`GROWTH_STEP`] the others are dropped (one gather for all rows), so
    /// that memory stays bounded however long the rows decode.
    pub fn bounded(bound: BatchBound) -> Self {
        BatchKvCache {
            bound: Some(bound),
            ..Self::default()
        }
    }

    /// A cache whose keys and values are packed as `settings` say once it
    /// holds `settings.start` columns (as [`KvCache::quantized`]); attention
    /// then runs on the packed values ([`LayerCache::attend_quantized`]).
    pub fn quantized(settings: KvQuantization) -> Self {
        BatchKvCache {
            quantization: Some(settings),
            ..Self::default()
        }
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.left_padding.len()
    }

    /// The position of each row's next token.
    pub fn positions(&self) -> Vec<i32> {
        self.left_padding
            .iter()
            .zip(&self.dropped)
            .map(|(p, d)| self.end - p + d)
            .collect()
    }

    /// Columns the rows use (the widest row's).
    pub fn columns(&self) -> i32 {
        self.end - self.left_padding.iter().copied().min().unwrap_or(self.end)
    }

    /// Adds a sequence whose prompt ran in `single` (one row; every position
    /// kept, or a rotating cache's first and newest) as the last row. The
    /// shorter side is padded on the left so that both end in the same
    /// column.
    pub fn join(&mut self, single: &KvCache) -> Result<()> {
        self.flush()?;
        if single.window().is_some() {
            return Err(Error::Invalid(
                "a sequence joins a batch from a cache that keeps every position".into(),
            ));
        }
        let (new, single_packed) = match single.packed_in_order()? {
            Some((k, v)) => ([k, v].concat(), true),
            None => match single.held_in_order()? {
                Some((k, v)) => (vec![k, v], false),
                None => {
                    return Err(Error::Invalid(
                        "cannot join an empty cache to a batch".into(),
                    ));
                }
            },
        };
        let length = new[0].dim(2);
        let dropped = single.offset() - length;
        if self.store.is_empty() {
            self.store = new;
            self.packed = single_packed;
            self.end = length;
            self.left_padding = vec![0];
            self.dropped = vec![dropped];
            return self.pack_if_due();
        }
        // Both sides in one form: packed if either is.
        let new = if self.packed && !single_packed {
            self.pack(&new)?
        } else {
            new
        };
        if single_packed && !self.packed {
            self.store = self.pack(&self.used(&self.store)?)?;
            self.packed = true;
        }
        let end = self.end.max(length);
        let pad_left = |a: Array, by: i32| -> Result<Array> {
            if by == 0 {
                return Ok(a);
            }
            let zeros = ops::zeros_dtype(&[a.dim(0), a.dim(1), by, a.dim(3)], a.dtype())?;
            Ok(ops::concatenate(&[zeros, a], 2)?)
        };
        let grow = end - self.end;
        let old = self.used(&self.store)?;
        self.store = old
            .into_iter()
            .zip(new)
            .map(|(old, new)| {
                let old = pad_left(old, grow)?;
                let new = pad_left(new, end - length)?;
                Ok(ops::concatenate(&[old, new], 0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        for pad in &mut self.left_padding {
            *pad += grow;
        }
        self.left_padding.push(end - length);
        self.dropped.push(dropped);
        self.end = end;
        self.pack_if_due()
    }

    /// Moves the recent columns into the store (growing it as a step's
    /// write would), so that the store holds every column again.
    pub fn flush(&mut self) -> Result<()> {
        if self.recent.is_empty() {
            return Ok(());
        }
        let recent = std::mem::take(&mut self.recent);
        let count = std::mem::take(&mut self.recent_count);
        if count == 0 {
            return Ok(());
        }
        let start = self.end - count;
        for (stored, part) in self.store.iter_mut().zip(&recent) {
            let columns = slice(
                part,
                &[0, 0, 0, 0],
                &[part.dim(0), part.dim(1), count, part.dim(3)],
            )?;
            let (written, _) = append_columns(Some(stored), &columns, start, self.end, 0)?;
            *stored = written;
        }
        Ok(())
    }

    /// Columns `0..end` of each of `arrays`.
    fn used(&self, arrays: &[Array]) -> Result<Vec<Array>> {
        arrays
            .iter()
            .map(|a| slice(a, &[0, 0, 0, 0], &[a.dim(0), a.dim(1), self.end, a.dim(3)]))
            .collect()
    }

    /// Dense keys and values (`[k, v]`) packed: `[kq, ks, kb, vq, vs, vb]`.
    fn pack(&self, dense: &[Array]) -> Result<Vec<Array>> {
        let settings = self
            .quantization
            .ok_or_else(|| Error::Invalid("packing a batch cache without --kv-bits".into()))?;
        Ok([pack(&dense[0], settings)?, pack(&dense[1], settings)?].concat())
    }

    /// Packs a dense store once the columns reach the quantization's start.
    fn pack_if_due(&mut self) -> Result<()> {
        if self.packed || self.store.is_empty() {
            return Ok(());
        }
        let Some(settings) = self.quantization else {
            return Ok(());
        };
        if self.end < settings.start {
            return Ok(());
        }
        self.store = self.pack(&self.used(&self.store)?)?;
        self.packed = true;
        Ok(())
    }

    /// Writes `new` (one array per stored one, `new_tokens` columns) after
    /// the columns written, growing the store as one sequence's cache grows
    /// ([`append_columns`]); returns each array's used columns.
    fn write(&mut self, new: &[Array], new_tokens: i32) -> Result<Vec<Array>> {
        if new_tokens != 1 && !self.takes_several() {
            return Err(Error::Invalid(
                "a batch cache takes one token per row per step, except a lone unbounded row \
                 (a speculative check); run prompts in a KvCache"
                    .into(),
            ));
        }
        let end = self.end + new_tokens;
        let mut fetched = Vec::with_capacity(new.len());
        for (stored, update) in self.store.iter_mut().zip(new) {
            let (written, used) = append_columns(Some(stored), update, self.end, end, 0)?;
            *stored = written;
            fetched.push(used);
        }
        self.end = end;
        Ok(fetched)
    }

    /// Whether several tokens may be added at once, and taken back: one row
    /// with nothing before its first position and no bound (what a
    /// speculative check needs: its causal mask is the plain one).
    fn takes_several(&self) -> bool {
        self.rows() == 1 && self.left_padding[0] == 0 && self.bound.is_none()
    }

    /// Whether row `row`'s column `column` is one it sees (not padding, and
    /// within the bound).
    fn visible(&self, row: usize, column: i32) -> bool {
        let pad = self.left_padding[row];
        column >= pad
            && self
                .bound
                .is_none_or(|b| column - pad < b.keep || column >= self.end - b.window)
    }

    /// Drops the columns no row sees any more (a bounded cache's): each row
    /// keeps its first `keep` and newest `window` positions, right-aligned
    /// as before.
    fn compact(&mut self) -> Result<()> {
        let Some(bound) = self.bound else {
            return Ok(());
        };
        if self.store.is_empty() {
            return Ok(());
        }
        let rows = self.rows();
        let held: Vec<i32> = self
            .left_padding
            .iter()
            .map(|p| (self.end - p).min(bound.held()))
            .collect();
        let end = held.iter().copied().max().unwrap_or(0);
        let mut index = Vec::with_capacity(rows * end as usize);
        for (row, &count) in held.iter().enumerate() {
            let pad = self.left_padding[row];
            let all = self.end - pad;
            for column in 0..end {
                let i = column - (end - count);
                index.push(if i < 0 {
                    0 // padding, masked
                } else if all <= bound.held() || i < bound.keep {
                    pad + i
                } else {
                    self.end - bound.window + (i - bound.keep)
                });
            }
        }
        let index = Array::from_slice(&index, &[rows as i32, 1, end, 1]);
        let gather = |a: &Array| -> Result<Array> {
            let used = slice(a, &[0, 0, 0, 0], &[a.dim(0), a.dim(1), self.end, a.dim(3)])?;
            Ok(used.take_along_axis(&index, 2)?)
        };
        let store = self.store.iter().map(gather).collect::<Result<Vec<_>>>()?;
        for (row, &count) in held.iter().enumerate() {
            self.dropped[row] += self.end - self.left_padding[row] - count;
            self.left_padding[row] = end - count;
        }
        self.store = store;
        self.end = end;
        Ok(())
    }

    /// Keeps only the rows `keep` (in that order), then drops the leading
    /// columns no row uses any more.
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        if keep.is_empty() {
            *self = BatchKvCache {
                bound: self.bound,
                quantization: self.quantization,
                ..Self::default()
            };
            return Ok(());
        }
        if keep.len() == self.rows() && keep.iter().enumerate().all(|(i, &k)| i == k) {
            return Ok(());
        }
        let index = Array::from_slice(
            &keep.iter().map(|&k| k as i32).collect::<Vec<_>>(),
            &[keep.len() as i32],
        );
        self.left_padding = keep.iter().map(|&k| self.left_padding[k]).collect();
        self.dropped = keep.iter().map(|&k| self.dropped[k]).collect();
        let unused = self.left_padding.iter().copied().min().unwrap_or(0);
        let store_end = self.end - self.recent_count;
        let rows = |a: &Array| -> Result<Array> {
            let a = a.take_axis(&index, 0)?;
            slice(
                &a,
                &[0, 0, unused, 0],
                &[a.dim(0), a.dim(1), store_end, a.dim(3)],
            )
        };
        self.store = self.store.iter().map(rows).collect::<Result<Vec<_>>>()?;
        // The recent columns stay where they are (the last ones): only
        // their rows change.
        self.recent = self
            .recent
            .iter()
            .map(|a| a.take_axis(&index, 0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.end -= unused;
        for pad in &mut self.left_padding {
            *pad -= unused;
        }
        Ok(())
    }

    /// Row `row`'s positions as a single sequence's cache (a copy, so that
    /// it does not keep the batch's arrays alive); `None` once a bounded
    /// cache dropped some of them.
    pub fn extract(&self, row: usize) -> Result<Option<KvCache>> {
        if self.store.is_empty() {
            return Err(Error::Invalid("the batch has no rows".into()));
        }
        if self.dropped[row] > 0 {
            return Ok(None);
        }
        let (row, pad) = (row as i32, self.left_padding[row]);
        let store_end = self.end - self.recent_count;
        let parts = self
            .store
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let held = slice(
                    a,
                    &[row, 0, pad, 0],
                    &[row + 1, a.dim(1), store_end, a.dim(3)],
                )?;
                match self.recent.get(i) {
                    Some(recent) if self.recent_count > 0 => {
                        let newest = slice(
                            recent,
                            &[row, 0, 0, 0],
                            &[row + 1, recent.dim(1), self.recent_count, recent.dim(3)],
                        )?;
                        Ok(ops::concatenate(&[held, newest], 2)?)
                    }
                    _ => Ok(held),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let (keys, values) = match self.quantization.filter(|_| self.packed) {
            // Expanded for the prompt cache, whose caches are dense (new
            // arrays, not views of the batch's).
            Some(settings) => {
                let expand = |p: &[Array]| {
                    ops::dequantize(&p[0], &p[1], &p[2], settings.group_size, settings.bits)
                };
                (expand(&parts[..3])?, expand(&parts[3..])?)
            }
            // Copies of their own, not slices of the batch's buffers.
            None => (owned_copy(&parts[0])?, owned_copy(&parts[1])?),
        };
        Ok(Some(KvCache::from_arrays(keys, values)))
    }
}

impl LayerCache for BatchKvCache {
    fn state(&self) -> Vec<&Array> {
        self.store.iter().chain(&self.recent).collect()
    }

    fn rope_offset(&self) -> Result<RopeOffset> {
        if self.left_padding.iter().all(|&p| p == 0) && self.dropped.iter().all(|&d| d == 0) {
            return Ok(RopeOffset::Same(self.end));
        }
        Ok(RopeOffset::PerRow(Array::from_slice(
            &self.positions(),
            &[self.rows() as i32],
        )))
    }

    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        self.flush()?;
        if self
            .bound
            .is_some_and(|b| self.columns() >= b.held() + GROWTH_STEP)
        {
            self.compact()?;
        }
        if self.store.is_empty() {
            return Err(Error::Invalid("the batch has no rows".into()));
        }
        if self.packed {
            return Err(Error::Invalid(
                "a packed batch cache is read through attend_quantized".into(),
            ));
        }
        let mut fetched = self.write(&[keys.clone(), values.clone()], keys.dim(2))?;
        let v = fetched.pop().expect("values");
        let k = fetched.pop().expect("keys");
        Ok((k, v))
    }

    fn attend_quantized(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        scale: f32,
        mask: &mut Option<AttentionMask>,
    ) -> Result<Option<Array>> {
        let Some(settings) = self.quantization else {
            return Ok(None);
        };
        self.flush()?;
        self.pack_if_due()?;
        if !self.packed {
            return Ok(None);
        }
        let update = self.pack(&[keys.clone(), values.clone()])?;
        let fetched = self.write(&update, keys.dim(2))?;
        if mask.is_none() {
            *mask = Some(self.mask(queries.dim(2), None)?);
        }
        let (k, v) = (
            [fetched[0].clone(), fetched[1].clone(), fetched[2].clone()],
            [fetched[3].clone(), fetched[4].clone(), fetched[5].clone()],
        );
        attend_packed(
            queries,
            &k,
            &v,
            scale,
            mask.as_ref().expect("set above"),
            settings,
        )
        .map(Some)
    }

    fn attend_rows(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        scale: f32,
        window: Option<i32>,
        sinks: Option<&Array>,
    ) -> Result<Option<Array>> {
        if queries.dim(2) != 1
            || self.quantization.is_some()
            || self.bound.is_some()
            || self.store.is_empty()
        {
            return Ok(None);
        }
        let Some(route) = attend_rows::route(queries, keys.dim(1), scale, sinks.is_some()) else {
            return Ok(None);
        };
        if self.recent_count == attend_rows::RECENT_COLUMNS {
            self.flush()?;
        }
        if self.recent.is_empty() {
            let shape = |a: &Array| [a.dim(0), a.dim(1), attend_rows::RECENT_COLUMNS, a.dim(3)];
            self.recent = vec![
                ops::zeros_dtype(&shape(keys), keys.dtype())?,
                ops::zeros_dtype(&shape(values), values.dtype())?,
            ];
        }
        let count = self.recent_count;
        for (part, new) in self.recent.iter_mut().zip([keys, values]) {
            *part = write_columns(part, new, count, count + 1)?.0;
        }
        self.recent_count += 1;
        self.end += 1;
        let first = self.first_attended(1, window);
        let spans = Spans {
            begins: self.left_padding.iter().map(|&p| p.max(first)).collect(),
            store_end: self.end - self.recent_count,
            total: self.end,
        };
        let store = [&self.store[0], &self.store[1]];
        let recent = [&self.recent[0], &self.recent[1]];
        match route {
            Route::Kernel => attend_rows::attend(
                &attend_rows::Step {
                    queries,
                    store,
                    recent,
                    spans: &spans,
                    scale,
                    sinks,
                },
                &mlx_rs::Stream::thread_local_or_default(),
            )
            .map(Some),
            Route::Emulated => {
                // The two parts joined from the first column any row sees,
                // and the mask the one-array route would use.
                let joined = |i: usize| spans.join(store[i], recent[i], first);
                let (k, v) = (joined(0)?, joined(1)?);
                let mask = self.mask(1, window)?;
                let mask = crate::models::blocks::sdpa_mask(&mask);
                Ok(Some(mlx_rs::fast::scaled_dot_product_attention(
                    queries, &k, &v, scale, mask, sinks,
                )?))
            }
        }
    }

    fn forget_last(&mut self, count: i32) -> Result<i32> {
        if !self.takes_several() {
            return Ok(0);
        }
        // The newest columns may still be in the recent part: one store.
        self.flush()?;
        let forgotten = count.clamp(0, self.end);
        self.end -= forgotten;
        Ok(forgotten)
    }

    fn mask(&self, queries: i32, window: Option<i32>) -> Result<AttentionMask> {
        if queries != 1 {
            // A lone row's speculative check: causal over its positions
            // (MLX aligns the causal mask to the last query).
            if self.takes_several() && window.is_none() {
                return Ok(AttentionMask::Causal);
            }
            return Err(Error::Invalid(
                "a batch cache takes one token per row per step".into(),
            ));
        }
        // Over the columns from the window's first on (see first_attended).
        let first = self.first_attended(queries, window);
        let bound_hides = self.bound.is_some_and(|b| self.columns() > b.held());
        if !bound_hides && self.left_padding.iter().all(|&p| p <= first) {
            return Ok(AttentionMask::None);
        }
        let columns = self.end - first;
        let mut allowed = Vec::with_capacity(self.rows() * columns as usize);
        for row in 0..self.rows() {
            allowed.extend((first..self.end).map(|j| self.visible(row, j)));
        }
        Ok(AttentionMask::Array(Array::from_slice(
            &allowed,
            &[self.rows() as i32, 1, 1, columns],
        )))
    }

    fn first_attended(&self, queries: i32, window: Option<i32>) -> i32 {
        // One token a row: its window is the last `window` columns, the
        // same for every row (the rows are right-aligned). Sliding layers
        // then attend over those alone instead of masking the rest.
        match window {
            Some(w) if queries == 1 => (self.end - w).max(0),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::cache::tests::{feed, held};

    #[test]
    fn a_bounded_batch_cache_shows_each_row_its_first_and_newest_positions_in_bounded_memory() {
        let bound = BatchBound::max_kv_size(8); // the first 4 and the newest 4
        let mut batch = BatchKvCache::bounded(bound);
        for length in [3, 20] {
            let mut single = KvCache::new();
            feed(&mut single, length);
            batch.join(&single).unwrap();
        }
        for step in 0..600 {
            let next = batch.positions();
            let keys: Vec<f32> = next.iter().map(|&p| p as f32).collect();
            let keys = Array::from_slice(&keys, &[2, 1, 1, 1]);
            let (k, _) = batch.update_and_fetch(&keys, &keys).unwrap();
            let AttentionMask::Array(mask) = batch.mask(1, None).unwrap() else {
                assert!(step < 2, "no mask once a row passes the bound");
                continue;
            };
            let columns = k.dim(2);
            assert!(
                columns < bound.held() + GROWTH_STEP + 1,
                "{columns} columns"
            );
            // A slice of the buffer: made whole to be read.
            let k = held(&k.multiply(Array::from_f32(1.0)).unwrap());
            let mask = mask.as_slice::<bool>().to_vec();
            for (row, newest) in next.iter().enumerate() {
                let seen: Vec<i32> = (0..columns as usize)
                    .filter(|&c| mask[row * columns as usize + c])
                    .map(|c| k[row * columns as usize + c])
                    .collect();
                let first = (0..*newest + 1).take(4);
                let last = (newest - 3).max(4)..newest + 1;
                let expected: Vec<i32> = first.chain(last).collect();
                assert_eq!(seen, expected, "row {row} at step {step}");
            }
        }
        assert_eq!(batch.positions(), vec![603, 620]);
        assert!(
            batch.extract(0).unwrap().is_none(),
            "positions were dropped"
        );
    }
}
