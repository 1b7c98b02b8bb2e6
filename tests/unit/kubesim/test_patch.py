import pytest

from kubesim.patch import PatchError, json_patch, merge_patch, strategic_merge_patch

DEP = {"spec": {"replicas": 3, "strategy": {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {"containers": [
                    {"name": "api", "image": "a:1",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 8080, "name": "http"}]},
                    {"name": "side", "image": "s:1"}]}}}}


def test_merge_patch_rfc7386():
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == \
        {"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}
    assert merge_patch({"l": [1, 2]}, {"l": [3]}) == {"l": [3]}


def test_json_patch_ops():
    doc = {"a": {"b": [1, 2]}, "c": 1}
    out = json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3},
                           {"op": "replace", "path": "/c", "value": 2},
                           {"op": "remove", "path": "/a/b/0"},
                           {"op": "copy", "from": "/c", "path": "/d"},
                           {"op": "move", "from": "/d", "path": "/e"},
                           {"op": "test", "path": "/e", "value": 2},
                           {"op": "add", "path": "/x~1y", "value": True}])
    assert out == {"a": {"b": [2, 3]}, "c": 2, "e": 2, "x/y": True}
    assert doc == {"a": {"b": [1, 2]}, "c": 1}  # input untouched
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/c", "value": 9}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/nope", "value": 1}])


def test_smp_merges_containers_and_env_by_name():
    out = strategic_merge_patch(DEP, {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}]}]}}}})
    c = out["spec"]["template"]["spec"]["containers"]
    assert [x["name"] for x in c] == ["api", "side"]
    assert c[0]["image"] == "a:1"
    assert c[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "22"},
                           {"name": "C", "value": "3"}]


def test_smp_directives():
    out = strategic_merge_patch(DEP, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"},
        {"name": "api", "env": [{"name": "A", "$patch": "delete"}]}]}}}})
    c = out["spec"]["template"]["spec"]["containers"]
    assert [x["name"] for x in c] == ["api"] and c[0]["env"] == [{"name": "B", "value": "2"}]
    # $retainKeys (kubectl apply on strategy) drops keys not listed
    out = strategic_merge_patch(DEP, {"spec": {"strategy": {"$retainKeys": ["type"],
                                                            "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    # $setElementOrder
    out = strategic_merge_patch(DEP, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "api"}],
        "containers": [{"name": "api", "image": "a:2"}]}}}})
    assert [x["name"] for x in out["spec"]["template"]["spec"]["containers"]] == ["side", "api"]
    # null deletes a key; lists without a merge key are replaced
    out = strategic_merge_patch({"a": 1, "args": ["x", "y"]}, {"a": None, "args": ["z"]})
    assert out == {"args": ["z"]}
    # ports merged by containerPort
    out = strategic_merge_patch(DEP, {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "ports": [{"containerPort": 9090, "name": "metrics"}]}]}}}})
    assert len(out["spec"]["template"]["spec"]["containers"][0]["ports"]) == 2
    # finalizers: primitive merge
    assert strategic_merge_patch({"f": 1, "finalizers": ["a"]}, {"finalizers": ["b"]}) == \
        {"f": 1, "finalizers": ["a", "b"]}
    with pytest.raises(PatchError):
        strategic_merge_patch(DEP, {"spec": {"template": {"spec": {"containers": [
            {"image": "nokey"}]}}}})
