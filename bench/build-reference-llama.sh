#!/usr/bin/env bash
# Builds llama.cpp's own tools for the reference figures: `llama-completion`
# for the cold one-shot comparison (bench/cold-oneshot.sh) and
# `llama-server` for the concurrency comparison (bench/server-load.py).
# Usage: bench/build-reference-llama.sh [TOOL ...] (default: both). Not part
# of the product or the tests. llama-cpp-2's vendored llama.cpp has no tool sources, so they
# come from the llama-cpp-python source package on PyPI (the one source
# of llama.cpp's tools reachable from this machine), built with the flags the crate uses (GGML_NATIVE=OFF,
# OpenMP, Release). Output: $REF_DIR/bin/<tool>. The llama.cpp of that
# package is a few weeks older than the crate's vendored tree (whose tool
# sources are omitted); the notes beside each figure say so.
set -euo pipefail
REF_DIR="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}"
PKG="llama-cpp-python==0.3.36"
TOOLS=("$@")
[ "${#TOOLS[@]}" -gt 0 ] || TOOLS=(llama-completion llama-server)
mkdir -p "$REF_DIR"
MISSING=()
for t in "${TOOLS[@]}"; do
  [ -x "$REF_DIR/bin/$t" ] || MISSING+=("$t")
done
if [ "${#MISSING[@]}" -eq 0 ]; then
  echo "reference: ${TOOLS[*]} already built in $REF_DIR/bin" >&2
  exit 0
fi
cd "$REF_DIR"
if [ ! -d src ]; then
  pip download --quiet --no-deps --no-binary :all: "$PKG" -d dl
  mkdir -p src && tar -xzf dl/llama_cpp_python-*.tar.gz -C src --strip-components=1
fi
cd src/vendor/llama.cpp
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build build --target "${MISSING[@]}" -j"$(nproc)"
mkdir -p "$REF_DIR/bin"
for t in "${MISSING[@]}"; do
  cp "build/bin/$t" "$REF_DIR/bin/"
  echo "reference: built $REF_DIR/bin/$t" >&2
done
