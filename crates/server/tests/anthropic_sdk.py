"""The official anthropic SDK's Messages API against mlx-harmony-server (started
by tests/server.rs). MODE "tools": the model's replies are scripted, a
get_weather call (with reasoning on GPT-OSS) then the answer "Sunny, 21 °C in
Oslo.", in a cycle. MODE "plain": a real model (SmolLM2) answers freely.
Usage: python anthropic_sdk.py BASE_URL MODEL tools|plain"""

import sys

import anthropic

base_url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
# The SDK's base URL is the server's root: it adds /v1/messages itself.
client = anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="test-key", max_retries=0)
ANSWER = "Sunny, 21 °C in Oslo."
tools = [{
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
question = [{"role": "user", "content": "What is the weather in Oslo?"}]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def weather_call(message, what):
    check(message.stop_reason == "tool_use", f"{what}: stop_reason {message.stop_reason}")
    uses = [block for block in message.content if block.type == "tool_use"]
    check(len(uses) == 1, f"{what}: content {message.content}")
    check(uses[0].name == "get_weather", f"{what}: name {uses[0].name}")
    check(uses[0].input == {"city": "Oslo"}, f"{what}: input {uses[0].input}")
    return uses[0]


def result_turn(message, use):
    return [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": '{"sky": "sunny", "c": 21}'}]}]


if mode == "tools":
    first = client.messages.create(model=model, max_tokens=4096, messages=question, tools=tools,
                                   system=[{"type": "text", "text": "Be brief."}],
                                   metadata={"user_id": "u1"}, thinking={"type": "adaptive"})
    use = weather_call(first, "first turn")
    check(first.usage.input_tokens > 0 and first.usage.output_tokens > 0, f"usage {first.usage}")
    thinking = [b for b in first.content if b.type == "thinking"]
    if thinking:  # GPT-OSS: the analysis channel is a thinking block, before the call.
        check(thinking[0].thinking == "Need the weather.", f"thinking {thinking[0]}")
        check(first.content.index(thinking[0]) < first.content.index(use), "thinking first")
    # The tool-use round trip: the assistant turn goes back as the SDK dumps it.
    second = client.messages.create(model=model, max_tokens=256, tools=tools,
                                    messages=question + result_turn(first, use))
    check(second.stop_reason == "end_turn", f"second stop_reason {second.stop_reason}")
    check([b.type for b in second.content] == ["text"], f"second content {second.content}")
    check(second.content[0].text == ANSWER, f"answer {second.content[0].text!r}")
    # Streaming with the SDK's helper, both turns; Claude Code's max_tokens
    # (more than the context) is clamped to what the context leaves.
    with client.messages.stream(model=model, max_tokens=32000, messages=question, tools=tools) as stream:
        streamed = stream.get_final_message()
    streamed_use = weather_call(streamed, "streamed turn")
    text = ""
    with client.messages.stream(model=model, max_tokens=256, tools=tools,
                                messages=question + result_turn(streamed, streamed_use)) as stream:
        for piece in stream.text_stream:
            text += piece
        final = stream.get_final_message()
    check(text == ANSWER and final.stop_reason == "end_turn", f"streamed answer {text!r} {final.stop_reason}")
    check(final.usage.input_tokens > 0 and final.usage.output_tokens > 0, f"streamed usage {final.usage}")
    # Raw events of a call's turn.
    kinds = [event.type for event in client.messages.create(
        model=model, max_tokens=256, messages=question, tools=tools, stream=True)]
    check(kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], f"events {kinds}")
    check(kinds.count("content_block_start") == kinds.count("content_block_stop") >= 1, f"blocks {kinds}")
    # Back to the cycle's start for whoever runs next.
    client.messages.create(model=model, max_tokens=64, messages=question + result_turn(first, use), tools=tools)
    # count_tokens is the prompt's length; the tool result makes it longer.
    counted = client.messages.count_tokens(model=model, messages=question, tools=tools)
    longer = client.messages.count_tokens(model=model, messages=question + result_turn(first, use), tools=tools)
    check(0 < counted.input_tokens < longer.input_tokens, f"counts {counted} {longer}")
else:
    first = client.messages.create(model=model, max_tokens=8, extra_body={"temperature": 0}, system="You are brief.",
                                   messages=[{"role": "user", "content": "Say hello."}])
    check(first.content[0].type == "text" and first.content[0].text.strip(), f"content {first.content}")
    check(first.stop_reason in ("end_turn", "max_tokens"), f"stop_reason {first.stop_reason}")
    if first.stop_reason == "max_tokens":
        check(first.usage.output_tokens == 8, f"usage {first.usage}")
    with client.messages.stream(model=model, max_tokens=8, extra_body={"temperature": 0}, system="You are brief.",
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
    check(text == first.content[0].text, f"greedy stream {text!r} vs {first.content[0].text!r}")
    # A stop sequence from the middle of that answer ends the same greedy
    # answer there, and is named.
    answer = first.content[0].text
    stop = answer[len(answer) // 2:len(answer) // 2 + 2]
    cut = client.messages.create(model=model, max_tokens=8, extra_body={"temperature": 0},
                                 system="You are brief.", stop_sequences=[stop, "never-seen"],
                                 messages=[{"role": "user", "content": "Say hello."}])
    check(cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop, f"stop {cut}")
    check(cut.content[0].text == answer[:answer.index(stop)], f"cut text {cut.content}")
    with client.messages.stream(model=model, max_tokens=8, extra_body={"temperature": 0},
                                system="You are brief.", stop_sequences=[stop],
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        streamed_cut = stream.get_final_message()
    check(streamed_cut.stop_reason == "stop_sequence" and streamed_cut.stop_sequence == stop,
          f"streamed stop {streamed_cut}")
    counted = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Say hello."}])
    check(counted.input_tokens > 0, f"count {counted}")

# Errors keep Anthropic's shape.
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=question)
    check(False, "an unknown model was accepted")
except anthropic.NotFoundError as e:
    check(e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", f"body {e.body}")
try:
    client.messages.create(model=model, max_tokens=8, messages=[
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}])
    check(False, "an image was accepted")
except anthropic.BadRequestError as e:
    check(e.body["error"]["type"] == "invalid_request_error", f"body {e.body}")
    check("messages[0].content[0]" in e.body["error"]["message"], f"message {e.body}")
try:
    anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="wrong", max_retries=0).messages.create(
        model=model, max_tokens=8, messages=question)
    check(mode == "plain", "a wrong key was accepted")
except anthropic.AuthenticationError as e:
    check(e.body["error"]["type"] == "authentication_error", f"body {e.body}")
print("all checks passed")
