"""Alert -> response, end to end in the lab: a real fault, the rule firing in the lab's Prometheus,
Alertmanager's webhook, ansible-rulebook (extensions/eda/rulebooks/apex_alerts.yml with the
apex.ops.alertmanager source), the response playbook, its report.

Two faults at once (one rulebook, one wait): workers that take no task (APEX__WORKER__CONCURRENCY=0)
under 150 submitted tasks -> ApexTaskQueueBacklog, with the worker-scaling action switched on; and
apex-api's pods at 95 % of their memory limit (the simulator's memory-utilization annotation, read by
the lab exporter as cAdvisor would) -> ApexResourceExhaustion, actions left off: diagnosis only."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULEBOOK = ROOT / "extensions" / "eda" / "rulebooks" / "apex_alerts.yml"
MEMORY_ANNOTATION = "kubesim.apex.dev/memory-utilization"
BACKLOG_TASKS = 150


def _get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())


def _kubectl(env, *args):
    proc = subprocess.run(["kubectl", "--context", "apex-primary", "-n", "apex"] + list(args), capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def _replicas(env, name):
    return json.loads(_kubectl(env, "get", "deployment", name, "-o", "json"))["spec"]["replicas"]


def _worker_concurrency(env):
    spec = json.loads(_kubectl(env, "get", "deployment", "apex-worker", "-o", "json"))["spec"]
    for var in spec["template"]["spec"]["containers"][0].get("env") or []:
        if var["name"] == "APEX__WORKER__CONCURRENCY":
            return var.get("value")
    return None


def _poll(check, timeout, what, interval=0.2):
    """check() -> truthy when done; fails naming what was last seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s; last seen: %r" % (timeout, what, last))


class Rulebook:
    def __init__(self, proc, log, reports, port):
        self.proc, self.log, self.reports, self.port = proc, log, reports, port

    def output(self):
        return self.log.read_text(errors="replace")

    def report(self, procedure, timeout=180):
        def found():
            if self.proc.poll() is not None:
                raise AssertionError("ansible-rulebook exited (rc=%s):\n%s" % (self.proc.returncode, self.output()[-4000:]))
            files = sorted(self.reports.glob("%s-*.json" % procedure))
            return json.loads(files[0].read_text()) if files else None
        try:
            return _poll(found, timeout, "the %s report" % procedure, interval=0.5)
        except AssertionError as exc:
            raise AssertionError("%s\nrulebook output:\n%s" % (exc, self.output()[-4000:])) from None


@pytest.fixture(scope="module")
def rulebook(lab, lab_process_env, tmp_path_factory):
    """ansible-rulebook on the lab's EDA webhook port, the queue-backlog action switched on."""
    work = tmp_path_factory.mktemp("eda")
    reports = work / "reports"
    reports.mkdir()
    port = int(lab["APEX_EDA_WEBHOOK_PORT"])
    variables = work / "vars.yml"
    variables.write_text(yaml.safe_dump({
        "apex_eda_host": "127.0.0.1", "apex_eda_port": port, "apex_report_dir": str(reports),
        "apex_eda_queue_backlog_scale_workers": True}))
    log = work / "rulebook.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["ansible-rulebook", "-r", str(RULEBOOK), "-i", str(ROOT / "inventories" / "lab"),
                                 "--vars", str(variables)], stdout=out, stderr=subprocess.STDOUT, cwd=str(work),
                                env=lab_process_env, start_new_session=True)
    book = Rulebook(proc, log, reports, port)

    def listening():
        if proc.poll() is not None:
            raise AssertionError("ansible-rulebook exited (rc=%s):\n%s" % (proc.returncode, book.output()[-4000:]))
        try:
            return _get_json("http://127.0.0.1:%d/health" % port, timeout=1)["status"] == "ok"
        except OSError:
            return False
    try:
        _poll(listening, 120, "the alertmanager event source on port %d" % port)
        yield book
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="module")
def faults(lab, lab_process_env, rulebook):
    """Both faults; afterwards the workers' concurrency and counts, apex-api's memory and the queue are
    as they were."""
    env = lab_process_env
    import redis

    rds = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                      password=lab["APEX_REDIS_PASSWORD"], decode_responses=True)
    before = {"workers": _replicas(env, "apex-worker"), "api": _replicas(env, "apex-api"),
              "concurrency": _worker_concurrency(env) or "2"}
    try:
        _kubectl(env, "annotate", "deployment", "apex-api", "%s=190" % MEMORY_ANNOTATION, "--overwrite")
        _kubectl(env, "set", "env", "deployment/apex-worker", "APEX__WORKER__CONCURRENCY=0")
        # the twin follows the Deployment (the simulator's bridge): no task is taken from now on
        _poll(lambda: _twin_concurrency(lab) == 0, 30, "the twin's worker concurrency 0")
        load = subprocess.run([sys.executable, "-m", "twin", "loadgen", "--rate", "100", "--duration",
                               str(BACKLOG_TASKS / 100)], capture_output=True, text=True, timeout=60, check=False,
                              cwd=str(ROOT), env=dict(env, PYTHONPATH=str(ROOT / "tests" / "lab")))
        assert load.returncode == 0 and json.loads(load.stdout)["accepted"] == BACKLOG_TASKS, load.stdout + load.stderr
        yield before
    finally:
        _kubectl(env, "annotate", "deployment", "apex-api", "%s-" % MEMORY_ANNOTATION)
        _kubectl(env, "set", "env", "deployment/apex-worker", "APEX__WORKER__CONCURRENCY=%s" % before["concurrency"])
        # the backlog drains once workers take tasks again (faster with the workers the response added):
        # leave the queue as other tests expect it, then the worker count
        _poll(lambda: rds.llen("apex:tasks:queue") == 0, 120, "the queue to drain", interval=0.5)
        rds.close()
        _kubectl(env, "scale", "deployment/apex-worker", "--replicas=%d" % before["workers"])


