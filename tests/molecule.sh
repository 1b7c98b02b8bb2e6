#!/usr/bin/env bash
# Run every Molecule scenario under extensions/molecule against the running lab.
#
# All scenarios run in one `molecule test` (Molecule's start-up costs about 1.7 s of CPU, paid once
# instead of once per scenario). Molecule stops at the first failed scenario, so after a failure
# the scenarios it did not reach run in a new invocation: every scenario runs, every failure is named.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/extensions"
# The lab: $APEX_LAB_DIR when set (tests/run-all.sh gives Molecule a lab of its own), else .lab.
lab_dir=${APEX_LAB_DIR:-$root/.lab}
set -a; . "$lab_dir/env"; set +a
export ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$lab_dir/collections"
# Molecule 26 runs `ansible-playbook --version` before every action only to check that it exists:
# ~0.5 s of CPU each, 150-odd times a suite. The check is made once here, for real; a shim first
# on PATH answers --version with that output and hands every other call to the real program.
real_playbook=$(command -v ansible-playbook) || { echo "ansible-playbook is not on PATH" >&2; exit 1; }
shim_dir=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$log" "$shim_dir"' EXIT
"$real_playbook" --version > "$shim_dir/version"
# shellcheck disable=SC2016  # $# and $1 belong to the shim
printf '#!/bin/sh\nif [ "$#" -eq 1 ] && [ "$1" = --version ]; then exec cat %q; fi\nexec %q "$@"\n' \
  "$shim_dir/version" "$real_playbook" > "$shim_dir/ansible-playbook"
chmod +x "$shim_dir/ansible-playbook"
PATH="$shim_dir:$PATH"
# APEX_MOLECULE_SCENARIOS="backup restore" runs only those (all of them by default).
remaining=()
if [ -n "${APEX_MOLECULE_SCENARIOS:-}" ]; then
  read -r -a remaining <<< "$APEX_MOLECULE_SCENARIOS"
else
  for scenario in molecule/*/; do
    [ -f "$scenario/molecule.yml" ] && remaining+=("$(basename "$scenario")")
  done
fi
# Every scenario that changes the lab ends with its cleanup, and Molecule runs that cleanup after a
# failure too. On a lab that a killed run may have left dirty, the scenarios' cleanups run first as well;
# a lab known to be fresh (APEX_MOLECULE_FRESH_LAB=1: tests/run-all.sh creates one for Molecule) needs none.
if [ "${APEX_MOLECULE_FRESH_LAB:-0}" != 1 ]; then
  args=()
  for name in "${remaining[@]}"; do [ -f "molecule/$name/cleanup.yml" ] && args+=(-s "$name"); done
  if [ ${#args[@]} -gt 0 ]; then
    echo "== molecule cleanup ${args[*]} (the lab may be reused)"
    molecule cleanup "${args[@]}" || { echo "molecule: FAILED: the scenarios' cleanup could not put the lab back" \
      "(a fresh lab: python3 tests/lab/lab.py destroy && make lab-up)"; exit 1; }
  fi
fi
failed=()
# Molecule 26 probes for a "default" scenario first and prints
# "CRITICAL 'molecule/default/molecule.yml' glob failed. Exiting." - harmless: it goes on with the
# named scenarios (there is no default one on purpose: each scenario is one playbook).
echo "(a 'CRITICAL ... molecule/default/molecule.yml glob failed' line below is Molecule's harmless probe)"
while [ ${#remaining[@]} -gt 0 ]; do
  args=()
  for name in "${remaining[@]}"; do args+=(-s "$name"); done
  echo "== molecule test ${args[*]}"
  if molecule test "${args[@]}" 2>&1 | tee "$log"; then
    break
  fi
  # The recap names the scenarios that ran, in order; the last of them is the one that failed.
  ran=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | sed -n '/^SCENARIO RECAP/,$p' | awk '$2 == ":" && $3 ~ /^actions=/ {print $1}')
  last=$(printf '%s\n' "$ran" | tail -n 1)
  if [ -z "$last" ]; then
    # No recap (Molecule itself broke): name every scenario of this batch, run nothing more.
    failed+=("${remaining[@]}")
    break
  fi
  failed+=("$last")
  next=()
  seen=0
  for name in "${remaining[@]}"; do
    [ $seen -eq 1 ] && next+=("$name")
    [ "$name" = "$last" ] && seen=1
  done
  remaining=("${next[@]}")
done
[ ${#failed[@]} -eq 0 ] || { echo "molecule: FAILED scenarios: ${failed[*]}"; exit 1; }
