"""Unit tests of the scale modules: the plan (k8s_scale_plan), and the scaler (k8s_scaler) with its
saved states (k8s_scale_state) against a fake API."""
import copy
import json
import threading

import pytest
from k8s_fixtures import deployment, hpa, node

from ansible_collections.apex.ops.plugins.module_utils import k8s_objects, k8s_scale_plan, k8s_scale_state, k8s_scaler
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("value,expected", [(2, 2), (-1, -1), ("+2", 2), ("-3", -3), (" + 4 ", 4), ("5", 5), (2.0, 2)])
def test_parse_delta_accepts_signed_numbers(value, expected):
    assert k8s_scale_plan.parse_delta(value) == expected


@pytest.mark.parametrize("value", ["two", "+", "1.5", True, "++1", "2x"])
def test_parse_delta_rejects_garbage(value):
    with pytest.raises(k8s_scale_plan.ScaleError, match="signed whole number"):
        k8s_scale_plan.parse_delta(value)


# --------------------------------------------------------------------------- the plan


def test_plan_absolute_within_hpa_bounds():
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10), {"replicas": 5})
    assert plan["changed"] and plan["set_replicas"] == 5 and not plan["hpa_changed"]
    assert plan["before"]["replicas"] == 3 and plan["after"]["replicas"] == 5


def test_plan_refuses_outside_hpa_bounds_with_explanation():
    with pytest.raises(k8s_scale_plan.ScaleError) as err:
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10), {"replicas": 12})
    text = str(err.value)
    assert "refusing" in text and "[3, 10]" in text and "hpa_adjust" in text and "Nothing was changed" in text


def test_plan_hpa_adjust_moves_bound():
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10),
                                      {"replicas": 12}, hpa_adjust=True)
    assert plan["after"]["hpa"]["max_replicas"] == 12 and plan["hpa_changed"]
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10),
                                      {"replicas": 2}, hpa_adjust=True)
    assert plan["after"]["hpa"]["min_replicas"] == 2


def test_plan_raising_max_and_replicas_together_is_fine():
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-worker", 5), hpa("apex-worker", "apex-worker", 5, 50),
                                      {"replicas": 60, "hpa_max_replicas": 100})
    assert plan["after"] == {"replicas": 60, "hpa": {"min_replicas": 5, "max_replicas": 100, "target_cpu": 70}}


def test_plan_precondition_and_delta():
    with pytest.raises(k8s_scale_plan.ScaleError, match="precondition failed: it has 3 replicas, current_replicas expected 4"):
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), None, {"replicas": 5, "current_replicas": 4})
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), None, {"replicas_delta": 2, "current_replicas": 3})
    assert plan["set_replicas"] == 5
    with pytest.raises(k8s_scale_plan.ScaleError, match="below zero"):
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), None, {"replicas_delta": -4})


def test_plan_idempotent_and_hpa_only():
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10), {"replicas": 3})
    assert not plan["changed"] and plan["set_replicas"] is None
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10),
                                      {"hpa_min_replicas": 5})
    assert plan["hpa_changed"] and plan["after"]["replicas"] == 5  # the HPA will bring it up
    assert any("HPA will move it" in n for n in plan["notes"])


def test_plan_zero_under_hpa_needs_allow_zero():
    api, api_hpa = deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10)
    for request in ({"replicas": 0}, {"replicas_delta": -3}):
        with pytest.raises(k8s_scale_plan.ScaleError) as err:
            k8s_scale_plan.plan_target("Deployment", api, api_hpa, request)
        text = str(err.value)
        assert "refusing to scale to 0" in text and "allow_zero" in text and "Nothing was changed" in text
        # hpa_adjust is about bounds, not about taking the service down
        with pytest.raises(k8s_scale_plan.ScaleError, match="allow_zero"):
            k8s_scale_plan.plan_target("Deployment", api, api_hpa, request, hpa_adjust=True)
    plan = k8s_scale_plan.plan_target("Deployment", api, api_hpa, {"replicas": 0}, allow_zero=True)
    assert plan["set_replicas"] == 0 and any("does not autoscale" in n for n in plan["notes"])
    # already at 0 (warm standby) and no HPA: nothing to protect
    assert not k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 0), api_hpa, {"replicas": 0})["changed"]
    assert k8s_scale_plan.plan_target("Deployment", api, None, {"replicas": 0})["set_replicas"] == 0


