"""The maintenance playbook against the lab (its shared apex-api/apex-worker, put back by the run itself):

* outside its window, and without an approval, it refuses and changes nothing (no lock, no journal, no message);
* a stale backup refuses (maintenance_backup_if_stale=refuse) without touching the workloads; with =backup the run
  takes and verifies a fresh one;
* a crashed run's expired lock is taken over (said in the output and the report);
* while it runs (workers at 0, maintenance mode on), a second run refuses, naming the first;
* a maintenance task that fails still ends with the workers back, maintenance mode off, /ready 200 on the twin,
  the lock released and the journal empty;
* the webhook sink got the start and complete messages with the change request and the outcome.
"""
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ANY_TIME = {"database": {"days": "any", "start": "00:00", "end": "24:00", "approval": "DBA + Team Lead"}}
FAILING_TASK = """
- name: Wait until the test says go ({go})
  ansible.builtin.wait_for:
    path: "{go}"
    timeout: 120
- name: A maintenance task that fails
  ansible.builtin.fail:
    msg: the maintenance task failed on purpose
"""


def kubectl(env, *args, check=True, **kwargs):
    return subprocess.run(["kubectl", "--context", "apex-primary", "-n", "apex"] + list(args), env=env,
                          capture_output=True, text=True, timeout=60, check=check, **kwargs)


def replicas(env, name):
    return json.loads(kubectl(env, "get", "deploy", name, "-o", "json").stdout)["spec"]["replicas"]


def maintenance_env(env):
    spec = json.loads(kubectl(env, "get", "deploy", "apex-api", "-o", "json").stdout)["spec"]["template"]["spec"]
    values = [e.get("value") for c in spec["containers"] for e in c.get("env") or [] if e["name"] == "APEX__MAINTENANCE_MODE"]
    return values[0] if values else None


def lease_holder(env):
    out = kubectl(env, "get", "lease", "apex-ops-lock", "-o", "json", "--ignore-not-found").stdout
    return (json.loads(out)["spec"].get("holderIdentity") if out.strip() else None)


def journal(env):
    out = kubectl(env, "get", "configmap", "apex-ops-journal", "-o", "json", "--ignore-not-found").stdout
    return (json.loads(out).get("data") or {}).get("record") if out.strip() else None


def ready_status(lab):
    ctx = ssl.create_default_context(cafile=lab["APEX_CA_FILE"])
    try:
        with urllib.request.urlopen(lab["APEX_API_URL"] + "/ready", timeout=5, context=ctx) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def received(lab, prefix):
    with urllib.request.urlopen("%s/received?path=%s" % (lab["APEX_WEBHOOK_SINK_URL"], prefix), timeout=10) as resp:
        return json.loads(resp.read())


