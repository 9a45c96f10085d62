//! Products where dequantizing the weights for MLX's dense product is faster
//! than any quantized product: a prompt pass's rows on CUDA and on the CPU
//! (its experts too, on CUDA). The dequantized copy lives only until the
//! product is done.

use mlx_rs::{Array, Dtype, Stream};

use crate::Result;
use crate::cuda_kernel::{cuda_present, on_gpu};
use crate::quant::QuantizedWeight;

use super::enabled;

/// The fewest rows for which [`try_dense`] dequantizes the weights on CUDA.
pub const DENSE_MIN_ROWS: i32 = 256;
/// The fewest rows for which [`try_dense`] dequantizes the weights on the
/// CPU (16-bit activations).
pub const DENSE_MIN_ROWS_CPU: i32 = 4;
/// The fewest rows for which [`try_dense`] dequantizes the weights on the
/// CPU for float32 activations, where MLX's products run on OpenBLAS
/// ([`crate::device::cpu_blas`]).
pub const DENSE_MIN_ROWS_CPU_F32: i32 = 16;
/// The most weights [`try_dense`] dequantizes for one product (128 MB in
/// bfloat16: a layer's projections; not a large vocabulary's head).
pub const DENSE_MAX_WEIGHTS: i64 = 64 << 20;

/// `x @ wᵀ` as MLX's dense `matmul` on the weights dequantized to `x`'s
/// dtype, where that is the faster route; `None`
/// elsewhere. The dequantized copy lives only until the product is done.
/// - On CUDA, for [`DENSE_MIN_ROWS`] rows or more (a prompt pass): MLX's
///   `quantized_matmul` runs such products at 100–140 TFLOP/s on the H200,
///   the dequantization and cuBLAS's product together at 170–650 (1.6–2.3×
///   faster at 512 rows, 3–5× at 2 048–8 192).
/// - On the CPU, for [`DENSE_MIN_ROWS_CPU`] rows or more: MLX's CPU
///   `quantized_matmul` with 16-bit activations costs the same per row
///   however many the rows: 3.9–7.6× slower than dequantizing at 4 rows,
///   12–14× at 16, 17–21× from 64 (SmolLM2-135M's shapes, bfloat16; at one
///   row the two are within a factor of two either way). With float32
///   activations they are even, and float32 keeps MLX's product.
/// - On the CPU with float32 activations, where MLX's dense products run on
///   OpenBLAS (linked by `scripts/setup-mlx.py` where installed), for
///   [`DENSE_MIN_ROWS_CPU_F32`] rows or more (a prompt pass): MLX's float32
///   `quantized_matmul` costs the same per row, OpenBLAS's product far less
///   per row once the dequantization is shared by enough of them. On the
///   reference BLAS of MLX's wheel the two are even, and MLX's product stays.
/// - On Metal: MLX's product (its quantized kernels are made for it).
///
/// `scripts/prefill_products.py` measures all three ways (2026-12-01).
pub fn try_dense(x: &Array, q: &QuantizedWeight, stream: &Stream) -> Result<Option<Array>> {
    let shape = x.shape();
    let Some(&k) = shape.last() else {
        return Ok(None);
    };
    let rows: i32 = shape[..shape.len() - 1].iter().product();
    let weights = q.weight.shape();
    let dense_weights = i64::from(weights[0]) * i64::from(k);
    let half = matches!(x.dtype(), Dtype::Bfloat16 | Dtype::Float16);
    if !enabled()
        || weights.len() != 2
        || dense_weights > DENSE_MAX_WEIGHTS
        || !(half || x.dtype() == Dtype::Float32)
    {
        return Ok(None);
    }
    let dense_here = if on_gpu(stream) {
        half && cuda_present() && rows >= DENSE_MIN_ROWS
    } else if half {
        rows >= DENSE_MIN_ROWS_CPU
    } else {
        rows >= DENSE_MIN_ROWS_CPU_F32 && crate::device::cpu_blas().is_some()
    };
    if !dense_here {
        return Ok(None);
    }
    let w = crate::quant::dequantize(q)?.as_dtype(x.dtype())?;
    if w.dim(-1) != k {
        return Ok(None);
    }
    Ok(Some(mlx_rs::ops::matmul(x, w.t())?))
}

/// The fewest (token, expert) picks for which [`try_dense_experts`]
/// dequantizes every expert on CUDA (256 tokens at GPT-OSS's 4 a token).
/// MLX's `gather_qmm` costs ~9 µs a pick and layer on GPT-OSS-20B's experts
/// (MXFP4, H200); dequantizing all 32 experts ~2.8 ms a layer, after which
/// `gather_mm` costs ~1.2 µs a pick: even at ~360 picks.
pub const DENSE_MIN_EXPERT_PICKS: usize = 1024;
/// The most weights [`try_dense_experts`] dequantizes for one projection of
/// all experts (2.5 GB in bfloat16, freed once the product is done):
/// GPT-OSS-120B's 128 experts of 2880 × 2880 (1.06 G) fit.
pub const DENSE_MAX_EXPERT_WEIGHTS: i64 = 1_280 << 20;

/// The experts' product `gather_qmm(x, q, experts)` (transposed) as MLX's
/// dense `gather_mm` on every expert dequantized to `x`'s dtype, where that
/// is the faster route: a prompt pass's picks on CUDA ([`DENSE_MIN_EXPERT_PICKS`]
/// or more, 16-bit activations); `None` elsewhere. MLX's CUDA `gather_qmm`
/// runs at ~6 TFLOP/s whatever the tokens (GPT-OSS-20B's experts, MXFP4, on
/// the H200: 18.2 ms a layer's gate, up and down for 512 tokens, 72 ms for
/// 2 048); dequantized, 5.3 and 6.7 ms (`scripts/prefill_products.py
/// --experts`, 2026-12-01), so a prompt pass's experts are 3.4× faster at
/// 512-token chunks. `x`: `[N, 1, K]` rows (or `[..., 1|k, 1, K]`),
/// `experts`: their experts, ascending where `sorted`.
pub fn try_dense_experts(
    x: &Array,
    q: &QuantizedWeight,
    experts: &Array,
    sorted: bool,
    stream: &Stream,
) -> Result<Option<Array>> {
    let weights = q.weight.shape();
    let half = matches!(x.dtype(), Dtype::Bfloat16 | Dtype::Float16);
    if !enabled()
        || !half
        || weights.len() != 3
        || experts.size() < DENSE_MIN_EXPERT_PICKS
        || !on_gpu(stream)
        || !cuda_present()
    {
        return Ok(None);
    }
    let Some(&k) = x.shape().last() else {
        return Ok(None);
    };
    let dense_weights = i64::from(weights[0]) * i64::from(weights[1]) * i64::from(k);
    if dense_weights > DENSE_MAX_EXPERT_WEIGHTS {
        return Ok(None);
    }
    dense_experts_product(x, q, experts, sorted).map(Some)
}

/// `gather_qmm(x, q, experts)` (transposed) computed as `gather_mm` on every
/// expert of `q` dequantized to `x`'s dtype, on any device: the body of
/// [`try_dense_experts`], public for its test against `gather_qmm`.
pub fn dense_experts_product(
    x: &Array,
    q: &QuantizedWeight,
    experts: &Array,
    sorted: bool,
) -> Result<Array> {
    let w = crate::quant::dequantize(q)?.as_dtype(x.dtype())?;
    Ok(mlx_rs::ops::gather_mm(
        x,
        w.swap_axes(-1, -2)?,
        None,
        Some(experts),
        sorted,
    )?)
}
