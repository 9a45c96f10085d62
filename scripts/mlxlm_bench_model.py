#!/usr/bin/env python3
"""mlx-lm's side of scripts/bench: the same model folder and prompt ids through
mlx_lm's loader and generate_step (greedy). Prints one JSON line per run.

Besides speed it records the host's time per decode step spent building the
model's graph (`step_build_ms`, the model call) and queueing it
(`step_queue_ms`, `mx.async_eval`), as our bench does; with
`MLX_HARMONY_BENCH_GRAPH=FILE` the graph of one decode step is written to FILE
(Graphviz) for scripts/graph_counts.py.

On MLX older than 0.32.4 (to compare on the very MLX our build uses) the
`global_scale` argument mlx-lm 0.32.2 passes to `gather_qmm` is dropped when
it is None, which is what 0.32.4 does with it.

With MLX_HARMONY_BENCH_TENSOR_PARALLEL set, under MLX's launcher, the model is
sharded with mlx-lm's `model.shard` and rank 0 reports.

Usage: mlxlm_bench_model.py MODEL PROMPT_IDS_FILE GEN_TOKENS RUNS
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx


def version(text):
    return tuple(int(part) for part in text.split(".")[:3])


if version(mx.__version__) < (0, 32, 4):
    _gather_qmm = mx.gather_qmm

    def gather_qmm(*args, global_scale=None, **kwargs):
        if global_scale is not None:
            raise NotImplementedError(f"MLX {mx.__version__} has no global_scale for gather_qmm")
        return _gather_qmm(*args, **kwargs)

    mx.gather_qmm = gather_qmm

from mlx_lm.generate import generate_step  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402
from mlx_lm.utils import load_model  # noqa: E402


def arrays_in(tree):
    if isinstance(tree, mx.array):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [a for item in tree for a in arrays_in(item)]
    return []


class TimedModel:
    """Forwards calls to the model and records how long single-token calls
    take to build their graph."""

    def __init__(self, model):
        self.model = model
        self.build_ms = []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        if args[0].shape[-1] == 1:
            self.build_ms.append((time.perf_counter() - start) * 1e3)
        return out


def main():
    model_dir, prompt_file, gen, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # Under MLX's launcher (scripts/bench-tensor-parallel): mlx-lm's own
    # tensor-parallel sharding (`model.shard`), rank 0 reporting.
    group = mx.distributed.init() if os.environ.get("MLX_HARMONY_BENCH_TENSOR_PARALLEL") else None
    if group is not None:
        model, _ = load_model(Path(model_dir), lazy=True)
        model.shard(group)
        mx.eval(model.parameters())
    else:
        model, _ = load_model(Path(model_dir))
    ranks = group.size() if group is not None else 1
    reports = group is None or group.rank() == 0
    prompt = mx.array([int(t) for t in Path(prompt_file).read_text().split()], dtype=mx.uint32)
    queue_ms = []
    async_eval = mx.async_eval
    graph_file = os.environ.get("MLX_HARMONY_BENCH_GRAPH")

    def timed_async_eval(*arrays):
        nonlocal graph_file
        if graph_file and len(timed.build_ms) >= 2:  # a decode step, not the prompt's last
            mx.export_to_dot(graph_file, *arrays)
            graph_file = None
        start = time.perf_counter()
        async_eval(*arrays)
        queue_ms.append((time.perf_counter() - start) * 1e3)

    mx.async_eval = timed_async_eval
    evaluate = mx.eval
    prefill_graph_file = graph_file and str(Path(graph_file).with_suffix(".prefill.dot"))

    def eval_writing_the_prefill_graph(*arrays):
        # generate_step's first eval is that of the prompt's first chunk.
        nonlocal prefill_graph_file
        if prefill_graph_file:
            mx.export_to_dot(prefill_graph_file, *arrays_in(arrays))
            prefill_graph_file = None
        evaluate(*arrays)

    mx.eval = eval_writing_the_prefill_graph
    for run in range(runs + 1):
        timed = TimedModel(model)
        queue_ms.clear()
        mx.reset_peak_memory()
        start = time.perf_counter()
        first = None
        n = 0
        steps = generate_step(prompt, timed, max_tokens=gen, prompt_cache=make_prompt_cache(model),
                              sampler=lambda x: mx.argmax(x, axis=-1))
        for token, _ in steps:
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        if run == 0 or not reports:
            continue  # warm-up
        print(json.dumps({"impl": "mlx-lm", "mlx": mx.__version__, "ranks": ranks,
                          "prefill_tps": round(len(prompt) / (first - start), 2),
                          "decode_tps": round((n - 1) / (end - first), 2), "ttft_s": round(first - start, 4),
                          "peak_bytes": mx.get_peak_memory(),
                          "step_build_ms": round(statistics.median(timed.build_ms[1:] or [float("nan")]), 3),
                          # the first async_eval queues the prompt's last step
                          "step_queue_ms": round(statistics.median(queue_ms[1:] or [float("nan")]), 3)}),
              flush=True)


main()
