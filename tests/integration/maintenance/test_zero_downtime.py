"""The maintenance playbook's zero-downtime path against the lab: the deploy procedure (Helm release ``apex``,
adopted from the seed by the release tests' fixture and put back as seeded afterwards), then the watch judged by
the lab's real Prometheus (apex_metrics: the stable track's error rate and P95) under load-generator traffic.

* a good release is deployed, the watch sees no breach, the new version stays served;
* a release whose requests take 3 s (image tag ``stalled``) breaches the P95 limit: the release is rolled back
  (the previous version served again, asserted in the cluster and on the twin) and the maintenance fails.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CHART = str(ROOT / "tests" / "lab" / "charts" / "apex")
ANY_TIME = {"patch": {"days": "any", "start": "00:00", "end": "24:00", "approval": "Team Lead"}}

_spec = importlib.util.spec_from_file_location("release_fixtures", ROOT / "tests" / "integration" / "release" / "conftest.py")
_release = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_release)
# the release tests' fixtures (one definition): kubectl for assertions, the twin's served version, release apex
kubectl = _release.kubectl
twin_version = _release.twin_version
apex_release = _release.apex_release


@pytest.fixture
def traffic(lab_process_env):
    """Requests to the API for as long as the test runs (the watch judges real traffic)."""
    proc = subprocess.Popen([sys.executable, "-m", "twin", "loadgen", "--rate", "4", "--duration", "300",
                             "--concurrency", "16", "--timeout", "10"], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(lab_process_env, PYTHONPATH=str(ROOT / "tests" / "lab")))
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def _run(run_playbook, lab, tmp_path, version):
    return run_playbook("playbooks/maintenance.yml", {
        "maintenance_type": "patch", "maintenance_windows": ANY_TIME, "maintenance_downtime": False,
        "maintenance_change_request": "CHG-5150", "maintenance_approved_by": "team-lead",
        "maintenance_announce": False, "maintenance_backup_if_stale": "backup",
        "apex_s3_prefix": "itest-zero-downtime-%d" % os.getpid(), "apex_report_dir": str(tmp_path),
        "maintenance_watch_period": "9s", "maintenance_watch_interval": "3s",
        "deploy_chart": CHART, "deploy_version": version, "deploy_timeout": 120})


def _report(directory):
    return json.loads(sorted(Path(directory).glob("maintenance-*.json"))[-1].read_text())


def test_zero_downtime_watch_in_prometheus_keeps_a_good_release_and_rolls_back_a_slow_one(
        apex_release, traffic, run_playbook, kubectl, twin_version, lab, tmp_path):
    good = _run(run_playbook, lab, tmp_path / "good", "1.1.0")
    assert good.returncode == 0, good.stdout[-4000:] + good.stderr[-2000:]
    watch = _report(tmp_path / "good")["watch"]
    assert watch["source"] == "prometheus" and watch["breach"] is False, watch
    assert int(watch["planned_intervals"]) == 3 and int(watch["failed_intervals"]) == 0
    assert kubectl.image("apex") == "apex/api:1.1.0" and twin_version("1.1.0")[0] == "1.1.0"

    slow = _run(run_playbook, lab, tmp_path / "slow", "1.2.0-stalled")
    assert slow.returncode != 0, slow.stdout[-4000:]
    report = _report(tmp_path / "slow")
    assert report["status"] == "failed" and report["watch"]["breach"] is True, report.get("watch")
    assert "p95_latency" in " ".join(report["watch"]["table"])
    assert "the release was rolled back" in " ".join(slow.stdout.split())
    # the previous release serves again: in the cluster and on the twin
    assert kubectl.image("apex") == "apex/api:1.1.0"
    assert twin_version("1.1.0")[0] == "1.1.0"
