"""Prometheus (Debian's ``/usr/bin/prometheus``): scrapes the Apex twin's ``/metrics`` every
second and evaluates the collection's alert rules, alerting to the lab's Alertmanager.

Layout under ``<lab>/prometheus``: ``prometheus.yml`` (rewritten at every ``up``), ``data/``
(TSDB), ``rules/`` (copies of ``extensions/prometheus/rules/*.yml`` with every ``for:``
shortened to ``$APEX_LAB_ALERT_FOR``), ``targets/`` (file service discovery: one JSON file
per scraped twin; other lab parts may drop theirs there)."""
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from .procs import answers, exited, find_pid, healthy, http_get, say, spawn, status_row, stop_procs, wait_until
from .state import ROOT, write_private

PROMETHEUS = "/usr/bin/prometheus"
RULES_SOURCE = ROOT / "extensions" / "prometheus" / "rules"
DEFAULT_ALERT_FOR = "2s"
FOR_LINE = re.compile(r"^(\s*for:\s*)(\S+)(.*)$", re.MULTILINE)


def lab_rules(text, alert_for):
    """A rule file as the lab loads it: every ``for:`` duration replaced by ``alert_for``."""
    return FOR_LINE.sub(lambda m: m.group(1) + alert_for + m.group(3), text)


class Prometheus:
    """``start`` spawns without waiting (returns the process, None when already running),
    ``ensure(proc)`` rewrites what changed and waits for ``/-/ready``."""

    def __init__(self, state):
        self.state = state
        self.dir = state.dir / "prometheus"
        self.config = self.dir / "prometheus.yml"
        self.rules_dir = self.dir / "rules"
        self.targets_dir = self.dir / "targets"
        self.log = self.dir / "prometheus.log"
        # the configuration file's path is unique per lab: the precise command-line marker
        self.marker = "--config.file=%s" % self.config

    def procs(self):
        return (("prometheus", self.dir / "prometheus.pid", self.marker, self.pid),)

    def stop(self):
        return stop_procs(self.procs(), bool(self.state.ports))

    def pid(self):
        return find_pid(self.dir / "prometheus.pid", self.marker, self.state.ports.get("prometheus"))

    def url(self):
        return "http://127.0.0.1:%d" % self.state.ports["prometheus"]

    def ready(self):
        status, _ = http_get("127.0.0.1", self.state.ports["prometheus"], "/-/ready")
        return status == 200

    def render_config(self):
        ports = self.state.ports
        ca = self.state.ca_dir / "ca.crt"
        lines = [
            "# Written by tests/lab/lab.py (services/prometheus.py) at every up.",
            "global:",
            "  scrape_interval: 1s",
            "  scrape_timeout: 1s",
            "  evaluation_interval: 1s",
            "rule_files:",
            "  - %s/*.yml" % self.rules_dir,
            "alerting:",
            "  alertmanagers:",
            "    - static_configs:",
            "        - targets: ['127.0.0.1:%d']" % ports["alertmanager"],
            "scrape_configs:",
            "  - job_name: apex",
            "    scheme: https",
            "    tls_config:",
            "      ca_file: %s" % ca,
            "      server_name: localhost",
            "    file_sd_configs:",
            "      - files: ['%s/*.json']" % self.targets_dir,
            "        refresh_interval: 1s",
            # the lab exporter (tests/lab/exporter) stands in for postgres_exporter and for
            # kube-state-metrics + the kubelets' cAdvisor: one job each, as in production
            "  - job_name: postgres",
            "    metrics_path: /metrics/postgres",
            "    static_configs:",
            "      - targets: ['127.0.0.1:%d']" % ports["exporter"],
            "  - job_name: kubernetes",
            "    metrics_path: /metrics/kubernetes",
            "    static_configs:",
            "      - targets: ['127.0.0.1:%d']" % ports["exporter"],
            "",
        ]
        return "\n".join(lines)

    def _write(self, path, text, mode=0o644):
        """Write when different; True when the file changed."""
        try:
            if path.read_text() == text:
                return False
        except OSError:
            pass
        write_private(path, text, mode)
        return True

    def write_files(self):
        """Configuration, scrape targets and rules; True when anything changed."""
        for d in (self.dir, self.rules_dir, self.targets_dir, self.dir / "data"):
            d.mkdir(parents=True, exist_ok=True)
        changed = self._write(self.config, self.render_config())
        twin = [{"targets": ["127.0.0.1:%d" % self.state.ports["twin"]],
                 "labels": {"region": "primary", "service": "apex-api"}}]
        changed |= self._write(self.targets_dir / "twin.json", json.dumps(twin, indent=2) + "\n")
        alert_for = os.environ.get("APEX_LAB_ALERT_FOR") or DEFAULT_ALERT_FOR
        wanted = set()
        if RULES_SOURCE.is_dir():
            for src in sorted(RULES_SOURCE.glob("*.yml")):
                wanted.add(src.name)
                changed |= self._write(self.rules_dir / src.name, lab_rules(src.read_text(), alert_for))
        for old in self.rules_dir.glob("*.yml"):
            if old.name not in wanted:
                old.unlink()
                changed = True
        return changed

    def start(self):
        """Spawn Prometheus (non-blocking; it is ready in about a second)."""
        if self.pid():
            return None
        port = self.state.claim_port("prometheus")
        self.write_files()
        argv = [PROMETHEUS, self.marker,
                "--storage.tsdb.path=%s" % (self.dir / "data"),
                "--storage.tsdb.retention.time=2d",
                "--web.listen-address=127.0.0.1:%d" % port,
                "--web.enable-lifecycle",  # POST /-/reload after a rule or config change
                # lab only: a test forgets series it made (tsdb/delete_series), so its alerts do not fire on
                # into the tests after it for the rules' 5m windows
                "--web.enable-admin-api",
                "--log.level=warn"]
        return spawn(argv, self.dir / "prometheus.pid", self.log, dict(os.environ), self.dir)

    def reload(self):
        req = urllib.request.Request(self.url() + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (loopback)
            return resp.status == 200

    def ensure(self, proc):
        if proc is None:
            if not answers(self.ready, 15):
                say("prometheus (pid %s) does not answer /-/ready; restarting it" % self.pid())
                self.stop()
                proc = self.start()
            elif self.write_files():
                # a running server whose rules or configuration changed: reload, no restart
                self.reload()
                say("prometheus reloaded its configuration and rules")
                return True
        wait_until(self.ready, 30, "prometheus on %d" % self.state.ports["prometheus"], log=self.log,
                   gone=exited(proc, self.pid))
        if proc is not None:
            say("prometheus up on %s (scrape 1s, rules in %s)" % (self.url(), self.rules_dir))
        return proc is not None

    def status_rows(self):
        skipped = "prometheus" in self.state.skip
        pid = self.pid()
        ok = bool(pid) and healthy(self.ready)
        detail = "ready" if ok else ("skipped" if skipped else "down")
        return [status_row("prometheus", self.state.ports.get("prometheus"), pid, ok, detail, optional=skipped)]


def query(url, promql, timeout=5):
    """One instant query against the lab's Prometheus (for lab checks and tests): the
    ``data.result`` list."""
    full = "%s/api/v1/query?%s" % (url, urllib.parse.urlencode({"query": promql}))
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return json.loads(resp.read())["data"]["result"]
    except urllib.error.HTTPError as exc:
        raise RuntimeError("prometheus: %s" % exc.read().decode(errors="replace")) from exc
