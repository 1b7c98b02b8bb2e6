"""health_checks: the daily health check's records and judgments (thresholds: ok / warning / critical boundaries)."""
import pytest

from ansible_collections.apex.ops.plugins.module_utils import health_checks as hc
from ansible_collections.apex.ops.plugins.module_utils import health_gather

LIMITS = hc.thresholds({})


@pytest.mark.parametrize("value, expected", [
    (0, "ok"), (50, "ok"), (51, "warning"), (100, "warning"), (101, "critical"), (None, "unknown"),
])
def test_above_the_threshold_counts_not_at_it(value, expected):
    # runbook: queue depth > 50 warning, > 100 critical
    assert hc.judge_status(value, 50, 100) == expected


def test_missing_levels_never_judge():
    assert hc.judge_status(10 ** 6) == "ok"
    assert hc.judge_status(1, warning=None, critical=0) == "critical"
    assert hc.judge_status(1, warning=0, critical=None) == "warning"


def test_a_status_carried_by_the_record_wins():
    judged = hc.judge(hc.check("api /health", "api", 503, status="critical"))
    assert judged["status"] == "critical" and judged["warning"] is None and judged["critical"] is None
    assert hc.judge(hc.check("x", "g", 1000, warning=1, critical=2, status="ok"))["status"] == "ok"


def test_report_overall_status_and_counts():
    records = [hc.check("a", "g", 1, warning=5, critical=10), hc.check("b", "g", None)]
    report = hc.report(records, started="s", finished="f", report_file="/r.json")
    assert report["status"] == "warning"  # unknown counts as a warning
    assert report["counts"] == {"ok": 1, "warning": 0, "critical": 0, "unknown": 1}
    assert report["problems"] == ["b"] and report["report_file"] == "/r.json"
    records.append(hc.check("c", "g", 11, warning=5, critical=10))
    assert hc.report(records)["status"] == "critical"
    assert hc.report([])["status"] == "ok"


def test_thresholds_refuse_unknown_names_and_non_numbers():
    with pytest.raises(ValueError, match="unknown thresholds: queue_depth_warnin"):
        hc.thresholds({"queue_depth_warnin": 3})
    with pytest.raises(ValueError, match="queue_depth_warning must be a number"):
        hc.thresholds({"queue_depth_warning": "lots"})
    merged = hc.thresholds({"queue_depth_warning": "7", "k8s_nodes_not_ready_warning": None, "db_storage_warning": 70.5})
    assert merged["queue_depth_warning"] == 7 and merged["k8s_nodes_not_ready_warning"] is None
    assert merged["db_storage_warning"] == 70.5 and merged["queue_depth_critical"] == 100


# ---------------------------------------------------------------- API
def test_api_200_healthy_is_ok_and_degraded_body_is_a_warning():
    ok = hc.api_probe_check("/health", {"status": 200, "json": {"status": "healthy"}})
    assert ok["status"] == "ok" and ok["value"] == 200 and ok["detail"] == ""
    body = {"status": "degraded", "database": {"ok": False}, "redis": {"ok": True}}
    degraded = hc.api_probe_check("/health", {"status": 200, "json": body})
    assert degraded["status"] == "warning" and degraded["detail"] == "status degraded; down: database"
    ready = hc.api_probe_check("/ready", {"status": 200, "json": {"ready": False, "reasons": ["no db"]}})
    assert ready["status"] == "warning" and ready["detail"] == "not ready; no db"
    custom = hc.api_probe_check("/health", {"status": 200, "json": {"status": "Degraded"}}, ["healthy", "degraded"])
    assert custom["status"] == "ok"


def test_api_not_200_is_critical_with_the_message():
    down = hc.api_probe_check("/ready", {"status": 503, "msg": "HTTP Error 503", "json": {"status": "maintenance"}})
    assert down["status"] == "critical" and down["detail"].startswith("HTTP Error 503; status maintenance")
    refused = hc.api_probe_check("/live", {"status": -1, "msg": "x" * 300})
    assert refused["status"] == "critical" and refused["value"] == -1 and len(refused["detail"]) == 120


def test_api_without_url_is_unknown():
    [record] = hc.api_checks("", [])
    assert record["status"] == "unknown" and "health_check_api_url" in record["detail"]


# ---------------------------------------------------------------- queue, database
def test_queue_records_and_a_failed_gather_is_critical():
    facts = {"queue": {"key": "q", "depth": 101}, "dead_letter": {"key": "d", "depth": 1},
             "processing": {"total": 2, "lists": 1}, "memory": {"percent": 80, "used_human": "1M"}}
    judged = dict((c["name"], hc.judge(c)) for c in hc.queue_checks(facts, LIMITS))
    assert judged["queue depth"]["status"] == "critical"
    assert judged["dead letters"]["status"] == "warning"
    assert judged["redis memory"]["status"] == "ok"  # 80 is the warning level itself: not above it
    assert judged["tasks in flight"]["detail"] == "1 lists"
    [failed] = hc.queue_checks({"failed": True, "msg": "ConnectionError: refused"}, LIMITS)
    assert failed["name"] == "redis" and failed["status"] == "critical" and "refused" in failed["detail"]


def _db(percent=10.0, replicas=1, role="primary", standby=None):
    return {"connections": {"percent": percent, "total": 10, "max_connections": 100},
            "long_running": [{"pid": 7}], "idle_in_transaction": [],
            "server": {"database_size_bytes": 50 * 2 ** 30, "database_size": "50 GB"},
            "migrations": {"present": True, "failed": [], "latest_version": 3},
            "replication": {"role": role, "streaming_replicas": replicas, "replicas": [{}] if replicas else [],
                            "max_replay_lag_seconds": 31.23456, "max_replay_lag_bytes": 9, "standby": standby}}


