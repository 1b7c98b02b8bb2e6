#!/usr/bin/env bash
# Run every Molecule scenario under extensions/molecule against the running lab.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/extensions"
set -a; . "$root/.lab/env"; set +a
export ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$root/.lab/collections"
status=0
for scenario in molecule/*/; do
  name=$(basename "$scenario")
  [ -f "$scenario/molecule.yml" ] || continue
  echo "== molecule test -s $name"
  molecule test -s "$name" || status=1
done
exit $status
