"""Helm v4 (helm-python-sdk, the Go SDK through ctypes) against the simulator, with Helm's
``sql`` storage driver in the lab PostgreSQL: install, upgrade with wait, upgrade that fails
and is rolled back (rollback-on-failure, Helm 3's --atomic), rollback, history.

Each Helm step runs in a fresh Python process: the Go runtime reads
HELM_DRIVER_SQL_CONNECTION_STRING from the environment it starts with, and a new process per
step also proves that releases outlive the process that made them."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "tests" / "lab" / "charts" / "apex"

STEP = r'''
import json, os, sys
import helm_python as helm
args = json.loads(sys.argv[1])
cfg = helm.Config(kubeconfig_path=args["kubeconfig"], kube_context="apex-primary",
                  namespace=args["ns"], storage_driver=args["driver"])
out = {}
try:
    op = args["op"]
    if op == "install":
        r = cfg.install(args["chart"], args["name"], args.get("values"), wait="watcher",
                        timeout=60)
    elif op == "upgrade":
        r = cfg.upgrade(args["chart"], args["name"], args.get("values"), wait="watcher",
                        timeout=args.get("timeout", 60), rollback_on_failure=True)
    elif op == "rollback":
        r = cfg.rollback(args["name"], version=args["version"], wait="watcher", timeout=60)
    elif op == "history":
        r = cfg.history(args["name"])
    elif op == "uninstall":
        r = cfg.uninstall(args["name"], wait="watcher", timeout=60)
    out["result"] = r
except helm.HelmError as exc:
    out["error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out, default=str))
'''


@pytest.fixture(scope="module")
def helm_env(kube, request):
    try:
        import helm_python  # noqa: F401
    except ImportError:
        pytest.fail("helm-python-sdk is not installed (pip install helm-python-sdk)")
    env = dict(os.environ)
    env.update(kube.lab_env)
    if not env.get("HELM_DRIVER_SQL_CONNECTION_STRING"):
        pytest.fail("HELM_DRIVER_SQL_CONNECTION_STRING missing from .lab/env")
    return env


@pytest.fixture()
def release(kube, helm_env):
    ns = "khelm-" + uuid.uuid4().hex[:6]
    kube.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    name = "apex"

    def step(op, **kw):
        args = dict(kw, op=op, kubeconfig=kube.kubeconfig, ns=ns, name=name,
                    chart=str(CHART), driver="sql")
        proc = subprocess.run([sys.executable, "-c", STEP, json.dumps(args)], env=helm_env,
                              capture_output=True, text=True, timeout=180, check=False)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        assert lines, "helm step %s printed nothing: %s %s" % (op, proc.stdout, proc.stderr)
        return json.loads(lines[-1])
    yield ns, step
    step("uninstall")
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _image(kube, ns, name):
    return kube.kj("get", "deployment", name, "-n", ns)["spec"]["template"]["spec"][
        "containers"][0]["image"]


def test_install_upgrade_atomic_rollback_history(kube, release):
    ns, step = release
    small = {"api": {"replicas": 2, "hpa": {"minReplicas": 2}},
             "worker": {"replicas": 1, "hpa": {"enabled": False}}}
    r = step("install", values=small)
    assert "error" not in r, r
    assert r["result"]["status"] == "deployed" and r["result"]["revision"] == 1
    dep = kube.kj("get", "deployment", "apex-api", "-n", ns)
    assert dep["status"]["availableReplicas"] == 2  # --wait really waited
    assert kube.kj("get", "hpa", "apex-api", "-n", ns)["spec"]["maxReplicas"] == 10

    r = step("upgrade", values={"api": {"replicas": 2, "image": {"tag": "1.1.0"},
                                        "hpa": {"minReplicas": 2}},
                                "worker": {"replicas": 1, "hpa": {"enabled": False}}})
    assert "error" not in r, r
    assert r["result"]["revision"] == 2 and r["result"]["status"] == "deployed"
    assert _image(kube, ns, "apex-api") == "apex/api:1.1.0"
    dep = kube.kj("get", "deployment", "apex-api", "-n", ns)
    assert dep["status"]["updatedReplicas"] == dep["status"]["availableReplicas"] == 2

    # an image that never gets ready: the wait fails on ProgressDeadlineExceeded and Helm
    # rolls the release back by itself
    r = step("upgrade", timeout=30, values={"api": {"replicas": 2,
                                                    "image": {"tag": "2.0.0-never-ready"},
                                                    "hpa": {"minReplicas": 2}},
                                            "worker": {"replicas": 1, "hpa": {"enabled": False}},
                                            "progressDeadlineSeconds": 2})
    assert "error" in r and "rolled back" in r["error"], r
    assert _image(kube, ns, "apex-api") == "apex/api:1.1.0"
    kube.kubectl("rollout", "status", "deployment/apex-api", "-n", ns, "--timeout=60s")

    r = step("rollback", version=1)
    assert "error" not in r, r
    assert _image(kube, ns, "apex-api") == "apex/api:1.0.0"

    hist = step("history")["result"]
    statuses = [(h["revision"], h["status"]) for h in hist]
    assert statuses[:3] == [(1, "superseded"), (2, "superseded"), (3, "failed")]
    assert statuses[-1][1] == "deployed" and len(statuses) == 5
    assert kube.kj("get", "configmap", "apex-config", "-n", ns)["data"]["version"] == "1.0.0"
