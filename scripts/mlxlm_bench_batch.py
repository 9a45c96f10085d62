#!/usr/bin/env python3
"""mlx-lm's side of scripts/bench-batch: the same model folder through mlx-lm's
BatchGenerator, CONCURRENCY sequences of PROMPT_TOKENS random tokens inserted at
once, GEN_TOKENS each (greedy, no stop token). Prints one JSON line per run with
the same figures as crates/core/examples/bench_batch.rs: aggregate decode tokens/s
once every sequence is decoding, end-to-end tokens/s, time to first token p50/p95.

Usage: mlxlm_bench_batch.py MODEL PROMPT_TOKENS GEN_TOKENS CONCURRENCY RUNS
CONCURRENCY may be a list (1,4,16): the model is loaded once, and each
concurrency warms up with a run of its own.
"""

import json
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.utils import load_model


def random_tokens(seed, count, vocab):
    """SplitMix64, as the Rust side draws them."""
    mask = (1 << 64) - 1
    state = seed
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(1000 + (z ^ (z >> 31)) % (vocab - 2000))
    return out


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def main():
    model_dir, prompt_tokens, gen_tokens, concurrency, runs = sys.argv[1:6]
    prompt_tokens, gen_tokens = int(prompt_tokens), int(gen_tokens)
    concurrencies, runs = [int(c) for c in concurrency.split(",")], int(runs)
    model, config = load_model(Path(model_dir))
    vocab = config["vocab_size"]
    for concurrency, run in ((c, r) for c in concurrencies for r in range(runs + 1)):
        gen = BatchGenerator(model, max_tokens=gen_tokens, stop_tokens=[],
                             completion_batch_size=max(concurrency, 32))
        start = time.perf_counter()
        prompts = [random_tokens(run * 1000 + i, prompt_tokens, vocab) for i in range(concurrency)]
        uids = gen.insert(prompts, [gen_tokens] * concurrency)
        first = {}
        generated = 0
        all_started = None
        generated_when_all_started = 0
        finished = set()
        while len(finished) < len(uids):
            _, responses = gen.next()
            now = time.perf_counter()
            for r in responses:
                generated += 1
                first.setdefault(r.uid, now - start)
                if r.finish_reason is not None:
                    finished.add(r.uid)
            if all_started is None and len(first) == len(uids):
                all_started = now
                generated_when_all_started = generated
        end = time.perf_counter()
        gen.close()
        if run == 0:
            continue
        decode_seconds = end - (all_started or end)
        ttft = list(first.values())
        print(json.dumps({
            "impl": "mlx-lm", "mlx": mx.__version__, "concurrency": concurrency,
            "decode_tps": round((generated - generated_when_all_started) / decode_seconds, 2)
            if decode_seconds > 0 else 0.0,
            "e2e_tps": round(generated / (end - start), 2),
            "ttft_p50_s": round(percentile(ttft, 0.5), 4),
            "ttft_p95_s": round(percentile(ttft, 0.95), 4),
            "generated": generated,
        }), flush=True)


if __name__ == "__main__":
    main()
