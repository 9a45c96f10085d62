//! Our few-row quantized products (`qmm_rows`, CUDA only) against MLX's own
//! ops (dequantize, then a float32 product): one matrix and the experts' form
//! (each row times its expert's matrix), every mode, bit width, group size
//! and activation dtype they take, 2–64 rows (tokens), shapes that pick each
//! of their code paths (K a multiple of 128, of 64, or neither), experts
//! without rows, and the model shapes. On a machine without CUDA the tests
//! say so and check only which shapes the kernels claim; `scripts/gpu-qmm`
//! runs them on the H200.

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
    quantized(&[n, k], dtype, QuantMode::Affine, group, bits, seed)
}

fn quantized(
    shape: &[i32],
    dtype: Dtype,
    mode: QuantMode,
    group: i32,
    bits: i32,
    seed: u64,
) -> QuantizedWeight {
    let w = mlx_rs::random::normal::<f32>(shape, None, None, &mlx_rs::random::key(seed).unwrap())
        .unwrap()
        .as_dtype(dtype)
        .unwrap();
    quant::quantize(&w, group, bits, mode).unwrap()
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

fn check(rows: i32, k: i32, n: i32, dtype: Dtype, group: i32, bits: i32) {
    let q = weights(n, k, dtype, group, bits, (rows * 7 + k + n) as u64);
    check_weights(rows, k, &q, dtype);
}

fn check_weights(rows: i32, k: i32, q: &QuantizedWeight, dtype: Dtype) {
    let (n, group, bits) = (q.weight.dim(0), q.group_size, q.bits);
    let start = std::time::Instant::now();
    let x = input(rows, k, dtype, (rows + 3 * k) as u64);
    assert!(
        qmm_rows::takes(&x, q),
        "rows {rows}, K {k}, N {n}, {dtype:?}, group {group}, {bits} bits"
    );
    let stream = Stream::new();
    mlx_rs::transforms::eval([&x, &q.weight, &q.scales]).unwrap();
    eprint!("rows {rows}, K {k}, N {n}, {:?}: inputs ready; ", q.mode);
    let ours = qmm_rows::product(&x, q, &stream).unwrap();
    assert_eq!(ours.shape(), &[rows, n]);
    assert_eq!(ours.dtype(), dtype);
    ours.eval().unwrap();
    eprint!("ours ran; ");
    // The reference is MLX's dequantize and a float32 product (MLX's own
    // quantized_matmul would be compiled anew by MLX's CUDA back end for each
    // new shape, up to ~40 s each on the H200, measured).
    let exact = qmm_rows::reference_product(&x, q, None).unwrap();
    let (ours_diff, scale) = difference(&ours, &exact);
    let allowed = qmm_rows::rounding_allowance(dtype, scale);
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

/// Matrices of `widths` output features and `k` inputs in one format.
fn matrices(
    widths: &[i32],
    k: i32,
    dtype: Dtype,
    (mode, group, bits): (QuantMode, i32, i32),
) -> Vec<QuantizedWeight> {
    widths
        .iter()
        .enumerate()
        .map(|(i, &n)| quantized(&[n, k], dtype, mode, group, bits, (n + k + i as i32) as u64))
        .collect()
}

/// Each of `outs` (one product of `x` per matrix of `qs`) has its shape and
/// dtype and is its float32 product up to the 16-bit rounding.
fn check_each(x: &Array, qs: &[QuantizedWeight], outs: &[Array], label: &str) {
    let (rows, k, dtype) = (x.dim(0), x.dim(1), x.dtype());
    assert_eq!(outs.len(), qs.len());
    for (out, q) in outs.iter().zip(qs) {
        assert_eq!(out.shape(), &[rows, q.weight.dim(0)]);
        assert_eq!(out.dtype(), dtype);
        let exact = qmm_rows::reference_product(x, q, None).unwrap();
        let (diff, scale) = difference(out, &exact);
        let allowed = qmm_rows::rounding_allowance(dtype, scale);
        assert!(
            diff.is_finite() && diff <= allowed,
            "{dtype:?} {label}, K {k}, rows {rows}, N {}: differs by {diff} at scale {scale}",
            q.weight.dim(0)
        );
    }
}

#[test]
fn shared_rows_match_mlx() {
    // Two or three matrices of different widths read by the same rows in
    // one launch (q, k, v; gate, up), each against its own float32 product.
    let formats = [
        (QuantMode::Affine, 64, 4),
        (QuantMode::Affine, 32, 8),
        (QuantMode::Mxfp4, 32, 4),
    ];
    let x = input(5, 256, Dtype::Bfloat16, 2);
    let qs: Vec<QuantizedWeight> = [64, 32, 32]
        .into_iter()
        .map(|n| {
            quantized(
                &[n, 256],
                Dtype::Bfloat16,
                QuantMode::Affine,
                64,
                4,
                n as u64,
            )
        })
        .collect();
    let refs: Vec<&QuantizedWeight> = qs.iter().collect();
    assert!(qmm_rows::takes_shared(&x, &refs));
    assert!(qmm_rows::takes_shared(&x, &refs[..2]));
    assert!(!qmm_rows::takes_shared(&x, &refs[..1]));
    let other = quantized(&[32, 256], Dtype::Bfloat16, QuantMode::Affine, 32, 4, 9);
    assert!(
        !qmm_rows::takes_shared(&x, &[&qs[0], &other]),
        "matrices of two formats go one by one"
    );
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    // Few cases, as each new variant is compiled by NVRTC on the GPU (the
    // one-matrix tests above cover the products' formats and row counts):
    // every format at 5 rows, K of 256 (octets 4) or 192 (octets 2); row
    // counts of each row-tile count in one format; Llama-3-8B's q, k, v.
    let stream = Stream::new();
    // (activations, format, K, the matrices' widths, rows)
    type Case = (Dtype, (QuantMode, i32, i32), i32, Vec<i32>, i32);
    let mut cases: Vec<Case> = Vec::new();
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        for format in formats {
            cases.push((dtype, format, 256, vec![64, 16, 48], 5));
            cases.push((dtype, format, 192, vec![32, 48], 5));
        }
    }
    for rows in [2, 16, 33, 64] {
        cases.push((Dtype::Bfloat16, formats[0], 256, vec![64, 16, 48], rows));
    }
    cases.push((
        Dtype::Bfloat16,
        formats[0],
        4096,
        vec![4096, 1024, 1024],
        16,
    ));
    // One row (a lone sequence's decode step, unless
    // MLX_HARMONY_QMM_ONE_ROW=mlx): each format, and Llama-3-8B's q, k, v
    // and gate, up.
    if qmm_rows::shares_one_row() {
        for format in formats {
            cases.push((Dtype::Bfloat16, format, 256, vec![64, 16, 48], 1));
        }
        cases.push((Dtype::Float16, formats[1], 192, vec![32, 48], 1));
        for widths in [vec![4096, 1024, 1024], vec![14336, 14336]] {
            cases.push((Dtype::Bfloat16, formats[0], 4096, widths, 1));
        }
    }
    for (dtype, (mode, group, bits), k, widths, rows) in cases {
        let start = std::time::Instant::now();
        let qs = matrices(&widths, k, dtype, (mode, group, bits));
        let refs: Vec<&QuantizedWeight> = qs.iter().collect();
        let x = input(rows, k, dtype, (rows + k) as u64);
        assert!(qmm_rows::takes_shared(&x, &refs));
        let outs = qmm_rows::shared_product(&x, &refs, &stream).unwrap();
        check_each(
            &x,
            &qs,
            &outs,
            &format!("{mode:?} group {group} {bits} bits"),
        );
        eprintln!(
            "{dtype:?} {mode:?} group {group} {bits} bits, K {k}, widths {widths:?}, rows {rows}: ok ({} ms)",
            start.elapsed().as_millis()
        );
    }
}

#[test]
fn one_row_takes_the_shared_kernel() {
    // A single row (a lone sequence's decode step) takes the shared
    // kernel, as the engine runs it unless MLX_HARMONY_QMM_ONE_ROW=mlx.
    let x = input(1, 256, Dtype::Bfloat16, 3);
    let qs = matrices(
        &[64, 16, 48],
        256,
        Dtype::Bfloat16,
        (QuantMode::Affine, 64, 4),
    );
    let refs: Vec<&QuantizedWeight> = qs.iter().collect();
    assert_eq!(
        qmm_rows::takes_shared(&x, &refs),
        qmm_rows::shares_one_row(),
        "one row takes the shared kernel unless MLX_HARMONY_QMM_ONE_ROW=mlx"
    );
    assert!(
        !qmm_rows::takes(&x, &qs[0]),
        "one matrix at one row stays on MLX's kernel"
    );
    // Its products on the device: one-row cases of shared_rows_match_mlx.
}

#[test]
fn the_wide_form_matches_mlx_split_or_not() {
    // The wide form (MLX_HARMONY_QMM=wide): FT tiles of 16 features a warp,
    // K split over blocks and the splits added up by a second kernel.
    // Widths that leave the last block part-filled (80 = 64 + 16 at FT 4;
    // 48 at FT 2 and 4), 1–3 matrices, each row-tile count (FT 4, 4, 2, 1),
    // K taking each load width, splits 1 to 5 (uneven shares of K; 5 leaves
    // some warps without a chunk), every format.
    let x = input(16, 256, Dtype::Bfloat16, 2);
    let q = weights(48, 256, Dtype::Bfloat16, 64, 4, 1);
    let stream = Stream::new();
    let three_d = x.reshape(&[16, 1, 256]).unwrap();
    assert!(
        qmm_rows::wide_product(&three_d, &[&q], None, &stream).is_err(),
        "rows come flattened"
    );
    assert!(qmm_rows::wide_product(&x, &[], None, &stream).is_err());
    let other = quantized(&[32, 256], Dtype::Bfloat16, QuantMode::Affine, 32, 4, 9);
    assert!(
        qmm_rows::wide_product(&x, &[&q, &other], None, &stream).is_err(),
        "matrices of two formats"
    );
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    let formats = [
        (QuantMode::Affine, 64, 4),
        (QuantMode::Affine, 128, 8),
        (QuantMode::Affine, 32, 4),
        (QuantMode::Mxfp4, 32, 4),
    ];
    // (activations, format, K, widths, rows, splits: None = the engine's)
    type Case = (
        Dtype,
        (QuantMode, i32, i32),
        i32,
        Vec<i32>,
        i32,
        Option<i32>,
    );
    let mut cases: Vec<Case> = Vec::new();
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        for format in formats {
            for splits in [Some(1), Some(3)] {
                cases.push((dtype, format, 2048, vec![80], 16, splits));
            }
        }
    }
    for rows in [2, 8, 13, 16, 17, 32, 33, 64] {
        for splits in [Some(1), Some(2), Some(5)] {
            cases.push((
                Dtype::Bfloat16,
                formats[0],
                2048,
                vec![80, 16, 48],
                rows,
                splits,
            ));
        }
    }
    // Loads of 8 and 4 bytes (K % 128 != 0); the engine's own splits.
    cases.push((Dtype::Bfloat16, formats[2], 64 * 35, vec![48], 16, Some(2)));
    cases.push((Dtype::Bfloat16, formats[2], 32 * 71, vec![48], 16, Some(2)));
    // Llama-3-8B's shapes at 16 rows as the engine splits them: q, k, v;
    // gate and up; down.
    let llama = [
        (4096, vec![4096, 1024, 1024]),
        (4096, vec![14336, 14336]),
        (14336, vec![4096]),
    ];
    for (k, widths) in llama {
        cases.push((Dtype::Bfloat16, formats[0], k, widths, 16, None));
    }
    for (dtype, (mode, group, bits), k, widths, rows, splits) in cases {
        let start = std::time::Instant::now();
        let qs = matrices(&widths, k, dtype, (mode, group, bits));
        let refs: Vec<&QuantizedWeight> = qs.iter().collect();
        let x = input(rows, k, dtype, (rows + k) as u64);
        let outs = qmm_rows::wide_product(&x, &refs, splits, &stream).unwrap();
        let label = format!("{mode:?} group {group} {bits} bits, splits {splits:?}");
        check_each(&x, &qs, &outs, &label);
        eprintln!(
            "wide {dtype:?} {mode:?} group {group} {bits} bits, K {k}, widths {widths:?}, rows \
             {rows}, splits {splits:?}: ok ({} ms)",
            start.elapsed().as_millis()
        );
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
    // MXFP4 (E8M0 scales, no biases): ours, in both forms.
    let mx = quantized(&[48, 256], Dtype::Bfloat16, QuantMode::Mxfp4, 32, 4, 3);
    assert!(qmm_rows::takes(&input(4, 256, Dtype::Bfloat16, 2), &mx));
    let experts = quantized(&[4, 48, 256], Dtype::Bfloat16, QuantMode::Mxfp4, 32, 4, 3);
    assert!(qmm_rows::takes_experts(Dtype::Bfloat16, &experts, 256, 16));
    // Experts: 2–64 tokens (one token stays on MLX's gather_qmm), a 3-axis
    // weight only.
    assert!(!qmm_rows::takes_experts(Dtype::Bfloat16, &experts, 256, 1));
    assert!(!qmm_rows::takes_experts(Dtype::Bfloat16, &experts, 256, 65));
    assert!(!qmm_rows::takes_experts(Dtype::Bfloat16, &mx, 256, 16));
    assert!(!qmm_rows::takes(
        &input(4, 256, Dtype::Bfloat16, 2),
        &experts
    ));
    // On a machine without CUDA the engine's product is MLX's (float32
    // activations: 16-bit ones take the dense route there, tested below).
    if !cuda() {
        let x = input(4, 256, Dtype::Float32, 2);
        let ours = qmm_rows::matmul(&x, &q32, true).unwrap();
        let theirs = quant::quantized_matmul(&x, &q32, true).unwrap();
        assert_eq!(difference(&ours, &theirs).0, 0.0);
    }
}

/// Where the dense route is faster, products take MLX's dense product on
/// the dequantized weights: a prompt pass's (256 rows and more) on CUDA,
/// 16-bit activations' from 4 rows on the CPU. The same values as the
/// float32 product up to rounding, for every mode and dtype; float32
/// activations, one row, or fewer than a prompt pass's rows on CUDA keep
/// the quantized product.
#[test]
fn products_dequantize_where_that_is_faster() {
    let stream = Stream::new();
    let q = weights(48, 256, Dtype::Bfloat16, 64, 4, 1);
    let q32 = weights(48, 256, Dtype::Float32, 64, 4, 1);
    // Float32 activations: dense only for a prompt pass on the CPU, and only
    // where MLX's products run on OpenBLAS (on the reference BLAS of MLX's
    // wheel the two routes are even); equal to the product then.
    let prompt = input(qmm_rows::DENSE_MIN_ROWS_CPU_F32 + 3, 256, Dtype::Float32, 2);
    let dense = qmm_rows::try_dense(&prompt, &q32, &stream).unwrap();
    let openblas_cpu = !cuda() && mlx_harmony_core::device::cpu_blas().is_some();
    assert_eq!(dense.is_some(), openblas_cpu, "float32 prompt pass");
    if let Some(dense) = dense {
        let exact = qmm_rows::reference_product(&prompt, &q32, None).unwrap();
        let (diff, scale) = difference(&dense, &exact);
        assert!(
            diff <= 1e-4 * scale,
            "float32 dense route: {diff} at scale {scale}"
        );
    }
    let decode = input(qmm_rows::DENSE_MIN_ROWS_CPU_F32 - 1, 256, Dtype::Float32, 2);
    assert!(
        qmm_rows::try_dense(&decode, &q32, &stream)
            .unwrap()
            .is_none(),
        "float32, fewer rows than a prompt pass's: MLX's product"
    );
    let one = input(1, 256, Dtype::Bfloat16, 2);
    assert!(qmm_rows::try_dense(&one, &q, &stream).unwrap().is_none());
    let few = input(qmm_rows::DENSE_MIN_ROWS - 1, 256, Dtype::Bfloat16, 2);
    assert_eq!(
        qmm_rows::try_dense(&few, &q, &stream).unwrap().is_some(),
        !cuda(),
        "fewer rows than a prompt pass's: dense on the CPU only"
    );
    let rows_checked = if cuda() {
        vec![qmm_rows::DENSE_MIN_ROWS, 700]
    } else {
        vec![qmm_rows::DENSE_MIN_ROWS_CPU, 37]
    };
    for (dtype, mode, group, bits) in [
        (Dtype::Bfloat16, QuantMode::Affine, 64, 4),
        (Dtype::Float16, QuantMode::Affine, 32, 8),
        (Dtype::Bfloat16, QuantMode::Mxfp4, 32, 4),
    ] {
        let q = quantized(&[96, 512], dtype, mode, group, bits, 5);
        for &rows in &rows_checked {
            let x = input(rows, 512, dtype, rows as u64)
                .reshape(&[1, rows, 512])
                .unwrap();
            let ours = qmm_rows::try_dense(&x, &q, &stream)
                .unwrap()
                .expect("dense route");
            assert_eq!(ours.shape(), &[1, rows, 96]);
            let exact = qmm_rows::reference_product(&x.reshape(&[rows, 512]).unwrap(), &q, None)
                .unwrap()
                .reshape(&[1, rows, 96])
                .unwrap();
            let (diff, scale) = difference(&ours, &exact);
            assert!(
                diff <= qmm_rows::rounding_allowance(dtype, scale),
                "{dtype:?} {mode:?} {bits} bits, {rows} rows: {diff} at scale {scale}"
            );
        }
    }
}

/// The experts' kernel: `tokens` tokens, each picking `top` distinct experts
/// of `q`'s, against the float32 product with each pick's dequantized expert,
/// both ways the model calls it: one row of x per token (`top` picks a row,
/// the gate and up projections) and one row per pick (the down projection).
/// Returns the experts no token picked (the kernel must skip them).
fn check_experts(tokens: i32, top: i32, k: i32, q: &QuantizedWeight, dtype: Dtype) -> usize {
    let experts = q.weight.dim(0);
    let start = std::time::Instant::now();
    // Each token's experts: a seeded shuffle's first `top`, token after
    // token, as the router hands them over (not grouped by expert).
    let mut state = (tokens as u64) * 7919 + k as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut picks: Vec<u32> = Vec::new();
    for _ in 0..tokens {
        let mut all: Vec<u32> = (0..experts as u32).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        picks.extend_from_slice(&all[..top as usize]);
    }
    let unused = (0..experts as u32).filter(|e| !picks.contains(e)).count();
    let p = picks.len() as i32;
    let picked = Array::from_slice(&picks, &[p]);
    let stream = Stream::new();
    for (rows, per_row) in [(tokens, top), (p, 1)] {
        let x = input(rows, k, dtype, (tokens * 31 + k + per_row) as u64);
        mlx_rs::transforms::eval([&x, &q.weight, &q.scales]).unwrap();
        let ours = qmm_rows::experts_product(&x, q, &picked, per_row, tokens, &stream).unwrap();
        assert_eq!(ours.shape(), &[p, q.weight.dim(1)]);
        assert_eq!(ours.dtype(), dtype);
        let exact = qmm_rows::reference_product(&x, q, Some((&picked, per_row))).unwrap();
        let (diff, scale) = difference(&ours, &exact);
        let allowed = qmm_rows::rounding_allowance(dtype, scale);
        assert!(
            diff.is_finite() && diff <= allowed,
            "{tokens} tokens x top {top} of {experts} experts, {per_row} picks a row of x, K {k}, \
             N {}, {dtype:?}, {:?} {} bits group {}: ours differs by {diff} at scale {scale} \
             (allowed {allowed})",
            q.weight.dim(1),
            q.mode,
            q.bits,
            q.group_size
        );
        eprintln!(
            "experts: {tokens} tokens x {top} of {experts}, {per_row} a row, K {k}, N {}, \
             {dtype:?}, {:?}: largest difference {diff:.2e} at scale {scale:.1}, \
             {unused} experts unused ({} ms)",
            q.weight.dim(1),
            q.mode,
            start.elapsed().as_millis()
        );
    }
    unused
}

#[test]
fn mxfp4_matrices_match_mlx() {
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        // K % 128 == 0, K % 64 == 0 only, neither.
        for k in [256, 192, 96] {
            for rows in [2, 7, 16, 33, 64] {
                let q = quantized(&[32, k], dtype, QuantMode::Mxfp4, 32, 4, rows as u64);
                check_weights(rows, k, &q, dtype);
            }
        }
    }
}