def test_restore_of_a_record_at_zero_needs_no_allow_zero():
    cluster = apex_cluster()
    cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] = 0
    k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=4, save_state=True, state_name="standby"))
    assert cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] == 4
    k8s_scaler.run_scale(cluster, "apex", opts(restore_state=True, state_name="standby"))
    assert cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] == 0


def test_rollback_says_a_restart_cannot_be_undone():
    cluster = FakeCluster([deployment("apex-api", 3), deployment("apex-never", 1)],
                          [hpa("apex-api", "apex-api", 3, 10)], fail_ready=["apex-never"])
    with pytest.raises(k8s_scale_plan.ScaleError) as err:
        k8s_scaler.run_scale(cluster, "apex", opts(wait_timeout=1, targets=[
            {"name": "apex-never", "replicas": 2}, {"name": "apex-api", "restart": True}]))
    rolled_back = err.value.last_state["rolled_back"]
    assert "Deployment/apex-never -> 1 replicas" in rolled_back
    assert "Deployment/apex-api: the rolling restart cannot be undone (its pods were already replaced)" in rolled_back
    assert not any("apex-api -> " in line for line in rolled_back)


def test_plan_hpa_validation():
    with pytest.raises(k8s_scale_plan.ScaleError, match="no HorizontalPodAutoscaler"):
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), None, {"hpa_max_replicas": 5})
    with pytest.raises(k8s_scale_plan.ScaleError, match="would exceed maxReplicas"):
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 3), hpa("apex-api", "apex-api", 3, 10),
                                   {"hpa_min_replicas": 12})


