"""Drives two OpenAI-compatible servers with the same streamed chat load,
alternating which goes first in each round: LEVELS concurrent requests
(default 1,4) of 64 tokens (greedy, model `smollm2`). Prints JSON
{a: …, b: …} with total generated tokens/s and time to first token, each
[median, min, max], the median of the per-round ratios b/a (the two sides
run back to back, so slow drifts of the machine cancel), and the tokens
each side generated in the measured rounds. With PIDS_A / PIDS_B (a
server's process ids, space-separated), also the CPU time those processes
and their descendants used in the measured rounds (user + system, from
/proc), per generated token.

    python3 bench/stream-drive.py URL_A TOKEN_A URL_B TOKEN_B ROUNDS [LEVELS]
"""
import json, os, statistics, sys, threading, time, urllib.request
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
    generated[side] += sum(o[1] for o in out)
    return sum(o[1] for o in out) / (time.monotonic() - started), [o[0] for o in out]
def tree_cpu(roots):
    """CPU seconds of `roots` and their descendants (live ones)."""
    hz, stats = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state ppid … utime (14th field) stime (15th).
        stats[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / hz)
    def under(pid):
        while pid > 1:
            if pid in roots:
                return True
            pid = stats.get(pid, (0, 0))[0]
        return False
    return sum(cpu for pid, (_, cpu) in stats.items() if under(pid))
roots = {side: {int(p) for p in os.environ.get(f"PIDS_{side.upper()}", "").split()} for side in sides}
generated = {side: 0 for side in sides}
for side in sides:
    run(side, max(levels))  # warm-up: the model loaded, the prompts cached
generated = {side: 0 for side in sides}
cpu_before = {side: tree_cpu(roots[side]) for side in sides}
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
    res["b"][n]["paired"] = statistics.median(b / a for a, b in zip(got["a"][0], got["b"][0]))
for side in sides:
    res[side]["generated"] = generated[side]
    if roots[side]:
        res[side]["cpu_ms_per_token"] = (tree_cpu(roots[side]) - cpu_before[side]) * 1e3 / generated[side]
print(json.dumps(res))
