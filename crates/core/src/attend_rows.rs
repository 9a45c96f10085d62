//! Attention of a batched decode step on CUDA (#23): one query a row over a
//! batch cache kept in two parts, its *store* and its *recent* columns
//! ([`crate::models::batch_cache::BatchKvCache`]), each row from its own
//! first column (left padding, a sliding window), with GPT-OSS's sinks.
//!
//! Why: on MLX's CUDA back end a decode step's cache write copies the whole
//! cache — the update cannot be done in place while the step before, which
//! read the same buffer, is still queued (`scripts/step_ops.py --shape
//! llama3-8b`, H200: 0.26 ms a write at 64 rows, two a layer) — and MLX's
//! attention with a mask (rows that joined at different steps) leaves its
//! one-query kernel for a general one (0.36 against 0.17 ms a layer at 64
//! rows). Writing each step into a small recent array, moved into the store
//! every [`RECENT_COLUMNS`] steps, makes the writes small; this kernel reads
//! both parts and each row's first column, so no mask is needed.
//!
//! `MLX_HARMONY_ATTEND` picks the route: `ours` (default: this kernel where
//! [`takes`] holds on a CUDA stream), `mlx` (the cache in one array and
//! MLX's attention, to compare), `emulate` (the two-part cache with
//! attention by MLX operations, so that the CPU tests cover the cache's
//! bookkeeping). The first call of each kernel variant checks it against
//! [`reference`] and falls back to MLX, with one warning, if it does not
//! compile or agree.

use std::sync::OnceLock;

use mlx_rs::{Array, Dtype, Stream, ops};

use crate::cuda_kernel::{Checks, CudaKernel, TemplateArg, cuda_present, env_setting, on_gpu};
use crate::{Error, Result};

const HEADER: &str = include_str!("kernels/attend_rows_header.cuh");
const BODY: &str = include_str!("kernels/attend_rows_body.cu");

/// Columns the recent part holds before they are moved into the store:
/// a step's write copies the recent part, a move copies the store.
pub const RECENT_COLUMNS: i32 = 32;
/// Columns a group of lanes takes at a time (the kernel's C).
const COLUMNS_AT_ONCE: i32 = 2;
const THREADS: i32 = 256;

/// How a batch cache runs a decode step's attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Our kernel over the two parts.
    Kernel,
    /// MLX's operations over the two parts joined (tests on the CPU).
    Emulated,
}

/// `MLX_HARMONY_ATTEND`'s setting in effect: "ours", "mlx" or "emulate".
pub fn setting() -> &'static str {
    static SETTING: OnceLock<&'static str> = OnceLock::new();
    SETTING.get_or_init(|| env_setting("MLX_HARMONY_ATTEND", &["ours", "mlx", "emulate"]))
}

/// The template arguments of one compiled variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Variant {
    dtype: Dtype,
    head_dim: i32,
    /// Query heads a kv head.
    group: i32,
    sinks: bool,
    /// The float bits of `scale * log2(e)`.
    scale_bits: u32,
}

impl Variant {
    fn new(dtype: Dtype, head_dim: i32, group: i32, sinks: bool, scale: f32) -> Self {
        Variant {
            dtype,
            head_dim,
            group,
            sinks,
            scale_bits: (scale * std::f32::consts::LOG2_E).to_bits(),
        }
    }
}

/// The shape checks, without the device: queries `[rows, heads, 1, D]` of
/// bfloat16 or float16, D 64 or 128, `heads` a multiple of `kv_heads`, at
/// most 1 024 query-head values a kv head (the kernel's registers).
pub fn takes(queries: &Array, kv_heads: i32) -> bool {
    let shape = queries.shape();
    if shape.len() != 4 || shape[2] != 1 || kv_heads <= 0 || shape[1] % kv_heads != 0 {
        return false;
    }
    let (heads, head_dim) = (shape[1], shape[3]);
    matches!(queries.dtype(), Dtype::Bfloat16 | Dtype::Float16)
        && matches!(head_dim, 64 | 128)
        && heads / kv_heads * head_dim <= 1024
}

