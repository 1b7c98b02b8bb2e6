"""The emergency_rollback playbook against the lab: after a bad change, the Deployments' pod templates are
back and the Apex twin serves the previous version and behaviour; both components are undone in one call;
a revision can be named; an interrupted procedure's journal record does not block it."""
import json
import ssl
import subprocess
import urllib.request

WORKER_CONCURRENCY = "APEX__WORKER__CONCURRENCY"
PLAYBOOK = "playbooks/emergency_rollback.yml"


def concurrency(health):
    """The worker concurrency /health reports (None on an error answer: the errors image fails half of them)."""
    return (health.get("worker") or {}).get("concurrency")


def reset_breaker(lab):
    """Tasks in a worker's hands during the bad change may have opened the circuit breaker; a breaker stays
    open until reset (as in Apex), which the rollback is not about: close it before judging /health."""
    req = urllib.request.Request(lab["APEX_API_URL"] + "/admin/circuit-breaker/reset", method="POST", data=b"{}",
                                 headers={"Authorization": "Bearer " + lab["APEX_ADMIN_TOKEN"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cafile=lab["APEX_CA_FILE"])):  # noqa: S310
        pass


def bad_change(rollout, twin):
    """What the rollback undoes: an API image that answers errors half the time, a worker setting."""
    result = rollout(dict(targets=[dict(name="apex-api", image="apex/api:1.1.0-errors"),
                                   dict(name="apex-worker", env={WORKER_CONCURRENCY: 7})], wait_timeout=60))
    assert not result.failed, result.get("msg")
    twin.wait_for("the bad change", lambda h: h.get("version") == "1.1.0-errors" and concurrency(h) == 7)


def test_rollback_all_puts_both_back_and_the_twin_serves_the_previous_version(
        rollout, run_playbook, cluster, twin, report_dir, lab_process_env, read_report, lab):
    bad_change(rollout, twin)
    revisions = dict((name, cluster.revision(name)) for name in ("apex-api", "apex-worker"))
    # a procedure left interrupted must not block an emergency (journal: warn)
    record = {"run_id": "restore-20261202T000000000000Z", "procedure": "restore", "phase": "restore",
              "started": "2026-12-02T00:00:00+00:00", "holder": {"user": "oncall", "host": "elsewhere", "pid": 1},
              "undo": []}
    journal = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "apex-ops-journal", "namespace": "apex"},
               "data": {"record": json.dumps(record)}}
    kubectl = ["kubectl", "--context", "apex-primary", "-n", "apex"]
    subprocess.run(kubectl + ["apply", "-f", "-"], input=json.dumps(journal), text=True, env=lab_process_env,
                   capture_output=True, check=True, timeout=60)
    try:
        proc = run_playbook(PLAYBOOK, {"emergency_rollback_component": "all", "apex_report_dir": str(report_dir)})
    finally:
        subprocess.run(kubectl + ["delete", "configmap", "apex-ops-journal"], env=lab_process_env, capture_output=True,
                       check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert record["run_id"] in proc.stdout + proc.stderr  # named, not refused
    assert cluster.image("apex-api") == "apex/api:1.0.0"
    assert cluster.env("apex-worker")[WORKER_CONCURRENCY] == "2"
    reset_breaker(lab)
    health = twin.health()
    assert health["version"] == "1.0.0" and concurrency(health) == 2 and health["status"] == "healthy"
    report = read_report(report_dir, "emergency_rollback")
    assert report["status"] == "ok" and report["health"]["version"] == "1.0.0"
    by_key = dict((t["key"], t) for t in report["targets"])
    assert by_key["Deployment/apex/apex-api"]["undo_to"] == revisions["apex-api"] - 1
    assert by_key["Deployment/apex/apex-worker"]["env_changes"] == [
        dict(container="worker", name=WORKER_CONCURRENCY, before="7", after="2")]
    assert all(t["outcome"] == "complete" for t in report["targets"])


def test_rollback_api_only_leaves_the_worker_alone(rollout, run_playbook, cluster, twin, report_dir, read_report):
    bad_change(rollout, twin)
    worker_revision = cluster.revision("apex-worker")
    proc = run_playbook(PLAYBOOK, {"emergency_rollback_component": "api", "apex_report_dir": str(report_dir)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert cluster.image("apex-api") == "apex/api:1.0.0"
    assert cluster.revision("apex-worker") == worker_revision and cluster.env("apex-worker")[WORKER_CONCURRENCY] == "7"
    health = twin.wait_for("version 1.0.0", lambda h: h.get("version") == "1.0.0")
    assert concurrency(health) == 7
    assert [t["key"] for t in read_report(report_dir, "emergency_rollback")["targets"]] == ["Deployment/apex/apex-api"]


def test_rollback_worker_only_leaves_the_api_alone(rollout, run_playbook, cluster, twin, report_dir, read_report):
    bad_change(rollout, twin)
    proc = run_playbook(PLAYBOOK, {"emergency_rollback_component": "worker", "apex_report_dir": str(report_dir)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert cluster.env("apex-worker")[WORKER_CONCURRENCY] == "2"
    assert cluster.image("apex-api") == "apex/api:1.1.0-errors"
    twin.wait_for("worker concurrency 2 with the api still on the bad image",
                  lambda h: concurrency(h) == 2 and h.get("version") == "1.1.0-errors")


def test_rollback_to_a_named_revision_skips_the_intermediate_ones(rollout, run_playbook, cluster, twin, report_dir, read_report):
    good = cluster.revision("apex-api")
    for image in ("apex/api:1.0.1", "apex/api:1.0.2-slow"):
        result = rollout(dict(names=["apex-api"], image=image, wait_timeout=60))
        assert not result.failed, result.get("msg")
    twin.wait_for("the slow image", lambda h: h.get("version") == "1.0.2-slow")
    proc = run_playbook(PLAYBOOK, {"emergency_rollback_component": "api", "emergency_rollback_revision": good,
                                   "apex_report_dir": str(report_dir)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert cluster.image("apex-api") == "apex/api:1.0.0"
    twin.wait_for("version 1.0.0", lambda h: h.get("version") == "1.0.0")
    # the same revision again finds it under its new number: nothing to do
    again = run_playbook(PLAYBOOK, {"emergency_rollback_component": "api", "emergency_rollback_revision": good,
                                    "apex_report_dir": str(report_dir)})
    assert again.returncode == 0, again.stdout[-4000:]
    assert read_report(report_dir, "emergency_rollback")["changed"] is False


def test_a_revision_that_does_not_exist_changes_nothing_and_reports(run_playbook, cluster, report_dir, read_report):
    revision = cluster.revision("apex-api")
    proc = run_playbook(PLAYBOOK, {"emergency_rollback_component": "all", "emergency_rollback_revision": 999,
                                   "apex_report_dir": str(report_dir)})
    assert proc.returncode != 0
    report = read_report(report_dir, "emergency_rollback")
    assert report["status"] == "failed" and "revision 999 is not in its history" in report["error"]
    assert cluster.revision("apex-api") == revision
