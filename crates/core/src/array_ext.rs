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
