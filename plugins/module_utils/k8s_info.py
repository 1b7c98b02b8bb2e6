# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is running in a namespace (apex_info): ``gather`` and the summaries it is made of.

``gather`` issues a handful of concurrent list calls (workloads, pods, HPAs, nodes, Warning
events, metrics.k8s.io) and filters client-side by workload name; the summaries are pure functions
of the API's JSON objects, unit-tested with fixtures. ``summarize`` gives the counts the health
check judges against thresholds.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, run_parallel
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import (
    HPA_API, WORKLOAD_KINDS, age_seconds, condition, condition_statuses, hpa_cpu_current, hpa_cpu_target,
    hpa_target, mebibytes, millicores, ns_path, parse_target_name, selector_matches, selector_string, workload_path)
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import is_settled, rollout_state

SECTIONS = ("workloads", "pods", "hpas", "nodes", "events", "metrics")


# --------------------------------------------------------------------------- summaries (pure)


def containers_images(pod_spec):
    return dict((c.get("name"), c.get("image")) for c in (pod_spec or {}).get("containers") or [])


def apex_settings(pod_spec):
    """The Apex settings (``APEX__SECTION__KEY`` env vars) of the pod template, name -> value as the
    container sees it; one set from a secret or ConfigMap is ``(valueFrom)``, never resolved.
    Values are redacted (a URL's user information, a DSN password)."""
    out = {}
    for container in (pod_spec or {}).get("containers") or []:
        for var in container.get("env") or []:
            name = var.get("name") or ""
            if name.startswith("APEX__") and name not in out:
                out[name] = "(valueFrom)" if "valueFrom" in var else redact(str(var.get("value", "")))
    return out


def workload_summary(obj, kind):
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    images = containers_images(template)
    state, message = rollout_state(obj, kind)
    if kind == "Deployment":
        revision = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision")
    else:
        revision = status.get("updateRevision") or status.get("currentRevision")
    resources = dict((c.get("name"), c.get("resources") or {}) for c in template.get("containers") or [])
    return dict(
        kind=kind,
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        resources=resources,
        desired=spec.get("replicas", 1),
        current=status.get("replicas") or 0,
        ready=status.get("readyReplicas") or 0,
        updated=status.get("updatedReplicas") or 0,
        available=status.get("availableReplicas") or 0,
        images=images,
        image=list(images.values())[0] if len(images) == 1 else None,
        settings=apex_settings(template),
        revision=revision,
        generation=meta.get("generation"),
        observed_generation=status.get("observedGeneration"),
        rollout=dict(state=state, message=message),
        ready_ok=is_settled(obj, kind),
        selector=selector_string(spec.get("selector")),
        labels=meta.get("labels") or {},
    )


def pod_summary(pod, now=None):
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    waiting = []
    last_termination = None
    last_finished = None
    for cs in statuses:
        state = cs.get("state") or {}
        if state.get("waiting"):
            waiting.append("%s: %s" % (cs.get("name"), state["waiting"].get("reason") or "Waiting"))
        elif state.get("terminated"):
            waiting.append("%s: terminated (%s)" % (cs.get("name"), state["terminated"].get("reason") or "?"))
        terminated = (cs.get("lastState") or {}).get("terminated")
        if terminated:
            finished = terminated.get("finishedAt") or ""
            if last_finished is None or finished > last_finished:
                last_finished = finished
                last_termination = terminated.get("reason") or ("exit code %s" % terminated.get("exitCode"))
    ready_cond = condition(pod, "Ready")
    ready = bool(ready_cond and ready_cond.get("status") == "True")
    reason = None
    if not ready:
        bits = []
        if meta.get("deletionTimestamp"):
            bits.append("terminating")
        if waiting:
            bits.extend(waiting)
        if ready_cond and (ready_cond.get("reason") or ready_cond.get("message")):
            bits.append(" ".join(x for x in (ready_cond.get("reason"), ready_cond.get("message")) if x))
        scheduled = condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False":
            bits.append("unschedulable: %s" % (scheduled.get("message") or scheduled.get("reason") or ""))
        if not bits:
            bits.append("phase %s" % (status.get("phase") or "Unknown"))
        reason = "; ".join(bits)
    owner = None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller", True):
            owner = "%s/%s" % (ref.get("kind"), ref.get("name"))
            break
    return dict(
        name=meta.get("name"),
        phase=status.get("phase"),
        ready=ready,
        restarts=restarts,
        node=spec.get("nodeName"),
        age_seconds=age_seconds(meta.get("creationTimestamp"), now),
        created=meta.get("creationTimestamp"),
        last_termination_reason=last_termination,
        not_ready_reason=reason,
        terminating=bool(meta.get("deletionTimestamp")),
        owner=owner,
        images=containers_images(spec),
        labels=meta.get("labels") or {},
    )


