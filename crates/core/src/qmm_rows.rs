//! Our quantized products for the few-row shapes of a batched or speculative
//! decode step, on CUDA (#23): one weight matrix (`qmm_rows`), two or three
//! matrices that read the same rows in one launch (`qmm_shared`: a layer's q,
//! k and v, its gate and up; [`matmul_shared`]), and the mixture-of-experts
//! form (`qmm_gather`: each expert's matrix applied to the rows that chose
//! it, GPT-OSS's experts).
//!
//! MLX's CUDA back end runs `quantized_matmul` with 2–4 rows as its one-row
//! kernel once per row, and with 8–64 rows well above the time it takes to
//! read the weights once (`scripts/qmm_rows.py` measures both); its
//! `gather_qmm` reads an expert's matrix once per row that chose it. These
//! kernels read each block of packed weights once for all rows and multiply
//! on the tensor cores (`kernels/qmm_rows_header.cuh` says how). They are
//! compiled by MLX at run time (NVRTC, `mlx_fast_cuda_kernel`), so the same
//! binary keeps running on the CPU and on Metal, where MLX's own kernels are
//! used.
//!
//! For a prompt pass's hundreds of rows on CUDA, for 16-bit activations on
//! the CPU, and for float32 prompt passes on the CPU where MLX's products run
//! on OpenBLAS, [`try_dense`] takes MLX's dense product on the weights
//! dequantized instead of `quantized_matmul`.
//!
//! Chosen for: affine 4- or 8-bit weights in groups of 32, 64 or 128, or
//! MXFP4; bfloat16 or float16 activations; 2–64 rows (tokens, for the
//! experts); `N % 16 == 0`; on a CUDA stream. `MLX_HARMONY_QMM=mlx` turns them
//! off (to compare), `MLX_HARMONY_QMM=unshared` launches them once per matrix
//! where [`matmul_shared`] would take several. `MLX_HARMONY_QMM=wide` takes
//! the wide form instead (`qmm_wide`, not yet the default: it has not run on
//! a GPU yet): several tiles of 16 features a warp for each read of x, and K
//! split over blocks where the features alone would not fill the GPU, the
//! splits added up by a second small kernel (`qmm_sum_splits`). The first
//! call of each kernel variant checks it against MLX's dequantized product on
//! a small case and falls back to MLX, with one warning, if it does not
//! compile or agree.
//!
//! Files: this one picks and launches the kernels; `qmm_rows/dense.rs` holds
//! the dense routes ([`try_dense`], [`try_dense_experts`]), and
//! `qmm_rows/check.rs` the first-use check.

use std::sync::OnceLock;

use mlx_rs::{Array, Dtype, Stream};

use crate::cuda_kernel::{CudaKernel, TemplateArg, cuda_present, env_setting, on_gpu};
use crate::quant::{QuantMode, QuantizedWeight};
use crate::{Error, Result};

mod check;
mod dense;

use check::checked;
pub use check::{reference_product, rounding_allowance};

pub use dense::{
    DENSE_MAX_EXPERT_WEIGHTS, DENSE_MAX_WEIGHTS, DENSE_MIN_EXPERT_PICKS, DENSE_MIN_ROWS,
    DENSE_MIN_ROWS_CPU, DENSE_MIN_ROWS_CPU_F32, dense_experts_product, try_dense,
    try_dense_experts,
};

const HEADER: &str = include_str!("kernels/qmm_rows_header.cuh");
const BODY: &str = include_str!("kernels/qmm_rows_body.cu");
const GATHER_BODY: &str = include_str!("kernels/qmm_gather_body.cu");
const SUM_SPLITS_HEADER: &str = include_str!("kernels/qmm_sum_splits_header.cuh");

/// Warps per block; they split K.
const WARPS: i32 = 8;
/// The fewest rows the engine hands the kernel for one matrix: one row (a
/// single stream's decode step) stays on MLX's one-row kernel, which is made
/// for it, except where 2–3 matrices share the row ([`shares_one_row`]).
pub const MIN_ROWS: i32 = 2;
/// The most rows one call takes (eight row tiles of 8).
pub const MAX_ROWS: i32 = 64;

/// The kernels: one matrix, experts' matrices picked per row, 2–3
/// matrices that read the same rows (a layer's q, k and v projections; its
/// gate and up) in one launch, or the wide form of 1–3 matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Form {
    Matrix,
    Experts,
    Shared(usize),
    Wide(usize),
}

