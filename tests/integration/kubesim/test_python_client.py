"""The official Python client (typed APIs, DynamicClient, watch) against the simulator."""
import threading
import time
import urllib.error
import urllib.request
import ssl
import uuid

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException


@pytest.fixture(scope="module")
def api(kube):
    return kube.api_client()


@pytest.fixture()
def ns(kube, api):
    name = "kpy-" + uuid.uuid4().hex[:8]
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(api).delete_namespace(name)


def _deployment(name, replicas=2, image="apex/api:1.0.0", env=None):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{
                                      "name": "app", "image": image,
                                      "env": env or [{"name": "A", "value": "1"},
                                                     {"name": "B", "value": "2"}]}]}}}}


def _wait(fn, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_unauthenticated_is_401(kube):
    cluster, user = kube.config()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(cluster["server"] + "/api/v1/namespaces")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=5)
    assert err.value.code == 401
    req = urllib.request.Request(cluster["server"] + "/api/v1/namespaces",
                                 headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=5)
    assert err.value.code == 401
    req = urllib.request.Request(cluster["server"] + "/api/v1/namespaces",
                                 headers={"Authorization": "Bearer " + user["token"]})
    assert urllib.request.urlopen(req, context=ctx, timeout=5).status == 200


def test_typed_core_apps_autoscaling(api):
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    pods = core.list_namespaced_pod("apex", label_selector="app=apex-api")
    # the shared apex namespace may be mid-rollout (other suites): some pod is Running
    assert len(pods.items) >= 1 and any(p.status.phase == "Running" for p in pods.items)
    assert len(core.list_node().items) == 3
    dep = apps.read_namespaced_deployment("apex-api", "apex")
    assert dep.status.ready_replicas and dep.status.observed_generation
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"]
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("apex-api", "apex")
    assert hpa.spec.min_replicas >= 1 and hpa.spec.metrics[0].resource.target.average_utilization
    assert hpa.status.current_metrics[0].resource.current.average_utilization is not None
    v1 = client.AutoscalingV1Api(api).read_namespaced_horizontal_pod_autoscaler("apex-api", "apex")
    assert v1.spec.target_cpu_utilization_percentage == \
        hpa.spec.metrics[0].resource.target.average_utilization
    sts = apps.read_namespaced_stateful_set("postgresql", "apex")
    assert sts.status.ready_replicas == 1
    assert core.read_namespaced_pod("postgresql-0", "apex").status.phase == "Running"
    lease = client.CoordinationV1Api(api)
    assert lease.list_namespaced_lease("kube-node-lease").items


def test_crud_conflict_and_errors(api, ns):
    core = client.CoreV1Api(api)
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c1"}, "data": {"k": "v"}})
    assert cm.metadata.uid and cm.metadata.resource_version and cm.metadata.creation_timestamp
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "c1"}, "data": {}})
    assert err.value.status == 409 and '"reason":"AlreadyExists"' in err.value.body
    stale = core.read_namespaced_config_map("c1", ns)
    cm.data = {"k": "v2"}
    core.replace_namespaced_config_map("c1", ns, cm)
    stale.data = {"k": "v3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c1", ns, stale)
    assert err.value.status == 409 and "Conflict" in err.value.body
    assert core.read_namespaced_config_map("c1", ns).data == {"k": "v2"}
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("nope", ns)
    assert err.value.status == 404 and "NotFound" in err.value.body
    with pytest.raises(ApiException) as err:
        client.AppsV1Api(api).create_namespaced_deployment(ns, {
            "metadata": {"name": "bad"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                                                  "template": {"metadata": {"labels": {"a": "c"}},
                                                               "spec": {"containers": []}}}})
    assert err.value.status == 422 and "Invalid" in err.value.body
    gen = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "gen-"}})
    assert gen.metadata.name.startswith("gen-") and len(gen.metadata.name) > 4
    core.delete_collection_namespaced_config_map(ns)
    assert not core.list_namespaced_config_map(ns).items


