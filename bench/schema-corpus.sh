#!/usr/bin/env bash
# Structured output on the whole schema corpus (tests/schemas: 60
# real-world schemas with their sources and licences, and our own), the
# service against llama.cpp's own server in one run: the same client
# (tests/python/schema_corpus.py, the official `openai` package), the same
# prompts, temperature 0, max_tokens 768, `response_format` json_schema,
# every answer validated by `jsonschema` (refusals count as failures).
# Prints each side's valid fraction, tokens/s (whole requests, prompt
# included) and median first-token time (prompt included), and, for the
# service, generation tokens/s with the schema against the same requests
# without it (tokens after the first over the time after it; each answer
# of its own length) and the first-token delay the schema adds (compile
# and first mask: cached-prompt requests with and without it), then the
# ratios; then forced tool calls on the corpus' 15 function schemas
# (tests/python/forced_tools.py) against both servers.
#
#   bench/build-reference-llama.sh llama-server   # once, ~15 min
#   bench/schema-corpus.sh                        # ~25 min; PROFILE=release for a release build
# The CI-sized subset (every 6th schema, the test server's settings) runs
# in crates/symbi-slm/tests/service.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}/bin/llama-server"
MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
[ -x "$SERVER" ] || { echo "missing $SERVER: run bench/build-reference-llama.sh llama-server" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "missing $MODEL: run scripts/setup.sh" >&2; exit 2; }
PROFILE="${PROFILE:-dev}"
cargo build -q --profile "$PROFILE" -p symbi-slm -p symbi-slm-worker
BIN="$CARGO_TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
PY="$(scripts/python-env)"
CONTEXT=4096
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

PORT=18093
"$SERVER" -m "$MODEL" -t 2 -tb 2 -np 1 -c "$CONTEXT" --port "$PORT" --host 127.0.0.1 \
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
capabilities = ["TextGeneration", "ToolUse"]
[slm.model_allow_lists.global_models.settings]
context_size = $CONTEXT
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
for url in "http://127.0.0.1:$PORT" "http://127.0.0.1:$((PORT + 1))"; do
  for _ in $(seq 600); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
done

run() { # URL TOKEN LABEL [ARGS…] → the summary line
  SYMBI_URL="$1/v1" SYMBI_TOKEN_A1="$2" "$PY" tests/python/schema_corpus.py --label "$3" "${@:4}" \
    | tee -a "$tmp/answers.log" | tail -1
}
ours=$(run "http://127.0.0.1:$((PORT + 1))" "$(echo "$token" | head -1)" "symbi-slm serve" --plain)
theirs=$(run "http://127.0.0.1:$PORT" none "llama-server")
grep '^FAIL' "$tmp/answers.log" || true
# Forced tool calls on the corpus' 15 function schemas, both servers.
tools() { # URL TOKEN LABEL → the summary line
  SYMBI_URL="$1/v1" SYMBI_TOKEN_A1="$2" "$PY" tests/python/forced_tools.py --label "$3" \
    | tee -a "$tmp/tools.log" | tail -1
}
ours_tools=$(tools "http://127.0.0.1:$((PORT + 1))" "$(echo "$token" | head -1)" "symbi-slm serve")
theirs_tools=$(tools "http://127.0.0.1:$PORT" none "llama-server")
grep '^FAIL' "$tmp/tools.log" || true
"$PY" - "$ours_tools" "$theirs_tools" <<'PY'
import json, sys
for s in map(json.loads, sys.argv[1:]):
    print(f"forced tool calls, {s['server']:16} valid {s['valid']}/{s['functions']}   {s['tokens_per_s']} tok/s")
PY

"$PY" - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"default model, 2 threads, context 4096, temperature 0, max_tokens 768, {ours['schemas']} schemas (tests/schemas)")
for s in (ours, theirs):
    print(f"{s['server']:16} valid {s['valid']}/{s['schemas']} ({s['valid_fraction']:.1%})   {s['tokens_per_s']} tok/s   first token {s['median_ttft_ms']} ms (median)")
print(f"symbi-slm serve generation alone: {ours['decode_tokens_per_s']} tok/s with the schema, {ours['plain_decode_tokens_per_s']} without ({ours['schema_over_plain_decode']:.3f}x); first token delayed by the schema's compile and first mask: {ours['median_schema_first_token_ms']} ms (median)")
print(f"formats checked by the validator: {', '.join(ours['formats_checked'])}")
print(f"ratios, ours / llama-server: valid {ours['valid_fraction'] / max(theirs['valid_fraction'], 1e-9):.2f}x, tokens/s {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")
for s in (ours, theirs):
    for name, why in s["failures"].items():
        print(f"  {s['server']} failed {name}: {why}")
PY