/// Blocks the wide form aims to launch at least (two for each of the
/// H200's 132 multiprocessors): where the features give fewer, K is split.
const WIDE_BLOCKS: i32 = 264;

/// The most matrices one launch of the shared-rows form takes.
pub const MAX_SHARED: usize = 3;

/// The template arguments that make one compiled kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Variant {
    form: Form,
    dtype: Dtype,
    mxfp4: bool,
    bits: i32,
    group: i32,
    /// Octets of k a thread takes per step: 4 when `K % 128 == 0`, 2 when
    /// `K % 64 == 0`, else 1.
    octets: i32,
    /// Row tiles of 8.
    row_tiles: i32,
    /// Experts: the picks of each row of x (1 for one matrix).
    x_per_row: i32,
    /// 4-bit affine weights dequantized two at a time (the header's
    /// `affine4_pair`); the float route otherwise.
    paired: bool,
    /// The wide form: tiles of 16 features a warp (0 for the other forms).
    wide_tiles: i32,
    /// The wide form: K split over blocks, the sums written as float32 for
    /// `qmm_sum_splits`.
    split: bool,
    /// The other forms: chunks of weights a warp has loading while it
    /// multiplies one ([`stages`]).
    stages: i32,
}

impl Variant {
    fn new(form: Form, dtype: Dtype, q: &QuantizedWeight, k: i32, rows: i32) -> Self {
        let row_tiles = [1, 2, 4, 8]
            .into_iter()
            .find(|t| rows <= 8 * t)
            .unwrap_or(8);
        let octets = if k % 128 == 0 {
            4
        } else if k % 64 == 0 {
            2
        } else {
            1
        };
        let mxfp4 = q.mode == QuantMode::Mxfp4;
        Variant {
            form,
            dtype,
            mxfp4,
            bits: q.bits,
            group: q.group_size,
            octets,
            row_tiles,
            x_per_row: 1,
            paired: !mxfp4 && q.bits == 4,
            wide_tiles: 0,
            split: false,
            stages: stages(),
        }
    }

    /// The wide form for `weights` (their formats alike), and the splits
    /// of K it runs with: tiles a warp as many as keep `FT * NT <= 8`
    /// (4 up to 16 rows, 2 at 32, 1 at 64), and K split where the blocks of
    /// the matrices' features fall short of [`WIDE_BLOCKS`], each warp left
    /// at least two chunks of K.
    fn wide(dtype: Dtype, weights: &[&QuantizedWeight], k: i32, rows: i32) -> (Self, i32) {
        let narrow = Variant::new(Form::Wide(weights.len()), dtype, weights[0], k, rows);
        let wide_tiles = (8 / narrow.row_tiles).min(4);
        let features = 16 * wide_tiles;
        let blocks: i32 = weights
            .iter()
            .map(|q| (q.weight.dim(0) + features - 1) / features)
            .sum();
        let chunks = k / (32 * narrow.octets);
        let most = (chunks / (2 * WARPS)).max(1);
        let splits = ((WIDE_BLOCKS + blocks - 1) / blocks.max(1)).clamp(1, most);
        let variant = Variant {
            wide_tiles,
            split: splits > 1,
            ..narrow
        };
        (variant, splits)
    }

    fn experts(dtype: Dtype, q: &QuantizedWeight, k: i32, tokens: i32, x_per_row: i32) -> Self {
        Variant {
            x_per_row,
            ..Variant::new(Form::Experts, dtype, q, k, tokens)
        }
    }
}

/// `MLX_HARMONY_QMM_STAGES`: the chunks of weights each warp of our
/// kernels (not the wide form) has loading while it multiplies one: 1 (the
/// default: the next chunk), 2, 3 or 4. More keep more of the weights in
/// flight, at the cost of registers; with K = 4 096 a warp has only four
/// chunks, each of which waits for its weights with one ahead (#23: what
/// holds the products at 16 rows to 0.75 TB/s of the H200's 4.8).
/// `QMM_COMPARE=stages4` in `scripts/gpu-bench-batch` measures it.
pub fn stages() -> i32 {
    static STAGES: OnceLock<i32> = OnceLock::new();
    *STAGES.get_or_init(|| {
        env_setting("MLX_HARMONY_QMM_STAGES", &["1", "2", "3", "4"])
            .parse()
            .expect("one of the names given")
    })
}

/// `MLX_HARMONY_QMM`'s setting in effect: our kernels (`"ours"`, the
/// default), ours with one launch per matrix (`"unshared"`: to measure
/// [`matmul_shared`]), the wide form (`"wide"`), or MLX's products
/// (`"mlx"`).
pub fn setting() -> &'static str {
    static SETTING: OnceLock<&'static str> = OnceLock::new();
    SETTING.get_or_init(|| env_setting("MLX_HARMONY_QMM", &["ours", "unshared", "mlx", "wide"]))
}

