"""The per-object plan of apex_release: projection of live objects, Secret masking, deletions."""
import base64

import yaml

from ansible_collections.apex.ops.plugins.module_utils import manifest_diff as md

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "apex-api", "labels": {"app": "apex-api"}},
    "spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "api", "image": "apex/api:1.1.0", "resources": {"limits": {"cpu": "2"}},
         "env": [{"name": "A", "value": "1"}]}]}}},
}


def live_deployment(image="apex/api:1.0.0", replicas=3, extra_env=()):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "apex-api", "namespace": "apex", "uid": "u-1", "resourceVersion": "42",
                     "labels": {"app": "apex-api"}, "annotations": {"deployment.kubernetes.io/revision": "3"}},
        "spec": {"replicas": replicas, "progressDeadlineSeconds": 600, "template": {"spec": {
            "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "api", "image": image, "terminationMessagePath": "/dev/termination-log",
                            "resources": {"limits": {"cpu": 2}},
                            "env": [{"name": "A", "value": "1"}] + list(extra_env)}]}}},
        "status": {"readyReplicas": 3},
    }


def secret(data=None, string_data=None, name="apex-secrets"):
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque"}
    if data is not None:
        obj["data"] = dict((k, base64.b64encode(v.encode()).decode()) for k, v in data.items())
    if string_data is not None:
        obj["stringData"] = string_data
    return obj


def test_project_keeps_only_what_the_manifest_sets():
    view = md.project(live_deployment(), DEPLOYMENT)
    assert "status" not in view and "uid" not in view["metadata"]
    assert "dnsPolicy" not in view["spec"]["template"]["spec"]
    container = view["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "apex/api:1.0.0" and "terminationMessagePath" not in container
    assert container["resources"] == {"limits": {"cpu": "2"}}  # 2 and "2" are the same quantity


def test_project_leaves_out_named_entries_another_writer_added():
    # applying merges env by name: B (set by someone else) stays, so it is no difference
    view = md.project(live_deployment(extra_env=[{"name": "B", "value": "x"}]), DEPLOYMENT)
    env = view["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}]


def test_project_keeps_extra_entries_of_positional_lists():
    live = {"spec": {"args": ["--a", "--b"]}}
    assert md.project(live, {"spec": {"args": ["--a"]}}) == {"spec": {"args": ["--a", "--b"]}}


def test_project_empty_values_the_server_omits_are_no_difference():
    desired = {"kind": "ConfigMap", "metadata": {"name": "c", "annotations": None}, "data": {}}
    assert md.project({"kind": "ConfigMap", "metadata": {"name": "c"}}, desired) == desired


def test_plan_actions():
    desired = [DEPLOYMENT, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "apex-api"}, "spec": {"ports": [{"name": "http", "port": 80}]}},
               {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"a": "b"}}]
    previous = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old"}, "data": {}}]
    live = {
        ("Deployment", "apex-api"): live_deployment(),
        ("Service", "apex-api"): {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "apex-api"},
                                  "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}},
        ("ConfigMap", "old"): {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old"}, "data": {"x": "y"}},
    }
    plan = md.plan_objects(desired, previous, lambda obj: live.get((obj["kind"], obj["metadata"]["name"])), "apex")
    summary = md.plan_summary(plan)
    assert summary == {"create": ["ConfigMap/apex/new"], "update": ["Deployment/apex/apex-api"],
                       "delete": ["ConfigMap/apex/old"], "unchanged": ["Service/apex/apex-api"]}
    entries = md.diff_entries(plan)
    assert [e["after_header"] for e in entries] == ["Deployment/apex/apex-api (release)", "ConfigMap/apex/new (release)",
                                                    "ConfigMap/apex/old (deleted)"]
    update = entries[0]
    assert yaml.safe_load(update["before"])["spec"]["template"]["spec"]["containers"][0]["image"] == "apex/api:1.0.0"
    assert yaml.safe_load(update["after"])["spec"]["template"]["spec"]["containers"][0]["image"] == "apex/api:1.1.0"
    assert entries[1]["before"] == "" and entries[1]["before_header"] == "ConfigMap/apex/new (absent)"
    assert entries[2]["after"] == ""


def test_cluster_scoped_keys_have_no_namespace():
    assert md.object_key({"kind": "ClusterRole", "metadata": {"name": "r"}}, "apex") == "ClusterRole/r"
    assert md.object_key({"kind": "Service", "metadata": {"name": "s", "namespace": "x"}}, "apex") == "Service/x/s"


def test_secret_values_are_masked_and_changes_marked():
    live = secret(data={"DB_PASSWORD": "old-pw", "KEEP": "same", "GONE": "bye"})
    live["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": '{"data":{"DB_PASSWORD":"b2xk"}}'}
    desired = secret(string_data={"DB_PASSWORD": "new-pw", "KEEP": "same", "NEW": "hello"})
    plan = md.plan_objects([desired], [], lambda obj: live, "apex")
    assert plan[0]["action"] == "update"
    before, after = plan[0]["before"], plan[0]["after"]
    assert before["data"] == {"DB_PASSWORD": "<masked>", "GONE": "<masked>", "KEEP": "<masked>"}
    assert after["data"] == {"DB_PASSWORD": "<masked, changed>", "KEEP": "<masked>", "NEW": "<masked>"}
    assert "stringData" not in after
    text = repr(md.diff_entries(plan))
    for leak in ("old-pw", "new-pw", "same", "hello", "bye", "b2xk", base64.b64encode(b"old-pw").decode()):
        assert leak not in text


def test_unchanged_secret_is_unchanged_and_masked():
    live = secret(data={"A": "x"})
    plan = md.plan_objects([secret(string_data={"A": "x"})], [], lambda obj: live, "apex")
    assert plan[0]["action"] == "unchanged"
    assert plan[0]["after"]["data"] == {"A": "<masked>"}


def test_created_and_deleted_secrets_are_masked():
    desired = secret(data={"A": "x"})
    created = md.plan_objects([desired], [], lambda obj: None, "apex")[0]
    assert created["action"] == "create" and created["before"] is None and created["after"]["data"] == {"A": "<masked>"}
    gone = md.plan_objects([], [desired], lambda obj: secret(data={"A": "x"}), "apex")[0]
    assert gone["action"] == "delete" and gone["before"]["data"] == {"A": "<masked>"} and gone["after"] is None


def test_mask_sensitive_values():
    values = {"api": {"image": {"tag": "1.1.0"}, "env": {"DB_PASSWORD": "pw", "APEX__LOG_LEVEL": "info"}},
              "secrets": {"x": "y"}, "tls": {"key": "PEM", "keyName": "k"}, "token": "", "items": [{"apiKey": "a"}]}
    masked = md.mask_sensitive_values(values)
    assert masked["api"] == {"image": {"tag": "1.1.0"}, "env": {"DB_PASSWORD": "<masked>", "APEX__LOG_LEVEL": "info"}}
    assert masked["secrets"] == "<masked>" and masked["tls"] == {"key": "<masked>", "keyName": "k"}
    assert masked["token"] == "" and masked["items"] == [{"apiKey": "<masked>"}]


def test_parse_manifest_and_digest():
    text = "---\n# Source: a\n\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
    assert [o["metadata"]["name"] for o in md.parse_manifest(text)] == ["a"]
    assert md.manifest_digest(text) == md.manifest_digest(text) != md.manifest_digest(text + " ")
    assert md.parse_manifest(None) == []
