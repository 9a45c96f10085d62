#!/usr/bin/env python3
"""Regenerates crates/harmony/tests/golden/cases.json with openai-harmony (the reference).

For each case: the conversation (openai-harmony's JSON), its renderings (for completion, as
history, for training; with and without auto-dropping analysis), and, where the conversation
ends with assistant messages, those messages as a completion parsed token by token: the parsed
messages and, after every token, the parser's role, channel, recipient, content type and delta.

Runs offline: TIKTOKEN_ENCODINGS_BASE points at the o200k_base.tiktoken that the tiktoken-rs
crate ships. Needs scripts/fixtures-env (openai-harmony==0.0.8). The tool descriptions of the
cases are this project's own wording; builtin_tools.json beside cases.json holds the reference's
built-in browser and python namespaces (`ToolNamespaceConfig.browser()` / `.python()`), which
crates/tools declares byte for byte (its tests compare).
"""

import glob
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "harmony" / "tests" / "golden" / "cases.json"
BUILTIN = OUT.parent / "builtin_tools.json"

if "TIKTOKEN_ENCODINGS_BASE" not in os.environ:
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(home / "registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken")))
    if not found:
        sys.exit("error: o200k_base.tiktoken not found; run `cargo fetch` first")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(Path(found[-1]).parent) + "/"

from openai_harmony import (  # noqa: E402
    Author, ChannelConfig, Conversation, DeveloperContent, HarmonyEncodingName, Message,
    ReasoningEffort, RenderConversationConfig, Role, StreamableParser, SystemContent,
    ToolDescription, ToolNamespaceConfig, load_harmony_encoding,
)

enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)

BROWSER = ToolNamespaceConfig(
    name="browser",
    description="Look things up on the web.\nResults and pages are shown with a cursor like `[3]`.\nCite as `【{cursor}†L{start}-L{end}】`.",
    tools=[
        ToolDescription.new("search", "Search the web for `query`; show `topn` results.",
                            {"type": "object", "properties": {"query": {"type": "string"}, "topn": {"type": "number", "default": 10}}, "required": ["query"]}),
        ToolDescription.new("open", "Open a result by `id`, or a URL, at line `loc`.",
                            {"type": "object", "properties": {"id": {"type": ["number", "string"], "default": -1}, "cursor": {"type": "number", "default": -1}, "loc": {"type": "number", "default": -1}, "num_lines": {"type": "number", "default": -1}}}),
        ToolDescription.new("find", "Find `pattern` in the current page.",
                            {"type": "object", "properties": {"pattern": {"type": "string"}, "cursor": {"type": "number", "default": -1}}, "required": ["pattern"]}),
    ],
)
PYTHON = ToolNamespaceConfig(
    name="python",
    description="Run Python code in a stateful session and see its output.\nIt times out after 120 seconds; there is no network access.",
    tools=[],
)

WEATHER = ToolDescription.new(
    "get_current_weather", "Gets the current weather in the provided location.",
    {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}},
     "required": ["location"]})
