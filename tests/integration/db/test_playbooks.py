"""The health_check, db_vacuum, db_connections and queue_deadletter playbooks against the lab.

Playbooks run through ansible-playbook with the lab inventory (values from .lab/env). Queue tests
use their own Redis keys; connection tests only touch connections they opened.
"""
import json
import time

import psycopg
import pytest

from dbq_helpers import SleepingQuery, admin_conn, backends, unique, wait_for


def reports(directory, prefix):
    return sorted(directory.glob(prefix + "-*.json"))


def load_report(directory, prefix):
    files = reports(directory, prefix)
    assert files, "no %s report in %s" % (prefix, directory)
    return json.loads(files[-1].read_text())


@pytest.fixture
def qkeys(rds):
    prefix = unique("apex-ops-pbtest")
    yield dict(queue="%s:tasks:queue" % prefix, dead="%s:tasks:dead-letter" % prefix)
    for key in rds.scan_iter(match=prefix + ":*"):
        rds.delete(key)


def test_health_check_passes_on_healthy_lab(run_playbook, qkeys, tmp_path):
    # The queue part reads this test's own (empty) keys: other suites may load the shared queue
    # while this runs. The real keys are read by test_health_check_in_check_mode.
    started = time.monotonic()
    proc = run_playbook("playbooks/health_check.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "health_check_queue_key": qkeys["queue"],
        "health_check_dead_letter_key": qkeys["dead"]})
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = load_report(tmp_path, "health_check")
    assert report["status"] in ("ok", "warning"), report
    by_name = dict((c["name"], c) for c in report["checks"])
    for path in ("/health", "/ready", "/live"):
        assert by_name["api " + path]["status"] == "ok" and by_name["api " + path]["value"] == 200
    for name in ("queue depth", "dead letters", "redis memory", "db connections", "db long-running queries",
                 "db storage", "db migrations failed", "db streaming replicas", "db replication lag"):
        assert name in by_name, name
        assert by_name[name]["status"] != "critical", by_name[name]
    assert by_name["db streaming replicas"]["value"] >= 1
    assert by_name["db connections"]["warning"] == 60 and by_name["db connections"]["critical"] == 80
    assert by_name["queue depth"]["warning"] == 50 and by_name["queue depth"]["critical"] == 100
    assert "Apex health: " in proc.stdout
    print("health_check wall time: %.2fs" % wall)


def test_health_check_critical_on_queue_backlog(run_playbook, rds, qkeys, tmp_path):
    rds.lpush(qkeys["queue"], *["tsk_backlog_%d" % i for i in range(101)])
    extra = {"apex_report_dir": str(tmp_path), "health_check_queue_key": qkeys["queue"],
             "health_check_dead_letter_key": qkeys["dead"]}
    proc = run_playbook("playbooks/health_check.yml", extra_vars=extra)
    assert proc.returncode != 0
    assert "Apex health is CRITICAL" in proc.stdout and "queue depth" in proc.stdout
    report = load_report(tmp_path, "health_check")
    assert report["status"] == "critical"
    depth = [c for c in report["checks"] if c["name"] == "queue depth"][0]
    assert depth["value"] == 101 and depth["status"] == "critical"

    # told not to fail: same verdict in the report, the play passes
    proc = run_playbook("playbooks/health_check.yml",
                        extra_vars=dict(extra, apex_report_dir=str(tmp_path / "nofail"),
                                        health_check_fail_on_critical=False))
    assert proc.returncode == 0, proc.stdout
    assert load_report(tmp_path / "nofail", "health_check")["status"] == "critical"

    # 51..100 is a warning (runbook: >50 warning, >100 critical)
    rds.ltrim(qkeys["queue"], 0, 50)
    proc = run_playbook("playbooks/health_check.yml", extra_vars=dict(extra, apex_report_dir=str(tmp_path / "warn")))
    assert proc.returncode == 0, proc.stdout
    depth = [c for c in load_report(tmp_path / "warn", "health_check")["checks"] if c["name"] == "queue depth"][0]
    assert depth["value"] == 51 and depth["status"] == "warning"


