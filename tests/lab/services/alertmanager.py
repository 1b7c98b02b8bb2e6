"""Alertmanager (Debian's ``/usr/bin/prometheus-alertmanager``), no cluster gossip. Its routing is
the collection's (``extensions/prometheus/alertmanager/alertmanager.yml``): every Apex alert goes to
the EDA webhook at ``http://127.0.0.1:$APEX_EDA_WEBHOOK_PORT/alerts``, a port the lab reserves for
the event source a test starts (nothing listens there otherwise, and Alertmanager just retries). ``<lab>/alertmanager/alertmanager.yml`` is rewritten at every up."""
import os

from .procs import answers, exited, find_pid, healthy, http_get, say, spawn, status_row, stop_procs, wait_until
from .state import ROOT, write_private

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
ROUTING_SOURCE = ROOT / "extensions" / "prometheus" / "alertmanager" / "alertmanager.yml"
EDA_RECEIVER = "apex-eda"


def render_config(webhook_port):
    """The collection's routing (extensions/prometheus/alertmanager/alertmanager.yml, owned with the
    rules) as the lab runs it: the EDA receiver posts to the lab's webhook port (no token), the
    receivers for people (pager, chat) have no target, and every group is sent after 1 s."""
    import yaml  # a lab dependency (PyYAML comes with ansible-core); lazily, as lab.py's start-up is stdlib
    config = yaml.safe_load(ROUTING_SOURCE.read_text())
    for receiver in config["receivers"]:
        targets = {k: v for k, v in receiver.items() if k.endswith("_configs")}
        for key in targets:
            del receiver[key]
        if "webhook_configs" in targets and receiver["name"] == EDA_RECEIVER:
            receiver["webhook_configs"] = [{"url": "http://127.0.0.1:%d/alerts" % webhook_port, "send_resolved": True}]

    def quick(route):
        for key in ("group_wait", "group_interval"):
            route[key] = "1s"
        for child in route.get("routes", []):
            quick(child)
    quick(config["route"])
    return "# Written by tests/lab/lab.py (services/alertmanager.py) at every up from %s.\n%s" % (
        ROUTING_SOURCE.relative_to(ROOT), yaml.safe_dump(config, sort_keys=False, default_flow_style=False))


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
                   gone=exited(proc, self.pid))
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
