#!/usr/bin/env bash
# Cold one-shot: `symbi-slm run` (new process, worker spawn, sandbox, load,
# 64 tokens, exit) against llama.cpp's own `llama-completion` on the same
# model, prompt, threads and greedy sampling, alternated in one run.
# Prints medians, spread (min–max), the wall-time ratio and the peak
# resident memory ratio (the worker's VmHWM against llama-completion's).
#
#   bench/build-reference-llama.sh      # once, ~10 min
#   bench/cold-oneshot.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-10}"
REF="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}/bin/llama-completion"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/symbiont-runtime/target}"
cargo build -q -p symbi-slm -p symbi-slm-worker
SYMBI="$CARGO_TARGET_DIR/debug/symbi-slm"
MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -x "$REF" ] || { echo "missing $REF: run bench/build-reference-llama.sh" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "missing $MODEL: run scripts/setup.sh" >&2; exit 2; }

python3 - "$ROUNDS" "$SYMBI" "$REF" "$MODEL" <<'PY'
import json, os, resource, statistics, subprocess, sys, time
rounds, symbi, ref, model = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
prompt = "Once upon a time, in a small village by the sea,"
threads, tokens = "2", "64"
# The standard profile: 2 cores (threads follow it), sandbox fully applied.
ours = [symbi, "run", "--profile", "standard", "--raw", "--temperature", "0",
        "--max-tokens", tokens, "--json", prompt]
theirs = [ref, "-m", model, "-t", threads, "-n", tokens, "--temp", "0", "-c", "2048",
          "-p", prompt, "-no-cnv", "--no-warmup"]

def once(cmd):
    # Whole process, timed from spawn to reaped; its peak resident memory
    # from wait4 (the kernel's ru_maxrss of that process: llama-completion's
    # VmHWM; symbi-slm's own, while its worker's VmHWM is in the result).
    import tempfile
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        o.seek(0); e.seek(0)
        out, err = o.read().decode(), e.read().decode()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err[-800:]}")
    return wall, out, ru.ru_maxrss / 1024.0

walls = {"symbi-slm run": [], "llama-completion": []}
peaks = {"symbi-slm run": [], "llama-completion": []}
gen = []
for r in range(rounds + 1):          # round 0 warms the page cache
    time.sleep(0.5)
    w1, out, _ = once(ours)
    time.sleep(0.5)
    w2, _, p2 = once(theirs)
    if r == 0:
        continue
    meta = json.loads(out)["metadata"]
    walls["symbi-slm run"].append(w1)
    walls["llama-completion"].append(w2)
    peaks["symbi-slm run"].append(meta["worker_peak_memory_mb"])
    peaks["llama-completion"].append(p2)
    gen.append(meta["output_tokens"])
print(f"cold one-shot, default model, {threads} threads, {tokens} tokens max, greedy, {rounds} alternated rounds")
for k, v in walls.items():
    print(f"  {k:<18} wall median {statistics.median(v)*1e3:7.1f} ms  [{min(v)*1e3:.1f}–{max(v)*1e3:.1f}]"
          f"   peak median {statistics.median(peaks[k]):6.1f} MB [{min(peaks[k]):.1f}–{max(peaks[k]):.1f}]")
a, b = statistics.median(walls["symbi-slm run"]), statistics.median(walls["llama-completion"])
pa, pb = statistics.median(peaks["symbi-slm run"]), statistics.median(peaks["llama-completion"])
print(f"  wall ratio symbi-slm / llama-completion: {a/b:.3f}   (symbi-slm generated {statistics.median(gen)} tokens)")
print(f"  peak ratio (worker VmHWM / llama-completion ru_maxrss): {pa/pb:.3f}")
PY
