"""Kubernetes objects as the API serves them, for the unit tests of the k8s_* module_utils."""
from datetime import datetime, timezone

NOW = datetime(2026, 11, 27, 8, 0, 0, tzinfo=timezone.utc)


def deployment(name, replicas, ready=None, rv="1", labels=None, generation=1, image="apex/api:1.0"):
    ready = replicas if ready is None else ready
    labels = labels or {"app": name}
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "apex", "resourceVersion": rv, "generation": generation,
                     "labels": labels, "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"spec": {"containers": [{"name": "main", "image": image}]}}},
        "status": {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": ready, "availableReplicas": ready},
    }


def hpa(name, target, low, high, cpu=70, current=None):
    return {
        "metadata": {"name": name, "namespace": "apex", "resourceVersion": "1"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "minReplicas": low, "maxReplicas": high,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": cpu}}}]},
        "status": {"currentReplicas": current if current is not None else low, "desiredReplicas": current or low,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
                       "averageUtilization": 41}}}]},
    }


def node(name, pods=110, ready=True, unschedulable=False, taints=None):
    return {"metadata": {"name": name},
            "spec": dict({"unschedulable": True} if unschedulable else {}, **({"taints": taints} if taints else {})),
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": str(pods)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