#[test]
fn experts_match_mlx_for_every_token_count_and_mode() {
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    let mut unused = 0;
    for tokens in qmm_rows::MIN_ROWS..=qmm_rows::MAX_ROWS {
        let q = quantized(&[8, 32, 128], Dtype::Bfloat16, QuantMode::Mxfp4, 32, 4, 5);
        unused += check_experts(tokens, 2, 128, &q, Dtype::Bfloat16);
    }
    // Few tokens leave experts without rows: those blocks must write nothing.
    assert!(unused > 0, "no case had an expert without rows");
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        for (mode, bits, group) in [
            (QuantMode::Mxfp4, 4, 32),
            (QuantMode::Affine, 4, 32),
            (QuantMode::Affine, 4, 64),
            (QuantMode::Affine, 8, 64),
            (QuantMode::Affine, 4, 128),
        ] {
            for k in [256, 192, 96] {
                if k % group != 0 {
                    continue;
                }
                let q = quantized(&[6, 48, k], dtype, mode, group, bits, k as u64);
                for tokens in [2, 5, 16, 40] {
                    check_experts(tokens, 3, k, &q, dtype);
                }
            }
        }
    }
}

#[test]
fn gpt_oss_experts_match_mlx() {
    if !cuda() {
        eprintln!("skipped: no CUDA device (the kernel runs only on CUDA)");
        return;
    }
    // GPT-OSS-20B: 32 experts of 2880 x 2880 (K % 128 != 0, K % 64 == 0), 4 a token.
    let q = quantized(
        &[32, 2880, 2880],
        Dtype::Bfloat16,
        QuantMode::Mxfp4,
        32,
        4,
        11,
    );
    for tokens in [2, 4, 16, 64] {
        check_experts(tokens, 4, 2880, &q, Dtype::Bfloat16);
        // The engine's entry takes these shapes: each variant's self-check
        // (a small case of its own) passes, for both ways the model calls it.
        let picks: Vec<u32> = (0..4 * tokens as u32).map(|p| p % 4).collect();
        let picks = Array::from_slice(&picks, &[4 * tokens]);
        for (rows, per_row) in [(tokens, 4), (4 * tokens, 1)] {
            let x = input(rows, 2880, Dtype::Bfloat16, 1);
            let y = qmm_rows::experts_matmul(&x, &q, &picks, per_row, tokens).unwrap();
            let y = y.unwrap_or_else(|| {
                panic!("{tokens} tokens, {per_row} picks a row: the self-check failed")
            });
            let exact = qmm_rows::reference_product(&x, &q, Some((&picks, per_row))).unwrap();
            let (diff, scale) = difference(&y, &exact);
            let allowed = qmm_rows::rounding_allowance(Dtype::Bfloat16, scale);
            assert!(diff <= allowed, "{diff} at scale {scale}");
        }
    }
}

