//! Tensor parallelism over MLX's distributed layer: the process group that
//! `mlx.launch` sets up (ring over TCP or Thunderbolt, NCCL, JACCL, MPI),
//! which rank keeps which slice of a projection, and the two collectives a
//! sharded model needs (the sum of partial products, and every rank taking
//! rank 0's tokens).
//!
//! Tensor parallelism is a property of the whole process, as MLX's own
//! distributed group is: a program joins once, at start
//! ([`join_tensor_parallel`]), and from then on every model it loads keeps
//! only its rank's shard and every sample is rank 0's. Every rank runs the
//! same program on the same inputs; rank 0's output is the one shown.

use std::ops::Range;
use std::sync::OnceLock;

use mlx_rs::{Array, Stream};

use crate::{Error, Result};

/// A group of processes that compute together (MLX's `distributed::Group`).
pub struct Group {
    raw: mlx_sys::mlx_distributed_group,
    rank: i32,
    size: i32,
}

// SAFETY: the handle points at MLX's group object, which holds the
// connections and is only read after initialization; MLX itself uses one
// group from any thread (its collectives run on their own stream).
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the handle was made by mlx_distributed_init and is freed once.
        unsafe {
            mlx_sys::mlx_distributed_group_free(self.raw);
        }
    }
}

impl Group {
    /// Joins the group the environment describes (as `mlx.launch` sets it
    /// up), on `backend` (`ring`, `nccl`, `jaccl`, `mpi`) or, with `None`,
    /// the first of them the environment configures.
    pub fn init(backend: Option<&str>) -> Result<Group> {
        crate::quant::ensure_mlx_error_handler();
        let name = backend
            .map(|b| std::ffi::CString::new(b).map_err(|_| Error::Invalid("bad back end".into())))
            .transpose()?;
        let pointer = name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
        // SAFETY: the out-parameter is written by mlx-c; the name outlives the call.
        let (status, raw) = unsafe {
            let mut raw = mlx_sys::mlx_distributed_group_new();
            let status = mlx_sys::mlx_distributed_init(&mut raw, true, pointer);
            (status, raw)
        };
        if status != 0 || raw.ctx.is_null() {
            return Err(Error::Invalid(format!(
                "--tensor-parallel: MLX found no distributed environment ({}) to join. Start \
                 every rank with MLX's launcher, e.g. `mlx.launch -n 2 --backend ring -- \
                 mlx-harmony-generate --model M --prompt P --tensor-parallel` (pip install \
                 mlx; docs/DISTRIBUTED.md shows two Macs and one multi-GPU host)",
                backend.unwrap_or("ring, NCCL, JACCL or MPI")
            )));
        }
        // SAFETY: a valid group handle.
        let (rank, size) = unsafe {
            (
                mlx_sys::mlx_distributed_group_rank(raw),
                mlx_sys::mlx_distributed_group_size(raw),
            )
        };
        Ok(Group { raw, rank, size })
    }

    /// A group that only says it has `size` ranks, this being `rank`: for
    /// tests of what each rank keeps. It cannot communicate.
    #[cfg(test)]
    pub(crate) fn pretend(rank: i32, size: i32) -> Group {
        // SAFETY: an empty handle, which freeing accepts.
        let raw = unsafe { mlx_sys::mlx_distributed_group_new() };
        Group { raw, rank, size }
    }

    /// This process's place in the group, from 0.
    pub fn rank(&self) -> i32 {
        self.rank
    }

    /// How many processes the group has.
    pub fn size(&self) -> i32 {
        self.size
    }

