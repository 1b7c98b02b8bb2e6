"""The handoff playbook against the lab: one run after the test has made things to report - a worker
scale (through the scale playbook: a report and the Deployment controller's event), an open
maintenance lock (a Lease), a dead letter (on the test's own keys) - asserting what the handoff says
about each, the certificate's days left against the certificate the API serves, and that the run
changed nothing (the Lease is untouched: the handoff never takes the lock).

Prometheus and Alertmanager: the test serves their two API answers from a local stand-in (bearer
token required), so the parsing and the auth header are exercised whatever the lab runs."""
import datetime
import json
import os
import socket
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import unquote_plus, urlparse

import pytest

NS = "apex"
LEASE = "apex-ops-lock"
TOKEN = "handoff-test-token"
FIRING = [{"labels": {"alertname": "ApexTaskQueueBacklog", "severity": "warning"},
           "annotations": {"summary": "queue above 100", "runbook": "apex.ops.alert_queue_backlog"},
           "startsAt": "2026-12-02T10:00:00Z", "status": {"state": "active"}}]
FIRED = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"alertname": "ApexHighLatency", "alertstate": "firing", "severity": "warning"}, "value": [0, "1"]}]}}


def kubectl(lab, *args, stdin=None):
    proc = subprocess.run(["kubectl", "--context", "apex-primary", "-n", NS] + list(args), input=stdin,
                          capture_output=True, text=True, env=dict(os.environ, **lab),
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class AlertStandIn(BaseHTTPRequestHandler):
    seen = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        AlertStandIn.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            self.send_response(401)
            self.end_headers()
            return
        path = urlparse(self.path).path
        body = FIRING if path == "/api/v2/alerts" else FIRED if path == "/api/v1/query" else None
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def do_POST(self):  # noqa: N802 - Prometheus' query API is asked with a form POST
        form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.path = "%s?%s" % (self.path, unquote_plus(form))  # recorded as a GET's query would be
        self.do_GET()

    def log_message(self, *args):
        pass


def served_days_left(api_url, ca_file):
    from cryptography import x509

    url = urlparse(api_url)
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=url.hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
    return (not_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400.0


@pytest.fixture(scope="module")
def redis_client(lab):
    import redis

    client = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                         password=lab["APEX_REDIS_PASSWORD"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def handoff(lab, run_playbook, redis_client, tmp_path_factory):
    rds = redis_client
    reports = tmp_path_factory.mktemp("handoff-reports")
    prefix = "test-handoff-%s" % uuid.uuid4().hex[:8]
    server = HTTPServer(("127.0.0.1", 0), AlertStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stand_in = "http://127.0.0.1:%d" % server.server_address[1]
    holder = "oncall@test-host/handoff-%s" % prefix
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": LEASE, "namespace": NS,
                          "annotations": {"apex.ops/purpose": "handoff test", "apex.ops/playbook": "scale"}},
             "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                      "acquireTime": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                      "renewTime": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
    try:
        scaled = run_playbook("playbooks/scale.yml", {"scale_component": "worker", "scale_replicas": 6,
                                                      "scale_report_dir": str(reports)})
        assert scaled.returncode == 0, scaled.stdout[-3000:]
        kubectl(lab, "apply", "-f", "-", stdin=json.dumps(lease))
        version = json.loads(kubectl(lab, "get", "lease", LEASE, "-o", "json"))["metadata"]["resourceVersion"]
        rds.rpush(prefix + ":dead-letter", json.dumps({"id": "t-1", "error": "poisoned"}))
        proc = run_playbook("playbooks/handoff.yml", {
            "apex_report_dir": str(reports), "handoff_queue_key": prefix + ":queue",
            "handoff_dead_letter_key": prefix + ":dead-letter", "handoff_prometheus_url": stand_in,
            "handoff_alertmanager_url": stand_in, "apex_prometheus_token": TOKEN})
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        after = json.loads(kubectl(lab, "get", "lease", LEASE, "-o", "json"))["metadata"]["resourceVersion"]
        json_file = sorted(reports.glob("handoff-*.json"))[-1]
        yield dict(report=json.loads(json_file.read_text()), markdown=json_file.with_suffix(".md").read_text(),
                   holder=holder, lease_versions=(version, after), stdout=proc.stdout, lab=lab)
    finally:
        server.shutdown()
        rds.delete(prefix + ":dead-letter")
        subprocess.run(["kubectl", "--context", "apex-primary", "-n", NS, "delete", "lease", LEASE, "--ignore-not-found"],
                       env=dict(os.environ, **lab), capture_output=True, timeout=60, check=False)
        kubectl(lab, "scale", "deployment/apex-worker", "--replicas=5")
        kubectl(lab, "rollout", "status", "deployment/apex-worker", "--timeout=60s")


def test_access_rows(handoff):
    rows = dict((r["name"], r) for r in handoff["report"]["access"])
    for name in ("kubernetes apex-primary", "kubernetes apex-secondary", "database", "redis", "s3", "route53", "tls",
                 "cluster", "prometheus", "alertmanager", "helm"):
        assert rows[name]["status"] == "ok", rows[name]
    assert "3 node(s), 3 Ready" in rows["kubernetes apex-secondary"]["detail"]
    assert handoff["lab"]["APEX_ROUTE53_ZONE_ID"] in rows["route53"]["detail"]
    assert "| kubernetes apex-primary | ok |" in handoff["markdown"]


def test_the_scale_done_before_shows_up_from_the_report_and_the_cluster(handoff):
    changes = handoff["report"]["changes"]
    from_report = [c for c in changes if c["source"] == "report" and c["what"].startswith("scale run")]
    assert len(from_report) == 1 and from_report[0]["outcome"] == "ok, changed", from_report
    events = [c for c in changes if c["category"] == "scale" and c["source"] == "kubernetes"
              and c["what"] == "Deployment/apex-worker ScalingReplicaSet" and "from 5 to 6" in c["outcome"]]
    assert events, changes
    assert "from 5 to 6" in handoff["markdown"]


def test_the_open_lock_is_reported_and_left_untouched(handoff):
    lock = handoff["report"]["lock"]
    assert lock["open"] is True and lock["holder"] == handoff["holder"] and lock["expired"] is False
    assert lock["annotations"] == {"purpose": "handoff test", "playbook": "scale"}
    assert any("maintenance lock apex-ops-lock is open" in a for a in handoff["report"]["attention"])
    assert handoff["holder"] in handoff["markdown"]
    before, after = handoff["lease_versions"]
    assert before == after  # read, never taken or renewed


def test_certificate_days_match_the_served_certificate(handoff):
    cert = handoff["report"]["certificate"]
    served = served_days_left(handoff["lab"]["APEX_API_URL"], handoff["lab"]["APEX_CA_FILE"])
    assert abs(cert["endpoint_days_left"] - served) < 0.05, (cert, served)
    assert cert["days_left"] <= cert["endpoint_days_left"] + 0.001


def test_queue_dead_letters_and_alerts(handoff):
    report = handoff["report"]
    assert report["queue"]["dead_letters"] == 1 and report["queue"]["depth"] == 0
    assert report["queue"]["dead_letter_sample"][0]["id"] == "t-1"
    assert [a["name"] for a in report["alerts"]["firing"]] == ["ApexTaskQueueBacklog"]
    assert report["alerts"]["firing"][0]["runbook"] == "apex.ops.alert_queue_backlog"
    assert [a["name"] for a in report["alerts"]["fired"]] == ["ApexHighLatency"]
    assert all(auth == "Bearer " + TOKEN for dummy, auth in AlertStandIn.seen)
    assert any('ALERTS{alertstate="firing"}' in json.dumps(path) or "ALERTS" in path for path, dummy in AlertStandIn.seen)
    assert report["status"] == "attention"
    assert "ApexTaskQueueBacklog (warning, since 2026-12-02T10:00:00Z)" in handoff["markdown"]
    assert TOKEN not in handoff["stdout"] and TOKEN not in handoff["markdown"]