def test_health_check_thresholds_overridable(run_playbook, rds, qkeys, tmp_path):
    rds.lpush(qkeys["queue"], "tsk_a", "tsk_b", "tsk_c")
    proc = run_playbook("playbooks/health_check.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "health_check_queue_key": qkeys["queue"],
        "health_check_dead_letter_key": qkeys["dead"], "health_check_queue_depth_warning": 1,
        "health_check_queue_depth_critical": 2, "health_check_api": False, "health_check_database": False})
    assert proc.returncode != 0
    report = load_report(tmp_path, "health_check")
    assert [c["name"] for c in report["checks"] if c["status"] == "critical"] == ["queue depth"]
    assert not any(c["name"].startswith(("api", "db ")) for c in report["checks"])


def test_health_check_api_down_is_critical(run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "apex_api_url": "https://127.0.0.1:9", "health_check_api_timeout": 2,
        "health_check_queue": False, "health_check_database": False,
        "health_check_tls": False, "health_check_kubernetes": False})
    assert proc.returncode != 0
    report = load_report(tmp_path, "health_check")
    assert report["status"] == "critical"
    assert all(c["status"] == "critical" and c["value"] == -1 for c in report["checks"])


def test_db_vacuum_playbook(lab, run_playbook, tmp_path):
    with admin_conn(lab, unique("vacuum-observer")) as conn:
        before = conn.execute("SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'agents'").fetchone()
        proc = run_playbook("playbooks/db_vacuum.yml", extra_vars={"apex_report_dir": str(tmp_path),
                                                                   "db_vacuum_tables": ["agents"]})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        after = conn.execute("SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'agents'").fetchone()
    assert after == (before[0] + 1, before[1] + 1)
    report = load_report(tmp_path, "db_vacuum")
    assert report["tables"][0]["table"] == "public.agents" and report["tables"][0]["after"]["last_vacuum"]


def test_db_vacuum_playbook_bad_table_runs_nothing(lab, run_playbook, tmp_path):
    with admin_conn(lab, unique("vacuum-observer")) as conn:
        before = conn.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'agents'").fetchone()
        proc = run_playbook("playbooks/db_vacuum.yml", extra_vars={
            "apex_report_dir": str(tmp_path), "db_vacuum_tables": ["agents", "tasks; DROP TABLE agents"]})
        assert proc.returncode != 0 and "tables not found" in proc.stdout
        assert conn.execute("SELECT to_regclass('public.agents') IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'agents'").fetchone() == before


