"""apex_preflight, the first task of every role, against the lab: the issue's real typos are refused before
anything changes, and a journal record left by an interrupted procedure is named by every playbook."""
import glob
import json
import os
import subprocess

import pytest


def _replicas(env, ns, name):
    out = subprocess.run(["kubectl", "--context", "apex-primary", "-n", ns, "get", "deploy", name, "-o", "json"],
                         env=env, capture_output=True, text=True, check=True, timeout=30).stdout
    return json.loads(out)["spec"]["replicas"]


def _flat(proc):
    return " ".join((proc.stdout + proc.stderr).split())


def test_scale_typo_is_refused_and_nothing_scales(run_playbook, lab_process_env, tmp_path):
    before = {name: _replicas(lab_process_env, "apex", name) for name in ("apex-api", "apex-worker")}
    proc = run_playbook("playbooks/scale.yml", {"scale_componet": "worker", "scale_replicas": 8,
                                                "apex_report_dir": str(tmp_path)})
    assert proc.returncode != 0
    flat = _flat(proc)
    assert "scale_componet (did you mean scale_component?)" in flat
    assert "Refusing before doing anything" in flat
    assert {name: _replicas(lab_process_env, "apex", name) for name in before} == before
    assert "Scale the targets" not in proc.stdout  # refused before the first task of the procedure


def test_restore_typo_is_refused(run_playbook, tmp_path):
    proc = run_playbook("playbooks/restore.yml", {"restore_target_db": "apex_restore_typo", "restore_confirm":
                                                  "apex_restore_typo", "restore_backupid": "20260101T000000Z",
                                                  "restore_manage_workloads": False, "apex_report_dir": str(tmp_path)})
    assert proc.returncode != 0
    assert "restore_backupid (did you mean restore_backup_id?)" in _flat(proc)
    assert "Pre-flight | Plan" not in proc.stdout


def test_db_connections_typo_and_empty_scope_terminate_nobody(run_playbook, lab, tmp_path):
    import psycopg

    bystander = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname="apex", application_name="itest-bystander",
                                autocommit=True)
    try:
        bystander.execute("SELECT 1")
        pid = bystander.info.backend_pid
        base = {"db_connections_confirm": "terminate-connections", "db_connections_terminate_idle_longer_than": "0s",
                "apex_report_dir": str(tmp_path)}
        typo = run_playbook("playbooks/db_connections.yml", dict(base, db_connections_application_name="x"))
        assert typo.returncode != 0
        assert "db_connections_application_name (did you mean db_connections_application_names?)" in _flat(typo)
        empty = run_playbook("playbooks/db_connections.yml", dict(base, db_connections_database=""))
        assert empty.returncode != 0
        assert "empty scope: db_connections_database" in _flat(empty)
        assert bystander.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # still connected, same session
    finally:
        bystander.close()


def test_a_longer_role_prefix_is_not_an_unknown_variable(run_playbook, tmp_path):
    """scale_event_* variables belong to scale_event: the scale role does not refuse them."""
    proc = run_playbook("playbooks/scale.yml", {"scale_event_name": "launch", "scale_component": "api",
                                                "scale_replicas_delta": "+0", "apex_report_dir": str(tmp_path)},
                        check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.fixture()
def journal_record(lab_process_env):
    """A journal record as an interrupted restore leaves it, in a namespace of our own."""
    ns = "apex-preflight-itest-%d" % os.getpid()
    kubectl = ["kubectl", "--context", "apex-primary"]
    record = {"run_id": "restore-20261202T000000000000Z", "procedure": "restore", "phase": "restore",
              "started": "2026-12-02T00:00:00+00:00", "updated": "2026-12-02T00:00:05+00:00",
              "holder": {"user": "oncall", "host": "elsewhere", "pid": 1, "awx_job_id": None},
              "undo": [{"action": "scale_restore", "state_name": "restore-apex-x"}]}
    manifest = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "apex-ops-journal", "namespace": ns},
         "data": {"record": json.dumps(record)}}]}
    subprocess.run(kubectl + ["apply", "-f", "-"], input=json.dumps(manifest), text=True, env=lab_process_env,
                   capture_output=True, check=True, timeout=60)
    yield ns, record
    subprocess.run(kubectl + ["delete", "namespace", ns, "--wait=false"], env=lab_process_env, capture_output=True,
                   timeout=60, check=False)


def test_health_check_reports_an_interrupted_procedure_as_critical(run_playbook, journal_record, tmp_path):
    ns, record = journal_record
    proc = run_playbook("playbooks/health_check.yml", {"health_check_namespace": ns, "apex_report_dir": str(tmp_path),
                                                       "health_check_fail_on_critical": False})
    reports = sorted(glob.glob(str(tmp_path / "health_check-*.json")))
    assert reports, proc.stdout[-3000:]
    with open(reports[-1]) as handle:
        checks = {c["name"]: c for c in json.load(handle)["checks"]}
    check = checks["procedure interrupted"]
    assert check["status"] == "critical"
    assert record["run_id"] in check["detail"] and "apex.ops.recover -e recover_confirm=" in check["detail"]
    assert "INTERRUPTED PROCEDURE" in _flat(proc)


def test_changing_playbook_refuses_and_the_override_names_the_run(run_playbook, journal_record, tmp_path):
    ns, record = journal_record
    base = {"hpa_namespace": ns, "hpa_kube_context": "apex-primary", "apex_report_dir": str(tmp_path)}
    proc = run_playbook("playbooks/hpa.yml", base, check=True)
    assert proc.returncode != 0
    flat = _flat(proc)
    assert "Refusing to start hpa" in flat and "recover_confirm=%s" % record["run_id"] in flat
    assert "apex_allow_interrupted=%s" % record["run_id"] in flat
    # the override names this run; it gets past the pre-flight (and then fails on what the namespace lacks)
    past = run_playbook("playbooks/hpa.yml", dict(base, apex_allow_interrupted=record["run_id"]), check=True)
    assert "Refusing to start hpa" not in _flat(past)