/// Whether the user left our kernels on (`MLX_HARMONY_QMM=mlx` turns them off).
pub fn enabled() -> bool {
    setting() != "mlx"
}

/// Whether the kernels unpack `q` for activations of `dtype` with `k` input
/// features: affine 4/8-bit in groups of 32/64/128 with scales and biases of
/// the activations' dtype, or MXFP4; `N % 16 == 0`; `matrix_dims` 2 for one
/// matrix, 3 for experts.
fn unpacks(dtype: Dtype, q: &QuantizedWeight, k: i32, matrix_dims: usize) -> bool {
    let weight = q.weight.shape();
    let format = match q.mode {
        QuantMode::Affine => {
            matches!(q.bits, 4 | 8)
                && matches!(q.group_size, 32 | 64 | 128)
                && q.scales.dtype() == dtype
                && q.biases.as_ref().is_some_and(|b| b.dtype() == dtype)
        }
        QuantMode::Mxfp4 => {
            q.bits == 4
                && q.group_size == 32
                && q.scales.dtype() == Dtype::Uint8
                && q.biases.is_none()
        }
    };
    format
        && matches!(dtype, Dtype::Bfloat16 | Dtype::Float16)
        && weight.len() == matrix_dims
        && q.weight.dtype() == Dtype::Uint32
        && k % q.group_size == 0
        && k % 32 == 0
        && weight[matrix_dims - 1] == k * q.bits / 32
        && weight[matrix_dims - 2] % 16 == 0
}

/// The shape checks, without the device: does the kernel take `x @ wᵀ`?
/// `x` is `[..., K]` with [`MIN_ROWS`] to [`MAX_ROWS`] rows in all.
pub fn takes(x: &Array, q: &QuantizedWeight) -> bool {
    takes_from(x, q, MIN_ROWS)
}

/// [`takes`] from `min_rows` rows on.
fn takes_from(x: &Array, q: &QuantizedWeight, min_rows: i32) -> bool {
    let shape = x.shape();
    let Some(&k) = shape.last() else {
        return false;
    };
    let rows: i32 = shape[..shape.len() - 1].iter().product();
    (min_rows..=MAX_ROWS).contains(&rows) && unpacks(x.dtype(), q, k, 2)
}

/// The shape checks of the experts' kernel, without the device: experts
/// `q` (`[E, N, packed K]`) for `tokens` tokens of activations of `dtype`
/// with `k` features. The rows are (token, expert) pairs; each expert has at
/// most one row per token, so `tokens` bounds its rows.
pub fn takes_experts(dtype: Dtype, q: &QuantizedWeight, k: i32, tokens: i32) -> bool {
    (MIN_ROWS..=MAX_ROWS).contains(&tokens) && unpacks(dtype, q, k, 3)
}

/// Whether the engine's expert products for `tokens` tokens use our
/// experts' kernel here: [`takes_experts`], on a CUDA stream, not turned
/// off. The caller then hands the picks to [`experts_matmul`].
pub fn wants_experts(dtype: Dtype, q: &QuantizedWeight, k: i32, tokens: i32) -> bool {
    enabled()
        && cuda_present()
        && takes_experts(dtype, q, k, tokens)
        && on_gpu(&Stream::thread_local_or_default())
}

/// `x @ wᵀ` (with `transpose`) or `x @ w` as the models compute their
/// quantized projections: our kernel where it applies (see [`try_product`]),
/// the dense route where it is faster (a prompt pass's many rows on CUDA,
/// 16-bit activations on the CPU, float32 prompt passes on the CPU with
/// OpenBLAS: see [`try_dense`]), MLX's
/// `quantized_matmul` otherwise.
pub fn matmul(x: &Array, q: &QuantizedWeight, transpose: bool) -> Result<Array> {
    if transpose {
        crate::quant::ensure_mlx_error_handler();
        let stream = Stream::thread_local_or_default();
        if let Some(y) = try_product(x, q, &stream)? {
            return Ok(y);
        }
        if let Some(y) = try_dense(x, q, &stream)? {
            return Ok(y);
        }
    }
    crate::quant::quantized_matmul(x, q, transpose)
}

