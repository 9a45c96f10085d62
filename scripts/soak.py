"""Client side of scripts/soak: CLIENTS threads send streaming chat requests
back to back for SECONDS against a server at its queue limit, sampling the
server's RSS; prints a summary and exits non-zero on growth or a bad answer.
Standard library only. Usage: soak.py BASE_URL PID SECONDS CLIENTS"""

import http.client
import json
import sys
import threading
import time
import urllib.parse
import urllib.request

base, pid, seconds, clients = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
host = urllib.parse.urlparse(base)


def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("the server is gone")


deadline = time.time() + 120
while True:
    try:
        urllib.request.urlopen(base + "/health", timeout=2).read()
        break
    except OSError:
        if time.time() > deadline:
            raise SystemExit("the server did not come up")
        time.sleep(0.2)

counts = {}
problems = []
lock = threading.Lock()
stop_at = time.time() + seconds


def client(i):
    n = 0
    while time.time() < stop_at:
        n += 1
        body = json.dumps({
            "model": "soak", "stream": True, "max_tokens": 8 + (i * 7 + n) % 24,
            # Distinct prompts, some sharing a prefix: the prompt cache fills and evicts.
            "messages": [{"role": "system", "content": f"Context {i % 4}: " + "words " * (n % 50)},
                         {"role": "user", "content": f"Client {i}, request {n}."}],
        })
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
        try:
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read().decode("utf-8", "replace")
            status = response.status
            if status == 200 and not data.rstrip().endswith("data: [DONE]"):
                with lock:
                    problems.append(f"a stream ended without [DONE]: {data[-200:]!r}")
            elif status == 429:
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            status = type(e).__name__
        finally:
            conn.close()
        with lock:
            counts[status] = counts.get(status, 0) + 1


threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
for t in threads:
    t.start()
samples = []
started = time.time()
while time.time() < stop_at:
    time.sleep(max(1.0, seconds / 40))
    samples.append((time.time() - started, rss_mb()))
for t in threads:
    t.join(timeout=130)

print(f"{seconds:.0f} s, {clients} clients: answers {dict(sorted(counts.items(), key=str))}")
print("RSS MB: " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in samples))
bad = {k: v for k, v in counts.items() if k not in (200, 429)}
if bad:
    problems.append(f"answers other than 200/429: {bad}")
if counts.get(200, 0) == 0:
    problems.append("no request was answered")
# After the first third (warm-up: kernels, allocator pools, the prompt cache
# filling to its bound), the RSS must level off.
settled = [m for t, m in samples if t >= seconds / 3]
if len(settled) >= 2 and max(settled) > settled[0] * 1.25 + 32:
    problems.append(f"RSS grew after the warm-up: {settled[0]:.0f} -> {max(settled):.0f} MB")
for p in problems[:5]:
    print("FAILED:", p)
sys.exit(1 if problems else 0)
