#!/usr/bin/env python3
"""Medians and ratios of benchmark result lines (JSON, one per run, from
crates/core/examples/bench.rs and scripts/mlxlm_bench_model.py).

Runs are grouped by implementation (mlx-lm runs also by the MLX they ran on);
the ratios are ours over each mlx-lm group.
Usage: bench_table.py RESULTS_FILE"""

import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]


def label(row):
    return f"{row['impl']} (MLX {row['mlx']})" if "mlx" in row else row["impl"]


groups = {}
for row in rows:
    groups.setdefault(label(row), []).append(row)
ours = groups.pop("mlx-harmony", [])
references = sorted(groups)


def median(group, key):
    values = [r[key] for r in group if key in r]
    return statistics.median(values) if values else float("nan")


print("medians of " + ", ".join(f"{len(g)} {name} runs" for name, g in
                                [("mlx-harmony", ours)] + [(r, groups[r]) for r in references]))
width = max([11] + [len(r) for r in references]) + 2
print(f"{'':16}{'mlx-harmony':>{width}}" + "".join(f"{r:>{width}}{'ratio':>7}" for r in references))
metrics = [("prefill_tps", "prefill tok/s", 1), ("decode_tps", "decode tok/s", 1), ("ttft_s", "TTFT s", 1),
           ("peak_bytes", "peak MB", 1e6), ("step_build_ms", "step build ms", 1),
           ("step_queue_ms", "step queue ms", 1), ("step_wait_ms", "step wait ms", 1)]
for key, name, scale in metrics:
    if not any(key in r for r in rows):
        continue
    our = median(ours, key)
    line = f"{name:16}{our / scale:{width}.3f}"
    for reference in references:
        theirs = median(groups[reference], key)
        ratio = our / theirs if theirs else float("nan")
        line += f"{theirs / scale:{width}.3f}{ratio:7.2f}"
    print(line)
