"""The four alert responses against real faults in the lab, each action asserted where it lands: the worker's and
the API's Deployments (and what the twin then runs), the API's replicas, PostgreSQL's sessions, the twin's breaker.

One playbook run per response asserts several outcomes (the breaker needs two: refused, then allowed)."""
import json
import threading
import time
import uuid

POOL = "APEX__DATABASE__MAX_CONNECTIONS"


def _run(run_playbook, name, report_dir, extra):
    extra = dict(extra, apex_report_dir=str(report_dir), alertname=name)  # an alert label rides along
    return run_playbook("playbooks/%s.yml" % name, extra_vars=extra)


def _wait_sessions(pg_admin, application, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        rows = pg_admin.execute("SELECT pid, state FROM pg_stat_activity WHERE application_name = %s",
                                (application,)).fetchall()
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_task_failure_provider_outage_lowers_concurrency_and_forces_the_fallback(
        run_playbook, faults, cluster, twin, report_dir, read_report, lab):
    marker = "provider openai returned an error: 503 Service Unavailable [%s]" % uuid.uuid4().hex[:8]
    faults.provider_status("openai", "major")
    ids = [faults.submit({"fail": True, "error": marker, "provider": "openai"}) for dummy in range(3)]
    for task_id in ids:
        faults.wait_task(task_id, "failed")

    proc = _run(run_playbook, "alert_task_failure", report_dir,
                {"alert_task_failure_worker_concurrency": 1, "alert_task_failure_fallback_provider": "anthropic"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = read_report(report_dir, "alert_task_failure")

    # diagnosis: the failed tasks (runbook query), their error lines in the worker's pod logs, the provider page
    failed = dict((row["task_id"], row) for row in report["diagnosis"]["failed_tasks"])
    assert set(ids) <= set(failed) and all(failed[i]["error_message"] == marker for i in ids)
    assert all(failed[i]["provider"] == "openai" and failed[i]["attempts"] == 3 for i in ids)
    lines = [line for entry in report["diagnosis"]["error_lines"] for line in entry["lines"]]
    assert any(marker in line for line in lines)
    assert report["diagnosis"]["providers"]["openai"]["healthy"] is False
    outage = [c for c in report["causes"] if c["cause"] == "LLM provider outage"]
    assert outage and "Enable the fallback provider" in outage[0]["action"]
    assert any("failed task(s) on openai" in e for e in outage[0]["evidence"])

    # actions: on the worker Deployment, and what the twin runs after the rollout
    env = cluster.env("apex-worker")
    assert env["APEX__WORKER__CONCURRENCY"] == "1" and env["APEX__ROUTING__FORCE_PROVIDER"] == "anthropic"
    twin.wait_for("concurrency 1 and provider anthropic",
                  lambda h: h["worker"]["concurrency"] == 1 and h["force_provider"] == "anthropic")
    assert report["status"] == "ok" and report["refused"] == []


def test_high_latency_slow_statement_scales_the_api_and_raises_its_pool(
        run_playbook, pg, pg_admin, cluster, seeded_counts, kube, twin, report_dir, read_report):
    pg("apex-api").execute("SELECT pg_sleep(0.6)")  # a finished slow statement: pg_stat_statements has it
    slow = pg("apex-api")
    sleeper = threading.Thread(target=lambda: _swallow(slow.execute, "SELECT pg_sleep(60)"), daemon=True)
    sleeper.start()
    _wait_sessions(pg_admin, "apex-api", lambda rows: any(r[1] == "active" for r in rows))

    # 4 x 11 + 5 workers x 10 = 94 connections fit the lab's max_connections 100 - 3 reserved
    proc = _run(run_playbook, "alert_high_latency", report_dir,
                {"alert_high_latency_api_replicas": 4, "alert_high_latency_api_max_connections": 11,
                 "alert_high_latency_running_longer_than": "1s"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = read_report(report_dir, "alert_high_latency")

    slow_cause = [c for c in report["causes"] if c["cause"] == "Slow database queries"]
    assert slow_cause and any("pg_sleep(60)" in e for e in slow_cause[0]["evidence"])
    assert any("pg_sleep(0.6)" in e or "pg_sleep($1)" in e for e in slow_cause[0]["evidence"])  # from pg_stat_statements
    assert report["diagnosis"]["statements"]["available"] is True
    assert report["diagnosis"]["redis_latency"]["samples"] == 20 and report["diagnosis"]["redis_latency"]["avg_ms"] > 0
    assert report["diagnosis"]["metrics_available"] and report["diagnosis"]["pods"]

    assert kube.replicas("apex-api") == 4 and report["actions"]["scaled_to"] == 4
    assert cluster.env("apex-api")[POOL] == "11"
    twin.wait_for("an API pool of 11", lambda h: h["database"]["pool"]["max"] == 11)


def test_db_connections_terminates_confirmed_idle_sessions_lowers_pools_refuses_lowering_max(
        run_playbook, pg, pg_admin, cluster, twin, report_dir, read_report):
    held = [pg("alert-test-idle") for dummy in range(80)]
    held[-1].execute("BEGIN")
    held[-1].execute("SELECT 1")  # idle in transaction
    bystander = pg("alert-test-bystander")
    bystander.execute("SELECT 1")
    max_before = pg_admin.execute("SELECT setting, pending_restart FROM pg_settings WHERE name = 'max_connections'").fetchone()
    time.sleep(1.1)  # the sessions must be idle longer than the limit below (1s); nothing to observe meanwhile

    proc = _run(run_playbook, "alert_db_connections", report_dir,
                {"alert_db_connections_idle_longer_than": "1s", "alert_db_connections_terminate_idle": True,
                 "alert_db_connections_confirm": "terminate-connections",
                 "alert_db_connections_application_names": ["alert-test-idle"],
                 "alert_db_connections_pool_sizes": {"api": 8, "worker": 5},
                 "alert_db_connections_max_connections": 50})
    # lowering max_connections is refused: the run fails, after the safe actions and the report
    assert proc.returncode != 0 and "max_connections 50 would lower it" in proc.stdout
    report = read_report(report_dir, "alert_db_connections")
    assert report["status"] == "refused"

    findings = report["diagnosis"]["findings"]
    assert findings["by_application"]["alert-test-idle"] == 80 and findings["percent"] > 80
    causes = dict((c["cause"], c) for c in report["causes"])
    assert "Connections above 80% of max_connections" in causes and "Sessions idle in transaction" in causes
    assert "One application holds most connections" in causes

    terminated = report["actions"]["terminate"]
    assert terminated["confirmed"] and len(terminated["backends"]) == 80 and terminated["still_present"] == []
    assert _wait_sessions(pg_admin, "alert-test-idle", lambda rows: not rows) == []
    assert len(_wait_sessions(pg_admin, "alert-test-bystander", bool)) == 1
    assert bystander.execute("SELECT 1").fetchone() == (1,)

    assert cluster.env("apex-api")[POOL] == "8" and cluster.env("apex-worker")[POOL] == "5"
    twin.wait_for("an API pool of 8", lambda h: h["database"]["pool"]["max"] == 8)
    assert pg_admin.execute("SELECT setting, pending_restart FROM pg_settings WHERE name = 'max_connections'"
                            ).fetchone() == max_before


def test_circuit_breaker_reset_refused_during_the_outage_then_done_once_healthy(
        run_playbook, faults, cluster, twin, report_dir, read_report, lab):
    faults.provider_status("openai", "major")
    faults.trip("openai")
    proc = _run(run_playbook, "alert_circuit_breaker", report_dir,
                {"alert_circuit_breaker_reset": True, "alert_circuit_breaker_switch_provider": "anthropic",
                 "alert_circuit_breaker_failure_threshold": 10})
    assert proc.returncode != 0 and "provider openai is not healthy" in proc.stdout
    report = read_report(report_dir, "alert_circuit_breaker")
    assert report["status"] == "refused" and report["actions"]["reset"] == "refused"
    assert report["diagnosis"]["circuit_breaker"]["state"] == "open"
    assert report["diagnosis"]["circuit_breaker"]["provider"] == "openai"
    assert report["causes"][0]["cause"] == "LLM provider outage"
    lines = [line for entry in report["diagnosis"]["logs"] for line in entry["lines"]]
    assert any("circuit_breaker opened" in line for line in lines)
    # the breaker stayed open; the switch and the threshold (safe) were applied
    assert twin.health()["circuit_breaker"]["state"] == "open"
    assert cluster.env("apex-worker")["APEX__ROUTING__FORCE_PROVIDER"] == "anthropic"
    assert cluster.env("apex-api")["APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD"] == "10"
    twin.wait_for("provider anthropic forced", lambda h: h["force_provider"] == "anthropic")

    faults.provider_status("openai", "none")
    for old in report_dir.iterdir():
        old.unlink()
    again = _run(run_playbook, "alert_circuit_breaker", report_dir, {"alert_circuit_breaker_reset": True})
    assert again.returncode == 0, again.stdout[-3000:]
    report = read_report(report_dir, "alert_circuit_breaker")
    assert report["actions"]["reset"] == "reset" and report["actions"]["circuit_breaker_after"]["state"] == "closed"
    assert twin.health()["circuit_breaker"]["state"] == "closed"

    token = lab["APEX_ADMIN_TOKEN"]
    assert token not in proc.stdout + proc.stderr + again.stdout + again.stderr
    assert token not in json.dumps(report)


def _swallow(call, *args):
    """Run ``call``; the statement is cancelled at teardown, which raises in this thread."""
    try:
        call(*args)
    except Exception:  # pylint: disable=broad-except
        pass
