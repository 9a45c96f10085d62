#!/usr/bin/env python3
"""How prompt-pass throughput grows with the number of prompts run together:
mlx-lm's model on ROWS prompts of PROMPT_TOKENS random tokens in one forward
pass ([ROWS, PROMPT_TOKENS], fresh caches), medians of RUNS after a warm-up.
Tells whether prefilling several waiting prompts in one pass would shorten
the time to first token of a batch (docs/PERFORMANCE.md, #16).

Usage: prefill_rows.py MODEL PROMPT_TOKENS RUNS ROWS...
"""

import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load_model


def main():
    model_dir, prompt_tokens, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rows_list = [int(r) for r in sys.argv[4:]] or [1, 2, 4, 8]
    model, config = load_model(Path(model_dir))
    vocab = config["vocab_size"]
    print(f"{model_dir}: {prompt_tokens}-token prompts, MLX {mx.__version__}, {mx.default_device()}")
    for rows in rows_list:
        times = []
        for run in range(runs + 1):
            tokens = mx.random.randint(1000, vocab - 1000, (rows, prompt_tokens), key=mx.random.key(run))
            mx.eval(tokens)
            cache = make_prompt_cache(model)
            start = time.perf_counter()
            logits = model(tokens, cache=cache)
            mx.eval(logits[:, -1, :], [c.state for c in cache])
            if run:
                times.append(time.perf_counter() - start)
        t = statistics.median(times)
        print(f"rows {rows}: {rows * prompt_tokens / t:,.0f} prompt tokens/s "
              f"({t * 1000:.1f} ms per pass, spread {min(times) * 1000:.1f}-{max(times) * 1000:.1f})",
              flush=True)


if __name__ == "__main__":
    main()
