"""apex_drain and the drain playbook against the lab's Kubernetes simulator.

A scratch namespace of its own holds a 2-replica Deployment and a PodDisruptionBudget; the drain
is narrowed to those pods (``drain_namespaces``), so the shared Apex workloads never move. The
node is cordoned for a few seconds and always uncordoned at the end.
"""
import binascii
import glob
import json
import os
import time

import pytest


def last_report(report_dir):
    files = sorted(glob.glob(os.path.join(report_dir, "drain-*.json")))
    assert files, "no drain report in %s" % report_dir
    with open(files[-1]) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def kube(lab):
    from kubernetes import client, config

    path = lab.get("K8S_AUTH_KUBECONFIG") or lab.get("KUBECONFIG")
    if not path or not os.path.exists(path):
        pytest.fail("the lab has no Kubernetes simulator kubeconfig: run `make lab-up`")
    api = config.new_client_from_config(config_file=path, context="apex-primary")
    return client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)


def ready_pods(core, ns):
    pods = core.list_namespaced_pod(ns).items
    return [p for p in pods if p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def wait_ready(core, ns, count, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = ready_pods(core, ns)
        if len(pods) == count:
            return pods
        time.sleep(0.1)  # polling the simulator for the pods to become Ready (they take ~0.2 s)
    pytest.fail("%d Ready pods in %s expected, saw %d" % (count, ns, len(ready_pods(core, ns))))


@pytest.fixture(scope="module")
def workload(kube):
    """Namespace drain-<hex>: Deployment web (2 replicas) and PDB web (minAvailable 2: no disruption allowed)."""
    core, apps, policy = kube
    ns = "drain-%s" % binascii.hexlify(os.urandom(3)).decode()
    core.create_namespace({"metadata": {"name": ns}})
    labels = {"app": "web"}
    apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
    policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}}})
    pods = wait_ready(core, ns, 2)
    yield {"ns": ns, "node": pods[0].spec.node_name}
    core.delete_namespace(ns)


@pytest.fixture()
def uncordon_after(kube, workload):
    yield
    kube[0].patch_node(workload["node"], {"spec": {"unschedulable": False}})


def drain_vars(workload, report_dir, **extra):
    data = {"drain_node": workload["node"], "drain_namespaces": [workload["ns"]], "apex_report_dir": report_dir}
    data.update(extra)
    return data


def test_drain_blocked_by_the_budget_then_completes_then_uncordon(kube, workload, run_playbook, tmp_path,
                                                                  uncordon_after):
    core, dummy, policy = kube
    ns, node = workload["ns"], workload["node"]
    reports = str(tmp_path)
    before = {p.metadata.name for p in ready_pods(core, ns)}

    # 1. the budget allows no disruption: evictions are retried, reported, nothing is deleted
    proc = run_playbook("playbooks/drain.yml", drain_vars(workload, reports, drain_eviction_timeout=2))
    assert proc.returncode != 0
    report = last_report(reports)
    assert report["status"] == "failed" and report["cordoned"] is True
    blocked = [b for b in report["blocked"] if b["node"] == node]
    assert blocked and all(b["attempts"] >= 2 for b in blocked)
    assert "disruption budget" in blocked[0]["message"]
    assert blocked[0]["budgets"][0]["name"] == "web" and blocked[0]["budgets"][0]["disruptionsAllowed"] == 0
    assert "PDB web allows 0 disruption(s)" in report["error"] and "nothing was forced" in report["error"]
    assert core.read_node(node).spec.unschedulable is True
    assert {p.metadata.name for p in ready_pods(core, ns)} == before

    # 2. the budget allows one disruption at a time: the drain completes, pods Ready on other nodes
    policy.patch_namespaced_pod_disruption_budget("web", ns, {"spec": {"minAvailable": 1}})
    proc = run_playbook("playbooks/drain.yml", drain_vars(workload, reports))
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = last_report(reports)
    assert report["status"] == "ok" and report["evicted"]
    assert all(v["done"] for v in report["replacements"].values()), report["replacements"]
    pods = ready_pods(core, ns)
    assert len(pods) == 2 and all(p.spec.node_name != node for p in pods)
    assert core.read_node(node).spec.unschedulable is True

    # 3. uncordon on request
    proc = run_playbook("playbooks/drain.yml", drain_vars(workload, reports, drain_uncordon=True))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert last_report(reports)["cordoned"] is False
    assert not core.read_node(node).spec.unschedulable


def test_force_needs_the_confirmation_and_facts_change_nothing(run_module, workload, kube):
    refused = run_module("apex_drain", state="drain", node=workload["node"], force=True, confirm="node-x",
                         namespaces=[workload["ns"]])
    assert refused.failed and refused["refused"] and "confirm" in refused["msg"]
    assert not kube[0].read_node(workload["node"]).spec.unschedulable
    facts = run_module("apex_drain", node=workload["node"], namespaces=[workload["ns"]])
    assert not facts.failed and not facts["changed"]
    assert all(i["pod"].startswith(workload["ns"] + "/") for i in facts["drain"]["to_evict"])
