//! Our quantized product for the few-row shapes of a batched or speculative
//! decode step, on CUDA (#23).
//!
//! MLX's CUDA back end runs `quantized_matmul` with 2–4 rows as its one-row
//! kernel once per row, and with 8–64 rows well above the time it takes to
//! read the weights once (`scripts/qmm_rows.py` measures both). This kernel
//! reads each block of packed weights once for all rows and multiplies on the
//! tensor cores (`kernels/qmm_rows_header.cuh` says how). It is compiled by
//! MLX at run time (NVRTC, `mlx_fast_cuda_kernel`), so the same binary keeps
//! running on the CPU and on Metal, where MLX's own kernels are used.
//!
//! Chosen for: affine 4- or 8-bit weights in groups of 32, 64 or 128,
//! bfloat16 or float16 activations, 2–64 rows, `N % 16 == 0`, on a CUDA
//! stream. `MLX_HARMONY_QMM=mlx` turns it off (to compare); the first call of
//! each kernel variant checks it against MLX's dequantized product on a small case and
//! falls back to MLX, with one warning, if it does not compile or agree.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Mutex, OnceLock};

use mlx_rs::{Array, Dtype, Stream};

use crate::quant::{QuantMode, QuantizedWeight};
use crate::{Error, Result};

const HEADER: &str = include_str!("kernels/qmm_rows_header.cuh");
const BODY: &str = include_str!("kernels/qmm_rows_body.cu");

/// Warps per block; they split K.
const WARPS: i32 = 8;
/// The fewest rows the engine hands the kernel: one row (a single stream's
/// decode step) stays on MLX's one-row kernel, which is made for it.
pub const MIN_ROWS: i32 = 2;
/// The most rows one call takes (eight row tiles of 8).
pub const MAX_ROWS: i32 = 64;

/// The template arguments that make one compiled kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Variant {
    dtype: Dtype,
    bits: i32,
    group: i32,
    /// Octets of k a thread takes per step: 4 when `K % 128 == 0`, else 1.
    octets: i32,
    /// Row tiles of 8.
    row_tiles: i32,
}

impl Variant {
    fn new(dtype: Dtype, bits: i32, group: i32, k: i32, rows: i32) -> Self {
        let row_tiles = [1, 2, 4, 8]
            .into_iter()
            .find(|t| rows <= 8 * t)
            .unwrap_or(8);
        Variant {
            dtype,
            bits,
            group,
            octets: if k % 128 == 0 { 4 } else { 1 },
            row_tiles,
        }
    }
}

/// Whether the user left our kernel on (`MLX_HARMONY_QMM=mlx` turns it off).
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| match std::env::var("MLX_HARMONY_QMM") {
        Ok(v) if v.eq_ignore_ascii_case("mlx") => false,
        Ok(v) if v.eq_ignore_ascii_case("ours") || v.is_empty() => true,
        Ok(other) => {
            eprintln!(
                "warning: MLX_HARMONY_QMM={other:?} is not \"ours\" or \"mlx\"; using ours where it applies"
            );
            true
        }
        Err(_) => true,
    })
}

fn cuda_present() -> bool {
    static CUDA: OnceLock<bool> = OnceLock::new();
    *CUDA.get_or_init(|| {
        let mut cuda = false;
        // SAFETY: plain out-parameter call.
        let status = unsafe { mlx_sys::mlx_cuda_is_available(&mut cuda) };
        status == 0 && cuda
    })
}

fn on_gpu(stream: &Stream) -> bool {
    // SAFETY: out-parameter calls on a device handle made and freed here.
    unsafe {
        let mut device = mlx_sys::mlx_device_new();
        let mut kind = mlx_sys::mlx_device_type__MLX_CPU;
        let ok = mlx_sys::mlx_stream_get_device(&mut device, stream.as_ptr()) == 0
            && mlx_sys::mlx_device_get_type(&mut kind, device) == 0;
        mlx_sys::mlx_device_free(device);
        ok && kind == mlx_sys::mlx_device_type__MLX_GPU
    }
}

/// The shape checks, without the device: does the kernel take `x @ wᵀ`?
/// `x` is `[..., K]` with [`MIN_ROWS`] to [`MAX_ROWS`] rows in all.
pub fn takes(x: &Array, q: &QuantizedWeight) -> bool {
    let shape = x.shape();
    let (Some(&k), Some(&n)) = (shape.last(), q.weight.shape().first()) else {
        return false;
    };
    let rows: i32 = shape[..shape.len() - 1].iter().product();
    matches!(x.dtype(), Dtype::Bfloat16 | Dtype::Float16)
        && q.scales.dtype() == x.dtype()
        && q.biases.as_ref().is_some_and(|b| b.dtype() == x.dtype())
        && q.mode == QuantMode::Affine
        && matches!(q.bits, 4 | 8)
        && matches!(q.group_size, 32 | 64 | 128)
        && q.weight.ndim() == 2
        && q.weight.dtype() == Dtype::Uint32
        && (MIN_ROWS..=MAX_ROWS).contains(&rows)
        && k % q.group_size == 0
        && k % 32 == 0
        && q.weight.shape()[1] == k * q.bits / 32
        && n % 16 == 0
}

