#!/usr/bin/env bash
# What the Custom remote runner costs: llama.cpp's `llama-server -np 4`
# driven straight by a client, against the same client driving
# `symbi-slm serve`, whose model `smollm2` is that llama-server reached
# through a Custom runner (provider Custom, a Restricted profile: every
# connection through the runner's egress proxy). Same load as
# bench/service-compare.sh (1 and 4 concurrent streamed chat requests of
# 64 tokens, greedy), alternating which side goes first in each round;
# prints tokens/s and time to first token (medians [min–max]) and ratios.
# Not run by CI.
#
#   bench/build-reference-llama.sh llama-server   # once, ~15 min
#   bench/remote-compare.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SERVER="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}/bin/llama-server"
MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
[ -x "$SERVER" ] || { echo "missing $SERVER: run bench/build-reference-llama.sh llama-server" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "missing $MODEL: run scripts/setup.sh" >&2; exit 2; }
cargo build -q --release -p symbi-slm   # the model runs in llama-server: no worker needed
BIN="$CARGO_TARGET_DIR/release"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

PORT=18093
"$SERVER" -m "$MODEL" -t 2 -tb 2 -np 4 -c 8192 --port "$PORT" --host 127.0.0.1 \
  --jinja --no-webui >"$tmp/llama-server.log" 2>&1 &
pids+=($!)

token=$("$BIN/symbi-slm" agents token bench 2>/dev/null)
cat >"$tmp/service.toml" <<TOML
[slm]
enabled = true
default_sandbox_profile = "remote"
audit_log_path = "$tmp/audit.jsonl"
[[slm.model_allow_lists.global_models]]
id = "smollm2"
name = "SmolLM2 on llama-server"
provider = { Custom = { endpoint_url = "http://127.0.0.1:$PORT/v1" } }
capabilities = ["TextGeneration"]
[slm.model_allow_lists.agent_model_maps]
bench = ["smollm2"]
[slm.sandbox_profiles.remote.network]
access_mode = "Restricted"
allowed_destinations = [{ host = "127.0.0.1", port = $PORT }]
[slm.service]
listen = "127.0.0.1:$((PORT + 1))"
sandbox_profile = "remote"
[slm.service.agent_tokens]
$(echo "$token" | sed -n 2p)
TOML
"$BIN/symbi-slm" --config "$tmp/service.toml" serve >"$tmp/serve.out" 2>"$tmp/serve.log" &
pids+=($!)
both=$(python3 bench/stream-drive.py "http://127.0.0.1:$PORT" none \
  "http://127.0.0.1:$((PORT + 1))" "$(echo "$token" | head -1)" "$ROUNDS")

python3 - "$both" <<'PY'
import json, sys
both = json.loads(sys.argv[1])
theirs, ours = both["a"], both["b"]
print("default model on llama-server -np 4 (2 threads), 64-token greedy streamed chat requests, same client (medians [min–max])")
for n in ("1", "4"):
    t, o = theirs[n], ours[n]
    print(f"{n} concurrent  tok/s total   straight {t['tps'][0]:7.1f} [{t['tps'][1]:.1f}–{t['tps'][2]:.1f}]   via serve + Custom runner + egress proxy {o['tps'][0]:7.1f} [{o['tps'][1]:.1f}–{o['tps'][2]:.1f}]   ratio {o['tps'][0] / t['tps'][0]:.3f}")
    print(f"{n} concurrent  first token   straight {t['ttft'][0]:7.1f} ms [{t['ttft'][1]:.1f}–{t['ttft'][2]:.1f}]   via runner {o['ttft'][0]:7.1f} ms [{o['ttft'][1]:.1f}–{o['ttft'][2]:.1f}]   +{o['ttft'][0] - t['ttft'][0]:.1f} ms")
PY
