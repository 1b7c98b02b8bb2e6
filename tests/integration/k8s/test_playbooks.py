"""The scaling playbooks against the lab: cluster state is asserted after each run."""
import json
import time

import pytest

from k8s_lab import NS, SEEDED, STATE_CM


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def test_scale_playbook_both_components(run_playbook, kube):
    ok(run_playbook("playbooks/scale.yml", {"scale_api_replicas": 5, "scale_worker_replicas": 10}))
    assert kube.deployment("apex-api").status.ready_replicas == 5
    assert kube.deployment("apex-worker").status.ready_replicas == 10


def test_scale_playbook_refuses_outside_hpa_and_leaves_cluster(run_playbook, kube, tmp_path):
    proc = run_playbook("playbooks/scale.yml", {"scale_component": "api", "scale_replicas": 25,
                                                "scale_report_dir": str(tmp_path)})
    assert proc.returncode != 0
    assert "refusing to scale to 25" in proc.stdout
    assert kube.state() == SEEDED
    reports = list(tmp_path.glob("scale-*.json"))
    assert reports and json.loads(reports[0].read_text())["status"] == "failed"


def test_scale_playbook_check_mode(run_playbook, kube):
    ok(run_playbook("playbooks/scale.yml", {"scale_component": "worker", "scale_replicas": 9}, check=True))
    assert kube.state() == SEEDED


def test_hpa_playbook(run_playbook, kube):
    ok(run_playbook("playbooks/hpa.yml", {"hpa_component": "both", "hpa_api": {"min_replicas": 4, "max_replicas": 30},
                                          "hpa_worker": {"max_replicas": 60}, "hpa_target_cpu": 65}))
    assert kube.hpa_bounds("apex-api") == (4, 30, 65)
    assert kube.hpa_bounds("apex-worker") == (5, 60, 65)
    assert kube.deployment("apex-api").status.ready_replicas == 4


def test_scale_event_start_end_restores_saved_not_hardcoded(run_playbook, kube, tmp_path):
    # the state before the event is not the runbook's: restore must bring back this one
    kube.hpa_api.patch_namespaced_horizontal_pod_autoscaler("apex-api", NS, {"spec": {"maxReplicas": 12}})
    kube.apps.patch_namespaced_deployment_scale("apex-api", NS, {"spec": {"replicas": 4}})
    kube.settle("apex-api", 4)
    before = kube.state()
    vars_ = {"scale_event_name": "it-launch", "scale_event_report_dir": str(tmp_path)}
    ok(run_playbook("playbooks/scale_event.yml", dict(vars_, scale_event_phase="start")))
    assert kube.replicas("apex-worker") == 20 and kube.deployment("apex-worker").status.ready_replicas == 20
    assert kube.hpa_bounds("apex-api")[1] == 50 and kube.hpa_bounds("apex-worker")[1] == 100
    record = json.loads(kube.core.read_namespaced_config_map(STATE_CM, NS).data["it-launch"])
    assert {t["name"]: t["hpa_bounds"]["max_replicas"] for t in record["targets"]} == {"apex-api": 12, "apex-worker": 50}
    ok(run_playbook("playbooks/scale_event.yml", dict(vars_, scale_event_phase="end")))
    assert kube.state() == before
    assert kube.deployment("apex-worker").status.ready_replicas == 5
    reports = sorted(p.name for p in tmp_path.glob("scale_event-*.json"))
    assert any(r.startswith("scale_event-start") for r in reports) and any(r.startswith("scale_event-end") for r in reports)


def test_scale_playbook_secrets_not_in_verbose_output(run_playbook, kube_token):
    proc = ok(run_playbook("playbooks/scale.yml", {"scale_component": "api", "scale_replicas": 3}, verbosity=3))
    assert kube_token not in proc.stdout and kube_token not in proc.stderr


def test_alert_resource_exhaustion_scales_out_and_restarts(run_playbook, kube, tmp_path):
    before = kube.deployment("apex-api").spec.template.metadata.annotations or {}
    ok(run_playbook("playbooks/alert_resource_exhaustion.yml", {
        "alert_resource_exhaustion_restart": True, "alert_resource_exhaustion_report_dir": str(tmp_path)}))
    d = kube.deployment("apex-api")
    assert d.spec.replicas == 8 and d.status.ready_replicas == 8 and d.status.updated_replicas == 8
    after = d.spec.template.metadata.annotations or {}
    assert after.get("kubectl.kubernetes.io/restartedAt") and after != before
    report = json.loads(next(tmp_path.glob("alert_resource_exhaustion-*.json")).read_text())
    assert report["diagnosis"]["metrics_available"] is True and report["diagnosis"]["top_pods_by_cpu"]


