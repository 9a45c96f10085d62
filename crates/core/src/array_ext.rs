//! Array operations mlx-rs 0.33 does not expose publicly.

use mlx_rs::{Array, Stream};

use crate::{Error, Result};

/// `target[starts..ends] = update` (a new array; MLX updates in place when
/// it can prove the old one is no longer used).
pub fn slice_update(target: &Array, update: &Array, starts: &[i32], ends: &[i32]) -> Result<Array> {
    crate::quant::ensure_mlx_error_handler();
    let strides = vec![1i32; starts.len()];
    let stream = Stream::thread_local_or_default();
    // SAFETY: the result handle is created here and either freed or owned by the returned Array.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_slice_update(
            &mut out,
            target.as_ptr(),
            update.as_ptr(),
            starts.as_ptr(),
            starts.len(),
            ends.as_ptr(),
            ends.len(),
            strides.as_ptr(),
            strides.len(),
            stream.as_ptr(),
        );
        if status != 0 {
            mlx_sys::mlx_array_free(out);
            return Err(Error::Invalid(format!(
                "slice update of {:?} at {starts:?}..{ends:?} with {:?} failed",
                target.shape(),
                update.shape()
            )));
        }
        Ok(Array::from_ptr(out))
    }
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
    crate::quant::ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: as in `slice_update`.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_slice(
            &mut out,
            array.as_ptr(),
            starts.as_ptr(),
            starts.len(),
            ends.as_ptr(),
            ends.len(),
            strides.as_ptr(),
            strides.len(),
            stream.as_ptr(),
        );
        if status != 0 {
            mlx_sys::mlx_array_free(out);
            return Err(Error::Invalid(format!(
                "slice of {:?} at {starts:?}..{ends:?} failed",
                array.shape()
            )));
        }
        Ok(Array::from_ptr(out))
    }
}
