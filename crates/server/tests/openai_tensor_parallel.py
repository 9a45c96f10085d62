"""The official openai SDK against mlx-harmony-server running as two
tensor-parallel ranks (started by tests/server.rs under MLX's launcher with
SmolLM2), checked against the same model served by one process: the same
greedy answers, alone, streamed and several at once (one batch).
Usage: python openai_tensor_parallel.py BASE_URL MODEL ONE_PROCESS_BASE_URL"""

import sys
from concurrent.futures import ThreadPoolExecutor

import openai

base_url, model, reference_url = sys.argv[1], sys.argv[2], sys.argv[3]
ranks = openai.OpenAI(base_url=base_url, api_key="unused")
one = openai.OpenAI(base_url=reference_url, api_key="unused")


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def ask(client, question, max_tokens=24):
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=max_tokens,
    )
    return reply.choices[0].message.content, reply.usage.completion_tokens


questions = ["Name three colours.", "Name three animals.", "What is 2 + 2?", "Say hello."]
expected = [ask(one, q) for q in questions]
check(all(text for text, _ in expected), f"one process answered {expected}")

# Alone.
check(ask(ranks, questions[0]) == expected[0], "a lone request")

# Streamed.
stream = ranks.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": questions[1]}],
    temperature=0,
    max_tokens=24,
    stream=True,
)
streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
check(streamed == expected[1][0], f"streamed {streamed!r}, expected {expected[1][0]!r}")

# Together: the requests share the ranks' batch, of different lengths.
with ThreadPoolExecutor(len(questions)) as pool:
    together = list(pool.map(lambda q: ask(ranks, q), questions))
check(together == expected, f"together {together}, expected {expected}")

# A client that goes away mid-answer: its sequence is dropped on every rank
# at the same step, and the ranks stay in step for the next requests.
stream = ranks.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Tell me a long story."}],
    temperature=0,
    max_tokens=200,
    stream=True,
)
for count, _ in enumerate(stream):
    if count == 3:
        break
stream.close()
with ThreadPoolExecutor(2) as pool:
    after = list(pool.map(lambda q: ask(ranks, q), questions[2:]))
check(after == expected[2:], f"after a cancelled stream {after}, expected {expected[2:]}")

# Legacy completions too.
completion = ranks.completions.create(model=model, prompt="The sky is", temperature=0, max_tokens=12)
reference = one.completions.create(model=model, prompt="The sky is", temperature=0, max_tokens=12)
check(completion.choices[0].text == reference.choices[0].text, "a completion")

print("all checks passed")
