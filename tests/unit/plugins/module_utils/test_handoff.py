"""The shift handoff, pure parts: the reports directory as a history, the alert sources' answers, and
handoff_report's sections (window, lock, attention points, Markdown) from fixtures."""
import datetime
import json

from ansible_collections.apex.ops.plugins.module_utils import alert_sources, handoff_report, report_history
from ansible_collections.apex.ops.plugins.module_utils.timestamps import UTC

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SINCE = NOW - datetime.timedelta(hours=24)
PARAMS = dict(prometheus_url="", alertmanager_url="", s3=dict(s3_bucket="apex-backups"), lock_name="apex-ops-lock",
              k8s=dict(namespace="apex"), queue_depth_warning=50, tls_warning_days=30)


def write(tmp_path, name, body):
    (tmp_path / name).write_text(json.dumps(body) if not isinstance(body, str) else body)


def test_reports_in_the_window_newest_first_read_only_runs_left_out(tmp_path):
    write(tmp_path, "scale-20261202T110000000001Z.json", {"status": "ok", "changed": True})
    write(tmp_path, "restore-20261202T100000000000Z.json", {"status": "failed", "error": "pg_restore exited 1"})
    write(tmp_path, "backup-20261130T100000000000Z.json", {"status": "ok"})       # before the window
    write(tmp_path, "health_check-20261202T110500000000Z.json", {"status": "ok"})  # read-only run
    write(tmp_path, "deploy-20261202T090000000000Z.json", "{not json")
    write(tmp_path, "handoff-20261202T110000000000Z.md", "# md")
    got = report_history.recent(str(tmp_path), SINCE, NOW)
    assert [(r["procedure"], r["category"], r["time"]) for r in got] == [
        ("scale", "scale", "2026-12-02T11:00:00Z"), ("restore", "restore", "2026-12-02T10:00:00Z"),
        ("deploy", "release", "2026-12-02T09:00:00Z")]
    assert got[0]["outcome"] == "ok, changed"
    assert got[1]["outcome"] == "failed: pg_restore exited 1"
    assert got[2]["outcome"].startswith("unreadable report")
    assert report_history.recent(str(tmp_path / "missing"), SINCE, NOW) == []


def test_alert_sources():
    assert alert_sources.auth_headers(token="t") == {"Authorization": "Bearer t"}
    assert alert_sources.auth_headers(username="u", password="p") == {"Authorization": "Basic dTpw"}
    assert alert_sources.auth_headers() == {}
    assert alert_sources.FIRED_QUERY % alert_sources.window_text(86400) == 'max_over_time(ALERTS{alertstate="firing"}[86400s])'
    fired = alert_sources.fired_alerts({"resultType": "vector", "result": [
        {"metric": {"__name__": "ALERTS", "alertname": "B", "alertstate": "firing", "severity": "critical"}},
        {"metric": {"alertname": "A", "alertstate": "firing"}}]})
    assert [(a["name"], a["severity"]) for a in fired] == [("A", None), ("B", "critical")]
    assert "alertstate" not in fired[1]["labels"]
    now = alert_sources.firing_now([
        {"labels": {"alertname": "X"}, "status": {"state": "suppressed"}},
        {"labels": {"alertname": "Y", "severity": "warning"}, "annotations": {"runbook": "apex.ops.y"},
         "startsAt": "2026-12-02T10:00:00Z", "status": {"state": "active"}}])
    assert [(a["name"], a["runbook"]) for a in now] == [("Y", "apex.ops.y")]


def lease(renewed, duration=60):
    return {"metadata": {"name": "apex-ops-lock", "annotations": {"apex.ops/purpose": "restore", "other": "x"}},
            "spec": {"holderIdentity": "ann@ops1/job-7", "leaseDurationSeconds": duration,
                     "acquireTime": "2026-12-02T11:00:00Z", "renewTime": renewed}}


def test_lock_absent_open_expired_unknown():
    assert handoff_report.lock_state({"lease": None}, "apex-ops-lock", "apex", NOW)["open"] is False
    held = handoff_report.lock_state({"lease": lease("2026-12-02T11:59:30Z")}, "apex-ops-lock", "apex", NOW)
    assert held["open"] and not held["expired"] and held["annotations"] == {"purpose": "restore"}
    assert held["detail"] == "held by ann@ops1/job-7 (purpose: restore)"
    stale = handoff_report.lock_state({"lease": lease("2026-12-02T11:00:00Z")}, "apex-ops-lock", "apex", NOW)
    assert stale["open"] and stale["expired"] and "not renewed for 3600s" in stale["detail"]
    assert handoff_report.lock_state({"failed": True, "msg": "x"}, "apex-ops-lock", "apex", NOW)["open"] is None


def test_build_sections_attention_and_markdown():
    gathered = {
        "kubernetes apex-primary": {"server": "https://k", "nodes": 3, "ready": 2},
        "database": {"failed": True, "msg": "OperationalError: connection refused"},
        "redis": {"queue": {"depth": 120}, "dead_letter": {"depth": 2, "sample": []}, "processing": {"total": 1},
                  "memory": {"percent": 3.0}},
        "cluster": {"lease": lease("2026-12-02T11:59:30Z"), "events": [
            {"reason": "SuccessfulRescale", "type": "Normal", "message": "New size: 7; reason: cpu",
             "involvedObject": {"kind": "HorizontalPodAutoscaler", "name": "apex-api"}, "lastTimestamp": "2026-12-02T11:30:00Z"},
            {"reason": "Pulled", "type": "Normal", "involvedObject": {"kind": "Pod", "name": "p"},
             "lastTimestamp": "2026-12-02T11:31:00Z"}]},
        "tls": {"expiry": {"days_left": 12.5, "status": "warning", "source": "endpoint"}, "endpoint": {"days_left": 12.5}},
    }
    reports = [dict(procedure="backup", category="backup", time="2026-12-02T08:00:00Z", file="/r/backup-x.json",
                    outcome="failed: S3 down")]
    report = handoff_report.build(gathered, reports, {"interrupted": False}, PARAMS, SINCE, NOW)
    access = dict((r["name"], r["status"]) for r in report["access"])
    assert access == {"kubernetes apex-primary": "ok", "database": "failed", "redis": "ok", "cluster": "ok",
                      "tls": "ok", "prometheus": "not configured", "alertmanager": "not configured"}
    assert [c["what"] for c in report["changes"]] == ["HorizontalPodAutoscaler/apex-api SuccessfulRescale",
                                                      "backup run (/r/backup-x.json)"]
    assert report["alerts"]["firing"] is None and report["alerts"]["firing_detail"] == "not configured"
    assert report["status"] == "attention"
    assert report["attention"] == [
        "no access to database: OperationalError: connection refused",
        "maintenance lock apex-ops-lock is open: held by ann@ops1/job-7 (purpose: restore)",
        "task queue at 120 (runbook warns above 50)",
        "2 dead letter(s) to investigate (queue_deadletter)",
        "TLS certificate expires in 12.5 days (cert_renew)",
        "failed run: backup run (/r/backup-x.json) - failed: S3 down"]
    text = handoff_report.markdown(report)
    assert "| database | failed | OperationalError: connection refused |" in text
    assert "Firing now: not configured" in text
    assert "apex-ops-lock: open, held by ann@ops1/job-7" in text


def test_markdown_escapes_table_cells():
    assert handoff_report._cell("a|b\nc") == "a\\|b c"
