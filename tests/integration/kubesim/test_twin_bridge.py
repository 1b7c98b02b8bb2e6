"""The twin bridge: the primary cluster's apex namespace drives $APEX_TWIN_STATE, and so the
Apex twin's real HTTPS answers.

These tests act on the shared ``apex`` namespace and restore what they change (in ``finally``),
then wait for the twin to be healthy again. Against a private simulator
(``KUBESIM_PRIVATE=1``) a private twin ``serve`` reads the private state file."""
import base64
import contextlib
import http.client
import json
import os
import shutil
import ssl
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest


@pytest.fixture(scope="module")
def state(kube):
    path = Path(kube.twin_state or "")
    if not kube.twin_state or not path.exists():
        pytest.fail("no twin state file (%r): the simulator writes $APEX_TWIN_STATE" % kube.twin_state)

    def read():
        return json.loads(path.read_text())
    return read


def _wait_state(kube, state, what, pred, timeout=20):
    return kube.wait(what, lambda: pred(state()) and state(), timeout=timeout)


class TwinClient:
    """GET on the Apex twin over HTTPS, verified against the lab CA."""

    def __init__(self, host, port, ca_file):
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def get(self, path):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = raw.decode("utf-8", "replace")
            return resp.status, doc
        finally:
            conn.close()


@pytest.fixture(scope="module")
def twin(kube):
    env = kube.lab_env
    if not env.get("APEX_API_URL") or not env.get("APEX_CA_FILE"):
        pytest.fail("no APEX_API_URL / APEX_CA_FILE in the lab env: run `make lab-up`")
    if not kube.private:
        url = urlsplit(env["APEX_API_URL"])
        client = TwinClient(url.hostname, url.port, env["APEX_CA_FILE"])
        yield client
        return
    from twin.testing import Twin  # a twin of our own, reading the private state file
    tmp = Path(tempfile.mkdtemp(prefix="kubesim-bridge-twin-"))
    proc_env = dict(os.environ, **env)
    proc_env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "lab")
    proc_env["APEX_TWIN_STATE_INTERVAL"] = "0.05"
    t = Twin(proc_env, tmp, "bridge", env["APEX_CA_FILE"])
    t.state_path = str(tmp / "unused-desired.json")  # Twin.start() writes {} there, not ours
    t.env["APEX_TWIN_STATE"] = kube.twin_state
    t.start()
    try:
        yield TwinClient("localhost", t.port, env["APEX_CA_FILE"])
    finally:
        t.stop()
        shutil.rmtree(str(tmp), ignore_errors=True)


def _wait_twin(kube, twin, what, path, pred, timeout=20):
    last = {}

    def check():
        try:
            last["answer"] = twin.get(path)
        except OSError as exc:
            last["answer"] = exc
            return False
        return pred(*last["answer"]) and last["answer"]
    try:
        return kube.wait(what, check, timeout=timeout)
    except AssertionError:
        raise AssertionError("timed out waiting for the twin: %s (last %s: %r)"
                             % (what, path, last.get("answer")))


def _healthy(kube, twin):
    """The twin serves again: /ready 200 (routed, so not in maintenance, replicas ready)."""
    _wait_twin(kube, twin, "the twin to be ready again", "/ready",
               lambda st, doc: st == 200 and isinstance(doc, dict) and doc.get("ready") is True,
               timeout=30)


def _deployment(kube, name):
    return kube.kj("get", "deployment", name, "-n", "apex")


def _env_value(kube, deploy, var):
    c0 = _deployment(kube, deploy)["spec"]["template"]["spec"]["containers"][0]
    for e in c0.get("env") or []:
        if e["name"] == var:
            return e.get("value")
    return None


def _rollout(kube, deploy):
    kube.kubectl("rollout", "status", "deployment/" + deploy, "-n", "apex", "--timeout=60s",
                 timeout=90)


@contextlib.contextmanager
def _env_set(kube, deploy, var, value):
    """``kubectl set env`` on a Deployment of apex; restores the previous value (or removes
    the variable) on exit, whatever happened, and waits for that rollout."""
    before = _env_value(kube, deploy, var)
    kube.kubectl("set", "env", "deployment/" + deploy, "-n", "apex", "%s=%s" % (var, value))
    try:
        _rollout(kube, deploy)
        yield before
    finally:
        kube.kubectl("set", "env", "deployment/" + deploy, "-n", "apex",
                     "%s=%s" % (var, before) if before is not None else var + "-")
        _rollout(kube, deploy)


