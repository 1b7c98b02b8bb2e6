"""The Kubernetes half of the daily health check, in the same report as the other parts."""
import json

from k8s_lab import NS

ONLY_K8S = {"health_check_api": False, "health_check_queue": False, "health_check_database": False,
            "health_check_tls": False}


def k8s_checks(report_dir):
    report = json.loads(sorted(report_dir.glob("health_check-*.json"))[-1].read_text())
    return report, dict((c["name"], c) for c in report["checks"] if c.get("group") == "kubernetes")


def test_healthy_cluster(run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", dict(ONLY_K8S, health_check_report_dir=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:]
    report, checks = k8s_checks(tmp_path)
    assert {"pods not running", "job pods failed", "pod restarts", "hpa apex-api", "hpa apex-worker", "nodes not ready",
            "nodes cordoned", "workloads not settled"} <= set(checks)
    assert checks["pods not running"]["status"] == "ok" and checks["nodes not ready"]["status"] == "ok"
    assert checks["hpa apex-api"]["value"] == 30.0 and checks["hpa apex-api"]["status"] == "ok"


def test_not_ready_pods_warn_and_hpa_at_max_is_critical(run_playbook, kube, scratch_deployment, tmp_path):
    scratch_deployment("apex-ops-test-hc-never", "apex/api:never-ready")
    kube.apps.patch_namespaced_deployment_scale("apex-api", NS, {"spec": {"replicas": 10}})
    kube.settle("apex-api", 10)
    proc = run_playbook("playbooks/health_check.yml", dict(ONLY_K8S, health_check_report_dir=str(tmp_path)))
    assert proc.returncode != 0 and "CRITICAL" in proc.stdout  # fails on critical by default
    report, checks = k8s_checks(tmp_path)
    assert report["status"] == "critical"
    assert checks["hpa apex-api"]["status"] == "critical" and "AT MAX" in checks["hpa apex-api"]["detail"]
    assert checks["pods not running"]["status"] == "warning"
    assert "apex-ops-test-hc-never" in checks["pods not running"]["detail"]
    assert checks["workloads not settled"]["status"] == "warning"


def test_unreachable_cluster_is_critical_and_still_reported(run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", dict(
        ONLY_K8S, health_check_report_dir=str(tmp_path), health_check_fail_on_critical=False,
        health_check_kube_context="apex-nowhere"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    report, checks = k8s_checks(tmp_path)
    assert checks["kubernetes api"]["status"] == "critical" and "apex-nowhere" in checks["kubernetes api"]["detail"]
