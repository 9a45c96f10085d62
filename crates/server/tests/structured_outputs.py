"""Structured outputs through the official openai SDK against
mlx-harmony-server running SmolLM2-135M (started by tests/server.rs): a model
far too small to follow a schema unaided. For each of the schemas below,
SAMPLES answers sampled at temperature 0.9 (chat/completions with
response_format json_schema, and a few through the Responses API's
text.format) must all parse and validate, checked by the jsonschema package,
not by the engine that enforced them. Also: json_object, a schema the engine
cannot compile (a 400 that names it), logprobs and top_logprobs.
Usage: python structured_outputs.py BASE_URL MODEL"""

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused")
SAMPLES = 2

S = {"type": "string", "maxLength": 24}
SCHEMAS = {
    "flat": {"type": "object", "properties": {"name": S, "age": {"type": "integer"}},
             "required": ["name", "age"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {"name": S, "address": {
            "type": "object", "properties": {"city": S, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"], "additionalProperties": False}},
            "required": ["name", "address"], "additionalProperties": False}},
        "required": ["person"], "additionalProperties": False},
    "array_bounds": {"type": "object", "properties": {"tags": {"type": "array", "items": S, "minItems": 2, "maxItems": 4}},
                     "required": ["tags"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
             "required": ["color"], "additionalProperties": False},
    "integer_range": {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
                      "required": ["score"], "additionalProperties": False},
    "number_range": {"type": "object", "properties": {"t": {"type": "number", "minimum": -40, "maximum": 50}},
                     "required": ["t"], "additionalProperties": False},
    "exclusive_range": {"type": "object", "properties": {"p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
                        "required": ["p"], "additionalProperties": False},
    "optional": {"type": "object", "properties": {"title": S, "subtitle": S, "year": {"type": "integer"}},
                 "required": ["title"], "additionalProperties": False},
    "any_of": {"type": "object", "properties": {"id": {"anyOf": [{"type": "integer", "minimum": 0}, S]}},
               "required": ["id"], "additionalProperties": False},
    "any_of_objects": {"type": "object", "properties": {"shape": {"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0}},
         "required": ["kind", "r"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number", "minimum": 0}},
         "required": ["kind", "side"], "additionalProperties": False}]}},
        "required": ["shape"], "additionalProperties": False},
    "boolean_null": {"type": "object", "properties": {"ok": {"type": "boolean"}, "note": {"type": ["string", "null"], "maxLength": 16}},
                     "required": ["ok", "note"], "additionalProperties": False},
    "array_of_objects": {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": S, "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
        "required": ["sku", "qty"], "additionalProperties": False}}},
        "required": ["items"], "additionalProperties": False},
    "const": {"type": "object", "properties": {"version": {"const": 2}, "name": S},
              "required": ["version", "name"], "additionalProperties": False},
    "string_pattern": {"type": "object", "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
                       "required": ["date"], "additionalProperties": False},
    "string_lengths": {"type": "object", "properties": {"code": {"type": "string", "minLength": 3, "maxLength": 6}},
                       "required": ["code"], "additionalProperties": False},
    "defs_ref": {"type": "object", "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                                                       "required": ["x", "y"], "additionalProperties": False}},
                 "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
                 "required": ["from", "to"], "additionalProperties": False},
    "enum_array": {"type": "object", "properties": {"days": {"type": "array", "items": {"enum": ["mon", "tue", "wed", "thu", "fri"]},
                                                             "minItems": 1, "maxItems": 5}},
                   "required": ["days"], "additionalProperties": False},
    "deep": {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"type": "array", "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 9}}},
        "required": ["c"], "additionalProperties": False}}, "required": ["b"], "additionalProperties": False}},
        "required": ["a"], "additionalProperties": False},
    "top_level_array": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "minItems": 1, "maxItems": 5},
    "mixed_required": {"type": "object", "properties": {"city": S, "population": {"type": "integer", "minimum": 0},
                                                         "capital": {"type": "boolean"}, "rivers": {"type": "array", "items": S, "maxItems": 2}},
                       "required": ["city", "capital"], "additionalProperties": False},
    "one_of_enum_or_number": {"type": "object", "properties": {"size": {"oneOf": [{"enum": ["S", "M", "L"]}, {"type": "integer", "minimum": 30, "maximum": 50}]}},
                              "required": ["size"], "additionalProperties": False},
}


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def validate(text, schema, what):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"FAILED: {what}: not JSON ({e}): {text!r}")
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        raise SystemExit(f"FAILED: {what}: {e.message}: {text!r}")


