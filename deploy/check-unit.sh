#!/usr/bin/env bash
# Proves that deploy/symbi-slm.service's hardening leaves the worker's own
# sandbox intact: boots a Debian 12 system under systemd-nspawn (systemd as
# its PID 1, which this host's may not be), and runs, as units carrying
# every directive of the shipped unit's [Service] section (DynamicUser,
# ProtectSystem=strict, NoNewPrivileges, RestrictAddressFamilies, …):
#   1. `symbi-slm sandbox report --profile secure`: every row enforced;
#   2. `symbi-slm run` of the default model under `secure`: an answer,
#      with every sandbox layer in force.
# Prints the two outputs and exits 0 only when both hold.
#
# Usage: deploy/check-unit.sh SYMBI_SLM SYMBI_SLM_WORKER MODEL.gguf
# ($UNIT_FILE: another unit to take the directives from, for the test's
# twin that must fail.)
# The Debian root is made once (debootstrap, ~1.5 min) and kept in
# $UNIT_ROOT (default ~/.cache/symbiont-runtime/unit-root): outside the
# clone, a cache that only costs time when cold.
set -euo pipefail
cd "$(dirname "$0")/.."
cli="$1" worker="$2" model="$3"
root="${UNIT_ROOT:-$HOME/.cache/symbiont-runtime/unit-root}"
if [ "$(id -u)" -ne 0 ]; then
  echo "check-unit: needs root (systemd-nspawn)" >&2; exit 1
fi
for tool in systemd-nspawn debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container debootstrap >/dev/null
  fi
done
if [ ! -x "$root/lib/systemd/systemd" ] || [ ! -e "$root/usr/lib/x86_64-linux-gnu/libgomp.so.1" ] || [ ! -e "$root/.complete" ]; then
  rm -rf "$root"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libgomp1 bookworm "$root" >/dev/null
  touch "$root/.complete"
fi

# The binaries and the model where the unit's comment says they go.
install -m 0755 "$cli" "$root/usr/local/bin/symbi-slm"
install -m 0755 "$worker" "$root/usr/local/bin/symbi-slm-worker"
install -d -m 0755 "$root/var/lib/symbi-slm/models" "$root/etc/symbi-slm"
install -m 0644 "$model" "$root/var/lib/symbi-slm/models/model.gguf"
digest=$(sha256sum "$model" | cut -d' ' -f1)
cat >"$root/etc/symbi-slm/config.toml" <<TOML
[slm]
enabled = true
default_sandbox_profile = "secure"
[[slm.model_allow_lists.global_models]]
id = "smol"
name = "SmolLM2"
provider = { LocalFile = { file_path = "/var/lib/symbi-slm/models/model.gguf", sha256 = "$digest" } }
capabilities = ["TextGeneration"]
TOML

# Two oneshot units with the shipped unit's [Service] directives, but for
# what starts and stops it (Type, ExecStart, ExecReload, Kill*, Restart*).
units="$root/etc/systemd/system"
rm -f "$units"/symbi-check-*.service "$units"/multi-user.target.wants/symbi-check-*.service
unit_file="${UNIT_FILE:-deploy/symbi-slm.service}"
service_lines=$(awk '/^\[Service\]/{s=1; next} /^\[/{s=0} s' "$unit_file" |
  grep -vE '^(#|$|Type=|NotifyAccess=|ExecStart=|ExecReload=|KillMode=|TimeoutStopSec=|Restart=|RestartSec=)')
# Root's alone: the container's systemd (root) writes the outputs, and no
# other local user can plant them first.
results=$(mktemp -d)
chmod 0700 "$results"
make_unit() { # name after command…
  local name="$1" after="$2"; shift 2
  cat >"$units/symbi-check-$name.service" <<UNIT
[Unit]
Description=symbi-slm unit check: $name
After=$after
$( [ "$name" = run ] && printf 'SuccessAction=poweroff-force\nFailureAction=poweroff-force' )
[Service]
Type=oneshot
ExecStart=$*
StandardOutput=file:/results/$name.out
StandardError=file:/results/$name.err
$service_lines
ReadWritePaths=/results
[Install]
WantedBy=multi-user.target
UNIT
  ln -sf "../symbi-check-$name.service" "$units/multi-user.target.wants/symbi-check-$name.service"
}
mkdir -p "$units/multi-user.target.wants"
make_unit report basic.target /usr/local/bin/symbi-slm --config /etc/symbi-slm/config.toml sandbox report --profile secure
make_unit run symbi-check-report.service /usr/local/bin/symbi-slm --config /etc/symbi-slm/config.toml run --model smol --max-tokens 8 --temperature 0 '"Name a fruit."'

# nspawn's own system call filter (systemd 252) predates Landlock: it is
# widened by the three Landlock calls, so that what is measured is the
# unit's directives, not the container's.
timeout 300 systemd-nspawn -q -D "$root" --register=no --keep-unit --bind="$results:/results" \
  --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" -b >"$results/boot.log" 2>&1 || true
status=0
echo "== sandbox report under the unit's directives"
cat "$results/report.out" 2>/dev/null || { echo "(no output)"; cat "$results/report.err" "$results/boot.log" 2>/dev/null | tail -20; status=1; }
if ! grep -q '^network.access_mode' "$results/report.out" 2>/dev/null; then
  status=1
elif grep -qE '^[^ ].*  (NO|PARTIAL)  ' "$results/report.out"; then
  # (the ENFORCED column: yes, or NO / PARTIAL in capitals)
  echo "check-unit: a control is not enforced under the unit"; status=1
fi
echo "== run under the unit's directives"
cat "$results/run.out" "$results/run.err" 2>/dev/null || status=1
if ! grep -q 'sandbox layers' "$results/run.err" 2>/dev/null || grep -q 'NOT ENFORCED' "$results/run.err" || [ ! -s "$results/run.out" ]; then
  echo "check-unit: the model did not run with every layer in force"; status=1
fi
[ -n "${KEEP_RESULTS:-}" ] && echo "results kept in $results" || rm -rf "$results"
exit "$status"
