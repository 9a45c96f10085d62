"""Summarizes examples/bench_structured's JSON lines (stdin): per row count,
the median decode tokens/s free and with the schema held, their spread
(min-max) and the ratio schema/free."""

import json
import statistics
import sys

runs = [json.loads(line) for line in sys.stdin if line.startswith("{")]
for rows in sorted({r["rows"] for r in runs}):
    by = {m: [r["decode_tps"] for r in runs if r["rows"] == rows and r["mode"] == m] for m in ("free", "schema")}
    if not by["free"] or not by["schema"]:
        continue
    med = {m: statistics.median(v) for m, v in by.items()}
    unapplied = [r["decode_tps"] for r in runs if r["rows"] == rows and r["mode"] == "unapplied"]
    extra = (f"  unapplied {statistics.median(unapplied):8.1f} tok/s ({statistics.median(unapplied) / med['free']:.3f})"
             if unapplied else "")
    print(f"rows {rows:>3}: free {med['free']:8.1f} tok/s [{min(by['free']):.1f}-{max(by['free']):.1f}]"
          f"  schema {med['schema']:8.1f} tok/s [{min(by['schema']):.1f}-{max(by['schema']):.1f}]"
          f"  schema/free {med['schema'] / med['free']:.3f}{extra}  ({len(by['free'])} runs each)")
