#!/usr/bin/env python3
"""Random-weight benchmark models in the mlx-community layout (fixtures/bench/, git-ignored),
built with mlx-lm's own classes: a SmolLM2-135M-shaped Llama in 4-bit (float32 scales, for
CPUs), and (with --large) a Llama-3-8B-shaped one in 4-bit (bfloat16) for GPU runs. Runs in scripts/reference-env."""

import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models import llama

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "bench"

SHAPES = {
    "smollm2-135m-shape-q4": dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                                  num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                  rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    "llama3-8b-shape-q4": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                               rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False),
}


def make(name, shape, dtype):
    folder = OUT / name
    if (folder / "model.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(model_type="llama", **shape))
    model.set_dtype(dtype)
    nn.quantize(model, group_size=64, bits=4)
    mx.eval(model.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    config = dict(shape, model_type="llama", quantization={"group_size": 64, "bits": 4},
                  torch_dtype="float32" if dtype == mx.float32 else "bfloat16")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"[bench-models] {folder.relative_to(ROOT)}")


# CPUs have no native bfloat16 math, so the CPU model keeps float32 scales and
# activations; GPU models use bfloat16 as released checkpoints do.
make("smollm2-135m-shape-q4", SHAPES["smollm2-135m-shape-q4"], mx.float32)
if "--large" in sys.argv:
    make("llama3-8b-shape-q4", SHAPES["llama3-8b-shape-q4"], mx.bfloat16)