/// `x @ wᵀ` with our kernel when it applies here (CUDA stream, shapes of
/// [`takes`], not turned off, its self-check passed); `None` otherwise, and
/// the caller uses MLX's product.
pub fn try_product(x: &Array, q: &QuantizedWeight, stream: &Stream) -> Result<Option<Array>> {
    if !enabled() || !cuda_present() || !takes(x, q) || !on_gpu(stream) {
        return Ok(None);
    }
    let rows = Rows::of(x);
    if setting() == "wide" {
        return Ok(try_wide(x, &[q], stream)?.and_then(|mut ys| ys.pop()));
    }
    let variant = Variant::new(Form::Matrix, x.dtype(), q, rows.k(), rows.count());
    if !checked(variant, stream) {
        return Ok(None);
    }
    let y = apply(&rows.flatten(x)?, q, None, variant, stream)?;
    rows.restore(y).map(Some)
}

/// `x @ wᵢᵀ` for each of `weights` with the wide form, split as
/// [`Variant::wide`] plans it, once its variant passed its self-check
/// (`None` otherwise); the caller has checked the shapes and the stream.
fn try_wide(
    x: &Array,
    weights: &[&QuantizedWeight],
    stream: &Stream,
) -> Result<Option<Vec<Array>>> {
    let rows = Rows::of(x);
    let (variant, splits) = Variant::wide(x.dtype(), weights, rows.k(), rows.count());
    if !checked(variant, stream) {
        return Ok(None);
    }
    apply_wide(&rows.flatten(x)?, weights, variant, splits, stream)?
        .into_iter()
        .map(|y| rows.restore(y))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The rows of an `x` of shape `[..., K]` as the kernels take them, `[rows,
/// K]`, and their results (`[rows, N]`) shaped back to `[..., N]`.
struct Rows {
    shape: Vec<i32>,
}

impl Rows {
    /// `x` has at least one axis (the kernels' `takes` checks have held).
    fn of(x: &Array) -> Self {
        Rows {
            shape: x.shape().to_vec(),
        }
    }

    fn k(&self) -> i32 {
        self.shape[self.shape.len() - 1]
    }

    fn count(&self) -> i32 {
        self.shape[..self.shape.len() - 1].iter().product()
    }

    fn flatten(&self, x: &Array) -> Result<Array> {
        if self.shape.len() == 2 {
            Ok(x.clone())
        } else {
            Ok(x.reshape(&[self.count(), self.k()])?)
        }
    }

    fn restore(&self, y: Array) -> Result<Array> {
        if self.shape.len() == 2 {
            return Ok(y);
        }
        let mut shape = self.shape.clone();
        *shape.last_mut().expect("x has a last axis") = y.dim(-1);
        Ok(y.reshape(&shape)?)
    }
}

/// `x @ wᵀ` with our kernel, unconditionally (the caller has checked
/// [`takes`] and that `stream` is a CUDA stream). `x` is `[rows, K]`.
/// For the tests (the microbenchmark, scripts/qmm_rows.py, calls the same
/// kernel sources from Python).
pub fn product(x: &Array, q: &QuantizedWeight, stream: &Stream) -> Result<Array> {
    if !takes(x, q) || x.ndim() != 2 {
        return Err(refused(x, q));
    }
    let variant = Variant::new(Form::Matrix, x.dtype(), q, x.dim(1), x.dim(0));
    apply(x, q, None, variant, stream)
}

/// The experts' products of a mixture-of-experts layer, with our kernel:
/// for each pick `p` of `experts` (`[P]`, any integer type, any order), row
/// `p / x_per_row` of `x` (`[P / x_per_row, K]`) times the transposed matrix
/// of expert `experts[p]`, at most `tokens` picks an expert: `[P, N]`. `None`
/// where the kernel does not apply here or failed its self-check (the caller
/// uses MLX's `gather_qmm`).
pub fn experts_matmul(
    x: &Array,
    q: &QuantizedWeight,
    experts: &Array,
    x_per_row: i32,
    tokens: i32,
) -> Result<Option<Array>> {
    let stream = Stream::thread_local_or_default();
    if x.ndim() != 2 || !wants_experts(x.dtype(), q, x.dim(1), tokens) {
        return Ok(None);
    }
    let variant = Variant::experts(x.dtype(), q, x.dim(1), tokens, x_per_row);
    if !checked(variant, &stream) {
        return Ok(None);
    }
    Ok(Some(apply(x, q, Some(experts), variant, &stream)?))
}

/// `x @ wᵢᵀ` for each of `weights` (2 or 3 matrices read by the same rows:
/// q, k and v, or gate and up) in one kernel launch, where the kernel takes
/// each of them (see [`try_product`]) and they share a format; `None`
/// otherwise, and the caller multiplies them one by one. At 2–64 rows a
/// product's time is mostly its launch and ramp, not its weights
/// (`scripts/qmm_rows.py`), so one launch for several matrices saves that
/// much on each step.
pub fn matmul_shared(x: &Array, weights: &[&QuantizedWeight]) -> Result<Option<Vec<Array>>> {
    if !matches!(setting(), "ours" | "wide") || !cuda_present() || !takes_shared(x, weights) {
        return Ok(None);
    }
    crate::quant::ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    if !on_gpu(&stream) {
        return Ok(None);
    }
    if setting() == "wide" {
        return try_wide(x, weights, &stream);
    }
    let rows = Rows::of(x);
    let variant = Variant::new(
        Form::Shared(weights.len()),
        x.dtype(),
        weights[0],
        rows.k(),
        rows.count(),
    );
    if !checked(variant, &stream) {
        return Ok(None);
    }
    apply_shared(&rows.flatten(x)?, weights, variant, &stream)?
        .into_iter()
        .map(|y| rows.restore(y))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Whether a single row's q, k, v (and gate, up) products also take the
/// shared kernel, one launch for the 2–3 matrices, instead of MLX's one-row
/// kernel for each: yes (`shared`) unless `MLX_HARMONY_QMM_ONE_ROW=mlx`.
/// Three fewer launches a layer: on the H200, Llama-3-8B's single-stream
/// decode went from 172.5 to 220.1 tokens/s (medians of 12 runs, processes
/// alternating; docs/PERFORMANCE.md, "One launch for a single row's q, k, v").
pub fn shares_one_row() -> bool {
    static SETTING: OnceLock<bool> = OnceLock::new();
    *SETTING.get_or_init(|| env_setting("MLX_HARMONY_QMM_ONE_ROW", &["shared", "mlx"]) == "shared")
}

/// The shape checks of [`matmul_shared`], without the device: 2 to
/// [`MAX_SHARED`] matrices, each one [`takes`] (from one row on, with
/// [`shares_one_row`]), all of one format.
pub fn takes_shared(x: &Array, weights: &[&QuantizedWeight]) -> bool {
    let min_rows = if shares_one_row() { 1 } else { MIN_ROWS };
    (2..=MAX_SHARED).contains(&weights.len())
        && weights.iter().all(|q| takes_from(x, q, min_rows))
        && weights.iter().all(|q| {
            q.mode == weights[0].mode
                && q.bits == weights[0].bits
                && q.group_size == weights[0].group_size
        })
}

/// [`matmul_shared`] unconditionally (the caller has checked
/// [`takes_shared`] and that `stream` is a CUDA stream). For the tests.
pub fn shared_product(
    x: &Array,
    weights: &[&QuantizedWeight],
    stream: &Stream,
) -> Result<Vec<Array>> {
    if x.ndim() != 2 || !takes_shared(x, weights) {
        return Err(weights
            .first()
            .map_or_else(|| Error::Invalid("no matrices".into()), |q| refused(x, q)));
    }
    let variant = Variant::new(
        Form::Shared(weights.len()),
        x.dtype(),
        weights[0],
        x.dim(1),
        x.dim(0),
    );
    apply_shared(x, weights, variant, stream)
}

/// The wide form's products of `weights` (1 to [`MAX_SHARED`] matrices of
/// one format, each one [`takes`]) with `x` (`[rows, K]`), unconditionally
/// (the caller has checked that `stream` is a CUDA stream), K split as the
/// engine would split it or in `splits`. For the tests.
pub fn wide_product(
    x: &Array,
    weights: &[&QuantizedWeight],
    splits: Option<i32>,
    stream: &Stream,
) -> Result<Vec<Array>> {
    let format_alike = weights.len() == 1 || takes_shared(x, weights);
    if x.ndim() != 2 || weights.is_empty() || weights.len() > MAX_SHARED || !format_alike {
        return Err(weights
            .first()
            .map_or_else(|| Error::Invalid("no matrices".into()), |q| refused(x, q)));
    }
    if !takes(x, weights[0]) {
        return Err(refused(x, weights[0]));
    }
    let (variant, planned) = Variant::wide(x.dtype(), weights, x.dim(1), x.dim(0));
    let splits = splits.unwrap_or(planned).max(1);
    let variant = Variant {
        split: splits > 1,
        ..variant
    };
    apply_wide(x, weights, variant, splits, stream)
}

/// [`experts_matmul`] unconditionally (the caller has checked
/// [`takes_experts`] and that `stream` is a CUDA stream). For the tests.
pub fn experts_product(
    x: &Array,
    q: &QuantizedWeight,
    experts: &Array,
    x_per_row: i32,
    tokens: i32,
    stream: &Stream,
) -> Result<Array> {
    if x.ndim() != 2 || !takes_experts(x.dtype(), q, x.dim(1), tokens) {
        return Err(refused(x, q));
    }
    let variant = Variant::experts(x.dtype(), q, x.dim(1), tokens, x_per_row);
    apply(x, q, Some(experts), variant, stream)
}

fn refused(x: &Array, q: &QuantizedWeight) -> Error {
    Error::Invalid(format!(
        "the qmm_rows kernels do not take x {:?} ({:?}) with weights {:?} ({:?}, {} bits, group {})",
        x.shape(),
        x.dtype(),
        q.weight.shape(),
        q.mode,
        q.bits,
        q.group_size
    ))
}

fn new_kernel(name: &str, inputs: &[&str], outputs: &[&str], body: &str) -> CudaKernel {
    CudaKernel::new(name, inputs, outputs, body, HEADER)
}

/// The shared-rows kernel's body for `count` matrices: block row `y`
/// computes matrix `y`'s output, its blocks past that matrix's features
/// leave at once (the matrices may differ in N; the grid has the widest's).
fn shared_body(count: usize) -> String {
    several_body(
        count,
        "shared_body",
        "qmm_rows::product<T, BITS, GROUP, V, NT, WARPS, MXFP4, PAIRED, STAGES>",
        "blockIdx.x * 16",
        "",
    )
}

/// A body over `count` matrices read by the same rows x, one per block row
/// `y`: `product` (a header function and its template) on matrix `y` from
/// feature `n0` (an expression), with `extra` arguments after the shared
/// ones; the blocks past a matrix's features leave at once (the grid has the
/// widest matrix's). `generator` names the function that asked, in the
/// source's first line.
fn several_body(count: usize, generator: &str, product: &str, n0: &str, extra: &str) -> String {
    let mut body = format!(
        "// Generated by crates/core/src/qmm_rows.rs ({generator}): matrices that read\n\
         // the same rows x, one per block row.\n\
         const int n0 = {n0};\n\
         switch (blockIdx.y) {{\n"
    );
    for i in 0..count {
        body.push_str(&format!(
            "  case {i}:\n    if (n0 < w{i}_shape[0]) {{\n      {product}(\n        \
             x, w{i}, scales{i}, biases{i}, out{i}, x_shape[0], x_shape[1], w{i}_shape[0], \
             n0{extra});\n    }}\n    break;\n"
        ));
    }
    body.push_str("}\n");
    body
}

fn kernel(form: Form) -> &'static CudaKernel {
    static MATRIX: OnceLock<CudaKernel> = OnceLock::new();
    static EXPERTS: OnceLock<CudaKernel> = OnceLock::new();
    static SHARED: [OnceLock<CudaKernel>; MAX_SHARED + 1] =
        [const { OnceLock::new() }; MAX_SHARED + 1];
    static WIDE: [OnceLock<CudaKernel>; MAX_SHARED + 1] =
        [const { OnceLock::new() }; MAX_SHARED + 1];
    // The forms over several matrices read by the same rows: generated
    // bodies, names numbered by the matrices.
    let several = |name: &str, count: usize, body: String| {
        let (inputs, outputs) = matrix_names(count);
        new_kernel(
            &format!("{name}{count}"),
            &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
            &outputs.iter().map(String::as_str).collect::<Vec<_>>(),
            &body,
        )
    };
    match form {
        Form::Shared(count) => SHARED[count]
            .get_or_init(|| several("mlx_harmony_qmm_shared", count, shared_body(count))),
        Form::Wide(count) => {
            WIDE[count].get_or_init(|| several("mlx_harmony_qmm_wide", count, wide_body(count)))
        }
        Form::Matrix => MATRIX.get_or_init(|| {
            new_kernel(
                "mlx_harmony_qmm_rows",
                &["x", "w", "scales", "biases"],
                &["out"],
                BODY,
            )
        }),
        Form::Experts => EXPERTS.get_or_init(|| {
            new_kernel(
                "mlx_harmony_qmm_gather",
                &["x", "w", "scales", "biases", "experts"],
                &["out"],
                GATHER_BODY,
            )
        }),
    }
}

/// The inputs and outputs of the kernels over `count` matrices read by the
/// same rows: x, then each matrix's weights, scales and biases; an output
/// each.
fn matrix_names(count: usize) -> (Vec<String>, Vec<String>) {
    let mut inputs = vec!["x".to_string()];
    for i in 0..count {
        inputs.extend([format!("w{i}"), format!("scales{i}"), format!("biases{i}")]);
    }
    (inputs, (0..count).map(|i| format!("out{i}")).collect())
}

/// The wide kernel's body for `count` matrices: FT tiles of 16 features a
/// block, blockIdx.z its split of K's gridDim.z (see [`several_body`]).
fn wide_body(count: usize) -> String {
    several_body(
        count,
        "wide_body",
        "qmm_rows::product_wide<T, BITS, GROUP, V, NT, WARPS, MXFP4, PAIRED, FT>",
        "blockIdx.x * 16 * FT",
        ", blockIdx.z, gridDim.z",
    )
}

/// The body of the kernel that adds up the wide form's splits of K for
/// `count` matrices: `partial{i}` (float32, `[splits, rows, Nᵢ]`) into
/// `out{i}` (T, `[rows, Nᵢ]`), block row `y` for matrix `y`.
fn sum_splits_body(count: usize) -> String {
    let mut body = String::from(
        "// Generated by crates/core/src/qmm_rows.rs (sum_splits_body).\n\
         const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;\n\
         switch (blockIdx.y) {\n",
    );
    for i in 0..count {
        body.push_str(&format!(
            "  case {i}:\n    qmm_sum_splits::add(partial{i}, out{i}, partial{i}_shape[0],\n      \
             (size_t)partial{i}_shape[1] * partial{i}_shape[2], i);\n    break;\n"
        ));
    }
    body.push_str("}\n");
    body
}

fn sum_splits_kernel(count: usize) -> &'static CudaKernel {
    static SUMS: [OnceLock<CudaKernel>; MAX_SHARED + 1] =
        [const { OnceLock::new() }; MAX_SHARED + 1];
    SUMS[count].get_or_init(|| {
        let inputs: Vec<String> = (0..count).map(|i| format!("partial{i}")).collect();
        let outputs: Vec<String> = (0..count).map(|i| format!("out{i}")).collect();
        CudaKernel::new(
            &format!("mlx_harmony_qmm_sum_splits{count}"),
            &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
            &outputs.iter().map(String::as_str).collect::<Vec<_>>(),
            &sum_splits_body(count),
            SUM_SPLITS_HEADER,
        )
    })
}

