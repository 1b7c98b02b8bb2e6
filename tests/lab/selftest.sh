#!/usr/bin/env bash
# Self-test of the lab's lifecycle in a THROW-AWAY lab directory (never the shared .lab):
# up from nothing, idempotent up, concurrent up, down leaves no process, data survives down/up,
# recovery after kill -9 of every service, a persisted port taken by a foreign process.
#
#   bash tests/lab/selftest.sh            (SELFTEST_SKIP=twin,kubesim to leave those out)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
LAB_DIR="$(mktemp -d /tmp/apex-lab-selftest.XXXXXX)"
export APEX_LAB_DIR="$LAB_DIR"
export APEX_LAB_SKIP="${SELFTEST_SKIP:-}"
LAB=("$PY" "$ROOT/tests/lab/lab.py")
FAILS=0
BLOCKER_PID=""

cleanup() {
    [ -n "$BLOCKER_PID" ] && kill "$BLOCKER_PID" 2>/dev/null || true
    "${LAB[@]}" destroy >/dev/null 2>&1 || true
    rm -rf "$LAB_DIR"
}
trap cleanup EXIT

ok()   { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
now()  { date +%s.%N; }
secs() { "$PY" -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

# Processes that belong to this lab: cwd under it, or it on their command line or in their env.
lab_processes() {
    "$PY" - "$LAB_DIR" <<'EOF'
import os, sys
lab = sys.argv[1]
me = {os.getpid(), os.getppid()}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) in me:
        continue
    try:
        cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode(errors="replace")
        if not cmd:
            continue
        cwd = os.readlink("/proc/%s/cwd" % pid)
        env = open("/proc/%s/environ" % pid, "rb").read()
    except OSError:
        continue
    if cwd.startswith(lab) or lab in cmd or ("APEX_LAB_DIR=%s" % lab).encode() in env.split(b"\0"):
        print(pid, cmd)
EOF
}

svc_healthy() {  # status --json exits 1 while a service is down: read its report anyway
    local report
    report="$("${LAB[@]}" status --json 2>/dev/null || true)"
    "$PY" -c "import json,sys; d=json.loads(sys.argv[2])
sys.exit(0 if any(s['service'] == sys.argv[1] and s['healthy'] for s in d['services']) else 1)" "$1" "$report"
}
negate() { ! "$@"; }
port() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$LAB_DIR/ports.json" "$1"; }
psql_primary() { (. "$LAB_DIR/env" && psql -XAtq -c "$1"); }
psql_standby() { (. "$LAB_DIR/env" && psql "$APEX_PG_STANDBY_DSN" -XAtq -c "$1"); }

echo "# lab self-test in $LAB_DIR"

t0=$(now); "${LAB[@]}" up; t1=$(now)
echo "# up from nothing: $(secs "$t0" "$t1") s"
check "status after first up exits 0" "${LAB[@]}" status
check ".lab/env is mode 600" test "$(stat -c %a "$LAB_DIR/env")" = 600
check "secrets.json is mode 600" test "$(stat -c %a "$LAB_DIR/secrets.json")" = 600

t0=$(now); out=$("${LAB[@]}" up 2>&1); t1=$(now)
echo "# idempotent up: $(secs "$t0" "$t1") s"
check "second up is a no-op" grep -q "nothing to do" <<<"$out"

"${LAB[@]}" up >/tmp/selftest-up-a.$$ 2>&1 & a=$!
"${LAB[@]}" up >/tmp/selftest-up-b.$$ 2>&1 & b=$!
rc_a=0; rc_b=0; wait $a || rc_a=$?; wait $b || rc_b=$?
check "two concurrent ups both succeed" test "$rc_a$rc_b" = "00"
rm -f /tmp/selftest-up-a.$$ /tmp/selftest-up-b.$$

# replication and data that must survive down/up
psql_primary "CREATE TABLE IF NOT EXISTS selftest (v text); INSERT INTO selftest VALUES ('before-down')"
for _ in $(seq 50); do [ "$(psql_standby "SELECT count(*) FROM selftest" 2>/dev/null || true)" = 1 ] && break; sleep 0.1; done
check "standby replicated a row" test "$(psql_standby "SELECT count(*) FROM selftest")" = 1

t0=$(now); "${LAB[@]}" down; t1=$(now)
echo "# down: $(secs "$t0" "$t1") s"
left="$(lab_processes)"
check "down leaves no process behind" test -z "$left"
[ -n "$left" ] && echo "$left"
if "${LAB[@]}" status >/dev/null 2>&1; then fail "status exits non-zero when the lab is down"; else ok "status exits non-zero when the lab is down"; fi
for name in pg_primary pg_standby redis moto prometheus alertmanager exporter; do
    p=$(port "$name")
    check "port $p ($name) is free after down" "$PY" -c "
import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$p"
done

t0=$(now); "${LAB[@]}" up; t1=$(now)
echo "# up after down (existing data): $(secs "$t0" "$t1") s"
check "status after down/up exits 0" "${LAB[@]}" status
check "data survived down/up" test "$(psql_primary "SELECT count(*) FROM selftest")" = 1

# crash: kill -9 every service, stale pidfiles stay behind
pids="$(head -1 "$LAB_DIR/pg/primary/postmaster.pid") $(head -1 "$LAB_DIR/pg/standby/postmaster.pid") $(cat "$LAB_DIR/redis/redis.pid") $(cat "$LAB_DIR/moto/moto.pid")"
for f in twin/serve.pid twin/worker.pid kube/kubesim.pid prometheus/prometheus.pid alertmanager/alertmanager.pid exporter/exporter.pid; do [ -f "$LAB_DIR/$f" ] && pids="$pids $(cat "$LAB_DIR/$f")"; done
kill -9 $pids
t0=$(now); "${LAB[@]}" up; t1=$(now)
echo "# up after kill -9 of everything: $(secs "$t0" "$t1") s"
check "status after crash recovery exits 0" "${LAB[@]}" status
check "prometheus answers after crash recovery" svc_healthy prometheus
check "alertmanager answers after crash recovery" svc_healthy alertmanager
check "exporter answers after crash recovery" svc_healthy exporter
check "standby streams again after the crash" test "$(psql_primary "SELECT state FROM pg_stat_replication")" = streaming

# a foreign process takes the persisted ports of PostgreSQL and Redis while the lab is down
"${LAB[@]}" down >/dev/null 2>&1
old_pg=$(port pg_primary); old_redis=$(port redis)
"$PY" -c "
import socket, sys, time
socks = []
for p in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', int(p))); s.listen(); socks.append(s)
time.sleep(120)" "$old_pg" "$old_redis" & BLOCKER_PID=$!
sleep 0.3
"${LAB[@]}" up
check "status with moved ports exits 0" "${LAB[@]}" status
check "pg_primary moved off the taken port" test "$(port pg_primary)" != "$old_pg"
check "redis moved off the taken port" test "$(port redis)" != "$old_redis"
for _ in $(seq 50); do [ "$(psql_primary "SELECT state FROM pg_stat_replication" 2>/dev/null)" = streaming ] && break; sleep 0.1; done
check "standby follows the primary to its new port" test "$(psql_primary "SELECT state FROM pg_stat_replication")" = streaming
kill "$BLOCKER_PID"; wait "$BLOCKER_PID" 2>/dev/null || true; BLOCKER_PID=""

# a standby that cannot start: `up` exits 1 but brings up everything else; rebuild-standby heals
"${LAB[@]}" down >/dev/null 2>&1
echo "bogus_setting_xyz = 1" >> "$LAB_DIR/pg/standby/postgresql.auto.conf"
if "${LAB[@]}" up >/dev/null 2>&1; then fail "up exits 1 when the standby cannot start"; else ok "up exits 1 when the standby cannot start"; fi
check "the primary came up anyway" svc_healthy pg-primary
check "redis came up anyway" svc_healthy redis
check "the standby is reported down" negate svc_healthy pg-standby
"${LAB[@]}" rebuild-standby
check "status is ok again after rebuild-standby" "${LAB[@]}" status

# failover drill: promote the standby, let it write (it archives into its own directory), then
# rebuild it from the primary: it must stream again on the primary's timeline.
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$LAB_DIR/pg/standby" -w promote >/dev/null
psql_standby "CREATE TABLE promoted_only (x int); SELECT pg_switch_wal()" >/dev/null
check "status reports the promoted standby" bash -c '"$@" status | grep -q PROMOTED' _ "${LAB[@]}"
for _ in $(seq 50); do ls "$LAB_DIR/pg/wal_archive_standby" | grep -q history && break; sleep 0.1; done
check "the promoted standby archives into its own directory" bash -c 'ls "$1" | grep -q "^00000002.history$"' _ "$LAB_DIR/pg/wal_archive_standby"
check "no timeline-2 history in the primary's archive" bash -c '! ls "$1" | grep -q "^00000002.history$"' _ "$LAB_DIR/pg/wal_archive"
"${LAB[@]}" rebuild-standby
check "rebuilt standby streams from the primary" test "$(psql_primary "SELECT state FROM pg_stat_replication")" = streaming
check "rebuilt standby is in recovery" test "$(psql_standby "SELECT pg_is_in_recovery()")" = t
psql_primary "INSERT INTO selftest VALUES ('after-rebuild')"
for _ in $(seq 50); do [ "$(psql_standby "SELECT count(*) FROM selftest" 2>/dev/null || true)" = 2 ] && break; sleep 0.1; done
check "rebuilt standby replicates new rows" test "$(psql_standby "SELECT count(*) FROM selftest")" = 2

"${LAB[@]}" destroy
left="$(lab_processes)"
check "destroy leaves no process behind" test -z "$left"
check "destroy removed the lab directory" test ! -e "$LAB_DIR"

if [ "$FAILS" -gt 0 ]; then echo "# $FAILS check(s) failed"; exit 1; fi
echo "# all lab self-test checks passed"
