#!/usr/bin/env python3
"""mlx-lm's sampling filters and logits processors on fixed logits, for
crates/core/tests/sampling.rs: writes fixtures/samplers.safetensors. Runs in
scripts/reference-env."""

from pathlib import Path

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, apply_xtc, make_logits_processors

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "samplers.safetensors"

mx.random.seed(0)
logits = mx.random.normal((1, 256)) * 3.0
logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
history = mx.array([5, 9, 9, 200, 17])


def process(**kwargs):
    # mlx-lm's processors assign into the array they are given: hand them a copy.
    out = mx.array(logits)
    for processor in make_logits_processors(**kwargs):
        out = processor(history, out)
    return out


out = {
    "logits": logits,
    "logprobs": logprobs,
    "top_p_0.5": apply_top_p(logprobs, 0.5),
    "top_p_0.9": apply_top_p(logprobs, 0.9),
    "min_p_0.05": apply_min_p(logprobs, 0.05),
    "min_p_0.6_keep5": apply_min_p(logprobs, 0.6, 5),
    "top_k_1": apply_top_k(logprobs, 1),
    "top_k_10": apply_top_k(logprobs, 10),
    # Probability 1: XTC always applies, so the result does not depend on the draw.
    "xtc_1.0_0.05": apply_xtc(logprobs, 1.0, 0.05, []),
    "xtc_1.0_0.05_special": apply_xtc(logprobs, 1.0, 0.05, [int(mx.argmax(logprobs))]),
    "chain_top_p_min_p_top_k": apply_top_k(apply_min_p(apply_top_p(logprobs, 0.9), 0.05), 20),
    "repetition_1.3_ctx3": process(repetition_penalty=1.3, repetition_context_size=3),
    "logit_bias": process(logit_bias={3: 5.0, 10: -100.0}),
}
for seed in (1, 2, 3):
    out[f"categorical_t0.7_key{seed}"] = mx.random.categorical(logprobs * (1.0 / 0.7), key=mx.random.key(seed))
OUT.parent.mkdir(parents=True, exist_ok=True)
mx.save_safetensors(str(OUT), out)
print(f"[samplers] {len(out)} arrays -> {OUT.relative_to(ROOT)}")
