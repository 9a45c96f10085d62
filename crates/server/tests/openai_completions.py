"""Completions of several prompts and of token-id prompts through the official
openai SDK (started by tests/server.rs on the tiny float32 parity Llama,
greedy): each prompt's choices in a list equal the same prompt sent alone,
token ids equal the text they encode, and malformed prompts are a 400 naming
`prompt`. Usage: python openai_completions.py BASE_URL MODEL TOKENIZER_JSON"""

import sys

import openai
from tokenizers import Tokenizer

base_url, model, tokenizer_path = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key="unused")
tokenizer = Tokenizer.from_file(tokenizer_path)
greedy = dict(model=model, max_tokens=8, temperature=0)
prompts = ["The quick brown fox", "Once upon a time there was a", "1, 2, 3,"]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


alone = [client.completions.create(prompt=p, **greedy) for p in prompts]
texts = [a.choices[0].text for a in alone]
check(all(texts), f"empty completions {texts}")

# A list of prompts: prompt p's n choices are indices p*n .. p*n + n - 1.
together = client.completions.create(prompt=prompts, n=2, **greedy)
check([c.index for c in together.choices] == list(range(6)), f"indices {together.choices}")
got = [c.text for c in together.choices]
check(got == [t for t in texts for _ in range(2)], f"texts {got} against alone {texts}")
check(
    together.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone),
    f"prompt tokens {together.usage} against {[a.usage for a in alone]}",
)
check(
    together.usage.completion_tokens == 2 * sum(a.usage.completion_tokens for a in alone),
    f"completion tokens {together.usage}",
)

# Token ids: the same tokens as the text, one prompt or a list of them.
ids = [tokenizer.encode(p).ids for p in prompts]
one = client.completions.create(prompt=ids[0], **greedy)
check(one.choices[0].text == texts[0], f"token-id prompt gave {one.choices[0].text!r}")
check(one.usage.prompt_tokens == len(ids[0]), f"usage {one.usage} for {len(ids[0])} ids")
many = client.completions.create(prompt=ids, **greedy)
check([c.text for c in many.choices] == texts, f"token-id prompts gave {many.choices}")

# Streaming a list: each index's pieces assemble to its text; one usage.
stream = client.completions.create(
    prompt=prompts, stream=True, stream_options={"include_usage": True}, **greedy
)
pieces, finishes, usage = {}, {}, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        pieces[choice.index] = pieces.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
check([pieces.get(i) for i in range(3)] == texts, f"streamed {pieces}")
check(sorted(finishes) == [0, 1, 2], f"finishes {finishes}")
check(usage is not None and usage.prompt_tokens == together.usage.prompt_tokens, f"usage {usage}")

# Malformed prompts: a 400 naming `prompt`, and the server still answers.
for bad in [[], [1, "two"], [[1, 2], "three"], [-1], [1.5], [[]], [[10**9]], {"text": "x"}]:
    try:
        client.completions.create(prompt=bad, **greedy)
        check(False, f"prompt {bad!r} was accepted")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "prompt", f"prompt {bad!r}: error {e.body}")
try:
    client.completions.create(prompt=["a"] * 17, n=4, **greedy)
    check(False, "68 sequences were accepted")
except openai.BadRequestError as e:
    check("at most 64" in e.body.get("message", ""), f"error {e.body}")
check(client.completions.create(prompt=prompts[0], **greedy).choices[0].text == texts[0], "after")

print("all checks passed")
