"""Node drain planning (pure): which pods are evicted, skipped, refused; when the evicted ones are back."""
from ansible_collections.apex.ops.plugins.module_utils import drain_plan as plan


def pod(name, node="node-2", owner=("ReplicaSet", "web-1", "u1"), ready=True, phase="Running", ns="apex",
        annotations=None, volumes=None, deleting=False):
    meta = {"name": name, "namespace": ns, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "uid": owner[2], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T16:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node, "volumes": volumes or []},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_classify_follows_kubectl_drain_rules():
    pods = [pod("a"), pod("ds", owner=("DaemonSet", "agent", "d1")), pod("done", phase="Succeeded"),
            pod("mirror", owner=None, annotations={plan.MIRROR_ANNOTATION: "x"}), pod("gone", deleting=True),
            pod("bare", owner=None), pod("cache", volumes=[{"name": "c", "emptyDir": {}}])]
    result = plan.classify(pods)
    assert [i["pod"] for i in result["evict"]] == ["apex/a"]
    assert sorted(i["pod"] for i in result["skipped"]) == ["apex/done", "apex/ds", "apex/gone", "apex/mirror"]
    assert sorted(i["pod"] for i in result["refused"]) == ["apex/bare", "apex/cache"]
    assert "apex/bare (no controller" in plan.refusal(result)
    allowed = plan.classify(pods, delete_emptydir_data=True, force=True)
    assert sorted(i["pod"] for i in allowed["evict"]) == ["apex/a", "apex/bare", "apex/cache"]
    assert plan.refusal(allowed) is None


def test_force_needs_the_node_named():
    assert plan.force_refusal("node-2", True, "node-3")
    assert plan.force_refusal("node-2", True, "node-2") is None
    assert plan.force_refusal("node-2", False, None) is None


def test_blocked_summary_names_budget_and_attempts():
    text = plan.blocked_summary([{"pod": "apex/a", "attempts": 4, "message": "Cannot evict pod",
                                  "budgets": [{"name": "web", "disruptionsAllowed": 0, "currentHealthy": 2,
                                               "desiredHealthy": 2}]}])
    assert text == "apex/a (4 attempt(s): Cannot evict pod; PDB web allows 0 disruption(s) (2 healthy, 2 needed))"


def test_replacements_wait_for_the_ready_count_off_the_node():
    before = [pod("a"), pod("b", node="node-1"), pod("s", owner=("StatefulSet", "db", "s1")),
              pod("slow", owner=("ReplicaSet", "x", "u2"), ready=False)]
    evicted = [dict(i, ready=True) for i in plan.classify([before[0], before[2]])["evict"]]
    evicted.append({"pod": "apex/slow", "owner": {"kind": "ReplicaSet", "name": "x", "uid": "u2"}, "ready": False})
    owners = plan.owners_to_wait_for(evicted, before)
    assert sorted(owners) == ["s1", "u1"] and owners["u1"]["ready_before"] == 2
    # the replacement is not Ready yet, and the StatefulSet pod is still on the node
    now = [pod("b", node="node-1"), pod("c", node="node-3", ready=False), pod("s", owner=("StatefulSet", "db", "s1"))]
    status = plan.replacement_status(owners, now, "node-2")
    assert not plan.all_back(status)
    assert status["apex/db StatefulSet"]["still_on_node"] == ["apex/s"]
    now = [pod("b", node="node-1"), pod("c", node="node-3"), pod("s", node="node-1", owner=("StatefulSet", "db", "s1"))]
    assert plan.all_back(plan.replacement_status(owners, now, "node-2"))
