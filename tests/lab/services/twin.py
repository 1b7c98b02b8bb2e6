"""The Apex twin: ``migrate up``, then the API (``serve``, HTTPS with the lab CA) and the worker;
and the secondary region's twin (its own port, the standby database, Redis db 1, the secondary
cluster's desired state)."""
import json
import subprocess
import sys
import time

from . import code_fingerprint
from .env import child_env, write_env
from .procs import (START_TIMEOUT, LabError, answers, find_pid, healthy, http_get, say, spawn, status_row,
                    stop_procs, tail, wait_until)
from .state import LAB_PY_DIR, ROOT

MARK_TWIN = {"serve": "-m twin serve", "worker": "-m twin worker"}  # command-line markers
# the secondary region's warm standby: no ready replicas until a failover scales them up
# (the simulator's bridge rewrites this file from the apex-secondary cluster)
SECONDARY_INITIAL_STATE = {"api_ready_replicas": 0, "worker_ready_replicas": 0, "_source": "lab (initial)"}


class Twin:
    """``ensure``: migrations, then the API and the worker, each started only if it is not running."""

    def __init__(self, state):
        self.state = state
        self.twin_dir, self.ca_dir = state.twin_dir, state.ca_dir

    def procs(self):
        sec = self.state.twin_secondary_dir
        return (("twin worker", self.twin_dir / "worker.pid", MARK_TWIN["worker"], lambda: self.pid("worker")),
                ("twin serve", self.twin_dir / "serve.pid", MARK_TWIN["serve"], lambda: self.pid("serve")),
                ("secondary twin worker", sec / "worker.pid", MARK_TWIN["worker"],
                 lambda: self.secondary_pid("worker")),
                ("secondary twin serve", sec / "serve.pid", MARK_TWIN["serve"],
                 lambda: self.secondary_pid("serve")))

    def stop(self):
        return stop_procs(self.procs(), bool(self.state.ports))

    def pid(self, role):
        return find_pid(self.twin_dir / ("%s.pid" % role), MARK_TWIN[role],
                        self.state.ports.get("twin") if role == "serve" else None)

    def secondary_pid(self, role):
        return find_pid(self.state.twin_secondary_dir / ("%s.pid" % role), MARK_TWIN[role],
                        self.state.ports.get("twin_secondary") if role == "serve" else None)

    def live(self, port_name="twin"):
        status, _ = http_get("127.0.0.1", self.state.ports[port_name], "/live", tls_ca=self.ca_dir / "ca.crt")
        return status == 200

    def secondary_live(self):
        return self.live("twin_secondary")

    def ensure_secondary(self):
        """The secondary region's twin: no migration (its database is the read-only standby
        until a failover promotes it); its own Redis db, so its worker never takes the primary
        region's tasks; its desired state from the apex-secondary cluster (0 ready replicas)."""
        sec = self.state.twin_secondary_dir
        if self.secondary_pid("serve") and self.secondary_pid("worker") and answers(self.secondary_live, 20):
            return False
        if self.secondary_pid("serve"):  # running but not answering
            say("the secondary twin (pid %s) does not answer /live; restarting it" % self.secondary_pid("serve"))
            stop_procs(self.procs()[2:], bool(self.state.ports))
        state_file = sec / "desired.json"
        if not state_file.exists():
            tmp = sec / ".desired.json.tmp"
            tmp.write_text(json.dumps(SECONDARY_INITIAL_STATE))
            tmp.rename(state_file)
        env = child_env(self.state)
        s, p = self.state.secrets, self.state.ports
        args = ["--state", str(state_file),
                "--dsn", env["APEX_PG_STANDBY_APP_DSN"],
                "--redis-url", "redis://:%s@127.0.0.1:%d/1" % (s["redis_password"], p["redis"])]
        changed = False
        if not self.secondary_pid("serve"):
            port = self.state.claim_port("twin_secondary")
            write_env(self.state)
            env = child_env(self.state)
            spawn([sys.executable, "-m", "twin", "serve", "--port", str(port)] + args, sec / "serve.pid",
                  sec / "serve.log", env, ROOT)
            changed = True
        if not self.secondary_pid("worker"):
            spawn([sys.executable, "-m", "twin", "worker"] + args, sec / "worker.pid", sec / "worker.log", env, ROOT)
            changed = True
        wait_until(self.secondary_live, START_TIMEOUT, "the secondary Apex twin on %d" % p["twin_secondary"],
                   log=sec / "serve.log", gone=lambda: not self.secondary_pid("serve"))
        if changed:
            say("secondary Apex twin up on https://localhost:%d" % p["twin_secondary"])
        return changed

    def ensure(self):
        changed = False
        if self.pid("serve") and self.pid("worker"):
            if answers(self.live, 20):
                code_fingerprint.notice(self.state, "twin")
                return self.ensure_secondary()
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
        return self.ensure_secondary() or changed

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
        sec_pid = self.secondary_pid("serve")
        sec_ok = bool(sec_pid) and healthy(self.secondary_live)
        return [status_row("twin-api", port, pid, ok, detail, optional=skipped),
                status_row("twin-worker", None, worker, bool(worker),
                           "running" if worker else ("skipped" if skipped else "down"), optional=skipped),
                status_row("twin-secondary", self.state.ports.get("twin_secondary"), sec_pid, sec_ok,
                           "/live 200 (secondary region)" if sec_ok else ("skipped" if skipped else "down"),
                           optional=skipped)]