    /// The element-wise sum of `x` over the group, on every rank (lazy, like
    /// any MLX operation).
    pub fn all_sum(&self, x: &Array) -> Result<Array> {
        if self.size == 1 {
            return Ok(x.clone());
        }
        let stream = Stream::thread_local_or_default();
        // SAFETY: the result handle is created here and owned by the returned
        // Array or freed; the inputs are valid handles.
        unsafe {
            let mut out = mlx_sys::mlx_array_new();
            if mlx_sys::mlx_distributed_all_sum(&mut out, x.as_ptr(), self.raw, stream.as_ptr())
                != 0
            {
                mlx_sys::mlx_array_free(out);
                return Err(Error::Invalid(format!(
                    "the sum of a {:?} {:?} array across the tensor-parallel group failed",
                    x.shape(),
                    x.dtype()
                )));
            }
            Ok(Array::from_ptr(out))
        }
    }

    /// Rank 0's `x` on every rank: the others follow its decisions (its
    /// samples), whatever their own random draws were.
    pub fn from_root(&self, x: &Array) -> Result<Array> {
        if self.size == 1 {
            return Ok(x.clone());
        }
        // The others add zeros computed from their own `x`: a constant would
        // let their sum run before the work that makes `x`, while rank 0's
        // waits for it, and the group's collectives would pair up wrongly.
        let mine = if self.rank == 0 {
            x.clone()
        } else {
            x.multiply(Array::from_int(0).as_dtype(x.dtype())?)?
        };
        self.all_sum(&mine)
    }

    /// Rank 0's `bytes` on every rank (the others pass `None`): how rank 0
    /// hands its decisions (a server's requests, a step's cancellations) to
    /// the ranks that follow it. Blocks until every rank has called it.
    pub fn share_bytes(&self, bytes: Option<&[u8]>) -> Result<Vec<u8>> {
        if self.size == 1 {
            return Ok(bytes.unwrap_or_default().to_vec());
        }
        // Only rank 0's bytes are shared, whatever the others pass.
        let bytes = bytes.filter(|_| self.rank == 0);
        let length = bytes.map_or(0, |b| b.len()) as u64;
        // The length as two 32-bit halves (every back end sums uint32).
        let halves = [(length & 0xffff_ffff) as u32, (length >> 32) as u32];
        let summed = self.all_sum(&Array::from_slice(&halves, &[2]))?;
        summed.eval()?;
        let halves = summed.as_slice::<u32>();
        let length = (halves[0] as u64 | ((halves[1] as u64) << 32)) as usize;
        if length == 0 {
            return Ok(Vec::new());
        }
        let mine = match bytes {
            Some(b) => Array::from_slice(b, &[length as i32]),
            None => Array::from_slice(&vec![0u8; length], &[length as i32]),
        };
        let shared = self.all_sum(&mine)?;
        shared.eval()?;
        Ok(shared.as_slice::<u8>().to_vec())
    }

    /// This rank's share of `units` equal units (heads, quantization groups):
    /// as even as the count allows, the first ranks taking one more when it
    /// does not divide. An error when some rank would get none.
    pub fn part(&self, units: i32, what: &str) -> Result<Range<i32>> {
        part(units, self.rank, self.size, what)
    }
}

/// Rank `rank`'s share of `units` among `size` ranks (see [`Group::part`]).
pub fn part(units: i32, rank: i32, size: i32, what: &str) -> Result<Range<i32>> {
    if units < size {
        return Err(Error::Invalid(format!(
            "--tensor-parallel: {units} {what} cannot be shared among {size} ranks; run on at \
             most {units} rank(s)"
        )));
    }
    let (base, extra) = (units / size, units % size);
    let start = rank * base + rank.min(extra);
    let len = base + i32::from(rank < extra);
    Ok(start..start + len)
}

static TENSOR_PARALLEL: OnceLock<Group> = OnceLock::new();

/// Makes this process a rank of a tensor-parallel group (see the module
/// doc); joining again returns the same group.
pub fn join_tensor_parallel(backend: Option<&str>) -> Result<&'static Group> {
    if let Some(group) = TENSOR_PARALLEL.get() {
        return Ok(group);
    }
    let group = Group::init(backend)?;
    Ok(TENSOR_PARALLEL.get_or_init(|| group))
}

/// The tensor-parallel group this process joined, if it did and it has more
/// than one rank.
pub fn tensor_parallel() -> Option<&'static Group> {
    TENSOR_PARALLEL.get().filter(|g| g.size > 1)
}

