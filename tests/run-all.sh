#!/usr/bin/env bash
# The whole suite, as `make test` and CI run it, against a running lab (make lab-up).
# Every stage runs; the script exits non-zero if any stage failed, naming which.
#
# Two lanes share the machine's two cores (they keep both busy: the CPU, not waits, sets the time):
# - the integration tests, split over APEX_TEST_WORKERS pytest-xdist workers (default 2; whole
#   files per worker, `--dist loadfile`, the longest files first), each worker on a lab of its own:
#   the main lab (`make lab-up`) and one more lab per extra worker under .lab/lanes/; then the short
#   static stages (unit tests, changelog, build);
# - beside them, ansible-test sanity and ansible-lint (CPU work needing no lab), then Molecule on a
#   lab of its own (.lab/lanes/molecule, made afresh: no scenario needs a cleanup first), as its scenarios
#   change the same Deployments the integration tests do;
# - the lab self-test (a throw-away lab of its own) runs beside both from the start: nothing waits on it.
# A lane's output is printed once the lane ends. The extra labs are stopped on exit.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
# The interpreter's own bin directory first: a version manager's shim (pyenv's costs ~70 ms of CPU)
# would otherwise run before each of the suite's hundreds of ansible-playbook and molecule starts.
PATH="$(dirname "$(python3 -c 'import sys; print(sys.executable)')"):$PATH"
export PATH
failed=()
stage() { local name=$1; shift; echo; echo "===== $name: $*"; local t0=$SECONDS
  if "$@"; then echo "===== $name: ok ($((SECONDS - t0)) s)"; else echo "===== $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi; }

static_dir=$(mktemp -d)
workers=${APEX_TEST_WORKERS:-2}
extra_labs=("$root/.lab/lanes/molecule")
for ((i = 1; i < workers; i++)); do extra_labs+=("$root/.lab/lanes/gw$i"); done
cleanup() {
  for dir in "${extra_labs[@]}"; do APEX_LAB_DIR=$dir python3 tests/lab/lab.py down > /dev/null 2>&1 || true; done
  rm -rf "$static_dir"
}
trap cleanup EXIT
# A lab that fails to come up is given a second `up`, which repairs what the first could not (it
# restarts the service that failed, moving it off a port another process took); what the first
# said is repeated at the end, as CI shows the tail.
lab_up() {
  local dir=$1
  APEX_LAB_DIR=$dir python3 tests/lab/lab.py up 2>&1 | tee "$static_dir/lab-up.${dir##*/}" && return 0
  grep -h "ERROR" "$static_dir/lab-up.${dir##*/}" | sed "s|^|lab in $dir, first up: |" >> "$static_dir/lab-warnings"
  echo "===== the lab in $dir did not come up; a second up:"
  APEX_LAB_DIR=$dir python3 tests/lab/lab.py up
}

side_lane() {
  failed=()  # this lane's own: the parent's list is reported by the parent
  stage sanity bash tests/sanity.sh
  stage ansible-lint ansible-lint --profile production -q
  # A lab made afresh (a leftover one destroyed first): the scenarios need no cleanup before they start.
  local fresh=0
  APEX_LAB_DIR=$root/.lab/lanes/molecule python3 tests/lab/lab.py destroy > /dev/null 2>&1 && fresh=1
  stage molecule-lab lab_up "$root/.lab/lanes/molecule"
  APEX_LAB_DIR=$root/.lab/lanes/molecule APEX_MOLECULE_FRESH_LAB=$fresh stage molecule bash tests/molecule.sh
  printf '%s\n' "${failed[@]}" > "$static_dir/failed"
}

stage lab-selftest bash tests/lab/selftest.sh > "$static_dir/selftest" 2>&1 &
selftest_pid=$!
lab_dirs=$root/.lab
for ((i = 1; i < workers; i++)); do
  stage "lab-gw$i" lab_up "$root/.lab/lanes/gw$i"
  lab_dirs+=":$root/.lab/lanes/gw$i"
done
t_side=$SECONDS
side_lane > "$static_dir/log" 2>&1 &
side_pid=$!
xdist=()
[ "$workers" -gt 1 ] && xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder)
integration() {
  # Tee'd so that the failed tests' ids can be repeated last: CI shows the tail of the output.
  python3 -m pytest -q -p no:cacheprovider "${xdist[@]}" --durations=20 tests/integration 2>&1 | tee "$static_dir/integration"
}
APEX_LAB_DIRS=$lab_dirs stage integration integration
# The short static stages after the integration tests, not before Molecule: that lane is the longer.
stage unit python3 -m pytest -q -p no:cacheprovider tests/unit
stage changelog antsibull-changelog lint
stage galaxy-build bash tests/build-check.sh
side_rc=0
wait "$side_pid" || side_rc=$?
wait "$selftest_pid"
echo; echo "===== lab self-test (ran beside the integration tests):"
cat "$static_dir/selftest"
grep -q '^===== lab-selftest: ok' "$static_dir/selftest" || failed+=("lab-selftest")
echo; echo "===== static stages and Molecule (ran beside the integration tests, $((SECONDS - t_side)) s in all):"
cat "$static_dir/log"
if [ "$side_rc" -ne 0 ] || [ ! -f "$static_dir/failed" ]; then
  failed+=("side-lane(rc=$side_rc)")  # the lane itself died: never a silent pass
else
  while read -r name; do [ -n "$name" ] && failed+=("$name"); done < "$static_dir/failed"
fi

echo
[ -s "$static_dir/lab-warnings" ] && cat "$static_dir/lab-warnings"
if [ ${#failed[@]} -gt 0 ]; then
  grep -E '^(FAILED|ERROR) ' "$static_dir/integration" 2> /dev/null | sed 's/^/integration: /'
  grep -hE '^(molecule: FAILED|===== .*: FAILED)' "$static_dir/selftest" "$static_dir/log" 2> /dev/null
  echo "FAILED stages: ${failed[*]}"; exit 1
fi
echo "all stages passed in $SECONDS s"
