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

Usage: prefill_products.py [--shape llama3-8b|gpt-oss-20b|smollm2-135m] [--runs 10] [--chain 8]
                           [--dtype bfloat16|float16|float32] [ROWS...]
       (default rows: 512 2048)
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
    args = parser.parse_args()
    dtype = getattr(mx, args.dtype)
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


if __name__ == "__main__":
    main()
