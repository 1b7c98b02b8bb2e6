"""Helpers for apex_info / apex_scale tests against the lab's Kubernetes simulator.

Assertions read the cluster with the official Python client (not with the code under test).
Every test leaves the shared Deployments and HPAs at their seeded values (fixture ``seeded``,
autouse), drops the saved-state ConfigMap, and deletes test Deployments it created.
"""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

NS = "apex"
STATE_CM = "apex-ops-scale-state"
# The runbook's Apex: replicas, HPA min, HPA max.
SEEDED = {"apex-api": (3, 3, 10), "apex-worker": (5, 5, 50)}


class Kube(object):
    """The official client, for setup and for assertions."""

    def __init__(self, kubeconfig, context="apex-primary"):
        from kubernetes import client, config

        self.client = client
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.hpa_api = client.AutoscalingV2Api(api)

    def replicas(self, name):
        return self.apps.read_namespaced_deployment(name, NS).spec.replicas

    def deployment(self, name):
        return self.apps.read_namespaced_deployment(name, NS)

    def hpa(self, name):
        return self.hpa_api.read_namespaced_horizontal_pod_autoscaler(name, NS)

    def hpa_bounds(self, name):
        spec = self.hpa(name).spec
        cpu = None
        for metric in spec.metrics or []:
            if metric.type == "Resource" and metric.resource.name == "cpu":
                cpu = metric.resource.target.average_utilization
        return spec.min_replicas, spec.max_replicas, cpu

    def state(self, with_cpu=False):
        """Replicas and HPA bounds (min, max, and with ``with_cpu`` the target CPU) of the shared Deployments."""
        return dict((name, (self.replicas(name),) + self.hpa_bounds(name)[:3 if with_cpu else 2]) for name in SEEDED)

    def settle(self, name, replicas, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = self.deployment(name)
            st = d.status
            # observedGeneration first: right after a template change the status still describes the
            # previous, complete rollout
            if (st.observed_generation or 0) >= (d.metadata.generation or 0) and d.spec.replicas == replicas \
                    and (st.ready_replicas or 0) == replicas and (st.replicas or 0) == replicas \
                    and (st.updated_replicas or 0) == replicas:
                return d
            time.sleep(0.1)
        raise AssertionError("%s did not settle at %d replicas: %s" % (name, replicas, d.status))

    def restore_seeded(self, cpu_targets):
        for name, (replicas, low, high) in SEEDED.items():
            body = {"spec": {"minReplicas": low, "maxReplicas": high}}
            if cpu_targets.get(name) is not None:
                body["spec"]["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": cpu_targets[name]}}}]
            self.hpa_api.patch_namespaced_horizontal_pod_autoscaler(name, NS, body)
            self.apps.patch_namespaced_deployment_scale(name, NS, {"spec": {"replicas": replicas}})
        for name, seeded in SEEDED.items():
            replicas = seeded[0]
            self.settle(name, replicas)

    def drop_state(self):
        try:
            self.core.delete_namespaced_config_map(STATE_CM, NS)
        except self.client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise

    def create_deployment(self, name, image, replicas=1):
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": name, "apex.ops/test": "true"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "progressDeadlineSeconds": 600,
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image,
                                                           "resources": {"requests": {"cpu": "100m"}}}]}}},
        }
        return self.apps.create_namespaced_deployment(NS, body)

    def delete_deployment(self, name):
        try:
            self.apps.delete_namespaced_deployment(name, NS)
        except self.client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
