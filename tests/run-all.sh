#!/usr/bin/env bash
# The whole suite, as `make test` and CI run it, against a running lab (make lab-up).
# Every stage runs; the script exits non-zero if any stage failed, naming which.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
failed=()
stage() { local name=$1; shift; echo; echo "===== $name: $*"; local t0=$SECONDS
  if "$@"; then echo "===== $name: ok ($((SECONDS - t0)) s)"; else echo "===== $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi; }

stage lab-selftest bash tests/lab/selftest.sh
stage pytest python3 -m pytest -q -p no:cacheprovider tests/unit tests/integration
stage sanity bash tests/sanity.sh
stage ansible-lint ansible-lint --profile production -q
stage molecule bash tests/molecule.sh
stage changelog antsibull-changelog lint
stage galaxy-build bash tests/build-check.sh

echo
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED stages: ${failed[*]}"; exit 1; fi
echo "all stages passed"
