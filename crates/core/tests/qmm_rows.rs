//! Our few-row quantized product (`qmm_rows`, CUDA only) against MLX's own
//! ops (dequantize, then a float32 product): every bit width, group size and activation dtype it takes, 2–64 rows,
//! shapes that pick each of its code paths (K a multiple of 128 or not) and
//! odd ones. On a machine without CUDA the tests say so and check only which
//! shapes the kernel claims; `scripts/gpu-bench-batch` runs them on the H200.

use mlx_harmony_core::qmm_rows;
use mlx_harmony_core::quant::{self, QuantMode, QuantizedWeight};
use mlx_rs::{Array, Dtype, Stream, ops};

fn cuda() -> bool {
    let mut cuda = false;
    // SAFETY: plain out-parameter call.
    let status = unsafe { mlx_sys::mlx_cuda_is_available(&mut cuda) };
    status == 0 && cuda && mlx_harmony_core::device::gpu_available()
}

fn weights(n: i32, k: i32, dtype: Dtype, group: i32, bits: i32, seed: u64) -> QuantizedWeight {
    let w = mlx_rs::random::normal::<f32>(&[n, k], None, None, &mlx_rs::random::key(seed).unwrap())
        .unwrap()
        .as_dtype(dtype)
        .unwrap();
    quant::quantize(&w, group, bits, QuantMode::Affine).unwrap()
}

fn input(rows: i32, k: i32, dtype: Dtype, seed: u64) -> Array {
    mlx_rs::random::normal::<f32>(&[rows, k], None, None, &mlx_rs::random::key(seed).unwrap())
        .unwrap()
        .as_dtype(dtype)
        .unwrap()
}

/// Largest |a - b| and largest |reference| over the whole result.
fn difference(a: &Array, b: &Array) -> (f32, f32) {
    let a = a.as_dtype(Dtype::Float32).unwrap();
    let b = b.as_dtype(Dtype::Float32).unwrap();
    let diff = ops::abs(a.subtract(&b).unwrap())
        .unwrap()
        .max(None)
        .unwrap();
    let scale = ops::abs(&b).unwrap().max(None).unwrap();
    (diff.item_exact::<f32>(), scale.item_exact::<f32>())
}

/// The float32 product with the dequantized weights: what both kernels round.
fn exact(x: &Array, q: &QuantizedWeight) -> Array {
    let w = quant::dequantize(q).unwrap();
    ops::matmul(x.as_dtype(Dtype::Float32).unwrap(), w.t()).unwrap()
}

fn check(rows: i32, k: i32, n: i32, dtype: Dtype, group: i32, bits: i32) {
    let start = std::time::Instant::now();
    let q = weights(n, k, dtype, group, bits, (rows * 7 + k + n) as u64);
    let x = input(rows, k, dtype, (rows + 3 * k) as u64);
    assert!(
        qmm_rows::takes(&x, &q),
        "rows {rows}, K {k}, N {n}, {dtype:?}, group {group}, {bits} bits"
    );
    let stream = Stream::new();
    mlx_rs::transforms::eval([&x, &q.weight, &q.scales]).unwrap();
    eprint!("rows {rows}, K {k}, N {n}: inputs ready; ");
    let ours = qmm_rows::product(&x, &q, &stream).unwrap();
    assert_eq!(ours.shape(), &[rows, n]);
    assert_eq!(ours.dtype(), dtype);
    ours.eval().unwrap();
    eprint!("ours ran; ");
    // The reference is MLX's dequantize and a float32 product (MLX's own
    // quantized_matmul would be compiled anew by MLX's CUDA back end for each
    // new shape, up to ~40 s each on the H200, measured).
    let exact = exact(&x, &q);
    let (ours_diff, scale) = difference(&ours, &exact);
    // Ours rounds the dequantized weights and the result to 16-bit floats (as
    // MLX's kernels do): allow a few units of that rounding at the result's
    // scale. A wrong group, scale or k order is off by the scale itself.
    let unit = if dtype == Dtype::Bfloat16 {
        1.0 / 128.0
    } else {
        1.0 / 1024.0
    };
    let allowed = 4.0 * unit * scale;
    assert!(
        ours_diff.is_finite() && ours_diff <= allowed,
        "rows {rows}, K {k}, N {n}, {dtype:?}, group {group}, {bits} bits: \
         ours differs by {ours_diff} at scale {scale} (allowed {allowed})"
    );
    eprintln!(
        "{dtype:?}, group {group}, {bits} bits: largest difference {ours_diff:.2e} at scale {scale:.1} ({} ms)",
        start.elapsed().as_millis()
    );
}

