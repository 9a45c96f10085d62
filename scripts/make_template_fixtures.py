"""Real chat templates and what transformers renders from them.

The templates of Llama 3.x, Mistral (Nemo), Qwen2.5 and Qwen3 are the ones the
models ship in tokenizer_config.json. llama.cpp keeps verbatim copies of them
for its own tests, and the llama-cpp-python source package on PyPI carries
llama.cpp, so this script takes them from there (pinned by hash) instead of
from the Hugging Face hub, which CI cannot reach. Nothing is committed: the
templates and the golden renderings go to fixtures/templates/ (git-ignored).

For every template and conversation below, transformers' own renderer
(`render_jinja_template`, what `apply_chat_template(tokenize=False)` calls)
gives either the prompt text or the error the template raised. The Rust test
crates/core/tests/chat_templates.rs renders the same and compares.

Usage: python make_template_fixtures.py OUT_DIR DOWNLOAD_CACHE
"""

import hashlib
import json
import sys
import tarfile
from datetime import datetime
import urllib.request
from pathlib import Path

from jinja2.exceptions import TemplateError
from transformers.utils.chat_template_utils import render_jinja_template

SDIST = (
    "https://files.pythonhosted.org/packages/e4/b4/"
    "c8cd17629ced0b9644a71d399a91145aedef109c0333443bef015e45b704/"
    "llama_cpp_python-0.3.16.tar.gz"
)
SDIST_SHA256 = "34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6"
PREFIX = "llama_cpp_python-0.3.16/vendor/llama.cpp/models/templates/"

# template file -> (family, special tokens the tokenizer would pass)
TEMPLATES = {
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("llama3", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("llama3", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "meta-llama-Llama-3.3-70B-Instruct.jinja": ("llama3", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("mistral", {"bos_token": "<s>", "eos_token": "</s>"}),
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("qwen", {"bos_token": None, "eos_token": "<|im_end|>"}),
    "Qwen-Qwen3-0.6B.jinja": ("qwen3", {"bos_token": None, "eos_token": "<|im_end|>"}),
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city, in degrees Celsius.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

CALL = {
    "id": "call12345",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
}

# name -> (messages, tools, add_generation_prompt, extra template variables)
CASES = {
    "user_only": ([{"role": "user", "content": "What is the capital of France?"}], None, True, {}),
    "system_and_user": (
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "  Hello there!  "},
        ],
        None,
        True,
        {},
    ),
    "multi_turn": (
        [
            {"role": "system", "content": "You answer in one sentence."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "Seven is a prime number."},
            {"role": "user", "content": "And an even one?"},
        ],
        None,
        True,
        {},
    ),
    "ends_with_assistant_no_generation_prompt": (
        [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi! \u00e9\u00e8 \u2014 \U0001F600"},
        ],
        None,
        False,
        {},
    ),
    "tools_declared": (
        [
            {"role": "system", "content": "Use tools when they help."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        [WEATHER],
        True,
        {},
    ),
    "tool_round_trip": (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temperature\": 21}"},
        ],
        [WEATHER],
        True,
        {},
    ),
    "fixed_date": (
        [{"role": "user", "content": "What day is it?"}],
        None,
        True,
        {"date_string": "01 Mar 2025"},
    ),
    "roles_not_alternating": (
        [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
        ],
        None,
        True,
        {},
    ),
    "thinking_in_history": (
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
            {"role": "user", "content": "3+3?"},
        ],
        None,
        True,
        {},
    ),
    "thinking_disabled": (
        [{"role": "user", "content": "Quick: 5+5?"}],
        None,
        True,
        {"enable_thinking": False},
    ),
}


def fetch_templates(cache: Path) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / SDIST.rsplit("/", 1)[1]
    if not archive.is_file() or hashlib.sha256(archive.read_bytes()).hexdigest() != SDIST_SHA256:
        print(f"[make-template-fixtures] downloading {archive.name} from PyPI (51 MB)", file=sys.stderr)
        partial = archive.with_suffix(".partial")
        urllib.request.urlretrieve(SDIST, partial)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            partial.unlink()
            sys.exit(f"{archive.name}: sha256 {digest}, expected {SDIST_SHA256}")
        partial.rename(archive)
    templates = {}
    with tarfile.open(archive) as tar:
        for name in TEMPLATES:
            templates[name] = tar.extractfile(PREFIX + name).read().decode("utf-8")
    return templates


def main() -> None:
    out, cache = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    templates = fetch_templates(cache)
    cases = []
    for name, source in templates.items():
        (out / name).write_text(source, encoding="utf-8")
        family, special = TEMPLATES[name]
        for case, (messages, tools, add_generation_prompt, extra) in CASES.items():
            kwargs = {k: v for k, v in special.items() if v is not None}
            kwargs.update(extra)
            entry = {
                "template": name,
                "family": family,
                "case": case,
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": add_generation_prompt,
                "variables": kwargs,
            }
            if "strftime_now" in source and "date_string" not in kwargs:
                # The template prints today's date; the test passes this one.
                entry["rendered_on"] = datetime.now().strftime("%d %b %Y")
            try:
                entry["expected"] = render_jinja_template(
                    conversations=[messages],
                    tools=tools,
                    chat_template=source,
                    add_generation_prompt=add_generation_prompt,
                    **kwargs,
                )[0][0]
            except TemplateError as error:
                entry["error"] = str(error)
            cases.append(entry)
    (out / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False), encoding="utf-8")
    errors = sum("error" in c for c in cases)
    print(f"[make-template-fixtures] {len(cases)} cases ({errors} raise) in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