def test_alert_queue_backlog_scales_workers_from_backlog(run_playbook, kube, lab, tmp_path):
    import redis

    r = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                    password=lab.get("APEX_REDIS_PASSWORD") or None)
    key = "apex:test:backlog"
    r.delete(key)
    r.rpush(key, *["t%d" % i for i in range(160)])
    try:
        proc = ok(run_playbook("playbooks/alert_queue_backlog.yml", {
            "alert_queue_backlog_queue_key": key, "alert_queue_backlog_report_dir": str(tmp_path)}))
    finally:
        r.delete(key)
    # 160 queued, threshold 100: 60 over, one worker per 10 -> +6 (step cap 10), 5 -> 11
    assert kube.replicas("apex-worker") == 11, proc.stdout[-3000:]
    assert kube.deployment("apex-worker").status.ready_replicas == 11
    report = json.loads(next(tmp_path.glob("alert_queue_backlog-*.json")).read_text())
    assert report["diagnosis"]["queue_depth"] == 160 and report["diagnosis"]["target_workers"] == 11
    assert report["diagnosis"]["task_status_last_hour"] is not None


def test_alert_queue_backlog_diagnosis_only_and_below_threshold(run_playbook, kube, lab, tmp_path):
    import redis

    r = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                    password=lab.get("APEX_REDIS_PASSWORD") or None)
    key = "apex:test:backlog-small"
    r.delete(key)
    r.rpush(key, *["t%d" % i for i in range(160)])
    try:
        ok(run_playbook("playbooks/alert_queue_backlog.yml", {
            "alert_queue_backlog_queue_key": key, "alert_queue_backlog_respond": False,
            "alert_queue_backlog_report_dir": str(tmp_path / "a")}))
        assert kube.state() == SEEDED
        report = json.loads(next((tmp_path / "a").glob("alert_queue_backlog-*.json")).read_text())
        assert report["diagnosis"]["backlog"] is True and report["action"].startswith("none: diagnosis only")
        r.ltrim(key, 0, 19)
        ok(run_playbook("playbooks/alert_queue_backlog.yml", {
            "alert_queue_backlog_queue_key": key, "alert_queue_backlog_report_dir": str(tmp_path / "b")}))
        assert kube.state() == SEEDED
        report = json.loads(next((tmp_path / "b").glob("alert_queue_backlog-*.json")).read_text())
        assert report["diagnosis"]["queue_depth"] == 20 and report["action"].startswith("none: queue depth within")
    finally:
        r.delete(key)


def test_scale_playbook_bad_input_is_refused_by_the_argument_spec(run_playbook, kube):
    proc = run_playbook("playbooks/scale.yml", {"scale_component": "db", "scale_replicas": 4})
    assert proc.returncode != 0 and "scale_component" in proc.stdout
    proc = run_playbook("playbooks/scale.yml", {"scale_component": "api"})
    assert proc.returncode != 0 and "Give scale_replicas" in proc.stdout
    assert kube.state() == SEEDED


def test_scale_playbook_to_zero_needs_the_confirmation(run_playbook, kube, tmp_path):
    proc = run_playbook("playbooks/scale.yml", {"scale_component": "worker", "scale_replicas": 0,
                                                "scale_report_dir": str(tmp_path / "a")})
    assert proc.returncode != 0 and "scale_confirm_zero=scale-to-zero" in proc.stdout, proc.stdout[-3000:]
    assert kube.state() == SEEDED
    report = json.loads(next((tmp_path / "a").glob("scale-*.json")).read_text())
    # the refusal is apex_scale's (allow_zero), before anything changed; the role names its confirmation
    assert report["status"] == "failed" and report["failed_task"] == "Scale the targets", report
    assert "apex-worker: refusing to scale to 0 replicas" in report["error"] and "allow_zero" in report["error"]
    # a delta that lands on 0 is the same request
    proc = run_playbook("playbooks/scale.yml", {"scale_component": "worker", "scale_replicas_delta": "-5",
                                                "scale_report_dir": str(tmp_path / "b")})
    assert proc.returncode != 0 and "scale_confirm_zero=scale-to-zero" in proc.stdout, proc.stdout[-3000:]
    assert kube.state() == SEEDED
    ok(run_playbook("playbooks/scale.yml", {"scale_component": "worker", "scale_replicas": 0,
                                            "scale_confirm_zero": "scale-to-zero",
                                            "scale_report_dir": str(tmp_path / "c")}))
    d = kube.deployment("apex-worker")
    assert d.spec.replicas == 0 and not d.status.ready_replicas
    assert kube.hpa_bounds("apex-worker")[:2] == (5, 50)  # the HPA is left as it was