/// Threads a block of the sum kernel.
const SUM_THREADS: i32 = 256;

/// The wide form's outputs `[rows, Nᵢ]` for `weights`, K in `splits`.
fn apply_wide(
    x: &Array,
    weights: &[&QuantizedWeight],
    variant: Variant,
    splits: i32,
    stream: &Stream,
) -> Result<Vec<Array>> {
    let rows = x.dim(0);
    let inputs = several_inputs(x, weights);
    let widths: Vec<i32> = weights.iter().map(|q| q.weight.dim(0)).collect();
    let widest = widths.iter().copied().max().unwrap_or(0);
    let features = 16 * variant.wide_tiles;
    let blocks = (
        (widest + features - 1) / features,
        weights.len() as i32,
        splits,
    );
    // More than one split: float32 sums for qmm_sum_splits (the variant's
    // `split` says the same for the callers' variants).
    let split = splits > 1;
    let shapes: Vec<Vec<i32>> = widths
        .iter()
        .map(|&n| {
            if split {
                vec![splits, rows, n]
            } else {
                vec![rows, n]
            }
        })
        .collect();
    let out_dtype = if split { Dtype::Float32 } else { x.dtype() };
    let outputs: Vec<(&[i32], Dtype)> = shapes.iter().map(|s| (&s[..], out_dtype)).collect();
    let sums = kernel(variant.form).apply(
        &inputs,
        &outputs,
        &template_args(Variant { split, ..variant }, x.dtype()),
        blocks,
        WARPS * 32,
        stream,
    )?;
    if !split {
        return Ok(sums);
    }
    let partials: Vec<&Array> = sums.iter().collect();
    let out_shapes: Vec<[i32; 2]> = widths.iter().map(|&n| [rows, n]).collect();
    let outputs: Vec<(&[i32], Dtype)> = out_shapes.iter().map(|s| (&s[..], x.dtype())).collect();
    let most = widths.iter().map(|&n| rows * n).max().unwrap_or(0);
    sum_splits_kernel(weights.len()).apply(
        &partials,
        &outputs,
        &[TemplateArg::Dtype(c"T", x.dtype())],
        (
            (most + SUM_THREADS - 1) / SUM_THREADS,
            weights.len() as i32,
            1,
        ),
        SUM_THREADS,
        stream,
    )
}