LOCATION = ToolDescription.new("get_location", "Gets the location of the user.")
NESTED = ToolDescription.new(
    "create_event", "Creates a calendar event.\nReturns the event id.",
    {"type": "object", "description": "The event to create.", "properties": {
        "title": {"type": "string", "title": "Title", "examples": ["Standup", "1:1"]},
        "attendees": {"type": "array", "items": {"type": "object", "properties": {
            "email": {"type": "string"}, "optional": {"type": "boolean", "default": False}}, "required": ["email"]}},
        "when": {"type": "object", "properties": {"start": {"type": "string"}, "minutes": {"type": "integer", "default": 30}}, "required": ["start"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "raw": {"type": "array"},
        "priority": {"type": "integer", "enum": [1, 2, 3]},
        "anything": {}},
     "required": ["title", "when"]})
UNIONS = ToolDescription.new(
    "lookup", "Looks something up.",
    {"type": "object", "properties": {
        "key": {"oneOf": [{"type": "string", "description": "a name"}, {"type": "number", "description": "an id"}], "description": "a name"},
        "mode": {"oneOf": [{"type": "string", "enum": ["fast", "slow"], "default": "fast"}, {"type": "null"}], "description": "How to look", "default": "fast"},
        "limit": {"type": ["integer", "null"], "default": 5},
        "note": {"type": "string", "nullable": True, "default": "none"},
        "level": {"type": "string", "enum": ["a", "b"], "default": "a"},
        "ratio": {"type": "number", "default": 0.5}},
     "required": ["key"]})
TOP_ONE_OF = ToolDescription.new(
    "choose", "Takes one of two shapes.",
    {"oneOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "description": "shape A"},
               {"type": "object", "properties": {"b": {"type": "number"}}, "nullable": True, "default": {"b": 1}}]})


def sys_msg(content=None):
    return Message.from_role_and_content(Role.SYSTEM, content or SystemContent.new())


def dev_msg(content):
    return Message.from_role_and_content(Role.DEVELOPER, content)


def user(text):
    return Message.from_role_and_content(Role.USER, text)


def asst(text, channel=None, recipient=None, content_type=None):
    m = Message.from_role_and_content(Role.ASSISTANT, text)
    if channel:
        m = m.with_channel(channel)
    if recipient:
        m = m.with_recipient(recipient)
    if content_type:
        m = m.with_content_type(content_type)
    return m


def tool(name, text, channel="commentary"):
    m = Message.from_author_and_content(Author.new(Role.TOOL, name), text).with_recipient("assistant")
    return m.with_channel(channel) if channel else m


FUNCS = DeveloperContent.new().with_function_tools([WEATHER])
CASES = {
    "default_system_and_user": [sys_msg(), user("What is 2 + 2?")],
    "reasoning_low": [sys_msg(SystemContent.new().with_reasoning_effort(ReasoningEffort.LOW)), user("Hi")],
    "reasoning_medium": [sys_msg(SystemContent.new().with_reasoning_effort(ReasoningEffort.MEDIUM)), user("Hi")],
    "reasoning_high": [sys_msg(SystemContent.new().with_reasoning_effort(ReasoningEffort.HIGH)), user("Hi")],
    "system_with_dates": [sys_msg(SystemContent.new().with_conversation_start_date("2026-03-01").with_knowledge_cutoff("2025-01")), user("What day is it?")],
    "custom_identity": [sys_msg(SystemContent.new().with_model_identity("You are Dave, a concise assistant.")), user("Who are you?")],
    "browser_tool": [sys_msg(SystemContent.new().with_tools(BROWSER)), user("Find the MLX docs.")],
    "python_tool": [sys_msg(SystemContent.new().with_tools(PYTHON)), user("Compute 2**64.")],
    "browser_and_python_tools": [sys_msg(SystemContent.new().with_tools(BROWSER).with_tools(PYTHON).with_conversation_start_date("2026-01-02")), user("Go.")],
    "channels_not_required": [sys_msg(SystemContent.new().with_channel_config(ChannelConfig(valid_channels=["analysis", "final"], channel_required=False))), user("Hi")],
    "developer_instructions": [sys_msg(), dev_msg(DeveloperContent.new().with_instructions("Answer in riddles.\nNever give the answer directly.")), user("What is the capital of France?")],
    "function_without_parameters": [sys_msg(), dev_msg(DeveloperContent.new().with_function_tools([LOCATION])), user("Where am I?")],
    "function_with_enum_and_default": [sys_msg(), dev_msg(FUNCS), user("Weather in Paris?")],
    "function_nested_objects_arrays": [sys_msg(), dev_msg(DeveloperContent.new().with_function_tools([NESTED])), user("Book a standup.")],
    "function_unions_and_nullable": [sys_msg(), dev_msg(DeveloperContent.new().with_function_tools([UNIONS])), user("Look up 42.")],
    "function_top_level_one_of": [sys_msg(), dev_msg(DeveloperContent.new().with_function_tools([TOP_ONE_OF])), user("Choose.")],
    "several_functions_and_instructions": [sys_msg(SystemContent.new().with_reasoning_effort(ReasoningEffort.HIGH)), dev_msg(DeveloperContent.new().with_instructions("Be brief.").with_function_tools([LOCATION, WEATHER, NESTED])), user("Weather where I am?")],
    "developer_custom_namespace": [sys_msg(), dev_msg(DeveloperContent.new().with_tools(ToolNamespaceConfig(name="notes", description="Notes the user has saved.\nRead-only.", tools=[])).with_function_tools([LOCATION])), user("Any notes?")],
    "developer_namespace_with_description_and_tools": [sys_msg(), dev_msg(DeveloperContent.new().with_tools(ToolNamespaceConfig(name="calendar", description="The user's calendar.", tools=[NESTED]))), user("Plan my day.")],
    "everything": [sys_msg(SystemContent.new().with_model_identity("You are Atlas.").with_reasoning_effort(ReasoningEffort.LOW).with_conversation_start_date("2026-11-24").with_knowledge_cutoff("2025-06").with_tools(BROWSER).with_tools(PYTHON)), dev_msg(DeveloperContent.new().with_instructions("Use tools when useful.").with_function_tools([WEATHER, UNIONS])), user("Plan a trip.")],
    "multi_turn_history": [sys_msg(), user("Hi"), asst("Hello! How can I help?", "final"), user("Tell me a joke.")],
    "analysis_then_final_training": [sys_msg(), user("2+2?"), asst("Simple arithmetic.", "analysis"), asst("4", "final")],
    "ongoing_analysis_is_kept": [sys_msg(), user("2+2?"), asst("Let me think.", "analysis")],
    "analysis_between_finals": [sys_msg(), user("A?"), asst("think A", "analysis"), asst("answer A", "final"), user("B?"), asst("think B", "analysis"), asst("answer B", "final")],
    "analysis_dropped_then_new_question": [sys_msg(), user("A?"), asst("think A", "analysis"), asst("answer A", "final"), user("B?")],
    "function_call": [sys_msg(), dev_msg(FUNCS), user("Weather in SF?"), asst("Need weather.", "analysis"), asst('{"location":"San Francisco, CA"}', "commentary", "functions.get_current_weather", "<|constrain|>json")],
    "function_call_and_result": [sys_msg(), dev_msg(FUNCS), user("Weather in SF?"), asst("Need weather.", "analysis"), asst('{"location":"San Francisco, CA"}', "commentary", "functions.get_current_weather", "<|constrain|>json"), tool("functions.get_current_weather", '{"temperature": 18, "sky": "fog"}')],
    "function_round_trip_to_final": [sys_msg(), dev_msg(FUNCS), user("Weather in SF?"), asst("Need weather.", "analysis"), asst('{"location":"San Francisco, CA"}', "commentary", "functions.get_current_weather", "<|constrain|>json"), tool("functions.get_current_weather", '{"temperature": 18}'), asst("It is 18 °C and foggy.", "final")],
    "browser_search_call": [sys_msg(SystemContent.new().with_tools(BROWSER)), user("Latest MLX release?"), asst("Search for it.", "analysis"), asst('{"query":"MLX release","topn":3}', "analysis", "browser.search")],
    "browser_result_and_answer": [sys_msg(SystemContent.new().with_tools(BROWSER)), user("Latest MLX release?"), asst('{"query":"MLX release"}', "analysis", "browser.search"), tool("browser.search", "[0] MLX 0.32.2 (github.com)\nL0: released", "analysis"), asst("MLX 0.32.2 【0†L0】.", "final")],
    "python_call_and_result": [sys_msg(SystemContent.new().with_tools(PYTHON)), user("2**64?"), asst("print(2**64)", "analysis", "python"), tool("python", "18446744073709551616", "analysis"), asst("2^64 = 18446744073709551616", "final")],
    "plain_content_type": [sys_msg(), user("x"), asst("{}", "commentary", "functions.f", "json")],
    "user_with_name": [sys_msg(), Message.from_author_and_content(Author.new(Role.USER, "alice"), "Hi, I'm Alice.")],
    "recipient_all_is_omitted": [sys_msg(), user("Hi"), asst("Hello everyone.", "final", "all")],
    "unicode_and_special_strings_in_text": [sys_msg(), user("Ünïcødé 日本語 😀 — and literal <|end|> and <|start|>assistant in text.")],
    "multiline_code": [sys_msg(), user("Fix this:\n```python\ndef f(x):\n    return x +\n```\n\nThanks!"), asst("```python\ndef f(x):\n    return x + 1\n```", "final")],
    "commentary_preamble_then_final": [sys_msg(), dev_msg(FUNCS), user("Weather?"), asst("I'll check the weather.", "commentary"), asst("Sunny.", "final")],
    "no_system_message": [user("Just a question.")],
    "assistant_without_channel": [sys_msg(), user("Hi"), asst("Hello.")],
    "empty_user_text": [sys_msg(), user("")],
    "developer_only": [dev_msg(DeveloperContent.new().with_instructions("Reply in French."))],
    "long_conversation_with_tools": [sys_msg(SystemContent.new().with_tools(PYTHON).with_reasoning_effort(ReasoningEffort.HIGH)), dev_msg(DeveloperContent.new().with_instructions("Show your work.").with_function_tools([WEATHER])), user("Compare 3^40 with 2^64, then tell me the weather in Oslo."), asst("Compute first.", "analysis"), asst("print(3**40 > 2**64)", "analysis", "python"), tool("python", "False", "analysis"), asst("Now weather.", "analysis"), asst('{"location":"Oslo"}', "commentary", "functions.get_current_weather", "<|constrain|>json"), tool("functions.get_current_weather", '{"temperature": -3}'), asst("3^40 < 2^64; Oslo is -3 °C.", "final")],
    "final_with_trailing_whitespace": [sys_msg(), user("Hi"), asst("Hello.  \n\n", "final")],
    "tool_message_without_channel": [sys_msg(), dev_msg(FUNCS), user("Weather?"), asst("{}", "commentary", "functions.get_current_weather", "<|constrain|>json"), tool("functions.get_current_weather", "{}", None)],
}


def tail_of_assistant(messages):
    """The trailing assistant messages (what a model would have generated)."""
    tail = []
    for m in reversed(messages):
        if m.author.role != Role.ASSISTANT:
            break
        tail.insert(0, m)
    return tail


def stream(tokens, role):
    parser = StreamableParser(enc, role=role)
    steps = []
    for t in tokens:
        parser.process(t)
        r = parser.current_role
        steps.append([r.value if r else None, parser.current_channel, parser.current_recipient,
                      parser.current_content_type, parser.last_content_delta])
    parser.process_eos()
    return steps, [m.to_dict() for m in parser.messages]


def case(name, messages):
    conv = Conversation.from_messages(messages)
    no_drop = RenderConversationConfig(auto_drop_analysis=False)
    out = {
        "name": name,
        "messages": [m.to_dict() for m in messages],
        "completion": enc.render_conversation_for_completion(conv, Role.ASSISTANT),
        "conversation": enc.render_conversation(conv),
        "training": enc.render_conversation_for_training(conv),
        "completion_no_drop": enc.render_conversation_for_completion(conv, Role.ASSISTANT, no_drop),
    }
    tail = tail_of_assistant(messages)
    if tail:
        tokens = enc.render_conversation_for_training(Conversation.from_messages(tail), no_drop)
        steps, parsed = stream(tokens, None)
        # As the generator sees it: the prompt ended with <|start|>assistant.
        after_role = tokens[2:]
        steps_role, parsed_role = stream(after_role, Role.ASSISTANT)
        out["parse"] = {"tokens": tokens, "messages": parsed, "stream": steps,
                        "tokens_after_role": after_role, "messages_after_role": parsed_role, "stream_after_role": steps_role}
    return out


def main():
    cases = [case(name, messages) for name, messages in CASES.items()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    payload = {"generator": "openai-harmony 0.0.8 (scripts/make_harmony_golden.py)",
               "stop_tokens": sorted(enc.stop_tokens()),
               "stop_tokens_for_assistant_actions": sorted(enc.stop_tokens_for_assistant_actions()),
               "cases": cases}
    # One case per line: compact, and a change shows as a changed case.
    head = json.dumps({k: v for k, v in payload.items() if k != "cases"}, ensure_ascii=False)[:-1]
    body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    text = f'{head}, "cases": [\n{body}\n]}}\n'
    with_parse = sum(1 for c in cases if "parse" in c)
    builtin = json.dumps({"generator": "openai-harmony 0.0.8 (scripts/make_harmony_golden.py)",
                          "browser": ToolNamespaceConfig.browser().model_dump(),
                          "python": ToolNamespaceConfig.python().model_dump()},
                         ensure_ascii=False, indent=1) + "\n"
    if "--check" in sys.argv:
        for path, expected in ((OUT, text), (BUILTIN, builtin)):
            if not path.exists() or path.read_text() != expected:
                sys.exit(f"error: {path.relative_to(ROOT)} differs from what openai-harmony gives "
                         "now; run scripts/make-harmony-golden and review the change")
        print(f"[golden] {OUT.relative_to(ROOT)} matches openai-harmony ({len(cases)} cases)")
        return
    BUILTIN.write_text(builtin)
    OUT.write_text(text)
    print(f"[golden] {len(cases)} cases ({with_parse} with streaming parse) -> {OUT.relative_to(ROOT)}")


main()
