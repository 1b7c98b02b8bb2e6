"""Fixtures for apex_release against the lab: kubectl for assertions (never the code under test),
the twin's HTTPS answer, scratch namespaces, and the shared ``apex`` release put back as seeded."""
import json
import os
import ssl
import subprocess
import time
import urllib.request
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHART = os.path.join(ROOT, "tests", "lab", "charts", "apex")


class Kubectl(object):
    def __init__(self, env):
        self.env = env

    def run(self, *args, check=True, input=None):
        proc = subprocess.run(["kubectl", "--context", "apex-primary"] + list(args), env=self.env, input=input,
                              capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode:
            raise AssertionError("kubectl %s failed: %s" % (" ".join(args), proc.stderr))
        return proc

    def get(self, *args):
        proc = self.run("get", "-o", "json", *args, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def image(self, namespace, name="apex-api"):
        return self.get("deployment", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["image"]

    def helm_secrets(self, namespace, release="apex"):
        items = self.get("secrets", "-n", namespace, "-l", "owner=helm,name=%s" % release)["items"]
        return sorted(int(s["metadata"]["labels"]["version"]) for s in items)


@pytest.fixture(scope="session")
def kubectl(lab_process_env):
    return Kubectl(lab_process_env)


@pytest.fixture(scope="session")
def twin_version(lab):
    """``twin_version(expected, timeout)`` waits until the twin's /health serves ``expected``
    (the simulator bridges the ready ReplicaSet's tag) and returns what it served last."""
    context = ssl.create_default_context(cafile=lab["APEX_CA_FILE"])

    def served():
        with urllib.request.urlopen(lab["APEX_API_URL"] + "/health", context=context, timeout=5) as resp:
            return json.loads(resp.read().decode())["version"], resp.headers.get("X-Apex-Version")

    def wait(expected, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = served()
            if last[0] == expected:
                return last
            time.sleep(0.2)
        return last
    wait.now = served
    return wait


@pytest.fixture(scope="module")
def scratch_namespace(kubectl):
    """A namespace of its own (deleted afterwards, with the Helm release Secrets in it)."""
    names = []

    def make():
        name = "rel-" + uuid.uuid4().hex[:6]
        kubectl.run("create", "namespace", name)
        names.append(name)
        return name
    yield make
    for name in names:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def apex_release(run_module, kubectl, twin_version):
    """The lab's Apex (namespace apex, which drives the twin) adopted as Helm release ``apex``
    (chart defaults reproduce the seed). Afterwards the seeded objects are restored and the
    release history is dropped, so the lab is as seeded again."""
    before = kubectl.helm_secrets("apex")
    assert before == [], "namespace apex already has Helm release Secrets %s: a previous run did not clean up" % before
    result = run_module("apex_release", chart=CHART, namespace="apex", context="apex-primary", timeout=120)
    assert not result.failed, result.get("msg")
    yield result
    # the chart's values given in full: an upgrade given no values at all reuses the deployed revision's (Helm),
    # which keeps a version a test deployed
    back = run_module("apex_release", chart=CHART, values_files=[os.path.join(CHART, "values.yaml")],
                      namespace="apex", context="apex-primary", timeout=120)
    kubectl.run("delete", "secrets", "-n", "apex", "-l", "owner=helm,name=apex", check=False)
    assert not back.failed, back.get("msg")
    assert twin_version("1.0.0")[0] == "1.0.0"
