//! Array operations mlx-rs 0.33 does not expose publicly.

use mlx_rs::{Array, Stream};

use crate::{Error, Result};

/// Runs one mlx-c operation that writes a single array, on the current
/// stream; `describe` says what failed when MLX reports an error.
fn call(
    op: impl FnOnce(*mut mlx_sys::mlx_array, mlx_sys::mlx_stream) -> i32,
    describe: impl FnOnce() -> String,
) -> Result<Array> {
    crate::quant::ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: the result handle is created here and either freed or owned by
    // the returned Array; `op` only writes it.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        if op(&mut out, stream.as_ptr()) != 0 {
            mlx_sys::mlx_array_free(out);
            return Err(Error::Invalid(describe()));
        }
        Ok(Array::from_ptr(out))
    }
}

/// `a >> b`, element-wise (integers).
pub fn right_shift(a: &Array, b: &Array) -> Result<Array> {
    call(
        // SAFETY: both handles are valid arrays.
        |out, stream| unsafe { mlx_sys::mlx_right_shift(out, a.as_ptr(), b.as_ptr(), stream) },
        || format!("right shift of {:?} by {:?} failed", a.shape(), b.shape()),
    )
}

/// `a & b`, element-wise (integers).
pub fn bitwise_and(a: &Array, b: &Array) -> Result<Array> {
    call(
        // SAFETY: both handles are valid arrays.
        |out, stream| unsafe { mlx_sys::mlx_bitwise_and(out, a.as_ptr(), b.as_ptr(), stream) },
        || format!("bitwise and of {:?} and {:?} failed", a.shape(), b.shape()),
    )
}

/// `target[starts..ends] = update` (a new array; MLX updates in place when
/// it can prove the old one is no longer used).
pub fn slice_update(target: &Array, update: &Array, starts: &[i32], ends: &[i32]) -> Result<Array> {
    let strides = vec![1i32; starts.len()];
    call(
        // SAFETY: every pointer is valid for the lengths given.
        |out, stream| unsafe {
            mlx_sys::mlx_slice_update(
                out,
                target.as_ptr(),
                update.as_ptr(),
                starts.as_ptr(),
                starts.len(),
                ends.as_ptr(),
                ends.len(),
                strides.as_ptr(),
                strides.len(),
                stream,
            )
        },
        || {
            format!(
                "slice update of {:?} at {starts:?}..{ends:?} with {:?} failed",
                target.shape(),
                update.shape()
            )
        },
    )
}

/// A copy of `array` in a buffer of its own. A slice of a larger array keeps
/// that whole buffer alive (a batch's cache, held on in the prompt cache,
/// with a wrong byte count) and stops MLX from donating it to the next
/// update. mlx-rs 0.33 does not wrap `mlx_copy`, and `contiguous` may hand
/// back the same buffer, so one elementwise pass makes the copy.
pub fn owned_copy(array: &Array) -> Result<Array> {
    Ok(array.multiply(Array::from_int(1).as_dtype(array.dtype())?)?)
}

/// `array[starts..ends]` along every axis.
pub fn slice(array: &Array, starts: &[i32], ends: &[i32]) -> Result<Array> {
    slice_strided(array, starts, ends, &vec![1i32; starts.len()])
}

/// `array[starts..ends:strides]` along every axis.
pub fn slice_strided(
    array: &Array,
    starts: &[i32],
    ends: &[i32],
    strides: &[i32],
) -> Result<Array> {
    call(
        // SAFETY: every pointer is valid for the lengths given.
        |out, stream| unsafe {
            mlx_sys::mlx_slice(
                out,
                array.as_ptr(),
                starts.as_ptr(),
                starts.len(),
                ends.as_ptr(),
                ends.len(),
                strides.as_ptr(),
                strides.len(),
                stream,
            )
        },
        || {
            format!(
                "slice of {:?} at {starts:?}..{ends:?} failed",
                array.shape()
            )
        },
    )
}

/// Writes the unevaluated graph that computes `outputs` to `path` in
/// Graphviz form (MLX's `export_to_dot`): one node per primitive, which is
/// how the benchmark counts the operations of a decode step.
pub fn export_to_dot(path: &std::path::Path, outputs: &[&Array]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    crate::quant::ensure_mlx_error_handler();
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} has a NUL byte", path.display())))?;
    // SAFETY: the file, namer and vector are created and freed here; the
    // arrays stay borrowed for the call.
    unsafe {
        let file = libc::fopen(c_path.as_ptr(), c"w".as_ptr());
        if file.is_null() {
            return Err(Error::Invalid(format!(
                "cannot write {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        let vector = mlx_sys::mlx_vector_array_new();
        for array in outputs {
            mlx_sys::mlx_vector_array_append_value(vector, array.as_ptr());
        }
        let namer = mlx_sys::mlx_node_namer_new();
        let status = mlx_sys::mlx_export_to_dot(file.cast(), namer, vector);
        mlx_sys::mlx_node_namer_free(namer);
        mlx_sys::mlx_vector_array_free(vector);
        libc::fclose(file);
        if status != 0 {
            return Err(Error::Invalid("MLX could not export the graph".into()));
        }
    }
    Ok(())
}

/// A 0-d array holding `value` in `like`'s floating-point type, made from
/// host data: unlike `Array::from_f32(v).as_dtype(..)` it adds no cast to
/// the graph, which in a decode step is one kernel launch per use.
pub fn scalar_like(value: f32, like: &Array) -> Result<Array> {
    use mlx_rs::Dtype;
    Ok(match like.dtype() {
        Dtype::Float32 => Array::from_f32(value),
        Dtype::Float16 => Array::from_slice(&[half::f16::from_f32(value)], &[]),
        Dtype::Bfloat16 => Array::from_slice(&[half::bf16::from_f32(value)], &[]),
        other => Array::from_f32(value).as_dtype(other)?,
    })
}
