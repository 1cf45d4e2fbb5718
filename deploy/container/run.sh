#!/usr/bin/env bash
# Runs the image of deploy/container/build.sh with podman, never creating or
# altering a cgroup (`--cgroups=disabled`), with rlimits below the host's
# (raising one needs CAP_SYS_RESOURCE), as a user (10001) with no
# capability, no-new-privileges and a read-only root, the default model
# mounted read-only at /models:
#   1. under the container runtime's default seccomp profile, then under
#      `--security-opt seccomp=unconfined` (the worker then installs its
#      own, narrower filter): `symbi-slm sandbox report --profile secure`
#      (which layers the worker can build there; its exit code is 0 only
#      when every control is enforced) and `symbi-slm run` of the default
#      model under `secure`;
#   2. `symbi-slm serve --model` in the container, under the first setting
#      where 1 held whole, on the host's loopback (host network: no cgroup
#      or firewall rule is made), then /ready and a chat completion from
#      the host with curl.
# Exits 0 only when 1 held whole under one setting and 2 answered; says
# which step stopped otherwise.
#
# Usage: deploy/container/run.sh [IMAGE] (default localhost/symbi-slm:latest)
#        MODEL=… for another GGUF file.
set -uo pipefail
# `--cgroups=disabled` needs crun, and crun refuses a host that mixes
# cgroup v1 with a cgroup2 hierarchy holding controllers ("cgroups in
# hybrid mode not supported"). There the script goes on in a private mount
# namespace in which that one mount is hidden: no cgroup is created or
# changed, and the host's mounts stay as they are.
unified=/sys/fs/cgroup/unified
if [ -z "${SYMBI_RUN_UNSHARED:-}" ] && grep -q " $unified .* - cgroup2 " /proc/self/mountinfo \
   && [ -n "$(cat "$unified/cgroup.controllers" 2>/dev/null)" ]; then
  echo "run: $unified is a cgroup2 hierarchy with controllers ($(tr '\n' ' ' < "$unified/cgroup.controllers")) beside cgroup v1: crun refuses that; running in a private mount namespace without it (no cgroup is touched)" >&2
  exec unshare -m --propagation private env SYMBI_RUN_UNSHARED=1 \
    sh -c 'umount "$1" && shift && exec "$@"' sh "$unified" "$0" "$@"
fi
image="${1:-localhost/symbi-slm:latest}"
model="${MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -f "$model" ] || { echo "run: no model at $model (scripts/setup.sh fetches it)" >&2; exit 1; }
podman image exists "$image" || { echo "run: no image $image: deploy/container/build.sh builds it" >&2; exit 1; }
base=(--rm --cgroups=disabled --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --user 10001:10001 --cap-drop=ALL --security-opt no-new-privileges
      --read-only --tmpfs /tmp --tmpfs /var/lib/symbi-slm:rw,mode=1777 --tmpfs /var/cache/symbi-slm:rw,mode=1777
      -v "$model:/models/model.gguf:ro")
status=0

for mode in default unconfined; do
  if [ "$mode" = default ]; then sec=(); what="the container runtime's default seccomp profile"
  else sec=(--security-opt seccomp=unconfined); what="seccomp=unconfined (the worker installs its own, narrower filter)"; fi
  echo "== sandbox report --profile secure, $what"
  podman run "${base[@]}" ${sec[@]+"${sec[@]}"} "$image" sandbox report --profile secure
  report=$?; echo "(exit $report: 0 when every control is enforced)"
  echo "== symbi-slm run --profile secure (the default model), $what"
  podman run "${base[@]}" ${sec[@]+"${sec[@]}"} "$image" \
    run --profile secure --max-tokens 24 --temperature 0 /models/model.gguf "Name three colours."
  ran=$?; echo "(exit $ran)"
  if [ "$report" -eq 0 ] && [ "$ran" -eq 0 ] && [ -z "${works_in:-}" ]; then
    works_in=$mode; works=(${sec[@]+"${sec[@]}"})
  fi
done
if [ -z "${works_in:-}" ]; then
  echo "run: under neither setting was every control enforced and the model run (above)"; exit 1
fi
echo "run: every control enforced and the model run under: $works_in"

echo "== symbi-slm serve in the container ($works_in seccomp), asked from the host"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
name="symbi-slm-run-$$"
podman run "${base[@]}" ${works[@]+"${works[@]}"} --network host --name "$name" -d \
  "$image" serve --no-auth --model /models/model.gguf --listen "127.0.0.1:$port" >/dev/null || status=1
ready=""
for _ in $(seq 1 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = 200 ]; then ready=1; break; fi
  sleep 0.2
done
if [ -n "$ready" ]; then
  curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model": "model", "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 12, "temperature": 0}'
  echo
else
  echo "run: the service in the container did not become ready"; status=1
fi
podman logs "$name" 2>&1 | tail -5
podman stop -t 10 "$name" >/dev/null 2>&1
exit "$status"
