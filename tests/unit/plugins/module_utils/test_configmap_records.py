"""Unit tests of configmap_records: the ConfigMap plumbing of the saved scale states and the journal."""
import copy
import json

import pytest

from ansible_collections.apex.ops.plugins.module_utils.configmap_records import ConfigMapRecords
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError

PATH = "/api/v1/namespaces/apex/configmaps"


class FakeConfigMaps(object):
    def __init__(self):
        self.items, self.calls, self.rv = {}, [], 0

    def get(self, path, query=None):
        self.calls.append(("GET", path))
        if path not in self.items:
            raise KubeApiError(404, "NotFound", "not found")
        return copy.deepcopy(self.items[path])

    def _store(self, path, body):
        current = self.items.get(path)
        if current is not None and body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.items[path] = body
        return body

    def post(self, path, body):
        self.calls.append(("POST", path))
        return self._store("%s/%s" % (path, body["metadata"]["name"]), body)

    def put(self, path, body):
        self.calls.append(("PUT", path))
        return self._store(path, body)

    def request(self, method, path, body=None, **kwargs):
        self.calls.append((method, path, body))
        if self.items.pop(path, None) is None:
            raise KubeApiError(404, "NotFound", "not found")
        return {}


def test_save_creates_then_replaces_keeping_other_records_unless_told():
    client = FakeConfigMaps()
    store = ConfigMapRecords(client, "apex", "apex-ops-test", "records of a test")
    assert store.get() is None and store.read("a") is None
    store.save(None, {"a": {"n": 1}})
    cm = store.get()
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "apex.ops"}
    assert cm["metadata"]["annotations"] == {"apex.ops/description": "records of a test"}
    store.save(cm, {"b": {"n": 2}})
    assert store.read("a") == {"n": 1} and store.read("b") == {"n": 2}
    assert json.loads(store.get()["data"]["b"]) == {"n": 2}
    store.save(store.get(), {"c": {"n": 3}}, keep_others=False)
    assert sorted(store.get()["data"]) == ["c"]


def test_save_of_a_stale_read_conflicts_and_delete_carries_the_read_version():
    client = FakeConfigMaps()
    store = ConfigMapRecords(client, "apex", "apex-ops-test", "d")
    store.save(None, {"a": 1})
    stale = store.get()
    store.save(store.get(), {"a": 2})
    with pytest.raises(KubeApiError) as err:
        store.save(stale, {"a": 3})
    assert err.value.conflict and store.read("a") == 2
    current = store.get()
    store.delete(current)
    method, path, body = client.calls[-1]
    assert (method, path) == ("DELETE", PATH + "/apex-ops-test")
    assert body["preconditions"] == {"resourceVersion": current["metadata"]["resourceVersion"]}
    store.delete(current)  # already gone: fine
    client.items[PATH + "/apex-ops-test"] = {"metadata": {}, "data": {"a": "not json"}}
    with pytest.raises(ValueError):
        store.read("a")