fn apply(
    x: &Array,
    q: &QuantizedWeight,
    experts: Option<&Array>,
    variant: Variant,
    stream: &Stream,
) -> Result<Array> {
    let rows = x.dim(0);
    let weight = q.weight.shape();
    let n = weight[weight.len() - 2];
    let experts = experts.map(|e| e.as_dtype(Dtype::Uint32)).transpose()?;
    let matrices = if variant.form == Form::Experts {
        weight[0]
    } else {
        1
    };
    let out_rows = experts.as_ref().map_or(rows, |e| e.dim(0));
    let mut inputs = vec![x, &q.weight, &q.scales, biases_of(q)];
    if let Some(experts) = &experts {
        inputs.push(experts);
    }
    let mut outputs = launch(
        variant,
        &inputs,
        &[[out_rows, n]],
        x.dtype(),
        (n / 16, matrices, 1),
        stream,
    )?;
    Ok(outputs.pop().expect("one output"))
}

/// The shared-rows form: one output `[rows, Nᵢ]` per matrix.
fn apply_shared(
    x: &Array,
    weights: &[&QuantizedWeight],
    variant: Variant,
    stream: &Stream,
) -> Result<Vec<Array>> {
    let rows = x.dim(0);
    let inputs = several_inputs(x, weights);
    let out_shapes: Vec<[i32; 2]> = weights.iter().map(|q| [rows, q.weight.dim(0)]).collect();
    let widest = out_shapes.iter().map(|s| s[1]).max().unwrap_or(0);
    launch(
        variant,
        &inputs,
        &out_shapes,
        x.dtype(),
        (widest / 16, weights.len() as i32, 1),
        stream,
    )
}