#[test]
fn every_row_count_matches_mlx() {
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    for rows in qmm_rows::MIN_ROWS..=qmm_rows::MAX_ROWS {
        check(rows, 256, 48, Dtype::Bfloat16, 64, 4);
    }
}

#[test]
fn every_mode_group_and_dtype_matches_mlx() {
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        for bits in [4, 8] {
            for group in [32, 64, 128] {
                for rows in [2, 5, 16, 33] {
                    // K % 128 == 0 (16-byte loads) and, where the group
                    // allows, K % 128 != 0 (word loads).
                    check(rows, 512, 32, dtype, group, bits);
                    if group < 128 {
                        check(rows, 3 * group, 16, dtype, group, bits);
                    }
                }
            }
        }
    }
}

#[test]
fn model_shapes_match_mlx() {
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    // Llama-3-8B's projections and GPT-OSS-20B's (hidden size 2880: K % 128 != 0).
    for (k, n) in [
        (4096, 4096),
        (4096, 1024),
        (4096, 14336),
        (14336, 4096),
        (2880, 5120),
        (4096, 2880),
    ] {
        for rows in [2, 4, 16, 64] {
            check(rows, k, n, Dtype::Bfloat16, 64, 4);
        }
    }
}

#[test]
fn the_kernel_claims_only_shapes_it_handles() {
    let q = weights(48, 256, Dtype::Bfloat16, 64, 4, 1);
    assert!(qmm_rows::takes(&input(16, 256, Dtype::Bfloat16, 2), &q));
    // Batched rows [B, 1, K] count as B rows.
    let batched = input(16, 256, Dtype::Bfloat16, 2)
        .reshape(&[16, 1, 256])
        .unwrap();
    assert!(qmm_rows::takes(&batched, &q));
    // One row (MLX's one-row kernel) or too many rows (MLX's matrix kernels).
    assert!(!qmm_rows::takes(&input(1, 256, Dtype::Bfloat16, 2), &q));
    assert!(!qmm_rows::takes(&input(65, 256, Dtype::Bfloat16, 2), &q));
    // float32 activations: MLX.
    let q32 = weights(48, 256, Dtype::Float32, 64, 4, 1);
    assert!(!qmm_rows::takes(&input(4, 256, Dtype::Float32, 2), &q32));
    // Activations of another dtype than the scales: MLX.
    assert!(!qmm_rows::takes(&input(4, 256, Dtype::Float16, 2), &q));
    // N not a multiple of 16, or bits the kernel does not unpack: MLX.
    assert!(!qmm_rows::takes(
        &input(4, 256, Dtype::Bfloat16, 2),
        &weights(40, 256, Dtype::Bfloat16, 64, 4, 1)
    ));
    assert!(!qmm_rows::takes(
        &input(4, 256, Dtype::Bfloat16, 2),
        &weights(48, 256, Dtype::Bfloat16, 64, 3, 1)
    ));
    // MXFP4: MLX.
    let w = input(48, 256, Dtype::Bfloat16, 3);
    let mx = quant::quantize(&w, 32, 4, QuantMode::Mxfp4).unwrap();
    assert!(!qmm_rows::takes(&input(4, 256, Dtype::Bfloat16, 2), &mx));
    // On a machine without CUDA the engine's product is MLX's.
    if !cuda() {
        let x = input(4, 256, Dtype::Bfloat16, 2);
        let ours = qmm_rows::matmul(&x, &q, true).unwrap();
        let theirs = quant::quantized_matmul(&x, &q, true).unwrap();
        assert_eq!(difference(&ours, &theirs).0, 0.0);
    }
}
