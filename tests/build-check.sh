#!/usr/bin/env bash
# `ansible-galaxy collection build` must give a clean tarball: no lab state, venvs or test output.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ansible-galaxy collection build --force --output-path "$out" "$root" >/dev/null
tarball=$(ls "$out"/apex-ops-*.tar.gz)
bad=$(tar -tzf "$tarball" | grep -E '(^|/)(\.lab|\.venv|tests/output|tests/lab|bench|\.benchmarks|__pycache__|\.git)(/|$)|\.tar\.gz$' || true)
if [ -n "$bad" ]; then echo "tarball contains files it must not:"; echo "$bad"; exit 1; fi
echo "clean tarball: $(basename "$tarball") ($(tar -tzf "$tarball" | wc -l) entries)"
