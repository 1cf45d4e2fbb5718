#!/usr/bin/env bash
# Pulls and first starts of a Hugging Face model, from a hub on loopback
# that speaks the real protocol (crates/symbiont-runtime/examples/
# loopback_hub.rs, serving the default model), in ROUNDS alternated rounds:
#   - `symbi-slm models pull` against huggingface_hub's `hf_hub_download`
#     (the pinned client of tests/python), each into an empty cache;
#   - the pin check at a run's start: `symbi-slm config check` and a
#     2-token `run` with an empty digest cache (the file is hashed) and with
#     a warm one (a stat), beside `sha256sum` of the same file.
# Prints medians [min-max] and the ratios. Usage: bench/hub-pull.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
cargo build -q -p symbi-slm -p symbi-slm-worker
cargo build -q -p symbiont-runtime --features test-hub --example loopback_hub
py=$(scripts/python-env)
bin="$CARGO_TARGET_DIR/debug"
model="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
repo=HuggingFaceTB/SmolLM2-135M-Instruct-GGUF
file=SmolLM2-135M-Instruct.Q4_1.gguf
work=$(mktemp -d)
hub_out="$work/hub.out"
"$bin/examples/loopback_hub" "$repo=$model" >"$hub_out" 2>/dev/null &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q HF_ENDPOINT "$hub_out" && break; sleep 0.1; done
export $(grep HF_ENDPOINT "$hub_out")
pin=$(sha256sum "$model" | cut -d' ' -f1)
cat >"$work/hub.toml" <<TOML
[slm]
enabled = true
[[slm.model_allow_lists.global_models]]
id = "smol"
name = "SmolLM2"
provider = { HuggingFace = { model_path = "$repo", sha256 = "$pin" } }
capabilities = ["TextGeneration"]
TOML
unset HF_TOKEN HF_HOME HF_HUB_OFFLINE
"$py" - "$rounds" "$work" "$bin" "$repo" "$file" "$model" <<'PY'
import os, shutil, statistics, subprocess, sys, time
rounds, work, bin, repo, file, model = int(sys.argv[1]), *sys.argv[2:]
cfg = os.path.join(work, "hub.toml")
def timed(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t
def env_with(**kw):
    e = dict(os.environ); e.update(kw); return e
res = {k: [] for k in ["symbi pull", "huggingface_hub", "sha256sum", "check cold", "check warm", "run cold", "run warm"]}
hub_script = "import sys; from huggingface_hub import hf_hub_download; hf_hub_download(sys.argv[1], sys.argv[2])"
for r in range(rounds):
    order = [0, 1] if r % 2 == 0 else [1, 0]
    for which in order:
        cache = os.path.join(work, f"hf{which}")
        shutil.rmtree(cache, ignore_errors=True)
        e = env_with(HF_HUB_CACHE=cache, XDG_CACHE_HOME=os.path.join(work, "xdg"))
        if which == 0:
            res["symbi pull"].append(timed([f"{bin}/symbi-slm", "--config", cfg, "models", "pull", "smol"], e))
        else:
            res["huggingface_hub"].append(timed([sys.executable, "-c", hub_script, repo, file], e))
    # The pin check at start: digest cache empty (hashed) vs warm (stat).
    cache = os.path.join(work, "hf0")
    res["sha256sum"].append(timed(["sha256sum", model], os.environ))
    for kind in ["cold", "warm"]:
        xdg = os.path.join(work, "xdg-run")
        if kind == "cold":
            shutil.rmtree(xdg, ignore_errors=True)
        e = env_with(HF_HUB_CACHE=cache, XDG_CACHE_HOME=xdg)
        res[f"check {kind}"].append(timed([f"{bin}/symbi-slm", "--config", cfg, "config", "check"], e))
    for kind in ["cold", "warm"]:
        xdg = os.path.join(work, "xdg-run2")
        if kind == "cold":
            shutil.rmtree(xdg, ignore_errors=True)
        e = env_with(HF_HUB_CACHE=cache, XDG_CACHE_HOME=xdg, XDG_STATE_HOME=os.path.join(work, "state"))
        res[f"run {kind}"].append(timed([f"{bin}/symbi-slm", "--config", cfg, "run", "--model", "smol",
                                         "--worker", f"{bin}/symbi-slm-worker", "--max-tokens", "2", "--temperature", "0", "Hi"], e))
size = os.path.getsize(model) / 1e6
def line(k):
    v = res[k]
    return f"{k:16} median {statistics.median(v):.3f} s [{min(v):.3f}-{max(v):.3f}]"
for k in res:
    extra = f"  ({size / statistics.median(res[k]):.0f} MB/s)" if k in ("symbi pull", "huggingface_hub", "sha256sum") else ""
    print(line(k) + extra)
m = {k: statistics.median(v) for k, v in res.items()}
print(f"pull time symbi/huggingface_hub: {m['symbi pull'] / m['huggingface_hub']:.2f}")
print(f"config check cold/warm: {m['check cold'] / m['check warm']:.1f}x; run cold - warm: {m['run cold'] - m['run warm']:.3f} s (sha256sum {m['sha256sum']:.3f} s)")
PY
