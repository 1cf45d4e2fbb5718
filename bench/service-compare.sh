#!/usr/bin/env bash
# The service against llama.cpp's own server, driven by the same client and
# load in one run: `llama-server -np 4` (2 threads, 2048 tokens of context
# per slot, prompt cache on, --jinja) and `symbi-slm serve` (profile
# standard: 4 slots, sandboxed worker), 1 and 4 concurrent streamed chat
# requests of 64 tokens (greedy, the same prompts), through
# /v1/chat/completions. Prints total generated tokens/s and the time to
# first token as the client saw them (medians [min–max] over ROUNDS), and
# the ratios. Both servers stay up (idle, neither uses the CPU); the client
# drives one at a time, alternating which goes first in each round.
#
#   bench/build-reference-llama.sh llama-server   # once, ~15 min
#   bench/service-compare.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SERVER="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}/bin/llama-server"
MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
[ -x "$SERVER" ] || { echo "missing $SERVER: run bench/build-reference-llama.sh llama-server" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "missing $MODEL: run scripts/setup.sh" >&2; exit 2; }
cargo build -q --release -p symbi-slm -p symbi-slm-worker
BIN="$CARGO_TARGET_DIR/release"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

drive() { # URL_A TOKEN_A URL_B TOKEN_B ROUNDS → JSON {a: …, b: …}
  python3 - "$@" <<'PY'
import json, statistics, sys, threading, time, urllib.request
sides = {"a": (sys.argv[1], sys.argv[2]), "b": (sys.argv[3], sys.argv[4])}
rounds = int(sys.argv[5])
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
           "Describe how a bicycle works.", "Explain why the sky is blue."]
def one(base, token, i, out):
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": prompts[i % 4]}],
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
    run(side, 4)  # warm-up: the model loaded, the prompts cached
res = {side: {} for side in sides}
for n in (1, 4):
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
PY
}

PORT=18091
"$SERVER" -m "$MODEL" -t 2 -tb 2 -np 4 -c 8192 --port "$PORT" --host 127.0.0.1 \
  --jinja --no-webui >"$tmp/llama-server.log" 2>&1 &
pids+=($!)

token=$("$BIN/symbi-slm" agents token bench 2>/dev/null)
cat >"$tmp/service.toml" <<TOML
[slm]
enabled = true
default_sandbox_profile = "standard"
audit_log_path = "$tmp/audit.jsonl"
[[slm.model_allow_lists.global_models]]
id = "smollm2"
name = "SmolLM2"
provider = { LocalFile = { file_path = "$MODEL" } }
capabilities = ["TextGeneration"]
[slm.model_allow_lists.agent_model_maps]
bench = ["smollm2"]
[slm.service]
listen = "127.0.0.1:$((PORT + 1))"
[slm.service.agent_tokens]
$(echo "$token" | sed -n 2p)
TOML
"$BIN/symbi-slm" --config "$tmp/service.toml" serve --worker "$BIN/symbi-slm-worker" \
  >"$tmp/serve.out" 2>"$tmp/serve.log" &
pids+=($!)
both=$(drive "http://127.0.0.1:$PORT" none "http://127.0.0.1:$((PORT + 1))" "$(echo "$token" | head -1)" "$ROUNDS")
theirs=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["a"]))' "$both")
ours=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["b"]))' "$both")

python3 - "$theirs" "$ours" <<'PY'
import json, sys
theirs, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("default model, 2 threads, 4 slots each, 64-token greedy streamed chat requests, same client (medians [min–max])")
for n in ("1", "4"):
    t, o = theirs[n], ours[n]
    print(f"{n} concurrent  tok/s total   llama-server -np 4 {t['tps'][0]:7.1f} [{t['tps'][1]:.1f}–{t['tps'][2]:.1f}]   symbi-slm serve {o['tps'][0]:7.1f} [{o['tps'][1]:.1f}–{o['tps'][2]:.1f}]   ratio {o['tps'][0] / t['tps'][0]:.2f}")
    print(f"{n} concurrent  first token   llama-server -np 4 {t['ttft'][0]:7.1f} ms [{t['ttft'][1]:.1f}–{t['ttft'][2]:.1f}]   symbi-slm serve {o['ttft'][0]:7.1f} ms [{o['ttft'][1]:.1f}–{o['ttft'][2]:.1f}]")
PY
