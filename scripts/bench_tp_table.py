#!/usr/bin/env python3
"""Tensor-parallel scaling from benchmark result lines (JSON, one per run, from
crates/core/examples/bench.rs and scripts/mlxlm_bench_model.py, each with its
"ranks"): per implementation and rank count the median and the spread
(min-max) of prefill and decode tokens/s, then the ratios: N ranks over one
(scaling) for each implementation, and ours over mlx-lm at each rank count.
Usage: bench_tp_table.py RESULTS_FILE"""

import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
groups = {}
for row in rows:
    groups.setdefault((row["impl"], row.get("ranks", 1)), []).append(row)
metrics = [("prefill_tps", "prefill tok/s"), ("decode_tps", "decode tok/s")]


def median(key, group):
    values = [r[key] for r in groups.get(group, []) if key in r]
    return statistics.median(values) if values else float("nan")


print(f"{'':14}{'runs':>5}" + "".join(f"{name:>28}" for _, name in metrics))
for group in sorted(groups):
    impl, ranks = group
    cells = []
    for key, _ in metrics:
        values = [r[key] for r in groups[group]]
        cells.append(f"{median(key, group):10.1f} [{min(values):.1f}-{max(values):.1f}]")
    print(f"{impl + ' x' + str(ranks):14}{len(groups[group]):5}" + "".join(f"{c:>28}" for c in cells))

impls = sorted({impl for impl, _ in groups})
counts = sorted({ranks for _, ranks in groups})
print()
for impl in impls:
    for ranks in counts:
        if ranks == 1 or (impl, ranks) not in groups or (impl, 1) not in groups:
            continue
        ratios = ", ".join(f"{name} {median(key, (impl, ranks)) / median(key, (impl, 1)):.2f}x"
                           for key, name in metrics)
        print(f"{impl}: {ranks} ranks over 1: {ratios}")
for ranks in counts:
    if ("mlx-harmony", ranks) in groups and ("mlx-lm", ranks) in groups:
        ratios = ", ".join(f"{name} {median(key, ('mlx-harmony', ranks)) / median(key, ('mlx-lm', ranks)):.2f}x"
                           for key, name in metrics)
        print(f"ours over mlx-lm at {ranks} rank(s): {ratios}")