def wait_until(condition, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the first run ended before %s:\n%s" % (what, proc.stdout.read()[-4000:]))
        time.sleep(0.2)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def flat(text):
    return " ".join(text.split())


def newest_report(directory):
    return json.loads(sorted(Path(directory).glob("maintenance-*.json"))[-1].read_text())


@pytest.fixture(scope="module")
def sink_prefix(lab):
    return "/itest-maintenance-%d/" % os.getpid()


def base_vars(lab, tmp_path, prefix, **extra):
    variables = {"maintenance_change_request": "CHG-4242", "maintenance_approved_by": "dba-on-duty",
                 "maintenance_webhooks": [{"url": lab["APEX_WEBHOOK_SINK_URL"] + prefix + "slack", "kind": "slack"},
                                          {"url": lab["APEX_WEBHOOK_SINK_URL"] + prefix + "json", "kind": "json"}],
                 "apex_report_dir": str(tmp_path), "maintenance_drain_timeout": "60s"}
    variables.update(extra)
    return variables


def test_outside_the_window_or_unapproved_it_refuses_and_changes_nothing(
        run_playbook, lab_process_env, lab, tmp_path, sink_prefix):
    env = lab_process_env
    workers, api_env = replicas(env, "apex-worker"), maintenance_env(env)
    never = {"database": {"days": ["Sunday"], "start": "04:00", "end": "04:01"}}
    res = run_playbook("playbooks/maintenance.yml", base_vars(lab, tmp_path, sink_prefix, maintenance_windows=never))
    assert res.returncode != 0
    out = flat(res.stdout)
    if datetime.now(timezone.utc).strftime("%a %H:%M") != "Sun 04:00":
        assert "Refusing the database maintenance, nothing was changed: outside the database window (Sunday 04:00-04:01 UTC)" in out
    unapproved = run_playbook("playbooks/maintenance.yml",
                              base_vars(lab, tmp_path, sink_prefix, maintenance_windows=ANY_TIME, maintenance_approved_by=""))
    assert unapproved.returncode != 0
    assert "maintenance_change_request and maintenance_approved_by are required (approval needed: DBA + Team Lead)" in flat(unapproved.stdout)
    report = newest_report(tmp_path)
    assert report["status"] == "refused" and report["change_request"] == "CHG-4242" and report["lock"] is None
    assert replicas(env, "apex-worker") == workers and maintenance_env(env) == api_env
    assert lease_holder(env) is None and journal(env) is None
    assert received(lab, sink_prefix) == []  # no announcement for a run that never started


def test_a_stale_backup_refuses_before_anything_changes(run_playbook, lab_process_env, lab, tmp_path, sink_prefix):
    env = lab_process_env
    workers = replicas(env, "apex-worker")
    res = run_playbook("playbooks/maintenance.yml", base_vars(
        lab, tmp_path, sink_prefix, maintenance_windows=ANY_TIME, maintenance_announce=False,
        apex_s3_prefix="itest-maintenance-empty-%d" % os.getpid()))
    assert res.returncode != 0
    assert "no verified backup of apex within 24h" in flat(res.stdout)
    assert newest_report(tmp_path)["status"] == "failed"
    assert replicas(env, "apex-worker") == workers and maintenance_env(env) in (None, "false")
    assert lease_holder(env) is None and journal(env) is None


def test_a_failing_task_still_puts_everything_back(lab_process_env, lab, run_playbook, tmp_path, sink_prefix):
    env = lab_process_env
    workers = replicas(env, "apex-worker")
    # a crashed maintenance on another controller left its lock; it expired a minute ago
    stamp = (datetime.now(timezone.utc) - timedelta(seconds=360)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kubectl(env, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "apex-ops-lock", "namespace": "apex",
                     "annotations": {"apex.ops/purpose": "database maintenance CHG-0001", "apex.ops/host": "awx-ee-3"}},
        "spec": {"holderIdentity": "ops@awx-ee-3/awx-job-9001", "leaseDurationSeconds": 300,
                 "acquireTime": stamp, "renewTime": stamp}}))
    go = tmp_path / "go"
    task_file = tmp_path / "failing.yml"
    task_file.write_text(FAILING_TASK.format(go=go))
    variables = base_vars(lab, tmp_path, sink_prefix, maintenance_windows=ANY_TIME, maintenance_backup_if_stale="backup",
                          apex_s3_prefix="itest-maintenance-%d" % os.getpid(), maintenance_task_file=str(task_file))
    first = subprocess.Popen(["ansible-playbook", "playbooks/maintenance.yml", "-e", json.dumps(variables)], env=env,
                             cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        # the downtime is on: workers at 0, maintenance mode on, the twin not ready
        wait_until(lambda: replicas(env, "apex-worker") == 0 and maintenance_env(env) == "true" and ready_status(lab) == 503,
                   240, "the workers at 0 and maintenance mode on", first)
        holder = lease_holder(env)
        assert holder and holder != "ops@awx-ee-3/awx-job-9001"
        second = run_playbook("playbooks/maintenance.yml", base_vars(lab, tmp_path / "second", sink_prefix + "second/",
                                                                     maintenance_windows=ANY_TIME))
        out = flat(second.stdout + second.stderr)
        assert second.returncode != 0
        assert "Refusing to start maintenance" in out and holder in out and "database maintenance CHG-4242" in out
        assert replicas(env, "apex-worker") == 0  # the second run changed nothing
    finally:
        go.write_text("go")
        out = first.communicate(timeout=300)[0]
    assert first.returncode != 0, out[-3000:]
    assert "took the apex.ops lock over: ops@awx-ee-3/awx-job-9001" in flat(out)
    report = newest_report(tmp_path)
    assert report["status"] == "failed" and "failed on purpose" in report["error"]
    assert report["lock"]["overrode"] == "ops@awx-ee-3/awx-job-9001"
    assert report["checklist"]["backup"]["ok"] is True and report["checklist"]["backup"]["taken_now"] is True
    assert report["put_back"]["scale"] == "restored" and report["put_back"]["maintenance_mode"] == "off"
    assert report["put_back"]["ready"] == 200
    assert {w["name"] for w in report["checklist"]["rollback_point"]} == {"apex-api", "apex-worker"}
    # asserted in the cluster and on the twin
    assert replicas(env, "apex-worker") == workers and maintenance_env(env) == "false"
    assert ready_status(lab) == 200
    assert lease_holder(env) is None and journal(env) is None
    # the start and complete messages, on both webhooks
    messages = received(lab, sink_prefix)
    slack = [m["body"]["text"] for m in messages if m["path"].endswith("/slack")]
    docs = [m["body"] for m in messages if m["path"].endswith("/json")]
    assert len(slack) == 2 and "MAINTENANCE STARTED" in slack[0] and "MAINTENANCE COMPLETE" in slack[1]
    assert "*Change Request:* CHG-4242" in slack[0] and "*Approved By:* dba-on-duty" in slack[0]
    assert [d["kind"] for d in docs] == ["maintenance_start", "maintenance_complete"]
    assert docs[1]["status"] == "failed" and docs[1]["fields"]["change_request"] == "CHG-4242"
    assert "restored" in docs[1]["fields"]["checks"]["put_back"]
