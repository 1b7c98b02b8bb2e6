"""scale_event interrupted while its new pods are not Ready yet: the journal names it and `recover` puts the
saved state back (replicas and HPA bounds), as a rescue would have."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: %(ns)s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ev-api, namespace: %(ns)s}
spec:
  replicas: 2
  selector: {matchLabels: {app: ev-api}}
  template:
    metadata: {labels: {app: ev-api}}
    spec: {containers: [{name: api, image: "apex/api:1.0.0"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ev-worker, namespace: %(ns)s}
spec:
  replicas: 2
  selector: {matchLabels: {app: ev-worker}}
  template:
    metadata: {labels: {app: ev-worker}}
    spec:
      containers:
        - name: worker
          image: "apex/worker:1.0.0"
          readinessProbe: {httpGet: {path: /ready, port: 8080}, initialDelaySeconds: 8}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ev-api, namespace: %(ns)s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ev-api}
  minReplicas: 2
  maxReplicas: 6
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ev-worker, namespace: %(ns)s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ev-worker}
  minReplicas: 2
  maxReplicas: 6
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
"""


def kubectl(env, *args, check=False, **kwargs):
    return subprocess.run(["kubectl", "--context", "apex-primary"] + list(args), env=env, capture_output=True,
                          text=True, timeout=60, check=check, **kwargs)


@pytest.fixture()
def event_ns(lab_process_env):
    ns = "apex-event-itest-%d" % os.getpid()
    kubectl(lab_process_env, "apply", "-f", "-", input=MANIFEST % {"ns": ns}, check=True)
    yield ns
    kubectl(lab_process_env, "delete", "namespace", ns, "--wait=false")


def state(env, ns):
    items = json.loads(kubectl(env, "-n", ns, "get", "deploy,hpa", "-o", "json", check=True).stdout)["items"]
    return dict(("%s/%s" % (i["kind"], i["metadata"]["name"]),
                 i["spec"].get("replicas", [i["spec"].get("minReplicas"), i["spec"].get("maxReplicas")]))
                for i in items)


def ready(env, ns, name):
    return json.loads(kubectl(env, "-n", ns, "get", "deploy", name, "-o", "json", check=True).stdout)[
        "status"].get("readyReplicas", 0)


def journal(env, ns):
    out = kubectl(env, "-n", ns, "get", "configmap", "apex-ops-journal", "-o", "json", "--ignore-not-found",
                  check=True).stdout
    return json.loads(json.loads(out)["data"]["record"]) if out.strip() else None


def test_interrupted_scale_event_start_is_recovered(run_playbook, lab_process_env, event_ns, tmp_path):
    ns = event_ns
    deadline = time.monotonic() + 60  # the first workers become Ready after their 8 s delay
    while time.monotonic() < deadline and ready(lab_process_env, ns, "ev-worker") != 2:
        time.sleep(0.2)
    assert ready(lab_process_env, ns, "ev-worker") == 2
    before = state(lab_process_env, ns)
    assert before == {"Deployment/ev-api": 2, "Deployment/ev-worker": 2, "HorizontalPodAutoscaler/ev-api": [2, 6],
                      "HorizontalPodAutoscaler/ev-worker": [2, 6]}
    variables = {"scale_event_namespace": ns, "scale_event_kube_context": "apex-primary",
                 "scale_event_deployments": {"api": "ev-api", "worker": "ev-worker"}, "scale_event_name": "itest-event",
                 "scale_event_worker_replicas": 4, "scale_event_api_hpa_max": 6, "scale_event_worker_hpa_max": 8,
                 "scale_event_wait_timeout": 300, "apex_report_dir": str(tmp_path)}
    proc = subprocess.Popen(["ansible-playbook", "playbooks/scale_event.yml", "-e", json.dumps(variables)],
                            env=lab_process_env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and state(lab_process_env, ns)["Deployment/ev-worker"] != 4:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        assert state(lab_process_env, ns)["Deployment/ev-worker"] == 4, "the event profile was never applied"
        assert ready(lab_process_env, ns, "ev-worker") < 4  # the new workers take 8 s to be Ready
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C while apex_scale waits for the new workers
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out[-3000:]
    assert state(lab_process_env, ns)["Deployment/ev-worker"] == 4  # half-done, and no rescue ran
    record = journal(lab_process_env, ns)
    assert record["procedure"] == "scale_event" and record["undo"][0]["state_name"] == "itest-event"

    done = run_playbook("playbooks/recover.yml", {"recover_namespace": ns, "recover_kube_context": "apex-primary",
                                                  "recover_confirm": record["run_id"], "apex_report_dir": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-4000:]
    assert state(lab_process_env, ns) == before
    assert journal(lab_process_env, ns) is None
