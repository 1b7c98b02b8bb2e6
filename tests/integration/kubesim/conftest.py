"""Fixtures for the Kubernetes simulator's client suites.

By default the suites run against the lab's simulator (``KUBECONFIG`` from ``.lab/env``);
they fail, never skip, when the lab is down. ``KUBESIM_PRIVATE=1`` starts a private
instance on free ports instead (nothing shared is touched).

Tests that change things work in a scratch namespace seeded with a copy of the ``apex``
namespace's workloads, so the shared ``apex`` namespace (which drives the Apex twin) is left
alone; the twin-bridge tests, which must act on ``apex``, restore what they change.
"""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB_PY = ROOT / "tests" / "lab"
if str(LAB_PY) not in sys.path:
    sys.path.insert(0, str(LAB_PY))


def _read_env(path):
    import shlex
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _sep, value = line[len("export "):].partition("=")
            parts = shlex.split(value) if value else [""]
            env[key] = parts[0] if parts else ""
    return env


def _free_port(taken=()):
    """A free port from lab.py's range (below the kernel's ephemeral range, so no client
    socket takes it before the simulator binds it), never one the shared lab has persisted."""
    from lab import pick_port
    from twin.testing import _lab_ports
    return pick_port(set(taken) | _lab_ports())


class Kube:
    """What a test needs to talk to one simulator: kubeconfig, kubectl, python clients."""

    def __init__(self, kubeconfig, lab_dir, twin_state=None, private=False, lab_env=None):
        self.lab_env = dict(lab_env or {})
        self.kubeconfig = str(kubeconfig)
        self.lab_dir = str(lab_dir)
        self.twin_state = twin_state
        self.private = private
        self.cache = tempfile.mkdtemp(prefix="kubesim-kubectl-cache-")

    def kubectl(self, *args, input=None, check=True, context="apex-primary", timeout=120):
        cmd = ["kubectl", "--kubeconfig", self.kubeconfig, "--context", context,
               "--cache-dir", self.cache] + list(args)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError("%s failed (rc=%d)\nstdout: %s\nstderr: %s" % (
                " ".join(cmd[6:]), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def kj(self, *args, **kw):
        return json.loads(self.kubectl(*(list(args) + ["-o", "json"]), **kw).stdout)

    def api_client(self, context="apex-primary"):
        from kubernetes import client, config
        return config.new_client_from_config(config_file=self.kubeconfig, context=context)

    def config(self, context="apex-primary"):
        import yaml
        cfg = yaml.safe_load(Path(self.kubeconfig).read_text())
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == context)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        return cluster, user

    def wait(self, what, fn, timeout=20.0, interval=0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError("timed out after %.0fs waiting for %s (last: %r)" % (timeout, what, last))


@pytest.fixture(scope="session")
def kube(request):
    if os.environ.get("KUBESIM_PRIVATE") == "1":
        lab_dir = tempfile.mkdtemp(prefix="kubesim-private-")
        p1 = _free_port()
        p2 = _free_port({p1})
        env = dict(os.environ, PYTHONPATH=str(LAB_PY))
        lab_env = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "env"
        if lab_env.exists():  # PG DSN etc. for the migration Job
            env.update({k: v for k, v in _read_env(lab_env).items()
                        if k.startswith(("APEX_PG", "PG", "APEX_CA"))})
        twin_state = os.path.join(lab_dir, "twin", "desired.json")
        proc = subprocess.Popen([sys.executable, "-m", "kubesim", "serve", "--lab-dir", lab_dir,
                                 "--primary-port", str(p1), "--secondary-port", str(p2),
                                 "--twin-state", twin_state],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = proc.stdout.readline().decode()
        if "ready" not in line:
            proc.kill()
            pytest.fail("private kubesim did not start: %s" % line)
        request.addfinalizer(lambda: (proc.terminate(), proc.wait(10),
                                      shutil.rmtree(lab_dir, ignore_errors=True)))
        return Kube(Path(lab_dir) / "kube" / "kubeconfig", lab_dir, twin_state, private=True,
                    lab_env=_read_env(lab_env) if lab_env.exists() else {})
    lab = request.getfixturevalue("lab")
    kubeconfig = lab.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).exists():
        pytest.fail("the lab has no Kubernetes simulator (KUBECONFIG missing in .lab/env): "
                    "run `make lab-up`")
    return Kube(kubeconfig, lab.get("APEX_LAB_DIR"), lab.get("APEX_TWIN_STATE"), lab_env=lab)


def clone_apex(kube, ns, context="apex-primary", replicas=None):
    """Create namespace ``ns`` holding a copy of the seed's ``apex`` namespace objects."""
    from kubesim import seed as seedmod
    from kubernetes import dynamic
    dyn = dynamic.DynamicClient(kube.api_client(context))
    dyn.resources.get(api_version="v1", kind="Namespace").create(
        body={"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": ns, "labels": {"kubesim-test": "true"}}})
    secrets = dyn.resources.get(api_version="v1", kind="Secret")
    ca = secrets.get(namespace="apex", name="lab-ca-keypair")
    # the live apex-secrets (its database-url is the lab's, whatever this process's env says)
    live_secrets = secrets.get(namespace="apex", name="apex-secrets")
    objs = [o for o in seedmod.objects(False, os.environ)
            if o["metadata"].get("namespace") == "apex"]
    for o in objs:
        if o["kind"] == "Secret" and o["metadata"]["name"] == "apex-secrets":
            o["data"] = dict(live_secrets.data)
    objs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                 "metadata": {"name": "lab-ca-keypair", "namespace": ns},
                 "data": dict(ca.data)})
    for obj in objs:
        obj = copy.deepcopy(obj)
        obj["metadata"]["namespace"] = ns
        obj.pop("status", None)
        if obj["kind"] == "Deployment":
            tpl_labels = obj["spec"]["template"]["metadata"]["labels"]
            tpl_labels["kubesim-test"] = ns
            if replicas and obj["metadata"]["name"] in replicas:
                obj["spec"]["replicas"] = replicas[obj["metadata"]["name"]]
        if obj["kind"] == "StatefulSet":
            obj["spec"]["template"]["metadata"]["labels"]["kubesim-test"] = ns
        if obj["kind"] == "HorizontalPodAutoscaler" and replicas and \
                obj["metadata"]["name"] in replicas:
            obj["spec"]["minReplicas"] = min(obj["spec"]["minReplicas"],
                                             replicas[obj["metadata"]["name"]])
        dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).create(
            body=obj, namespace=ns)
    return dyn


@pytest.fixture(scope="module")
def scratch(kube):
    """A scratch namespace with a copy of Apex (apex-api 3, apex-worker 2 replicas)."""
    ns = "kst-" + uuid.uuid4().hex[:8]
    clone_apex(kube, ns, replicas={"apex-worker": 2})

    def settled():
        deps = kube.kj("get", "deployments", "-n", ns)["items"]
        return deps and all(d.get("status", {}).get("availableReplicas", 0) ==
                            d["spec"]["replicas"] for d in deps)
    kube.wait("the scratch copy of apex to be available", settled)
    yield ns
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
