//! The check each kernel variant passes before its first use: a small case
//! against the float32 product of the dequantized weights (what the kernels
//! round), remembered per variant.

use mlx_rs::{Array, Dtype, Stream};

use crate::cuda_kernel::Checks;
use crate::quant::{QuantMode, QuantizedWeight};
use crate::{Error, Result};

use super::{Form, Variant, apply, apply_shared, apply_wide};

/// Runs `variant` once on a small case against MLX's dequantized product and remembers
/// whether it compiled and agreed; a failure turns it off with one warning.
pub(super) fn checked(variant: Variant, stream: &Stream) -> bool {
    static CHECKS: Checks<Variant> = Checks::new();
    let theirs = match variant.form {
        Form::Matrix | Form::Shared(_) | Form::Wide(_) => "MLX's quantized_matmul",
        Form::Experts => "MLX's gather_qmm",
    };
    CHECKS.passed(variant, "qmm_rows", theirs, || self_check(variant, stream))
}

/// The float32 product of `x` with the dequantized weights: `x @ wᵀ`, or
/// for experts' weights and `Some((experts, x_per_row))` pick `p`'s row
/// `p / x_per_row` of `x` times expert `experts[p]`'s matrix (`[P, N]`):
/// what the kernels round. MLX's own quantized products would be compiled
/// anew by its CUDA back end for each new shape (tens of seconds).
pub fn reference_product(
    x: &Array,
    q: &QuantizedWeight,
    experts: Option<(&Array, i32)>,
) -> Result<Array> {
    use mlx_rs::ops;
    let w = crate::quant::dequantize(q)?.as_dtype(Dtype::Float32)?;
    let x = x.as_dtype(Dtype::Float32)?;
    Ok(match experts {
        None => ops::matmul(&x, w.t())?,
        Some((experts, x_per_row)) => {
            let pairs = experts.dim(0);
            let rows: Vec<i32> = (0..pairs).map(|p| p / x_per_row).collect();
            let x = x.take_axis(Array::from_slice(&rows, &[pairs]), 0)?;
            let picked = w.take_axis(experts, 0)?.swap_axes(-1, -2)?;
            ops::matmul(&x.reshape(&[pairs, 1, x.dim(1)])?, &picked)?
                .reshape(&[pairs, picked.dim(-1)])?
        }
    })
}

/// How far the kernels' result may be from the float32 product with the
/// dequantized weights, at a result whose largest magnitude is `scale`: a
/// few units of the 16-bit rounding of the weights and the result (as MLX's
/// own kernels round). A wrong group, scale or k order is off by about
/// `scale` itself.
pub fn rounding_allowance(dtype: Dtype, scale: f32) -> f32 {
    let unit = if dtype == Dtype::Bfloat16 {
        1.0 / 128.0
    } else {
        1.0 / 1024.0
    };
    4.0 * unit * scale
}

fn self_check(variant: Variant, stream: &Stream) -> Result<()> {
    // A K that leads to the same template arguments as the real call: with
    // octets 2 the group is 32 or 64, with octets 1 it is 32.
    let k = match variant.octets {
        4 => 128.max(variant.group),
        2 => 192,
        _ => 96,
    };
    let rows = variant.row_tiles * 8 - 3;
    let n = 32;
    let mode = if variant.mxfp4 {
        QuantMode::Mxfp4
    } else {
        QuantMode::Affine
    };
    let quantize = |w: &Array| {
        crate::quant::quantize(
            &w.as_dtype(variant.dtype)?,
            variant.group,
            variant.bits,
            mode,
        )
    };
    let key = mlx_rs::random::key(7)?;
    let (ours, exact) = match variant.form {
        Form::Shared(count) | Form::Wide(count) => {
            let wide = matches!(variant.form, Form::Wide(_));
            // Matrices of different widths: the narrower ones' blocks past
            // their features must leave without writing. The wide form: a K
            // long enough for three uneven splits (each warp two chunks or
            // more) where the variant splits, and a first width (80) that
            // leaves its last block part-filled (one tile of four, at FT 4).
            let (k, widths, seed) = match (wide, variant.octets) {
                (false, _) => (k, [32, 16, 48], 20),
                (true, 4) => (4096, [80, 16, 48], 30),
                (true, 2) => (64 * 67, [80, 16, 48], 30),
                (true, _) => (32 * 131, [80, 16, 48], 30),
            };
            let x =
                mlx_rs::random::normal::<f32>(&[rows, k], None, None, &mlx_rs::random::key(8)?)?
                    .as_dtype(variant.dtype)?;
            let weights = (0..count)
                .map(|i| {
                    let key = mlx_rs::random::key(seed + i as u64)?;
                    quantize(&mlx_rs::random::normal::<f32>(
                        &[widths[i % 3], k],
                        None,
                        None,
                        &key,
                    )?)
                })
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&QuantizedWeight> = weights.iter().collect();
            let outputs = if wide {
                let splits = if variant.split { 3 } else { 1 };
                apply_wide(&x, &refs, variant, splits, stream)?
            } else {
                apply_shared(&x, &refs, variant, stream)?
            };
            for (out, q) in outputs.iter().zip(&weights) {
                within_rounding(out, &reference_product(&x, q, None)?, variant.dtype)?;
            }
            return Ok(());
        }
        Form::Matrix => {
            let w = mlx_rs::random::normal::<f32>(&[n, k], None, None, &key)?;
            let x =
                mlx_rs::random::normal::<f32>(&[rows, k], None, None, &mlx_rs::random::key(8)?)?
                    .as_dtype(variant.dtype)?;
            let q = quantize(&w)?;
            (
                apply(&x, &q, None, variant, stream)?,
                reference_product(&x, &q, None)?,
            )
        }
        Form::Experts => {
            // The picks interleaved as a model's come: each of `rows` rows
            // picks x_per_row distinct experts, 0, 2, 3, … (expert 1 never),
            // so that every picked expert has the most rows the variant takes.
            let per_row = variant.x_per_row.max(1);
            let w = mlx_rs::random::normal::<f32>(&[per_row + 1, n, k], None, None, &key)?;
            let experts: Vec<u32> = (0..rows * per_row)
                .map(|p| match (p % per_row) as u32 {
                    0 => 0,
                    j => j + 1,
                })
                .collect();
            let pairs = experts.len() as i32;
            let experts = Array::from_slice(&experts, &[pairs]);
            let x =
                mlx_rs::random::normal::<f32>(&[rows, k], None, None, &mlx_rs::random::key(8)?)?
                    .as_dtype(variant.dtype)?;
            let q = quantize(&w)?;
            (
                apply(&x, &q, Some(&experts), variant, stream)?,
                reference_product(&x, &q, Some((&experts, per_row)))?,
            )
        }
    };
    within_rounding(&ours, &exact, variant.dtype)
}

/// Whether `ours` is `exact` up to [`rounding_allowance`].
fn within_rounding(ours: &Array, exact: &Array, dtype: Dtype) -> Result<()> {
    use mlx_rs::ops;
    let ours = ours.as_dtype(Dtype::Float32)?;
    let diff = ops::abs(&ours.subtract(exact)?)?.max(None)?;
    let scale = ops::abs(exact)?.max(None)?;
    diff.eval()?;
    scale.eval()?;
    let (diff, scale) = (diff.item_exact::<f32>(), scale.item_exact::<f32>());
    if diff.is_finite() && diff <= rounding_allowance(dtype, scale) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "largest difference {diff} against MLX's dequantized product at scale {scale}"
        )))
    }
}
