#!/usr/bin/env bash
# ansible-test sanity on a physical copy of the collection (ansible-test refuses symlinks and
# wants .../ansible_collections/apex/ops). The lab, benchmarks and Molecule scenarios are test
# infrastructure excluded from the built collection (galaxy.yml build_ignore), so they are not
# copied: sanity judges what ships plus the collection's own unit/integration tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${APEX_SANITY_DIR:-/tmp/apex-sanity}
dest="$work/ansible_collections/apex/ops"
rm -rf "$work" && mkdir -p "$dest"
cd "$root"
git ls-files -co --exclude-standard -z \
  | grep -zvE '^(tests/lab/|bench/|extensions/molecule/|\.ci/|Makefile$|ansible\.cfg$)' \
  | xargs -0 cp --parents -t "$dest"
cd "$dest"
git init -q . && git add -A
ansible-test sanity --venv --python "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  --color no "$@"
