"""Unit tests of k8s_rollout: kubectl's rollout rules, restart, and waiting for several targets
with a fake API and an injected clock."""
import copy
import threading
from datetime import datetime, timezone

import pytest
from k8s_fixtures import deployment

from ansible_collections.apex.ops.plugins.module_utils import k8s_objects, k8s_rollout
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline


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


# --------------------------------------------------------------------------- restart and wait_rollout


class FakeClock(object):
    """A monotonic clock the fake API moves forward: waits run in no real time."""

    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.now

    def advance(self, seconds):
        with self.lock:
            self.now += seconds


class FakeApi(object):
    """Deployments and StatefulSets by path; ``scripts[name]`` is a list of watch streams, each a list of
    objects to yield (or a callable run on the client). An exhausted script ends each stream at once,
    after moving the clock past the stream's timeout (as a server closing a quiet watch would)."""

    def __init__(self, clock, objects, scripts=None):
        self.clock = clock
        self.objects = dict(objects)
        self.scripts = dict((k, list(v)) for k, v in (scripts or {}).items())
        self.calls = []

    def get(self, path, query=None):
        self.calls.append(("GET", path))
        if path not in self.objects:
            raise KubeApiError(404, "NotFound", "%s not found" % path)
        return copy.deepcopy(self.objects[path])

    def merge_patch(self, path, patch):
        self.calls.append(("PATCH", path, patch))
        if path not in self.objects:
            raise KubeApiError(404, "NotFound", "%s not found" % path)
        return {}

    def watch(self, path, resource_version=None, timeout_seconds=30, label_selector=None, field_selector=None):
        name = field_selector.split("=", 1)[1]
        self.calls.append(("WATCH", path, name))
        streams = self.scripts.get(name)
        if not streams:
            self.clock.advance(timeout_seconds)
            return
        for step in streams.pop(0):
            if callable(step):
                step(self)
                continue
            self.clock.advance(1)
            yield "MODIFIED", copy.deepcopy(step)


API_PATH = "/apis/apps/v1/namespaces/%s/%s/%s"


def progressing(name, replicas, updated, generation=2):
    obj = deployment(name, replicas, generation=generation)
    obj["status"].update(updatedReplicas=updated, readyReplicas=updated, availableReplicas=updated,
                         replicas=replicas + 1 if updated < replicas else replicas)
    return obj


def test_restart_stamps_the_pod_template_once():
    clock = FakeClock()
    api = FakeApi(clock, {API_PATH % ("ingress-nginx", "deployments", "ingress"): deployment("ingress", 1)})
    moment = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=timezone.utc)
    stamp = k8s_rollout.restart(api, "deploy", "ingress-nginx", "ingress", now=moment)
    assert stamp == "2026-11-27T08:00:00.123456Z"
    assert api.calls == [("PATCH", API_PATH % ("ingress-nginx", "deployments", "ingress"), {
        "spec": {"template": {"metadata": {"annotations": {k8s_rollout.RESTARTED_AT: stamp}}}}})]
    with pytest.raises(KubeApiError) as err:
        k8s_rollout.restart(api, "StatefulSet", "apex", "nope")
    assert err.value.not_found