def test_database_records_and_their_boundaries():
    limits = hc.thresholds({"db_expected_replicas": 1})
    judged = dict((c["name"], hc.judge(c)) for c in hc.database_checks(_db(percent=80.0), limits, "5m", "10m"))
    assert judged["db connections"]["status"] == "warning"  # > 60, not > 80
    assert judged["db long-running queries"]["status"] == "warning" and judged["db long-running queries"]["detail"] == "> 5m pids 7"
    assert judged["db storage"]["value"] == 50.0 and judged["db storage"]["status"] == "ok"
    assert judged["db replication lag"]["value"] == 31.235 and judged["db replication lag"]["status"] == "warning"
    assert judged["db streaming replicas"]["status"] == "ok"
    assert hc.judge(hc.database_checks(_db(percent=80.1), limits)[0])["status"] == "critical"
    missing = dict((c["name"], c) for c in hc.database_checks(_db(replicas=0), limits))
    assert missing["db streaming replicas"]["status"] == "critical" and "db replication lag" not in missing


def test_database_standby_and_no_volume():
    standby = {"wal_receiver": {"status": "stopped", "sender_host": "p"}, "replay_delay_seconds": None,
               "replay_lag_bytes": 0}
    records = dict((c["name"], hc.judge(c)) for c in hc.database_checks(
        _db(replicas=0, role="standby", standby=standby), hc.thresholds({"db_storage_bytes": 0})))
    assert records["db standby receiver"]["status"] == "critical"
    assert records["db standby replay delay"]["status"] == "unknown"
    assert records["db storage"]["value"] is None and records["db streaming replicas"]["status"] == "ok"


# ---------------------------------------------------------------- TLS, Kubernetes, journal
def test_tls_records():
    facts = {"expiry": {"status": "expired", "days_left": -1, "source": "endpoint"},
             "endpoint": {"verified": True, "hostname_match": False, "tls_version": "TLSv1.3"},
             "certificates": [], "cert_manager_installed": True, "drift": {"drift": True}}
    records = dict((c["name"], hc.judge(c)) for c in hc.tls_checks(facts, LIMITS, "apex-tls"))
    assert records["tls days left"]["status"] == "critical"
    assert records["tls endpoint trusted"]["status"] == "critical"
    assert records["tls certificate ready"]["detail"] == "Certificate apex-tls not found (cert-manager is installed)"
    assert records["tls served = secret"]["status"] == "warning"
    [failed] = hc.tls_checks({"msg": "KubeConfigError: no kubeconfig"}, LIMITS)
    assert failed["status"] == "critical" and failed["name"] == "tls"


def test_kubernetes_records_and_hpa_boundaries():
    facts = {"summary": {"pods_not_running": ["a", "b", "c"], "pods_total": 9, "job_pods_failed": [],
                         "max_restarts": 10, "pods_with_restarts": {"w": 10}, "nodes_not_ready": [],
                         "nodes_cordoned": [], "workloads_not_ready": []},
             "hpas": [{"name": "api", "current_replicas": 8, "max_replicas": 10, "at_max": False},
                      {"name": "worker", "current_replicas": 10, "max_replicas": 10, "at_max": True},
                      {"name": "none", "current_replicas": None, "max_replicas": 0}],
             "nodes": [{}, {}]}
    records = dict((c["name"], hc.judge(c)) for c in hc.kubernetes_checks(facts, LIMITS))
    assert records["pods not running"]["status"] == "critical"  # 3 > 2
    assert records["pod restarts"]["status"] == "warning"  # 10 is not > 10
    assert records["hpa api"]["value"] == 80.0 and records["hpa api"]["status"] == "ok"
    assert records["hpa worker"]["status"] == "critical" and records["hpa worker"]["detail"] == "10/10 AT MAX"
    assert records["hpa none"]["status"] == "unknown"
    assert records["nodes not ready"]["detail"] == "2 ready" and records["nodes not ready"]["status"] == "ok"


def test_an_interrupted_procedure_is_critical():
    [clean] = hc.journal_checks({"interrupted": None})
    assert hc.judge(clean)["status"] == "ok" and clean["detail"] == hc.NO_JOURNAL_RECORD
    [left] = hc.journal_checks({"interrupted": {"run_id": "scale-1"}, "interrupted_message": "scale-1 was interrupted"})
    assert left["name"] == "procedure interrupted" and hc.judge(left)["status"] == "critical"
    assert left["detail"] == "scale-1 was interrupted"


def test_summary_lines():
    report = hc.report([hc.check("queue depth", "queue", 3.14159, "tasks", 50, 100, "apex:tasks:queue")],
                       report_file="/r.json")
    lines = hc.summary_lines(report)
    assert lines[0] == "Apex health: OK  /r.json"
    assert lines[2].split() == ["queue", "depth", "OK", "3.14", "tasks", "50/100", "apex:tasks:queue"]


# ---------------------------------------------------------------- gathering
def test_run_all_runs_concurrently_and_turns_exceptions_into_failures():
    import threading

    barrier = threading.Barrier(3, timeout=5)  # only passes when all three run at the same time

    def job(value):
        barrier.wait()
        if value is None:
            raise RuntimeError("down")
        return value

    results, elapsed = health_gather.run_all({"a": lambda: job(1), "b": lambda: job(2), "c": lambda: job(None)})
    assert results["a"] == 1 and results["b"] == 2
    assert results["c"] == {"failed": True, "msg": "RuntimeError: down"}
    assert set(elapsed) == {"a", "b", "c"}
