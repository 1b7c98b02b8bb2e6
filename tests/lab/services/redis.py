"""Redis with a password and RDB persistence (daemonized by redis-server itself)."""
import socket
import time

from .procs import healthy, pid_alive, read_pid, rotate_log, say, status_row, wait_until
from .state import write_private

REDIS_SERVER = "/usr/bin/redis-server"


class Redis:
    """``ensure`` (idempotent); ``down`` stops it through ``procs()``."""

    def __init__(self, state):
        self.state = state
        self.redis_dir = state.redis_dir

    def procs(self):
        return (("redis-server", self.redis_dir / "redis.pid", "redis-server", self.pid),)

    def pid(self):
        pid = read_pid(self.redis_dir / "redis.pid")
        return pid if pid_alive(pid, "redis-server") else None

    def ping(self, port=None):
        port = port or self.state.ports["redis"]
        pw = self.state.secrets["redis_password"]
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            payload = "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(pw), pw)
            sock.sendall(payload.encode())
            data = b""
            deadline = time.monotonic() + 2
            while data.count(b"\r\n") < 2 and time.monotonic() < deadline:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        return data.startswith(b"+OK\r\n+PONG")

    def ensure(self):
        if self.pid():
            wait_until(self.ping, 10, "Redis", log=self.redis_dir / "redis.log")
            return False
        pidfile = self.redis_dir / "redis.pid"
        if pidfile.exists():
            say("removing stale %s" % pidfile)
            pidfile.unlink()
        port = self.state.claim_port("redis")

        def q(v):
            return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')
        conf = "\n".join([
            "# Written by tests/lab/lab.py (services/redis.py) at every start.",
            "bind 127.0.0.1",
            "protected-mode yes",
            "port %d" % port,
            "requirepass %s" % q(self.state.secrets["redis_password"]),
            "dir %s" % q(self.redis_dir),
            "dbfilename dump.rdb",
            "save 900 1",
            "save 300 10",
            "save 60 10000",
            "appendonly no",
            "daemonize yes",
            "pidfile %s" % q(pidfile),
            "logfile %s" % q(self.redis_dir / "redis.log"),
            "loglevel notice",
            "databases 16",
            "",
        ])
        conf_path = self.redis_dir / "redis.conf"
        rotate_log(self.redis_dir / "redis.log")
        write_private(conf_path, conf)
        self.state.run([REDIS_SERVER, conf_path], timeout=30)
        wait_until(lambda: self.pid() and self.ping(port), 15, "Redis on %d" % port,
                   log=self.redis_dir / "redis.log")
        say("Redis up on 127.0.0.1:%d" % port)
        return True

    def status_rows(self):
        pid = self.pid()
        ok = bool(pid) and healthy(self.ping)
        return [status_row("redis", self.state.ports.get("redis"), pid, ok, "PONG" if ok else "down")]
