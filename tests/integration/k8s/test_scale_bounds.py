"""apex_scale and the scale playbook against the lab simulator (issue 15): an absurd replica count is
refused before any change, and a run reports what the cluster ended at when another writer won."""
import json
import threading
import time
import uuid

from k8s_lab import NS, SEEDED

CTX = dict(context="apex-primary", namespace=NS)


def failed(proc):
    assert proc.returncode != 0, proc.stdout[-4000:]
    return proc


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def test_scale_playbook_refuses_100000_replicas_with_hpa_adjust(run_playbook, kube, tmp_path):
    """The issue's run: -e scale_replicas=100000 -e scale_hpa_adjust=true was planned as 'HPA max 10 -> 100000'."""
    for check, sub in ((True, "check"), (False, "real")):
        proc = failed(run_playbook("playbooks/scale.yml", {
            "scale_component": "both", "scale_replicas": 100000, "scale_hpa_adjust": True,
            "scale_report_dir": str(tmp_path / sub)}, check=check))
        assert "refusing 100000 replicas (now 3) and HPA maxReplicas 100000 (now 10)" in proc.stdout, proc.stdout[-3000:]
        # the lab: 3 ready nodes x 110 allocatable pods
        assert "above the replica ceiling of 330 (the largest of 2 x HPA maxReplicas 10 = 20, pod capacity 330 of 3 " \
               "ready schedulable node(s)" in proc.stdout
        assert "scale_confirm_above_ceiling=scale-above-ceiling" in proc.stdout
        assert kube.state(with_cpu=True) == dict((n, v + (70,)) for n, v in SEEDED.items())
        report = json.loads(next((tmp_path / sub).glob("scale-*.json")).read_text())
        assert report["status"] == "failed" and "replica ceiling" in report["error"]


def test_scale_playbook_above_an_explicit_ceiling_needs_the_confirmation(run_playbook, kube, tmp_path):
    base = {"scale_component": "api", "scale_replicas": 8, "scale_max_replicas_ceiling": 6}
    proc = failed(run_playbook("playbooks/scale.yml", dict(base, scale_report_dir=str(tmp_path / "a"))))
    assert "above the replica ceiling of 6 (max_replicas_ceiling 6, set explicitly)" in proc.stdout
    assert kube.state() == SEEDED
    ok(run_playbook("playbooks/scale.yml", dict(base, scale_confirm_above_ceiling="scale-above-ceiling",
                                                scale_report_dir=str(tmp_path / "b"))))
    d = kube.deployment("apex-api")
    assert d.spec.replicas == 8 and d.status.ready_replicas == 8
    report = json.loads(next((tmp_path / "b").glob("scale-*.json")).read_text())
    assert report["status"] == "ok" and report["targets"]["Deployment/apex-api"]["replicas"] == 8
    assert any("confirmed by allow_above_ceiling" in n for n in report["notes"])


def test_module_refuses_above_the_ceiling_and_the_hpa_max_too(run_module, kube):
    res = run_module("apex_scale", names=["apex-worker"], hpa_max_replicas=5000, **CTX)
    assert res.failed and "refusing HPA maxReplicas 5000 (now 50): above the replica ceiling of 330" in res["msg"], res["msg"]
    res = run_module("apex_scale", check_mode=True, names=["apex-worker"], replicas_delta="+100000", hpa_adjust=True, **CTX)
    assert res.failed and "refusing 100005 replicas (now 5)" in res["msg"]
    assert kube.state() == SEEDED
    # within the ceiling (2 x HPA max 10 < 30 < 330 pods): no confirmation needed
    res = run_module("apex_scale", names=["apex-api"], hpa_max_replicas=30, wait=False, **CTX)
    assert not res.failed, res["msg"]
    assert kube.hpa_bounds("apex-api")[:2] == (3, 30)


class OtherWriter(threading.Thread):
    """The concurrent run: as soon as our write (``ours``) is in the Deployment, write ``theirs``."""

    def __init__(self, kube, name, ours, theirs, timeout=120):
        super().__init__(daemon=True)
        self.kube, self.name, self.ours, self.theirs, self.timeout = kube, name, ours, theirs, timeout
        self.wrote_at = None
        self.error = None

    def run(self):
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                if self.kube.replicas(self.name) == self.ours:
                    self.kube.apps.patch_namespaced_deployment_scale(self.name, NS, {"spec": {"replicas": self.theirs}})
                    self.wrote_at = time.monotonic()
                    return
                time.sleep(0.02)
            self.error = "never saw %d replicas" % self.ours
        except Exception as exc:  # reported by the test
            self.error = repr(exc)


def slow_ready_deployment(kube, name, replicas=1, ready_after=5):
    """A test Deployment whose new pods become Ready only after ``ready_after`` seconds (readiness probe
    initialDelaySeconds): our wait cannot finish before the other writer, who acts within milliseconds."""
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name, "apex.ops/test": "true"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "progressDeadlineSeconds": 600,
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                     "name": "main", "image": "apex/api:1.0.0", "resources": {"requests": {"cpu": "100m"}},
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                        "initialDelaySeconds": ready_after, "periodSeconds": 1}}]}}}}
    kube.delete_deployment(name)
    kube.apps.create_namespaced_deployment(NS, body)
    kube.settle(name, replicas, timeout=60)


def test_scale_playbook_reports_the_cluster_when_another_writer_won(run_playbook, kube, tmp_path):
    name = "apex-ops-race-%s" % uuid.uuid4().hex[:6]
    slow_ready_deployment(kube, name)
    try:
        other = OtherWriter(kube, name, ours=3, theirs=2)
        other.start()
        proc = ok(run_playbook("playbooks/scale.yml", {
            "scale_component": "api", "scale_replicas": 3, "scale_deployments": {"api": name, "worker": "apex-worker"},
            "scale_report_dir": str(tmp_path), "scale_wait_timeout": 120}))
        other.join(5)
        assert other.error is None and other.wrote_at is not None, other.error
        d = kube.deployment(name)
        assert d.spec.replicas == 2 and d.status.ready_replicas == 2  # the other writer's value stands
        report = json.loads(next(tmp_path.glob("scale-*.json")).read_text())
        key = "Deployment/%s" % name
        assert report["status"] == "changed by another writer", report
        assert report["targets"][key]["replicas"] == 2 and report["targets"][key]["ready"] == 2
        assert report["requested"][key]["replicas"] == 3
        warning = "%s: this run set 3 replicas but the cluster ended at 2" % key
        assert any(w.startswith(warning) for w in report["warnings"]), report["warnings"]
        assert "[WARNING]" in proc.stdout + proc.stderr and "the cluster ended at 2" in proc.stdout + proc.stderr
    finally:
        kube.delete_deployment(name)
