"""Labs on one machine never share a port, and a lab never takes another lab's process for its own.

A CI run lost a test lane's moto: the lane's lab and the self-test's lab assigned ports at the
same moment, both found one port free, the self-test's moto bound it first and the lane's moto
exited; a second `up` would then have adopted the self-test's moto as the lane's own. These
tests need no running lab: they use throw-away lab directories and a registry of their own.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB_PY_DIR = ROOT / "tests" / "lab"
if str(LAB_PY_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_PY_DIR))

from services import procs  # noqa: E402
from services.moto import MARK_MOTO  # noqa: E402

# Each process assigns one lab's ports from a narrow range once the start file appears, so
# that without the machine-wide lock two of them would pick the same port almost surely.
ASSIGN = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from services import procs
from services.state import LabState
procs.PORT_RANGE = (int(sys.argv[3]), int(sys.argv[4]))
go = Path(sys.argv[5])
Path(sys.argv[6]).touch()  # imported: ready to start
while not go.exists():
    time.sleep(0.001)
LabState(sys.argv[2]).assign_ports()
"""


def _free_range(width):
    """``width`` consecutive ports, all free now, from the top of lab.py's range."""
    for start in range(procs.PORT_RANGE[1] - width, procs.PORT_RANGE[0], -width):
        if all(procs.port_free(p) for p in range(start, start + width)):
            return start, start + width
    pytest.skip("no %d consecutive free ports" % width)


def test_labs_assigning_ports_at_the_same_moment_get_disjoint_ports(tmp_path):
    from services.state import PORT_NAMES
    labs = [tmp_path / ("lab%d" % i) for i in range(5)]
    for lab in labs:
        lab.mkdir()
    # room for every lab's ports and a little more: random picks would collide without the lock
    low, high = _free_range(len(labs) * len(PORT_NAMES) + 5)
    go = tmp_path / "go"
    env = dict(os.environ, APEX_LAB_REGISTRY=str(tmp_path / "registry"))
    workers = [subprocess.Popen([sys.executable, "-c", ASSIGN, str(LAB_PY_DIR), str(lab), str(low), str(high),
                                 str(go), str(tmp_path / ("ready%d" % i))], env=env) for i, lab in enumerate(labs)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / ("ready%d" % i)).exists() for i in range(len(labs))):
        assert time.monotonic() < deadline, "the port-assigning processes did not start"
        assert all(w.poll() is None for w in workers), "a port-assigning process died"
        time.sleep(0.01)
    go.touch()
    assert [w.wait(timeout=60) for w in workers] == [0] * len(labs)
    seen = {}
    for lab in labs:
        ports = json.loads((lab / "ports.json").read_text())
        assert set(ports) == set(PORT_NAMES)
        for name, port in ports.items():
            assert low <= port < high
            assert port not in seen, "%s:%s and %s share port %d" % (lab.name, name, seen.get(port), port)
            seen[port] = "%s:%s" % (lab.name, name)
    # every lab is registered; a destroyed lab (no ports.json) drops out of the register
    registry = tmp_path / "registry"
    assert len(list(registry.glob("*.lab"))) == len(labs)
    (labs[0] / "ports.json").unlink()
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                          "from services.port_registry import lab_ports; print(sorted(lab_ports()))",
                          str(LAB_PY_DIR)], env=env, capture_output=True, text=True, check=True).stdout
    assert sorted(json.loads(out)) == sorted(p for p, owner in seen.items() if not owner.startswith("lab0:"))
    assert len(list(registry.glob("*.lab"))) == len(labs) - 1


def _fake_moto(port, cwd, env):
    """A process whose command line carries moto's marker and that listens on ``port``."""
    code = ("import socket, sys, time; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('127.0.0.1', int(sys.argv[-1]))); s.listen(); print('ready', flush=True); time.sleep(120)")
    argv = [sys.executable, "-c", code] + MARK_MOTO.split() + ["-p", str(port)]
    proc = subprocess.Popen(argv, cwd=str(cwd), env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("whose", ["another lab's", "this lab's"])
def test_only_this_labs_process_is_adopted_from_its_port(tmp_path, whose):
    lab, other = tmp_path / "lab", tmp_path / "other"
    for d in (lab / "moto", other):
        d.mkdir(parents=True)
    port = procs.pick_port()
    (lab / "ports.json").write_text(json.dumps({"moto": port}))
    pidfile = lab / "moto" / "moto.pid"
    pidfile.write_text("999999\n")  # stale: the lab lost track of its moto
    env = {k: v for k, v in os.environ.items() if k != "APEX_LAB_DIR"}
    if whose == "this lab's":
        env["APEX_LAB_DIR"] = str(lab)  # how lab.py spawns moto, and the lab's env file sets it
    else:
        env["APEX_LAB_DIR"] = str(other)
    proc = _fake_moto(port, other, env)
    try:
        found = procs.find_pid(pidfile, MARK_MOTO, port)
        if whose == "this lab's":
            assert found == proc.pid and pidfile.read_text().strip() == str(proc.pid)
        else:
            assert found is None and pidfile.read_text().strip() == "999999"
    finally:
        proc.kill()
        proc.wait()


def test_a_process_working_inside_the_lab_is_adopted(tmp_path):
    lab = tmp_path / "lab"
    (lab / "moto").mkdir(parents=True)
    port = procs.pick_port()
    (lab / "ports.json").write_text(json.dumps({"moto": port}))
    pidfile = lab / "moto" / "moto.pid"
    env = {k: v for k, v in os.environ.items() if k != "APEX_LAB_DIR"}
    proc = _fake_moto(port, lab / "moto", env)  # PostgreSQL and Prometheus run in the lab's directory
    try:
        assert procs.find_pid(pidfile, MARK_MOTO, port) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    with socket.socket() as probe:  # the port is free again once the process is gone
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
