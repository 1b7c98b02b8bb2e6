"""Four of the six alerts fire for real in the lab's Prometheus and reach Alertmanager: the circuit
breaker tripped on the twin, real connections to the lab primary above 80 % of max_connections, tasks
that fail for good, and API requests slower than 2 s.
(The queue backlog and resource exhaustion go the whole way to their responses in
test_eda_end_to_end.py.)"""
import json
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEAD_LETTER_KEY = "apex:tasks:dead-letter"


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())


def _firing(lab, name):
    """The rule manager's firing instances of alert ``name`` (``/api/v1/alerts``: its state now; the ALERTS
    series can still answer within the 5m lookback after an alert ended), as ``[{"metric": labels}]``."""
    alerts = _get_json("%s/api/v1/alerts" % lab["APEX_PROMETHEUS_URL"])["data"]["alerts"]
    return [{"metric": a["labels"]} for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]


def _in_alertmanager(lab, name):
    return _get_json(lab["APEX_ALERTMANAGER_URL"] + "/api/v2/alerts?filter=alertname%%3D%%22%s%%22" % name)


def _wait(check, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("timed out after %ss waiting for %s; last seen: %r" % (timeout, what, last))


API_SERIES = ("apex_tasks_failed_total", "apex_tasks_completed_total", "apex_http_request_duration_seconds_bucket")


def _forget(lab, *names):
    """Drop the series' history from the lab Prometheus (its admin API, lab only): the rules on them see no
    data and their alerts end at the next evaluation - before the test (another test's failing tasks or slow
    requests in the 5m windows) and after it (so its own do not fire on into later tests)."""
    query = urllib.parse.urlencode([("match[]", name) for name in names])
    req = urllib.request.Request("%s/api/v1/admin/tsdb/delete_series?%s" % (lab["APEX_PROMETHEUS_URL"], query),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
        assert resp.status == 204


def _quiet(lab, *alerts):
    _wait(lambda: not any(_firing(lab, name) for name in alerts), 30, "%s quiet" % ", ".join(alerts))


def _delete_tasks(lab, task_ids):
    import psycopg

    with psycopg.connect(lab["APEX_PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute("DELETE FROM events WHERE task_id = ANY(%s)", (task_ids,))
        conn.execute("DELETE FROM tasks WHERE task_id = ANY(%s)", (task_ids,))


def _admin(lab, action):
    req = urllib.request.Request(lab["APEX_API_URL"] + "/admin/circuit-breaker/" + action, method="POST",
                                 data=json.dumps({"provider": "openai"}).encode(),
                                 headers={"Authorization": "Bearer " + lab["APEX_ADMIN_TOKEN"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5, context=ssl.create_default_context(cafile=lab["APEX_CA_FILE"])) as resp:  # noqa: S310
        return json.loads(resp.read())


def test_circuit_breaker_open_fires_and_clears(lab):
    # closed first (a test before may have left it open), and Prometheus has seen it closed
    _admin(lab, "reset")
    _wait(lambda: not _firing(lab, "ApexCircuitBreakerOpen"), 30, "the breaker alert quiet before the test")
    _admin(lab, "trip")
    try:
        firing = _wait(lambda: _firing(lab, "ApexCircuitBreakerOpen"), 30, "ApexCircuitBreakerOpen firing")
        assert firing[0]["metric"]["severity"] == "P2"
        alerts = _wait(lambda: _in_alertmanager(lab, "ApexCircuitBreakerOpen"), 15, "the alert in Alertmanager")
        assert alerts[0]["annotations"]["runbook"] == "apex.ops.alert_circuit_breaker"
        assert {r["name"] for r in alerts[0]["receivers"]} == {"apex-eda", "apex-pager"}
    finally:
        _admin(lab, "reset")
    _wait(lambda: not _firing(lab, "ApexCircuitBreakerOpen"), 30, "the alert to clear after the reset")


@pytest.fixture
def sessions(lab):
    """Real client sessions on the lab primary (closed afterwards)."""
    import psycopg

    opened = []
    yield lambda n: opened.extend(psycopg.connect(lab["APEX_PG_DSN"], application_name="alert-test")
                                  for _i in range(n))
    for conn in opened:
        conn.close()
    # leave the lab quiet for the next test: the alert resolves at the next scrape and evaluation
    _wait(lambda: not _firing(lab, "ApexDatabaseConnectionsHigh"), 30, "ApexDatabaseConnectionsHigh to clear")


def test_database_connections_high_fires_on_real_sessions(lab, sessions):
    import psycopg

    assert not _firing(lab, "ApexDatabaseConnectionsHigh")
    with psycopg.connect(lab["APEX_PG_ADMIN_DSN"]) as admin:
        max_connections = int(admin.execute("SHOW max_connections").fetchone()[0])
        in_use = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0]
    # just over 80 % of max_connections, counting the sessions already there and this check's own
    sessions(int(max_connections * 0.8) + 2 - in_use)
    firing = _wait(lambda: _firing(lab, "ApexDatabaseConnectionsHigh"), 30, "ApexDatabaseConnectionsHigh firing")
    # the lab exporter is the instance (postgres_exporter in production)
    assert firing[0]["metric"]["severity"] == "P3"
    assert firing[0]["metric"]["instance"] == lab["APEX_EXPORTER_URL"].split("//", 1)[1]
    alerts = _wait(lambda: _in_alertmanager(lab, "ApexDatabaseConnectionsHigh"), 15, "the alert in Alertmanager")
    assert alerts[0]["annotations"]["runbook"] == "apex.ops.alert_db_connections"


def _loadgen(lab_process_env, *args):
    proc = subprocess.run([sys.executable, "-m", "twin", "loadgen"] + list(args), capture_output=True, text=True,
                          timeout=120, check=False, cwd=str(ROOT),
                          env=dict(lab_process_env, PYTHONPATH=str(ROOT / "tests" / "lab")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _api_image(lab_process_env, image):
    subprocess.run(["kubectl", "--context", "apex-primary", "-n", "apex", "set", "image", "deployment/apex-api",
                    "api=%s" % image], capture_output=True, text=True, env=lab_process_env, timeout=60, check=True)


def test_task_failure_rate_and_latency_fire_from_real_traffic(lab, lab_process_env, cluster, twin, rds):
    """The two alerts on the API's own metrics, from real traffic: tasks that fail for good (each retried to
    its last attempt by the twin's workers, then dead-lettered) raise the failure rate, and an API image whose
    requests take 3 s raises the P95. Put back afterwards: the image (``cluster``), the breaker the failures
    open, the dead letters and task rows this test made."""
    _forget(lab, *API_SERIES)
    _quiet(lab, "ApexHighTaskFailureRate", "ApexHighLatency")
    dead_before = rds.llen(DEAD_LETTER_KEY)
    image = cluster.image("apex-api")
    _api_image(lab_process_env, "%s-stalled" % image)
    twin.wait_for("the stalled image served", lambda h: str(h.get("version", "")).endswith("-stalled"), timeout=30)
    sent = 0
    try:
        deadline = time.monotonic() + 90
        while not (_firing(lab, "ApexHighTaskFailureRate") and _firing(lab, "ApexHighLatency")):
            assert time.monotonic() < deadline, "both alerts should fire within 90 s of failing, slow traffic " \
                "(%d tasks sent); firing: failure rate %s, latency %s" % (
                    sent, bool(_firing(lab, "ApexHighTaskFailureRate")), bool(_firing(lab, "ApexHighLatency")))
            # every task asks to fail; every request takes 3 s (16 at a time)
            sent += _loadgen(lab_process_env, "--rate", "5", "--duration", "2", "--concurrency", "16",
                             "--fail-ratio", "1", "--timeout", "10")["accepted"]
        latency = _firing(lab, "ApexHighLatency")[0]["metric"]
        assert latency["severity"] == "P3"
        assert {a["metric"]["severity"] for a in _firing(lab, "ApexHighTaskFailureRate")} >= {"P3"}
        alerts = _wait(lambda: _in_alertmanager(lab, "ApexHighTaskFailureRate"), 15, "the failure-rate alert routed")
        assert alerts[0]["annotations"]["runbook"] == "apex.ops.alert_task_failure"
        alerts = _wait(lambda: _in_alertmanager(lab, "ApexHighLatency"), 15, "the latency alert routed")
        assert alerts[0]["annotations"]["runbook"] == "apex.ops.alert_high_latency"
    finally:
        _api_image(lab_process_env, image)
        # every task of this test reaches its last attempt (dead letter), then the lab is as before it
        _wait(lambda: rds.llen(DEAD_LETTER_KEY) >= dead_before + sent, 120, "this test's tasks dead-lettered")
        mine = [json.loads(e)["task_id"] for e in rds.lrange(DEAD_LETTER_KEY, 0, rds.llen(DEAD_LETTER_KEY) - dead_before - 1)]
        rds.ltrim(DEAD_LETTER_KEY, len(mine), -1)
        _delete_tasks(lab, mine)
        _admin(lab, "reset")
        _forget(lab, *API_SERIES)
        _quiet(lab, "ApexHighTaskFailureRate", "ApexHighLatency", "ApexCircuitBreakerOpen")
