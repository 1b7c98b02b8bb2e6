"""The cluster lock against the lab's Kubernetes (kubesim serves coordination.k8s.io/v1 Leases): two runs at once
(the second refuses naming the first, and changes nothing), an expired lock taken over, the emergency rollback
overriding a live lock and reporting whom, a live lock broken only with the holder named, and the lock released
when a run ends. One namespace of its own, two small Deployments."""
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: %(ns)s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: lk-api, namespace: %(ns)s}
spec:
  replicas: 1
  selector: {matchLabels: {app: lk-api}}
  template:
    metadata: {labels: {app: lk-api}}
    spec: {containers: [{name: api, image: "apex/api:1.0.0"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: lk-worker, namespace: %(ns)s}
spec:
  replicas: 1
  selector: {matchLabels: {app: lk-worker}}
  template:
    metadata: {labels: {app: lk-worker}}
    spec: {containers: [{name: worker, image: "apex/worker:1.0.0"}]}
"""
HOLD = """
- hosts: localhost
  gather_facts: false
  tasks:
    - apex.ops.apex_lock: {state: acquired, purpose: "nightly maintenance (test)", playbook: maintenance,
                           namespace: "%(ns)s", context: apex-primary, duration: 60}
    - ansible.builtin.wait_for: {path: "%(go)s", timeout: 120}
"""


def kubectl(env, *args, check=True, **kwargs):
    return subprocess.run(["kubectl", "--context", "apex-primary"] + list(args), env=env, capture_output=True,
                          text=True, timeout=60, check=check, **kwargs)


@pytest.fixture(scope="module")
def lock_ns(lab_process_env):
    ns = "apex-lock-itest-%d" % os.getpid()
    kubectl(lab_process_env, "apply", "-f", "-", input=MANIFEST % {"ns": ns})
    yield ns
    kubectl(lab_process_env, "delete", "namespace", ns, "--wait=false", check=False)


def lease(env, ns):
    out = kubectl(env, "-n", ns, "get", "lease", "apex-ops-lock", "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else None


def holder(env, ns):
    return ((lease(env, ns) or {}).get("spec") or {}).get("holderIdentity")


def replicas(env, ns, name):
    return json.loads(kubectl(env, "-n", ns, "get", "deploy", name, "-o", "json").stdout)["spec"]["replicas"]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def put_lease(env, ns, who, renewed_ago, duration, host="awx-ee-9"):
    """A Lease as another run left it (another host: its process cannot be checked from here)."""
    stamp = (datetime.now(timezone.utc) - timedelta(seconds=renewed_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "apex-ops-lock", "namespace": ns,
                         "annotations": {"apex.ops/purpose": "db window (crashed)", "apex.ops/playbook": "maintenance",
                                         "apex.ops/since": "2026-12-01T04:00:00+00:00", "apex.ops/host": host,
                                         "apex.ops/pid": "1"}},
            "spec": {"holderIdentity": who, "leaseDurationSeconds": duration, "acquireTime": stamp, "renewTime": stamp}}
    kubectl(env, "delete", "lease", "-n", ns, "apex-ops-lock", "--ignore-not-found")
    kubectl(env, "apply", "-f", "-", input=json.dumps(body))


def scale_vars(ns, tmp_path, count):
    return {"scale_namespace": ns, "scale_kube_context": "apex-primary", "scale_component": "api",
            "scale_deployments": {"api": "lk-api", "worker": "lk-worker"}, "scale_replicas": count,
            "apex_report_dir": str(tmp_path)}


def flat(text):
    return " ".join(text.split())


def test_second_run_refuses_naming_the_first_then_the_lock_ends_with_the_run(run_playbook, lab_process_env, lock_ns,
                                                                             tmp_path):
    env, ns = lab_process_env, lock_ns
    go = tmp_path / "go"
    book = tmp_path / "hold.yml"
    book.write_text(HOLD % {"ns": ns, "go": go})
    first = subprocess.Popen(["ansible-playbook", str(book), "-e", "awx_job_id=4242"], env=env, cwd=str(ROOT),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until(lambda: (holder(env, ns) or "").endswith("/awx-job-4242") or first.poll() is not None, 60,
                   "the first run to take the lock")
        held = lease(env, ns)
        assert held["spec"]["holderIdentity"].endswith("/awx-job-4242"), first.stdout.read()[-3000:]
        assert held["metadata"]["annotations"]["apex.ops/purpose"] == "nightly maintenance (test)"
        assert held["metadata"]["annotations"]["apex.ops/awx-job-id"] == "4242"

        second = run_playbook("playbooks/scale.yml", scale_vars(ns, tmp_path, 3))
        out = flat(second.stdout)
        assert second.returncode != 0
        assert "Refusing to start scale" in out and held["spec"]["holderIdentity"] in out
        assert "nightly maintenance (test)" in out and "Nothing was changed" in out
        assert replicas(env, ns, "lk-api") == 1  # the second run changed nothing
        assert holder(env, ns) == held["spec"]["holderIdentity"]
    finally:
        go.write_text("go")
        first.communicate(timeout=60)
    # the run is over (its playbook took no release step): the renewer released the lock
    wait_until(lambda: holder(env, ns) is None, 10, "the lock to be released when the first run ended")


def test_expired_lock_is_taken_over_and_released_at_the_end(run_playbook, lab_process_env, lock_ns, tmp_path):
    env, ns = lab_process_env, lock_ns
    put_lease(env, ns, "ops@awx-ee-9/awx-job-77", renewed_ago=600, duration=60)
    done = run_playbook("playbooks/scale.yml", scale_vars(ns, tmp_path, 2))
    assert done.returncode == 0, done.stdout[-3000:]
    out = flat(done.stdout + done.stderr)  # a warning: on stderr
    assert "took the apex.ops lock over: ops@awx-ee-9/awx-job-77 holds the apex.ops lock for db window (crashed)" in out
    assert "expired at" in out
    assert replicas(env, ns, "lk-api") == 2
    after = lease(env, ns)
    assert after["spec"].get("holderIdentity") is None and after["spec"]["leaseTransitions"] == 1  # released by the report


def test_emergency_rollback_overrides_a_live_lock_and_reports_whom(run_playbook, lab_process_env, lock_ns, tmp_path):
    env, ns = lab_process_env, lock_ns
    kubectl(env, "-n", ns, "set", "image", "deploy/lk-api", "api=apex/api:1.1.0")
    kubectl(env, "-n", ns, "rollout", "status", "deploy/lk-api", "--timeout=60s")
    put_lease(env, ns, "dba@bastion-2/pid-31337", renewed_ago=0, duration=600)
    # a plain changing run waits for nobody: refused
    refused = run_playbook("playbooks/scale.yml", scale_vars(ns, tmp_path, 3))
    assert refused.returncode != 0 and "dba@bastion-2/pid-31337" in flat(refused.stdout)
    done = run_playbook("playbooks/emergency_rollback.yml", {
        "emergency_rollback_namespace": ns, "emergency_rollback_kube_context": "apex-primary",
        "emergency_rollback_component": "api", "emergency_rollback_api_url": "",
        "emergency_rollback_deployments": {"api": "lk-api", "worker": "lk-worker"}, "apex_report_dir": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:]
    image = json.loads(kubectl(env, "-n", ns, "get", "deploy", "lk-api", "-o", "json").stdout)[
        "spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "apex/api:1.0.0"
    report = json.loads(sorted(tmp_path.glob("emergency_rollback-*.json"))[-1].read_text())
    assert report["lock_overrode"]["holder"] == "dba@bastion-2/pid-31337"
    assert report["lock_overrode"]["purpose"] == "db window (crashed)" and report["lock_overrode"]["status"] == "held"
    assert holder(env, ns) is None  # released at its end


def test_breaking_a_live_lock_needs_its_holder_named(run_playbook, lab_process_env, lock_ns, tmp_path):
    env, ns = lab_process_env, lock_ns
    put_lease(env, ns, "dba@bastion-2/pid-31337", renewed_ago=0, duration=600)
    book = tmp_path / "break.yml"
    book.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - apex.ops.apex_lock: {state: released, namespace: "%(ns)s", context: apex-primary, confirm: "{{ who }}"}
      register: broken
    - ansible.builtin.debug: {var: broken.broke}
""" % {"ns": ns})
    wrong = run_playbook(str(book), {"who": "someone@else/pid-1"})
    assert wrong.returncode != 0 and "not breaking the lock" in flat(wrong.stdout)
    assert holder(env, ns) == "dba@bastion-2/pid-31337"
    right = run_playbook(str(book), {"who": "dba@bastion-2/pid-31337"})
    assert right.returncode == 0, right.stdout[-3000:]
    assert holder(env, ns) is None
    assert lease(env, ns)["metadata"]["annotations"]["apex.ops/broken-holder"] == "dba@bastion-2/pid-31337"
