"""The deploy and rollback playbooks against the lab: Helm v4 (apex_release) on the Kubernetes simulator,
the twin serving the image tag of the ready apex-api ReplicaSet. The tests share the ``apex`` release and run
in order: deploy 1.1.0, the same deploy again, a check-mode plan, a deploy whose smoke test fails after a
successful upgrade (maintenance mode: /ready answers 503) and is rolled back, a rollback to revision 1, the
rollout method (kubectl rollout undo), and a deploy interrupted after its upgrade that `recover` rolls back.
The fixture adopts the seeded namespace as revision 1 and puts it back as seeded afterwards."""
import glob
import json
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHART = os.path.join(ROOT, "tests", "lab", "charts", "apex")
APEX = dict(chart=CHART, namespace="apex", context="apex-primary", timeout=120)


@pytest.fixture(scope="module")
def seeded_release(run_module, kubectl, twin_version):
    """Release ``apex`` installed from the chart defaults (revision 1, what the lab seeds: 1.0.0). Afterwards the
    seeded objects are back and the release history is dropped, as tests/integration/release/conftest.py does."""
    assert kubectl.helm_secrets("apex") == [], "namespace apex already has Helm release Secrets: a previous run did not clean up"
    first = run_module("apex_release", **APEX)
    assert not first.failed, first.get("msg")
    assert first["revision_after"] == 1
    yield first
    journal = kubectl.get("configmap", "apex-ops-journal", "-n", "apex")
    if (journal or {}).get("data", {}).get("record"):
        # a failed test left its record: clear it so the tests after this module are not refused, then report it
        kubectl.run("delete", "configmap", "apex-ops-journal", "-n", "apex", check=False)
    # the chart's values given in full: an upgrade given no values at all reuses the deployed revision's (Helm)
    back = run_module("apex_release", values_files=[os.path.join(CHART, "values.yaml")], **APEX)
    kubectl.run("delete", "secrets", "-n", "apex", "-l", "owner=helm,name=apex", check=False)
    assert not back.failed, back.get("msg")
    assert twin_version("1.0.0")[0] == "1.0.0"
    assert not (journal or {}).get("data", {}).get("record"), "a run left a journal record: %s" % journal["data"]


def _reports(directory, procedure):
    return sorted(glob.glob(os.path.join(str(directory), "%s-*.json" % procedure)))


def _flat(text):
    """The output with line wrapping undone (the YAML callback folds long messages)."""
    return " ".join(text.split())


def _newest_report(directory, procedure):
    found = _reports(directory, procedure)
    assert found, "no %s report in %s" % (procedure, directory)
    with open(found[-1]) as handle:
        return json.load(handle)


def _deploy_vars(tmp_path, **extra):
    values = {"deploy_chart": CHART, "deploy_report_dir": str(tmp_path), "deploy_timeout": 120}
    values.update(extra)
    return values


def _env(kubectl, name, container_env_name, namespace="apex"):
    spec = kubectl.get("deployment", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]
    return dict((e["name"], e.get("value")) for e in spec.get("env", [])).get(container_env_name)


