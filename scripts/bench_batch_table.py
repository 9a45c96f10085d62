#!/usr/bin/env python3
"""Medians (with min–max) and ratios of scripts/bench-batch's result lines,
one table row per concurrency. Usage: bench_batch_table.py RESULTS_FILE

With --single GEN_TOKENS [IMPL], instead turns examples/bench's lines (the
single-stream path) on stdin into result lines of a concurrency-1 variant,
"mlx-harmony-single" or IMPL (scripts/gpu-bench-batch's SINGLE=1)."""

import json
import statistics
import sys

if sys.argv[1] == "--single":
    generated = int(sys.argv[2])
    label = sys.argv[3] if len(sys.argv) > 3 else "mlx-harmony-single"
    for line in sys.stdin:
        if not line.strip().startswith("{"):
            continue
        bench = json.loads(line)
        # The whole request: the first token, then the rest at decode speed.
        seconds = bench["ttft_s"] + (generated - 1) / bench["decode_tps"]
        print(json.dumps({
            "impl": label, "concurrency": 1, "decode_tps": bench["decode_tps"],
            "e2e_tps": round(generated / seconds, 2), "ttft_p50_s": bench["ttft_s"],
            "ttft_p95_s": bench["ttft_s"], "generated": generated,
            # examples/bench times the building and the queueing apart; the
            # batch's queue time holds both (its build time is the first).
            "step_queue_ms": round(bench["step_build_ms"] + bench["step_queue_ms"], 3),
            "step_build_ms": bench["step_build_ms"], "step_wait_ms": bench["step_wait_ms"],
            **{k: bench[k] for k in ("step_p50_ms", "step_p90_ms") if k in bench}}))
    sys.exit(0)

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
groups = {}
for row in rows:
    groups.setdefault((row["concurrency"], row["impl"]), []).append(row)


def stat(group, key):
    values = [r[key] for r in group]
    return statistics.median(values), min(values), max(values)


def cell(group, key, digits):
    median, low, high = stat(group, key)
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


# A variant of our engine measured in the same run, beside ours: with MLX's
# quantized products (MLX_HARMONY_QMM=mlx), one launch a matrix
# (MLX_HARMONY_QMM=unshared), the wide form (MLX_HARMONY_QMM=wide), MLX's
# attention over one cache array (MLX_HARMONY_ATTEND=mlx), each prompt run
# alone (MLX_HARMONY_GROUP_PROMPTS=off), an idle batch's steps with the
# decoding budget (MLX_HARMONY_IDLE_PREFILL=off), N chunks of weights in flight
# a warp (MLX_HARMONY_QMM_STAGES=N), or at concurrency 1 the single-stream
# path (SINGLE=1: examples/bench's bare loop, also over a batch's cache;
# GENERATOR=1: TokenGenerator, the chat and generate programs' loop, in our
# process), or ours and the
# single-stream path with other settings (gpu-bench-batch's COMPARE_ENV).
VARIANTS = {"mlx-harmony-mlxqmm": "ours with MLX's qmm",
            "mlx-harmony-unshared": "ours, one launch a matrix",
            "mlx-harmony-wide": "ours, wide form",
            "mlx-harmony-single": "ours, single-stream path",
            "mlx-harmony-generator": "ours, the programs' loop",
            "mlx-harmony-eval-caches": "ours, steps evaluating the caches too",
            "mlx-harmony-loop": "bare loop",
            "mlx-harmony-loop-batchcache": "bare loop, batch's cache",
            "mlx-harmony-single-batchcache": "single-stream loop, batch's cache",
            "mlx-harmony-env": "ours with COMPARE_ENV",
            "mlx-harmony-single-env": "single-stream path with COMPARE_ENV",
            "mlx-harmony-env2": "ours with COMPARE_ENV2",
            "mlx-harmony-mlxattend": "ours with MLX's attention",
            "mlx-harmony-ungrouped": "ours, prompts run alone",
            "mlx-harmony-idle-off": "ours, idle steps on the decoding budget",
            **{f"mlx-harmony-stages{n}": f"ours, {n} chunks in flight a warp" for n in (2, 3, 4)}}
