import pytest

from kubesim.selectors import (match_fields, match_labels, parse_field_selector,
                               parse_label_selector, selector_string, selector_to_reqs)
from kubesim.store import ApiError


def test_label_selector_syntax():
    labels = {"app": "apex-api", "tier": "web"}
    for sel, want in (("app=apex-api", True), ("app==apex-api", True), ("app!=apex-api", False),
                      ("app in (apex-api,x)", True), ("app notin (apex-api)", False),
                      ("tier", True), ("!tier", False), ("!track", True),
                      ("app=apex-api,tier in (web)", True), ("app=apex-api,track", False),
                      ("", True)):
        assert match_labels(parse_label_selector(sel), labels) is want, sel
    with pytest.raises(ApiError):
        parse_label_selector("app===x")


def test_label_selector_object():
    sel = {"matchLabels": {"app": "a"}, "matchExpressions": [
        {"key": "track", "operator": "DoesNotExist"}]}
    assert match_labels(selector_to_reqs(sel), {"app": "a"})
    assert not match_labels(selector_to_reqs(sel), {"app": "a", "track": "canary"})
    assert selector_string(sel) == "app=a,!track"


def test_field_selectors():
    pod = {"metadata": {"name": "p", "namespace": "apex"},
           "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}}
    assert match_fields(parse_field_selector("spec.nodeName=node-1,status.phase!=Failed"), pod)
    assert not match_fields(parse_field_selector("metadata.name=q"), pod)
    assert match_fields(parse_field_selector("involvedObject.name="), {"involvedObject": {}})


def test_selector_string_of_a_service_without_selector():
    from kubesim.selectors import selector_string
    # Service "kubernetes" has no selector: the Table row must not fail (kubectl get svc -A)
    assert selector_string({"matchLabels": None}) == ""
    assert selector_string(None) == ""
    assert selector_string({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