def test_deploy_new_version(seeded_release, run_playbook, kubectl, twin_version, tmp_path):
    proc = run_playbook("playbooks/deploy.yml", _deploy_vars(tmp_path, deploy_version="1.1.0"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # the plan printed concisely: the lines that change, per object
    assert "Deployment/apex/apex-api: - image: apex/api:1.0.0; + image: apex/api:1.1.0" in _flat(proc.stdout)
    # what runs and what is served, read from the cluster and the twin
    assert kubectl.image("apex") == "apex/api:1.1.0"
    assert kubectl.image("apex", "apex-worker") == "apex/worker:1.1.0"
    assert twin_version.now() == ("1.1.0", "1.1.0")
    assert kubectl.helm_secrets("apex") == [1, 2]
    report = _newest_report(tmp_path, "deploy")
    assert report["status"] == "ok" and report["changed"] is True and report["action"] == "upgrade"
    assert (report["revision_before"], report["revision_after"]) == (1, 2)
    assert (report["version_before"], report["version_after"]) == ("1.0.0", "1.1.0")
    assert report["images_after"] == {"apex-api": "apex/api:1.1.0", "apex-worker": "apex/worker:1.1.0"}
    assert [s["path"] for s in report["smoke"] if s["passed"] and s["version"] == "1.1.0"] == ["/health", "/ready"]
    assert set(report["timings"]) == {"preflight", "plan", "upgrade", "rollouts", "smoke", "total"}
    assert all(v >= 0 for v in report["timings"].values())


def test_same_deploy_changes_nothing(seeded_release, run_playbook, kubectl, twin_version, tmp_path):
    proc = run_playbook("playbooks/deploy.yml", _deploy_vars(tmp_path, deploy_version="1.1.0"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "changed=0" in _flat(proc.stdout)
    assert kubectl.helm_secrets("apex") == [1, 2]  # no new Helm revision
    report = _newest_report(tmp_path, "deploy")
    assert report["status"] == "unchanged (already deployed)" and report["changed"] is False
    assert report["action"] == "none" and report["revision_after"] == 2
    assert twin_version.now()[0] == "1.1.0"


def test_check_mode_shows_the_plan_and_changes_nothing(seeded_release, run_playbook, kubectl, tmp_path):
    proc = run_playbook("playbooks/deploy.yml", _deploy_vars(tmp_path, deploy_version="1.2.0"), check=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "apex: upgrade from revision 2" in _flat(proc.stdout)
    assert "+ image: apex/api:1.2.0" in _flat(proc.stdout)
    assert kubectl.image("apex") == "apex/api:1.1.0"
    assert kubectl.helm_secrets("apex") == [1, 2]
    assert _newest_report(tmp_path, "deploy")["status"] == "planned (check mode)"


def test_failed_smoke_test_rolls_back_to_the_recorded_revision(seeded_release, run_playbook, run_module,
                                                               kubectl, twin_version, tmp_path):
    # The upgrade succeeds (the pods get ready), but the new release switches maintenance mode on: /ready
    # answers 503 and /health says "maintenance". A real smoke-test failure after a successful upgrade.
    extra = {"deploy_version": "1.2.0", "deploy_set_values": ["api.env.APEX__MAINTENANCE_MODE=true"],
             "deploy_smoke_timeout": 8}
    proc = run_playbook("playbooks/deploy.yml", _deploy_vars(tmp_path, **extra))
    assert proc.returncode != 0
    out = proc.stdout
    assert "Deploy of 1.2.0 FAILED" in _flat(out) and "smoke test did not pass" in _flat(out)
    assert "/ready answered 503" in _flat(out)
    assert "Rolled back to revision 2 (now revision 4); the API serves 1.1.0 again" in _flat(out)
    # the cluster, the release history and the twin are back on 1.1.0, maintenance off
    assert kubectl.image("apex") == "apex/api:1.1.0"
    assert _env(kubectl, "apex-api", "APEX__MAINTENANCE_MODE") == "false"
    assert twin_version.now() == ("1.1.0", "1.1.0")
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4]
    facts = run_module("apex_release", state="facts", namespace="apex", context="apex-primary")
    assert facts["deployed"]["revision"] == 4 and facts["revisions"][-1]["description"] == "Rollback to 2"
    report = _newest_report(tmp_path, "deploy")
    assert report["status"] == "failed, rolled back"
    assert (report["revision_before"], report["revision_upgraded"], report["revision_after"]) == (2, 3, 4)
    assert report["rollback"]["status"] == "ok" and report["rollback"]["target_revision"] == 2
    assert (report["version_before"], report["version_after"]) == ("1.1.0", "1.1.0")
    ready = [s for s in report["smoke"] if s["path"] == "/ready"][0]
    assert ready["status"] == 503 and ready["version"] == "1.2.0" and not ready["passed"]
    assert {"smoke", "rollback", "upgrade"} <= set(report["timings"])


def test_rollback_to_a_named_revision(seeded_release, run_playbook, kubectl, twin_version, tmp_path):
    extra = {"rollback_revision": 1, "rollback_report_dir": str(tmp_path), "rollback_timeout": 120}
    plan = run_playbook("playbooks/rollback.yml", extra, check=True)
    assert plan.returncode == 0, plan.stdout[-4000:] + plan.stderr[-2000:]
    assert "apex: roll back from revision 4 to revision 1 (Install complete)" in _flat(plan.stdout)
    assert kubectl.image("apex") == "apex/api:1.1.0"  # check mode changed nothing

    proc = run_playbook("playbooks/rollback.yml", extra)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert kubectl.image("apex") == "apex/api:1.0.0"
    assert kubectl.image("apex", "apex-worker") == "apex/worker:1.0.0"
    assert twin_version.now() == ("1.0.0", "1.0.0")
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4, 5]
    report = _newest_report(tmp_path, "rollback")
    assert report["status"] == "ok" and report["method"] == "helm"
    assert (report["revision_before"], report["target_revision"], report["revision_after"]) == (4, 1, 5)
    assert (report["version_before"], report["version_expected"], report["version_after"]) == ("1.1.0", "1.0.0", "1.0.0")
    assert {"preflight", "plan", "rollback", "rollouts", "smoke", "total"} == set(report["timings"])

    again = run_playbook("playbooks/rollback.yml", extra)
    assert again.returncode == 0 and "changed=0" in again.stdout
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4, 5]


def test_rollback_method_rollout(seeded_release, run_playbook, run_module, kubectl, twin_version, tmp_path):
    # kubectl rollout undo of both Deployments (apex_rollout): the previous templates run 1.1.0; Helm is not asked
    extra = {"rollback_method": "rollout", "rollback_report_dir": str(tmp_path), "rollback_timeout": 120}
    proc = run_playbook("playbooks/rollback.yml", extra)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert kubectl.image("apex") == "apex/api:1.1.0" and kubectl.image("apex", "apex-worker") == "apex/worker:1.1.0"
    assert twin_version.now() == ("1.1.0", "1.1.0")
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4, 5]  # Helm's record does not follow
    report = _newest_report(tmp_path, "rollback")
    assert report["status"] == "ok" and report["method"] == "rollout"
    assert (report["version_before"], report["version_after"]) == ("1.0.0", "1.1.0")
    assert set(report["revision_after"]) == {"Deployment/apex/apex-api", "Deployment/apex/apex-worker"}
    # back to what revision 5 of the release says (1.0.0), for the tests that follow
    back = run_module("apex_rollout", namespace="apex", context="apex-primary", wait_timeout=120,
                      targets=[{"name": "apex-api", "image": "apex/api:1.0.0"},
                               {"name": "apex-worker", "image": "apex/worker:1.0.0"}])
    assert not back.failed, back.get("msg")
    assert twin_version("1.0.0")[0] == "1.0.0"


def _journal(kubectl):
    found = kubectl.get("configmap", "apex-ops-journal", "-n", "apex")
    record = (found or {}).get("data", {}).get("record")
    return json.loads(record) if record else None


def _helm_status(kubectl, revision):
    found = kubectl.get("secret", "sh.helm.release.v1.apex.v%d" % revision, "-n", "apex")
    return (found or {}).get("metadata", {}).get("labels", {}).get("status")


def _interrupt(proc, grace=30):
    """Ctrl-C as an operator does (SIGINT to the process group); again when the run has not ended within
    ``grace`` seconds (ansible-playbook sat on the first one in a CI rehearsal under load), then SIGTERM,
    as a stuck terminal's kill would. Either way no rescue runs and the journal record stays. Returns
    the output."""
    for signum in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        os.killpg(proc.pid, signum)
        try:
            out, dummy = proc.communicate(timeout=grace)
            return out
        except subprocess.TimeoutExpired:
            continue
    out, dummy = proc.communicate(timeout=grace)
    return out


def test_interrupted_deploy_is_rolled_back_by_recover(seeded_release, run_playbook, lab_process_env,
                                                      kubectl, twin_version, tmp_path):
    # The smoke test waits for a version that is never served, so the run sits after a successful upgrade;
    # it is interrupted there as Ctrl-C does (SIGINT to its process group): no rescue runs.
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4, 5] and twin_version.now()[0] == "1.0.0"
    extra = _deploy_vars(tmp_path, deploy_version="1.1.0", deploy_expected_version="9.9.9", deploy_smoke_timeout=300)
    cmd = ["ansible-playbook", os.path.join(ROOT, "playbooks", "deploy.yml"), "-e", json.dumps(extra)]
    proc = subprocess.Popen(cmd, env=lab_process_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        # after the upgrade: revision 6 is deployed (Helm's wait is over) and the twin serves 1.1.0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (_helm_status(kubectl, 6) == "deployed"
                                                   and twin_version.now()[0] == "1.1.0"):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        assert _helm_status(kubectl, 6) == "deployed", "the upgrade did not happen"
        out = _interrupt(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "Rolled back" not in out  # no rescue ran
    record = _journal(kubectl)
    assert record and record["procedure"] == "deploy" and record["phase"] == "upgrade"
    assert record["undo"][0]["action"] == "release_rollback" and record["undo"][0]["revision"] == 5
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4, 5, 6] and kubectl.image("apex") == "apex/api:1.1.0"

    # every changing playbook refuses, naming recover
    refused = run_playbook("playbooks/rollback.yml", {"rollback_report_dir": str(tmp_path)})
    assert refused.returncode != 0
    assert "recover_confirm=%s" % record["run_id"] in _flat(refused.stdout)
    assert "roll release apex back to revision 5" in _flat(refused.stdout)

    recovered = run_playbook("playbooks/recover.yml", {"recover_confirm": record["run_id"],
                                                       "recover_report_dir": str(tmp_path)})
    assert recovered.returncode == 0, recovered.stdout[-4000:] + recovered.stderr[-2000:]
    assert _journal(kubectl) is None
    assert kubectl.helm_secrets("apex") == [1, 2, 3, 4, 5, 6, 7]
    assert kubectl.image("apex") == "apex/api:1.0.0"
    assert twin_version("1.0.0")[0] == "1.0.0"
    report = _newest_report(tmp_path, "recover")
    assert report["status"] == "recovered"
    assert report["steps_done"][0]["action"] == "release_rollback"
    assert report["steps_done"][0]["outcome"].startswith("rolled back to revision 5")