/// How a batch cache of `rows` rows should run this step's attention of
/// `queries` (see [`takes`]) over `kv_heads` heads: `None` keeps the cache
/// in one array and MLX's attention.
pub fn route(queries: &Array, kv_heads: i32, scale: f32, sinks: bool) -> Option<Route> {
    match setting() {
        "mlx" => None,
        "emulate" => (queries.dim(2) == 1).then_some(Route::Emulated),
        _ => {
            if queries.dim(0) < 2 || !cuda_present() || !takes(queries, kv_heads) {
                return None;
            }
            let stream = Stream::thread_local_or_default();
            if !on_gpu(&stream) {
                return None;
            }
            let variant = Variant::new(
                queries.dtype(),
                queries.dim(3),
                queries.dim(1) / kv_heads,
                sinks,
                scale,
            );
            checked(variant, &stream).then_some(Route::Kernel)
        }
    }
}

/// Where each row's columns are: row `r` sees the columns from
/// `begins[r]` to `total` (exclusive), the first `store_end` of them in the
/// store, the rest in the recent part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spans {
    pub begins: Vec<i32>,
    pub store_end: i32,
    pub total: i32,
}

impl Spans {
    fn check(&self, rows: i32, store_capacity: i32, recent_capacity: i32) -> Result<()> {
        let recent = self.total - self.store_end;
        let fits = self.begins.len() == rows as usize
            && (0..=store_capacity).contains(&self.store_end)
            && (0..=recent_capacity).contains(&recent)
            && self.begins.iter().all(|&b| (0..self.total).contains(&b));
        if fits {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "attend_rows: spans {self:?} do not fit {rows} rows, a store of \
                 {store_capacity} and a recent part of {recent_capacity} columns"
            )))
        }
    }

    /// The columns from `from` to `total` of a cache kept as `store` and
    /// `recent` (`[rows, kv_heads, columns, D]` each), as one array.
    pub fn join(&self, store: &Array, recent: &Array, from: i32) -> Result<Array> {
        let part = |a: &Array, from: i32, to: i32| {
            crate::array_ext::slice(a, &[0, 0, from, 0], &[a.dim(0), a.dim(1), to, a.dim(3)])
        };
        let recent_used = self.total - self.store_end;
        Ok(ops::concatenate(
            &[
                part(store, from.min(self.store_end), self.store_end)?,
                part(recent, (from - self.store_end).max(0), recent_used)?,
            ],
            2,
        )?)
    }

    fn array(&self) -> Array {
        let mut values = self.begins.clone();
        values.extend([self.store_end, self.total]);
        Array::from_slice(&values, &[values.len() as i32])
    }
}

