"""Summarizes examples/bench_lookup's JSON lines (stdin): median decode
tokens/s of plain decoding and of each speculative mode (prompt lookup, a
draft model, prompt lookup in the batch), their spread (min-max), the speed-up over plain, the share of
drafted tokens kept, tokens per checking step, and whether every output
equals the plain one."""

import json
import statistics
import sys

runs = [json.loads(line) for line in sys.stdin if line.startswith("{")]
modes = [m for m in ("plain", "lookup", "batch", "draft") if any(r["mode"] == m for r in runs)]
tps = {m: [r["decode_tps"] for r in runs if r["mode"] == m] for m in modes}
med = {m: statistics.median(v) for m, v in tps.items()}
print(f"prompt {runs[0]['prompt_tokens']} tokens, {len(tps['plain'])} runs each")
for m in modes:
    line = f"{m:6} {med[m]:.1f} tok/s [{min(tps[m]):.1f}-{max(tps[m]):.1f}]"
    if m != "plain":
        rows = [r for r in runs if r["mode"] == m]
        kept = sum(r["accepted"] for r in rows) / max(1, sum(r["drafted"] for r in rows))
        per_step = statistics.median(r["tokens"] / max(1, r.get("steps", 0)) for r in rows)
        line += (f"  speed-up {med[m] / med['plain']:.2f}x; drafted tokens kept {kept:.0%},"
                 f" {per_step:.2f} tokens per step")
    print(line)
print(f"outputs equal: {all(r['same'] for r in runs)}")
