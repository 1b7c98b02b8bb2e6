"""Unit tests of k8s_rollout: kubectl's rollout rules, restart, and waiting for several targets
with a fake API and an injected clock."""
from k8s_fixtures import deployment

from ansible_collections.apex.ops.plugins.module_utils import k8s_rollout


# --------------------------------------------------------------------------- summaries


def test_rollout_state_rules():
    d = deployment("apex-api", 3)
    assert k8s_rollout.rollout_state(d, "Deployment")[0] == "complete"
    assert k8s_rollout.is_settled(d, "Deployment")
    d["status"]["readyReplicas"] = d["status"]["availableReplicas"] = 1
    state, message = k8s_rollout.rollout_state(d, "Deployment")
    assert state == "progressing" and "1 of 3 updated replicas are available" in message
    d["metadata"]["generation"] = 2
    assert "observed" in k8s_rollout.rollout_state(d, "Deployment")[1]
    d = deployment("apex-api", 3)
    d["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                  "message": "ReplicaSet has timed out progressing"}]
    assert k8s_rollout.rollout_state(d, "Deployment")[0] == "failed"
    d = deployment("apex-api", 3)
    d["status"]["replicas"] = 5
    assert "old replicas" in k8s_rollout.rollout_state(d, "Deployment")[1]
    assert not k8s_rollout.is_settled(deployment("apex-api", 3), "Deployment", expect_replicas=4)


def test_statefulset_rollout():
    s = deployment("postgresql", 1)
    s["status"].update(currentRevision="a", updateRevision="b")
    assert k8s_rollout.rollout_state(s, "StatefulSet")[0] == "progressing"
    s["status"]["currentRevision"] = "b"
    assert k8s_rollout.rollout_state(s, "StatefulSet")[0] == "complete"
