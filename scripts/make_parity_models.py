#!/usr/bin/env python3
"""Writes tiny random-weight checkpoints of every supported architecture and layout, and
mlx-lm's outputs on them, for the parity tests (crates/core/tests/parity.rs).

For each case, fixtures/parity/<case>/ gets config.json + model.safetensors in the
Hugging Face / mlx-community layout (dense f32, or quantized with a `quantization` block), and
reference.safetensors with what mlx-lm computes after loading that folder with its own loader:
  prompt  int32 [64]       a fixed random prompt
  logits  f32   [64, V]    logits at every position, one pass
  greedy  int32 [48]       48 greedy tokens after the prompt (KV cache, mlx_lm generate_step)
  greedy_rotating int32 [48]  the same with a cache bounded to 24 positions: mlx-lm's
                              RotatingKVCache(max_size=24, keep=4) per layer, what its
                              make_prompt_cache(model, max_kv_size) makes (GPT-OSS: its own caches)

Runs in the reference environment of scripts/reference-env (mlx[cpu]==0.32.4, mlx-lm==0.32.2).
Usage: make_parity_models.py [--force]
"""

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import RotatingKVCache
from mlx_lm.models import gpt_oss, llama, qwen2, qwen3
from mlx_lm.utils import load_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "parity"
VERSION = "7"  # bump to remake every fixture
ROTATING_MAX_KV_SIZE = 24  # crates/core/tests/parity.rs uses the same

# The Llama-family cases carry SmolLM2's real tokenizer (49152 tokens), the GPT-OSS ones the
# real o200k_harmony tokenizer (201088), so that their vocabularies are real ones.
SMOLLM2_VOCAB = 49152
O200K_HARMONY_VOCAB = 201088
BASE = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=SMOLLM2_VOCAB, rope_theta=10000.0)

GPT_OSS = dict(num_hidden_layers=4, num_local_experts=4, num_experts_per_tok=2, vocab_size=O200K_HARMONY_VOCAB,
               hidden_size=64, intermediate_size=64, head_dim=16, num_attention_heads=4,
               num_key_value_heads=2, sliding_window=8, rope_theta=150000,
               layer_types=["sliding_attention", "full_attention"] * 2,
               rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                             "original_max_position_embeddings": 4096, "truncate": False})

CASES = {
    "llama": ("llama", llama, dict(BASE, tie_word_embeddings=False), None),
    "llama-tied-llama3rope": ("llama", llama, dict(BASE, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}), None),
    "mistral": ("mistral", llama, dict(BASE, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1000000.0), None),
    "qwen2": ("qwen2", qwen2, dict(BASE, tie_word_embeddings=True), None),
    "qwen3": ("qwen3", qwen3, dict(BASE, head_dim=32, tie_word_embeddings=True, max_position_embeddings=4096), None),
    "llama-q4": ("llama", llama, dict(BASE, tie_word_embeddings=False), {"group_size": 64, "bits": 4}),
    "qwen2-q8-g32": ("qwen2", qwen2, dict(BASE, tie_word_embeddings=True), {"group_size": 32, "bits": 8}),
    "qwen3-q4-mixed": ("qwen3", qwen3, dict(BASE, head_dim=32, tie_word_embeddings=False, max_position_embeddings=4096),
                       {"group_size": 64, "bits": 4, "override": ("mlp.down_proj", {"group_size": 32, "bits": 8})}),
    "llama-bf16": ("llama", llama, dict(BASE, tie_word_embeddings=False), "bf16"),
    "qwen2-f16": ("qwen2", qwen2, dict(BASE, tie_word_embeddings=True), "f16"),
    # GPT-OSS: sliding window 8 so that the 64-token prompt crosses it often.
    "gpt-oss": ("gpt_oss", gpt_oss, dict(GPT_OSS), None),
    "gpt-oss-mxfp4-q8": ("gpt_oss", gpt_oss, dict(GPT_OSS), "mxfp4-experts"),
    "gpt-oss-original-layout": ("gpt_oss", gpt_oss, dict(GPT_OSS), "openai-release"),
}


