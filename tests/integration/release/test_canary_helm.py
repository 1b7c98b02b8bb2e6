"""The canary playbook promoting through Helm: the lab's apex-api carries Helm's release annotation, so
``canary_promote_with: auto`` runs the deploy procedure with the new tag under ``api.image.tag`` (the runbook's
``helm upgrade --set api.image.tag=NEW_VERSION``). The analysis and the canary are those of
tests/integration/rollout/test_canary.py; this file checks the Helm promotion: a new revision, the API on the new
image, the worker untouched, the twin serving the new version, the canary gone."""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHART = os.path.join(ROOT, "tests", "lab", "charts", "apex")
APEX = dict(chart=CHART, namespace="apex", context="apex-primary", timeout=120)


@pytest.fixture(scope="module")
def seeded_release(run_module, kubectl, twin_version):
    """Release ``apex`` adopted from the seed (revision 1, 1.0.0); afterwards the seed is back (values given in
    full: an upgrade without values reuses the deployed revision's) and the release history is dropped."""
    assert kubectl.helm_secrets("apex") == [], "namespace apex already has Helm release Secrets"
    first = run_module("apex_release", **APEX)
    assert not first.failed, first.get("msg")
    yield first
    back = run_module("apex_release", values_files=[os.path.join(CHART, "values.yaml")], **APEX)
    kubectl.run("delete", "secrets", "-n", "apex", "-l", "owner=helm,name=apex", check=False)
    assert not back.failed, back.get("msg")
    assert twin_version("1.0.0")[0] == "1.0.0"


def test_canary_promoted_through_helm(seeded_release, run_playbook, kubectl, twin_version, lab_process_env, tmp_path):
    load = subprocess.Popen([sys.executable, "-m", "twin", "loadgen", "--rate", "40", "--duration", "120"],
                            env=dict(lab_process_env, PYTHONPATH=os.path.join(ROOT, "tests", "lab")), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = run_playbook("playbooks/canary.yml", {
            "canary_version": "1.1.0", "canary_chart": CHART, "canary_interval": "1s", "canary_duration": "3s",
            "canary_window": "2s", "canary_min_samples": 5, "canary_ready_timeout": 20, "canary_promote_timeout": 120,
            "apex_report_dir": str(tmp_path)}, extra_args=["-i", os.path.join(ROOT, "inventories", "lab")])
    finally:
        load.terminate()
        load.wait(timeout=10)
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(sorted(glob.glob(os.path.join(str(tmp_path), "canary-*.json")))[-1]) as handle:
        report = json.load(handle)
    assert report["status"] == "promoted" and report["promote_method"] == "helm", report
    assert glob.glob(os.path.join(str(tmp_path), "deploy-*.json")), "the deploy procedure wrote no report"
    assert kubectl.helm_secrets("apex") == [1, 2]
    images = dict((d["metadata"]["name"], d["spec"]["template"]["spec"]["containers"][0]["image"])
                  for d in kubectl.get("deployments", "-n", "apex")["items"])
    assert images == {"apex-api": "apex/api:1.1.0", "apex-worker": "apex/worker:1.0.0"}  # no canary, worker untouched
    assert twin_version("1.1.0")[0] == "1.1.0"
