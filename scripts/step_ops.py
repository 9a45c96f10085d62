#!/usr/bin/env python3
"""Host time of the operations of one batched decode step (#23): how long MLX
takes to *queue* each kind of operation a GPT-OSS-20B or Llama-3-8B layer runs
per decode step, at 1 row and at ROWS rows, measured as the time
`mx.async_eval` takes over COUNT independent copies of it (MLX encodes every
kernel on the calling thread; the device runs them meanwhile), then the time
until the device is done. A decode step is host-bound when its operations'
queueing time passes its device time: an operation whose host time grows with
the rows is what makes a batched step host-bound.

Usage: step_ops.py [--count 48] [--shape gpt-oss-20b|llama3-8b] [ROWS...]
       (default rows: 1 16). The Llama table also times a cache write the way
       the engine does it (each write takes the last one's array, so MLX
       updates it in place) and a whole layer with MLX's products.
Runs with the reference environment's MLX (scripts/reference-env) on the GPU
when MLX has one (the H200 through scripts/gpu-bench-bundle), else the CPU.
"""

import argparse
import time
from pathlib import Path

import mlx.core as mx

KERNELS = Path(__file__).resolve().parent.parent / "crates" / "core" / "src" / "kernels"
HIDDEN, EXPERTS, TOP, HEADS, KV_HEADS, HEAD_DIM, CONTEXT = 2880, 32, 4, 64, 8, 64, 640