def test_wait_rollout_several_targets_under_one_deadline_reports_each():
    """Three targets, one wait: one completes through the watch, one never does (timeout with what was
    last seen), one does not exist (an error of its own). The deadline is shared, on the injected clock."""
    clock = FakeClock()
    api_path = API_PATH % ("apex", "deployments", "apex-api")
    worker_path = API_PATH % ("apex", "deployments", "apex-worker")
    api = FakeApi(clock, {api_path: progressing("apex-api", 3, 1), worker_path: progressing("apex-worker", 5, 2)},
                  scripts={"apex-api": [[progressing("apex-api", 3, 2), deployment("apex-api", 3, generation=2)]]})
    deadline = Deadline(120, clock=clock)
    results = k8s_rollout.wait_rollout(api, [
        k8s_rollout.rollout_target("Deployment", "apex", "apex-api"),
        dict(kind="deployment", namespace="apex", name="apex-worker"),
        k8s_rollout.rollout_target("StatefulSet", "apex", "postgresql")], deadline, sleep=clock.advance)
    done, stuck, missing = results
    assert (done["key"], done["ok"], done["outcome"]) == ("Deployment/apex/apex-api", True, "complete")
    assert done["last"]["updated_replicas"] == 3 and done["last"]["complete"] is True and done["observations"] == 3
    assert (stuck["ok"], stuck["outcome"], stuck["kind"]) == (False, "timeout", "Deployment")
    assert stuck["last"]["state"] == "progressing" and stuck["last"]["updated_replicas"] == 2
    assert stuck["last"]["observed_generation"] == 2 and stuck["last"]["desired_replicas"] == 5
    assert deadline.expired() and clock() - deadline.started < 130, "one deadline, not one per target"
    assert k8s_rollout.failure_message(stuck, 120) == (
        "timed out after 120s waiting for the rollout of Deployment apex/apex-worker (2 of 5 new replicas have been "
        "updated)")
    assert (missing["outcome"], missing["last"]) == ("error", None) and "not found" in missing["error"]
    assert k8s_rollout.failure_message(done, 120) is None


def test_wait_rollout_fails_at_once_on_progress_deadline_with_conditions():
    clock = FakeClock()
    stuck = progressing("ingress", 1, 0)
    stuck["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                      "message": "too slow", "lastUpdateTime": "x"}]
    api = FakeApi(clock, {API_PATH % ("ingress-nginx", "deployments", "ingress"): stuck})
    entry = k8s_rollout.wait_rollout(api, [k8s_rollout.rollout_target("Deployment", "ingress-nginx", "ingress")],
                                     Deadline(300, clock=clock))[0]
    assert (entry["ok"], entry["outcome"]) == (False, "failed")
    assert entry["last"]["conditions"] == [{"type": "Progressing", "status": "False",
                                            "reason": "ProgressDeadlineExceeded", "message": "too slow"}]
    assert k8s_rollout.failure_message(entry, 300) == (
        "the rollout of Deployment ingress-nginx/ingress failed: progress deadline exceeded: too slow")
    assert not [c for c in api.calls if c[0] == "WATCH"] and clock() == 1000.0


def test_watch_rollout_with_replicas_follows_a_move_and_reports_it():
    """Waiting for 5 ready replicas: 5 was reached (not ready), then the HPA moved it to 7: the wait
    follows 7 instead of timing out on a count that is gone."""
    clock = FakeClock()
    path = API_PATH % ("apex", "deployments", "apex-api")
    five = deployment("apex-api", 5, ready=2, generation=2)
    seven = deployment("apex-api", 7, generation=3)
    api = FakeApi(clock, {path: deployment("apex-api", 3)}, scripts={"apex-api": [[five, seven]]})
    result = k8s_rollout.watch_rollout(api, "Deployment", "apex", "apex-api", Deadline(60, clock=clock), replicas=5)
    assert result.ok and result.moved_to == 7 and result.last["spec"]["replicas"] == 7


def test_watch_rollout_deleted_target_raises_the_given_error():
    clock = FakeClock()
    path = API_PATH % ("apex", "deployments", "apex-api")

    api = FakeApi(clock, {path: progressing("apex-api", 3, 1)})
    api.watch = lambda *a, **kw: iter([("DELETED", deployment("apex-api", 3))])
    with pytest.raises(KubeApiError, match="apex-api was deleted while waiting") as err:
        k8s_rollout.watch_rollout(api, "Deployment", "apex", "apex-api", Deadline(60, clock=clock))
    assert err.value.not_found
    with pytest.raises(k8s_objects.WorkloadError, match="gone"):
        k8s_rollout.watch_rollout(api, "Deployment", "apex", "apex-api", Deadline(60, clock=clock),
                                  deleted_error=lambda: k8s_objects.WorkloadError("gone"))
    with pytest.raises(KubeApiError, match="apex-api was deleted"):
        k8s_rollout.wait_rollout(api, [k8s_rollout.rollout_target("Deployment", "apex", "apex-api")],
                                 Deadline(60, clock=clock), raise_errors=True)
