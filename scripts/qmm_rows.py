#!/usr/bin/env python3
"""Quantized matrix products at the row counts a batched or speculative decode
step hands MLX (#23): `quantized_matmul` with the rows shaped as a model passes
one-token sequences, (B, 1, K), against the same rows flattened to (B, K) (what
our engine does), for each layer shape of a model, with the time it takes to
read the layer's weights once at the device's memory bandwidth printed beside,
and on CUDA our own kernel (crates/core/src/kernels/qmm_rows_*, the one the
engine picks for these shapes) on the same flattened rows.
For GPT-OSS also its experts (MXFP4, 4 of 32 a token): MLX's `gather_qmm` on
the (token, expert) rows grouped by expert (mlx-lm's way for 64 picks and
more) and on the tokens with their picks unsorted (its way below), against our
experts' kernel on the unsorted picks, as the engine calls it
(crates/core/src/kernels/qmm_gather_body.cu); the bound there is reading once
the experts the tokens picked.
Medians of RUNS timed evaluations after a warm-up; each evaluation runs CHAIN
products back to back (one graph, so a product's time is not a lone call's
launch and synchronisation) and a product's time is the evaluation's over
CHAIN; weight copies are cycled so that a small layer is not served from cache.

With --floors, also what no product can go below, in the same chained
timing: a kernel that only reads the layer's packed weights once (16-byte
loads, grid-stride over every SM; the measured read against the bound) and a
kernel that does nothing but write one word (a launch's cost in the chain).

With --wide, also the wide form (MLX_HARMONY_QMM=wide: several tiles of 16
features a warp for each read of x, K split over blocks where the features
leave the GPU short of blocks, then the splits' sum kernel), split as the
engine splits it and in each of --wide-splits.

Usage: qmm_rows.py [--shape llama3-8b|gpt-oss-20b] [--bits 4] [--group 64]
                   [--bandwidth-gbs 4800] [--runs 20] [--chain 16] [--experts-only]
                   [--ours-only] [--variants 16p,8f,8ps4] [--wide] [--wide-splits 1,2,4]
                   [--floors] [--floors-only] [--read-blocks 528]
                   [ROWS...]
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


def paired_for(bits, mxfp4):
    """The dequantization route crates/core/src/qmm_rows.rs picks: 4-bit affine two at a time."""
    return bits == 4 and not mxfp4


def our_kernel(experts=False):
    """The engine's qmm_rows (or qmm_gather) kernel, from the same sources the Rust side embeds."""
    body = "qmm_gather_body.cu" if experts else "qmm_rows_body.cu"
    return mx.fast.cuda_kernel(
        name="mlx_harmony_qmm_gather" if experts else "mlx_harmony_qmm_rows",
        input_names=["x", "w", "scales", "biases"] + (["experts"] if experts else []),
        output_names=["out"],
        source=(KERNELS / body).read_text(),
        header=(KERNELS / "qmm_rows_header.cuh").read_text(),
    )