def build(name, model_type, module, args, quant, seed):
    mx.random.seed(seed)
    model_args = module.ModelArgs(model_type=model_type, **args)
    model = module.Model(model_args)
    # Wider than the default init so that the logits are not all alike.
    params = tree_flatten(model.parameters())
    model.load_weights([(k, mx.random.normal(v.shape) * (0.02 if "norm" not in k else 0.1) + (1.0 if "norm" in k else 0.0))
                        for k, v in params])
    config = dict(args, model_type=model_type, architectures=[{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gpt_oss": "GptOssForCausalLM"}[model_type]],
                  torch_dtype="float32")
    if quant in ("bf16", "f16"):
        model.set_dtype(mx.bfloat16 if quant == "bf16" else mx.float16)
        config["torch_dtype"] = "bfloat16" if quant == "bf16" else "float16"
    elif quant == "mxfp4-experts":
        # As mlx-community ships GPT-OSS: MXFP4 experts, 8-bit everything else.
        overrides = {}

        def predicate(path, module_):
            if not hasattr(module_, "to_quantized"):
                return False
            if "experts" in path:
                overrides[path] = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
                return overrides[path]
            return True
        nn.quantize(model, group_size=64, bits=8, class_predicate=predicate)
        config["quantization"] = dict({"group_size": 64, "bits": 8}, **overrides)
        config["quantization_config"] = config["quantization"]
    elif quant == "openai-release":
        nn.quantize(model, group_size=32, bits=4, mode="mxfp4",
                    class_predicate=lambda p, m: hasattr(m, "to_quantized") and "experts" in p)
        config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    elif quant:
        block = {"group_size": quant["group_size"], "bits": quant["bits"]}
        overrides = {}
        if "override" in quant:
            suffix, params_override = quant["override"]

            def predicate(path, module_):
                if not hasattr(module_, "to_quantized"):
                    return False
                if path.endswith(suffix):
                    overrides[path] = params_override
                    return params_override
                return True
        else:
            def predicate(path, module_):
                return hasattr(module_, "to_quantized")
        nn.quantize(model, group_size=quant["group_size"], bits=quant["bits"], class_predicate=predicate)
        block.update(overrides)
        config["quantization"] = block
        config["quantization_config"] = block
    return model, config


def to_openai_layout(weights):
    """mlx-lm's GPT-OSS weights in OpenAI's release layout: MXFP4 experts as uint8 blocks
    [E, out, in/32, 16] and scales, gate and up fused with their rows interleaved."""
    out = {}
    for key, value in weights.items():
        if ".mlp.experts." not in key:
            out[key] = value
            continue
        base, proj, field = key.rsplit(".", 2)
        if proj == "up_proj":
            continue  # written with gate_proj
        def blocks(w):
            e, rows, words = w.shape
            return w.view(mx.uint8).reshape(e, rows, words * 4 // 16, 16)
        if proj == "gate_proj":
            up = weights[f"{base}.up_proj.{field}"]
            fused = mx.stack([value, up], axis=2).reshape(value.shape[0], -1, *value.shape[2:]) if value.ndim == 3 \
                else mx.stack([value, up], axis=2).reshape(value.shape[0], -1)
            if field == "weight":
                out[f"{base}.gate_up_proj_blocks"] = blocks(fused)
            elif field == "scales":
                out[f"{base}.gate_up_proj_scales"] = fused
            elif field == "bias":
                out[f"{base}.gate_up_proj_bias"] = fused
        else:  # down_proj
            if field == "weight":
                out[f"{base}.down_proj_blocks"] = blocks(value)
            elif field == "scales":
                out[f"{base}.down_proj_scales"] = value
            elif field == "bias":
                out[f"{base}.down_proj_bias"] = value
    return out


def smollm2_tokenizer(folder):
    """SmolLM2's tokenizer rebuilt from its GGUF metadata (gguf-py), as tokenizer.json."""
    import os
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    gguf_path = os.environ.get("MLX_HARMONY_SMOLLM2")
    if not gguf_path or not Path(gguf_path).is_file():
        sys.exit("error: set MLX_HARMONY_SMOLLM2 to the SmolLM2 GGUF (scripts/fetch-default-model prints it)")
    reader = GGUFReader(gguf_path)

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = reader.fields[key]
        return f.parts[f.data[0]][0]
    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    f = reader.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
    tok.save(str(folder / "tokenizer.json"))
    template = bytes(reader.fields["tokenizer.chat_template"].parts[reader.fields["tokenizer.chat_template"].data[0]]).decode()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": tokens[int(scalar("tokenizer.ggml.bos_token_id"))],
        "eos_token": tokens[int(scalar("tokenizer.ggml.eos_token_id"))], "chat_template": template}, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": int(scalar("tokenizer.ggml.bos_token_id")),
                                                                "eos_token_id": int(scalar("tokenizer.ggml.eos_token_id"))}) + "\n")


