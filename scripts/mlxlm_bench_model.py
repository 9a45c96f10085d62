#!/usr/bin/env python3
"""mlx-lm's side of scripts/bench: the same model folder and prompt ids through
mlx_lm's loader and generate_step (greedy). Prints one JSON line per run.

Usage: mlxlm_bench_model.py MODEL PROMPT_IDS_FILE GEN_TOKENS RUNS
"""

import json
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model


def main():
    model_dir, prompt_file, gen, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    model, _ = load_model(Path(model_dir))
    prompt = mx.array([int(t) for t in Path(prompt_file).read_text().split()], dtype=mx.uint32)
    for run in range(runs + 1):
        mx.reset_peak_memory()
        start = time.perf_counter()
        first = None
        n = 0
        for token, _ in generate_step(prompt, model, max_tokens=gen, sampler=lambda x: mx.argmax(x, axis=-1)):
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        if run == 0:
            continue  # warm-up
        print(json.dumps({"impl": "mlx-lm", "prefill_tps": round(len(prompt) / (first - start), 2),
                          "decode_tps": round((n - 1) / (end - first), 2), "ttft_s": round(first - start, 4),
                          "peak_bytes": mx.get_peak_memory()}), flush=True)


main()
