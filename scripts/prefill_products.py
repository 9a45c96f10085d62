#!/usr/bin/env python3
"""The quantized products of a prompt pass (hundreds to thousands of rows),
three ways, for each layer shape of a model: MLX's `quantized_matmul`; the
weights dequantized to the activations' dtype, then a dense `matmul` (the
dequantization counted every time, as a prompt pass would pay it); and the
dense `matmul` alone on weights dequantized beforehand (the floor the second
way approaches). Prints each one's time per product, its throughput in
TFLOP/s and the ratios: where the second way is faster than the first, a
prompt pass should take it (#16's first-token time is held by the prompt
pass's speed).
Medians of RUNS timed evaluations after a warm-up; each evaluation chains
CHAIN products (one graph), cycling weight copies so that none is served
from cache.

With --experts: GPT-OSS-20B's experts instead (32 experts of 2880 × 2880,
MXFP4, 4 picked a token, gate, up and down as a prompt pass calls them), per
layer: MLX's `gather_qmm` on the picks sorted by expert (mlx-lm's way, and
ours before); every expert dequantized, then `gather_mm` on the sorted
picks; and `gather_mm` alone on experts dequantized beforehand.

Usage: prefill_products.py [--shape llama3-8b|gpt-oss-20b|smollm2-135m] [--runs 10] [--chain 8]
                           [--dtype bfloat16|float16|float32] [--experts] [ROWS...]
       (default rows: 512 2048; with --experts, ROWS count tokens)
Runs with the reference environment's MLX, on the GPU when MLX has one.
"""

import argparse
import statistics
import time

import mlx.core as mx

SHAPES = {
    "llama3-8b": [("q_proj", 4096, 4096), ("k_proj/v_proj", 4096, 1024), ("o_proj", 4096, 4096),
                  ("gate/up_proj", 4096, 14336), ("down_proj", 14336, 4096)],
    "gpt-oss-20b": [("qkv", 2880, 5120), ("o_proj", 4096, 2880)],
    "smollm2-135m": [("q_proj/o_proj", 576, 576), ("gate/up_proj", 576, 1536),
                     ("down_proj", 1536, 576)],
}


def timed(make, runs):
    mx.eval(make())
    times = []
    for _ in range(runs):
        out = make()
        mx.synchronize()
        start = time.perf_counter()
        mx.eval(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--chain", type=int, default=8)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16",
                        help="the activations' and scales' dtype")
    parser.add_argument("rows", nargs="*", type=int, default=[512, 2048])
    parser.add_argument("--experts", action="store_true",
                        help="GPT-OSS-20B's experts (MXFP4) instead of the shape's matrices")
    args = parser.parse_args()
    dtype = getattr(mx, args.dtype)
    if args.experts:
        experts(args, dtype)
        return
    print(f"MLX {mx.__version__} on {mx.default_device()}; {args.shape}, {args.dtype}, {args.bits}-bit, "
          f"group {args.group}; ms a product (TFLOP/s), medians of {args.runs}")
    print("| layer | K × N | rows | quantized_matmul | dequantize + matmul | matmul alone "
          "| qmm over dequantize + matmul |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    copies = 4
    for name, k, n in SHAPES[args.shape]:
        ws = []
        for c in range(copies):
            w = mx.random.normal((n, k), key=mx.random.key(c)).astype(dtype) * 0.02
            ws.append(mx.quantize(w, group_size=args.group, bits=args.bits))
        dense = [mx.dequantize(*q, group_size=args.group, bits=args.bits) for q in ws]
        mx.eval(ws, dense)
        for rows in args.rows:
            x = (mx.random.normal((rows, k), key=mx.random.key(99)) * 0.5).astype(dtype)
            mx.eval(x)

            def qmm():
                return [mx.quantized_matmul(x, *ws[i % copies], transpose=True,
                                            group_size=args.group, bits=args.bits)
                        for i in range(args.chain)]

            def deq():
                return [x @ mx.dequantize(*ws[i % copies], group_size=args.group,
                                          bits=args.bits).T for i in range(args.chain)]

            def mm():
                return [x @ dense[i % copies].T for i in range(args.chain)]

            flop = 2 * rows * k * n
            cells = []
            times = []
            for make in (qmm, deq, mm):
                t = timed(make, args.runs) / args.chain
                times.append(t)
                cells.append(f"{t * 1e3:.3f} ({flop / t / 1e12:.0f})")
            print(f"| {name} | {k} × {n} | {rows} | " + " | ".join(cells)
                  + f" | {times[0] / times[1]:.2f}x |", flush=True)
        del ws, dense


def experts(args, dtype, count=32, hidden=2880, inter=2880, picked=4):
    """One layer's experts for a prompt pass of `rows` tokens, three ways."""
    print(f"MLX {mx.__version__} on {mx.default_device()}; GPT-OSS-20B experts ({count} of "
          f"{hidden} × {inter}, MXFP4, {picked} a token), {args.dtype}; ms a layer's gate, up "
          f"and down (TFLOP/s of the picked products), medians of {args.runs}")
    print("| tokens | gather_qmm | dequantize + gather_mm | gather_mm alone "
          "| gather_qmm over dequantize + gather_mm |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    copies = 2

    def quantized(shape, seed):
        w = mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype) * 0.02
        return mx.quantize(w, group_size=32, bits=4, mode="mxfp4")

    layers = [[quantized((count, o, i), 3 * c + j)
               for j, (o, i) in enumerate([(inter, hidden), (inter, hidden), (hidden, inter)])]
              for c in range(copies)]
    deq = lambda q: mx.dequantize(q[0], q[1], group_size=32, bits=4, mode="mxfp4").astype(dtype)
    dense = [[deq(q) for q in layer] for layer in layers]
    mx.eval(layers, dense)
    for rows in args.rows:
        x = (mx.random.normal((rows, hidden), key=mx.random.key(99)) * 0.5).astype(dtype)
        scores = mx.random.normal((rows, count), key=mx.random.key(7))
        picks = mx.argpartition(scores, count - picked, axis=-1)[:, count - picked:]
        flat = picks.reshape(-1)
        order = mx.argsort(flat)
        idx = flat[order]
        xs = x[order // picked][:, None, :]
        mx.eval(xs, idx)

        def one(product):
            def make():
                outs = []
                for i in range(args.chain):
                    gate, up, down = range(3)
                    c = i % copies
                    g = product(xs, c, gate, idx)
                    u = product(xs, c, up, idx)
                    outs.append(product(g * u, c, down, idx))
                return outs
            return make

        # Projection `m` (gate, up, down) of copy `c`.
        def by_qmm(a, c, m, ids):
            q = layers[c][m]
            return mx.gather_qmm(a, q[0], q[1], None, rhs_indices=ids, transpose=True,
                                 group_size=32, bits=4, mode="mxfp4", sorted_indices=True)

        def by_deq(a, c, m, ids):
            w = deq(layers[c][m])
            return mx.gather_mm(a, w.swapaxes(-1, -2), rhs_indices=ids, sorted_indices=True)

        def by_mm(a, c, m, ids):
            w = dense[c][m]
            return mx.gather_mm(a, w.swapaxes(-1, -2), rhs_indices=ids, sorted_indices=True)

        flop = 2 * rows * picked * hidden * inter * 3
        cells, times = [], []
        for product in (by_qmm, by_deq, by_mm):
            t = timed(one(product), args.runs) / args.chain
            times.append(t)
            cells.append(f"{t * 1e3:.3f} ({flop / t / 1e12:.0f})")
        print(f"| {rows} | " + " | ".join(cells) + f" | {times[0] / times[1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