def test_hpa_patch_keeps_other_metrics():
    h = hpa("apex-api", "apex-api", 3, 10)
    h["spec"]["metrics"].append({"type": "Resource", "resource": {"name": "memory", "target": {
        "type": "Utilization", "averageUtilization": 80}}})
    patch = k8s_scale_plan.hpa_patch(h, {"min_replicas": 3, "max_replicas": 20, "target_cpu": 60})
    assert patch["spec"]["maxReplicas"] == 20 and "minReplicas" not in patch["spec"]
    assert patch["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert patch["spec"]["metrics"][1]["resource"]["name"] == "memory"
    assert k8s_scale_plan.hpa_patch(h, k8s_objects.hpa_bounds(h)) is None


def test_build_specs_defaults_and_overrides():
    specs = k8s_scale_plan.build_specs({"names": ["apex-api"], "replicas": 4, "targets": [
        {"name": "apex-worker", "replicas_delta": "+2"}, {"label_selector": "tier=db", "kind": "StatefulSet"}],
        "kind": "Deployment"})
    worker, db, api = specs
    assert worker["replicas"] is None and worker["replicas_delta"] == 2
    assert db["kind"] == "StatefulSet" and db["label_selector"] == "tier=db" and db["replicas"] == 4
    assert api["name"] == "apex-api" and api["replicas"] == 4
    with pytest.raises(k8s_scale_plan.ScaleError, match="exactly one of name or label_selector"):
        k8s_scale_plan.build_specs({"targets": [{"name": "a", "label_selector": "b=c"}]})


# --------------------------------------------------------------------------- scaler against a fake API


class FakeCluster(object):
    """Enough of the API for the scaler: list/get/patch/put/post, and a watch that settles the rollout."""

    def __init__(self, objects, hpas, fail_ready=(), settle=True, nodes=None):
        self.nodes = [node("node-%d" % i) for i in range(1, 4)] if nodes is None else nodes
        self.nodes = None if nodes is False else self.nodes
        self.objects = dict(((o["kind"], o["metadata"]["name"]), o) for o in objects)
        self.hpas = dict((h["metadata"]["name"], h) for h in hpas)
        self.configmaps = {}
        self.fail_ready = set(fail_ready)
        self.settle = settle
        self.calls = []
        self.lock = threading.Lock()
        self.rv = 10
        self.connection = {"context": "fake"}

    def _bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _locate(self, path):
        parts = path.strip("/").split("/")
        return parts

    def list(self, path, label_selector=None, field_selector=None, query=None):
        self.calls.append(("LIST", path))
        if path.endswith("/deployments"):
            return {"items": [copy.deepcopy(o) for (k, dummy), o in self.objects.items() if k == "Deployment"]}
        if path.endswith("/statefulsets"):
            return {"items": [copy.deepcopy(o) for (k, dummy), o in self.objects.items() if k == "StatefulSet"]}
        if path.endswith("/horizontalpodautoscalers"):
            return {"items": [copy.deepcopy(h) for h in self.hpas.values()]}
        if path == "/api/v1/nodes":
            if self.nodes is None:
                raise KubeApiError(403, "Forbidden", "nodes is forbidden")
            return {"items": copy.deepcopy(self.nodes)}
        if path.endswith("/events"):
            return {"items": [{"type": "Warning", "reason": "Unhealthy", "message": "Readiness probe failed: 503",
                               "involvedObject": {"kind": "Pod", "name": "%s-pod" % n},
                               "lastTimestamp": "2026-11-27T07:59:00Z"} for (dummy, n) in self.objects
                              if n in self.fail_ready]}
        if path.endswith("/pods"):
            return {"items": [{"metadata": {"name": "%s-pod" % n, "labels": {"app": n}},
                               "spec": {}, "status": {"phase": "Running", "conditions": [
                                   {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]}}
                              for (dummy, n) in self.objects if n in self.fail_ready]}
        raise AssertionError(path)

    def get(self, path, query=None):
        self.calls.append(("GET", path))
        parts = path.strip("/").split("/")
        if "configmaps" in parts:
            name = parts[-1]
            if name not in self.configmaps:
                raise KubeApiError(404, "NotFound", "configmaps %r not found" % name)
            return copy.deepcopy(self.configmaps[name])
        if "horizontalpodautoscalers" in parts:
            return copy.deepcopy(self.hpas[parts[-1]])
        kind = "Deployment" if "deployments" in parts else "StatefulSet"
        return copy.deepcopy(self.objects[(kind, parts[-1])])

    def merge_patch(self, path, patch):
        self.calls.append(("PATCH", path, patch))
        parts = path.strip("/").split("/")
        if "horizontalpodautoscalers" in parts:
            h = self.hpas[parts[-1]]
            h["spec"].update(patch["spec"])
            return h
        kind = "Deployment" if "deployments" in parts else "StatefulSet"
        obj = self.objects[(kind, parts[-2])]
        self._set_replicas(obj, patch["spec"]["replicas"])
        return obj

    def put(self, path, body):
        self.calls.append(("PUT", path, body))
        parts = path.strip("/").split("/")
        if "configmaps" in parts:
            self.configmaps[parts[-1]] = copy.deepcopy(body)
            return body
        kind = "Deployment" if "deployments" in parts else "StatefulSet"
        obj = self.objects[(kind, parts[-2])]
        if body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        self._set_replicas(obj, body["spec"]["replicas"])
        return obj

    def post(self, path, body):
        self.calls.append(("POST", path, body))
        self.configmaps[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    def _set_replicas(self, obj, n):
        with self.lock:
            obj["spec"]["replicas"] = n
            obj["metadata"]["generation"] += 1
            self._bump(obj)

    def watch(self, path, resource_version=None, timeout_seconds=30, label_selector=None, field_selector=None):
        self.calls.append(("WATCH", path, field_selector))
        name = field_selector.split("=", 1)[1]
        kind = "Deployment" if path.endswith("deployments") else "StatefulSet"
        obj = self.objects[(kind, name)]
        if not self.settle:
            return
        with self.lock:
            n = obj["spec"]["replicas"]
            ready = 0 if name in self.fail_ready else n
            obj["status"].update(observedGeneration=obj["metadata"]["generation"], replicas=n, updatedReplicas=n,
                                 readyReplicas=ready, availableReplicas=ready)
            self._bump(obj)
        yield "MODIFIED", copy.deepcopy(obj)


def apex_cluster(**kwargs):
    return FakeCluster([deployment("apex-api", 3), deployment("apex-worker", 5)],
                       [hpa("apex-api", "apex-api", 3, 10), hpa("apex-worker", "apex-worker", 5, 50)], **kwargs)


def opts(**kw):
    base = dict(names=[], label_selectors=[], targets=[], kind="Deployment", wait=True, wait_timeout=5,
                rollback_on_failure=True, hpa_adjust=False, state_name="default", state_configmap=k8s_scale_state.STATE_CONFIGMAP)
    base.update(kw)
    return base


def test_run_scale_two_targets_in_parallel_and_waits():
    cluster = apex_cluster()
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api", "apex-worker"], replicas=6))
    assert result["changed"]
    assert cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] == 6
    assert cluster.objects[("Deployment", "apex-worker")]["spec"]["replicas"] == 6
    assert [t["observed"]["ready"] for t in result["targets"]] == [6, 6]
    assert all("wait_seconds" in t["timings"] for t in result["targets"])
    # one list per kind + HPAs, then one PATCH and one watch per target: no per-object GET before
    assert sum(1 for c in cluster.calls if c[0] == "LIST") == 2


def test_run_scale_refusal_changes_nothing():
    cluster = apex_cluster()
    with pytest.raises(k8s_scale_plan.ScaleError, match="refusing to scale to 20"):
        k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api", "apex-worker"], replicas=20))
    assert not [c for c in cluster.calls if c[0] in ("PATCH", "PUT", "POST")]


def test_run_scale_missing_target_lists_what_exists():
    cluster = apex_cluster()
    with pytest.raises(k8s_scale_plan.ScaleError) as err:
        k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-nope", "apex-api"], replicas=4))
    assert "Deployment apex-nope not found in namespace apex" in str(err.value)
    assert "apex-api, apex-worker" in str(err.value)
    assert cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] == 3


def test_run_scale_check_mode_writes_nothing():
    cluster = apex_cluster()
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=5, save_state=True), check_mode=True)
    assert result["changed"] and result["targets"][0]["after"]["replicas"] == 5
    assert not [c for c in cluster.calls if c[0] in ("PATCH", "PUT", "POST")]
    diff = k8s_scale_plan.scale_diff(result)
    assert diff["before"]["Deployment/apex-api"]["replicas"] == 3 and diff["after"]["Deployment/apex-api"]["replicas"] == 5