def test_patches(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("p1"))
    # strategic merge: env merged by name
    apps.patch_namespaced_deployment("p1", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}]}]}}}})
    env = apps.read_namespaced_deployment("p1", ns).spec.template.spec.containers[0].env
    assert [(e.name, e.value) for e in env] == [("A", "1"), ("B", "22"), ("C", "3")]
    # $patch: delete
    apps.patch_namespaced_deployment("p1", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}}})
    env = apps.read_namespaced_deployment("p1", ns).spec.template.spec.containers[0].env
    assert [e.name for e in env] == ["B", "C"]
    # JSON patch
    apps.patch_namespaced_deployment("p1", ns, [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/extra", "value": "yes"}])
    dep = apps.read_namespaced_deployment("p1", ns)
    assert dep.spec.replicas == 3 and dep.metadata.labels["extra"] == "yes"
    gen = dep.metadata.generation
    # metadata-only change does not bump the generation
    apps.patch_namespaced_deployment("p1", ns, [{"op": "add", "path": "/metadata/labels/x",
                                                 "value": "1"}])
    assert apps.read_namespaced_deployment("p1", ns).metadata.generation == gen
    # JSON merge patch through the dynamic client
    dyn = dynamic.DynamicClient(api)
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.patch(name="p1", namespace=ns, body={"metadata": {"labels": {"extra": None}}},
               content_type="application/merge-patch+json")
    assert "extra" not in apps.read_namespaced_deployment("p1", ns).metadata.labels
    # scale subresource
    apps.patch_namespaced_deployment_scale("p1", ns, {"spec": {"replicas": 1}})
    assert apps.read_namespaced_deployment_scale("p1", ns).spec.replicas == 1


def test_rollout_new_rs_and_revision(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("r1", replicas=3))

    def done(rev):
        d = apps.read_namespaced_deployment("r1", ns)
        s = d.status
        if s is None:
            return False
        return (s.observed_generation == d.metadata.generation and s.updated_replicas == 3 and
                s.available_replicas == 3 and s.replicas == 3 and
                d.metadata.annotations.get("deployment.kubernetes.io/revision") == rev) and d
    _wait(lambda: done("1"), "first rollout")
    apps.patch_namespaced_deployment("r1", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "apex/api:2.0.0"}]}}}})
    t0 = time.monotonic()
    d = _wait(lambda: done("2"), "second rollout")
    assert time.monotonic() - t0 < 10
    rss = apps.list_namespaced_replica_set(ns, label_selector="app=r1").items
    assert len(rss) == 2
    new = [r for r in rss if r.spec.replicas == 3][0]
    assert new.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert new.metadata.labels["pod-template-hash"] in new.metadata.name
    assert new.metadata.owner_references[0].uid == d.metadata.uid
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app=r1").items
    assert len(pods) == 3 and {p.spec.containers[0].image for p in pods} == {"apex/api:2.0.0"}
    conds = {c.type: c.reason for c in d.status.conditions}
    assert conds == {"Available": "MinimumReplicasAvailable",
                     "Progressing": "NewReplicaSetAvailable"}


def test_watch_stream_and_selectors(api, ns):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    got = []

    def writer():
        time.sleep(0.3)
        core.create_namespaced_config_map(ns, {"metadata": {"name": "w1", "labels": {"t": "a"}}})
        core.create_namespaced_config_map(ns, {"metadata": {"name": "w2", "labels": {"t": "b"}}})
        core.patch_namespaced_config_map("w1", ns, {"data": {"x": "1"}})
        core.delete_namespaced_config_map("w1", ns)
    threading.Thread(target=writer, daemon=True).start()
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv,
                       label_selector="t=a", timeout_seconds=10):
        got.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    assert got == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1").items
    assert pods and all(p.spec.node_name == "node-1" for p in pods)
    running = core.list_namespaced_pod("apex", field_selector="status.phase=Running").items
    assert running
    assert not core.list_namespaced_pod("apex", label_selector="app in (nothing)").items


def test_watch_without_resource_version_starts_with_current_objects(api, ns):
    core = client.CoreV1Api(api)
    w = watch.Watch()
    names = []
    core.create_namespaced_config_map(ns, {"metadata": {"name": "g1"}})
    for ev in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=1):
        names.append(ev["object"].metadata.name)
    assert "g1" in names  # initial ADDED events without a resourceVersion


def test_dynamic_client_cert_manager(api):
    dyn = dynamic.DynamicClient(api)
    certs = dyn.resources.get(api_version="cert-manager.io/v1", kind="Certificate")
    cert = certs.get(namespace="apex", name="apex-tls")
    assert cert.spec.secretName == "apex-tls"
    conds = {c["type"]: c["status"] for c in cert.status.conditions}
    assert conds["Ready"] == "True" and cert.status.notAfter
    issuers = dyn.resources.get(api_version="cert-manager.io/v1", kind="Issuer")
    assert issuers.get(namespace="apex").items[0].metadata.name == "lab-ca"
    sec = client.CoreV1Api(api).read_namespaced_secret("apex-tls", "apex")
    assert set(sec.data) >= {"tls.crt", "tls.key"} and sec.type == "kubernetes.io/tls"