def _twin_concurrency(lab):
    import ssl
    ctx = ssl.create_default_context(cafile=lab["APEX_CA_FILE"])
    with urllib.request.urlopen(lab["APEX_API_URL"] + "/health", timeout=5, context=ctx) as resp:  # noqa: S310
        return json.loads(resp.read())["worker"]["concurrency"]


def _alertmanager_alert(lab, name):
    return _get_json(lab["APEX_ALERTMANAGER_URL"] + "/api/v2/alerts?filter=alertname%%3D%%22%s%%22" % name)


def test_queue_backlog_fires_and_the_rulebook_scales_the_workers(lab, lab_process_env, rulebook, faults):
    report = rulebook.report("alert_queue_backlog")
    assert report["alert"] == "ApexTaskQueueBacklog" and report["status"] == "ok", report
    diagnosis = report["diagnosis"]
    assert diagnosis["backlog"] is True and diagnosis["queue_depth"] > 100, diagnosis
    # the switch was on: one worker per 10 queued tasks above 100, from the seeded count
    assert diagnosis["workers"]["desired"] == faults["workers"]
    assert diagnosis["target_workers"] > faults["workers"]
    assert report["action"] == "scaled apex-worker %d -> %d" % (faults["workers"], diagnosis["target_workers"])
    assert _replicas(lab_process_env, "apex-worker") == diagnosis["target_workers"]
    # it went the whole way: Prometheus fired it and Alertmanager routed it to the EDA receiver
    alerts = _alertmanager_alert(lab, "ApexTaskQueueBacklog")
    assert alerts and {r["name"] for r in alerts[0]["receivers"]} >= {"apex-eda"}, alerts
    assert alerts[0]["annotations"]["runbook"] == "apex.ops.alert_queue_backlog"


def test_resource_exhaustion_fires_and_the_rulebook_only_diagnoses(lab, lab_process_env, rulebook, faults):
    report = rulebook.report("alert_resource_exhaustion")
    assert report["alert"] == "ApexResourceExhaustion" and report["status"] == "ok", report
    diagnosis = report["diagnosis"]
    assert diagnosis["deployment"]["name"] == "apex-api"  # the alert's component label reached the playbook
    assert len(diagnosis["exhausted_pods"]) == faults["api"], diagnosis["exhausted_pods"]
    assert all(p.startswith("apex-api-") for p in diagnosis["exhausted_pods"])
    # actions off: nothing scaled, nothing restarted
    assert report["action"] == [] and _replicas(lab_process_env, "apex-api") == faults["api"]
    alerts = _alertmanager_alert(lab, "ApexResourceExhaustion")
    assert len(alerts) == faults["api"], alerts
    assert {(a["labels"]["component"], a["labels"]["resource"]) for a in alerts} == {("api", "memory")}
    # one run for the three pods' alerts (the rulebook throttles per component)
    assert len(list(rulebook.reports.glob("alert_resource_exhaustion-*.json"))) == 1


def test_prometheus_scrapes_the_exporter_and_loads_the_rules(lab):
    """The metrics the rules need and the twin lacks come from the lab exporter, one job each as in
    production; the six alerts are loaded with the lab's short for:."""
    def targets_up():
        targets = _get_json(lab["APEX_PROMETHEUS_URL"] + "/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"] for t in targets if t["health"] == "up"} >= {"postgres", "kubernetes", "apex"}
    _poll(targets_up, 30, "the postgres, kubernetes and apex scrape jobs up")
    query = lab["APEX_PROMETHEUS_URL"] + "/api/v1/query?query="
    for series in ("pg_settings_max_connections", "pg_stat_activity_count",
                   "kube_pod_container_resource_limits", "container_memory_working_set_bytes",
                   "container_cpu_usage_seconds_total", "apex_queue_depth", "apex_circuit_breaker_open"):
        assert _get_json(query + series)["data"]["result"], series
    rules = {r["name"]: r for g in _get_json(lab["APEX_PROMETHEUS_URL"] + "/api/v1/rules")["data"]["groups"]
             for r in g["rules"]}
    assert set(rules) == {"ApexHighTaskFailureRate", "ApexHighLatency", "ApexResourceExhaustion",
                          "ApexDatabaseConnectionsHigh", "ApexTaskQueueBacklog", "ApexCircuitBreakerOpen"}
    assert all(r["health"] == "ok" for r in rules.values()), rules