# Each variant measured gets two columns: its figures, and ours over them.
variants = [impl for impl in VARIANTS if any(i == impl for _, i in groups)]
extra = "".join(f" {VARIANTS[v]} | ours over it |" for v in variants)
print("| sequences | metric | mlx-harmony | mlx-lm | ratio |" + extra)
print("| --- | --- | --- | --- | --- |" + " --- | --- |" * len(variants))
for n in sorted({c for c, _ in groups}):
    ours, theirs = groups.get((n, "mlx-harmony"), []), groups.get((n, "mlx-lm"), [])
    if not ours:
        continue
    for key, name, digits, higher_is_better in [
        ("decode_tps", "decode tok/s (all)", 1, True),
        ("e2e_tps", "end-to-end tok/s", 1, True),
        ("ttft_p50_s", "first token p50 s", 3, False),
        ("ttft_p95_s", "first token p95 s", 3, False),
    ]:
        a = stat(ours, key)[0]
        b = stat(theirs, key)[0] if theirs else None
        ratio = (a / b if higher_is_better else b / a) if a and b else float("nan")
        their_cell = cell(theirs, key, digits) if theirs else "-"
        ratio_cell = f"{ratio:.2f}x" if ratio == ratio else "-"
        line = f"| {n} | {name} | {cell(ours, key, digits)} | {their_cell} | {ratio_cell} |"
        for v in variants:
            plain = groups.get((n, v), [])
            if plain:
                c = stat(plain, key)[0]
                versus = (a / c if higher_is_better else c / a) if a and c else float("nan")
                line += f" {cell(plain, key, digits)} | {versus:.2f}x |"
            else:
                line += " | |"
        print(line)
print()
print(f"{len(rows)} runs; ratio: ours over mlx-lm's for speeds, mlx-lm's over ours for times"
      " (above 1 is better for us)")

# Our decode steps, where their time went (medians): building and queueing
# the next step (host work, and MLX blocking while the device is behind), of
# it the building alone (our code and MLX's graph, no kernel encoded), and
# waiting for this step's tokens. A wait near zero puts the step's time in the
# queueing; scripts/step_ops.py tells host work from the device's.
timed = [(n, impl) for n, impl in sorted(groups) if impl.startswith("mlx-harmony")
         and all("step_queue_ms" in r for r in groups[(n, impl)])]
if timed:
    print()
    # A step's whole time, its median and 90th percentile within a run (the
    # table's cell: their medians over the runs), where the lines carry them:
    # a mean step time (the tokens/s) above the median is a few slow steps.
    print("| sequences | engine | step queue ms | of it building ms | step wait ms | step p50 ms | step p90 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, impl in timed:
        built = groups[(n, impl)]

        def optional(key):
            return cell(built, key, 2) if all(key in r for r in built) else "-"

        print(f"| {n} | {impl} | {cell(built, 'step_queue_ms', 2)} | {optional('step_build_ms')} | "
              f"{cell(built, 'step_wait_ms', 2)} | {optional('step_p50_ms')} | {optional('step_p90_ms')} |")

# Paired runs (GENERATOR=1 of examples/bench_batch, examples/bench_one): each
# path over the TokenGenerator run of its turn in the same process (seconds
# apart, the order changing from run to run), the pairs' median and spread: a
# host's speed from run to run, which moves the medians above, falls on every
# path of a run alike.
pairs = {}
for row in rows:
    if "pair" in row:
        pairs.setdefault(row["pair"], {})[row["impl"]] = row
BASE = "mlx-harmony-generator"
paired_paths = sorted({impl for p in pairs.values() for impl in p if impl != BASE},
                      key=lambda impl: (impl != "mlx-harmony", impl))
if any(BASE in p for p in pairs.values()) and paired_paths:
    print()
    print("| over TokenGenerator, paired runs | metric | pairs | median | min-max | pairs below 0.97x |")
    print("| --- | --- | --- | --- | --- | --- |")
    for impl in paired_paths:
        for key, name in (("decode_tps", "decode tok/s"), ("e2e_tps", "end-to-end tok/s")):
            values = [p[impl][key] / p[BASE][key] for p in pairs.values()
                      if impl in p and BASE in p and p[BASE][key] > 0]
            if not values:
                continue
            below = sum(v < 0.97 for v in values)
            print(f"| {impl} | {name} | {len(values)} | {statistics.median(values):.3f}x | "
                  f"{min(values):.3f}-{max(values):.3f}x | {below} |")
