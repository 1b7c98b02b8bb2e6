"""apex_info against the lab simulator, compared with what the official client reads."""
import time

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


def _wait_for(read, predicate, timeout=20, step=0.3):
    """Poll ``read()`` until ``predicate(value)``; returns the last value (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not predicate(value) and time.monotonic() < deadline:
        time.sleep(step)
        value = read()
    return value


def test_faulty_pods_hpa_cpu_and_warning_events(run_module, kube, scratch_deployment):
    """The simulator's image-tag faults (docs/kubesim.md): what apex_info says, checked against the cluster."""
    scratch_deployment("apex-it-info-oom", "apex/worker:oom")
    scratch_deployment("apex-it-info-never", "apex/api:never-ready")
    names = ["apex-it-info-oom", "apex-it-info-never", "apex-api"]

    def gather():
        return run_module("apex_info", names=names, gather=["workloads", "pods", "hpas", "events"], **CTX)

    def pod(info, prefix):
        found = [p for p in info.get("pods") or [] if p["name"].startswith(prefix + "-")]
        return found[0] if found else {}

    def events_for(info, prefix, reason):
        return [e for e in info.get("events") or [] if e["object"].startswith("Pod/" + prefix + "-")
                and e["reason"] == reason]

    def settled(info):
        return (pod(info, "apex-it-info-oom").get("last_termination_reason")
                and pod(info, "apex-it-info-never").get("not_ready_reason")
                and events_for(info, "apex-it-info-oom", "BackOff") and events_for(info, "apex-it-info-never", "Unhealthy"))

    info = _wait_for(gather, settled)
    assert not info.failed, info.get("msg")

    # oom: restarts that climb, OOMKilled as the last termination, as the cluster says
    oom = pod(info, "apex-it-info-oom")
    status = kube.core.read_namespaced_pod(oom["name"], NS).status.container_statuses[0]
    assert oom["restarts"] >= 1 and status.restart_count >= oom["restarts"]
    assert oom["last_termination_reason"] == "OOMKilled" == status.last_state.terminated.reason
    assert oom["ready"] is False and "CrashLoopBackOff" in oom["not_ready_reason"]
    assert oom["name"] in info["summary"]["oom_killed"] and info["summary"]["pods_with_restarts"][oom["name"]] >= 1

    # never-ready: running, not ready, and why
    never = pod(info, "apex-it-info-never")
    assert never["phase"] == "Running" and never["ready"] is False and never["restarts"] == 0
    assert never["not_ready_reason"] == "ContainersNotReady containers with unready status: [main]"
    assert never["name"] in info["summary"]["pods_not_running"]
    deployments = dict((d["name"], d) for d in info["deployments"])
    assert not deployments["apex-it-info-never"]["ready_ok"] and deployments["apex-it-info-never"]["ready"] == 0

    # HPA: target and current CPU as the HPA's status reports them
    hpa = dict((h["name"], h) for h in info["hpas"])["apex-api"]
    cluster_hpa = kube.hpa("apex-api")
    current = [m.resource.current.average_utilization for m in cluster_hpa.status.current_metrics or []
               if m.type == "Resource" and m.resource.name == "cpu"]
    assert current and isinstance(hpa["cpu_current"], int) and abs(hpa["cpu_current"] - current[0]) <= 5
    assert hpa["cpu_target"] == kube.hpa_bounds("apex-api")[2]

    # Warning events: only Warnings, with their content, and each one exists in the cluster
    assert info["events"] and all(e["type"] == "Warning" for e in info["events"])
    backoff = events_for(info, "apex-it-info-oom", "BackOff")[0]
    assert backoff["message"].startswith("Back-off restarting failed container main") and backoff["count"] >= 1
    unhealthy = events_for(info, "apex-it-info-never", "Unhealthy")[0]
    assert unhealthy["message"].startswith("Readiness probe failed") and unhealthy["age_seconds"] >= 0
    cluster = set((e.reason, "%s/%s" % (e.involved_object.kind, e.involved_object.name))
                  for e in kube.core.list_namespaced_event(NS, field_selector="type=Warning").items)
    assert ("BackOff", backoff["object"]) in cluster and ("Unhealthy", unhealthy["object"]) in cluster
