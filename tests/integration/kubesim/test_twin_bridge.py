"""The twin bridge: the primary cluster's apex namespace drives $APEX_TWIN_STATE.

These tests act on the shared ``apex`` namespace and restore what they change."""
import base64
import json
import time
from pathlib import Path

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
