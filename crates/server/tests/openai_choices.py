"""`n` choices through the official openai SDK (started by tests/server.rs with
a tiny GPT-OSS checkpoint whose replies are scripted: each choice plays the
next reply, so choice i answers REPLIES[i % 3]). Usage: python
openai_choices.py BASE_URL MODEL"""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused")
question = [{"role": "user", "content": "Say something."}]
REPLIES = ["Alpha.", "Beta.", "Gamma."]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


# Non-streaming: three choices, indexed, the prompt counted once.
one = client.chat.completions.create(model=model, messages=question, max_tokens=16)
three = client.chat.completions.create(model=model, messages=question, n=3, max_tokens=16)
check([c.index for c in three.choices] == [0, 1, 2], f"indices {three.choices}")
contents = [c.message.content for c in three.choices]
check(sorted(contents) == sorted(REPLIES), f"contents {contents}")
check(all(c.finish_reason == "stop" for c in three.choices), f"finish {three.choices}")
check(three.usage.prompt_tokens == one.usage.prompt_tokens, f"usage {three.usage} vs {one.usage}")
check(three.usage.completion_tokens > one.usage.completion_tokens, f"usage {three.usage}")

# Streaming: the deltas of each index assemble to its answer.
stream = client.chat.completions.create(
    model=model, messages=question, n=2, max_tokens=16, stream=True,
    stream_options={"include_usage": True},
)
texts, finishes, usage = {}, {}, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
check(sorted(texts) == [0, 1], f"streamed indices {sorted(texts)}")
check(all(t in REPLIES for t in texts.values()) and texts[0] != texts[1], f"streamed {texts}")
check(finishes == {0: "stop", 1: "stop"}, f"finishes {finishes}")
check(usage is not None and usage.prompt_tokens == one.usage.prompt_tokens, f"usage {usage}")

# Legacy completions.
completion = client.completions.create(model=model, prompt="Once", n=2, max_tokens=16)
check([c.index for c in completion.choices] == [0, 1], f"completion indices {completion.choices}")

# Too many choices: a 400 naming `n`.
try:
    client.chat.completions.create(model=model, messages=question, n=17)
    check(False, "n=17 was accepted")
except openai.BadRequestError as e:
    check(e.body.get("param") == "n", f"error {e.body}")

print("all checks passed")
