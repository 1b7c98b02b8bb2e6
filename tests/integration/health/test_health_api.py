"""health_check's API part reads the body: a 200 saying degraded/maintenance is a warning, a 503
is critical. Driven through a private twin (tests/integration/db/private_twin.py): the lab's twin
is shared and its desired-state file belongs to the Kubernetes simulator's bridge."""
import json

import pytest

from private_twin import PrivateTwin, wait_for

API_ONLY = {"health_check_queue": False, "health_check_database": False, "health_check_tls": False,
            "health_check_kubernetes": False}


def report(directory):
    files = sorted(directory.glob("health_check-*.json"))
    assert files, "no health_check report in %s" % directory
    return json.loads(files[-1].read_text())


@pytest.fixture(scope="module")
def twin(lab, tmp_path_factory):
    with PrivateTwin(lab, tmp_path_factory.mktemp("health-twin"), "health") as t:
        yield t


@pytest.fixture
def api_check(run_playbook, twin, lab, tmp_path):
    counter = {"n": 0}

    def _run(**extra):
        counter["n"] += 1
        out = tmp_path / str(counter["n"])
        proc = run_playbook("playbooks/health_check.yml", extra_vars=dict(
            API_ONLY, apex_report_dir=str(out), apex_api_url=twin.url, apex_ca_file=lab["APEX_CA_FILE"], **extra))
        doc = report(out)
        return proc, doc, dict((c["name"], c) for c in doc["checks"])

    yield _run
    # leave the twin healthy for the next test
    twin.set_state()
    twin.request("POST", "/admin/circuit-breaker/reset", body={}, admin=True)
    wait_for(lambda: twin.request("GET", "/health")[2].get("status") == "healthy", 5, what="twin healthy again")


def test_healthy_twin_is_ok(api_check):
    proc, doc, checks = api_check()
    assert proc.returncode == 0, proc.stdout
    assert doc["status"] == "ok", doc
    assert [checks["api " + p]["status"] for p in ("/health", "/ready", "/live")] == ["ok", "ok", "ok"]


def test_degraded_200_is_a_warning(api_check, twin):
    status, _h, body = twin.request("POST", "/admin/circuit-breaker/trip", body={"provider": "openai"}, admin=True)
    assert status == 200, body
    status, _h, body = twin.request("GET", "/health")
    assert (status, body["status"]) == (200, "degraded")  # the case a status-code check misses
    proc, doc, checks = api_check()
    assert proc.returncode == 0, proc.stdout  # a warning does not fail the play
    assert doc["status"] == "warning"
    health = checks["api /health"]
    assert health["status"] == "warning" and health["value"] == 200 and "status degraded" in health["detail"]
    assert checks["api /ready"]["status"] == "ok" and checks["api /live"]["status"] == "ok"

    # with "degraded" accepted, the same twin is ok: the verdict really comes from the body
    proc, doc, checks = api_check(health_check_api_ok_statuses=["healthy", "degraded", "alive"])
    assert checks["api /health"]["status"] == "ok", checks["api /health"]


def test_maintenance_mode(api_check, twin):
    twin.set_state(maintenance_mode=True)
    assert twin.request("GET", "/health")[2]["status"] == "maintenance"
    proc, doc, checks = api_check()
    assert proc.returncode != 0 and "Apex health is CRITICAL: api /ready" in proc.stdout
    assert doc["status"] == "critical"
    health, ready = checks["api /health"], checks["api /ready"]
    assert health["value"] == 200 and health["status"] == "warning" and "status maintenance" in health["detail"]
    assert ready["value"] == 503 and ready["status"] == "critical"  # 503 stays critical
    assert checks["api /live"]["status"] == "ok"


def test_health_503_is_critical(api_check, twin):
    # no ready API replica: what an ingress answers with no endpoints (docs/twin.md)
    twin.set_state(api_ready_replicas=0)
    assert twin.request("GET", "/health")[0] == 503
    proc, doc, checks = api_check()
    assert proc.returncode != 0
    assert checks["api /health"]["value"] == 503 and checks["api /health"]["status"] == "critical"
    assert checks["api /ready"]["status"] == "critical" and checks["api /live"]["status"] == "ok"
    assert doc["status"] == "critical"