def test_state_mirrors_apex(kube, state):
    def agrees():
        dep = kube.kj("get", "deployment", "apex-api", "-n", "apex")
        worker = kube.kj("get", "deployment", "apex-worker", "-n", "apex")
        tag = dep["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
        s = state()
        return (s.get("version") == tag and
                s.get("api_ready_replicas") == dep["status"].get("readyReplicas", 0) and
                s.get("worker_ready_replicas") == worker["status"].get("readyReplicas", 0)) and s
    st = kube.wait("the twin state to mirror apex", agrees)
    assert st["tls_cert_file"] and Path(st["tls_cert_file"]).exists()


def test_env_var_drives_state(kube, state):
    kube.kubectl("set", "env", "deployment/apex-api", "-n", "apex",
                 "APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD=7")
    try:
        kube.kubectl("rollout", "status", "deployment/apex-api", "-n", "apex", "--timeout=60s")
        _wait_state(kube, state, "circuit breaker threshold 7",
                    lambda s: s.get("circuit_breaker_failure_threshold") == 7)
    finally:
        kube.kubectl("set", "env", "deployment/apex-api", "-n", "apex",
                     "APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD=5")
        kube.kubectl("rollout", "status", "deployment/apex-api", "-n", "apex", "--timeout=60s")
    _wait_state(kube, state, "threshold restored", lambda s: s.get(
        "circuit_breaker_failure_threshold") == 5)


def test_canary_share(kube, state):
    stable = state()["version"]
    manifest = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: apex-api-canary
  namespace: apex
spec:
  replicas: 1
  selector:
    matchLabels:
      app: apex-api
      track: canary
  template:
    metadata:
      labels:
        app: apex-api
        track: canary
    spec:
      containers:
      - name: api
        image: apex/api:%s
""" % stable
    kube.kubectl("apply", "-f", "-", input=manifest)
    try:
        st = _wait_state(kube, state, "a ready canary", lambda s: (s.get("canary") or {}).get(
            "ready_replicas") == 1)
        assert st["canary"]["version"] == stable and st["canary"]["failure_rate"] == 0.0
    finally:
        kube.kubectl("delete", "deployment", "apex-api-canary", "-n", "apex", check=False)
    _wait_state(kube, state, "no canary", lambda s: s.get("canary") is None)


def test_tls_follows_secret_only_after_ingress_restart(kube, state):
    from cryptography import x509
    before = state()["tls_cert_file"]
    old_serial = x509.load_pem_x509_certificate(Path(before).read_bytes()).serial_number
    kube.kubectl("delete", "secret", "apex-tls", "-n", "apex")

    def new_secret():
        proc = kube.kubectl("get", "secret", "apex-tls", "-n", "apex", "-o", "json", check=False)
        if proc.returncode:
            return None
        crt = base64.b64decode(json.loads(proc.stdout)["data"]["tls.crt"])
        serial = x509.load_pem_x509_certificate(crt).serial_number
        return serial if serial != old_serial else None
    serial = kube.wait("cert-manager to reissue apex-tls", new_secret)
    time.sleep(0.5)
    assert state()["tls_cert_file"] == before  # the ingress has not reloaded yet
    kube.kubectl("rollout", "restart", "deployment/ingress-nginx-controller", "-n",
                 "ingress-nginx")
    kube.kubectl("rollout", "status", "deployment/ingress-nginx-controller", "-n",
                 "ingress-nginx", "--timeout=60s")
    st = _wait_state(kube, state, "the new TLS pair", lambda s: s.get("tls_cert_file") != before)
    served = x509.load_pem_x509_certificate(Path(st["tls_cert_file"]).read_bytes())
    current = json.loads(kube.kubectl("get", "secret", "apex-tls", "-n", "apex", "-o",
                                      "json").stdout)
    # the pair served is the secret's content at the restart (normally the reissued one)
    assert served.serial_number == x509.load_pem_x509_certificate(
        base64.b64decode(current["data"]["tls.crt"])).serial_number or \
        served.serial_number == serial
    assert Path(st["tls_key_file"]).exists()


def test_maintenance_mode_makes_the_twin_answer_503(kube, state, twin):
    _healthy(kube, twin)
    with _env_set(kube, "apex-api", "APEX__MAINTENANCE_MODE", "true") as before:
        _wait_state(kube, state, "maintenance_mode true", lambda s: s.get("maintenance_mode")
                    is True)
        _wait_twin(kube, twin, "/ready 503 in maintenance", "/ready",
                   lambda st, doc: st == 503 and "maintenance" in json.dumps(doc))
        status, doc = twin.get("/api/v1/tasks/no-such-task")  # routed: 503, not 404
        assert status == 503, (status, doc)
        status, doc = twin.get("/health")  # /health stays 200 and says so
        assert status == 200 and doc["maintenance_mode"] is True, (status, doc)
    _wait_state(kube, state, "maintenance mode restored", lambda s: s.get(
        "maintenance_mode", False) == ((before or "false").lower() in ("true", "1", "yes")))
    _healthy(kube, twin)
    assert twin.get("/api/v1/tasks/no-such-task")[0] == 404


def test_api_scaled_to_zero_makes_the_twin_answer_503(kube, state, twin):
    _healthy(kube, twin)
    replicas = _deployment(kube, "apex-api")["spec"]["replicas"]
    assert replicas > 0
    kube.kubectl("scale", "deployment/apex-api", "-n", "apex", "--replicas=0")
    try:
        _wait_state(kube, state, "api_ready_replicas 0", lambda s: s.get("api_ready_replicas")
                    == 0)
        _wait_twin(kube, twin, "503 no ready replicas", "/health",
                   lambda st, doc: st == 503 and isinstance(doc, dict) and
                   doc.get("error") == "no ready replicas")
        assert twin.get("/ready")[0] == 503
        assert twin.get("/live")[0] == 200  # the process is still up
    finally:
        kube.kubectl("scale", "deployment/apex-api", "-n", "apex", "--replicas=%d" % replicas)
        _rollout(kube, "apex-api")
    _wait_state(kube, state, "api replicas back", lambda s: s.get("api_ready_replicas")
                == replicas)
    _healthy(kube, twin)
    status, doc = twin.get("/health")
    assert status == 200 and doc["status"] in ("healthy", "degraded"), (status, doc)


def test_worker_concurrency_from_the_worker(kube, state, twin):
    _healthy(kube, twin)
    with _env_set(kube, "apex-worker", "APEX__WORKER__CONCURRENCY", "7") as before:
        _wait_state(kube, state, "worker_concurrency 7",
                    lambda s: s.get("worker_concurrency") == 7)
        _wait_twin(kube, twin, "/health worker.concurrency 7", "/health",
                   lambda st, doc: isinstance(doc, dict) and
                   (doc.get("worker") or {}).get("concurrency") == 7)
    assert before is not None
    _wait_state(kube, state, "worker_concurrency restored",
                lambda s: s.get("worker_concurrency") == int(before))
    _healthy(kube, twin)


def test_force_provider_from_the_worker(kube, state, twin):
    _healthy(kube, twin)
    with _env_set(kube, "apex-worker", "APEX__ROUTING__FORCE_PROVIDER", "anthropic") as before:
        _wait_state(kube, state, "force_provider anthropic",
                    lambda s: s.get("force_provider") == "anthropic")
        _wait_twin(kube, twin, "/health force_provider anthropic", "/health",
                   lambda st, doc: isinstance(doc, dict) and
                   doc.get("force_provider") == "anthropic")
    _wait_state(kube, state, "force_provider restored",
                lambda s: s.get("force_provider") == (before or None))
    _healthy(kube, twin)


def test_db_max_connections_from_the_api(kube, state, twin):
    _healthy(kube, twin)
    with _env_set(kube, "apex-api", "APEX__DATABASE__MAX_CONNECTIONS", "17") as before:
        _wait_state(kube, state, "db_max_connections 17",
                    lambda s: s.get("db_max_connections") == 17)
        _wait_twin(kube, twin, "apex_db_pool_max_connections 17", "/metrics",
                   lambda st, doc: st == 200 and isinstance(doc, str) and
                   "\napex_db_pool_max_connections 17" in "\n" + doc)
    assert before is not None
    _wait_state(kube, state, "db_max_connections restored",
                lambda s: s.get("db_max_connections") == int(before))
    _healthy(kube, twin)


def test_fault_image_tags(kube, state, twin):
    _healthy(kube, twin)
    image = _deployment(kube, "apex-api")["spec"]["template"]["spec"]["containers"][0]["image"]
    repo, tag = image.rsplit(":", 1)
    try:
        for suffix, key, value in (("errors", "failure_rate", 0.5), ("slow", "latency_ms", 800)):
            kube.kubectl("set", "image", "deployment/apex-api", "-n", "apex",
                         "api=%s:%s-%s" % (repo, tag, suffix))
            _rollout(kube, "apex-api")
            st = _wait_state(kube, state, "%s from the %s tag" % (key, suffix),
                             lambda s: s.get("version") == "%s-%s" % (tag, suffix))
            assert st[key] == value
            assert st["failure_rate" if key == "latency_ms" else "latency_ms"] == 0
            _wait_twin(kube, twin, "/health version %s-%s" % (tag, suffix), "/health",
                       lambda st_, doc: isinstance(doc, dict) and
                       doc.get("version") == "%s-%s" % (tag, suffix))
    finally:
        kube.kubectl("set", "image", "deployment/apex-api", "-n", "apex", "api=" + image)
        _rollout(kube, "apex-api")
    _wait_state(kube, state, "the stable image again", lambda s: s.get("version") == tag and
                s.get("failure_rate") == 0.0 and s.get("latency_ms") == 0)
    _healthy(kube, twin)


def _app_sessions(lab_env):
    """{application_name: sessions} of the lab twin's components on database apex."""
    import psycopg
    with psycopg.connect(lab_env["APEX_PG_ADMIN_DSN"], dbname="postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = 'apex' "
                            "AND application_name IN ('apex-api', 'apex-worker') GROUP BY 1").fetchall()
    return dict({"apex-api": 0, "apex-worker": 0}, **dict(rows))


def _post_task(lab_env):
    url = urlsplit(lab_env["APEX_API_URL"])
    conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=10,
                                       context=ssl.create_default_context(cafile=lab_env["APEX_CA_FILE"]))
    try:
        conn.request("POST", "/api/v1/tasks", body=json.dumps({"payload": {"sleep": 0}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert resp.status == 202, (resp.status, doc)
        return doc["task_id"]
    finally:
        conn.close()


def test_scaled_to_zero_the_twin_holds_no_session_and_the_drain_ends_at_once(kube, state, twin, run_module):
    """The restore's situation: apex-api and apex-worker scaled to 0 through Kubernetes. The
    twin's sessions leave pg_stat_activity (a pod that is gone holds no connection), so the
    drain ends at once, far inside its 30 s grace, terminating nothing; scaled
    back, the twin serves /health 200 and reconnects."""
    if kube.private:
        pytest.skip("acts on the lab twin's sessions in database apex; a private simulator does not drive them")
    env = kube.lab_env
    _healthy(kube, twin)
    replicas = {name: _deployment(kube, name)["spec"]["replicas"] for name in ("apex-api", "apex-worker")}
    assert all(replicas.values()), replicas
    _post_task(env)  # a task for the worker, /health for the API pool: both hold sessions
    assert twin.get("/health")[0] == 200
    kube.wait("sessions of both components", lambda: all(_app_sessions(env).values()) and _app_sessions(env),
              timeout=20)
    kube.kubectl("scale", "deployment/apex-api", "deployment/apex-worker", "-n", "apex", "--replicas=0")
    try:
        _wait_state(kube, state, "no ready replicas", lambda s: s.get("api_ready_replicas") == 0 and
                    s.get("worker_ready_replicas") == 0)
        kube.wait("the twin's sessions to end", lambda: not any(_app_sessions(env).values()), timeout=10)
        started = time.monotonic()
        result = run_module("apex_backup", state="drain", target_db="apex", confirm="apex", drain_users=["apex"],
                            drain_grace=30, drain_timeout=60)
        elapsed = time.monotonic() - started
        assert not result.failed, result.get("msg")
        assert result["drain"]["terminated"] == [] and result["changed"] is False, result["drain"]
        # grace 30 s: the module (Python start-up included, on a loaded machine) ends in half of it
        assert result["drain"]["waited_seconds"] < 5 and elapsed < 15, (elapsed, result["drain"])
    finally:
        for name, count in replicas.items():
            kube.kubectl("scale", "deployment/" + name, "-n", "apex", "--replicas=%d" % count)
        for name in replicas:
            _rollout(kube, name)
    _wait_state(kube, state, "replicas back", lambda s: s.get("api_ready_replicas") == replicas["apex-api"] and
                s.get("worker_ready_replicas") == replicas["apex-worker"])
    _healthy(kube, twin)
    status, doc = twin.get("/health")
    assert status == 200 and doc["database"]["ok"] is True, (status, doc)
    _post_task(env)
    kube.wait("both components connected again", lambda: all(_app_sessions(env).values()) and _app_sessions(env),
              timeout=20)
