#!/usr/bin/env python3
"""Random-weight benchmark models in the mlx-community layout (fixtures/bench/, git-ignored),
built with mlx-lm's own classes: a SmolLM2-135M-shaped Llama in 4-bit (float32 scales, for
CPUs); with --eight-heads one of its size whose 8 heads tensor-parallel ranks share evenly
(float32, CPU); with --large a Llama-3-8B-shaped one in 4-bit (bfloat16), with --gpt-oss-20b a
GPT-OSS-20B-shaped one as mlx-community ships it (MXFP4 experts, 8-bit rest, bfloat16), both
for GPU runs; with --narrow Llama-3-8B's layers and heads with narrow matrices (bfloat16), whose
decode steps on a GPU take the host's time alone. --out DIR writes elsewhere; --only skips the small CPU model. Runs in
scripts/reference-env (or the GPU machine's reference bundle, scripts/gpu-bench)."""

import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models import gpt_oss, llama

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else ROOT / "fixtures" / "bench"

SHAPES = {
    "smollm2-135m-shape-q4": dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                                  num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                  rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    # SmolLM2-sized, with heads that two or four tensor-parallel ranks share
    # evenly (mlx-lm's `model.shard` needs that; SmolLM2's 9 and 3 do not
    # divide): scripts/bench-tensor-parallel's default.
    "llama-8-heads-shape-q4": dict(hidden_size=512, num_hidden_layers=30, intermediate_size=1536,
                                   num_attention_heads=8, num_key_value_heads=4, vocab_size=49152,
                                   rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    # Llama-3-8B's 32 layers and 128-wide heads with narrow matrices: the
    # same graph a decode step builds, almost no device work, so that a
    # step's time is the host's (gpu-bench-batch's llama3-8b-narrow).
    "llama3-8b-narrow-q4": dict(hidden_size=1024, num_hidden_layers=32, intermediate_size=2048,
                                num_attention_heads=8, num_key_value_heads=2, vocab_size=128256,
                                rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False),
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
    # Layer by layer, so that the float weights never all exist at once.
    for layer in model.model.layers:
        mx.eval(layer.parameters())
    mx.eval(model.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    config = dict(shape, model_type="llama", quantization={"group_size": 64, "bits": 4},
                  torch_dtype="float32" if dtype == mx.float32 else "bfloat16")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"[bench-models] {folder}")


# CPUs have no native bfloat16 math, so the CPU model keeps float32 scales and
# activations; GPU models use bfloat16 as released checkpoints do.
GPT_OSS_20B = dict(num_hidden_layers=24, num_local_experts=32, num_experts_per_tok=4, vocab_size=201088,
                   hidden_size=2880, intermediate_size=2880, head_dim=64, num_attention_heads=64,
                   num_key_value_heads=8, sliding_window=128, rope_theta=150000, rms_norm_eps=1e-5,
                   layer_types=["sliding_attention", "full_attention"] * 12,
                   rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                 "original_max_position_embeddings": 4096, "truncate": False})


def make_gpt_oss(name):
    """GPT-OSS-20B's shape, quantized as mlx-community ships it: MXFP4 experts, 8-bit
    (group 64) everything else, bfloat16 activations. Built and evaluated layer by layer so
    that the float weights never all exist at once."""
    folder = OUT / name
    if (folder / "model.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    model = gpt_oss.Model(gpt_oss.ModelArgs(model_type="gpt_oss", **GPT_OSS_20B))
    model.set_dtype(mx.bfloat16)
    overrides = {}

    def predicate(path, module):
        if not hasattr(module, "to_quantized"):
            return False
        if "experts" in path:
            overrides[path] = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
            return overrides[path]
        return True
    nn.quantize(model, group_size=64, bits=8, class_predicate=predicate)
    for layer in model.model.layers:
        mx.eval(layer.parameters())
    mx.eval(model.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    quant = dict({"group_size": 64, "bits": 8}, **overrides)
    config = dict(GPT_OSS_20B, model_type="gpt_oss", architectures=["GptOssForCausalLM"], quantization=quant,
                  quantization_config=quant, torch_dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"[bench-models] {folder}")


if "--only" not in sys.argv:
    make("smollm2-135m-shape-q4", SHAPES["smollm2-135m-shape-q4"], mx.float32)
if "--eight-heads" in sys.argv:
    make("llama-8-heads-shape-q4", SHAPES["llama-8-heads-shape-q4"], mx.float32)
if "--large" in sys.argv:
    make("llama3-8b-shape-q4", SHAPES["llama3-8b-shape-q4"], mx.bfloat16)
if "--narrow" in sys.argv:
    make("llama3-8b-narrow-q4", SHAPES["llama3-8b-narrow-q4"], mx.bfloat16)
if "--gpt-oss-20b" in sys.argv:
    make_gpt_oss("gpt-oss-20b-shape-mxfp4")
