"""Protobuf request bodies, decoded with the schema embedded in the kubectl binary."""
import shutil

import pytest

from kubesim import protobuf


def _key(num, wt):
    return bytes([(num << 3) | wt])


def _ld(num, payload):
    assert len(payload) < 128
    return _key(num, 2) + bytes([len(payload)]) + payload


def _varint(num, value):
    return _key(num, 0) + bytes([value])


def test_wire_fields():
    buf = _varint(1, 5) + _ld(2, b"ab")
    assert list(protobuf.fields(buf)) == [(1, 0, 5), (2, 2, b"ab")]


def test_omit_empty_keeps_meaningful_zeros():
    assert protobuf.omit_empty({"spec": {"replicas": 0, "paused": False, "x": "",
                                         "minReadySeconds": 0}}) == {"spec": {"replicas": 0}}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl binary provides the schema")
def test_decode_configmap_and_deployment():
    meta = _ld(1, b"cm1") + _ld(2, b"") + _ld(3, b"ns1")          # name, generateName, ns
    entry = _ld(1, b"k") + _ld(2, b"v")
    cm = _ld(1, meta) + _ld(2, entry)                               # metadata, data map
    env = protobuf.MAGIC + _ld(1, _ld(1, b"v1") + _ld(2, b"ConfigMap")) + _ld(2, cm)
    obj = protobuf.decode_object(env)
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm1", "namespace": "ns1"}, "data": {"k": "v"}}
    container = _ld(1, b"c") + _ld(2, b"img:1")
    podspec = _ld(2, container)
    tpl = _ld(2, podspec)
    spec = _varint(1, 0) + _ld(3, tpl)                              # replicas 0, template
    dep = _ld(1, _ld(1, b"d1")) + _ld(2, spec)
    env = protobuf.MAGIC + _ld(1, _ld(1, b"apps/v1") + _ld(2, b"Deployment")) + _ld(2, dep)
    obj = protobuf.decode_object(env)
    assert obj["spec"]["replicas"] == 0
    assert obj["spec"]["template"]["spec"]["containers"] == [{"name": "c", "image": "img:1"}]
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode_object(b"not protobuf")