/// `x @ wᵀ` (with `transpose`) or `x @ w` as the models compute their
/// quantized projections: our kernel where it applies (see [`try_product`]),
/// MLX's `quantized_matmul` otherwise.
pub fn matmul(x: &Array, q: &QuantizedWeight, transpose: bool) -> Result<Array> {
    if transpose {
        crate::quant::ensure_mlx_error_handler();
        let stream = Stream::thread_local_or_default();
        if let Some(y) = try_product(x, q, &stream)? {
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
    let shape = x.shape().to_vec();
    let k = shape[shape.len() - 1];
    let rows: i32 = shape[..shape.len() - 1].iter().product();
    let variant = Variant::new(x.dtype(), q.bits, q.group_size, k, rows);
    if !checked(variant, stream) {
        return Ok(None);
    }
    let flat = if shape.len() == 2 {
        x.clone()
    } else {
        x.reshape(&[rows, k])?
    };
    let y = apply(&flat, q, variant, stream)?;
    if shape.len() == 2 {
        Ok(Some(y))
    } else {
        let mut out_shape = shape;
        *out_shape.last_mut().expect("x has a last axis") = y.dim(-1);
        Ok(Some(y.reshape(&out_shape)?))
    }
}

/// `x @ wᵀ` with our kernel, unconditionally (the caller has checked
/// [`takes`] and that `stream` is a CUDA stream). `x` is `[rows, K]`.
/// For the tests (the microbenchmark, scripts/qmm_rows.py, calls the same
/// kernel sources from Python).
pub fn product(x: &Array, q: &QuantizedWeight, stream: &Stream) -> Result<Array> {
    if !takes(x, q) || x.ndim() != 2 {
        return Err(Error::Invalid(format!(
            "qmm_rows does not take x {:?} ({:?}) with weights {:?}, {} bits, group {}",
            x.shape(),
            x.dtype(),
            q.weight.shape(),
            q.bits,
            q.group_size
        )));
    }
    let variant = Variant::new(x.dtype(), q.bits, q.group_size, x.dim(1), x.dim(0));
    apply(x, q, variant, stream)
}

/// The compiled kernel object (MLX keeps the sources and compiles each
/// variant once, on first use).
struct Kernel(mlx_sys::mlx_fast_cuda_kernel);

// SAFETY: the handle wraps an immutable std::function over the kernel's
// sources; MLX's kernel cache behind it is locked.
unsafe impl Send for Kernel {}
unsafe impl Sync for Kernel {}

fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let name = CString::new("mlx_harmony_qmm_rows").expect("no NUL");
        let source = CString::new(BODY).expect("no NUL in the kernel source");
        let header = CString::new(HEADER).expect("no NUL in the kernel header");
        // SAFETY: the vectors and strings live across the call; mlx-c copies them.
        unsafe {
            let inputs = mlx_sys::mlx_vector_string_new();
            for input in [c"x", c"w", c"scales", c"biases"] {
                mlx_sys::mlx_vector_string_append_value(inputs, input.as_ptr());
            }
            let outputs = mlx_sys::mlx_vector_string_new();
            mlx_sys::mlx_vector_string_append_value(outputs, c"out".as_ptr());
            let handle = mlx_sys::mlx_fast_cuda_kernel_new(
                name.as_ptr(),
                inputs,
                outputs,
                source.as_ptr(),
                header.as_ptr(),
                true,
                0,
            );
            mlx_sys::mlx_vector_string_free(inputs);
            mlx_sys::mlx_vector_string_free(outputs);
            Kernel(handle)
        }
    })
}