def sample(case):
    name, seed = case
    reply = client.chat.completions.create(
        model=model, temperature=0.9, seed=seed, max_tokens=300,
        messages=[{"role": "user", "content": f"Give me an example of a {name.replace('_', ' ')}."}],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}},
    )
    return name, seed, reply.choices[0]


# Several at once: the server decodes them together, each with its own mask.
cases = [(name, seed) for name in SCHEMAS for seed in range(SAMPLES)]
with ThreadPoolExecutor(max_workers=8) as pool:
    answers = list(pool.map(sample, cases))
for name, seed, choice in answers:
    check(choice.finish_reason == "stop", f"{name} seed {seed}: finish {choice.finish_reason}: {choice.message.content!r}")
    validate(choice.message.content, SCHEMAS[name], f"{name} seed {seed}")
checked = len(answers)
print(f"{len(SCHEMAS)} schemas x {SAMPLES} chat answers at temperature 0.9: all valid")

# The Responses API's text.format, and the SDK's parse helper on top.
for name in ["nested", "any_of_objects", "array_of_objects"]:
    response = client.responses.create(
        model=model, temperature=0.9, max_output_tokens=400, input=f"An example of {name}, please.",
        text={"format": {"type": "json_schema", "name": name, "schema": SCHEMAS[name], "strict": True}},
    )
    validate(response.output_text, SCHEMAS[name], f"responses {name}")

# Any JSON object, streamed. (Its strings have no bound: a free-running
# model can fill the token budget inside one, as it can with any API.)
stream = client.chat.completions.create(
    model=model, temperature=0.3, seed=7, max_tokens=300, stream=True,
    messages=[{"role": "user", "content": "Describe a cat."}], response_format={"type": "json_object"},
)
text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
check(isinstance(json.loads(text), dict), f"json_object: {text!r}")

# A schema the engine cannot compile: a 400 that says where.
try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {
            "type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["n"]}}},
    )
    raise SystemExit("FAILED: an unsatisfiable schema was accepted")
except openai.BadRequestError as e:
    check(e.body["param"] == "response_format", f"bad schema error param: {e.body}")
    check("response_format" in e.body["message"], f"bad schema message: {e.body}")

# Logprobs: the sampled token's, and the top ones sorted, greedy.
reply = client.chat.completions.create(
    model=model, temperature=0, max_tokens=8, logprobs=True, top_logprobs=5,
    messages=[{"role": "user", "content": "Say hello."}],
)
entries = reply.choices[0].logprobs.content
check(len(entries) > 0, "logprobs: none")
text = reply.choices[0].message.content
check("".join(e.token for e in entries) == text, f"logprob tokens {[e.token for e in entries]} vs {text!r}")
for e in entries:
    tops = [t.logprob for t in e.top_logprobs]
    check(len(tops) == 5, f"top_logprobs: {len(tops)}")
    check(tops == sorted(tops, reverse=True), f"top_logprobs not sorted: {tops}")
    check(e.top_logprobs[0].token == e.token and math.isclose(e.logprob, tops[0], abs_tol=1e-5),
          f"greedy token {e.token!r} is not the most likely {e.top_logprobs[0].token!r}")
    check(e.logprob <= 0 and sum(math.exp(t) for t in tops) <= 1.0001, "logprobs are not log-probabilities")