def harmony_tokenizer(folder):
    source = ROOT / "fixtures" / "tokenizers" / "o200k_harmony"
    if not (source / "tokenizer.json").is_file():
        sys.exit(f"error: {source}/tokenizer.json is missing; run scripts/make-test-tokenizers first")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    # GPT-OSS ends a turn with <|return|> or <|call|>, and text with <|endoftext|>.
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 199998, "eos_token_id": [200002, 199999, 200012]}) + "\n")


def make(name, spec, seed, force):
    folder = OUT / name
    stamp = folder / ".version"
    if stamp.is_file() and stamp.read_text() == VERSION and not force:
        return False
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model_type, module, args, quant = spec
    model, config = build(name, model_type, module, args, quant, seed)
    weights = dict(tree_flatten(model.parameters()))
    if quant == "openai-release":
        weights = to_openai_layout(weights)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if model_type == "gpt_oss":
        harmony_tokenizer(folder)
    else:
        smollm2_tokenizer(folder)

    # The reference: mlx-lm reading the folder back with its own loader.
    loaded, _ = load_model(folder)
    mx.random.seed(1000 + seed)
    prompt = mx.random.randint(0, args["vocab_size"], (64,)).astype(mx.int32)
    logits = loaded(prompt[None])[0].astype(mx.float32)
    greedy = []
    for token, _ in generate_step(prompt, loaded, max_tokens=48, sampler=lambda x: mx.argmax(x, axis=-1)):
        greedy.append(int(token))
    rotating = []
    # make_prompt_cache(model, max_kv_size) would defer to a model's own
    # make_cache, which mlx-lm 0.32.2's llama has (for sliding layers), and
    # so ignore the bound: the rotating caches are made as it makes them
    # for models without one.
    if model_type == "gpt_oss":
        bounded = loaded.make_cache()
    else:
        bounded = [RotatingKVCache(max_size=ROTATING_MAX_KV_SIZE, keep=4) for _ in loaded.layers]
    for token, _ in generate_step(prompt, loaded, max_tokens=48, sampler=lambda x: mx.argmax(x, axis=-1),
                                  prompt_cache=bounded):
        rotating.append(int(token))
    mx.save_safetensors(str(folder / "reference.safetensors"),
                        {"prompt": prompt, "logits": logits, "greedy": mx.array(greedy, dtype=mx.int32),
                         "greedy_rotating": mx.array(rotating, dtype=mx.int32)},
                        metadata={"mlx": mx.__version__, "generator": "scripts/make_parity_models.py"})
    stamp.write_text(VERSION)
    return True


def main():
    force = "--force" in sys.argv
    made = [name for seed, (name, spec) in enumerate(CASES.items()) if make(name, spec, seed, force)]
    print(f"[parity] {len(CASES)} checkpoints in {OUT.relative_to(ROOT)} ({len(made)} made now)")


main()
