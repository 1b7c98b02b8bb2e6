"""Test helpers for the twin: start twin processes, poll conditions (used by tests/integration/twin).

Importable by any test once ``tests/lab`` is on ``sys.path``: ``from twin.testing import Twin``.
"""
import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from .state import write_state

ROOT = Path(__file__).resolve().parents[3]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # keep polling; report the last error
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s; last observed: %r" % (timeout, what, last))


def dsn_with(dsn, **changes):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    params = conninfo_to_dict(dsn)
    params.update(changes)
    return make_conninfo(**params)


class Proc:
    """A twin command started by a test, its log kept for failure messages."""

    def __init__(self, args, env, log_path):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "twin"] + args, env=env, cwd=str(ROOT),
                                      stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def alive(self):
        return self.popen.poll() is None

    def kill(self):
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self):
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log.close()


class Twin:
    """A twin API process on a free port with its own desired-state file."""

    def __init__(self, env, tmp, name, ca_file):
        self.env = dict(env)
        self.tmp = tmp
        self.name = name
        self.port = free_port()
        self.state_path = str(tmp / ("%s-desired.json" % name))
        self.env.update(APEX_TWIN_PORT=str(self.port), APEX_TWIN_STATE=self.state_path)
        self.ca_file = ca_file
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.proc = None
        self.settle = float(self.env.get("APEX_TWIN_STATE_INTERVAL", "0.2")) * 2 + 0.03

    def start(self):
        write_state(self.state_path, {})
        self.proc = Proc(["serve"], self.env, str(self.tmp / ("%s-serve.log" % self.name)))
        wait_for(lambda: self._live(), 10, what="twin %s /live" % self.name)
        return self

    def _live(self):
        if not self.proc.alive():
            raise AssertionError("twin serve exited:\n" + self.proc.output())
        try:
            return self.request("GET", "/live")[0] == 200
        except OSError:
            return False

    def connect(self, timeout=10):
        """A keep-alive connection to reuse with ``request(..., conn=c)``."""
        return http.client.HTTPSConnection("localhost", self.port, context=self.ssl, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10, conn=None):
        keep = conn is not None
        conn = conn or self.connect(timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("Content-Type", "")
            doc = json.loads(raw) if ctype.startswith("application/json") and raw else raw.decode()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, doc
        finally:
            if not keep:
                conn.close()

    def set_state(self, **state):
        """Replace the desired state; returns once the server can have seen it.

        Test twins run with APEX_TWIN_STATE_INTERVAL=0.02 (default 0.2 s), hence ``settle``.
        """
        write_state(self.state_path, state)
        time.sleep(self.settle)

    def stop(self):
        if self.proc:
            self.proc.stop()
