//! Quantized matrix products in every MLX quantization mode.
//!
//! mlx-rs 0.33 hard-codes mode "affine" in its quantization ops, but GPT-OSS
//! experts are stored in MXFP4 (4-bit floats, one shared power-of-two scale per
//! 32 values, no biases). These wrappers call the mlx-c functions directly
//! with the mode string; their results are ordinary `mlx_rs::Array`s.

use std::ffi::CStr;

use mlx_rs::{Array, Stream};

use crate::{Error, Result};

/// How a weight matrix is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantMode {
    /// `w ≈ scale * q + bias` per group (mlx-lm's 2/3/4/5/6/8-bit).
    Affine,
    /// OCP microscaling FP4: E2M1 values, an E8M0 scale per 32 values.
    Mxfp4,
}

impl QuantMode {
    fn as_cstr(self) -> &'static CStr {
        match self {
            QuantMode::Affine => c"affine",
            QuantMode::Mxfp4 => c"mxfp4",
        }
    }

    /// Parses the `mode` field of a checkpoint's quantization block.
    pub fn parse(mode: &str) -> Result<Self> {
        match mode {
            "affine" => Ok(QuantMode::Affine),
            "mxfp4" => Ok(QuantMode::Mxfp4),
            other => Err(Error::Invalid(format!(
                "unsupported quantization mode {other:?}; supported: \"affine\", \"mxfp4\""
            ))),
        }
    }
}

/// A quantized weight: packed values, scales, and biases (affine only).
#[derive(Debug)]
pub struct QuantizedWeight {
    pub weight: Array,
    pub scales: Array,
    pub biases: Option<Array>,
    pub group_size: i32,
    pub bits: i32,
    pub mode: QuantMode,
}

/// mlx-c's default error handler exits the process. mlx-rs replaces it with
/// one that reports errors as values the first time any of its ops runs;
/// running one cheap op guarantees that before we call mlx-c ourselves.
pub(crate) fn ensure_mlx_error_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = mlx_rs::ops::abs(Array::from_int(0));
    });
}

fn check(status: i32, what: &str) -> Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "MLX rejected {what}; check the shapes, group size and bits"
        )))
    }
}

/// Takes ownership of a result array written by an mlx-c call.
fn owned(raw: mlx_sys::mlx_array) -> Array {
    // SAFETY: `raw` was produced by mlx-c for us and is not referenced elsewhere.
    unsafe { Array::from_ptr(raw) }
}

fn optional_int(value: i32) -> mlx_sys::mlx_optional_int {
    mlx_sys::mlx_optional_int {
        value,
        has_value: true,
    }
}

/// Quantizes `w` (last axis grouped by `group_size`).
pub fn quantize(w: &Array, group_size: i32, bits: i32, mode: QuantMode) -> Result<QuantizedWeight> {
    ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: every handle created here is either freed or handed to an `Array`.
    unsafe {
        let mut parts = mlx_sys::mlx_vector_array_new();
        let no_global_scale = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_quantize(
            &mut parts,
            w.as_ptr(),
            optional_int(group_size),
            optional_int(bits),
            mode.as_cstr().as_ptr(),
            no_global_scale,
            stream.as_ptr(),
        );
        mlx_sys::mlx_array_free(no_global_scale);
        if status != 0 {
            mlx_sys::mlx_vector_array_free(parts);
        }
        check(status, "quantize")?;
        let count = mlx_sys::mlx_vector_array_size(parts);
        let mut arrays = Vec::with_capacity(count);
        for index in 0..count {
            let mut item = mlx_sys::mlx_array_new();
            mlx_sys::mlx_vector_array_get(&mut item, parts, index);
            arrays.push(owned(item));
        }
        mlx_sys::mlx_vector_array_free(parts);
        let mut arrays = arrays.into_iter();
        let (Some(weight), Some(scales)) = (arrays.next(), arrays.next()) else {
            return Err(Error::Invalid(
                "quantize returned fewer than two arrays".into(),
            ));
        };
        Ok(QuantizedWeight {
            weight,
            scales,
            biases: arrays.next(),
            group_size,
            bits,
            mode,
        })
    }
}

/// Reconstructs the floating-point matrix of a quantized weight.
pub fn dequantize(q: &QuantizedWeight) -> Result<Array> {
    ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: as in `quantize`.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let no_array = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_dequantize(
            &mut out,
            q.weight.as_ptr(),
            q.scales.as_ptr(),
            q.biases.as_ref().map_or(no_array, Array::as_ptr),
            optional_int(q.group_size),
            optional_int(q.bits),
            q.mode.as_cstr().as_ptr(),
            no_array,
            mlx_sys::mlx_optional_dtype {
                value: mlx_sys::mlx_dtype__MLX_FLOAT32,
                has_value: false,
            },
            stream.as_ptr(),
        );
        mlx_sys::mlx_array_free(no_array);
        if status != 0 {
            mlx_sys::mlx_array_free(out);
        }
        check(status, "dequantize")?;
        Ok(owned(out))
    }
}

/// `x @ wᵀ` (with `transpose`) or `x @ w`, with `w` quantized in any mode:
/// MLX's `quantized_matmul`, whatever the shapes and device. The models call
/// [`crate::qmm_rows::matmul`], which picks our few-row kernel where it applies.
pub fn quantized_matmul(x: &Array, q: &QuantizedWeight, transpose: bool) -> Result<Array> {
    ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: as in `quantize`.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let no_array = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_quantized_matmul(
            &mut out,
            x.as_ptr(),
            q.weight.as_ptr(),
            q.scales.as_ptr(),
            q.biases.as_ref().map_or(no_array, Array::as_ptr),
            transpose,
            optional_int(q.group_size),
            optional_int(q.bits),
            q.mode.as_cstr().as_ptr(),
            stream.as_ptr(),
        );
        mlx_sys::mlx_array_free(no_array);
        if status != 0 {
            mlx_sys::mlx_array_free(out);
        }
        check(status, "quantized_matmul")?;
        Ok(owned(out))
    }
}

/// Expert matmuls for mixture-of-experts layers: for every row of `x`, the
/// product with the quantized matrix of the expert `rhs_indices` names.
/// `x`: `[..., 1, in]`, `rhs_indices`: `[...]`, result `[..., 1, out]`.
pub fn gather_qmm(
    x: &Array,
    q: &QuantizedWeight,
    rhs_indices: &Array,
    transpose: bool,
    sorted: bool,
) -> Result<Array> {
    ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: as in `quantize`.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let no_array = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_gather_qmm(
            &mut out,
            x.as_ptr(),
            q.weight.as_ptr(),
            q.scales.as_ptr(),
            q.biases.as_ref().map_or(no_array, Array::as_ptr),
            no_array,
            rhs_indices.as_ptr(),
            transpose,
            optional_int(q.group_size),
            optional_int(q.bits),
            q.mode.as_cstr().as_ptr(),
            sorted,
            stream.as_ptr(),
        );
        mlx_sys::mlx_array_free(no_array);
        if status != 0 {
            mlx_sys::mlx_array_free(out);
        }
        check(status, "gather_qmm")?;
        Ok(owned(out))
    }
}