def test_owner_reference_gc_and_propagation(api, ns):
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dep1", "ownerReferences": [ref]}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dep2", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", ns)
    _wait(lambda: not [c for c in core.list_namespaced_config_map(ns).items
                       if c.metadata.name.startswith("dep")], "garbage collection")
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner2"}})
    ref["uid"], ref["name"] = owner.metadata.uid, "owner2"
    core.create_namespaced_config_map(ns, {"metadata": {"name": "kept", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner2", ns, propagation_policy="Orphan")
    time.sleep(0.3)
    kept = core.read_namespaced_config_map("kept", ns)
    assert not kept.metadata.owner_references


def test_eviction_honours_pdb(api, ns):
    apps, core, policy = client.AppsV1Api(api), client.CoreV1Api(api), client.PolicyV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("e1", replicas=2))
    policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "e1"}, "spec": {"minAvailable": 2,
                                             "selector": {"matchLabels": {"app": "e1"}}}})
    _wait(lambda: (apps.read_namespaced_deployment("e1", ns).status.available_replicas or 0) == 2,
          "e1 available")
    _wait(lambda: policy.read_namespaced_pod_disruption_budget("e1", ns).status.expected_pods == 2,
          "pdb status")
    pod = core.list_namespaced_pod(ns, label_selector="app=e1").items[0]
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod.metadata.name, "namespace": ns}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction(pod.metadata.name, ns, body)
    assert err.value.status == 429 and "disruption budget" in err.value.body
    policy.patch_namespaced_pod_disruption_budget("e1", ns, {"spec": {"minAvailable": 1}})
    _wait(lambda: policy.read_namespaced_pod_disruption_budget("e1", ns)
          .status.disruptions_allowed == 1, "pdb to allow a disruption")
    core.create_namespaced_pod_eviction(pod.metadata.name, ns, body)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod(pod.metadata.name, ns)
    assert err.value.status == 404


def test_pod_log_subresource(api):
    core = client.CoreV1Api(api)
    pod = core.list_namespaced_pod("apex", label_selector="app=apex-api").items[0]
    text = core.read_namespaced_pod_log(pod.metadata.name, "apex")
    assert "apex-api version=" in text
    assert len(core.read_namespaced_pod_log(pod.metadata.name, "apex", tail_lines=1)
               .strip().splitlines()) == 1


def test_metrics_api(api):
    custom = client.CustomObjectsApi(api)
    pm = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "apex", "pods")
    assert pm["items"] and pm["items"][0]["containers"][0]["usage"]["cpu"]
    nm = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert len(nm["items"]) == 3


def test_statefulset_ordered_scale_up_and_down(api, ns):
    """OrderedReady: ordinal n is created only once n-1 is Ready; scale-down removes the
    highest ordinal first. Judged on the order of the watch events."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    apps.create_namespaced_stateful_set(ns, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ordered"},
        "spec": {"replicas": 0, "serviceName": "ordered",
                 "selector": {"matchLabels": {"app": "ordered"}},
                 "template": {"metadata": {"labels": {"app": "ordered"}},
                              "spec": {"containers": [{"name": "db",
                                                       "image": "postgres:15"}]}}}})
    events = []
    started, stopping = threading.Event(), threading.Event()
    w = watch.Watch()

    def collect():
        try:
            for ev in w.stream(core.list_namespaced_pod, ns, label_selector="app=ordered",
                               timeout_seconds=60, allow_watch_bookmarks=False, resource_version=rv):
                pod = ev["object"]
                ready = any(c.type == "Ready" and c.status == "True"
                            for c in (pod.status.conditions or []) if pod.status)
                events.append((ev["type"], pod.metadata.name, ready))
        except Exception as exc:  # reported below, not lost in the thread
            if not stopping.is_set():  # closing the stream at stop() may end it abruptly
                events.append(("ERROR", repr(exc), False))
    rv = core.list_namespaced_pod(ns, label_selector="app=ordered").metadata.resource_version
    t = threading.Thread(target=lambda: (started.set(), collect()), daemon=True)
    t.start()
    started.wait(5)
    time.sleep(0.2)  # the watch request is open before the first write
    try:
        apps.patch_namespaced_stateful_set_scale("ordered", ns, {"spec": {"replicas": 3}})
        _wait(lambda: apps.read_namespaced_stateful_set("ordered", ns).status.ready_replicas
              == 3, "3 ready replicas")
        apps.patch_namespaced_stateful_set_scale("ordered", ns, {"spec": {"replicas": 1}})
        _wait(lambda: sum(1 for e in events if e[0] == "DELETED") == 2, "two DELETED events")
        time.sleep(0.3)  # no further deletion may follow
    finally:
        stopping.set()
        w.stop()  # the stream ends at its next event: the deletion of what is left
        apps.delete_namespaced_stateful_set("ordered", ns)
        t.join(10)
    pods = core.list_namespaced_pod(ns, label_selector="app=ordered").items
    end = next((i for i, e in enumerate(events) if e[:2] == ("DELETED", "ordered-0")), len(events))
    events = events[:end]
    assert not [e for e in events if e[0] == "ERROR"], events

    def first(pred):
        return next(i for i, e in enumerate(events) if pred(e))
    for n in (1, 2):
        added = first(lambda e: e[0] == "ADDED" and e[1] == "ordered-%d" % n)
        prev_ready = first(lambda e: e[1] == "ordered-%d" % (n - 1) and e[2])
        assert prev_ready < added, "ordered-%d created before ordered-%d was Ready: %r" % (
            n, n - 1, events)
    deleted = [e[1] for e in events if e[0] == "DELETED"]
    assert deleted == ["ordered-2", "ordered-1"], events
    assert not t.is_alive()