def test_run_scale_precondition_uses_put_with_resource_version():
    cluster = apex_cluster()
    k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-worker"], replicas_delta="+2", current_replicas=5))
    puts = [c for c in cluster.calls if c[0] == "PUT"]
    assert puts and puts[0][2]["metadata"]["resourceVersion"] == "1"
    assert cluster.objects[("Deployment", "apex-worker")]["spec"]["replicas"] == 7


def test_wait_timeout_reports_and_rolls_back():
    cluster = FakeCluster([deployment("apex-api", 3), deployment("apex-never", 1)],
                          [hpa("apex-api", "apex-api", 3, 10)], fail_ready=["apex-never"])
    with pytest.raises(k8s_scale_plan.ScaleError) as err:
        k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-never", "apex-api"], replicas=2, wait_timeout=1,
                                                   hpa_adjust=True))
    text = str(err.value)
    assert "Deployment/apex-never: ready 0/2" in text and "apex-never-pod: ContainersNotReady" in text
    assert "last event Unhealthy: Readiness probe failed: 503" in text
    assert "Rolled back" in text
    assert cluster.objects[("Deployment", "apex-never")]["spec"]["replicas"] == 1
    assert cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] == 3
    assert cluster.hpas["apex-api"]["spec"]["minReplicas"] == 3
    assert err.value.last_state["targets"][0]["wait_failure"]["ready"] == 0


