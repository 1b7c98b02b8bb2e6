"""Server-side field validation: allowed fields derived from the kubernetes client's models."""
import copy
import time

from kubesim import registry, schema
from kubesim.app import Config
from kubesim.cluster import Cluster
from kubesim.controllers import Controllers
from kubesim.convert import needs_conversion, to_version
from kubesim.pki import CA
from kubesim.seed import seed


def test_kind_to_model():
    assert schema.model_for("apps/v1", "Deployment") == "V1Deployment"
    assert schema.model_for("autoscaling/v2", "HorizontalPodAutoscaler") == \
        "V2HorizontalPodAutoscaler"
    assert schema.model_for("autoscaling/v1", "HorizontalPodAutoscaler") == \
        "V1HorizontalPodAutoscaler"
    assert schema.model_for("v1", "Event") == "CoreV1Event"
    assert schema.model_for("events.k8s.io/v1", "Event") == "EventsV1Event"
    assert schema.model_for("networking.k8s.io/v1", "Ingress") == "V1Ingress"
    assert schema.model_for("cert-manager.io/v1", "Certificate") is None  # CRD: not validated
    assert schema.model_for("example.com/v1", "Widget") is None


def test_unknown_fields_nested_lists_and_open_maps():
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "x", "labels": {"any.key/x": "y"},
                        "annotations": {"free": "form"}, "bogus": 1},
           "spec": {"replcas": 2, "selector": {"matchLabels": {"a": "b"}},
                    "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [
                                     {"name": "c", "image": "i",
                                      "resources": {"limits": {"cpu": 4}},
                                      "ports": [{"containerPort": 80, "protocl": "TCP"}]},
                                     {"name": "d", "image": "i", "imagee": "j"}]}}}}
    model, paths = schema.check(dep)
    assert model == "V1Deployment"
    assert sorted(paths) == ["metadata.bogus", "spec.replcas",
                             "spec.template.spec.containers[0].ports[0].protocl",
                             "spec.template.spec.containers[1].imagee"]
    pruned = copy.deepcopy(dep)
    schema.prune(pruned, paths)
    assert schema.check(pruned)[1] == []
    assert pruned["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
    assert pruned["metadata"]["labels"] == {"any.key/x": "y"}
    assert schema.strict_message(["spec.replcas"]) == \
        'strict decoding error: unknown field "spec.replcas"'


def test_go_format_of_a_patch():
    assert schema.go_format({"spec": {"replcas": 3, "b": [1, None, True]}}) == \
        "map[spec:map[b:[1 <nil> true] replcas:3]]"


def test_everything_the_simulator_writes_validates():
    """Seeded and controller-made objects carry only declared fields, so a Strict replace of an
    object read from the simulator (kubectl edit/replace) is never refused for its own fields."""
    cfg = Config(pod_ready_delay=0.02, hpa_sync=0.05, crash_interval=0.1, job_duration=0.05)
    import tempfile
    bad = []
    for secondary in (False, True):
        cluster = Cluster("t", cfg)
        seed(cluster, CA.load_or_create(None, None, tempfile.mkdtemp()), secondary=secondary,
             env={})
        ctl = Controllers(cluster, cfg, pki=None)
        ctl.start()
        try:
            time.sleep(0.5)
        finally:
            ctl.stopped = True
        n = 0
        with cluster.lock:
            for res in registry.RESOURCES:
                for obj in cluster.store.list(res.storage, None):
                    obj = to_version(res, obj) if needs_conversion(res) else obj
                    obj = dict(obj, apiVersion=registry.api_version(res), kind=res.kind)
                    model, paths = schema.check(obj)
                    n += model is not None
                    bad += ["%s %s: %s" % (res.kind, obj["metadata"]["name"], p) for p in paths]
        assert n > 40
    assert not bad, bad
