"""The lab exporter (``python3 -m exporter serve``, tests/lab/exporter): PostgreSQL connection counts
(postgres_exporter's names) and container usage and limits (cAdvisor's and kube-state-metrics'
names, from the simulator) for the alert rules; Prometheus scrapes ``/metrics/postgres`` and
``/metrics/kubernetes`` as two jobs. Plain HTTP on 127.0.0.1."""
import sys

from .env import child_env, write_env
from .procs import START_TIMEOUT, answers, exited, find_pid, healthy, http_get, say, spawn, status_row, stop_procs, wait_until
from .state import ROOT

MARK_EXPORTER = "-m exporter serve"


class Exporter:
    def __init__(self, state):
        self.state = state
        self.dir = state.dir / "exporter"

    def procs(self):
        return (("exporter", self.dir / "exporter.pid", MARK_EXPORTER, self.pid),)

    def pid(self):
        return find_pid(self.dir / "exporter.pid", MARK_EXPORTER, self.state.ports.get("exporter"))

    def live(self):
        status, _ = http_get("127.0.0.1", self.state.ports["exporter"], "/live")
        return status == 200

    def ensure(self):
        if self.pid():
            if answers(self.live, 20):  # a loaded machine answers late, not never
                return False
            say("the exporter (pid %s) does not answer /live; restarting it" % self.pid())
            stop_procs(self.procs(), True)
        self.dir.mkdir(parents=True, exist_ok=True)
        port = self.state.claim_port("exporter")
        write_env(self.state)
        proc = spawn([sys.executable, "-m", "exporter", "serve", "--port", str(port)], self.dir / "exporter.pid",
              self.dir / "exporter.log", child_env(self.state), ROOT)
        wait_until(self.live, START_TIMEOUT, "the lab exporter on %d" % port, log=self.dir / "exporter.log",
                   gone=exited(proc, self.pid))
        say("exporter up on http://127.0.0.1:%d (/metrics/postgres, /metrics/kubernetes)" % port)
        return True

    def status_rows(self):
        skipped = "exporter" in self.state.skip
        pid = self.pid()
        ok = bool(pid) and healthy(self.live)
        return [status_row("exporter", self.state.ports.get("exporter"), pid, ok,
                           "/live 200" if ok else ("skipped" if skipped else "down"), optional=skipped)]
