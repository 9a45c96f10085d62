#!/usr/bin/env python3
"""Quantized matrix products at the row counts a batched or speculative decode
step hands MLX (#23): `quantized_matmul` with the rows shaped as a model passes
one-token sequences, (B, 1, K), against the same rows flattened to (B, K) (what
our engine does), for each layer shape of a model, with the time it takes to
read the layer's weights once at the device's memory bandwidth printed beside,
and on CUDA our own kernel (crates/core/src/kernels/qmm_rows_*, the one the
engine picks for these shapes) on the same flattened rows.
Medians of RUNS timed calls after a warm-up; each call is evaluated alone, and
weight copies are cycled so that a small layer is not served from cache.

Usage: qmm_rows.py [--shape llama3-8b|gpt-oss-20b] [--bits 4] [--group 64]
                   [--bandwidth-gbs 4800] [--runs 20] [ROWS...]
Runs with the reference environment's MLX (scripts/reference-env), on the GPU
when MLX has one (the H200 through scripts/gpu-bench-bundle), else the CPU.
"""

import argparse
import statistics
import time
from pathlib import Path

import mlx.core as mx

# (name, in features K, out features N) of one layer's projections.
SHAPES = {
    "llama3-8b": [("q_proj", 4096, 4096), ("k_proj/v_proj", 4096, 1024), ("o_proj", 4096, 4096),
                  ("gate/up_proj", 4096, 14336), ("down_proj", 14336, 4096), ("lm_head", 4096, 128256)],
    "gpt-oss-20b": [("qkv", 2880, 5120), ("o_proj", 4096, 2880), ("router", 2880, 32),
                    ("lm_head", 2880, 201088)],
}


KERNELS = Path(__file__).resolve().parent.parent / "crates" / "core" / "src" / "kernels"
WARPS = 8  # as crates/core/src/qmm_rows.rs


def our_kernel():
    """The engine's qmm_rows kernel, from the same sources the Rust side embeds."""
    return mx.fast.cuda_kernel(
        name="mlx_harmony_qmm_rows",
        input_names=["x", "w", "scales", "biases"],
        output_names=["out"],
        source=(KERNELS / "qmm_rows_body.cu").read_text(),
        header=(KERNELS / "qmm_rows_header.cuh").read_text(),
    )


def our_product(kernel, x, wq, scales, biases, group, bits):
    """x [R, K] @ w^T with the template arguments crates/core/src/qmm_rows.rs picks."""
    rows, k = x.shape
    n = wq.shape[0]
    row_tiles = next(t for t in (1, 2, 4, 8) if rows <= 8 * t)
    return kernel(
        inputs=[x, wq, scales, biases],
        template=[("T", x.dtype), ("BITS", bits), ("GROUP", group),
                  ("V", 4 if k % 128 == 0 else 1), ("NT", row_tiles), ("WARPS", WARPS)],
        grid=(n // 16 * WARPS * 32, 1, 1),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(rows, n)],
        output_dtypes=[x.dtype],
    )[0]


def time_call(fn, runs):
    fn()  # warm-up: kernels compiled, buffers allocated
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--bandwidth-gbs", type=float, default=4800.0,
                        help="memory bandwidth for the read bound (H200: 4800 GB/s)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("rows", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    args = parser.parse_args()
    print(f"MLX {mx.__version__} on {mx.default_device()}; {args.shape}, {args.bits}-bit, "
          f"group {args.group}; medians of {args.runs} (ms); bound = weights read once at "
          f"{args.bandwidth_gbs:.0f} GB/s")
    cuda = getattr(mx, "cuda", None)
    kernel = our_kernel() if mx.default_device() == mx.gpu and cuda and cuda.is_available() else None
    extra = " ours ms | (B,K)/ours | ours/bound | ours max rel. diff |" if kernel else ""
    print("| layer | K x N | rows | (B,1,K) ms | (B,K) ms | (B,1,K)/(B,K) | bound ms | (B,K)/bound |" + extra)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: | ---: | ---: |" if kernel else ""))
    for name, k, n in SHAPES[args.shape]:
        # Enough copies of the weights that together they pass any cache.
        copies = []
        for i in range(4):
            w = mx.random.normal((n, k), key=mx.random.key(i)).astype(mx.bfloat16)
            copies.append(mx.quantize(w, group_size=args.group, bits=args.bits))
        mx.eval(copies)
        weight_bytes = sum(a.nbytes for a in copies[0])
        bound = weight_bytes / (args.bandwidth_gbs * 1e9) * 1e3
        for rows in args.rows:
            x = mx.random.normal((rows, 1, k)).astype(mx.bfloat16)
            flat = x.reshape(rows, k)
            mx.eval(x, flat)
            turn = {"i": 0}

            def call(inputs):
                wq, scales, biases = copies[turn["i"] % len(copies)]
                turn["i"] += 1
                return mx.quantized_matmul(inputs, wq, scales, biases, transpose=True,
                                           group_size=args.group, bits=args.bits)

            batched, _, _ = time_call(lambda: call(x), args.runs)
            flattened, _, _ = time_call(lambda: call(flat), args.runs)
            line = (f"| {name} | {k}x{n} | {rows} | {batched * 1e3:.3f} | {flattened * 1e3:.3f} | "
                    f"{batched / flattened:.2f} | {bound:.4f} | {flattened * 1e3 / bound:.1f} |")
            if kernel and rows <= 64 and n % 16 == 0:
                def ours_call():
                    wq, scales, biases = copies[turn["i"] % len(copies)]
                    turn["i"] += 1
                    return our_product(kernel, flat, wq, scales, biases, args.group, args.bits)

                ours, _, _ = time_call(ours_call, args.runs)
                wq, scales, biases = copies[0]
                mine = our_product(kernel, flat, wq, scales, biases, args.group, args.bits)
                theirs = mx.quantized_matmul(flat, wq, scales, biases, transpose=True,
                                             group_size=args.group, bits=args.bits)
                diff = (mx.abs(mine.astype(mx.float32) - theirs.astype(mx.float32)).max()
                        / mx.abs(theirs.astype(mx.float32)).max()).item()
                line += (f" {ours * 1e3:.3f} | {flattened / ours:.2f} | {ours * 1e3 / bound:.1f} | "
                         f"{diff:.1e} |")
            print(line, flush=True)


if __name__ == "__main__":
    main()
