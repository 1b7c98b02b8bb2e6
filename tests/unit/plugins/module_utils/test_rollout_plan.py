"""Unit tests of rollout_plan (apex_rollout's pure planning) and of rollout_change with a fake API:
env merge and rendering, name validation, idempotence, the resource patch, undo template selection,
history, and the put-back after a failed rollout."""
import copy
from datetime import datetime, timezone

import pytest
from k8s_fixtures import deployment

from ansible_collections.apex.ops.plugins.module_utils import rollout_change, rollout_plan
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.rollout_plan import RolloutError

NOW = datetime(2026, 12, 2, 9, 0, 0, 123456, tzinfo=timezone.utc)


def worker(env=None, image="apex/worker:1.0.0", resources=None):
    d = deployment("apex-worker", 5, image=image)
    d["metadata"]["uid"] = "uid-worker"
    container = d["spec"]["template"]["spec"]["containers"][0]
    container["name"] = "worker"
    container["env"] = env if env is not None else [
        {"name": "APEX__WORKER__CONCURRENCY", "value": "2"},
        {"name": "APEX__DATABASE__URL", "valueFrom": {"secretKeyRef": {"name": "apex-secrets", "key": "database-url"}}}]
    if resources is not None:
        container["resources"] = resources
    return d


def replica_set(owner, revision, template, cause=None, name=None):
    template = copy.deepcopy(template)
    template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = "h%d" % revision
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if cause:
        annotations["kubernetes.io/change-cause"] = cause
    return {"metadata": {"name": name or "%s-h%d" % (owner["metadata"]["name"], revision), "annotations": annotations,
                         "ownerReferences": [{"uid": owner["metadata"]["uid"], "controller": True}],
                         "creationTimestamp": "2026-12-0%dT00:00:00Z" % revision},
            "spec": {"replicas": 0, "template": template}, "status": {}}


def plan(obj, **request):
    request.setdefault("name", obj["metadata"]["name"])
    rollout_plan.check_request("Deployment", request)
    return rollout_plan.plan_target("Deployment", obj, request, request.pop("_revisions", None), now=NOW)


# --------------------------------------------------------------------------- env


def test_env_values_are_rendered_as_the_container_sees_them():
    assert rollout_plan.render_env_value("A", True) == "true"
    assert rollout_plan.render_env_value("A", False) == "false"
    assert rollout_plan.render_env_value("A", 5) == "5"
    assert rollout_plan.render_env_value("A", 0.5) == "0.5"
    assert rollout_plan.render_env_value("A", ["a", "b"]) == '["a","b"]'
    with pytest.raises(RolloutError, match="env_absent"):
        rollout_plan.render_env_value("A", None)


def test_env_names_must_be_apex_settings_unless_allowed():
    with pytest.raises(RolloutError, match=r"APEX_WORKER, APEX__WORKER__concurrency\. A typo"):
        rollout_plan.check_env_names(["APEX__WORKER__CONCURRENCY", "APEX_WORKER", "APEX__WORKER__concurrency"])
    rollout_plan.check_env_names(["LOG_LEVEL", "my.var"], allow_any=True)
    with pytest.raises(RolloutError, match="invalid env var names: 1BAD"):
        rollout_plan.check_env_names(["1BAD"], allow_any=True)


