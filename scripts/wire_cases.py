"""The server requests scripts/compare-builds sends to two builds: models, chat and
completions (plain and streamed), a tool declaration, and the error paths. Prints
one line per response with ids and times masked, so two builds' outputs diff.

Usage: wire_cases.py PORT MODEL_NAME
"""
import json
import re
import sys
import urllib.request
def req(port, path, body=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method or ("POST" if data else "GET"), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r) as resp: return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()
def norm(text):
    text = re.sub(r'"(id|created)":\s*("[^"]*"|\d+)', r'"\1":X', text)
    text = re.sub(r'call_[0-9a-f]+', 'call_X', text)
    text = re.sub(r'(chatcmpl|cmpl)-[0-9a-f]+', r'\1-X', text)
    return text
port = int(sys.argv[1]); model = sys.argv[2]
cases = [
 ("/v1/models", None),
 ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 12}),
 ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}),
 ("/v1/completions", {"model": model, "prompt": "Once upon", "temperature": 0, "max_tokens": 8}),
 ("/v1/completions", {"model": model, "prompt": "Once upon", "temperature": 0, "max_tokens": 8, "stream": True}),
 ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}], "temperature": 5}),
 ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}], "n": 2}),
 ("/v1/chat/completions", {"model": model, "messages": [], "bogus": 1}),
 ("/v1/chat/completions", {"model": "other", "messages": []}),
 ("/v1/completions", {"model": model, "prompt": "x", "stop": ["a","b","c","d","e"]}),
 ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": "x"}),
 ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "What is the weather?"}], "temperature": 0, "max_tokens": 30, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
]
for path, body in cases:
    status, text = req(port, path, body)
    print(status, norm(text))
