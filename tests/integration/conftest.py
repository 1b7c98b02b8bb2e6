"""Shared fixtures for integration tests: they run against the lab's real services.

Start the lab first (``make lab-up``). A test never skips because the lab is down: it fails,
so a green run always means the services were really exercised.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: the helpers beside this file

from warm_modules import WarmModuleRunner  # noqa: E402  pylint: disable=wrong-import-position


def select_worker_lab(environ=None):
    """Give each pytest-xdist worker a lab of its own.

    ``APEX_LAB_DIRS`` lists lab directories (``os.pathsep``-separated); worker ``gwN`` takes the
    Nth (modulo their count) by setting ``APEX_LAB_DIR`` for itself and every program it starts.
    Done at import, before any conftest below reads ``APEX_LAB_DIR``. Without xdist, or without
    ``APEX_LAB_DIRS``, nothing changes.
    """
    environ = os.environ if environ is None else environ
    labs = [p for p in environ.get("APEX_LAB_DIRS", "").split(os.pathsep) if p]
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    if labs and worker.startswith("gw") and worker[2:].isdigit():
        environ["APEX_LAB_DIR"] = labs[int(worker[2:]) % len(labs)]


select_worker_lab()

# Files that take minutes (Helm rollouts, Prometheus windows, restores), longest first. They are
# handed out before the rest: with `--dist loadfile` a long file scheduled last leaves one worker
# finishing it alone while the other idles. (xdist's own order, most tests first, put these last:
# tests/run-all.sh passes --no-loadscope-reorder so that this order holds.)
LONG_FILES = (
    "maintenance/test_zero_downtime.py",
    "release/test_playbooks.py",
    "backup/test_playbooks.py",
    "maintenance/test_maintenance.py",
    "failover/test_region_failover.py",
    "db/test_playbooks.py",
    "k8s/test_playbooks.py",
    "alerts/test_alert_responses.py",
    "backup/test_pitr.py",
    "ee/test_execution_environment.py",
)


def long_files_first(items, root=Path(__file__).resolve().parent):
    """Sort test items so that LONG_FILES come first, in that order; stable otherwise."""
    def rank(item):
        try:
            rel = Path(str(item.fspath)).resolve().relative_to(root).as_posix()
        except ValueError:
            return len(LONG_FILES)
        return LONG_FILES.index(rel) if rel in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)


def pytest_collection_modifyitems(items):
    long_files_first(items)


LAB_DIR = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab"))
COLLECTIONS = LAB_DIR / "collections"


def read_lab_env(path=LAB_DIR / "env"):
    """Parse the ``export K=V`` lines of .lab/env (values shell-quoted)."""
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        key, sep, value = line[len("export "):].partition("=")
        if not sep:
            continue
        parts = shlex.split(value) if value else [""]
        env[key] = parts[0] if parts else ""
    return env


def ensure_collection_link():
    """Make ``ansible_collections.apex.ops`` resolve to this checkout."""
    link = COLLECTIONS / "ansible_collections" / "apex" / "ops"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT)
    return COLLECTIONS


@pytest.fixture(scope="session")
def lab():
    env_file = LAB_DIR / "env"
    if not env_file.exists():
        pytest.fail("the lab is not up: run `make lab-up` first (%s missing)" % env_file)
    return read_lab_env(env_file)


@pytest.fixture(scope="session")
def lab_process_env(lab):
    """The environment a module or playbook sees in the lab."""
    env = dict(os.environ)
    env.update(lab)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ensure_collection_link())
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    return env


class ModuleResult(dict):
    @property
    def failed(self):
        return bool(self.get("failed"))


@pytest.fixture(scope="session")
def module_process(lab_process_env):
    """``module_process.run(module, args, env=None, timeout=300)``: ``python -m module args`` in the
    lab's environment (the collection importable), from a warm interpreter (warm_modules.py)."""
    env = dict(lab_process_env)
    env["PYTHONPATH"] = os.pathsep.join([str(COLLECTIONS), env.get("PYTHONPATH", "")])
    runner = WarmModuleRunner(env, ROOT)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def run_module(module_process):
    """Run a module of this collection directly (no ansible-playbook), as Ansible would.

    ``run_module("apex_db_maint", check_mode=True, state="facts")`` returns the result dict;
    the raw stdout/stderr are kept under ``_stdout``/``_stderr`` for secret-leak assertions.
    """

    def _run(module_name, /, check_mode=False, diff=False, env=None, timeout=300, **args):
        payload = dict(args)
        payload["_ansible_check_mode"] = check_mode
        payload["_ansible_diff"] = diff
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
            args_path = handle.name
        proc_env = dict(module_process.env)
        if env:
            proc_env.update(env)
        try:
            proc = module_process.run("ansible_collections.apex.ops.plugins.modules.%s" % module_name, [args_path],
                                      env=proc_env, timeout=timeout)
        finally:
            os.unlink(args_path)
        try:
            result = ModuleResult(json.loads(proc.stdout))
        except ValueError:
            raise AssertionError("module %s printed no JSON (rc=%s)\nstdout:%s\nstderr:%s"
                                 % (module_name, proc.returncode, proc.stdout, proc.stderr))
        result["_stdout"], result["_stderr"] = proc.stdout, proc.stderr
        return result

    return _run


@pytest.fixture(scope="session")
def run_playbook(lab_process_env):
    """Run ``ansible-playbook`` against the lab inventory; returns the CompletedProcess."""

    def _run(playbook, extra_vars=None, check=False, verbosity=0, env=None, timeout=900, extra_args=()):
        cmd = ["ansible-playbook", str(ROOT / playbook) if not str(playbook).startswith("apex.ops.") else playbook]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        cmd += list(extra_args)
        proc_env = dict(lab_process_env)
        if env:
            proc_env.update(env)
        return subprocess.run(cmd, capture_output=True, text=True, env=proc_env, timeout=timeout, cwd=str(ROOT), check=False)

    return _run


@pytest.fixture
def rds(lab):
    """A Redis client on the lab's Redis (db 0, the lab twin's queue)."""
    import redis

    client = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                         password=lab["APEX_REDIS_PASSWORD"], decode_responses=True)
    yield client
    client.close()
