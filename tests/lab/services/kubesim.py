"""The Kubernetes simulator (``python3 -m kubesim serve``): both clusters in one process."""
import http.client
import json
import os
import ssl
import sys

from . import code_fingerprint
from .env import child_env, write_env
from .procs import START_TIMEOUT, LabError, answers, find_pid, healthy, say, spawn, status_row, stop_procs, wait_until
from .state import LAB_PY_DIR, ROOT

MARK_KUBESIM = "-m kubesim serve "  # command-line marker (precise: `pytest .../kubesim` must not match)
# environment variable -> `kubesim serve` flag (docs/kubesim.md, docs/lab.md)
KUBESIM_FLAGS = (("KUBESIM_POD_READY_DELAY", "--pod-ready-delay"), ("KUBESIM_TIME_FACTOR", "--time-factor"),
                 ("KUBESIM_HPA_SYNC", "--hpa-sync"), ("KUBESIM_CRASH_INTERVAL", "--crash-interval"),
                 ("KUBESIM_JOB_DURATION", "--job-duration"))


class Kubesim:
    """``start`` spawns without waiting (True if it did), ``ensure(spawned)`` waits for /readyz."""

    def __init__(self, state):
        self.state = state
        self.kube_dir = state.kube_dir

    def procs(self):
        return (("kubesim", self.kube_dir / "kubesim.pid", MARK_KUBESIM, self.pid),)

    def stop(self):
        return stop_procs(self.procs(), bool(self.state.ports))

    def pid(self):
        return find_pid(self.kube_dir / "kubesim.pid", MARK_KUBESIM, self.state.ports.get("kube_primary"))

    def ready(self):
        """``GET /readyz`` on the primary cluster's API server: HTTPS (the simulator's own serving
        certificate; readiness only, so not verified here), plain HTTP only if TLS is refused."""
        port = self.state.ports["kube_primary"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system CA bundle to load (~50 ms)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for conn in (http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx),
                     http.client.HTTPConnection("127.0.0.1", port, timeout=2)):
            try:
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                resp.read()
                return resp.status == 200
            except ssl.SSLError:
                continue  # not a TLS server: try plain HTTP
            except (OSError, http.client.HTTPException):
                return False
            finally:
                conn.close()
        return False

    def scale(self, cluster, deployment, replicas, namespace="apex"):
        """PATCH a Deployment's scale subresource on one simulated cluster (``primary`` or
        ``secondary``); e.g. the secondary back to its warm-standby 0 after a failover test."""
        port = self.state.ports["kube_%s" % cluster]
        token = json.loads((self.kube_dir / "tokens.json").read_text())[cluster]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(self.state.ca_dir / "ca.crt"))
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
        try:
            conn.request("PATCH", "/apis/apps/v1/namespaces/%s/deployments/%s/scale" % (namespace, deployment),
                         body=json.dumps({"spec": {"replicas": replicas}}),
                         headers={"Authorization": "Bearer %s" % token,
                                  "Content-Type": "application/merge-patch+json"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise LabError("scaling %s on %s answered %s: %s" % (deployment, cluster, resp.status, body[:200]))

    def start(self):
        """Spawn the simulator early (it imports and seeds while PostgreSQL starts); True if
        spawned. ensure_kubesim() waits for it later."""
        if "kubesim" in self.state.skip or not self.state.package("kubesim") or self.pid():
            return False
        p1, p2 = self.state.claim_port("kube_primary"), self.state.claim_port("kube_secondary")
        write_env(self.state)
        # timing knobs from the caller's KUBESIM_* (e.g. `KUBESIM_POD_READY_DELAY=5 make lab-up`),
        # as explicit flags so `ps` shows them; the simulator reads the same variables itself
        flags = []
        for var, flag in KUBESIM_FLAGS:
            if os.environ.get(var):
                flags += [flag, os.environ[var]]
        spawn([sys.executable, "-m", "kubesim", "serve", "--lab-dir", str(self.state.dir),
               "--primary-port", str(p1), "--secondary-port", str(p2)] + flags,
              self.kube_dir / "kubesim.pid", self.kube_dir / "kubesim.log", child_env(self.state), ROOT)
        code_fingerprint.record(self.state, "kubesim")
        return True

    def ensure(self, spawned=False):
        if not spawned and self.pid():
            if answers(self.ready, 20):
                code_fingerprint.notice(self.state, "kubesim")
                return False
            say("kubesim (pid %s) does not answer /readyz; restarting it" % self.pid())
            self.stop()
        if not spawned:
            self.start()
        p1, p2 = self.state.ports["kube_primary"], self.state.ports["kube_secondary"]
        wait_until(self.ready, START_TIMEOUT, "kubesim on %d" % p1,
                   log=self.kube_dir / "kubesim.log", gone=lambda: not self.pid())
        say("kubesim up on 127.0.0.1:%d (primary) and :%d (secondary)" % (p1, p2))
        return True

    def status_rows(self):
        p = self.state.ports
        ports = "%s,%s" % (p.get("kube_primary"), p.get("kube_secondary"))
        if not (LAB_PY_DIR / "kubesim" / "__main__.py").exists():
            return [status_row("kubesim", ports, None, True, "not present (tests/lab/kubesim missing)", optional=True)]
        pid = self.pid()
        ok = bool(pid) and healthy(self.ready)
        skipped = "kubesim" in self.state.skip
        detail = "readyz ok" if ok else ("skipped" if skipped else "down")
        if ok and code_fingerprint.changed(self.state, "kubesim"):
            detail += "; code changed since start (lab.py restart kubesim)"
        return [status_row("kubesim", ports, pid, ok, detail, optional=skipped)]
