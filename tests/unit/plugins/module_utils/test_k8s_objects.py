"""Unit tests of k8s_objects: target names, quantities, label selectors, conditions."""
import pytest

from ansible_collections.apex.ops.plugins.module_utils import k8s_objects


def matches(text, labels):
    return k8s_objects.selector_matches(k8s_objects.parse_selector(text), labels)


@pytest.mark.parametrize("value,expected", [("250m", 250), ("1", 1000), ("1.5", 1500), ("123456789n", 123), (2, 2000)])
def test_millicores(value, expected):
    assert k8s_objects.millicores(value) == expected


def test_mebibytes():
    assert k8s_objects.mebibytes("128Mi") == 128.0
    assert k8s_objects.mebibytes("1Gi") == 1024.0
    assert k8s_objects.mebibytes("1048576") == 1.0


def test_parse_target_name():
    assert k8s_objects.parse_target_name("apex-api") == ("Deployment", "apex-api")
    assert k8s_objects.parse_target_name("statefulset/postgresql") == ("StatefulSet", "postgresql")
    assert k8s_objects.parse_target_name("deploy/apex-worker") == ("Deployment", "apex-worker")
    with pytest.raises(k8s_objects.WorkloadError, match="unsupported kind"):
        k8s_objects.parse_target_name("daemonset/x")


def test_label_selector_strings():
    labels = {"app": "apex-api", "tier": "web", "track": "stable"}
    assert matches("app=apex-api", labels)
    assert matches("app==apex-api,tier!=db", labels)
    assert matches("track in (stable,canary),!canary", labels)
    assert not matches("track notin (stable)", labels)
    assert not matches("missing", labels)
    assert k8s_objects.selector_string({"matchLabels": {"b": "2", "a": "1"},
                                        "matchExpressions": [{"key": "c", "operator": "In", "values": ["x", "y"]}]}) == \
        "a=1,b=2,c in (x,y)"


def test_one_matcher_for_object_selectors_and_selector_strings():
    """A workload's LabelSelector and its string form (selector_string, what kubectl -l takes) select the
    same labels through the one matcher; != and notin match objects without the label, as on the server."""
    selector = {"matchLabels": {"app": "apex-api"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable", "canary"]},
                                     {"key": "tier", "operator": "NotIn", "values": ["db"]},
                                     {"key": "team", "operator": "Exists"},
                                     {"key": "legacy", "operator": "DoesNotExist"}]}
    text = k8s_objects.selector_string(selector)
    for labels in ({"app": "apex-api", "track": "stable", "team": "x"},
                   {"app": "apex-api", "track": "canary", "team": "x", "tier": "db"},
                   {"app": "apex-api", "track": "stable", "team": "x", "legacy": "1"},
                   {"app": "apex-api", "track": "beta", "team": "x"},
                   {"app": "other", "track": "stable", "team": "x"}, {}):
        assert k8s_objects.selector_matches(selector, labels) == matches(text, labels), labels
    assert matches("tier!=db", {}) and matches("tier notin (db)", {"app": "x"})
    assert not matches("app=a,app=b", {"app": "a"})
    assert matches("", {"app": "a"}) and not k8s_objects.selector_matches(None, {"app": "a"})


def test_condition_lookup():
    obj = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ok"},
                                     {"type": "Issuing", "status": "False"}]}}
    assert k8s_objects.condition(obj, "Ready")["reason"] == "Ok"
    assert k8s_objects.condition(obj, "Progressing") is None and k8s_objects.condition(None, "Ready") is None
    assert k8s_objects.condition_true(obj, "Ready") and not k8s_objects.condition_true(obj, "Issuing")
    assert k8s_objects.condition_statuses(obj) == {"Ready": "True", "Issuing": "False"}
    assert k8s_objects.condition_statuses({"status": {}}) == {}
