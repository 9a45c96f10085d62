#!/usr/bin/env python3
"""Host time of the operations of one batched decode step (#23): how long MLX
takes to *queue* each kind of operation a GPT-OSS-20B or Llama-3-8B layer runs
per decode step, at 1 row and at ROWS rows, measured as the time
`mx.async_eval` takes over COUNT independent copies of it (MLX encodes every
kernel on the calling thread; the device runs them meanwhile), then the time
until the device is done. A decode step is host-bound when its operations'
queueing time passes its device time: an operation whose host time grows with
the rows is what makes a batched step host-bound.

Usage: step_ops.py [--count 48] [ROWS...]   (default rows: 1 16)
Runs with the reference environment's MLX (scripts/reference-env) on the GPU
when MLX has one (the H200 through scripts/gpu-bench-bundle), else the CPU.
"""

import argparse
import time
from pathlib import Path

import mlx.core as mx

KERNELS = Path(__file__).resolve().parent.parent / "crates" / "core" / "src" / "kernels"
HIDDEN, EXPERTS, TOP, HEADS, KV_HEADS, HEAD_DIM, CONTEXT = 2880, 32, 4, 64, 8, 64, 640


def ops(rows):
    """(name, make) pairs: make() returns one fresh instance's output."""
    x = mx.random.normal((rows, HIDDEN)).astype(mx.bfloat16)
    experts = mx.quantize(mx.random.normal((EXPERTS, HIDDEN, HIDDEN)).astype(mx.bfloat16),
                          group_size=32, bits=4, mode="mxfp4")
    scores = mx.random.normal((rows, EXPERTS)).astype(mx.bfloat16)
    chosen = mx.argpartition(scores, EXPERTS - TOP, axis=-1)[:, EXPERTS - TOP:]
    q = mx.random.normal((rows, HEADS, 1, HEAD_DIM)).astype(mx.bfloat16)
    k = mx.random.normal((rows, KV_HEADS, CONTEXT, HEAD_DIM)).astype(mx.bfloat16)
    v = mx.random.normal((rows, KV_HEADS, CONTEXT, HEAD_DIM)).astype(mx.bfloat16)
    mask = mx.random.uniform(shape=(rows, 1, 1, CONTEXT)) > 0.1
    sinks = mx.random.normal((HEADS,)).astype(mx.bfloat16)
    offsets = mx.arange(rows) + 600
    norm_w = mx.ones((HIDDEN,), dtype=mx.bfloat16)
    cache = mx.zeros((rows, KV_HEADS, CONTEXT + 64, HEAD_DIM), dtype=mx.bfloat16)
    new_kv = mx.random.normal((rows, KV_HEADS, 1, HEAD_DIM)).astype(mx.bfloat16)
    mx.eval(x, experts, scores, chosen, q, k, v, mask, sinks, offsets, norm_w, cache, new_kv)
    kernel = None
    cuda = getattr(mx, "cuda", None)
    if mx.default_device() == mx.gpu and cuda and cuda.is_available():
        kernel = mx.fast.cuda_kernel(
            name="mlx_harmony_qmm_gather", input_names=["x", "w", "scales", "biases", "experts"],
            output_names=["out"], source=(KERNELS / "qmm_gather_body.cu").read_text(),
            header=(KERNELS / "qmm_rows_header.cuh").read_text())
    picks = chosen.flatten().astype(mx.uint32)
    table = [
        ("rms_norm", lambda: mx.fast.rms_norm(x, norm_w, 1e-5)),
        ("argpartition + slice (router)", lambda: mx.argpartition(
            scores, EXPERTS - TOP, axis=-1)[:, EXPERTS - TOP:]),
        ("softmax over picks", lambda: mx.softmax(
            mx.take_along_axis(scores, chosen, axis=-1), axis=-1, precise=True)),
        ("gather_qmm mxfp4, unsorted picks", lambda: mx.gather_qmm(
            x[:, None, None, :], experts[0], experts[1], None, rhs_indices=chosen, transpose=True,
            group_size=32, bits=4, mode="mxfp4")),
        ("argsort x2 + takes (sorting the picks)", lambda: (lambda order: (
            x[order // TOP], picks[order], mx.argsort(order)))(mx.argsort(picks))),
        ("rope, one offset per row", lambda: mx.fast.rope(
            q, HEAD_DIM, traditional=False, base=150000.0, scale=1.0, offset=offsets)),
        ("sdpa + mask + sinks", lambda: mx.fast.scaled_dot_product_attention(
            q, k, v, scale=0.125, mask=mask, sinks=sinks)),
        ("cache write (slice_update)", lambda: mx.slice_update(
            cache, new_kv, mx.array([0, 0, CONTEXT, 0]), axes=(0, 1, 2, 3))),
        ("take (bias per pick)", lambda: mx.take(norm_w.reshape(1, -1), mx.zeros_like(picks), 0)),
    ]
    if kernel is not None:
        table.append(("our experts' kernel (qmm_gather)", lambda: kernel(
            inputs=[x, experts[0], experts[1], experts[1], picks],
            template=[("T", mx.bfloat16), ("BITS", 4), ("GROUP", 32), ("V", 2),
                      ("NT", next(t for t in (1, 2, 4, 8) if rows <= 8 * t)), ("WARPS", 8),
                      ("X_PER_ROW", TOP), ("MXFP4", True)],
            grid=(HIDDEN // 16 * 256, EXPERTS, 1), threadgroup=(256, 1, 1),
            output_shapes=[(rows * TOP, HIDDEN)], output_dtypes=[mx.bfloat16])[0]))
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("rows", nargs="*", type=int, default=[1, 16])
    args = parser.parse_args()
    print(f"MLX {mx.__version__} on {mx.default_device()}; {args.count} copies a timing; "
          "microseconds per operation")
    tables = {rows: ops(rows) for rows in args.rows}
    head = " | ".join(f"host @{r} | device @{r}" for r in args.rows)
    print(f"| operation | {head} |")
    print("| --- |" + " ---: |" * (2 * len(args.rows)))
    for index, (name, _) in enumerate(tables[args.rows[0]]):
        cells = []
        for rows in args.rows:
            make = tables[rows][index][1]
            mx.eval([make() for _ in range(4)])  # warm-up: kernels compiled
            best_host, best_all = float("inf"), float("inf")
            for _ in range(5):
                outs = [make() for _ in range(args.count)]
                mx.synchronize()
                start = time.perf_counter()
                mx.async_eval(outs)
                queued = time.perf_counter()
                mx.synchronize()
                done = time.perf_counter()
                best_host = min(best_host, queued - start)
                best_all = min(best_all, done - start)
            cells += [f"{best_host / args.count * 1e6:.1f}", f"{best_all / args.count * 1e6:.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
