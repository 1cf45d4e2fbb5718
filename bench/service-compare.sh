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
  python3 bench/stream-drive.py "$@"
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
