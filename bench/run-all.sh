#!/usr/bin/env bash
# Every benchmark, each against its baseline in the same run (ratios). Needs the lab (make lab-up).
# Not part of `make test`: benchmarks are measurements, not timed tests.
#   BENCH_BACKUP_MB=1024 bash bench/run-all.sh     (default 256 MB to keep a run short)
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; . .lab/env; set +a
out=${BENCH_OUT:-/tmp/apex-bench}
mkdir -p "$out"
echo "== Kubernetes simulator (watch latency, list 1,000 pods, 3-replica rollout)"
python3 bench/kubesim_bench.py
echo "== apex_scale vs kubernetes.core.k8s_scale vs kubectl scale + rollout status"
python3 bench/scale_bench.py --rounds 3 --json "$out/scale.json"
echo "== apex_info vs k8s_info per kind"
python3 bench/scale_bench.py --info --rounds 3 --json "$out/info.json"
echo "== apex_backup vs bare pg_dump, runbook, community.postgresql + amazon.aws"
python3 bench/backup_bench.py --db apex_bench --size-mb "${BENCH_BACKUP_MB:-256}" --rounds 3 --json "$out/backup.json"
echo "== apex_cert facts vs kubernetes.core + community.crypto (four tasks)"
python3 bench/cert_bench.py --rounds 5 --json "$out/cert.json"
echo "== restore playbook vs the runbook's restore steps (as written and without sleep 30)"
restore_rc=0
python3 bench/restore_bench.py --json "$out/restore.json" || restore_rc=$?
echo "== emergency_rollback playbook vs the runbook's emergency-rollback.sh (as written and without sleep 10)"
rollback_rc=0
python3 bench/emergency_rollback_bench.py --rounds 3 --json "$out/emergency_rollback.json" || rollback_rc=$?
echo "== health check: apex_health (concurrent) vs the sequential role of 58f76ef"
python3 bench/health_check_bench.py --rounds 5 --json "$out/health_check.json"
echo "== deploy playbook vs the Helm SDK's bare upgrade call"
python3 bench/deploy_bench.py --rounds 3 --json "$out/deploy.json"
echo "== region failover: RTO in a private lab, the pod-readiness share separately (target <= 20 s beyond it)"
failover_rc=0
python3 bench/failover_bench.py --runs 3 --json "$out/failover.json" || failover_rc=$?
echo "results in $out"
[ "$restore_rc" -eq 0 ] || exit "$restore_rc"
[ "$rollback_rc" -eq 0 ] || exit "$rollback_rc"
exit "$failover_rc"