def our_product(kernel, x, wq, scales, biases, group, bits, experts=None, tokens=None, mxfp4=False,
                x_per_row=1, warps=None, paired=None, stages=1):
    """x [R, K] @ w^T (or each row times its expert's matrix) with the template
    arguments crates/core/src/qmm_rows.rs picks, or the given warps and route."""
    warps = warps or WARPS
    paired = paired_for(bits, mxfp4) if paired is None else paired
    rows, k = x.shape
    out_rows = rows if experts is None else experts.shape[0]
    n = wq.shape[-2]
    row_tiles = next(t for t in (1, 2, 4, 8) if (tokens or rows) <= 8 * t)
    octets = 4 if k % 128 == 0 else 2 if k % 64 == 0 else 1
    inputs = [x, wq, scales, scales if biases is None else biases]
    if experts is not None:
        inputs.append(experts)
    return kernel(
        inputs=inputs,
        template=[("T", x.dtype), ("BITS", bits), ("GROUP", group), ("V", octets),
                  ("NT", row_tiles), ("WARPS", warps), ("X_PER_ROW", x_per_row), ("MXFP4", mxfp4),
                  ("PAIRED", paired), ("STAGES", stages)],
        grid=(n // 16 * warps * 32, wq.shape[0] if experts is not None else 1, 1),
        threadgroup=(warps * 32, 1, 1),
        output_shapes=[(out_rows, n)],
        output_dtypes=[x.dtype],
    )[0]


WIDE_BLOCKS = 264  # as crates/core/src/qmm_rows.rs


def wide_kernels():
    """The wide form's kernel for one matrix and its splits' sum kernel, as
    crates/core/src/qmm_rows.rs builds them (the bodies as check_kernels.py
    mirrors the Rust generators)."""
    from check_kernels import sum_splits_body, wide_body
    wide = mx.fast.cuda_kernel(
        name="mlx_harmony_qmm_wide1",
        input_names=["x", "w0", "scales0", "biases0"],
        output_names=["out0"],
        source=wide_body(1),
        header=(KERNELS / "qmm_rows_header.cuh").read_text(),
    )
    sums = mx.fast.cuda_kernel(
        name="mlx_harmony_qmm_sum_splits1",
        input_names=["partial0"],
        output_names=["out0"],
        source=sum_splits_body(1),
        header=(KERNELS / "qmm_sum_splits_header.cuh").read_text(),
    )
    return wide, sums


def wide_plan(rows, k, n):
    """Tiles a warp and splits of K as qmm_rows.rs's Variant::wide picks them."""
    row_tiles = next(t for t in (1, 2, 4, 8) if rows <= 8 * t)
    tiles = min(8 // row_tiles, 4)
    octets = 4 if k % 128 == 0 else 2 if k % 64 == 0 else 1
    blocks = -(-n // (16 * tiles))
    most = max(1, k // (32 * octets) // (2 * WARPS))
    return tiles, min(max(-(-WIDE_BLOCKS // blocks), 1), most)


def wide_product(kernels, x, wq, scales, biases, group, bits, splits=None):
    """x [R, K] @ w^T with the wide form, K in `splits` (the engine's choice by default)."""
    wide, sums = kernels
    rows, k = x.shape
    n = wq.shape[0]
    tiles, planned = wide_plan(rows, k, n)
    splits = splits or planned
    row_tiles = next(t for t in (1, 2, 4, 8) if rows <= 8 * t)
    octets = 4 if k % 128 == 0 else 2 if k % 64 == 0 else 1
    split = splits > 1
    out = wide(
        inputs=[x, wq, scales, scales if biases is None else biases],
        template=[("T", x.dtype), ("BITS", bits), ("GROUP", group), ("V", octets),
                  ("NT", row_tiles), ("WARPS", WARPS), ("MXFP4", False),
                  ("PAIRED", paired_for(bits, False)), ("FT", tiles), ("SPLIT", split)],
        grid=(-(-n // (16 * tiles)) * WARPS * 32, 1, splits),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(splits, rows, n) if split else (rows, n)],
        output_dtypes=[mx.float32 if split else x.dtype],
    )[0]
    if not split:
        return out
    return sums(
        inputs=[out], template=[("T", x.dtype)],
        grid=(-(-(rows * n) // 256) * 256, 1, 1), threadgroup=(256, 1, 1),
        output_shapes=[(rows, n)], output_dtypes=[x.dtype],
    )[0]


CHAIN = 16

READ_THREADS = 256


def copies_past_cache(nbytes):
    """How many copies of an array of `nbytes` to cycle through so that
    together they pass any cache (~200 MB, 4 to 64 copies): a timed kernel
    never finds its input in L2."""
    return max(4, min(64, 1 + (200 << 20) // nbytes))


def floor_kernels():
    """A kernel that reads a packed weight array once and one that does nothing."""
    read = mx.fast.cuda_kernel(
        name="mlx_harmony_read_floor",
        input_names=["w"],
        output_names=["out"],
        source="""
            // Every 16-byte word of w once, grid-stride, four loads in flight
            // a thread; one word out a warp, so that the loads are not
            // optimised away.
            const size_t words = size_t(w_shape[0]) * w_shape[1] / 4;
            const size_t stride = size_t(gridDim.x) * blockDim.x;
            const uint4* p = reinterpret_cast<const uint4*>(w);
            uint32_t acc = 0;
            size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
            for (; i + 3 * stride < words; i += 4 * stride) {
                uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
                acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w;
                acc ^= c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
            }
            for (; i < words; i += stride) {
                uint4 v = p[i];
                acc ^= v.x ^ v.y ^ v.z ^ v.w;
            }
            for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffff, acc, o);
            if ((threadIdx.x & 31) == 0) out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = acc;
        """,
    )
    empty = mx.fast.cuda_kernel(
        name="mlx_harmony_empty_floor",
        input_names=["w"],
        output_names=["out"],
        source="if (threadIdx.x == 0) out[0] = 0;",
    )
    return read, empty


def floors_table(args, layers):
    """For each layer, the measured one-pass read of its packed weights and
    the bound; then one do-nothing kernel's time in the same chain."""
    read, empty = floor_kernels()
    blocks = args.read_blocks
    print()
    print(f"Floors (chains of {CHAIN}, medians of {args.runs}): the packed weights read once by a "
          f"kernel of {blocks} blocks x {READ_THREADS} threads, 16-byte loads")
    print("| layer | K x N | packed MB | bound ms | read ms | read/bound |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, k, n in layers:
        words = n * k * args.bits // 32
        copies = [mx.random.randint(0, 2**30, (n, k * args.bits // 32), key=mx.random.key(i)).astype(mx.uint32)
                  for i in range(copies_past_cache(words * 4))]
        mx.eval(copies)
        bound = words * 4 / (args.bandwidth_gbs * 1e9) * 1e3
        turn = {"i": 0}

        def read_call():
            w = copies[turn["i"] % len(copies)]
            turn["i"] += 1
            return read(inputs=[w], grid=(blocks * READ_THREADS, 1, 1),
                        threadgroup=(READ_THREADS, 1, 1),
                        output_shapes=[(blocks * READ_THREADS // 32,)],
                        output_dtypes=[mx.uint32])[0]

        t, _, _ = time_call(read_call, args.runs)
        print(f"| {name} | {k}x{n} | {words * 4 / 1e6:.1f} | {bound:.4f} | {t * 1e3:.4f} | "
              f"{t * 1e3 / bound:.1f} |", flush=True)
    w = mx.zeros((1, 4), dtype=mx.uint32)
    t, lo, hi = time_call(lambda: empty(inputs=[w], grid=(32, 1, 1), threadgroup=(32, 1, 1),
                                        output_shapes=[(1,)], output_dtypes=[mx.uint32])[0],
                          args.runs)
    print(f"A kernel that writes one word: {t * 1e3:.4f} ms [{lo * 1e3:.4f}-{hi * 1e3:.4f}] a launch")


def time_call(fn, runs):
    """Seconds per product: CHAIN products evaluated together, RUNS times."""
    mx.eval([fn() for _ in range(CHAIN)])  # warm-up: kernels compiled, buffers allocated
    times = []
    for _ in range(runs):
        outs = [fn() for _ in range(CHAIN)]
        start = time.perf_counter()
        mx.eval(outs)
        times.append((time.perf_counter() - start) / CHAIN)
    return statistics.median(times), min(times), max(times)


def experts_table(args):
    """GPT-OSS-20B's experts: 32 of 2880 x 2880 in MXFP4, 4 a token."""
    experts, k, n, top = 32, 2880, 2880, 4
    cuda = getattr(mx, "cuda", None)
    kernel = our_kernel(experts=True) if mx.default_device() == mx.gpu and cuda and cuda.is_available() else None
    copies = []
    for i in range(4):
        w = mx.random.normal((experts, n, k), key=mx.random.key(100 + i)).astype(mx.bfloat16)
        copies.append(mx.quantize(w, group_size=32, bits=4, mode="mxfp4"))
        mx.eval(copies[-1])  # one at a time: the float32 draws are 1 GB each
    per_expert = sum(a.nbytes for a in copies[0]) / experts
    print()
    print(f"GPT-OSS-20B experts: {experts} x {n} x {k} MXFP4, {top} a token; "
          f"bound = the picked experts read once")
    print("| tokens | picks | experts picked | gather_qmm sorted ms | unsorted ms | ours ms | best of MLX/ours | bound ms | ours/bound | max rel. diff |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for tokens in args.rows:
        if tokens > 64:
            continue
        scores = mx.random.normal((tokens, experts), key=mx.random.key(tokens))
        chosen = mx.argpartition(scores, experts - top, axis=-1)[:, experts - top:]
        picks = chosen.flatten().astype(mx.uint32)
        order = mx.argsort(picks)
        picked = picks[order]
        x_tokens = mx.random.normal((tokens, k)).astype(mx.bfloat16)
        x = x_tokens[order // top]
        mx.eval(picked, x, picks, x_tokens, chosen)
        unique = len(set(picked.tolist()))
        bound = unique * per_expert / (args.bandwidth_gbs * 1e9) * 1e3
        turn = {"i": 0}

        def weights():
            wq, scales = copies[turn["i"] % len(copies)][:2]
            turn["i"] += 1
            return wq, scales

        def theirs_sorted():
            wq, scales = weights()
            return mx.gather_qmm(x[:, None, :], wq, scales, None, rhs_indices=picked, transpose=True,
                                 group_size=32, bits=4, mode="mxfp4", sorted_indices=True)

        def theirs_unsorted():
            wq, scales = weights()
            return mx.gather_qmm(x_tokens[:, None, None, :], wq, scales, None, rhs_indices=chosen,
                                 transpose=True, group_size=32, bits=4, mode="mxfp4")

        def ours():
            wq, scales = weights()
            return our_product(kernel, x_tokens, wq, scales, None, 32, 4, experts=picks,
                               tokens=tokens, mxfp4=True, x_per_row=top)

        t_sorted, _, _ = time_call(theirs_sorted, args.runs)
        t_unsorted, _, _ = time_call(theirs_unsorted, args.runs)
        line = f"| {tokens} | {tokens * top} | {unique} | {t_sorted * 1e3:.3f} | {t_unsorted * 1e3:.3f} |"
        if kernel:
            t_ours, _, _ = time_call(ours, args.runs)
            wq, scales = copies[0][:2]
            mine = our_product(kernel, x_tokens, wq, scales, None, 32, 4, experts=picks,
                               tokens=tokens, mxfp4=True, x_per_row=top).astype(mx.float32)
            ref = mx.gather_qmm(x_tokens[:, None, None, :], wq, scales, None, rhs_indices=chosen,
                                transpose=True, group_size=32, bits=4,
                                mode="mxfp4").reshape(mine.shape).astype(mx.float32)
            diff = (mx.abs(mine - ref).max() / mx.abs(ref).max()).item()
            line += (f" {t_ours * 1e3:.3f} | {min(t_sorted, t_unsorted) / t_ours:.2f} | {bound:.4f} | "
                     f"{t_ours * 1e3 / bound:.1f} | {diff:.1e} |")
        else:
            line += f" - | - | {bound:.4f} | - | - |"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--bandwidth-gbs", type=float, default=4800.0,
                        help="memory bandwidth for the read bound (H200: 4800 GB/s)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--chain", type=int, default=16,
                        help="products evaluated together per timed evaluation")
    parser.add_argument("--experts-only", action="store_true",
                        help="GPT-OSS: only the experts' table")
    parser.add_argument("--ours-only", action="store_true",
                        help="time only our kernel (its difference then from the float32 product "
                             "with the dequantized weights)")
    parser.add_argument("--variants", default="",
                        help="more of our kernel's variants to time beside the engine's, e.g. "
                             "'16p,8f,8ps4': warps a block, then p (4-bit pairs) or f (float "
                             "route), then optionally s and the chunks of weights in flight a "
                             "warp (MLX_HARMONY_QMM_STAGES); each cell also gives its largest "
                             "relative difference from MLX")
    parser.add_argument("--wide", action="store_true",
                        help="time the wide form too (split as the engine splits K), with its "
                             "largest relative difference from MLX")
    parser.add_argument("--wide-splits", default="",
                        help="with --wide, more splits of K to time, e.g. '1,2,4'")
    parser.add_argument("--floors", action="store_true",
                        help="on CUDA, also time a kernel that only reads each layer's packed "
                             "weights, and one that does nothing (what no product goes below)")
    parser.add_argument("--floors-only", action="store_true",
                        help="only the floors (implies --floors)")
    parser.add_argument("--read-blocks", type=int, default=528,
                        help="blocks of the read kernel (4 a streaming multiprocessor on the "
                             "H100/H200's 132)")
    parser.add_argument("rows", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    args = parser.parse_args()
    global CHAIN
    CHAIN = args.chain
    print(f"MLX {mx.__version__} on {mx.default_device()}; {args.shape}, {args.bits}-bit, "
          f"group {args.group}; medians of {args.runs} evaluations of {CHAIN} products each, "
          f"ms a product; bound = weights read once at {args.bandwidth_gbs:.0f} GB/s")
    cuda = getattr(mx, "cuda", None)
    kernel = our_kernel() if mx.default_device() == mx.gpu and cuda and cuda.is_available() else None
    # WARPS, then p or f, then optionally s and the stages: "8ps4".
    variants = []
    for v in filter(None, args.variants.split(",")):
        route, _, stages = v.partition("s")
        variants.append((int(route[:-1]), route[-1] == "p", int(stages or 1)))
    wide = wide_kernels() if kernel and args.wide else None
    wide_splits = [None] + [int(v) for v in args.wide_splits.split(",") if v] if wide else []
    extra = " ours ms | (B,K)/ours | ours/bound | ours max rel. diff |" if kernel else ""
    extra += "".join(f" {w} warps, {'pairs' if p else 'float'}, {st} stages ms |"
                     for w, p, st in variants)
    extra += "".join(" wide (splits, ms, /bound, diff) |" for _ in wide_splits)
    if not args.floors_only:
        print("| layer | K x N | rows | (B,1,K) ms | (B,K) ms | (B,1,K)/(B,K) | bound ms | (B,K)/bound |"
              + extra)
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
              + (" ---: | ---: | ---: | ---: |" if kernel else "")
              + " ---: |" * (len(variants) + len(wide_splits)))
    for name, k, n in [] if args.experts_only or args.floors_only else SHAPES[args.shape]:
        copies = []
        for i in range(copies_past_cache(n * k // 2)):
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

            if args.ours_only:
                flattened = float("nan")
                line = f"| {name} | {k}x{n} | {rows} | - | - | - | {bound:.4f} | - |"
            else:
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
                if args.ours_only:
                    # The float32 product with the dequantized weights (MLX's own
                    # quantized product would be compiled anew for each shape).
                    dense = mx.dequantize(wq, scales, biases, group_size=args.group, bits=args.bits)
                    theirs = flat.astype(mx.float32) @ dense.astype(mx.float32).T
                else:
                    theirs = mx.quantized_matmul(flat, wq, scales, biases, transpose=True,
                                                 group_size=args.group, bits=args.bits)
                diff = (mx.abs(mine.astype(mx.float32) - theirs.astype(mx.float32)).max()
                        / mx.abs(theirs.astype(mx.float32)).max()).item()
                line += (f" {ours * 1e3:.3f} | {flattened / ours:.2f} | {ours * 1e3 / bound:.1f} | "
                         f"{diff:.1e} |")
                for warps, paired, stages in variants:
                    if warps > 8 and rows > 32:
                        line += " - |"  # the warps' partial sums would pass 48 KB of shared memory
                        continue

                    def variant_call():
                        wq, scales, biases = copies[turn["i"] % len(copies)]
                        turn["i"] += 1
                        return our_product(kernel, flat, wq, scales, biases, args.group, args.bits,
                                           warps=warps, paired=paired, stages=stages)

                    t, _, _ = time_call(variant_call, args.runs)
                    other = our_product(kernel, flat, wq, scales, biases, args.group, args.bits,
                                        warps=warps, paired=paired,
                                        stages=stages).astype(mx.float32)
                    other_diff = (mx.abs(other - theirs.astype(mx.float32)).max()
                                  / mx.abs(theirs.astype(mx.float32)).max()).item()
                    line += f" {t * 1e3:.3f} ({other_diff:.0e}) |"
                for splits in wide_splits:
                    def wide_call():
                        wq, scales, biases = copies[turn["i"] % len(copies)]
                        turn["i"] += 1
                        return wide_product(wide, flat, wq, scales, biases, args.group, args.bits,
                                            splits)

                    t, _, _ = time_call(wide_call, args.runs)
                    other = wide_product(wide, flat, wq, scales, biases, args.group, args.bits,
                                         splits).astype(mx.float32)
                    other_diff = (mx.abs(other - theirs.astype(mx.float32)).max()
                                  / mx.abs(theirs.astype(mx.float32)).max()).item()
                    used = splits or wide_plan(rows, k, n)[1]
                    line += (f" {used}, {t * 1e3:.3f}, {t * 1e3 / bound:.1f}x, "
                             f"{other_diff:.0e} |")
            print(line, flush=True)
    if (args.floors or args.floors_only) and kernel:
        floors_table(args, SHAPES[args.shape])
    if args.shape == "gpt-oss-20b" and not args.floors_only:
        experts_table(args)


if __name__ == "__main__":
    main()
