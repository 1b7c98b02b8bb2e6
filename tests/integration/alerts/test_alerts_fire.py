"""Two more of the six alerts fire for real in the lab's Prometheus and reach Alertmanager: the circuit
breaker tripped on the twin, and real connections to the lab primary above 80 % of max_connections.
(The queue backlog and resource exhaustion go the whole way to their responses in
test_eda_end_to_end.py.)"""
import json
import ssl
import time
import urllib.parse
import urllib.request

import pytest


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())


def _firing(lab, name):
    query = 'ALERTS{alertname="%s", alertstate="firing"}' % name
    result = _get_json("%s/api/v1/query?%s" % (lab["APEX_PROMETHEUS_URL"], urllib.parse.urlencode({"query": query})))
    return result["data"]["result"]


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


def _admin(lab, action):
    req = urllib.request.Request(lab["APEX_API_URL"] + "/admin/circuit-breaker/" + action, method="POST",
                                 data=json.dumps({"provider": "openai"}).encode(),
                                 headers={"Authorization": "Bearer " + lab["APEX_ADMIN_TOKEN"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5, context=ssl.create_default_context(cafile=lab["APEX_CA_FILE"])) as resp:  # noqa: S310
        return json.loads(resp.read())


def test_circuit_breaker_open_fires_and_clears(lab):
    assert not _firing(lab, "ApexCircuitBreakerOpen"), "the breaker alert fires before the test"
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
