#!/usr/bin/env bash
# Builds llama.cpp's own one-shot tool (`llama-completion`) for the cold
# one-shot comparison (bench/cold-oneshot.sh). Not part of the product or
# the tests. llama-cpp-2's vendored llama.cpp has no tool sources, so they
# come from the llama-cpp-python source package on PyPI (see
# ../shared/FACTS.md), built with the flags the crate uses (GGML_NATIVE=OFF,
# OpenMP, Release). Output: $REF_DIR/bin/llama-completion.
set -euo pipefail
REF_DIR="${REF_DIR:-$HOME/.cache/symbiont-runtime/reference-llama}"
PKG="llama-cpp-python==0.3.36"
mkdir -p "$REF_DIR"
if [ -x "$REF_DIR/bin/llama-completion" ]; then
  echo "reference: $REF_DIR/bin/llama-completion already built" >&2
  exit 0
fi
cd "$REF_DIR"
if [ ! -d src ]; then
  pip download --quiet --no-deps --no-binary :all: "$PKG" -d dl
  mkdir -p src && tar -xzf dl/llama_cpp_python-*.tar.gz -C src --strip-components=1
fi
cd src/vendor/llama.cpp
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build build --target llama-completion -j"$(nproc)"
mkdir -p "$REF_DIR/bin"
cp build/bin/llama-completion "$REF_DIR/bin/"
echo "reference: built $REF_DIR/bin/llama-completion" >&2