def test_db_connections_playbook(lab, run_playbook, tmp_path):
    """Check mode lists; a confirmed run cancels the stuck pg_sleep (its connection survives) and
    terminates the idle connections; a bystander connection is never touched."""
    app = unique("stuck-test")
    stuck = [admin_conn(lab, app) for _i in range(2)]
    sleep_app = unique("sleeper-test")
    sleeper = SleepingQuery(lab, sleep_app, seconds=120)
    survivor_app = unique("survivor-test")
    survivor = admin_conn(lab, survivor_app)
    for conn in stuck + [survivor]:
        conn.execute("SELECT 1")
    sleeper.start()
    try:
        wait_for(lambda: survivor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                          (sleeper.pid,)).fetchone() == ("active",), what="pg_sleep active")
        time.sleep(3.3)
        extra = {"apex_report_dir": str(tmp_path), "db_connections_application_names": [app, sleep_app],
                 "db_connections_terminate_idle_longer_than": "3s",
                 "db_connections_cancel_running_longer_than": "1s",
                 "db_connections_confirm": "terminate-connections"}
        proc = run_playbook("playbooks/db_connections.yml", extra_vars=extra, check=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(backends(survivor, app)) == 2 and sleeper.is_alive() and sleeper.error is None
        report = load_report(tmp_path, "db_connections")
        assert report["dry_run"] is True
        assert sorted(b["pid"] for b in report["terminated"]) == sorted(c.info.backend_pid for c in stuck)
        assert [b["pid"] for b in report["cancelled"]] == [sleeper.pid]

        proc = run_playbook("playbooks/db_connections.yml", extra_vars=dict(extra, apex_report_dir=str(tmp_path / "run")))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # the stuck statement was cancelled: the client got QueryCanceled and its connection lives on
        sleeper.join(10)
        assert not sleeper.is_alive(), "pg_sleep still running after the cancel"
        assert isinstance(sleeper.error, psycopg.errors.QueryCanceled), repr(sleeper.error)
        assert backends(survivor, sleep_app) == [sleeper.pid]
        assert sleeper.conn.execute("SELECT pg_backend_pid()").fetchone()[0] == sleeper.pid
        # the idle ones were terminated, the bystander was not
        assert backends(survivor, app) == []
        assert backends(survivor, survivor_app) == [survivor.info.backend_pid]
        report = load_report(tmp_path / "run", "db_connections")
        assert report["confirmed"] is True and report["dry_run"] is False
        assert len(report["terminated"]) == 2 and report["after"]["max_connections"] > 0
        assert [b["pid"] for b in report["cancelled"]] == [sleeper.pid] and report["still_present"] == []
    finally:
        sleeper.close()
        for conn in stuck + [survivor]:
            conn.close()


def test_db_connections_unconfirmed_signals_nothing(lab, run_playbook, tmp_path):
    """Without db_connections_confirm=terminate-connections the role only reports (DESIGN.md)."""
    app = unique("unconfirmed-test")
    held = [admin_conn(lab, app) for _i in range(2)]
    sleeper = SleepingQuery(lab, app, seconds=60)
    for conn in held:
        conn.execute("SELECT 1")
    sleeper.start()
    try:
        time.sleep(2.2)
        for confirm in (None, "yes"):  # absent, and anything but the exact word
            extra = {"apex_report_dir": str(tmp_path / str(confirm)), "db_connections_application_names": [app],
                     "db_connections_terminate_idle_longer_than": "2s",
                     "db_connections_cancel_running_longer_than": "1s"}
            if confirm:
                extra["db_connections_confirm"] = confirm
            proc = run_playbook("playbooks/db_connections.yml", extra_vars=extra)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "NOT CONFIRMED" in proc.stdout and "db_connections_confirm=terminate-connections" in proc.stdout
            # every connection is still there and usable; the statement was not cancelled
            pids = sorted(c.info.backend_pid for c in held)
            assert sorted(p for p in backends(held[0], app) if p != sleeper.pid) == pids
            assert sleeper.pid in backends(held[0], app)
            assert sleeper.is_alive() and sleeper.error is None
            for conn in held:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            report = load_report(tmp_path / str(confirm), "db_connections")
            assert report["confirmed"] is False and report["dry_run"] is True and report["after"] is None
            assert sorted(b["pid"] for b in report["terminated"]) == pids  # what it would terminate
            assert [b["pid"] for b in report["cancelled"]] == [sleeper.pid]
            time.sleep(2.1)  # idle again beyond 2s for the second round (the SELECT 1 reset it)
    finally:
        sleeper.close()
        for conn in held:
            conn.close()


def test_queue_deadletter_playbook(run_playbook, rds, qkeys, tmp_path):
    rds.lpush(qkeys["dead"], json.dumps({"task_id": "tsk_1", "error": "x"}), json.dumps({"task_id": "tsk_2"}),
              json.dumps({"task_id": "tsk_3"}))
    base = {"apex_report_dir": str(tmp_path), "queue_deadletter_queue_key": qkeys["queue"],
            "queue_deadletter_dead_letter_key": qkeys["dead"]}
    proc = run_playbook("playbooks/queue_deadletter.yml", extra_vars=dict(base, queue_deadletter_action="requeue",
                                                                          queue_deadletter_count=1))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rds.lrange(qkeys["queue"], 0, -1) == ["tsk_1"] and rds.llen(qkeys["dead"]) == 2

    before = rds.lrange(qkeys["dead"], 0, -1)
    proc = run_playbook("playbooks/queue_deadletter.yml", extra_vars=dict(base, queue_deadletter_action="purge"))
    assert proc.returncode != 0 and "purge-dead-letter" in proc.stdout
    assert rds.lrange(qkeys["dead"], 0, -1) == before

    proc = run_playbook("playbooks/queue_deadletter.yml", extra_vars=dict(
        base, queue_deadletter_action="purge", queue_deadletter_confirm="purge-dead-letter"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rds.exists(qkeys["dead"]) == 0 and rds.lrange(qkeys["queue"], 0, -1) == ["tsk_1"]
    saved = reports(tmp_path, "dead-letter")
    assert len(saved) == 1
    assert [i["task_id"] for i in json.loads(saved[0].read_text())["items"]] == ["tsk_3", "tsk_2"]
    report = load_report(tmp_path, "queue_deadletter")
    assert report["purged"]["saved_to"] == str(saved[0]) and report["after"]["dead_letter"] == 0


@pytest.mark.parametrize("playbook, extra", [
    ("playbooks/health_check.yml", {"health_check_fail_on_critical": False}),
    ("playbooks/db_vacuum.yml", {"db_vacuum_tables": ["events"]}),
    ("playbooks/db_connections.yml", {"db_connections_application_names": ["nobody-uses-this"]}),
    ("playbooks/queue_deadletter.yml", {"queue_deadletter_dead_letter_key": "apex-ops-leaktest:none"}),
])
def test_credentials_never_in_verbose_output(lab, run_playbook, tmp_path, playbook, extra):
    proc = run_playbook(playbook, extra_vars=dict(extra, apex_report_dir=str(tmp_path)), verbosity=3)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "<localhost> EXEC" in output or "ESTABLISH LOCAL CONNECTION" in output  # really verbose
    for name in ("PGPASSWORD", "APEX_REDIS_PASSWORD"):
        assert lab[name] and lab[name] not in output, "%s leaked in %s -vvv output" % (name, playbook)
    for report in tmp_path.glob("*.json"):
        text = report.read_text()
        assert lab["PGPASSWORD"] not in text and lab["APEX_REDIS_PASSWORD"] not in text


def test_health_check_services_down_still_reports(run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "apex_redis_port": 1, "apex_pg_port": 1, "health_check_api": False,
        "health_check_tls": False, "health_check_kubernetes": False})
    assert proc.returncode != 0 and "Apex health is CRITICAL: redis, postgresql" in proc.stdout
    report = load_report(tmp_path, "health_check")
    assert report["status"] == "critical"
    assert dict((c["name"], c["status"]) for c in report["checks"]) == {"redis": "critical", "postgresql": "critical"}


def test_health_check_in_check_mode(run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", check=True, extra_vars={
        "apex_report_dir": str(tmp_path), "health_check_fail_on_critical": False})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = dict((c["name"], c) for c in load_report(tmp_path, "health_check")["checks"])
    assert [checks["api " + p]["value"] for p in ("/health", "/ready", "/live")] == [200, 200, 200]
    assert checks["queue depth"]["detail"] == "apex:tasks:queue" and isinstance(checks["queue depth"]["value"], int)


def test_health_check_against_the_standby(lab, run_playbook, tmp_path):
    """The secondary region's view: its database is a streaming standby."""
    proc = run_playbook("playbooks/health_check.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "apex_pg_port": int(lab["APEX_PG_STANDBY_PORT"]),
        "health_check_db_expected_replicas": 0, "health_check_api": False, "health_check_queue": False})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = dict((c["name"], c) for c in load_report(tmp_path, "health_check")["checks"])
    assert checks["db standby receiver"]["value"] == "streaming" and checks["db standby receiver"]["status"] == "ok"
    assert checks["db standby replay delay"]["status"] in ("ok", "warning")
    assert checks["db streaming replicas"]["detail"].startswith("standby")