/// The inputs of a kernel over several matrices, in [`matrix_names`]' order.
fn several_inputs<'a>(x: &'a Array, weights: &[&'a QuantizedWeight]) -> Vec<&'a Array> {
    let mut inputs = vec![x];
    for q in weights {
        inputs.extend([&q.weight, &q.scales, biases_of(q)]);
    }
    inputs
}

/// MXFP4 has no biases; the kernels' signatures have them: the scales
/// stand in, unread.
fn biases_of(q: &QuantizedWeight) -> &Array {
    q.biases.as_ref().unwrap_or(&q.scales)
}

/// Queues `variant`'s kernel on `inputs` with `blocks` (x: blocks of 16
/// output features, y: matrices, z: 1) of [`WARPS`] warps, returning its outputs
/// (of `dtype`, shaped `out_shapes`).
fn launch(
    variant: Variant,
    inputs: &[&Array],
    out_shapes: &[[i32; 2]],
    dtype: Dtype,
    blocks: (i32, i32, i32),
    stream: &Stream,
) -> Result<Vec<Array>> {
    let outputs: Vec<(&[i32], Dtype)> = out_shapes.iter().map(|s| (&s[..], dtype)).collect();
    kernel(variant.form).apply(
        inputs,
        &outputs,
        &template_args(variant, dtype),
        blocks,
        WARPS * 32,
        stream,
    )
}

/// The template arguments of `variant`'s kernel for activations of `dtype`.
fn template_args(variant: Variant, dtype: Dtype) -> Vec<TemplateArg<'static>> {
    let mut args = vec![
        TemplateArg::Dtype(c"T", dtype),
        TemplateArg::Int(c"BITS", variant.bits),
        TemplateArg::Int(c"GROUP", variant.group),
        TemplateArg::Int(c"V", variant.octets),
        TemplateArg::Int(c"NT", variant.row_tiles),
        TemplateArg::Int(c"WARPS", WARPS),
        TemplateArg::Bool(c"MXFP4", variant.mxfp4),
        TemplateArg::Bool(c"PAIRED", variant.paired),
    ];
    match variant.form {
        // SPLIT also keeps MLX's kernel names (its cache key) apart for the
        // float32 outputs.
        Form::Wide(_) => args.extend([
            TemplateArg::Int(c"FT", variant.wide_tiles),
            TemplateArg::Bool(c"SPLIT", variant.split),
        ]),
        _ => args.extend([
            TemplateArg::Int(c"X_PER_ROW", variant.x_per_row),
            TemplateArg::Int(c"STAGES", variant.stages),
        ]),
    }
    args
}
