import pytest

from kubesim import store as storemod
from kubesim.store import Gone, Store
from kubesim.tables import human_duration


def _obj(name, ns="a"):
    return {"metadata": {"name": name, "namespace": ns}}


def test_resource_versions_and_history():
    s = Store("t")
    a = s.create(("", "configmaps"), _obj("x"))
    assert a["metadata"]["uid"] and int(a["metadata"]["resourceVersion"]) > 1
    rv0 = int(a["metadata"]["resourceVersion"])
    b = s.replace(("", "configmaps"), dict(_obj("x"), data={"k": "v"}))
    assert int(b["metadata"]["resourceVersion"]) > rv0
    assert b["metadata"]["uid"] == a["metadata"]["uid"]
    with pytest.raises(ValueError):
        s.replace(("", "configmaps"), _obj("x"), expect_rv=str(rv0))
    s.remove(("", "configmaps"), "a", "x")
    evs = s.events_since(("", "configmaps"), rv0 - 1)
    assert [e[1] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    assert s.create(("", "configmaps"), _obj("y")) is not None
    assert s.create(("", "configmaps"), _obj("y")) is None  # exists
    assert [o["metadata"]["name"] for o in s.list(("", "configmaps"), "a")] == ["y"]
    assert s.list(("", "configmaps"), "other") == []


def test_watch_from_compacted_resource_version_is_gone(monkeypatch):
    monkeypatch.setattr(storemod, "HISTORY", 10)
    s = Store("t")
    first = s.create(("", "configmaps"), _obj("c0"))
    for i in range(1, 30):
        s.create(("", "configmaps"), _obj("c%d" % i))
    with pytest.raises(Gone):
        s.events_since(("", "configmaps"), int(first["metadata"]["resourceVersion"]))
    assert s.events_since(("", "configmaps"), s.rv) == []


def test_human_duration_like_kubectl():
    assert [human_duration(x) for x in (5, 119, 125, 600, 7200, 90000, 86400 * 3, 86400 * 800)] \
        == ["5s", "119s", "2m5s", "10m", "120m", "25h", "3d", "2y"]