/// One decode step's attention over a two-part cache: `queries` `[rows,
/// heads, 1, D]`, the store's and the recent part's keys and values
/// (`[rows, kv_heads, columns, D]` each), where each row's columns are
/// (`spans`), and the sinks (`[heads]`), if any.
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub queries: &'a Array,
    pub store: [&'a Array; 2],
    pub recent: [&'a Array; 2],
    pub spans: &'a Spans,
    pub scale: f32,
    pub sinks: Option<&'a Array>,
}

/// Our kernel, unconditionally (the caller has checked [`takes`] and that
/// `stream` is a CUDA stream); returns `[rows, heads, 1, D]`.
pub fn attend(step: &Step<'_>, stream: &Stream) -> Result<Array> {
    let Step {
        queries,
        store,
        sinks,
        scale,
        ..
    } = *step;
    let kv_heads = store[0].dim(1);
    if !takes(queries, kv_heads) {
        return Err(Error::Invalid(format!(
            "attend_rows does not take queries {:?} ({:?}) over {kv_heads} kv heads",
            queries.shape(),
            queries.dtype()
        )));
    }
    let variant = Variant::new(
        queries.dtype(),
        queries.dim(3),
        queries.dim(1) / kv_heads,
        sinks.is_some(),
        scale,
    );
    launch(step, variant, stream)
}

fn launch(step: &Step<'_>, variant: Variant, stream: &Stream) -> Result<Array> {
    let Step {
        queries,
        store,
        recent,
        spans,
        sinks,
        ..
    } = *step;
    static KERNEL: OnceLock<CudaKernel> = OnceLock::new();
    let kernel = KERNEL.get_or_init(|| {
        CudaKernel::new(
            "mlx_harmony_attend_rows",
            &[
                "q", "store_k", "store_v", "recent_k", "recent_v", "spans", "sinks",
            ],
            &["out"],
            BODY,
            HEADER,
        )
    });
    let (rows, heads, head_dim) = (queries.dim(0), queries.dim(1), queries.dim(3));
    let kv_heads = store[0].dim(1);
    spans.check(rows, store[0].dim(2), recent[0].dim(2))?;
    let spans = spans.array();
    let q = queries.reshape(&[rows, heads, head_dim])?;
    // Without sinks the kernel never reads its sinks argument.
    let sinks = sinks.unwrap_or(&spans);
    let out_shape = [rows, heads, head_dim];
    let mut out = kernel.apply(
        &[&q, store[0], store[1], recent[0], recent[1], &spans, sinks],
        &[(&out_shape, queries.dtype())],
        &[
            TemplateArg::Dtype(c"T", variant.dtype),
            TemplateArg::Int(c"D", variant.head_dim),
            TemplateArg::Int(c"G", variant.group),
            TemplateArg::Int(c"C", COLUMNS_AT_ONCE),
            TemplateArg::Bool(c"SINKS", variant.sinks),
            TemplateArg::Int(c"SCALE_BITS", variant.scale_bits as i32),
        ],
        (rows * kv_heads, 1, 1),
        THREADS,
        stream,
    )?;
    Ok(out
        .pop()
        .expect("one output")
        .reshape(&[rows, heads, 1, head_dim])?)
}

/// The attention [`attend`] computes, by MLX operations in float32: the
/// two parts joined, each row's columns before its first masked, the sink
/// as one more logit with no value. Returns `[rows, heads, 1, D]` (float32).
pub fn reference(step: &Step<'_>) -> Result<Array> {
    let Step {
        queries,
        store,
        recent,
        spans,
        scale,
        sinks,
    } = *step;
    let (rows, heads, head_dim) = (queries.dim(0), queries.dim(1), queries.dim(3));
    let kv_heads = store[0].dim(1);
    let group = heads / kv_heads;
    let joined = |i: usize| -> Result<Array> {
        Ok(spans
            .join(store[i], recent[i], 0)?
            .as_dtype(Dtype::Float32)?)
    };
    let (keys, values) = (joined(0)?, joined(1)?);
    // [rows, kv_heads, group, D] @ [rows, kv_heads, D, total]
    let q = queries
        .as_dtype(Dtype::Float32)?
        .reshape(&[rows, kv_heads, group, head_dim])?;
    let scores = ops::matmul(&q, keys.swap_axes(-1, -2)?)?.multiply(Array::from_f32(scale))?;
    let columns = ops::arange::<_, i32>(0, spans.total, None)?.reshape(&[1, 1, 1, spans.total])?;
    let begins = Array::from_slice(&spans.begins, &[rows, 1, 1, 1]);
    let hidden = Array::from_f32(f32::NEG_INFINITY);
    let scores = ops::select(&columns.ge(&begins)?, &scores, &hidden)?;
    let weights = match sinks {
        None => ops::softmax_axis(&scores, -1, true)?,
        Some(sinks) => {
            let sink = sinks
                .as_dtype(Dtype::Float32)?
                .reshape(&[1, kv_heads, group, 1])?;
            let sink = ops::broadcast_to(&sink, &[rows, kv_heads, group, 1])?;
            let all = ops::softmax_axis(ops::concatenate(&[scores, sink], -1)?, -1, true)?;
            crate::array_ext::slice(&all, &[0, 0, 0, 0], &[rows, kv_heads, group, spans.total])?
        }
    };
    Ok(ops::matmul(&weights, &values)?.reshape(&[rows, heads, 1, head_dim])?)
}

/// Runs `variant` once on a small case against [`reference`] and remembers
/// whether it compiled and agreed; a failure turns it off with one warning.
fn checked(variant: Variant, stream: &Stream) -> bool {
    static CHECKS: Checks<Variant> = Checks::new();
    CHECKS.passed(variant, "attend_rows", "MLX's attention", || {
        self_check(variant, stream)
    })
}

/// A case for checks and tests: `rows` rows, `kv_heads` kv heads of
/// `group` query heads each, a store of 45 columns (37 in use) and a recent
/// part of [`RECENT_COLUMNS`] (`recent` in use), rows starting at
/// different columns. Returns (queries, store, recent, spans, sinks).
#[allow(clippy::type_complexity)]
pub fn example(
    dtype: Dtype,
    rows: i32,
    kv_heads: i32,
    group: i32,
    head_dim: i32,
    recent: i32,
    seed: u64,
) -> Result<(Array, [Array; 2], [Array; 2], Spans, Array)> {
    let normal = |shape: &[i32], seed: u64| -> Result<Array> {
        let key = mlx_rs::random::key(seed)?;
        Ok(mlx_rs::random::normal::<f32>(shape, None, None, &key)?.as_dtype(dtype)?)
    };
    let (capacity, store_end) = (45, 37);
    let queries = normal(&[rows, kv_heads * group, 1, head_dim], seed)?;
    let store = [
        normal(&[rows, kv_heads, capacity, head_dim], seed + 1)?,
        normal(&[rows, kv_heads, capacity, head_dim], seed + 2)?,
    ];
    let recent_parts = [
        normal(&[rows, kv_heads, RECENT_COLUMNS, head_dim], seed + 3)?,
        normal(&[rows, kv_heads, RECENT_COLUMNS, head_dim], seed + 4)?,
    ];
    let total = store_end + recent;
    let begins = (0..rows).map(|r| (r * 7) % total.min(40)).collect();
    let sinks = normal(&[kv_heads * group], seed + 5)?;
    Ok((
        queries,
        store,
        recent_parts,
        Spans {
            begins,
            store_end,
            total,
        },
        sinks,
    ))
}

/// How far the kernel's result may be from [`reference`] at a result whose
/// largest magnitude is `scale`: a few units of the 16-bit output rounding.
pub fn allowance(dtype: Dtype, scale: f32) -> f32 {
    let unit = if dtype == Dtype::Bfloat16 {
        1.0 / 128.0
    } else {
        1.0 / 1024.0
    };
    4.0 * unit * scale.max(1e-3)
}

/// The largest difference of `ours` from `exact`, and `exact`'s largest
/// magnitude.
pub fn difference(ours: &Array, exact: &Array) -> Result<(f32, f32)> {
    let diff = ops::abs(ours.as_dtype(Dtype::Float32)?.subtract(exact)?)?.max(None)?;
    let scale = ops::abs(exact)?.max(None)?;
    diff.eval()?;
    scale.eval()?;
    Ok((diff.item_exact::<f32>(), scale.item_exact::<f32>()))
}

fn self_check(variant: Variant, stream: &Stream) -> Result<()> {
    let scale = f32::from_bits(variant.scale_bits) / std::f32::consts::LOG2_E;
    let (queries, store, recent, spans, sinks) =
        example(variant.dtype, 3, 2, variant.group, variant.head_dim, 5, 11)?;
    let step = Step {
        queries: &queries,
        store: [&store[0], &store[1]],
        recent: [&recent[0], &recent[1]],
        spans: &spans,
        scale,
        sinks: variant.sinks.then_some(&sinks),
    };
    let ours = launch(&step, variant, stream)?;
    let exact = reference(&step)?;
    let (diff, magnitude) = difference(&ours, &exact)?;
    if diff.is_finite() && diff <= allowance(variant.dtype, magnitude) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "largest difference {diff} from the reference at scale {magnitude}"
        )))
    }
}
