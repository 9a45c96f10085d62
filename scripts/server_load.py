"""Client side of scripts/server-load: one run of CLIENTS streaming clients
(the official openai SDK) against a running server, a JSON line of results;
or, with --table, the summary of those lines."""

import json
import statistics
import sys
import threading
import time
import urllib.request

WORDS = ("river mountain lantern orchard violin harbor meadow comet falcon glacier "
         "canyon willow ember prairie beacon").split()


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_up(base, pid, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base.rsplit("/v1", 1)[0] + "/health", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server (pid {pid}) did not come up")


def one_run(base, pid, clients, max_tokens, rows, run):
    import openai

    wait_up(base, pid)
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)
    rss_before = rss_bytes(pid)
    results = [None] * clients
    start = threading.Barrier(clients + 1)

    def worker(i):
        topic = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
        messages = [{"role": "user", "content": f"Client {i}: write a short story about {topic}."}]
        start.wait()
        began = time.perf_counter()
        first, tokens, finish = None, 0, None
        try:
            stream = client.chat.completions.create(
                model="load", messages=messages, max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True})
            for chunk in stream:
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content and first is None:
                        first = time.perf_counter() - began
                    finish = choice.finish_reason or finish
            results[i] = {"ok": finish is not None, "ttft": first, "tokens": tokens,
                          "latency": time.perf_counter() - began}
        except Exception as e:  # a lost request is reported, not raised
            results[i] = {"ok": False, "error": repr(e)}

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    done = [r for r in results if r and r["ok"]]
    tokens = sum(r["tokens"] for r in done)
    print(json.dumps({
        "rows": rows, "run": run, "clients": clients, "completed": len(done),
        "errors": [r.get("error") for r in results if not (r and r["ok"])][:3],
        "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
        "ttft": [r["ttft"] for r in done if r["ttft"] is not None],
        "latency": [r["latency"] for r in done],
        "rss_before": rss_before, "rss_after": rss_bytes(pid),
    }))


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def table(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    failed = False
    by = {}
    for r in rows:
        by.setdefault(r["rows"], []).append(r)
    print("\n| --max-concurrency | completed | aggregate tok/s (median, min-max) | first token p50 / p95 s "
          "| end-to-end p50 / p95 s | RSS after each run, MB |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    medians = {}
    for n, runs in sorted(by.items()):
        rates = [r["tokens_per_s"] for r in runs]
        medians[n] = statistics.median(rates)
        ttft = [x for r in runs for x in r["ttft"]]
        lat = [x for r in runs for x in r["latency"]]
        completed = sum(r["completed"] for r in runs)
        asked = sum(r["clients"] for r in runs)
        rss = [r["rss_after"] / 1e6 for r in runs]
        print(f"| {n} | {completed}/{asked} | {medians[n]:.1f} ({min(rates):.1f}-{max(rates):.1f}) "
              f"| {pct(ttft, .5):.2f} / {pct(ttft, .95):.2f} | {pct(lat, .5):.2f} / {pct(lat, .95):.2f} "
              f"| {', '.join(f'{x:.0f}' for x in rss)} |")
        for r in runs:
            if r["errors"]:
                print(f"  lost at --max-concurrency {n}, run {r['run']}: {r['errors']}")
        if completed != asked:
            failed = True
        # Bounded: the last run's RSS within 10% (or 64 MB) of the first's.
        if len(rss) > 1 and rss[-1] > max(rss[0] * 1.10, rss[0] + 64):
            print(f"  RSS grew across runs at --max-concurrency {n}: {rss}")
            failed = True
    ones = medians.get(1)
    for n, m in sorted(medians.items()):
        if ones and n != 1:
            print(f"\naggregate throughput, batched ({n}) vs one at a time: {m / ones:.2f}x")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        table(sys.argv[2])
    else:
        base, pid, clients, max_tokens, rows, run = sys.argv[1:7]
        one_run(base, int(pid), int(clients), int(max_tokens), int(rows), int(run))