def test_env_merge_sets_adds_and_unsets_in_place_of_the_old_entries():
    p = plan(worker(), env={"APEX__WORKER__CONCURRENCY": 5, "APEX__ROUTING__FORCE_PROVIDER": "anthropic"},
             env_absent=["APEX__NOT_SET"])
    env = p["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["APEX__WORKER__CONCURRENCY", "APEX__DATABASE__URL", "APEX__ROUTING__FORCE_PROVIDER"]
    assert env[0] == {"name": "APEX__WORKER__CONCURRENCY", "value": "5"}
    assert env[1]["valueFrom"]  # untouched
    assert p["changed"] and p["changes"] == [
        "env APEX__ROUTING__FORCE_PROVIDER on worker: (unset) -> anthropic",
        "env APEX__WORKER__CONCURRENCY on worker: 2 -> 5"]
    assert p["before"] == {"containers": {"worker": {"env": {"APEX__WORKER__CONCURRENCY": "2"}}}}
    assert p["env_changes"][1] == dict(container="worker", name="APEX__WORKER__CONCURRENCY", before="2", after="5")
    assert p["after"] == {"containers": {"worker": {"env": {"APEX__WORKER__CONCURRENCY": "5",
                                                            "APEX__ROUTING__FORCE_PROVIDER": "anthropic"}}}}
    assert p["annotations"]["kubernetes.io/change-cause"].startswith("apex.ops apex_rollout: env APEX__ROUTING")

    p = plan(worker(), env_absent=["APEX__WORKER__CONCURRENCY"])
    assert [e["name"] for e in p["template"]["spec"]["containers"][0]["env"]] == ["APEX__DATABASE__URL"]
    assert p["changes"] == ["env APEX__WORKER__CONCURRENCY on worker: 2 -> (unset)"]


def test_env_already_set_is_no_change_and_no_change_cause():
    obj = worker()
    p = plan(obj, env={"APEX__WORKER__CONCURRENCY": 2}, env_absent=["APEX__ABSENT"])
    assert not p["changed"] and p["changes"] == [] and p["before"] == {} and p["after"] == {}
    assert "kubernetes.io/change-cause" not in p["annotations"]
    assert p["template"] == obj["spec"]["template"]


def test_env_from_a_secret_becomes_a_value_and_secrets_are_never_shown():
    p = plan(worker(), env={"APEX__DATABASE__URL": "postgres://x"}, allow_any_env=False)
    assert p["changes"] == ["env APEX__DATABASE__URL on worker: <secretKeyRef apex-secrets/database-url> -> postgres://x"]
    p = plan(worker(env=[{"name": "APEX__PROVIDER__API_KEY", "value": "old-secret"}]),
             env={"APEX__PROVIDER__API_KEY": "new-secret"})
    assert "secret" not in " ".join(p["changes"]) and "<masked>" in p["changes"][0]
    assert p["before"]["containers"]["worker"]["env"]["APEX__PROVIDER__API_KEY"] == "<masked>"
    assert p["after"]["containers"]["worker"]["env"]["APEX__PROVIDER__API_KEY"] == "<masked, changed>"


def test_set_and_unset_the_same_name_is_refused():
    with pytest.raises(RolloutError, match="both set and unset"):
        plan(worker(), env={"APEX__A": 1}, env_absent=["APEX__A"])


def test_unknown_container_is_refused():
    with pytest.raises(RolloutError, match="container 'api' not found"):
        plan(worker(), env={"APEX__A": 1}, container="api")


# --------------------------------------------------------------------------- image and resources


def test_image_string_needs_a_single_container_or_a_name():
    p = plan(worker(), image="apex/worker:1.1.0")
    assert p["changes"] == ["image of worker: apex/worker:1.0.0 -> apex/worker:1.1.0"]
    assert p["before"] == {"containers": {"worker": {"image": "apex/worker:1.0.0"}}}
    assert not plan(worker(), image={"worker": "apex/worker:1.0.0"})["changed"]
    obj = worker()
    obj["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    with pytest.raises(RolloutError, match="2 containers"):
        plan(obj, image="apex/worker:1.1.0")
    assert plan(obj, image="envoy:2", container="sidecar")["changes"] == ["image of sidecar: envoy:1 -> envoy:2"]


def test_resource_patch_merges_and_compares_quantities_by_value():
    obj = worker(resources={"limits": {"memory": "2Gi", "cpu": "2"}, "requests": {"memory": "1Gi", "cpu": "500m"}})
    p = plan(obj, resources={"limits": {"memory": "4Gi", "cpu": "2000m"}, "requests": {"cpu": "1"}})
    res = p["template"]["spec"]["containers"][0]["resources"]
    assert res == {"limits": {"memory": "4Gi", "cpu": "2"}, "requests": {"memory": "1Gi", "cpu": "1"}}
    assert p["changes"] == ["requests.cpu of worker: 500m -> 1", "limits.memory of worker: 2Gi -> 4Gi"]
    assert p["after"] == {"containers": {"worker": {"resources": {"limits": {"memory": "4Gi"}, "requests": {"cpu": "1"}}}}}
    assert not plan(obj, resources={"limits": {"memory": "2048Mi"}})["changed"]
    p = plan(obj, resources={"limits": {"cpu": None}})
    assert p["template"]["spec"]["containers"][0]["resources"]["limits"] == {"memory": "2Gi"}
    with pytest.raises(RolloutError, match="not a Kubernetes quantity"):
        plan(obj, resources={"limits": {"memory": "lots"}})
    with pytest.raises(RolloutError, match="requests and limits"):
        plan(obj, resources={"limit": {"memory": "1Gi"}})


def test_restart_always_changes_with_a_microsecond_stamp():
    p = plan(worker(), restart=True)
    stamp = p["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert stamp == "2026-12-02T09:00:00.123456Z" and p["changed"]
    assert p["after"] == {"restarted_at": stamp}


def test_pause_and_resume_are_idempotent():
    p = plan(worker(), paused=True)
    assert p["changed"] and p["paused_after"] is True and p["changes"] == ["pause the rollout"]
    obj = worker()
    obj["spec"]["paused"] = True
    assert not plan(obj, paused=True)["changed"]
    assert plan(obj, paused=False)["changes"] == ["resume the rollout"]
    with pytest.raises(RolloutError, match="StatefulSet cannot be paused"):
        rollout_plan.check_request("StatefulSet", dict(name="postgresql", paused=True))


def test_nothing_to_change_is_refused():
    with pytest.raises(RolloutError, match="nothing to change"):
        rollout_plan.check_request("Deployment", dict(name="apex-api"))


# --------------------------------------------------------------------------- undo


def _history():
    """Three revisions of apex-worker: 1 (concurrency 2), 2 (5), 3 (image 1.1.0, current)."""
    base = worker()
    rev1 = copy.deepcopy(base["spec"]["template"])
    rev2 = copy.deepcopy(rev1)
    rev2["spec"]["containers"][0]["env"][0]["value"] = "5"
    rev3 = copy.deepcopy(rev2)
    rev3["spec"]["containers"][0]["image"] = "apex/worker:1.1.0"
    obj = copy.deepcopy(base)
    obj["spec"]["template"] = copy.deepcopy(rev3)
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    sets = [replica_set(obj, 3, rev3, "image 1.1.0"), replica_set(obj, 1, rev1), replica_set(obj, 2, rev2, "conc 5"),
            replica_set({"metadata": {"name": "other", "uid": "other"}}, 9, rev1)]
    return obj, rollout_plan.revisions_of("Deployment", obj, sets), (rev1, rev2, rev3)


def test_revisions_are_the_owned_replica_sets_oldest_first_without_the_hash_label():
    obj, revisions, templates = _history()
    assert [r["revision"] for r in revisions] == [1, 2, 3]
    assert revisions[0]["template"] == templates[0]  # no pod-template-hash
    assert revisions[1]["change_cause"] == "conc 5"


def test_undo_goes_to_the_previous_revision_or_the_one_given():
    obj, revisions, templates = _history()
    assert rollout_plan.undo_source("Deployment", obj, revisions)["revision"] == 2
    assert rollout_plan.undo_source("Deployment", obj, revisions, to_revision=1)["revision"] == 1
    with pytest.raises(RolloutError, match=r"revision 7 is not in its history \(revisions kept: 1, 2, 3\)"):
        rollout_plan.undo_source("Deployment", obj, revisions, to_revision=7)
    p = plan(obj, undo=True, _revisions=revisions)
    assert p["undo_to"] == 2 and p["template"] == templates[1]
    assert p["changes"] == ["undo to revision 2 (worker apex/worker:1.0.0)"]
    assert p["before"] == {"containers": {"worker": {"image": "apex/worker:1.1.0"}}}
    assert p["after"] == {"containers": {"worker": {"image": "apex/worker:1.0.0"}}}
    p = plan(obj, to_revision=1, _revisions=revisions)
    assert p["undo_to"] == 1 and p["after"]["containers"]["worker"]["env"] == {"APEX__WORKER__CONCURRENCY": "2"}


def test_undo_to_the_current_template_is_no_change():
    obj, revisions, dummy = _history()
    p = plan(obj, to_revision=3, _revisions=revisions)
    assert not p["changed"] and p["undo_to"] == 3


def test_undo_without_an_older_revision_is_refused():
    obj, revisions, dummy = _history()
    with pytest.raises(RolloutError, match=r"no revision before the current one \(1\)"):
        rollout_plan.undo_source("Deployment", dict(obj, metadata=dict(
            obj["metadata"], annotations={"deployment.kubernetes.io/revision": "1"})), revisions[:1])


def test_undo_excludes_template_edits():
    with pytest.raises(RolloutError, match="cannot be combined with env, restart"):
        rollout_plan.check_request("Deployment", dict(name="x", undo=True, env={"APEX__A": 1}, restart=True))


def test_statefulset_revisions_come_from_controller_revisions():
    sts = {"metadata": {"name": "postgresql", "uid": "u-pg"}, "spec": {"template": {"spec": {"containers": [
        {"name": "pg", "image": "postgres:16"}]}}}, "status": {"updateRevision": "postgresql-b"}}
    revs = [{"metadata": {"name": "postgresql-a", "ownerReferences": [{"uid": "u-pg", "controller": True}]},
             "revision": 1, "data": {"spec": {"template": {"$patch": "replace", "spec": {"containers": [
                 {"name": "pg", "image": "postgres:15"}]}}}}},
            {"metadata": {"name": "postgresql-b", "ownerReferences": [{"uid": "u-pg", "controller": True}]},
             "revision": 2, "data": {"spec": {"template": sts["spec"]["template"]}}}]
    revisions = rollout_plan.revisions_of("StatefulSet", sts, revs)
    chosen = rollout_plan.undo_source("StatefulSet", sts, revisions)
    assert chosen["revision"] == 1 and "$patch" not in chosen["template"]


def test_history_shows_env_and_image_changes_between_revisions():
    obj, revisions, dummy = _history()
    entries = rollout_plan.history("Deployment", obj, revisions)
    assert [e["current"] for e in entries] == [False, False, True]
    assert entries[1]["env_changes"] == [dict(container="worker", name="APEX__WORKER__CONCURRENCY", before="2", after="5")]
    assert entries[1]["image_changes"] == []
    assert entries[2]["image_changes"] == [dict(container="worker", before="apex/worker:1.0.0", after="apex/worker:1.1.0")]
    assert entries[0]["env"]["worker"]["APEX__DATABASE__URL"] == "<secretKeyRef apex-secrets/database-url>"


def test_change_cause_is_bounded_and_can_be_given():
    assert rollout_plan.change_cause(["x"], "ticket 42") == "ticket 42"
    assert len(rollout_plan.change_cause(["y" * 1000])) == rollout_plan.CHANGE_CAUSE_MAX


# --------------------------------------------------------------------------- the changer, with a fake API


class FakeApi(object):
    """Deployments by name; JSON patches applied; a 409 once when ``conflict_once``."""

    def __init__(self, objects):
        self.objects = dict((o["metadata"]["name"], o) for o in objects)
        self.patches = []
        self.conflict_once = False

    def get(self, path):
        name = path.rsplit("/", 1)[-1]
        if name not in self.objects:
            raise KubeApiError(404, "NotFound", "%s not found" % name)
        return copy.deepcopy(self.objects[name])

    def list(self, path):
        return {"items": []}

    def request(self, method, path, body=None, content_type=None):
        assert method == "PATCH" and content_type == "application/json-patch+json"
        name = path.rsplit("/", 1)[-1]
        obj = self.objects[name]
        if self.conflict_once:
            self.conflict_once = False
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            raise KubeApiError(409, "Conflict", "the object has been modified")
        for op in body:
            if op["path"] == "/metadata/resourceVersion":
                assert op["value"] == obj["metadata"]["resourceVersion"]
            elif op["path"] == "/spec/template":
                obj["spec"]["template"] = copy.deepcopy(op["value"])
            elif op["path"] == "/metadata/annotations":
                obj["metadata"]["annotations"] = copy.deepcopy(op["value"])
            elif op["path"] == "/spec/paused":
                obj["spec"]["paused"] = op["value"]
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self.patches.append((name, body))
        return obj


def test_run_rollout_writes_once_waits_and_is_idempotent(monkeypatch):
    api = FakeApi([worker()])
    waited = []
    monkeypatch.setattr(rollout_change, "wait_rollout", lambda client, targets, deadline: waited.append(targets) or [
        dict(key="k", kind=t["kind"], namespace=t["namespace"], name=t["name"], ok=True, outcome="complete",
             error=None, last={"state": "complete"}) for t in targets])
    opts = dict(names=["apex-worker"], env={"APEX__WORKER__CONCURRENCY": 5}, wait=True, wait_timeout=10)
    result = rollout_change.run_rollout(api, "apex", opts, now=NOW)
    assert result["changed"] and len(api.patches) == 1 and len(waited) == 1
    assert result["targets"][0]["outcome"] == "complete"
    assert api.objects["apex-worker"]["metadata"]["annotations"]["kubernetes.io/change-cause"].endswith("2 -> 5")
    again = rollout_change.run_rollout(api, "apex", opts, now=NOW)
    assert not again["changed"] and len(api.patches) == 1 and len(waited) == 1


def test_check_mode_writes_nothing_and_diffs():
    api = FakeApi([worker()])
    result = rollout_change.run_rollout(api, "apex", dict(names=["apex-worker"], image="apex/worker:2"),
                                        check_mode=True, diff=True)
    assert result["changed"] and not api.patches
    assert result["diff"]["after"] == {"Deployment/apex/apex-worker": {"containers": {"worker": {"image": "apex/worker:2"}}}}


def test_a_conflict_reads_again_and_plans_again(monkeypatch):
    api = FakeApi([worker()])
    api.conflict_once = True
    monkeypatch.setattr(rollout_change, "wait_rollout", lambda client, targets, deadline: [])
    result = rollout_change.run_rollout(api, "apex", dict(names=["apex-worker"], env={"APEX__A": "1"}, wait=False))
    assert result["changed"] and len(api.patches) == 1


def test_a_failed_rollout_puts_back_the_previous_template(monkeypatch):
    before = worker()
    api = FakeApi([before])
    calls = []

    def fake_wait(client, targets, deadline):
        calls.append(targets)
        first = len(calls) == 1
        return [dict(key="k", kind=t["kind"], namespace=t["namespace"], name=t["name"], ok=not first,
                     outcome="timeout" if first else "complete", error=None,
                     last={"state": "progressing", "message": "1 of 5 updated replicas are available"})
                for t in targets]
    monkeypatch.setattr(rollout_change, "wait_rollout", fake_wait)
    monkeypatch.setattr(rollout_change.RolloutChanger, "not_ready_pods", lambda self, kind, obj: ["pod-x: never ready"])
    with pytest.raises(RolloutError) as info:
        rollout_change.run_rollout(api, "apex", dict(names=["apex-worker"], image="apex/worker:bad", wait=True,
                                                     wait_timeout=3, rollback_on_failure=True))
    message = str(info.value)
    assert "timed out after 3s" in message and "1 of 5 updated replicas are available" in message
    assert "pod-x: never ready" in message
    assert api.objects["apex-worker"]["spec"]["template"] == before["spec"]["template"]
    assert "kubernetes.io/change-cause" not in api.objects["apex-worker"]["metadata"]["annotations"]
    assert info.value.last_state["rolled_back"] == [
        "Deployment/apex/apex-worker -> pod template as before this call, rolled out"]
    assert info.value.last_state["targets"][0]["wait_failure"]["outcome"] == "timeout"


def test_missing_targets_are_named_and_nothing_is_written():
    api = FakeApi([worker()])
    with pytest.raises(RolloutError, match="not found in namespace apex: Deployment apex-nope"):
        rollout_change.run_rollout(api, "apex", dict(names=["apex-worker", "apex-nope"], restart=True))
    assert not api.patches


def test_targets_inherit_the_call_options_and_may_not_repeat():
    specs = rollout_change.build_specs(dict(names=["apex-api"], env={"APEX__A": 1},
                                            targets=[dict(name="statefulset/redis", restart=True)]))
    assert specs[1]["kind"] == "StatefulSet" and specs[1]["restart"] and specs[1]["env"] == {"APEX__A": 1}
    with pytest.raises(RolloutError, match="targeted twice"):
        rollout_change.build_specs(dict(names=["apex-api", "deployment/apex-api"]))


def test_a_renumbered_revision_is_found_by_its_earlier_number():
    obj, revisions, templates = _history()
    # revision 1 was gone back to: now revision 4, with revision-history "1"
    sets = [replica_set(obj, 4, templates[0]), replica_set(obj, 2, templates[1]), replica_set(obj, 3, templates[2])]
    sets[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = "1"
    renumbered = rollout_plan.revisions_of("Deployment", obj, sets)
    assert rollout_plan.undo_source("Deployment", obj, renumbered, to_revision=1)["revision"] == 4
