"""The official openai SDK's Responses API against mlx-harmony-server (started by
tests/server.rs). MODE "tools": the model's replies are scripted, a get_weather
call (with reasoning on GPT-OSS) then the answer "Sunny, 21 °C in Oslo.", in a
cycle. MODE "plain": a real model (SmolLM2) answers freely.
MODE "python": the server runs python itself (--python); the scripted model
calls it with print(6*7), then answers "It is 42.".
Usage: python openai_responses.py BASE_URL MODEL tools|plain|python"""

import json
import sys

import openai

base_url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key="test-key")
ANSWER = "Sunny, 21 °C in Oslo."
tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}]
question = "What is the weather in Oslo?"


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def calls(response):
    return [item for item in response.output if item.type == "function_call"]


def weather_call(response, what):
    check(response.status == "completed", f"{what}: status {response.status}")
    found = calls(response)
    check(len(found) == 1, f"{what}: output {response.output}")
    check(found[0].name == "get_weather", f"{what}: name {found[0].name}")
    check(json.loads(found[0].arguments) == {"city": "Oslo"}, f"{what}: arguments {found[0].arguments}")
    check(found[0].call_id, f"{what}: call_id")
    return found[0]


def tool_output(call):
    return {"type": "function_call_output", "call_id": call.call_id,
            "output": json.dumps({"sky": "sunny", "c": 21})}


def events_of(stream):
    """The event types of a raw stream, with the final response."""
    kinds, final = [], None
    for event in stream:
        kinds.append(event.type)
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    return kinds, final


def check_sequence(kinds, what):
    check(kinds[:2] == ["response.created", "response.in_progress"], f"{what}: opening {kinds[:3]}")
    check(kinds[-1] in ("response.completed", "response.incomplete"), f"{what}: closing {kinds[-3:]}")
    check(kinds.count("response.output_item.added") == kinds.count("response.output_item.done"),
          f"{what}: items opened and closed {kinds}")


if mode == "tools":
    # Non-streaming, stored: the call comes back as a function_call item.
    first = client.responses.create(model=model, input=question, tools=tools, instructions="Be brief.")
    call = weather_call(first, "first turn")
    check(first.usage.input_tokens > 0 and first.usage.output_tokens > 0, f"usage {first.usage}")
    reasoning = [item for item in first.output if item.type == "reasoning"]
    if reasoning:  # GPT-OSS: the analysis channel is a reasoning item.
        check(reasoning[0].content[0].text == "Need the weather.", f"reasoning {reasoning[0]}")
        check(first.usage.output_tokens_details.reasoning_tokens > 0, f"reasoning tokens {first.usage}")
        check(first.output.index(reasoning[0]) < first.output.index(call), "reasoning before the call")

    # The round trip through previous_response_id.
    second = client.responses.create(model=model, previous_response_id=first.id,
                                     input=[tool_output(call)], tools=tools)
    check(second.status == "completed", f"second status {second.status}")
    check(second.output_text == ANSWER, f"second answer {second.output_text!r}")
    check(second.previous_response_id == first.id, "previous_response_id echoed")
    check(second.usage.input_tokens > first.usage.input_tokens, "the conversation grew")

    # The same round trip with explicit items, nothing stored (what Codex does):
    # the output items go back as the SDK dumps them, reasoning included.
    third = client.responses.create(model=model, input=question, tools=tools, store=False,
                                    include=["reasoning.encrypted_content"], prompt_cache_key="k",
                                    parallel_tool_calls=True, reasoning={"effort": "low", "summary": "auto"})
    call3 = weather_call(third, "unstored turn")
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}]
    items += [item.model_dump(exclude_none=True) for item in third.output]
    items.append(tool_output(call3))
    fourth = client.responses.create(model=model, input=items, tools=tools, store=False)
    check(fourth.output_text == ANSWER, f"explicit items answer {fourth.output_text!r}")
    try:
        client.responses.retrieve(third.id)
        check(False, "an unstored response was kept")
    except openai.NotFoundError:
        pass

    # Streaming with the SDK's helper: the final response assembles the call.
    with client.responses.stream(model=model, input=question, tools=tools) as stream:
        streamed = stream.get_final_response()
    streamed_call = weather_call(streamed, "streamed turn")
    # Raw events of the answer's turn: text deltas join to the answer.
    raw = client.responses.create(model=model, previous_response_id=streamed.id,
                                  input=[tool_output(streamed_call)], tools=tools, stream=True)
    text, kinds, final = "", [], None
    for event in raw:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            final = event.response
    check_sequence(kinds, "streamed answer")
    check(text == ANSWER, f"streamed text {text!r}")
    check(final is not None and final.output_text == ANSWER, f"final {final}")
    check("response.output_text.done" in kinds and "response.content_part.added" in kinds, f"events {kinds}")

    # Raw events of a call's turn.
    kinds, final = events_of(client.responses.create(model=model, input=question, tools=tools, stream=True))
    check_sequence(kinds, "streamed call")
    check("response.function_call_arguments.delta" in kinds, f"call events {kinds}")
    check("response.function_call_arguments.done" in kinds, f"call events {kinds}")
    weather_call(final, "raw streamed call")
    if reasoning:
        check("response.reasoning_text.delta" in kinds, f"reasoning events {kinds}")
    # Back to the cycle's start for whoever runs next.
    client.responses.create(model=model, previous_response_id=final.id,
                            input=[tool_output(calls(final)[0])], tools=tools)

    # Stored responses can be read back and deleted.
    again = client.responses.retrieve(first.id)
    check(again.id == first.id and calls(again)[0].call_id == call.call_id, f"retrieve {again}")
    deleted = client.responses.delete(first.id)
    try:
        client.responses.retrieve(first.id)
        check(False, "a deleted response was still there")
    except openai.NotFoundError:
        pass
