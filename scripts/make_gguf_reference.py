#!/usr/bin/env python3
"""A float reference for the GGUF parity test, independent of our GGUF loader: llama.cpp's own
gguf-py reads and dequantizes SmolLM2-135M-Instruct (Q4_1), the query/key rows are put back in
Hugging Face order (undoing llama.cpp's converter), and mlx-lm's Llama runs it in float32.

For each chat prompt of crates/core/tests/golden/smollm2_llamacpp.json it writes the logits at
the last prompt position and 32 greedy tokens to fixtures/models/smollm2-reference.safetensors.
Runs in scripts/reference-env. Usage: make_gguf_reference.py MODEL.gguf
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from mlx_lm.generate import generate_step
from mlx_lm.models import llama

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "crates" / "core" / "tests" / "golden" / "smollm2_llamacpp.json"
OUT = ROOT / "fixtures" / "models" / "smollm2-reference.safetensors"

NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
         "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def unpermute(w, heads):
    """Inverse of llama.cpp's converter permutation of q/k rows."""
    out_dim, in_dim = w.shape
    return w.reshape(heads, out_dim // heads // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def main():
    path = sys.argv[1]
    if OUT.is_file() and OUT.stat().st_mtime > Path(path).stat().st_mtime and OUT.stat().st_mtime > GOLDEN.stat().st_mtime:
        print(f"[gguf-reference] {OUT.relative_to(ROOT)}: up to date")
        return
    r = GGUFReader(path)
    heads, kv_heads = int(field(r, "llama.attention.head_count")), int(field(r, "llama.attention.head_count_kv"))
    args = llama.ModelArgs(model_type="llama", hidden_size=int(field(r, "llama.embedding_length")),
                           num_hidden_layers=int(field(r, "llama.block_count")),
                           intermediate_size=int(field(r, "llama.feed_forward_length")),
                           num_attention_heads=heads, num_key_value_heads=kv_heads,
                           rms_norm_eps=float(field(r, "llama.attention.layer_norm_rms_epsilon")),
                           vocab_size=len(r.fields["tokenizer.ggml.tokens"].data),
                           rope_theta=float(field(r, "llama.rope.freq_base")), tie_word_embeddings=True)
    weights = {}
    for t in r.tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        stem, _ = t.name.rsplit(".", 1)
        if stem == "token_embd":
            name = "model.embed_tokens.weight"
        elif stem == "output_norm":
            name = "model.norm.weight"
        elif stem == "output":
            name = "lm_head.weight"
            args.tie_word_embeddings = False
        else:
            _, layer, part = stem.split(".", 2)
            name = f"model.layers.{layer}.{NAMES[part]}.weight"
            if part == "attn_q":
                w = unpermute(w, heads)
            elif part == "attn_k":
                w = unpermute(w, kv_heads)
        weights[name] = mx.array(w)
    model = llama.Model(args)
    model.load_weights(list(weights.items()))
    cases = json.loads(GOLDEN.read_text())["cases"]
    out = {}
    for i, case in enumerate(cases):
        prompt = mx.array(case["prompt_tokens"], dtype=mx.int32)
        out[f"logits_{i}"] = model(prompt[None])[0, -1].astype(mx.float32)
        greedy = []
        for token, _ in generate_step(prompt, model, max_tokens=32, sampler=lambda x: mx.argmax(x, axis=-1)):
            greedy.append(int(token))
        out[f"greedy_{i}"] = mx.array(greedy, dtype=mx.int32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(OUT), out, metadata={"generator": "scripts/make_gguf_reference.py"})
    print(f"[gguf-reference] {len(cases)} prompts -> {OUT.relative_to(ROOT)}")


main()