def llama_ops(rows):
    """The Llama-3-8B-shaped layer's operations of a batched decode step (the
    engine's order: models/blocks.rs), as (name, make) pairs; make(count)
    returns the outputs of `count` instances."""
    hidden, heads, kv_heads, head_dim, inter, context = 4096, 32, 8, 128, 14336, 640
    x = mx.random.normal((rows, hidden)).astype(mx.bfloat16)
    norm_w = mx.ones((hidden,), dtype=mx.bfloat16)
    q = mx.random.normal((rows, heads, 1, head_dim)).astype(mx.bfloat16)
    k = mx.random.normal((rows, kv_heads, context, head_dim)).astype(mx.bfloat16)
    v = mx.random.normal((rows, kv_heads, context, head_dim)).astype(mx.bfloat16)
    new_kv = mx.random.normal((rows, kv_heads, 1, head_dim)).astype(mx.bfloat16)
    gate = mx.random.normal((rows, inter)).astype(mx.bfloat16)
    up = mx.random.normal((rows, inter)).astype(mx.bfloat16)
    attn_out = mx.random.normal((rows, heads, 1, head_dim)).astype(mx.bfloat16)
    capacity = context + 256
    # Rows joined at different steps: each masks its own first columns.
    mask = mx.arange(context)[None, None, None, :] >= (mx.arange(rows) % 32)[:, None, None, None]
    mx.eval(x, norm_w, q, k, v, new_kv, gate, up, attn_out, mask)

    def weights(n, k_):
        return mx.quantize(mx.random.normal((n, k_)).astype(mx.bfloat16) * 0.02, group_size=64,
                           bits=4)

    wq, wk, wv, wo = (weights(n, hidden) for n in (hidden, 1024, 1024, hidden))
    wg, wu, wd = weights(inter, hidden), weights(inter, hidden), weights(hidden, inter)
    mx.eval(wq, wk, wv, wo, wg, wu, wd)

    def qmm(a, w):
        return mx.quantized_matmul(a, w[0], w[1], w[2], transpose=True, group_size=64, bits=4)

    def cache_writes(count):
        # As the engine writes: each write takes the array the last one made
        # and nothing else holds it, so MLX may update it in place.
        cache = mx.zeros((rows, kv_heads, capacity, head_dim), dtype=mx.bfloat16)
        mx.eval(cache)
        for i in range(count):
            column = context + i % 256
            cache = mx.slice_update(cache, new_kv, mx.array([0, 0, column, 0]),
                                    axes=(0, 1, 2, 3))
        return [cache]

    def layer(h):
        n = mx.fast.rms_norm(h, norm_w, 1e-5)
        qq, kk, vv = qmm(n, wq), qmm(n, wk), qmm(n, wv)
        qq = mx.fast.rope(qq.reshape(rows, 1, heads, head_dim).transpose(0, 2, 1, 3), head_dim,
                          traditional=False, base=500000.0, scale=1.0, offset=context)
        kk = mx.fast.rope(kk.reshape(rows, 1, kv_heads, head_dim).transpose(0, 2, 1, 3),
                          head_dim, traditional=False, base=500000.0, scale=1.0, offset=context)
        vv = vv.reshape(rows, 1, kv_heads, head_dim).transpose(0, 2, 1, 3)
        # The new keys and values are not written (timed above): attention
        # reads the context as it is, plus the step's rope output kept live.
        o = mx.fast.scaled_dot_product_attention(qq + kk.sum() * 0 + vv.sum() * 0, k, v,
                                                 scale=head_dim ** -0.5)
        h = h + qmm(o.transpose(0, 2, 1, 3).reshape(rows, hidden), wo)
        n = mx.fast.rms_norm(h, norm_w, 1e-5)
        g, u = qmm(n, wg), qmm(n, wu)
        return h + qmm(g * mx.sigmoid(g) * u, wd)

    def products(h):
        return [qmm(h, w) for w in (wq, wk, wv, wo, wg, wu)] + [qmm(gate, wd)]

    def many(make):
        return lambda count: [make() for _ in range(count)]

    return [
        ("rms_norm", many(lambda: mx.fast.rms_norm(x, norm_w, 1e-5))),
        ("rope q (32 heads), one offset", many(lambda: mx.fast.rope(
            q, head_dim, traditional=False, base=500000.0, scale=1.0, offset=context))),
        ("cache write, a copy (input still held)", many(lambda: mx.slice_update(
            k, new_kv, mx.array([0, 0, context - 1, 0]), axes=(0, 1, 2, 3)))),
        ("cache write, chained (in place)", cache_writes),
        ("sdpa, no mask (640 positions)", many(lambda: mx.fast.scaled_dot_product_attention(
            q, k, v, scale=head_dim ** -0.5))),
        ("sdpa, a mask (one padding a row)", many(lambda: mx.fast.scaled_dot_product_attention(
            q, k, v, scale=head_dim ** -0.5, mask=mask))),
        ("attention output to rows (transpose, reshape)", many(
            lambda: attn_out.transpose(0, 2, 1, 3).reshape(rows, hidden) + 0)),
        ("silu(gate) * up", many(lambda: gate * mx.sigmoid(gate) * up)),
        ("residual add", many(lambda: x + x)),
        ("whole layer, MLX's products (no cache write)", many(lambda: layer(x))),
        ("the layer's seven products alone (MLX's)", many(lambda: products(x))),
    ]


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
                      ("X_PER_ROW", TOP), ("MXFP4", True), ("PAIRED", False),
                      ("STAGES", 1)],
            grid=(HIDDEN // 16 * 256, EXPERTS, 1), threadgroup=(256, 1, 1),
            output_shapes=[(rows * TOP, HIDDEN)], output_dtypes=[mx.bfloat16])[0]))
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--shape", choices=["gpt-oss-20b", "llama3-8b"], default="gpt-oss-20b")
    parser.add_argument("rows", nargs="*", type=int, default=[1, 16])
    args = parser.parse_args()
    print(f"MLX {mx.__version__} on {mx.default_device()}; {args.count} copies a timing; "
          "microseconds per operation")
    if args.shape == "llama3-8b":
        tables = {rows: llama_ops(rows) for rows in args.rows}
    else:
        tables = {rows: [(name, (lambda m: lambda count: [m() for _ in range(count)])(make))
                         for name, make in ops(rows)] for rows in args.rows}
    head = " | ".join(f"host @{r} | device @{r}" for r in args.rows)
    print(f"| operation | {head} |")
    print("| --- |" + " ---: |" * (2 * len(args.rows)))
    for index, (name, _) in enumerate(tables[args.rows[0]]):
        cells = []
        for rows in args.rows:
            make = tables[rows][index][1]
            mx.eval(make(4))  # warm-up: kernels compiled
            best_host, best_all = float("inf"), float("inf")
            for _ in range(5):
                outs = make(args.count)
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
