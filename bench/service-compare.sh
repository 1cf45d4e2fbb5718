#!/usr/bin/env bash
# The service against llama.cpp's own server, driven by the same client and
# load in one run: `llama-server -np NP -c NP×2048` (2 threads, prompt
# cache on, --jinja) and `symbi-slm serve` (profile standard with
# max_memory_mb = 4096, the default settings: 8 slots sharing one KV
# cache, sandboxed worker), LEVELS concurrent streamed chat requests of 64
# tokens (greedy, the same prompts), through /v1/chat/completions. Prints
# total generated tokens/s and the time to first token as the client saw
# them (medians [min–max] over ROUNDS), the ratios, and each side's peak
# resident memory from the kernel (VmHWM of llama-server; of our worker
# and of the serve process). Both servers stay up (idle, neither uses the
# CPU); the client drives one at a time, alternating which goes first.
#
#   bench/build-reference-llama.sh llama-server   # once, ~15 min
#   bench/service-compare.sh [ROUNDS] [NP] [LEVELS]   # defaults: 5 8 1,4,8
#   SETTINGS="cache_tokens = 4096" bench/service-compare.sh   # the model's settings
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
NP="${2:-8}"
LEVELS="${3:-1,4,8}"
SERVER="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}/bin/llama-server"
MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
[ -x "$SERVER" ] || { echo "missing $SERVER: run bench/build-reference-llama.sh llama-server" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "missing $MODEL: run scripts/setup.sh" >&2; exit 2; }
# PROFILE=release for a release build (llama.cpp built again: ~15 min);
# the default dev profile builds every dependency, llama.cpp included, at
# opt-level 3 and our crates at 1 (a handicap for our side, if any).
PROFILE="${PROFILE:-dev}"
cargo build -q --profile "$PROFILE" -p symbi-slm -p symbi-slm-worker
BIN="$CARGO_TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

drive() { # URL_A TOKEN_A URL_B TOKEN_B ROUNDS → JSON {a: …, b: …}
  python3 bench/stream-drive.py "$@"
}

PORT=18091
"$SERVER" -m "$MODEL" -t 2 -tb 2 -np "$NP" -c $((NP * 2048)) --port "$PORT" --host 127.0.0.1 \
  --jinja --no-webui ${SERVER_ARGS:-} >"$tmp/llama-server.log" 2>&1 &
pids+=($!)
server_pid=$!

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
[slm.model_allow_lists.global_models.settings]
${SETTINGS:-}
[slm.model_allow_lists.agent_model_maps]
bench = ["smollm2"]
[slm.sandbox_profiles.standard.resources]
max_memory_mb = 4096
[slm.service]
listen = "127.0.0.1:$((PORT + 1))"
[slm.service.agent_tokens]
$(echo "$token" | sed -n 2p)
TOML
"$BIN/symbi-slm" --config "$tmp/service.toml" serve --worker "$BIN/symbi-slm-worker" \
  >"$tmp/serve.out" 2>"$tmp/serve.log" &
pids+=($!)
serve_pid=$!
both=$(PIDS_A="$server_pid" PIDS_B="$serve_pid" drive "http://127.0.0.1:$PORT" none "http://127.0.0.1:$((PORT + 1))" "$(echo "$token" | head -1)" "$ROUNDS" "$LEVELS")
hwm() { awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
worker_pid=$(pgrep -P "$serve_pid" -f symbi-slm-worker | head -1)
mem="$(hwm "$server_pid") $(hwm "$worker_pid") $(hwm "$serve_pid")"

theirs=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["a"]))' "$both")
ours=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["b"]))' "$both")

python3 - "$theirs" "$ours" "$NP" "$mem" <<'PY'
import json, sys
theirs, ours, np_ = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
server, worker, serve = (float(x) for x in sys.argv[4].split())
g_theirs, g_ours = theirs.pop("generated"), ours.pop("generated")
c_theirs, c_ours = theirs.pop("cpu_ms_per_token"), ours.pop("cpu_ms_per_token")
print(f"default model, 2 threads, llama-server -np {np_} -c {int(np_) * 2048} vs symbi-slm serve (standard, 4096 MB, default settings), 64-token greedy streamed chat requests, same client (medians [min–max])")
for n in theirs:
    t, o = theirs[n], ours[n]
    print(f"{n} concurrent  tok/s total   llama-server {t['tps'][0]:7.1f} [{t['tps'][1]:.1f}–{t['tps'][2]:.1f}]   symbi-slm serve {o['tps'][0]:7.1f} [{o['tps'][1]:.1f}–{o['tps'][2]:.1f}]   ratio {o['tps'][0] / t['tps'][0]:.2f} (paired {o['paired']:.2f})")
    print(f"{n} concurrent  first token   llama-server {t['ttft'][0]:7.1f} ms [{t['ttft'][1]:.1f}–{t['ttft'][2]:.1f}]   symbi-slm serve {o['ttft'][0]:7.1f} ms [{o['ttft'][1]:.1f}–{o['ttft'][2]:.1f}]")
print(f"CPU per generated token in the measured rounds (user + system, {g_theirs} and {g_ours} tokens): llama-server {c_theirs:.2f} ms; symbi-slm serve and its worker {c_ours:.2f} ms (ratio {c_ours / c_theirs:.2f})")
print(f"peak resident (VmHWM): llama-server {server:.1f} MB; symbi-slm worker {worker:.1f} MB + serve {serve:.1f} MB = {worker + serve:.1f} MB (ratio {(worker + serve) / server:.2f}, worker alone {worker / server:.2f})")
PY