def test_save_then_restore_exactly():
    cluster = apex_cluster()
    start = opts(save_state=True, state_name="launch", targets=[
        {"name": "apex-worker", "replicas": 20, "hpa_max_replicas": 100},
        {"name": "apex-api", "hpa_max_replicas": 50}])
    result = k8s_scaler.run_scale(cluster, "apex", start)
    assert result["state"]["action"] == "saved"
    assert cluster.hpas["apex-worker"]["spec"]["maxReplicas"] == 100
    assert cluster.objects[("Deployment", "apex-worker")]["spec"]["replicas"] == 20
    # a second start keeps the pre-event record and changes nothing
    again = k8s_scaler.run_scale(cluster, "apex", start)
    assert again["state"]["action"] == "kept" and not again["changed"]
    record = json.loads(cluster.configmaps[k8s_scale_state.STATE_CONFIGMAP]["data"]["launch"])
    assert {t["name"]: t["replicas"] for t in record["targets"]} == {"apex-worker": 5, "apex-api": 3}
    # the HPA moved things in between
    cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] = 7
    end = k8s_scaler.run_scale(cluster, "apex", opts(restore_state=True, state_name="launch"))
    assert end["changed"] and end["state"]["action"] == "restored"
    assert cluster.objects[("Deployment", "apex-worker")]["spec"]["replicas"] == 5
    assert cluster.objects[("Deployment", "apex-api")]["spec"]["replicas"] == 3
    assert cluster.hpas["apex-worker"]["spec"]["maxReplicas"] == 50
    assert cluster.hpas["apex-api"]["spec"]["maxReplicas"] == 10
    end2 = k8s_scaler.run_scale(cluster, "apex", opts(restore_state=True, state_name="launch"))
    assert not end2["changed"]
    # after a restore, a new save replaces the record
    assert k8s_scaler.run_scale(cluster, "apex", start)["state"]["action"] == "saved"


def test_restore_without_record_is_a_clear_error():
    cluster = apex_cluster()
    with pytest.raises(k8s_scale_plan.ScaleError, match="no saved scale state 'nope'"):
        k8s_scaler.run_scale(cluster, "apex", opts(restore_state=True, state_name="nope"))


def test_wait_settled_deadline_when_stream_is_silent():
    cluster = apex_cluster(settle=False)
    cluster.objects[("Deployment", "apex-api")]["status"]["readyReplicas"] = 1
    scaler = k8s_scaler.Scaler(cluster, "apex")
    result = scaler.wait_settled("Deployment", "apex-api", 3, Deadline(0.3))
    assert not result.ok and result.last["status"]["readyReplicas"] == 1


def test_wait_follows_the_hpa_instead_of_fighting_it():
    """The expected count was reached, then the HPA moved it: the wait follows and reports it."""
    cluster = apex_cluster()

    def watch(path, resource_version=None, timeout_seconds=30, label_selector=None, field_selector=None):
        obj = cluster.objects[("Deployment", "apex-api")]
        seen = copy.deepcopy(obj)
        seen["status"].update(observedGeneration=seen["metadata"]["generation"], readyReplicas=2)
        yield "MODIFIED", seen  # our 5, not ready yet
        obj["spec"]["replicas"] = 7  # the HPA acts within its bounds
        obj["status"].update(observedGeneration=obj["metadata"]["generation"], replicas=7, updatedReplicas=7,
                             readyReplicas=7, availableReplicas=7)
        yield "MODIFIED", copy.deepcopy(obj)

    cluster.watch = watch
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=5))
    target = result["targets"][0]
    assert target["observed"] == {"replicas": 7, "desired": 7, "ready": 7, "rollout": "complete",
                                  "hpa": {"min_replicas": 3, "max_replicas": 10, "target_cpu": 70}}
    assert any("changed to 7 during the wait" in n for n in target["notes"])
    assert not [c for c in cluster.calls if c[0] == "PATCH" and c[2]["spec"].get("replicas") == 5][1:]


def test_wait_follows_an_hpa_that_moved_before_the_first_read():
    """The HPA acted between our scale write and the wait's first read: no timeout waiting for a count
    that is gone, the move is followed and reported (the last count, not the first)."""
    cluster = apex_cluster()
    real_patch = cluster.merge_patch

    def patch_then_hpa(path, body):
        out = real_patch(path, body)
        if path.endswith("/scale"):
            obj = cluster.objects[("Deployment", "apex-api")]
            obj["spec"]["replicas"] = 8
            obj["status"].update(replicas=8, updatedReplicas=8, readyReplicas=8, availableReplicas=8)
        return out

    cluster.merge_patch = patch_then_hpa
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=5, wait_timeout=2))
    target = result["targets"][0]
    assert "wait_failure" not in target, target
    assert target["observed"]["desired"] == 8
    assert any("changed to 8 during the wait" in n for n in target["notes"])


