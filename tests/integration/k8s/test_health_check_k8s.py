"""The Kubernetes half of the daily health check, in the same report as the other parts."""
import json
import time

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


def test_crashlooping_pod_drives_the_restarts_check(run_playbook, kube, scratch_deployment, tmp_path):
    """Thresholds (roles/health_check/defaults): restarts > 0 warning, > 10 critical."""
    scratch_deployment("apex-ops-test-hc-crash", "apex/worker:crashloop")
    deadline = time.monotonic() + 20
    restarts = 0
    while time.monotonic() < deadline and restarts < 1:
        pods = kube.core.list_namespaced_pod(NS, label_selector="app=apex-ops-test-hc-crash").items
        restarts = max([(p.status.container_statuses or [None])[0].restart_count
                        for p in pods if p.status.container_statuses] or [0])
        time.sleep(0.3)
    assert restarts >= 1, "the crashloop pod never restarted"
    proc = run_playbook("playbooks/health_check.yml", dict(
        ONLY_K8S, health_check_report_dir=str(tmp_path), health_check_fail_on_critical=False))
    assert proc.returncode == 0, proc.stdout[-3000:]
    report, checks = k8s_checks(tmp_path)
    check = checks["pod restarts"]
    assert "apex-ops-test-hc-crash-" in check["detail"], check
    assert check["value"] >= restarts
    assert check["status"] == ("critical" if check["value"] > 10 else "warning"), check
    assert report["status"] in ("warning", "critical")
    # crash looping pods are not running either
    assert "apex-ops-test-hc-crash-" in checks["pods not running"]["detail"]


def test_cordoned_node_is_reported(run_playbook, kube, tmp_path):
    node = sorted(n.metadata.name for n in kube.core.list_node().items)[-1]
    assert not kube.core.read_node(node).spec.unschedulable, "%s is already cordoned" % node
    try:
        kube.core.patch_node(node, {"spec": {"unschedulable": True}})
        proc = run_playbook("playbooks/health_check.yml", dict(
            ONLY_K8S, health_check_report_dir=str(tmp_path), health_check_fail_on_critical=False))
    finally:
        kube.core.patch_node(node, {"spec": {"unschedulable": None}})
    assert proc.returncode == 0, proc.stdout[-3000:]
    report, checks = k8s_checks(tmp_path)
    assert checks["nodes cordoned"]["status"] == "warning" and checks["nodes cordoned"]["value"] == 1
    assert checks["nodes cordoned"]["detail"] == node
    assert checks["nodes not ready"]["status"] == "ok"  # cordoned is not "not ready"
    assert report["status"] in ("warning", "critical")  # others' scratch pods in the shared lab may add more
    assert not kube.core.read_node(node).spec.unschedulable
