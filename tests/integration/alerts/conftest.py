"""Fixtures for the alert response playbooks (alert_task_failure, alert_high_latency, alert_db_connections,
alert_circuit_breaker) against the lab: a real fault is induced (failing tasks, a provider outage on the twin's
status pages, a tripped breaker, a slow statement, idle sessions), the playbook runs, and the outcome is read in
the cluster, the database and the twin.

The shared Deployments are put back after every test by the rollout tests' ``cluster`` fixture (loaded from
that conftest, not copied); the twin's provider pages and breaker are put back here."""
import importlib.util
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "rollout_fixtures", Path(__file__).resolve().parents[1] / "rollout" / "conftest.py")
_rollout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rollout)

# The same fixtures as the rollout tests (one definition): cluster put back after each test, /health reads.
kube = _rollout.kube
seeded_templates = _rollout.seeded_templates
cluster = _rollout.cluster
twin = _rollout.twin
report_dir = _rollout.report_dir
read_report = _rollout.read_report
PROVIDERS = ("openai", "anthropic")


@pytest.fixture
def seeded_counts(cluster, kube):
    """Replicas and HPA bounds back at the seeded values after the test (before ``cluster`` puts the templates
    back, which expects the replicas it found)."""
    cpu = dict((name, kube.hpa_bounds(name)[2]) for name in ("apex-api", "apex-worker"))
    yield
    kube.restore_seeded(cpu)


class TwinAdmin(object):
    """The lab's fault knobs on the twin: provider status pages, the breaker, task submission."""

    def __init__(self, lab):
        self.url = lab["APEX_API_URL"].rstrip("/")
        self.status_url = lab["APEX_PROVIDER_STATUS_URL"].rstrip("/")
        self.token = lab["APEX_ADMIN_TOKEN"]
        self.context = ssl.create_default_context(cafile=lab["APEX_CA_FILE"])

    def call(self, url, body=None, admin=False):
        headers = {"Content-Type": "application/json"}
        if admin:
            headers["Authorization"] = "Bearer " + self.token
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError("%s answered %s: %s" % (url, exc.code, exc.read()[:300]))

    def provider_status(self, provider, indicator):
        return self.call("%s/%s" % (self.status_url, provider), {"indicator": indicator}, admin=True)

    def trip(self, provider):
        return self.call(self.url + "/admin/circuit-breaker/trip", {"provider": provider}, admin=True)

    def reset(self):
        return self.call(self.url + "/admin/circuit-breaker/reset", {}, admin=True)

    def submit(self, payload):
        return self.call(self.url + "/api/v1/tasks", {"payload": payload})["task_id"]

    def task(self, task_id):
        return self.call(self.url + "/api/v1/tasks/" + task_id)

    def wait_task(self, task_id, status, timeout=20):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.task(task_id)
            if last.get("status") == status:
                return last
            time.sleep(0.1)
        raise AssertionError("task %s never became %s; last: %s" % (task_id, status, last))


@pytest.fixture
def faults(lab):
    """The twin's knobs; every provider page back to healthy and the breaker closed afterwards."""
    admin = TwinAdmin(lab)
    yield admin
    for provider in PROVIDERS:
        admin.provider_status(provider, "none")
    admin.reset()


@pytest.fixture
def pg(lab, pg_admin):
    """psycopg connections of the test, as the application role; their backends are terminated afterwards
    (a statement still running in a thread included), then the clients closed."""
    import psycopg

    opened = []

    def _connect(application_name, autocommit=True):
        conn = psycopg.connect(lab["APEX_PG_DSN"], application_name=application_name, autocommit=autocommit)
        opened.append((conn, conn.info.backend_pid))
        return conn

    yield _connect
    pg_admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", ([pid for dummy, pid in opened],))
    for conn, dummy in opened:
        conn.close()


@pytest.fixture
def pg_admin(lab):
    import psycopg

    conn = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], autocommit=True, application_name="alert-test-observer")
    yield conn
    conn.close()
