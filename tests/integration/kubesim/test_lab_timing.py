"""The lab passes the simulator's timing knobs through: `KUBESIM_POD_READY_DELAY=5 make lab-up`.

Starts a private lab directory holding only the simulator (through lab.py's own start path,
nothing shared is touched) with KUBESIM_POD_READY_DELAY set, and checks that a new pod really
takes that long to become Ready."""
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lab import Lab  # tests/lab is on sys.path (conftest.py)
from services.env import child_env
from services.pki import ensure_pki

DELAY = 3.0  # long enough that a slow kubectl start-up still sees the pod Pending

POD = """apiVersion: v1
kind: Pod
metadata:
  name: timing-probe
  namespace: default
spec:
  containers:
  - name: c
    image: apex/api:1.0.0
"""


@pytest.fixture
def private_kubesim(monkeypatch):
    lab_dir = tempfile.mkdtemp(prefix="apex-lab-timing.", dir="/tmp")
    monkeypatch.setenv("APEX_LAB_DIR", lab_dir)
    monkeypatch.setenv("APEX_LAB_SKIP", "twin")
    monkeypatch.setenv("KUBESIM_POD_READY_DELAY", str(DELAY))
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # a KUBE* override: dropped
    lab = Lab(lab_dir)
    try:
        lab.state.ensure_layout()
        lab.state.secrets  # noqa: B018 (generate once)
        lab.state.assign_ports()
        ensure_pki(lab.state)
        env = child_env(lab.state)
        assert env["KUBESIM_POD_READY_DELAY"] == str(DELAY)
        assert env["KUBECONFIG"] == str(Path(lab_dir) / "kube" / "kubeconfig")
        lab.kubesim.ensure(lab.kubesim.start())
        yield lab
    finally:
        lab.kubesim.stop()  # only this private lab's simulator
        shutil.rmtree(lab_dir, ignore_errors=True)


def test_pod_ready_delay_reaches_the_lab_simulator(private_kubesim):
    lab = private_kubesim
    pid = lab.kubesim.pid()
    cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    assert [b"--pod-ready-delay", str(DELAY).encode()] == \
        cmdline[cmdline.index(b"--pod-ready-delay"):][:2]
    kubeconfig = str(lab.state.kube_dir / "kubeconfig")

    def kubectl(*args, **kw):
        return subprocess.run(["kubectl", "--kubeconfig", kubeconfig] + list(args),
                              capture_output=True, text=True, check=True, timeout=60, **kw)
    started = time.monotonic()
    kubectl("apply", "-f", "-", input=POD)
    seen_unready = False
    ready_after = None
    while time.monotonic() - started < 15:
        pod = json.loads(kubectl("get", "pod", "timing-probe", "-n", "default",
                                 "-o", "json").stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in pod.get("status", {}).get("conditions") or [])
        if ready:
            ready_after = time.monotonic() - started
            break
        seen_unready = seen_unready or pod["status"].get("phase") == "Pending"
        time.sleep(0.05)
    assert ready_after is not None, "the pod never became Ready"
    assert seen_unready, "the pod was never seen not Ready"
    # the default delay is 0.2 s: Ready before DELAY means the variable did not arrive
    assert DELAY <= ready_after < DELAY + 5, ready_after
