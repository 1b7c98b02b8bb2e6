"""Alertmanager (Debian's ``/usr/bin/prometheus-alertmanager``), no cluster gossip. Its route
sends every alert to a webhook at ``http://127.0.0.1:$APEX_EDA_WEBHOOK_PORT/alerts``: a port the
lab reserves for the EDA event source that a test starts (nothing listens there otherwise, and
Alertmanager just retries). ``<lab>/alertmanager/alertmanager.yml`` is rewritten at every up."""
import os

from .procs import answers, find_pid, healthy, http_get, say, spawn, status_row, stop_procs, wait_until
from .state import write_private

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def render_config(webhook_port):
    """The routing: everything to the EDA webhook, grouped per alert, resent quickly (a lab)."""
    return "\n".join([
        "# Written by tests/lab/lab.py (services/alertmanager.py) at every up.",
        "route:",
        "  receiver: eda",
        "  group_by: ['alertname']",
        "  group_wait: 1s",
        "  group_interval: 1s",
        "  repeat_interval: 1h",
        "receivers:",
        "  - name: eda",
        "    webhook_configs:",
        "      - url: http://127.0.0.1:%d/alerts" % webhook_port,
        "        send_resolved: true",
        "",
    ])


class Alertmanager:
    """``start`` spawns without waiting (the process, or None when already running);
    ``ensure(proc)`` waits for ``/-/ready`` (and reloads a running one whose config changed)."""

    def __init__(self, state):
        self.state = state
        self.dir = state.dir / "alertmanager"
        self.config = self.dir / "alertmanager.yml"
        self.log = self.dir / "alertmanager.log"
        self.marker = "--config.file=%s" % self.config  # unique per lab

    def procs(self):
        return (("alertmanager", self.dir / "alertmanager.pid", self.marker, self.pid),)

    def stop(self):
        return stop_procs(self.procs(), bool(self.state.ports))

    def pid(self):
        return find_pid(self.dir / "alertmanager.pid", self.marker, self.state.ports.get("alertmanager"))

    def url(self):
        return "http://127.0.0.1:%d" % self.state.ports["alertmanager"]

    def ready(self):
        status, _ = http_get("127.0.0.1", self.state.ports["alertmanager"], "/-/ready")
        return status == 200

    def write_config(self):
        """True when the file changed."""
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        text = render_config(self.state.ports["eda_webhook"])
        try:
            if self.config.read_text() == text:
                return False
        except OSError:
            pass
        write_private(self.config, text, 0o644)
        return True

    def start(self):
        if self.pid():
            return None
        port = self.state.claim_port("alertmanager")
        self.write_config()
        argv = [ALERTMANAGER, self.marker,
                "--storage.path=%s" % (self.dir / "data"),
                "--web.listen-address=127.0.0.1:%d" % port,
                "--cluster.listen-address=",  # no gossip: a single local instance
                "--log.level=warn"]
        return spawn(argv, self.dir / "alertmanager.pid", self.log, dict(os.environ), self.dir)

    def reload(self):
        import urllib.request
        req = urllib.request.Request(self.url() + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (loopback)
            return resp.status == 200

    def ensure(self, proc):
        if proc is None:
            if not answers(self.ready, 15):
                say("alertmanager (pid %s) does not answer /-/ready; restarting it" % self.pid())
                self.stop()
                proc = self.start()
            elif self.write_config():
                self.reload()
                say("alertmanager reloaded its configuration")
                return True
        wait_until(self.ready, 30, "alertmanager on %d" % self.state.ports["alertmanager"], log=self.log,
                   gone=lambda: not self.pid())
        if proc is not None:
            say("alertmanager up on %s (webhook port %d)" % (self.url(), self.state.ports["eda_webhook"]))
        return proc is not None

    def status_rows(self):
        skipped = "alertmanager" in self.state.skip
        pid = self.pid()
        ok = bool(pid) and healthy(self.ready)
        detail = ("ready; webhook :%s" % self.state.ports.get("eda_webhook")) if ok else (
            "skipped" if skipped else "down")
        return [status_row("alertmanager", self.state.ports.get("alertmanager"), pid, ok, detail,
                           optional=skipped)]