# Streamed, and at a temperature: the sampled token is reported with each chunk.
stream = client.chat.completions.create(
    model=model, temperature=0.9, seed=3, max_tokens=8, logprobs=True, top_logprobs=2, stream=True,
    messages=[{"role": "user", "content": "Say hello."}],
)
pieces, tokens = [], []
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
        tokens.extend(e.token for e in chunk.choices[0].logprobs.content)
check("".join(tokens) == "".join(pieces), f"streamed logprob tokens {tokens} vs {pieces}")
# Completions' logprobs: N.
completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4,
                                       temperature=0, logprobs=3)
lp = completion.choices[0].logprobs
check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0, f"completion logprobs {lp}")
check("".join(lp.tokens) == completion.choices[0].text, f"completion tokens {lp.tokens}")
# Out of range.
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=21)
    raise SystemExit("FAILED: top_logprobs 21 accepted")
except openai.BadRequestError as e:
    check(e.body["param"] == "top_logprobs", f"top_logprobs error: {e.body}")
# The Responses API.
response = client.responses.create(model=model, temperature=0, max_output_tokens=8, input="Say hello.",
                                   top_logprobs=3, include=["message.output_text.logprobs"])
entries = response.output[0].content[0].logprobs
check(len(entries) > 0 and len(entries[0].top_logprobs) == 3, f"responses logprobs {entries}")
# Streamed: each text delta carries its tokens; the done events and the
# completed response carry them all, and the greedy stream equals the reply.
deltas, streamed, done_entries, completed = [], [], None, None
with client.responses.stream(model=model, temperature=0, max_output_tokens=8, input="Say hello.",
                             top_logprobs=3, include=["message.output_text.logprobs"]) as events:
    for event in events:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
            streamed.extend(event.logprobs)
        elif event.type == "response.output_text.done":
            done_entries = event.logprobs
        elif event.type in ("response.completed", "response.incomplete"):
            completed = event.response
check("".join(e.token for e in streamed) == "".join(deltas), f"streamed responses logprob tokens vs {deltas}")
check([e.token for e in streamed] == [e.token for e in entries], "streamed responses logprobs differ from the reply's")
check(all(math.isclose(a.logprob, b.logprob, abs_tol=1e-4) for a, b in zip(streamed, entries)), "streamed logprob values differ")
check(done_entries is not None and len(done_entries) == len(streamed), "output_text.done lacks the logprobs")
check(len(completed.output[0].content[0].logprobs) == len(streamed), "response.completed lacks the logprobs")
# Strict tools. SmolLM2's template has no tool format of its own, so its
# calls are the bare object of Llama 3.1's (the whole reply); `{` pushed
# first through logit_bias makes each reply a call, and the mask holds it to
# the tool's parameters (no free strings: the bias would fill them with `{`).
brace = sys.argv[3]
weather = {"type": "object", "properties": {
    "city": {"enum": ["Oslo", "Bergen", "Tromsø"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
    "units": {"enum": ["metric", "imperial"]}},
    "required": ["city", "days"], "additionalProperties": False}
tools = [{"type": "function", "function": {"name": "get_weather", "description": "The forecast for a city.",
                                           "parameters": weather, "strict": True}}]
for seed in range(4):
    reply = client.chat.completions.create(
        model=model, temperature=0.9, seed=seed, max_tokens=120, tools=tools, logit_bias={brace: 40},
        messages=[{"role": "user", "content": "What will the weather be in Oslo this week?"}])
    calls = reply.choices[0].message.tool_calls or []
    check(len(calls) == 1 and calls[0].function.name == "get_weather",
          f"strict tool seed {seed}: {reply.choices[0].message}")
    validate(calls[0].function.arguments, weather, f"strict tool seed {seed}")
    check(reply.choices[0].finish_reason == "tool_calls", f"finish_reason {reply.choices[0].finish_reason}")
    checked += 1
print(f"{checked} constrained answers valid; all checks passed")