fn apply(x: &Array, q: &QuantizedWeight, variant: Variant, stream: &Stream) -> Result<Array> {
    crate::quant::ensure_mlx_error_handler();
    let (rows, n) = (x.dim(0), q.weight.dim(0));
    let biases = q.biases.as_ref().expect("takes() requires biases");
    let out_shape = [rows, n];
    let threads = WARPS * 32;
    // SAFETY: every handle made here is freed here; the result array is
    // copied into an owned handle before the vector is freed.
    unsafe {
        let config = mlx_sys::mlx_fast_cuda_kernel_config_new();
        let dtype = x.dtype() as mlx_sys::mlx_dtype;
        let mut status = mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(
            config,
            out_shape.as_ptr(),
            out_shape.len(),
            dtype,
        );
        status |= mlx_sys::mlx_fast_cuda_kernel_config_set_grid(config, (n / 16) * threads, 1, 1);
        status |= mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(config, threads, 1, 1);
        status |= mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_dtype(
            config,
            c"T".as_ptr(),
            dtype,
        );
        for (name, value) in [
            (c"BITS", variant.bits),
            (c"GROUP", variant.group),
            (c"V", variant.octets),
            (c"NT", variant.row_tiles),
            (c"WARPS", WARPS),
        ] {
            status |= mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(
                config,
                name.as_ptr(),
                value,
            );
        }
        let inputs = [
            x.as_ptr(),
            q.weight.as_ptr(),
            q.scales.as_ptr(),
            biases.as_ptr(),
        ];
        let input_vector = mlx_sys::mlx_vector_array_new_data(inputs.as_ptr(), inputs.len());
        let mut outputs = mlx_sys::mlx_vector_array_new();
        if status == 0 {
            status = mlx_sys::mlx_fast_cuda_kernel_apply(
                &mut outputs,
                kernel().0,
                input_vector,
                config,
                stream.as_ptr(),
            );
        }
        let mut result = None;
        if status == 0 && mlx_sys::mlx_vector_array_size(outputs) == 1 {
            let mut item = mlx_sys::mlx_array_new();
            mlx_sys::mlx_vector_array_get(&mut item, outputs, 0);
            result = Some(Array::from_ptr(item));
        }
        mlx_sys::mlx_vector_array_free(outputs);
        mlx_sys::mlx_vector_array_free(input_vector);
        mlx_sys::mlx_fast_cuda_kernel_config_free(config);
        result.ok_or_else(|| Error::Invalid("MLX refused the qmm_rows CUDA kernel call".into()))
    }
}

/// Runs `variant` once on a small case against MLX's dequantized product and remembers
/// whether it compiled and agreed; a failure turns it off with one warning.
fn checked(variant: Variant, stream: &Stream) -> bool {
    static RESULTS: OnceLock<Mutex<HashMap<Variant, bool>>> = OnceLock::new();
    let results = RESULTS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(&ok) = results.lock().expect("not poisoned").get(&variant) {
        return ok;
    }
    let verdict = self_check(variant, stream);
    if let Err(why) = &verdict {
        eprintln!(
            "warning: the qmm_rows CUDA kernel ({variant:?}) failed its check ({why}); \
             using MLX's quantized_matmul for these shapes"
        );
    }
    let ok = verdict.is_ok();
    results.lock().expect("not poisoned").insert(variant, ok);
    ok
}

fn self_check(variant: Variant, stream: &Stream) -> Result<()> {
    use mlx_rs::ops;
    // A K that leads to the same template arguments as the real call.
    let k = if variant.octets == 4 {
        128.max(variant.group)
    } else {
        // K % 128 != 0 and a whole number of groups (groups of 32 or 64).
        3 * variant.group
    };
    let rows = variant.row_tiles * 8 - 3;
    let n = 32;
    let key = mlx_rs::random::key(7)?;
    let w = mlx_rs::random::normal::<f32>(&[n, k], None, None, &key)?;
    let x = mlx_rs::random::normal::<f32>(&[rows, k], None, None, &mlx_rs::random::key(8)?)?
        .as_dtype(variant.dtype)?;
    let q = crate::quant::quantize(
        &w.as_dtype(variant.dtype)?,
        variant.group,
        variant.bits,
        QuantMode::Affine,
    )?;
    let ours = apply(&x, &q, variant, stream)?.as_dtype(Dtype::Float32)?;
    // Against MLX's dequantized weights in a float32 product (MLX's own
    // quantized_matmul would be compiled anew for this shape: tens of seconds).
    let exact = ops::matmul(
        &x.as_dtype(Dtype::Float32)?,
        crate::quant::dequantize(&q)?.t(),
    )?;
    let diff = ops::abs(&ours.subtract(&exact)?)?.max(None)?;
    let scale = ops::abs(&exact)?.max(None)?;
    diff.eval()?;
    scale.eval()?;
    let (diff, scale) = (diff.item_exact::<f32>(), scale.item_exact::<f32>());
    // 16-bit rounding of the weights and the result: a few units of it.
    let unit = if variant.dtype == Dtype::Bfloat16 {
        1.0 / 128.0
    } else {
        1.0 / 1024.0
    };
    if diff.is_finite() && diff <= 4.0 * unit * scale {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "largest difference {diff} against MLX's dequantized product at scale {scale}"
        )))
    }
}