def hpa_summary(hpa):
    meta, spec, status = hpa.get("metadata") or {}, hpa.get("spec") or {}, hpa.get("status") or {}
    kind, name = hpa_target(hpa)
    current = status.get("currentReplicas")
    maximum = spec.get("maxReplicas")
    return dict(
        name=meta.get("name"),
        target="%s/%s" % (kind, name),
        min_replicas=spec.get("minReplicas", 1),
        max_replicas=maximum,
        current_replicas=current,
        desired_replicas=status.get("desiredReplicas"),
        cpu_target=hpa_cpu_target(hpa),
        cpu_current=hpa_cpu_current(hpa),
        at_max=bool(current is not None and maximum is not None and current >= maximum),
        conditions=condition_statuses(hpa),
    )


def node_summary(node, now=None):
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    conditions = condition_statuses(node)
    problems = [t for t, s in conditions.items() if (t == "Ready" and s != "True") or (t != "Ready" and s == "True")]
    labels = meta.get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    allocatable = status.get("allocatable") or {}
    return dict(
        name=meta.get("name"),
        ready=conditions.get("Ready") == "True",
        cordoned=bool(spec.get("unschedulable")),
        conditions=conditions,
        problems=problems,
        roles=roles,
        cpu_allocatable_millicores=millicores(allocatable.get("cpu")),
        memory_allocatable_mib=mebibytes(allocatable.get("memory")),
        kubelet_version=(status.get("nodeInfo") or {}).get("kubeletVersion"),
        age_seconds=age_seconds(meta.get("creationTimestamp"), now),
    )


def event_summary(event, now=None):
    meta = event.get("metadata") or {}
    involved = event.get("involvedObject") or event.get("regarding") or {}
    last = event.get("lastTimestamp") or event.get("eventTime") or \
        (event.get("series") or {}).get("lastObservedTime") or meta.get("creationTimestamp")
    return dict(
        type=event.get("type"),
        reason=event.get("reason"),
        object="%s/%s" % (involved.get("kind"), involved.get("name")),
        message=event.get("message") or event.get("note"),
        count=event.get("count") or (event.get("series") or {}).get("count") or 1,
        last_seen=last,
        age_seconds=age_seconds(last, now),
    )


def pod_limits(pod):
    """Sum of the containers' CPU (millicores) and memory (MiB) limits; None where any container has none."""
    cpu = mem = 0
    for container in ((pod.get("spec") or {}).get("containers") or []):
        limits = (container.get("resources") or {}).get("limits") or {}
        if cpu is not None:
            cpu = None if limits.get("cpu") is None else cpu + millicores(limits["cpu"])
        if mem is not None:
            mem = None if limits.get("memory") is None else mem + mebibytes(limits["memory"])
    return cpu or None, mem or None


def pod_requests(pod):
    """Sum of the containers' CPU (millicores) and memory (MiB) requests; None where no container requests any."""
    cpu = mem = 0
    for container in ((pod.get("spec") or {}).get("containers") or []):
        requests = (container.get("resources") or {}).get("requests") or {}
        cpu += millicores(requests.get("cpu")) or 0
        mem += mebibytes(requests.get("memory")) or 0
    return cpu or None, mem or None


