"""TwinBridge.compute(): the primary cluster's apex namespace -> the twin's desired state."""
import time

import pytest

from kubesim.app import Config
from kubesim.bridge import TwinBridge
from kubesim.cluster import Cluster
from kubesim.controllers import Controllers
from kubesim.pki import CA
from kubesim.seed import seed

DEPLOY = ("apps", "deployments")


@pytest.fixture()
def cluster(tmp_path):
    cfg = Config(pod_ready_delay=0.05, hpa_sync=0.05, crash_interval=0.1)
    cluster = Cluster("primary", cfg)
    pki = CA.load_or_create(None, None, str(tmp_path))
    seed(cluster, pki, secondary=False, env={})
    ctl = Controllers(cluster, cfg, pki=pki)
    ctl.start()
    yield cluster
    ctl.stopped = True


def _compute(bridge):
    with bridge.c.lock:
        return bridge.compute()


def _wait(bridge, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _compute(bridge)
        if pred(st):
            return st
        time.sleep(0.02)
    raise AssertionError("state never matched; last: %r" % st)


def _set_env(cluster, name, var, value):
    def change(d):
        env = d["spec"]["template"]["spec"]["containers"][0].setdefault("env", [])
        env[:] = [e for e in env if e["name"] != var]
        if value is not None:
            env.append({"name": var, "value": value})
    cluster.mutate(DEPLOY, "apex", name, change)


def test_seed_state(cluster, tmp_path):
    bridge = TwinBridge(cluster, None, str(tmp_path))
    st = _wait(bridge, lambda s: s["api_ready_replicas"] == 3 and s["worker_ready_replicas"] == 5
               and s.get("tls_cert_file"))
    assert st["version"] == "1.0.0" and st["failure_rate"] == 0.0 and st["latency_ms"] == 0
    assert st["maintenance_mode"] is False and st["db_max_connections"] == 10
    assert st["worker_concurrency"] == 2 and st["circuit_breaker_failure_threshold"] == 5
    assert st["force_provider"] is None and st["canary"] is None
    assert open(st["tls_cert_file"]).read().startswith("-----BEGIN CERTIFICATE-----")
    assert st["_source"] == "kubesim:primary"


def test_env_tags_and_replicas_map_once_serving(cluster, tmp_path):
    bridge = TwinBridge(cluster, None, str(tmp_path))
    _wait(bridge, lambda s: s["api_ready_replicas"] == 3 and s["worker_ready_replicas"] == 5)
    # one lock around the edits and the first read: no controller pass (50 ms ready delay) can make
    # a new pod serve in between on a loaded machine (the lock is re-entrant)
    with cluster.lock:
        _set_env(cluster, "apex-api", "APEX__MAINTENANCE_MODE", "true")
        _set_env(cluster, "apex-api", "APEX__DATABASE__MAX_CONNECTIONS", "25")
        _set_env(cluster, "apex-worker", "APEX__WORKER__CONCURRENCY", "8")
        _set_env(cluster, "apex-worker", "APEX__ROUTING__FORCE_PROVIDER", "anthropic")
        # the spec changed, but nothing new serves yet: the state still says what runs
        st = _compute(bridge)
    assert st["maintenance_mode"] is False and st["worker_concurrency"] == 2
    st = _wait(bridge, lambda s: s.get("maintenance_mode") is True and
               s.get("worker_concurrency") == 8)
    _wait(bridge, lambda s: s["db_max_connections"] == 25 and s["force_provider"] == "anthropic")

    def image(d):
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "apex/api:1.1.0-errors-slow"
    cluster.mutate(DEPLOY, "apex", "apex-api", image)
    st = _wait(bridge, lambda s: s["version"] == "1.1.0-errors-slow")
    assert st["failure_rate"] == 0.5 and st["latency_ms"] == 800

    def scale0(d):
        d["spec"]["replicas"] = 0
    cluster.mutate(DEPLOY, "apex", "apex-api", scale0)
    st = _wait(bridge, lambda s: s["api_ready_replicas"] == 0)
    assert st["worker_ready_replicas"] == 5
    # a non-numeric value is ignored, not a crash
    _set_env(cluster, "apex-worker", "APEX__WORKER__CONCURRENCY", "many")
    _wait(bridge, lambda s: "worker_concurrency" not in s)


def test_canary_and_missing_deployments(cluster, tmp_path):
    bridge = TwinBridge(cluster, None, str(tmp_path))
    _wait(bridge, lambda s: s["api_ready_replicas"] == 3)
    import copy
    with cluster.lock:
        canary = copy.deepcopy(cluster.store.get(DEPLOY, "apex", "apex-api"))
    meta = canary["metadata"]
    canary["metadata"] = {"name": "apex-api-canary", "namespace": "apex",
                          "labels": {"app": "apex-api", "track": "canary"}}
    canary.pop("status", None)
    canary["spec"]["replicas"] = 1
    canary["spec"]["selector"] = {"matchLabels": {"app": "apex-api", "track": "canary"}}
    tpl = canary["spec"]["template"]
    tpl["metadata"]["labels"] = {"app": "apex-api", "track": "canary"}
    tpl["spec"]["containers"][0]["image"] = "apex/api:1.2.0-errors"
    from kubesim import registry
    cluster.create(registry.lookup("apps", "v1", "deployments"), canary)
    st = _wait(bridge, lambda s: (s["canary"] or {}).get("ready_replicas") == 1)
    assert st["canary"] == {"ready_replicas": 1, "version": "1.2.0-errors", "failure_rate": 0.5,
                            "latency_ms": 0}
    assert st["version"] == "1.0.0" and meta["name"] == "apex-api"
    with cluster.lock:
        for name in ("apex-api", "apex-worker"):
            cluster.store.remove(DEPLOY, "apex", name)
        st = bridge.compute()
    assert st["api_ready_replicas"] == 0 and st["worker_ready_replicas"] == 0
    assert "version" not in st
