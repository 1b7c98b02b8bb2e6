"""The simulated kubelet honours readinessProbe.initialDelaySeconds: running at once, Ready only later."""
import time

from kubesim.app import Config
from kubesim.cluster import Cluster
from kubesim.controllers import Controllers
from kubesim.pki import CA
from kubesim.seed import seed


def _pods(cluster, app):
    return [p for p in cluster.store.list(("", "pods"), "apex")
            if (p["metadata"].get("labels") or {}).get("app") == app and not p["metadata"].get("deletionTimestamp")]


def _ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def test_pod_is_ready_only_after_the_probe_initial_delay(tmp_path):
    cfg = Config(pod_ready_delay=0.05, hpa_sync=0.05, crash_interval=0.1)
    cluster = Cluster("t", cfg)
    seed(cluster, CA.load_or_create(None, None, str(tmp_path)), secondary=False, env={})
    ctl = Controllers(cluster, cfg, pki=None)
    ctl.start()
    try:
        def delayed(o):
            c0 = o["spec"]["template"]["spec"]["containers"][0]
            c0["readinessProbe"] = dict(c0.get("readinessProbe") or {}, initialDelaySeconds=1)
            o["spec"]["replicas"] = 1
        cluster.mutate(("apps", "deployments"), "apex", "apex-worker", delayed)
        started = time.monotonic()
        seen_running_unready = False
        while time.monotonic() - started < 10:
            new = [p for p in _pods(cluster, "apex-worker")
                   if any(c.get("readinessProbe", {}).get("initialDelaySeconds") == 1 for c in p["spec"]["containers"])]
            if new and new[0]["status"].get("phase") == "Running" and not _ready(new[0]):
                seen_running_unready = True
            if new and _ready(new[0]):
                break
            time.sleep(0.02)
        took = time.monotonic() - started
        assert seen_running_unready, "the new pod was never Running and not Ready"
        assert new and _ready(new[0]), "the new pod never became Ready"
        assert took >= 1.0, "Ready after %.2fs, before the 1 s initial delay" % took
    finally:
        ctl.stopped = True
