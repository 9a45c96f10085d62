#!/usr/bin/env python3
"""Builds the real tokenizers the tests use, offline, as Hugging Face tokenizer.json files.

o200k_harmony (GPT-OSS): the o200k_base vocabulary that the `tiktoken-rs` crate ships,
converted by `transformers`' TikTokenConverter, plus the Harmony special tokens at the ids
openai-harmony gives them (199998 <|startoftext|> ... 200012 <|call|>, reserved up to 201087).

Output: fixtures/tokenizers/o200k_harmony/tokenizer.json (git-ignored). Needs the packages of
scripts/fixtures-env (transformers, tiktoken). Usage: make_test_tokenizers.py [--force]
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "tokenizers" / "o200k_harmony"

# openai-harmony's named special tokens of o200k_harmony; every other id from 199998
# to 201087 is <|reserved_ID|>.
HARMONY_SPECIALS = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
}
FIRST_SPECIAL, LAST_SPECIAL = 199998, 201087


def o200k_base_file() -> Path:
    """The o200k_base.tiktoken that tiktoken-rs ships (fetched by cargo if needed)."""
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    pattern = str(home / "registry" / "src" / "*" / "tiktoken-rs-*" / "assets" / "o200k_base.tiktoken")
    found = sorted(glob.glob(pattern))
    if not found:
        subprocess.run(["cargo", "fetch", "--quiet"], cwd=ROOT, check=True)
        found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"error: o200k_base.tiktoken not found under {home}/registry (is tiktoken-rs a dependency?)")
    return Path(found[-1])


def o200k_pattern(vocab: Path) -> str:
    """The pre-tokenizer regex of o200k_base, from tiktoken's own definition."""
    from tiktoken import load as tiktoken_load
    from tiktoken_ext import openai_public

    # Point tiktoken's loader at the local file instead of its download URL.
    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *a, **k: tiktoken_load.load_tiktoken_bpe(str(vocab))
    try:
        return openai_public.o200k_base()["pat_str"]
    finally:
        openai_public.load_tiktoken_bpe = original


def build_o200k_harmony(force: bool) -> None:
    target = OUT / "tokenizer.json"
    if target.is_file() and not force:
        print(f"[tokenizers] {target.relative_to(ROOT)}: already there")
        return
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = o200k_base_file()
    specials = [HARMONY_SPECIALS.get(i, f"<|reserved_{i}|>") for i in range(FIRST_SPECIAL, LAST_SPECIAL + 1)]
    converter = TikTokenConverter(vocab_file=str(vocab), pattern=o200k_pattern(vocab), extra_special_tokens=specials)
    tokenizer = converter.converted()
    # The converter appends the special tokens after the 199998 ordinary ones, in order;
    # check that every one landed on its id.
    for offset, token in enumerate(specials):
        got = tokenizer.token_to_id(token)
        if got != FIRST_SPECIAL + offset:
            sys.exit(f"error: {token} got id {got}, expected {FIRST_SPECIAL + offset}")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=OUT, delete=False, suffix=".tmp") as tmp:
        tmp.write(tokenizer.to_str())
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    (OUT / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 131072,
    }, indent=2) + "\n")
    print(f"[tokenizers] {target.relative_to(ROOT)}: written from {vocab}")


if __name__ == "__main__":
    build_o200k_harmony(force="--force" in sys.argv)
