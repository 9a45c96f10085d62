#!/usr/bin/env python3
"""Medians and ratios of benchmark result lines (JSON, one per run, from
crates/core/examples/bench.rs and scripts/mlxlm_bench_model.py).
Usage: bench_table.py RESULTS_FILE"""

import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]


def median(impl, key):
    values = [r[key] for r in rows if r["impl"] == impl]
    return statistics.median(values) if values else float("nan")


runs = {impl: sum(r["impl"] == impl for r in rows) for impl in ("mlx-harmony", "mlx-lm")}
print(f"medians of {runs['mlx-harmony']} and {runs['mlx-lm']} runs")
print(f"{'':14}{'mlx-harmony':>14}{'mlx-lm':>12}{'ratio':>8}")
for key, label in [("prefill_tps", "prefill tok/s"), ("decode_tps", "decode tok/s"),
                   ("ttft_s", "TTFT s"), ("peak_bytes", "peak MB")]:
    ours, theirs = median("mlx-harmony", key), median("mlx-lm", key)
    scale = 1e6 if key == "peak_bytes" else 1
    ratio = ours / theirs if theirs else float("nan")
    print(f"{label:14}{ours / scale:14.2f}{theirs / scale:12.2f}{ratio:8.2f}")
