#!/usr/bin/env bash
# Builds the container image localhost/symbi-slm:latest from Debian 12's
# packages only: a root file system made by debootstrap (minbase, with
# libgomp1 for llama.cpp and ca-certificates for remote models and hubs),
# the two release executables side by side in /usr/local/bin, a user
# 10001, and nothing else; imported with `podman import` (no base image is
# pulled: no registry is reached). The model is not in the image: mount it
# at /models (deploy/container/run.sh, deploy/kubernetes/deployment.yaml).
#
# Usage: deploy/container/build.sh [IMAGE]   (default localhost/symbi-slm:latest)
# The Debian root is made once and kept in $IMAGE_ROOT (default
# ~/.cache/symbiont-runtime/image-root): outside the clone, a cache that
# only costs time when cold. Prints how long each step took and the size.
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${1:-localhost/symbi-slm:latest}"
root="${IMAGE_ROOT:-$HOME/.cache/symbiont-runtime/image-root}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "$(id -u)" -ne 0 ]; then
  echo "build: needs root (debootstrap, podman's root storage)" >&2; exit 1
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap podman >/dev/null
  }
done
step() { echo "build: $1: $(( $(date +%s) - t )) s" >&2; t=$(date +%s); }
t=$(date +%s)
if [ ! -e "$root/.complete" ]; then
  rm -rf "$root"
  debootstrap --variant=minbase --include=libgomp1,ca-certificates bookworm "$root" >/dev/null
  # What a runtime image does not need.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
  touch "$root/.complete"
  step "debootstrap (Debian 12 minbase + libgomp1, ca-certificates)"
fi
cargo build --release -q -p symbi-slm -p symbi-slm-worker
step "cargo build --release (symbi-slm, symbi-slm-worker)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -a "$root/." "$stage/"
rm -f "$stage/.complete"
install -m 0755 "$target/release/symbi-slm" "$stage/usr/local/bin/symbi-slm"
install -m 0755 "$target/release/symbi-slm-worker" "$stage/usr/local/bin/symbi-slm-worker"
echo "symbi:x:10001:10001:symbi-slm:/var/lib/symbi-slm:/usr/sbin/nologin" >> "$stage/etc/passwd"
echo "symbi:x:10001:" >> "$stage/etc/group"
mkdir -p "$stage/models" "$stage/etc/symbi-slm" "$stage/var/lib/symbi-slm" "$stage/var/cache/symbi-slm"
chown 10001:10001 "$stage/var/lib/symbi-slm" "$stage/var/cache/symbi-slm"
tar -C "$stage" --numeric-owner -cf - . | podman import \
  --change 'USER 10001' \
  --change 'WORKDIR /var/lib/symbi-slm' \
  --change 'ENV XDG_STATE_HOME=/var/lib/symbi-slm' \
  --change 'ENV XDG_CACHE_HOME=/var/cache/symbi-slm' \
  --change 'ENV OMP_WAIT_POLICY=PASSIVE' \
  --change 'EXPOSE 8080' \
  --change 'ENTRYPOINT ["/usr/local/bin/symbi-slm"]' \
  --change 'CMD ["--help"]' \
  --message "symbi-slm from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  - "$image" >/dev/null
step "podman import"
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image"
