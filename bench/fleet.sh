#!/usr/bin/env bash
# The fleet test at full size (CI runs 8 agents × 4 requests): three
# replicas behind HAProxy and Prometheus on loopback, a larger load, one
# replica drained and one killed. Prints the checks and a `report` JSON
# line with the figures: counts, failures against the killed replica's
# requests in flight, the prefix-cache hit ratio with affinity against
# round robin, Prometheus' fleet sums. Counts, not speed: two cores run
# three replicas.
#
# Usage: bench/fleet.sh [AGENTS] [REQUESTS]   (default 16 8)
#        PROFILE=release for release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
agents="${1:-16}" requests="${2:-8}"
profile="${PROFILE:-dev}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/setup.sh
cargo build -q --profile "$profile" -p symbi-slm -p symbi-slm-worker
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
model="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"
"$(scripts/python-env)" tests/python/fleet.py --bin "$target/$dir" --model "$model" \
  --agents "$agents" --requests "$requests"
