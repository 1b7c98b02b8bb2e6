"""The canary Deployment, pure: sizing for a traffic share, the image tag swap, and a copy of the live
stable spec in which only the image tag and the track label differ."""
import copy

import pytest

from ansible_collections.apex.ops.plugins.module_utils import canary_plan as cp
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

STABLE = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "apex-api", "namespace": "apex", "uid": "u1", "resourceVersion": "42", "generation": 7,
                 "labels": {"app": "apex-api", "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "apex"},
                 "annotations": {"meta.helm.sh/release-name": "apex", "deployment.kubernetes.io/revision": "3",
                                 "team": "platform"}},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "apex-api"}},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
             "template": {"metadata": {"labels": {"app": "apex-api"},
                                       "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}},
                          "spec": {"containers": [
                              {"name": "api", "image": "registry.example:5000/apex/api:1.0.0",
                               "env": [{"name": "APEX__DATABASE__URL",
                                        "valueFrom": {"secretKeyRef": {"name": "apex-secrets", "key": "database-url"}}}],
                               "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                               "resources": {"limits": {"memory": "2Gi"}}},
                              {"name": "sidecar", "image": "envoy:1.29"}]}}},
    "status": {"readyReplicas": 3},
}


@pytest.mark.parametrize("stable,weight,replicas", [(3, 10, 1), (3, 25, 1), (3, 50, 3), (9, 10, 1), (10, 10, 2),
                                                    (0, 10, 1), (4, 20, 1)])
def test_canary_replicas_give_at_least_the_share(stable, weight, replicas):
    assert cp.canary_replicas(stable, weight) == replicas
    if stable:
        assert cp.traffic_share(stable, replicas) >= weight


@pytest.mark.parametrize("weight", [0, 100, -5, 150])
def test_weight_outside_zero_to_hundred_is_refused(weight):
    with pytest.raises(WorkloadError):
        cp.canary_replicas(3, weight)


@pytest.mark.parametrize("image,tag,want", [
    ("apex/api:1.0.0", "1.1.0", "apex/api:1.1.0"),
    ("apex/api", "1.1.0", "apex/api:1.1.0"),
    ("registry.example:5000/apex/api:1.0.0", "2.0", "registry.example:5000/apex/api:2.0"),
    ("registry.example:5000/apex/api", "2.0", "registry.example:5000/apex/api:2.0"),
    ("apex/api@sha256:abc", "1.1.0", "apex/api:1.1.0"),
])
def test_with_tag(image, tag, want):
    assert cp.with_tag(image, tag) == want


def test_bad_tag_is_refused():
    with pytest.raises(WorkloadError):
        cp.with_tag("apex/api:1", "1.1 ; rm")


def test_canary_is_the_stable_spec_with_only_tag_and_track_changed():
    stable = copy.deepcopy(STABLE)
    manifest, plan = cp.build_canary(stable, "apex-api-canary", "1.1.0", 1)
    assert stable == STABLE  # the live object is not modified
    spec = manifest["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"] == {"app": "apex-api", "track": "canary"}
    assert spec["template"]["metadata"]["labels"] == {"app": "apex-api", "track": "canary"}
    api, sidecar = spec["template"]["spec"]["containers"]
    assert api["image"] == "registry.example:5000/apex/api:1.1.0" and sidecar["image"] == "envoy:1.29"
    # everything else as stable runs it: env from secrets, probes, resources, strategy
    want = copy.deepcopy(STABLE["spec"]["template"]["spec"])
    want["containers"][0]["image"] = api["image"]
    assert spec["template"]["spec"] == want and spec["strategy"] == STABLE["spec"]["strategy"]
    assert "restartedAt" not in str(spec["template"]["metadata"])
    meta = manifest["metadata"]
    assert meta["name"] == "apex-api-canary" and meta["namespace"] == "apex" and "resourceVersion" not in meta
    assert meta["labels"] == {"app": "apex-api", "app.kubernetes.io/part-of": "apex", "track": "canary"}
    assert meta["annotations"] == {"team": "platform", cp.CANARY_OF: "apex-api",
                                   cp.STABLE_IMAGE: "registry.example:5000/apex/api:1.0.0"}
    assert "status" not in manifest
    assert plan["stable_version"] == "1.0.0" and plan["version"] == "1.1.0" and plan["container"] == "api"


def test_named_container_and_refusals():
    manifest, plan = cp.build_canary(STABLE, "c", "2", 1, container="sidecar")
    assert plan["container"] == "sidecar" and manifest["spec"]["template"]["spec"]["containers"][1]["image"] == "envoy:2"
    with pytest.raises(WorkloadError, match="no container"):
        cp.build_canary(STABLE, "c", "2", 1, container="nope")
    canary_like = copy.deepcopy(STABLE)
    canary_like["metadata"]["labels"]["track"] = "canary"
    with pytest.raises(WorkloadError, match="itself labelled"):
        cp.build_canary(canary_like, "c", "2", 1)


def test_same_canary():
    manifest = cp.build_canary(STABLE, "apex-api-canary", "1.1.0", 1)[0]
    live = copy.deepcopy(manifest)
    live["metadata"]["resourceVersion"] = "9"
    live["status"] = {"readyReplicas": 1}
    assert cp.same_canary(live, manifest)
    live["spec"]["replicas"] = 2
    assert not cp.same_canary(live, manifest)
    assert not cp.same_canary(None, manifest)


def test_image_tag():
    assert cp.image_tag("apex/api:1.0.0") == "1.0.0" and cp.image_tag("reg:5000/apex/api") == "latest"
    assert cp.image_tag("apex/api@sha256:abc") == "sha256:abc" and cp.image_tag(None) is None