# --------------------------------------------------------------------------- replica ceiling (issue 15)


def test_node_pod_capacity_counts_ready_schedulable_untainted_nodes():
    nodes = [node("a"), node("b", pods=50), node("c", ready=False), node("d", unschedulable=True),
             node("e", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
             node("f", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])]
    assert k8s_scale_plan.node_pod_capacity(nodes) == {"pods": 270, "nodes": 3, "excluded": 3}
    assert k8s_scale_plan.node_pod_capacity([]) == {"pods": 0, "nodes": 0, "excluded": 0}


def test_replica_ceiling_is_the_largest_term_and_says_how():
    c = k8s_scale_plan.replica_ceiling(5, hpa_max=10, capacity={"pods": 330, "nodes": 3})
    assert c["value"] == 330
    assert c["derivation"] == ("the largest of 2 x HPA maxReplicas 10 = 20, pod capacity 330 of 3 ready schedulable "
                               "node(s), 2 x current replicas 5 = 10, the minimum ceiling 10")
    assert k8s_scale_plan.replica_ceiling(5, hpa_max=50)["value"] == 100
    assert k8s_scale_plan.replica_ceiling(0)["value"] == 10
    assert k8s_scale_plan.replica_ceiling(40)["value"] == 80
    assert k8s_scale_plan.replica_ceiling(5, hpa_max=50, override=7) == {"value": 7, "derivation": "max_replicas_ceiling 7, set explicitly"}


def test_plan_refuses_above_the_ceiling_before_anything_and_names_it():
    ceiling = k8s_scale_plan.replica_ceiling(5, hpa_max=10, capacity={"pods": 330, "nodes": 3})
    with pytest.raises(k8s_scale_plan.AboveCeiling) as err:
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 5), hpa("apex-api", "apex-api", 3, 10),
                                   {"replicas": 100000}, hpa_adjust=True, ceiling=ceiling)
    msg = str(err.value)
    assert msg.startswith("Deployment/apex-api: refusing 100000 replicas (now 5) and HPA maxReplicas 100000 (now 10): "
                          "above the replica ceiling of 330 (the largest of 2 x HPA maxReplicas 10 = 20"), msg
    assert "allow_above_ceiling" in msg and "Nothing was changed" in msg
    # an explicit HPA max above the ceiling is the same request
    with pytest.raises(k8s_scale_plan.AboveCeiling):
        k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 5), hpa("apex-api", "apex-api", 3, 10),
                                   {"hpa_max_replicas": 5000}, ceiling=ceiling)
    # confirmed: planned, with a note
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 5), hpa("apex-api", "apex-api", 3, 10),
                                      {"replicas": 400}, hpa_adjust=True, ceiling=ceiling, allow_above_ceiling=True)
    assert plan["set_replicas"] == 400 and any("confirmed by allow_above_ceiling" in n for n in plan["notes"])
    # lowering, or staying, above the ceiling is never refused
    big = k8s_scale_plan.replica_ceiling(500)
    plan = k8s_scale_plan.plan_target("Deployment", deployment("apex-api", 500), None, {"replicas": 400},
                                      ceiling=dict(big, value=20))
    assert plan["set_replicas"] == 400


def test_run_scale_absurd_count_refused_in_check_mode_and_for_real():
    for check in (True, False):
        cluster = apex_cluster()
        with pytest.raises(k8s_scale_plan.ScaleError) as err:
            k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-worker"], replicas=100000, hpa_adjust=True), check_mode=check)
        assert "above the replica ceiling of 330" in str(err.value)
        assert ("LIST", "/api/v1/nodes") in cluster.calls
        assert not [c for c in cluster.calls if c[0] in ("PATCH", "PUT", "POST")]
        assert cluster.hpas["apex-worker"]["spec"]["maxReplicas"] == 50


