"""Summarizes examples/bench_kv's JSON lines (stdin): for each cache (16-bit,
8-bit, 4-bit) the median peak memory, the peak above the weights (what the
cache and its passes add), both over the 16-bit cache's, the decode and
prompt speed, and the leading greedy tokens shared with the 16-bit run; with
held_peak_bytes, the same for the next turn's call (the context held)."""

import json
import statistics
import sys

runs = [json.loads(line) for line in sys.stdin if line.startswith("{")]
modes = [m for m in ("16-bit", "8-bit", "4-bit") if any(r["mode"] == m for r in runs)]


def median(mode, key):
    return statistics.median(r[key] for r in runs if r["mode"] == mode)


def spread(mode, key, scale):
    values = [r[key] / scale for r in runs if r["mode"] == mode]
    return f"[{min(values):.0f}-{max(values):.0f}]"


base_peak = median("16-bit", "peak_bytes")
base_above = base_peak - median("16-bit", "weights_bytes")
print(f"context {runs[0]['context']} tokens, {sum(r['mode'] == '16-bit' for r in runs)} runs each")
print(f"{'cache':7} {'peak MB':>9} {'':13} {'ratio':>6} {'above weights MB':>17} {'ratio':>6}"
      f" {'decode tok/s':>13} {'prompt tok/s':>13} {'greedy tokens shared':>21}")
for m in modes:
    peak = median(m, "peak_bytes")
    above = peak - median(m, "weights_bytes")
    agree = median(m, "agree")
    tokens = median(m, "tokens")
    print(f"{m:7} {peak / 1e6:9.0f} {spread(m, 'peak_bytes', 1e6):13} {peak / base_peak:6.2f}"
          f" {above / 1e6:17.0f} {above / base_above:6.2f} {median(m, 'decode_tps'):13.1f}"
          f" {median(m, 'prefill_tps'):13.0f} {agree:>10.0f} of {tokens:.0f}")
base_cache = median("16-bit", "cache_bytes")
print("the cache's own arrays: " + ", ".join(
    f"{m} {median(m, 'cache_bytes') / 1e6:.0f} MB ({median(m, 'cache_bytes') / base_cache:.2f})" for m in modes))
if all(r.get("held_peak_bytes") for r in runs):
    base_held = median("16-bit", "held_peak_bytes") - median("16-bit", "weights_bytes")
    print("holding the context (its next turn, the cache reused):")
    for m in modes:
        held = median(m, "held_peak_bytes")
        above = held - median(m, "weights_bytes")
        print(f"{m:7} peak {held / 1e6:9.0f} MB {spread(m, 'held_peak_bytes', 1e6):13}"
              f" above weights {above / 1e6:7.0f} MB, {above / base_held:.2f} of the 16-bit cache's")
