"""Summarizes examples/bench_lookup's JSON lines (stdin): median decode
tokens/s plain and with prompt lookup, their spread (min-max), the speed-up,
the share of drafted tokens kept, tokens per forward pass, and whether every
output equals the plain one."""

import json
import statistics
import sys

runs = [json.loads(line) for line in sys.stdin if line.startswith("{")]
tps = {m: [r["decode_tps"] for r in runs if r["mode"] == m] for m in ("plain", "lookup")}
med = {m: statistics.median(v) for m, v in tps.items()}
lookup = [r for r in runs if r["mode"] == "lookup"]
kept = sum(r["accepted"] for r in lookup) / max(1, sum(r["drafted"] for r in lookup))
per_step = statistics.median(r["tokens"] / max(1, r["tokens"] - r["accepted"]) for r in lookup)
same = all(r["same"] for r in runs)
print(f"prompt {runs[0]['prompt_tokens']} tokens, {len(lookup)} runs each")
print(f"plain  {med['plain']:.1f} tok/s [{min(tps['plain']):.1f}-{max(tps['plain']):.1f}]")
print(f"lookup {med['lookup']:.1f} tok/s [{min(tps['lookup']):.1f}-{max(tps['lookup']):.1f}]"
      f"  speed-up {med['lookup'] / med['plain']:.2f}x")
print(f"drafted tokens kept {kept:.0%}, {per_step:.2f} tokens per forward pass; outputs equal: {same}")