def test_deploy_interrupted_during_helms_wait_is_rolled_back_by_recover(seeded_release, run_playbook,
                                                                        lab_process_env, kubectl, twin_version,
                                                                        tmp_path):
    # Interrupted while Helm waits for pods that never get ready: revision 8 stays pending-upgrade with its
    # objects applied. recover's rollback to revision 7 must not take "7 is the deployed revision" for done.
    assert kubectl.helm_secrets("apex")[-1] == 7
    extra = _deploy_vars(tmp_path, deploy_version="2.0.0-never-ready")
    cmd = ["ansible-playbook", os.path.join(ROOT, "playbooks", "deploy.yml"), "-e", json.dumps(extra)]
    proc = subprocess.Popen(cmd, env=lab_process_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (_helm_status(kubectl, 8) == "pending-upgrade"
                                                   and "never-ready" in kubectl.image("apex")):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        assert _helm_status(kubectl, 8) == "pending-upgrade"
        _interrupt(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    record = _journal(kubectl)
    assert record and record["undo"][0]["revision"] == 7
    recovered = run_playbook("playbooks/recover.yml", {"recover_confirm": record["run_id"],
                                                       "recover_report_dir": str(tmp_path)})
    assert recovered.returncode == 0, recovered.stdout[-4000:] + recovered.stderr[-2000:]
    assert _journal(kubectl) is None
    assert kubectl.helm_secrets("apex")[-1] == 9 and _helm_status(kubectl, 9) == "deployed"
    assert kubectl.image("apex") == "apex/api:1.0.0"
    assert twin_version("1.0.0")[0] == "1.0.0"
    assert _newest_report(tmp_path, "recover")["steps_done"][0]["outcome"].startswith("rolled back to revision 7")