def usage_summary(item, allocatable_millicores=None, allocatable_mib=None, limit_millicores=None, limit_mib=None,
                  request_millicores=None, request_mib=None):
    meta = item.get("metadata") or {}
    if "containers" in item:
        cpu = sum(millicores((c.get("usage") or {}).get("cpu")) or 0 for c in item.get("containers") or [])
        mem = sum(mebibytes((c.get("usage") or {}).get("memory")) or 0 for c in item.get("containers") or [])
    else:
        cpu = millicores((item.get("usage") or {}).get("cpu")) or 0
        mem = mebibytes((item.get("usage") or {}).get("memory")) or 0
    out = dict(name=meta.get("name"), cpu_millicores=cpu, memory_mib=round(mem, 1))
    if allocatable_millicores:
        out["cpu_percent"] = round(100.0 * cpu / allocatable_millicores, 1)
    if allocatable_mib:
        out["memory_percent"] = round(100.0 * mem / allocatable_mib, 1)
    if limit_millicores:
        out["cpu_percent_of_limit"] = round(100.0 * cpu / limit_millicores, 1)
    if limit_mib:
        out["memory_percent_of_limit"] = round(100.0 * mem / limit_mib, 1)
    if request_millicores:
        out.update(cpu_request_millicores=request_millicores,
                   cpu_percent_of_request=round(100.0 * cpu / request_millicores, 1))
    if request_mib:
        out.update(memory_request_mib=round(request_mib, 1), memory_percent_of_request=round(100.0 * mem / request_mib, 1))
    return out


# --------------------------------------------------------------------------- gather (I/O)


def gather(client, namespace, names=None, label_selector=None, sections=SECTIONS,
           events_since_minutes=60, events_limit=50, now=None):
    """Everything a procedure needs about a namespace, from a handful of concurrent list calls.

    ``names`` filters workloads (``apex-api`` or ``statefulset/postgresql``), and with them the
    pods they select, the HPAs that target them and the events about any of those.
    ``label_selector`` is applied server-side to workloads and pods.
    """
    started = time.monotonic()
    now = now or utcnow()
    sections = set(sections or SECTIONS)
    need_workloads = bool(sections & {"workloads", "pods", "hpas", "events"}) and True
    calls = {}
    if need_workloads:
        for kind in WORKLOAD_KINDS:
            calls[kind] = (lambda k=kind: client.list(workload_path(k, namespace), label_selector=label_selector))
    if "hpas" in sections:
        calls["hpas"] = lambda: client.list(ns_path(HPA_API, namespace))
    if "pods" in sections or "metrics" in sections:
        calls["pods"] = lambda: client.list("/api/v1/namespaces/%s/pods" % namespace, label_selector=label_selector)
    if "nodes" in sections or "metrics" in sections:
        calls["nodes"] = lambda: client.list("/api/v1/nodes")
    if "events" in sections:
        calls["events"] = lambda: client.list("/api/v1/namespaces/%s/events" % namespace, field_selector="type=Warning")
    if "metrics" in sections:
        calls["pod_metrics"] = lambda: client.list("/apis/metrics.k8s.io/v1beta1/namespaces/%s/pods" % namespace)
        calls["node_metrics"] = lambda: client.list("/apis/metrics.k8s.io/v1beta1/nodes")
    raw = run_parallel(calls)
    for key, (dummy, exc) in raw.items():
        if exc is not None and not key.endswith("metrics"):
            raise exc

    def items(key):
        value = raw.get(key, (None, None))[0]
        return (value or {}).get("items") or []

    wanted = None
    if names:
        wanted = set(parse_target_name(n) for n in names)
    workloads = []
    for kind in WORKLOAD_KINDS:
        for obj in items(kind):
            name = (obj.get("metadata") or {}).get("name")
            if wanted is None or (kind, name) in wanted:
                workloads.append((kind, obj))
    if wanted is not None:
        found = set((k, (o.get("metadata") or {}).get("name")) for k, o in workloads)
        missing = sorted("%s/%s" % kn for kn in wanted - found)
    else:
        missing = []
    filtered = wanted is not None
    selectors = [(o.get("spec") or {}).get("selector") for dummy, o in workloads]

    pods = []
    for pod in items("pods"):
        labels = (pod.get("metadata") or {}).get("labels")
        if not filtered or any(selector_matches(sel, labels) for sel in selectors):
            pods.append(pod)
    hpas = []
    targets = set((k, (o.get("metadata") or {}).get("name")) for k, o in workloads)
    for hpa in items("hpas"):
        if not (filtered or label_selector) or hpa_target(hpa) in targets:
            hpas.append(hpa)

    result = dict(namespace=namespace, missing=missing)
    if "workloads" in sections:
        result["deployments"] = [workload_summary(o, k) for k, o in workloads if k == "Deployment"]
        result["statefulsets"] = [workload_summary(o, k) for k, o in workloads if k == "StatefulSet"]
    if "pods" in sections:
        result["pods"] = [pod_summary(p, now) for p in pods]
    if "hpas" in sections:
        result["hpas"] = [hpa_summary(h) for h in hpas]
    node_list = [node_summary(n, now) for n in items("nodes")]
    if "nodes" in sections:
        result["nodes"] = node_list
    if "events" in sections:
        involved = set(["%s/%s" % kn for kn in targets] + ["Pod/%s" % (p.get("metadata") or {}).get("name") for p in pods]
                       + ["HorizontalPodAutoscaler/%s" % (h.get("metadata") or {}).get("name") for h in hpas])
        events = [event_summary(e, now) for e in items("events")]
        horizon = events_since_minutes * 60 if events_since_minutes else None
        events = [e for e in events if e["type"] == "Warning"
                  and (horizon is None or e["age_seconds"] is None or e["age_seconds"] <= horizon)
                  and (not (filtered or label_selector) or e["object"] in involved)]
        events.sort(key=lambda e: e["last_seen"] or "", reverse=True)
        result["events"] = events[:events_limit] if events_limit else events
    if "metrics" in sections:
        pod_metrics, pod_exc = raw.get("pod_metrics", (None, None))
        node_metrics, node_exc = raw.get("node_metrics", (None, None))
        available = pod_exc is None and node_exc is None
        limits = dict(((p.get("metadata") or {}).get("name"), pod_limits(p)) for p in pods)
        requests = dict(((p.get("metadata") or {}).get("name"), pod_requests(p)) for p in pods)
        alloc = dict((n["name"], n) for n in node_list)
        metrics = dict(available=available)
        if pod_exc is not None or node_exc is not None:
            exc = pod_exc or node_exc
            metrics["error"] = str(exc) if not isinstance(exc, KubeApiError) or not exc.not_found \
                else "metrics.k8s.io is not served by this cluster"
        metrics["pods"] = sorted(
            (usage_summary(m, limit_millicores=limits[m["metadata"]["name"]][0],
                           limit_mib=limits[m["metadata"]["name"]][1],
                           request_millicores=requests[m["metadata"]["name"]][0],
                           request_mib=requests[m["metadata"]["name"]][1])
             for m in (pod_metrics or {}).get("items") or []
             if (m.get("metadata") or {}).get("name") in limits),
            key=lambda u: -u["cpu_millicores"])
        metrics["nodes"] = [
            usage_summary(m, (alloc.get((m.get("metadata") or {}).get("name")) or {}).get("cpu_allocatable_millicores"),
                          (alloc.get((m.get("metadata") or {}).get("name")) or {}).get("memory_allocatable_mib"))
            for m in (node_metrics or {}).get("items") or []]
        result["metrics"] = metrics
    result["summary"] = summarize(result)
    result["elapsed_seconds"] = round(time.monotonic() - started, 3)
    result["api_calls"] = len(calls)
    return result


