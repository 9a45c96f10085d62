"""The official openai SDK against mlx-harmony-server (started by tests/server.rs
with a tiny GPT-OSS checkpoint whose replies are scripted: a get_weather call,
then an answer). Usage: python openai_sdk.py BASE_URL MODEL"""

import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="test-key")

tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
question = [{"role": "user", "content": "What is the weather in Oslo?"}]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


# /v1/models
listed = [m.id for m in client.models.list()]
check(listed == [model], f"models.list: {listed}")

# Non-streaming: the call comes back as tool_calls, the reasoning apart.
first = client.chat.completions.create(model=model, messages=question, tools=tools)
choice = first.choices[0]
check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason}")
call = choice.message.tool_calls[0]
check(call.function.name == "get_weather", f"name {call.function.name}")
check(json.loads(call.function.arguments) == {"city": "Oslo"}, f"arguments {call.function.arguments}")
check(choice.message.model_extra.get("reasoning_content") == "Need the weather.", f"reasoning {choice.message}")
check(first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0, f"usage {first.usage}")

# The tool's answer goes back; the model answers. The assistant message goes
# back as the SDK dumps it (annotations, audio, function_call, refusal: null),
# and the request carries fields of the current schema this server ignores.
followup = question + [
    choice.message.model_dump(),
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny", "c": 21})},
]
second = client.chat.completions.create(
    model=model, messages=followup, tools=tools, service_tier="auto", prompt_cache_key="weather",
    safety_identifier="user-1", verbosity="low", modalities=["text"], logit_bias={"0": -1},
    top_logprobs=0, store=False, metadata={"run": "sdk-test"}, parallel_tool_calls=True)
check(second.choices[0].finish_reason == "stop", f"finish {second.choices[0].finish_reason}")
check(second.choices[0].message.content == "Sunny, 21 °C in Oslo.", f"content {second.choices[0].message}")
check(second.usage.prompt_tokens > first.usage.prompt_tokens, "the tool round trip made the prompt longer")

# Streaming, the same two steps: deltas assemble to the same answers.
stream = client.chat.completions.create(model=model, messages=question, tools=tools, stream=True)
name, arguments, reasoning, finish, roles = "", "", "", None, []
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    if delta.role:
        roles.append(delta.role)
    reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
    for tc in delta.tool_calls or []:
        name += tc.function.name or ""
        arguments += tc.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
check(roles == ["assistant"], f"roles {roles}")
check(name == "get_weather" and json.loads(arguments) == {"city": "Oslo"}, f"streamed call {name} {arguments}")
check(reasoning == "Need the weather.", f"streamed reasoning {reasoning!r}")
check(finish == "tool_calls", f"streamed finish {finish}")

stream = client.chat.completions.create(
    model=model, messages=followup, tools=tools, stream=True, stream_options={"include_usage": True}
)
content, usage, finish = "", None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    if chunk.choices:
        content += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
check(content == "Sunny, 21 °C in Oslo.", f"streamed content {content!r}")
check(finish == "stop", f"streamed finish {finish}")
check(usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage {usage}")

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=question)
    raise SystemExit("FAILED: an unknown model was accepted")
except openai.NotFoundError as e:
    check(e.body["code"] == "model_not_found", f"404 body {e.body}")
try:
    client.chat.completions.create(model=model, messages=question, temperature=7)
    raise SystemExit("FAILED: temperature 7 was accepted")
except openai.BadRequestError as e:
    check(e.body["param"] == "temperature", f"400 body {e.body}")

print("openai SDK: all checks passed")
