"""Unit tests of k8s_info: the summaries and ``gather`` (apex_info) with a fake API."""
from k8s_fixtures import NOW, deployment, hpa

from ansible_collections.apex.ops.plugins.module_utils import k8s_info
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError


def test_pod_summary_not_ready_reasons_and_termination():
    pod = {
        "metadata": {"name": "apex-worker-1", "creationTimestamp": "2026-11-27T07:59:00Z",
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "apex-worker-abc", "controller": True}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "worker", "image": "apex/worker:never-ready"}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                                   "message": "containers with unready status: [worker]"}],
                   "containerStatuses": [{"name": "worker", "ready": False, "restartCount": 4,
                                          "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                          "lastState": {"terminated": {"reason": "OOMKilled",
                                                                       "finishedAt": "2026-11-27T07:59:30Z"}}}]},
    }
    s = k8s_info.pod_summary(pod, NOW)
    assert s["ready"] is False and s["restarts"] == 4 and s["node"] == "node-1"
    assert s["age_seconds"] == 60
    assert s["last_termination_reason"] == "OOMKilled"
    assert "CrashLoopBackOff" in s["not_ready_reason"] and "ContainersNotReady" in s["not_ready_reason"]
    assert s["owner"] == "ReplicaSet/apex-worker-abc"


def test_hpa_summary_at_max():
    s = k8s_info.hpa_summary(hpa("apex-api", "apex-api", 3, 10, current=10))
    assert s["at_max"] and s["cpu_target"] == 70 and s["cpu_current"] == 41 and s["target"] == "Deployment/apex-api"
    assert not k8s_info.hpa_summary(hpa("apex-api", "apex-api", 3, 10, current=4))["at_max"]


def test_node_summary():
    node = {"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "True"}],
                       "allocatable": {"cpu": "4", "memory": "16Gi"}}}
    s = k8s_info.node_summary(node, NOW)
    assert s["cordoned"] and not s["ready"] and set(s["problems"]) == {"Ready", "MemoryPressure"}
    assert s["roles"] == ["worker"] and s["cpu_allocatable_millicores"] == 4000 and s["memory_allocatable_mib"] == 16384.0


def test_gather_filters_by_name():
    class InfoFake(object):
        def list(self, path, label_selector=None, field_selector=None, query=None):
            if path.endswith("/deployments"):
                return {"items": [deployment("apex-api", 3), deployment("apex-worker", 5)]}
            if path.endswith("/statefulsets"):
                return {"items": []}
            if path.endswith("/horizontalpodautoscalers"):
                return {"items": [hpa("apex-api", "apex-api", 3, 10, current=10), hpa("apex-worker", "apex-worker", 5, 50)]}
            if path.endswith("/pods") and "metrics" not in path:
                return {"items": [
                    {"metadata": {"name": "apex-api-1", "labels": {"app": "apex-api"}}, "spec": {},
                     "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
                    {"metadata": {"name": "apex-worker-1", "labels": {"app": "apex-worker"}}, "spec": {},
                     "status": {"phase": "Pending"}}]}
            if path.endswith("/nodes") and "metrics" not in path:
                return {"items": [{"metadata": {"name": "n1"}, "spec": {}, "status": {
                    "conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"cpu": "2", "memory": "4Gi"}}}]}
            if path.endswith("/events"):
                return {"items": [{"type": "Warning", "reason": "BackOff", "message": "x",
                                   "involvedObject": {"kind": "Pod", "name": "apex-worker-1"},
                                   "lastTimestamp": "2026-11-27T07:58:00Z"}]}
            if "metrics.k8s.io" in path:
                raise KubeApiError(404, "NotFound", "the server could not find the requested resource")
            raise AssertionError(path)

    info = k8s_info.gather(InfoFake(), "apex", names=["apex-api"], now=NOW)
    assert [d["name"] for d in info["deployments"]] == ["apex-api"]
    assert [p["name"] for p in info["pods"]] == ["apex-api-1"]
    assert [h["name"] for h in info["hpas"]] == ["apex-api"]
    assert info["events"] == []
    assert info["metrics"]["available"] is False and "not served" in info["metrics"]["error"]
    assert info["summary"]["hpas_at_max"] == ["apex-api"]
    everything = k8s_info.gather(InfoFake(), "apex", now=NOW)
    assert everything["summary"]["pods_not_running"] == ["apex-worker-1"]
    assert everything["events"][0]["object"] == "Pod/apex-worker-1" and everything["events"][0]["age_seconds"] == 120
    missing = k8s_info.gather(InfoFake(), "apex", names=["apex-nope"], now=NOW)
    assert missing["missing"] == ["Deployment/apex-nope"]


def test_usage_against_limits():
    pod = {"spec": {"containers": [{"resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}},
                                   {"resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}]}}
    assert k8s_info.pod_limits(pod) == (1000, 512.0)
    assert k8s_info.pod_limits({"spec": {"containers": [{"resources": {}}]}}) == (None, None)
    usage = k8s_info.usage_summary({"metadata": {"name": "p"}, "containers": [
        {"usage": {"cpu": "900m", "memory": "480Mi"}}]}, limit_millicores=1000, limit_mib=512.0)
    assert usage["cpu_percent_of_limit"] == 90.0 and usage["memory_percent_of_limit"] == 93.8


def test_summary_judges_job_pods_apart():
    info = {"pods": [
        {"name": "apex-api-1", "phase": "Running", "ready": True, "restarts": 0, "owner": "ReplicaSet/apex-api-x"},
        {"name": "backup-1", "phase": "Failed", "ready": False, "restarts": 0, "owner": "Job/backup"},
        {"name": "migrate-1", "phase": "Succeeded", "ready": False, "restarts": 0, "owner": "Job/migrate"},
        {"name": "apex-worker-1", "phase": "Pending", "ready": False, "restarts": 2, "owner": "ReplicaSet/w"}]}
    summary = k8s_info.summarize(info)
    assert summary["pods_not_running"] == ["apex-worker-1"]
    assert summary["job_pods_failed"] == ["backup-1"] and summary["max_restarts"] == 2
