"""Fixtures for apex_info / apex_scale tests against the lab's Kubernetes simulator (helpers: k8s_lab.py)."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from k8s_lab import SEEDED, Kube  # noqa: E402


@pytest.fixture(scope="session")
def kubeconfig(lab):
    path = lab.get("K8S_AUTH_KUBECONFIG") or lab.get("KUBECONFIG")
    if not path or not Path(path).exists():
        pytest.fail("the lab has no Kubernetes simulator kubeconfig (KUBECONFIG=%r): run `make lab-up`" % path)
    return path


@pytest.fixture(scope="session")
def kube(kubeconfig):
    return Kube(kubeconfig)


@pytest.fixture(scope="session")
def kube_token(kubeconfig):
    import yaml

    doc = yaml.safe_load(Path(kubeconfig).read_text())
    tokens = [u["user"].get("token") for u in doc.get("users") or [] if u.get("user", {}).get("token")]
    assert tokens, "the lab kubeconfig carries no token"
    return tokens[0]


@pytest.fixture(scope="session")
def seeded_cpu(kube):
    return dict((name, kube.hpa_bounds(name)[2]) for name in SEEDED)


@pytest.fixture(autouse=True)
def seeded(kube, seeded_cpu):
    """Start from the seeded Apex, and put it back afterwards whatever the test did."""
    kube.drop_state()
    if kube.state() != SEEDED:
        kube.restore_seeded(seeded_cpu)
    yield SEEDED
    kube.drop_state()
    kube.restore_seeded(seeded_cpu)


@pytest.fixture
def scratch_deployment(kube):
    """A test-only Deployment (never the shared ones); deleted afterwards."""
    created = []

    def _make(name, image, replicas=1):
        kube.delete_deployment(name)
        created.append(name)
        return kube.create_deployment(name, image, replicas)

    yield _make
    for name in created:
        kube.delete_deployment(name)
