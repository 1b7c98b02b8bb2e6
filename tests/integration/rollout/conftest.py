"""Fixtures for apex_rollout and the rollout playbooks (emergency_rollback, config, db_migrate) against the
lab: the shared Deployments apex-api and apex-worker are changed for real and put back after every test.

Assertions read the cluster with the official client (``k8s_lab.Kube``) and the Apex twin over HTTPS
(what it serves follows the ready ReplicaSet's image and env through the simulator's bridge)."""
import json
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))

from k8s_lab import NS, Kube  # noqa: E402

SHARED = ("apex-api", "apex-worker")
SEEDED_IMAGES = {"apex-api": "apex/api:1.0.0", "apex-worker": "apex/worker:1.0.0"}
CHANGE_CAUSE = "kubernetes.io/change-cause"


@pytest.fixture(scope="session")
def kube(lab):
    path = lab.get("K8S_AUTH_KUBECONFIG") or lab.get("KUBECONFIG")
    if not path or not Path(path).exists():
        pytest.fail("the lab has no Kubernetes simulator kubeconfig (KUBECONFIG=%r): run `make lab-up`" % path)
    return Kube(path)


class Cluster(object):
    """Reads of the shared Deployments for assertions, and the put-back."""

    def __init__(self, kube):
        self.kube = kube
        self.api = kube.apps.api_client

    def raw(self, name):
        return self.api.sanitize_for_serialization(self.kube.deployment(name))

    def template(self, name):
        return self.raw(name)["spec"]["template"]

    def image(self, name):
        return self.template(name)["spec"]["containers"][0]["image"]

    def env(self, name):
        return dict((e["name"], e.get("value")) for e in self.template(name)["spec"]["containers"][0].get("env") or []
                    if "value" in e)

    def revision(self, name):
        return int(self.raw(name)["metadata"]["annotations"]["deployment.kubernetes.io/revision"])

    def pods(self, name):
        return sorted(p.metadata.name for p in self.kube.core.list_namespaced_pod(NS, label_selector="app=%s" % name).items)

    def put_back(self, name, template, replicas):
        """The saved pod template (without change-cause), then settled at ``replicas``."""
        body = [{"op": "replace", "path": "/spec/template", "value": template}]
        annotations = self.raw(name)["metadata"].get("annotations") or {}
        if CHANGE_CAUSE in annotations:
            body.append({"op": "remove", "path": "/metadata/annotations/" + CHANGE_CAUSE.replace("/", "~1")})
        body.append({"op": "add", "path": "/spec/paused", "value": False})
        self.kube.apps.patch_namespaced_deployment(name, NS, body)  # a list body is sent as a JSON patch
        self.kube.settle(name, replicas, timeout=60)


@pytest.fixture(scope="session")
def seeded_templates(kube):
    cluster = Cluster(kube)
    templates = dict((name, cluster.template(name)) for name in SHARED)
    for name in SHARED:
        image = templates[name]["spec"]["containers"][0]["image"]
        assert image == SEEDED_IMAGES[name], "%s runs %s, not the seeded image: restart kubesim" % (name, image)
    worker_env = dict((e["name"], e.get("value")) for e in templates["apex-worker"]["spec"]["containers"][0]["env"])
    assert worker_env.get("APEX__WORKER__CONCURRENCY") == "2", "apex-worker is not as seeded: restart kubesim"
    return templates


@pytest.fixture
def cluster(kube, seeded_templates):
    """The shared Deployments as seeded before the test, put back (template, replicas) after it."""
    cluster = Cluster(kube)
    replicas = dict((name, kube.replicas(name)) for name in SHARED)
    yield cluster
    for name in SHARED:
        cluster.put_back(name, seeded_templates[name], replicas[name])


class TwinHttp(object):
    def __init__(self, url, ca_file):
        self.url = url.rstrip("/")
        self.context = ssl.create_default_context(cafile=ca_file)

    def health(self):
        try:
            with urllib.request.urlopen(self.url + "/health", context=self.context, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")

    def wait_for(self, what, predicate, timeout=15):
        """The twin's /health until ``predicate(health)``; fails with the last answer."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.health()
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError("the twin never showed %s; last /health: %s" % (what, last))


@pytest.fixture(scope="session")
def twin(lab):
    if not lab.get("APEX_API_URL") or not lab.get("APEX_CA_FILE"):
        pytest.fail("no APEX_API_URL / APEX_CA_FILE in the lab env: run `make lab-up`")
    return TwinHttp(lab["APEX_API_URL"], lab["APEX_CA_FILE"])


@pytest.fixture
def report_dir(tmp_path):
    path = tmp_path / "reports"
    path.mkdir()
    return path


def _read_report(directory, procedure):
    files = sorted(Path(directory).glob("%s-*.json" % procedure))
    assert files, "no %s report in %s: %s" % (procedure, directory, os.listdir(directory))
    return json.loads(files[-1].read_text())


class Result(dict):
    @property
    def failed(self):
        return bool(self.get("failed"))


@pytest.fixture(scope="session")
def rollout(module_process):
    """Run apex_rollout with ``args`` (a dict: its ``env`` option would clash with run_module's ``env``)."""
    import tempfile

    def _run(args, check_mode=False, diff=False, timeout=300):
        payload = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        try:
            proc = module_process.run("ansible_collections.apex.ops.plugins.modules.apex_rollout", [handle.name],
                                      timeout=timeout)
        finally:
            os.unlink(handle.name)
        try:
            return Result(json.loads(proc.stdout))
        except ValueError:
            raise AssertionError("apex_rollout printed no JSON (rc=%s)\nstdout:%s\nstderr:%s"
                                 % (proc.returncode, proc.stdout, proc.stderr))

    return _run


@pytest.fixture(scope="session")
def read_report():
    """``read_report(directory, procedure)``: the newest report of that procedure, parsed."""
    return _read_report
