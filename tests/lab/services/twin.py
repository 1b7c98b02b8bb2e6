"""The Apex twin: ``migrate up``, then the API (``serve``, HTTPS with the lab CA) and the worker."""
import subprocess
import sys
import time

from . import code_fingerprint
from .env import child_env, write_env
from .procs import (START_TIMEOUT, LabError, answers, find_pid, healthy, http_get, say, spawn, status_row,
                    stop_procs, tail, wait_until)
from .state import LAB_PY_DIR, ROOT

MARK_TWIN = {"serve": "-m twin serve", "worker": "-m twin worker"}  # command-line markers


class Twin:
    """``ensure``: migrations, then the API and the worker, each started only if it is not running."""

    def __init__(self, state):
        self.state = state
        self.twin_dir, self.ca_dir = state.twin_dir, state.ca_dir

    def procs(self):
        return (("twin worker", self.twin_dir / "worker.pid", MARK_TWIN["worker"], lambda: self.pid("worker")),
                ("twin serve", self.twin_dir / "serve.pid", MARK_TWIN["serve"], lambda: self.pid("serve")))

    def stop(self):
        return stop_procs(self.procs(), bool(self.state.ports))

    def pid(self, role):
        return find_pid(self.twin_dir / ("%s.pid" % role), MARK_TWIN[role],
                        self.state.ports.get("twin") if role == "serve" else None)

    def live(self):
        status, _ = http_get("127.0.0.1", self.state.ports["twin"], "/live", tls_ca=self.ca_dir / "ca.crt")
        return status == 200

    def ensure(self):
        changed = False
        if self.pid("serve") and self.pid("worker"):
            if answers(self.live, 20):
                code_fingerprint.notice(self.state, "twin")
                return False
            say("the twin (pid %s) does not answer /live; restarting it" % self.pid("serve"))
            self.stop()
        if not self.pid("serve") or not self.pid("worker"):
            write_env(self.state)
            env = child_env(self.state)
            log = self.twin_dir / "migrate.log"
            proc = subprocess.run([sys.executable, "-m", "twin", "migrate", "up"], env=env, cwd=str(ROOT),
                                  capture_output=True, text=True, timeout=300)
            with open(str(log), "a") as handle:
                handle.write("\n--- %s migrate up rc=%s\n%s%s" % (time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                                  proc.returncode, proc.stdout, proc.stderr))
            if proc.returncode != 0:
                raise LabError("twin migrate up failed (rc=%s):\n%s" % (proc.returncode, tail(log)))
        if not self.pid("serve"):
            self.state.claim_port("twin")
            write_env(self.state)
            spawn([sys.executable, "-m", "twin", "serve"], self.twin_dir / "serve.pid",
                  self.twin_dir / "serve.log", child_env(self.state), ROOT)
            code_fingerprint.record(self.state, "twin")
            changed = True
        if not self.pid("worker"):
            spawn([sys.executable, "-m", "twin", "worker"], self.twin_dir / "worker.pid",
                  self.twin_dir / "worker.log", child_env(self.state), ROOT)
            changed = True
        wait_until(self.live, START_TIMEOUT, "the Apex twin on %d" % self.state.ports["twin"],
                   log=self.twin_dir / "serve.log", gone=lambda: not self.pid("serve"))
        if not self.pid("worker"):
            raise LabError("the twin worker exited:\n%s" % tail(self.twin_dir / "worker.log"))
        if changed:
            say("Apex twin up on https://localhost:%d (worker pid %s)" % (self.state.ports["twin"], self.pid("worker")))
        return changed

    def status_rows(self):
        port = self.state.ports.get("twin")
        if not (LAB_PY_DIR / "twin" / "__main__.py").exists():
            return [status_row("twin", port, None, True, "not present (tests/lab/twin missing)", optional=True)]
        skipped = "twin" in self.state.skip
        pid = self.pid("serve")
        ok = bool(pid) and healthy(self.live)
        detail = "/live 200" if ok else ("skipped" if skipped else "down")
        if ok and code_fingerprint.changed(self.state, "twin"):
            detail += "; code changed since start (lab.py restart twin)"
        worker = self.pid("worker")
        return [status_row("twin-api", port, pid, ok, detail, optional=skipped),
                status_row("twin-worker", None, worker, bool(worker),
                           "running" if worker else ("skipped" if skipped else "down"), optional=skipped)]
