#!/usr/bin/env bash
# Concurrency against llama.cpp's own server, in one run: 1, 4 and 8
# concurrent chat requests of 64 tokens (greedy, the bench's prompts) through
# `llama-server -np 8` (2 threads, 2048 tokens of context per slot, prompt
# cache on) and through one `LocalGgufRunner` with 8 slots (the throughput
# bench), total generated tokens per second, and the ratio.
# llama-server is driven over HTTP from this machine's Python: its side pays
# for HTTP and JSON, ours for the pipes and the sandbox.
#
#   bench/build-reference-llama.sh llama-server   # once, ~15 min
#   bench/server-compare.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SERVER="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}/bin/llama-server"
MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
[ -x "$SERVER" ] || { echo "missing $SERVER: run bench/build-reference-llama.sh llama-server" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "missing $MODEL: run scripts/setup.sh" >&2; exit 2; }
PORT=18089
"$SERVER" -m "$MODEL" -t 2 -tb 2 -np 8 -c 16384 --port "$PORT" --host 127.0.0.1 \
  --jinja --no-webui >/tmp/llama-server-compare.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT

theirs=$(python3 - "$ROUNDS" "$PORT" <<'PY'
import json, statistics, sys, threading, time, urllib.request
rounds, port = int(sys.argv[1]), int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
for _ in range(300):
    try:
        if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("llama-server did not come up (see /tmp/llama-server-compare.log)")
prompts = [
    "Explain quantum computing in simple words.",
    "Write a short story about a lighthouse keeper.",
    "Describe how a bicycle works.",
    "What are the benefits of drinking water?",
    "Explain why the sky is blue.",
    "Describe a walk through a forest in autumn.",
    "How do airplanes stay in the air?",
    "Write a letter to a friend about a trip to the sea.",
]
def one(i, out):
    body = json.dumps({"messages": [{"role": "user", "content": prompts[i % 8]}],
                       "max_tokens": 64, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
    out[i] = json.load(urllib.request.urlopen(req, timeout=300))["usage"]["completion_tokens"]
def run(n):
    out = [0] * n
    started = time.monotonic()
    ts = [threading.Thread(target=one, args=(i, out)) for i in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
    return sum(out) / (time.monotonic() - started)
run(8)  # warm-up
res = {}
for n in (1, 4, 8):
    v = []
    for _ in range(rounds):
        time.sleep(0.4)
        v.append(run(n))
    res[n] = [statistics.median(v), min(v), max(v)]
print(json.dumps(res))
PY
)
kill $SERVER_PID 2>/dev/null || true
wait $SERVER_PID 2>/dev/null || true
trap - EXIT

ours=$(cargo bench -q -p symbi-slm-worker --bench throughput --profile dev -- "$ROUNDS" 2 concurrency 2>/dev/null \
  | awk '/concurrent ×/ { printf "%s %s %s\n", $1, $6, $9 }')
python3 - "$theirs" "$ours" <<'PY'
import json, sys
theirs = json.loads(sys.argv[1])
ours = {int(l.split()[0]): (float(l.split()[1]), l.split()[2]) for l in sys.argv[2].splitlines() if l.strip()}
print("default model, 2 threads, 64-token greedy chat requests (tok/s total, median [min–max])")
for n in (1, 4, 8):
    (t, lo, hi), (o, spread) = theirs[str(n)], ours[n]
    print(f"{n} concurrent   llama-server -np 8 {t:7.1f} [{lo:.1f}–{hi:.1f}]   runner (8 slots) {o:7.1f} {spread}   ratio {o / t:.2f}")
PY
