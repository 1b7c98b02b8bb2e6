"""apex_info against the lab simulator, compared with what the official client reads."""
from k8s_lab import NS

CTX = dict(context="apex-primary", namespace=NS)


def test_one_call_gathers_the_namespace(run_module, kube):
    info = run_module("apex_info", **CTX)
    assert not info.failed, info.get("msg")
    assert not info["changed"]
    deployments = dict((d["name"], d) for d in info["deployments"])
    api = kube.deployment("apex-api")
    assert deployments["apex-api"]["desired"] == api.spec.replicas == 3
    assert deployments["apex-api"]["ready"] == api.status.ready_replicas
    assert deployments["apex-api"]["image"] == api.spec.template.spec.containers[0].image
    assert deployments["apex-api"]["rollout"]["state"] == "complete" and deployments["apex-api"]["ready_ok"]
    assert deployments["apex-api"]["revision"]
    assert set(s["name"] for s in info["statefulsets"]) >= {"postgresql", "redis"}
    hpas = dict((h["name"], h) for h in info["hpas"])
    assert (hpas["apex-api"]["min_replicas"], hpas["apex-api"]["max_replicas"]) == (3, 10)
    assert (hpas["apex-worker"]["min_replicas"], hpas["apex-worker"]["max_replicas"]) == (5, 50)
    assert hpas["apex-api"]["at_max"] is False
    pods = kube.core.list_namespaced_pod(NS).items
    assert len(info["pods"]) == len(pods)
    assert all(p["node"] and p["phase"] for p in info["pods"] if p["phase"] == "Running")
    assert len(info["nodes"]) == len(kube.core.list_node().items) >= 1
    assert all("cordoned" in n and "ready" in n for n in info["nodes"])
    assert isinstance(info["events"], list)
    assert info["summary"]["pods_total"] == len(pods)
    # cheap: a handful of list calls, issued concurrently, no per-object calls
    assert info["api_calls"] <= 8


def test_metrics_served(run_module):
    info = run_module("apex_info", gather=["pods", "nodes", "metrics"], **CTX)
    assert not info.failed, info.get("msg")
    assert info["metrics"]["available"] is True
    assert info["metrics"]["pods"] and info["metrics"]["nodes"]
    assert all(p["cpu_millicores"] >= 0 and p["memory_mib"] > 0 for p in info["metrics"]["pods"])


def test_filtered_by_name_and_label_selector(run_module, kube):
    info = run_module("apex_info", names=["apex-worker"], **CTX)
    assert [d["name"] for d in info["deployments"]] == ["apex-worker"]
    assert info["statefulsets"] == []
    assert [h["name"] for h in info["hpas"]] == ["apex-worker"]
    assert len(info["pods"]) == kube.deployment("apex-worker").status.replicas
    sts = run_module("apex_info", names=["statefulset/postgresql"], gather=["workloads"], **CTX)
    assert [s["name"] for s in sts["statefulsets"]] == ["postgresql"] and sts["deployments"] == []
    labels = kube.deployment("apex-api").spec.selector.match_labels
    selector = ",".join("%s=%s" % kv for kv in sorted(labels.items()))
    by_label = run_module("apex_info", label_selectors=[selector], gather=["workloads", "pods"], **CTX)
    assert by_label["pods"] and all(all(p["labels"].get(k) == v for k, v in labels.items()) for p in by_label["pods"])


def test_missing_name_listed_or_failed(run_module):
    info = run_module("apex_info", names=["apex-nope"], gather=["workloads"], **CTX)
    assert not info.failed and info["missing"] == ["Deployment/apex-nope"]
    info = run_module("apex_info", names=["apex-nope"], fail_on_missing=True, **CTX)
    assert info.failed and "apex-nope" in info["msg"]


def test_secondary_context(run_module, kube):
    info = run_module("apex_info", context="apex-secondary", namespace=NS, gather=["workloads", "hpas"])
    assert not info.failed, info.get("msg")
    assert info["context"] == "apex-secondary"
    names = set(d["name"] for d in info["deployments"])
    assert {"apex-api", "apex-worker"} <= names


def test_bad_token(run_module):
    info = run_module("apex_info", api_key="bogus-token-value", **CTX)
    assert info.failed and "401" in info["msg"] and "bogus-token-value" not in info["_stdout"]