def summarize(info):
    """Counts a health check judges against thresholds."""
    pods = info.get("pods") or []
    # pods of Jobs run to completion: judged apart (a failed one is reported, not "not running")
    job_pods = [p for p in pods if (p.get("owner") or "").startswith("Job/")]
    live = [p for p in pods if p.get("phase") != "Succeeded" and p not in job_pods]
    not_running = [p["name"] for p in live if p.get("phase") != "Running" or not p.get("ready")]
    restarts = dict((p["name"], p["restarts"]) for p in pods if p.get("restarts"))
    workloads = (info.get("deployments") or []) + (info.get("statefulsets") or [])
    return dict(
        pods_total=len(pods),
        pods_not_running=not_running,
        pods_with_restarts=restarts,
        job_pods_failed=[p["name"] for p in job_pods if p.get("phase") == "Failed"],
        max_restarts=max(restarts.values()) if restarts else 0,
        oom_killed=[p["name"] for p in pods if p.get("last_termination_reason") == "OOMKilled"],
        hpas_at_max=[h["name"] for h in info.get("hpas") or [] if h.get("at_max")],
        nodes_not_ready=[n["name"] for n in info.get("nodes") or [] if not n.get("ready")],
        nodes_cordoned=[n["name"] for n in info.get("nodes") or [] if n.get("cordoned")],
        workloads_not_ready=["%s/%s" % (w["kind"], w["name"]) for w in workloads if not w.get("ready_ok")],
        warning_events=len(info.get("events") or []),
    )
