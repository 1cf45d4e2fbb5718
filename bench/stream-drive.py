"""Drives two OpenAI-compatible servers with the same streamed chat load,
alternating which goes first in each round: LEVELS concurrent requests
(default 1,4) of 64 tokens (greedy, model `smollm2`). Prints JSON
{a: …, b: …} with total generated tokens/s and time to first token, each
[median, min, max].

    python3 bench/stream-drive.py URL_A TOKEN_A URL_B TOKEN_B ROUNDS [LEVELS]
"""
import json, statistics, sys, threading, time, urllib.request
sides = {"a": (sys.argv[1], sys.argv[2]), "b": (sys.argv[3], sys.argv[4])}
rounds = int(sys.argv[5])
levels = [int(n) for n in (sys.argv[6] if len(sys.argv) > 6 else "1,4").split(",")]
for base, _ in sides.values():
    for _ in range(600):
        try:
            if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.1)
    else:
        sys.exit(f"{base} did not come up")
prompts = ["Explain quantum computing in simple words.", "Write a short story about a lighthouse keeper.",
           "Describe how a bicycle works.", "Explain why the sky is blue.",
           "List five uses of a paperclip.", "Why do cats purr?",
           "Describe a sunrise over the mountains.", "How does a refrigerator keep food cold?"]
def one(base, token, i, out):
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                       "max_tokens": 64, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", body,
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    started = time.monotonic()
    ttft, tokens = None, 0
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = (time.monotonic() - started) * 1e3
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    out[i] = (ttft, tokens)
def run(side, n):
    base, token = sides[side]
    out = [None] * n
    started = time.monotonic()
    ts = [threading.Thread(target=one, args=(base, token, i, out)) for i in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
    return sum(o[1] for o in out) / (time.monotonic() - started), [o[0] for o in out]
for side in sides:
    run(side, max(levels))  # warm-up: the model loaded, the prompts cached
res = {side: {} for side in sides}
for n in levels:
    got = {side: ([], []) for side in sides}
    for r in range(rounds):
        # Alternate which side goes first.
        for side in (("a", "b") if r % 2 == 0 else ("b", "a")):
            time.sleep(0.3)
            t, f = run(side, n)
            got[side][0].append(t); got[side][1].extend(f)
    for side, (tps, ttft) in got.items():
        res[side][n] = {"tps": [statistics.median(tps), min(tps), max(tps)],
                        "ttft": [statistics.median(ttft), min(ttft), max(ttft)]}
print(json.dumps(res))