elif mode == "python":
    # The server's own python call is an item of its own, with its output.
    answer = client.responses.create(model=model, input="What is 6*7?")
    kinds = [item.type for item in answer.output]
    check(kinds == ["reasoning", "code_interpreter_call", "message"], f"items {kinds}")
    call = answer.output[1]
    check(call.code == "print(6*7)" and call.status == "completed", f"call {call}")
    check(call.outputs and "42" in call.outputs[0].logs, f"outputs {call.outputs}")
    check(answer.output_text == "It is 42.", f"answer {answer.output_text!r}")
    events, code = [], ""
    with client.responses.stream(model=model, input="What is 6*7?") as stream:
        for event in stream:
            events.append(event.type)
            if event.type == "response.code_interpreter_call_code.delta":
                code += event.delta
        final = stream.get_final_response()
    for kind in ["response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.done",
                 "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed"]:
        check(kind in events, f"{kind} missing from {events}")
    check(code == "print(6*7)", f"streamed code {code!r}")
    check([item.type for item in final.output] == kinds, f"streamed items {final.output}")
    check("42" in final.output[1].outputs[0].logs, f"streamed outputs {final.output[1]}")
    check(final.output_text == "It is 42.", f"streamed answer {final.output_text!r}")
else:
    # A real model's free answer, plain and streamed, and a continuation.
    first = client.responses.create(model=model, input="Say hello.", instructions="You are brief.",
                                    max_output_tokens=8, temperature=0)
    check(first.status in ("completed", "incomplete"), f"status {first.status}")
    check(first.output_text.strip() != "", f"answer {first.output_text!r}")
    check(first.output[0].type == "message" and first.output[0].role == "assistant", f"output {first.output}")
    if first.status == "incomplete":
        check(first.incomplete_details.reason == "max_output_tokens", f"details {first.incomplete_details}")
        check(first.usage.output_tokens == 8, f"usage {first.usage}")
    kinds, text, final = [], "", None
    for event in client.responses.create(model=model, input="Say hello.", instructions="You are brief.",
                                         max_output_tokens=8, temperature=0, stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    check_sequence(kinds, "plain stream")
    check(text == first.output_text, f"greedy stream {text!r} vs {first.output_text!r}")
    check(final.output_text == text, "final text")
    follow = client.responses.create(model=model, previous_response_id=first.id, input="And again.",
                                     max_output_tokens=4, temperature=0)
    check(follow.usage.input_tokens > first.usage.input_tokens, "the continuation carries the first turn")

# Errors keep the API's shape.
try:
    client.responses.create(model="no-such-model", input="hi")
    check(False, "an unknown model was accepted")
except openai.NotFoundError as e:
    check(e.body["param"] == "model", f"param {e.body}")
try:
    client.responses.create(model=model, input=[{"type": "input_image", "image_url": "x"}])
    check(False, "an image item was accepted")
except openai.BadRequestError as e:
    check(e.body["param"] == "input[0].type", f"param {e.body}")
try:
    client.responses.create(model=model, input="hi", previous_response_id="resp_missing")
    check(False, "an unknown previous_response_id was accepted")
except openai.NotFoundError as e:
    check(e.body["param"] == "previous_response_id", f"param {e.body}")
print("all checks passed")
