#!/usr/bin/env bash
# The whole suite, as `make test` and CI run it, against a running lab (make lab-up).
# Every stage runs; the script exits non-zero if any stage failed, naming which.
#
# The static stages (unit tests, ansible-test sanity, ansible-lint, changelog, build) need no lab and
# are CPU work; the integration tests mostly wait on the lab (rollouts, restores, playbook runs one
# at a time). So the static stages run beside the integration tests, on the other core, and their
# output is printed once they end. Molecule runs last: its scenarios change the same shared
# Deployments as the integration tests, so the two never overlap.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
failed=()
stage() { local name=$1; shift; echo; echo "===== $name: $*"; local t0=$SECONDS
  if "$@"; then echo "===== $name: ok ($((SECONDS - t0)) s)"; else echo "===== $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi; }

static_dir=$(mktemp -d)
trap 'rm -rf "$static_dir"' EXIT
static_stages() {
  stage unit python3 -m pytest -q -p no:cacheprovider tests/unit
  stage sanity bash tests/sanity.sh
  stage ansible-lint ansible-lint --profile production -q
  stage changelog antsibull-changelog lint
  stage galaxy-build bash tests/build-check.sh
  printf '%s\n' "${failed[@]}" > "$static_dir/failed"
}

stage lab-selftest bash tests/lab/selftest.sh
t_static=$SECONDS
static_stages > "$static_dir/log" 2>&1 &
static_pid=$!
stage integration python3 -m pytest -q -p no:cacheprovider tests/integration
static_rc=0
wait "$static_pid" || static_rc=$?
echo; echo "===== static stages (ran beside the integration tests, $((SECONDS - t_static)) s in all):"
cat "$static_dir/log"
if [ "$static_rc" -ne 0 ] || [ ! -f "$static_dir/failed" ]; then
  failed+=("static-stages(rc=$static_rc)")  # the group itself died: never a silent pass
else
  while read -r name; do [ -n "$name" ] && failed+=("$name"); done < "$static_dir/failed"
fi
stage molecule bash tests/molecule.sh

echo
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED stages: ${failed[*]}"; exit 1; fi
echo "all stages passed"