/// The tests' reference for the experts' form is MLX's own gather_qmm (on
/// any device: this runs on the CPU too), so that the oracle the kernel is
/// held to is right.
#[test]
fn the_experts_reference_is_mlx_gather_qmm() {
    for (mode, group) in [(QuantMode::Mxfp4, 32), (QuantMode::Affine, 64)] {
        let q = quantized(&[4, 32, 128], Dtype::Float32, mode, group, 4, 9);
        // Three rows picking two experts each, in the router's order.
        let picked = Array::from_slice(&[3u32, 0, 1, 3, 0, 2], &[6]);
        let x = input(3, 128, Dtype::Float32, 4);
        let reference = qmm_rows::reference_product(&x, &q, Some((&picked, 2))).unwrap();
        let theirs = quant::gather_qmm(
            &x.reshape(&[3, 1, 1, 128]).unwrap(),
            &q,
            &picked.reshape(&[3, 2]).unwrap(),
            true,
            false,
        )
        .unwrap()
        .reshape(&[6, 32])
        .unwrap();
        let (diff, scale) = difference(&reference, &theirs);
        assert!(diff <= 1e-4 * scale, "{mode:?}: {diff} at scale {scale}");
    }
}

/// A prompt pass's experts on CUDA: every expert dequantized, then MLX's
/// dense `gather_mm` on the picks sorted by expert (`try_dense_experts`),
/// against MLX's `gather_qmm` on the same sorted picks, for MXFP4 and affine
/// experts in both 16-bit dtypes. The composition is checked on any device
/// (`dense_experts_product`); the route is taken only on CUDA, from
/// `DENSE_MIN_EXPERT_PICKS` picks, for 16-bit activations.
#[test]
fn prompt_pass_experts_dequantize_on_cuda_only() {
    let stream = Stream::new();
    let picks = qmm_rows::DENSE_MIN_EXPERT_PICKS as i32 + 37;
    let experts = 6;
    // Picks sorted by expert as the model sorts them, experts 0..6 with
    // uneven counts and expert 4 picked by none.
    let mut ids: Vec<u32> = (0..picks as u32)
        .map(|i| [0, 1, 1, 2, 3, 5, 5, 5][(i % 8) as usize])
        .collect();
    ids.sort_unstable();
    let sorted = Array::from_slice(&ids, &[picks]);
    for (dtype, mode, group, bits) in [
        (Dtype::Bfloat16, QuantMode::Mxfp4, 32, 4),
        (Dtype::Float16, QuantMode::Affine, 64, 4),
        (Dtype::Bfloat16, QuantMode::Affine, 128, 8),
    ] {
        // MLX's CPU gather_mm takes float32 only: the composition is
        // checked in float32 there, in the 16-bit dtype on CUDA.
        let exact = if cuda() { dtype } else { Dtype::Float32 };
        let q_exact = quantized(&[experts, 48, 256], exact, mode, group, bits, 11);
        let x_exact = input(picks, 256, exact, 3)
            .reshape(&[picks, 1, 256])
            .unwrap();
        let theirs = quant::gather_qmm(&x_exact, &q_exact, &sorted, true, true).unwrap();
        let dense = qmm_rows::dense_experts_product(&x_exact, &q_exact, &sorted, true).unwrap();
        assert_eq!(dense.shape(), theirs.shape());
        let (diff, scale) = difference(&dense, &theirs);
        assert!(
            diff <= qmm_rows::rounding_allowance(exact, scale),
            "{exact:?} {mode:?} {bits} bits: {diff} at scale {scale}"
        );
        let q = quantized(&[experts, 48, 256], dtype, mode, group, bits, 11);
        let x = input(picks, 256, dtype, 3)
            .reshape(&[picks, 1, 256])
            .unwrap();
        let routed = qmm_rows::try_dense_experts(&x, &q, &sorted, true, &stream).unwrap();
        assert_eq!(
            routed.is_some(),
            cuda(),
            "{dtype:?} {mode:?}: dense on CUDA only"
        );
        if let Some(routed) = routed {
            let theirs = quant::gather_qmm(&x, &q, &sorted, true, true).unwrap();
            let (diff, scale) = difference(&routed, &theirs);
            assert!(
                diff <= qmm_rows::rounding_allowance(dtype, scale),
                "routed {dtype:?} {mode:?}: {diff} at scale {scale}"
            );
        }
        // Fewer picks than a prompt pass's, or float32 activations: MLX's
        // gather_qmm everywhere.
        let few = qmm_rows::DENSE_MIN_EXPERT_PICKS as i32 - 1;
        let x_few = input(few, 256, dtype, 3).reshape(&[few, 1, 256]).unwrap();
        let sorted_few = Array::from_slice(&ids[..few as usize], &[few]);
        assert!(
            qmm_rows::try_dense_experts(&x_few, &q, &sorted_few, true, &stream)
                .unwrap()
                .is_none()
        );
        let x32 = x.as_dtype(Dtype::Float32).unwrap();
        let q32 = quantized(&[experts, 48, 256], Dtype::Float32, mode, group, bits, 11);
        assert!(
            qmm_rows::try_dense_experts(&x32, &q32, &sorted, true, &stream)
                .unwrap()
                .is_none()
        );
    }
}
