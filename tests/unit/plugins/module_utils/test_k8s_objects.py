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
