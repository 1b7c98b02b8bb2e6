"""Test helpers for the twin: start twin processes, poll conditions (used by tests/integration/twin).

Importable by any test once ``tests/lab`` is on ``sys.path``: ``from twin.testing import Twin``.
"""
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from .common import pid_alive
from .state import write_state

ROOT = Path(__file__).resolve().parents[3]


def _lab_ports():
    """Ports the labs on this machine have persisted (the shared lab, this run's, every lab in
    lab.py's port registry): a service of theirs that is down comes back on them."""
    from services.port_registry import lab_ports  # tests/lab is on sys.path
    return lab_ports(also=(Path(os.environ.get("APEX_LAB_DIR") or ROOT / ".lab"), ROOT / ".lab"))


def free_port():
    """A port free right now, for a process started later. From lab.py's range (below the
    kernel's ephemeral range), so no client socket can take it before the process binds it,
    as could happen to a port-0 pick; Twin.start still retries if the bind fails."""
    from lab import pick_port  # tests/lab/lab.py: tests/lab is on sys.path, as for ``twin``
    return pick_port(_lab_ports())


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


# Test twins share the lab's Redis: each claims a db of its own among these (never db 0, the
# lab twin's) with SET NX on this key, owned by the claiming pid (a dead owner's claim is stale).
REDIS_DBS = range(9, 16)
REDIS_CLAIM_KEY = "apex-twin-test:claimed-by"


def claim_redis_db(url):
    """``(db number, db url, client)`` of the first free test db on the Redis at ``url``."""
    import redis
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    for number in REDIS_DBS:
        db_url = urlunsplit((parts.scheme, parts.netloc, "/%d" % number, "", ""))
        client = redis.Redis.from_url(db_url, decode_responses=True)
        owner = client.get(REDIS_CLAIM_KEY)
        stale = bool(owner and owner.isdigit() and not pid_alive(int(owner)))
        if client.set(REDIS_CLAIM_KEY, str(os.getpid()), nx=not stale, ex=1800):
            return number, db_url, client
        client.close()
    raise AssertionError("no free Redis db in %s for a test twin (claims: key %s)" % (list(REDIS_DBS), REDIS_CLAIM_KEY))


def clear_apex_keys(client):
    keys = list(client.scan_iter(match="apex:*", count=500))
    if keys:
        client.delete(*keys)


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

    def start(self, attempts=5):
        write_state(self.state_path, {})
        for attempt in range(attempts):
            log = self.tmp / ("%s-serve%s.log" % (self.name, "-%d" % attempt if attempt else ""))
            self.proc = Proc(["serve"], self.env, str(log))
            # its own "listening" line first: /live alone could be answered by whoever holds the port
            wait_for(lambda: not self.proc.alive() or ('"listening"' in self.proc.output() and self._live()),
                     10, what="twin %s /live" % self.name)
            if self.proc.alive():
                return self
            output = self.proc.output()
            self.proc.stop()
            if '"listen_failed"' not in output or attempt == attempts - 1:
                raise AssertionError("twin serve exited:\n" + output)
            # another process bound the port between free_port() and the twin: take a new one
            self.port = free_port()
            self.env["APEX_TWIN_PORT"] = str(self.port)

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