def test_scale_playbook_missing_target_still_writes_the_report(run_playbook, kube, tmp_path):
    proc = run_playbook("playbooks/scale.yml", {"scale_component": "api", "scale_replicas": 4,
                                                "scale_deployments": {"api": "apex-nope", "worker": "apex-worker"},
                                                "scale_report_dir": str(tmp_path)})
    assert proc.returncode != 0
    report = json.loads(next(tmp_path.glob("scale-*.json")).read_text())
    assert report["status"] == "failed" and report["failed_task"] == "Pre-flight | The targets exist"
    assert "apex-nope" in report["error"]
    assert kube.state() == SEEDED


@pytest.mark.parametrize("playbook, extra", [
    ("alert_queue_backlog", {"alert_queue_backlog_worker_deployment": "apex-nope"}),
    ("alert_resource_exhaustion", {"alert_resource_exhaustion_deployments": {"api": "apex-nope", "worker": "apex-nope"}}),
])
def test_failing_alert_run_still_writes_its_report(run_playbook, kube, tmp_path, playbook, extra):
    proc = run_playbook("playbooks/%s.yml" % playbook, dict(extra, apex_report_dir=str(tmp_path)))
    assert proc.returncode != 0
    reports = list(tmp_path.glob("%s-*.json" % playbook))
    assert len(reports) == 1, proc.stdout[-3000:]
    report = json.loads(reports[0].read_text())
    assert report["status"] == "failed" and report["failed_task"].startswith("Diagnose |")
    assert "apex-nope" in report["error"]
    assert kube.state() == SEEDED


def test_alert_queue_backlog_db_password_never_in_verbose_output(run_playbook, lab, tmp_path):
    """The task stats come from apex_db_maint: the password is not in -vvv output, no credential file is
    written, and apex_pg_password is what is used."""
    password = lab["PGPASSWORD"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    # a wrong PGPASSWORD in the caller's environment: the stats only work if apex_pg_password was used
    proc = run_playbook("playbooks/alert_queue_backlog.yml", {
        "alert_queue_backlog_respond": False, "alert_queue_backlog_queue_key": "apex-ops-leaktest:none",
        "apex_pg_password": password, "apex_report_dir": str(tmp_path)}, verbosity=3,
        env={"PGPASSWORD": "not-the-password", "TMPDIR": str(tmpdir)})
    ok(proc)
    output = proc.stdout + proc.stderr
    assert "<localhost> EXEC" in output or "ESTABLISH LOCAL CONNECTION" in output  # really verbose
    assert password not in output
    assert "psql" not in output and "PGPASSFILE" not in output
    report_text = next(tmp_path.glob("alert_queue_backlog-*.json")).read_text()
    assert password not in report_text
    report = json.loads(report_text)
    assert report["diagnosis"]["task_stats_error"] is None, report["diagnosis"]
    assert report["diagnosis"]["task_status_last_hour"] is not None
    assert not list(tmpdir.rglob("*.pgpass")), "a password file was written"


def test_alert_queue_backlog_with_tasks_locked_ends_and_names_the_holder(run_playbook, lab, kube, tmp_path):
    """A session holds ACCESS EXCLUSIVE on tasks: the run used to hang in psql. Now the stats read gives
    up after the lock timeout (default 10s), the report names the holder, and the response goes on."""
    import psycopg
    import uuid

    app = "lock-holder-%s" % uuid.uuid4().hex[:8]
    holder = psycopg.connect(host=lab["PGHOST"], port=int(lab["PGPORT"]), user=lab["PGUSER"], password=lab["PGPASSWORD"],
                             dbname=lab["PGDATABASE"], application_name=app, sslmode="disable")
    try:
        holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        started = time.monotonic()
        proc = run_playbook("playbooks/alert_queue_backlog.yml", {
            "alert_queue_backlog_respond": False, "alert_queue_backlog_queue_key": "apex-ops-locktest:none",
            "apex_report_dir": str(tmp_path)}, timeout=240)
        elapsed = time.monotonic() - started
        ok(proc)
        assert elapsed < 90, elapsed
        report = json.loads(next(tmp_path.glob("alert_queue_backlog-*.json")).read_text())
        error = report["diagnosis"]["task_stats_error"]
        assert error and "lock_timeout (10s) reached" in error, report["diagnosis"]
        assert "pid %d" % pid in error and app in error, error
        assert report["diagnosis"]["task_status_last_hour"] is None
        # the holder's session is untouched: same backend, still in its transaction, still holding the lock
        with psycopg.connect(host=lab["PGHOST"], port=int(lab["PGPORT"]), user=lab["PGUSER"],
                             password=lab["PGPASSWORD"], dbname=lab["PGDATABASE"], autocommit=True) as observer:
            assert observer.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (
                "idle in transaction",)
            assert observer.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND granted AND mode = "
                                    "'AccessExclusiveLock' AND relation = 'tasks'::regclass", (pid,)).fetchone()[0] == 1
        assert holder.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.rollback()
        holder.close()
    assert kube.state() == SEEDED