/// Rank 0's tokens on every rank of the tensor-parallel group (the tokens
/// themselves without one).
pub fn agree(tokens: Array) -> Result<Array> {
    match tensor_parallel() {
        Some(group) => group.from_root(&tokens),
        None => Ok(tokens),
    }
}

/// `x[.., range, ..]` along `axis`, in a buffer of its own (see [`own`]):
/// a rank's part of a loaded tensor.
pub fn own_part(x: &Array, axis: usize, range: Range<i32>) -> Result<Array> {
    let mut starts = vec![0; x.ndim()];
    let mut ends = x.shape().to_vec();
    starts[axis] = range.start;
    ends[axis] = range.end;
    own(&crate::array_ext::slice(x, &starts, &ends)?)
}

/// A copy of `x` in a buffer of its own: a slice of a loaded tensor is a
/// view that keeps the whole tensor in memory, and a rank must keep only
/// its shard. Evaluates `x`.
pub fn own(x: &Array) -> Result<Array> {
    let x = x.contiguous()?;
    x.eval()?;
    let shape: Vec<i32> = x.shape().to_vec();
    let dtype = u32::from(x.dtype()) as mlx_sys::mlx_dtype;
    // SAFETY: `x` is evaluated and row-contiguous, so its `nbytes` bytes
    // start at its data pointer; mlx_array_new_data copies them.
    let copy = unsafe {
        let data = mlx_sys::mlx_array_data_uint8(x.as_ptr());
        if data.is_null() {
            return Err(Error::Invalid(format!(
                "could not read a {:?} shard of the weights",
                x.shape()
            )));
        }
        Array::from_ptr(mlx_sys::mlx_array_new_data(
            data.cast(),
            shape.as_ptr(),
            shape.len() as i32,
            dtype,
        ))
    };
    debug_assert_eq!(copy.dtype(), x.dtype());
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_units_once_and_differ_by_at_most_one() {
        for size in 1..6 {
            for units in size..20 {
                let parts: Vec<_> = (0..size)
                    .map(|r| part(units, r, size, "heads").unwrap())
                    .collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts.last().unwrap().end, units);
                for pair in parts.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let lens: Vec<i32> = parts.iter().map(|p| p.len() as i32).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
        let err = part(3, 0, 4, "key-value heads").unwrap_err().to_string();
        assert!(
            err.contains("3 key-value heads") && err.contains("4 ranks"),
            "{err}"
        );
    }

    #[test]
    fn a_group_of_one_shares_bytes_as_they_are() {
        // A single process is a group of one: no collective runs.
        let group = Group::pretend(0, 1);
        assert_eq!(group.share_bytes(Some(b"tick")).unwrap(), b"tick");
        let x = Array::from_slice(&[3u32], &[1]);
        assert_eq!(group.from_root(&x).unwrap().as_slice::<u32>(), &[3]);
    }

    #[test]
    fn an_owned_copy_keeps_the_values_of_a_slice() {
        let x = Array::from_slice(&(0..24).map(|v| v as f32).collect::<Vec<_>>(), &[4, 6]);
        let cols = crate::array_ext::slice(&x, &[0, 2], &[4, 5]).unwrap();
        let owned = own(&cols).unwrap();
        assert_eq!(owned.shape(), &[4, 3]);
        assert_eq!(
            owned.as_slice::<f32>(),
            &[
                2.0, 3.0, 4.0, 8.0, 9.0, 10.0, 14.0, 15.0, 16.0, 20.0, 21.0, 22.0
            ]
        );
        let packed = Array::from_slice(&[1u32, 2, 3, 4, 5, 6], &[3, 2]);
        let rows = own(&crate::array_ext::slice(&packed, &[1, 0], &[3, 2]).unwrap()).unwrap();
        assert_eq!(rows.as_slice::<u32>(), &[3, 4, 5, 6]);
    }
}
