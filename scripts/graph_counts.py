#!/usr/bin/env python3
"""Counts the primitives in graphs written by MLX's export_to_dot (one decode
step each, from the benchmarks' MLX_HARMONY_BENCH_GRAPH), side by side.
Usage: graph_counts.py NAME=FILE [NAME=FILE ...]"""

import collections
import re
import sys

columns = []
for argument in sys.argv[1:]:
    name, _, path = argument.partition("=")
    counts = collections.Counter(re.findall(r'label ="([^"]+)"', open(path).read()))
    columns.append((name, counts))
primitives = sorted(set().union(*(c for _, c in columns)),
                    key=lambda p: -max(c[p] for _, c in columns))
width = max(12, *(len(n) + 2 for n, _ in columns))
print(f"{'primitive':28}" + "".join(f"{n:>{width}}" for n, _ in columns))
for primitive in primitives:
    print(f"{primitive[:27]:28}" + "".join(f"{c[primitive]:>{width}}" for _, c in columns))
print(f"{'total':28}" + "".join(f"{sum(c.values()):>{width}}" for _, c in columns))