def test_run_scale_reads_nodes_only_when_needed_and_survives_forbidden_nodes():
    cluster = apex_cluster()
    k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=6))
    assert ("LIST", "/api/v1/nodes") not in cluster.calls
    # nodes not readable: the ceiling comes from the HPA alone (2 x 50 = 100 for the workers)
    cluster = FakeCluster([deployment("apex-worker", 5)], [hpa("apex-worker", "apex-worker", 5, 50)], nodes=False)
    with pytest.raises(k8s_scale_plan.ScaleError, match=r"ceiling of 100 \(the largest of 2 x HPA maxReplicas 50 = 100, 2 x current"):
        k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-worker"], replicas=101, hpa_adjust=True))
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-worker"], replicas=101, hpa_adjust=True,
                                                        allow_above_ceiling=True))
    assert cluster.objects[("Deployment", "apex-worker")]["spec"]["replicas"] == 101
    assert result["targets"][0]["observed"]["replicas"] == 101 and result["concurrent_changes"] == []


def test_run_scale_explicit_ceiling_and_restore_is_never_checked():
    cluster = apex_cluster()
    with pytest.raises(k8s_scale_plan.ScaleError, match="max_replicas_ceiling 4, set explicitly"):
        k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=5, max_replicas_ceiling=4))
    assert ("LIST", "/api/v1/nodes") not in cluster.calls
    cluster = FakeCluster([deployment("apex-worker", 200)], [], nodes=False)
    k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-worker"], replicas=150, save_state=True, state_name="ev"))
    k8s_scaler.run_scale(cluster, "apex", opts(restore_state=True, state_name="ev"))  # back to 200: above 2 x 150
    assert cluster.objects[("Deployment", "apex-worker")]["spec"]["replicas"] == 200


# --------------------------------------------------------------------------- what the cluster ended at (issue 15)


def test_concurrent_writer_wins_and_the_result_says_so():
    """Another run writes 4 right after our 8: the result reports 4 (the cluster) and a warning, not 8."""
    cluster = apex_cluster()
    real_patch = cluster.merge_patch

    def patch_then_other_writer(path, body):
        out = real_patch(path, body)
        if path.endswith("/scale") and body["spec"]["replicas"] == 8:
            real_patch(path, {"spec": {"replicas": 4}})  # the concurrent run's write lands after ours
        return out

    cluster.merge_patch = patch_then_other_writer
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], replicas=8, wait_timeout=2))
    target = result["targets"][0]
    assert target["after"]["replicas"] == 8  # what this run asked for
    assert target["observed"]["replicas"] == 4 and target["observed"]["ready"] == 4  # what the cluster runs
    assert result["concurrent_changes"] == [{
        "target": "Deployment/apex-api", "field": "replicas", "set": 8, "observed": 4,
        "message": "Deployment/apex-api: this run set 8 replicas but the cluster ended at 4: another writer (a "
                   "concurrent run, the HPA or a person) changed it after this run's write; the cluster's value is "
                   "reported"}]
    assert result["concurrent_changes"][0]["message"] in target["notes"]


def test_concurrent_writer_after_a_write_without_wait_and_on_the_hpa():
    cluster = apex_cluster()
    real_patch = cluster.merge_patch

    def patch_then_other_writer(path, body):
        out = real_patch(path, body)
        if "horizontalpodautoscalers" in path:
            real_patch(path, {"spec": {"maxReplicas": 12}})
        return out

    cluster.merge_patch = patch_then_other_writer
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api"], hpa_max_replicas=15, wait=False))
    assert result["targets"][0]["observed"]["hpa"]["max_replicas"] == 12
    assert [(c["field"], c["set"], c["observed"]) for c in result["concurrent_changes"]] == [("hpa.max_replicas", 15, 12)]


def test_no_warning_when_the_cluster_kept_our_values():
    cluster = apex_cluster()
    result = k8s_scaler.run_scale(cluster, "apex", opts(names=["apex-api", "apex-worker"], replicas=6))
    assert result["concurrent_changes"] == []
    assert [t["observed"]["replicas"] for t in result["targets"]] == [6, 6]
