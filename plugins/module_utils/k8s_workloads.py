# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Workloads on Kubernetes: what is running (``gather``), and scaling it safely (``Scaler``).

Works on plain JSON dicts from ``k8s.KubeClient`` (no typed models). The pure functions
(summaries, rollout state, the scale plan, HPA checks) take dicts and are unit-tested with
fixtures; the I/O is concentrated in ``gather``, ``Scaler`` and ``StateStore``.

Decisions (see docs/scaling.md):
* Saved scale state lives in one ConfigMap (``apex-ops-scale-state``) in the namespace, one
  JSON record per state name. One object, updated with optimistic concurrency; readable with
  kubectl; not overwritten by a Helm upgrade or ``kubectl apply`` of the Deployments (which
  could drop annotations). A record that was not restored yet is never overwritten unless asked.
* HPA-aware: a replica count outside the governing HPA's [min, max] is refused, unless
  ``hpa_adjust`` moves the bound to the requested count. The HPA is patched before the workload
  so the two never disagree. Scaling an HPA-governed target to 0 is refused unless
  ``allow_zero``: Kubernetes does not autoscale a workload at zero (the HPA reports
  ScalingDisabled), so the service stays down until someone scales it up again.
* Targets are scaled in parallel, one thread each: HPA patch, scale subresource, then a watch
  of that one object (fieldSelector metadata.name) until rolled out and ready == desired.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import re
import time
from datetime import datetime

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, get_or_none, object_stream, restart_patch
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, watch_until

try:
    from datetime import timezone

    UTC = timezone.utc
except ImportError:  # pragma: no cover
    UTC = None

WORKLOAD_KINDS = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
}
KIND_ALIASES = {
    "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
    "statefulset": "StatefulSet", "statefulsets": "StatefulSet", "sts": "StatefulSet",
}
HPA_API = ("/apis/autoscaling/v2", "horizontalpodautoscalers")
STATE_CONFIGMAP = "apex-ops-scale-state"
SECTIONS = ("workloads", "pods", "hpas", "nodes", "events", "metrics")


class ScaleError(Exception):
    """A refusal or failure with a message meant for the on-call engineer."""

    def __init__(self, message, last_state=None):
        super(ScaleError, self).__init__(message)
        self.last_state = last_state


# --------------------------------------------------------------------------- paths and parsing


def ns_path(api, namespace, name=None, sub=None):
    group_version, plural = api
    path = "%s/namespaces/%s/%s" % (group_version, namespace, plural)
    if name:
        path += "/" + name
    if sub:
        path += "/" + sub
    return path


def workload_path(kind, namespace, name=None, sub=None):
    return ns_path(WORKLOAD_KINDS[kind], namespace, name, sub)


def normalize_kind(kind):
    if kind in WORKLOAD_KINDS:
        return kind
    found = KIND_ALIASES.get(str(kind).lower())
    if not found:
        raise ScaleError("unsupported kind %r: use Deployment or StatefulSet" % (kind,))
    return found


def parse_target_name(value, default_kind="Deployment"):
    """``apex-api`` -> (Deployment, apex-api); ``statefulset/postgresql`` -> (StatefulSet, postgresql)."""
    if "/" in value:
        kind, name = value.split("/", 1)
        return normalize_kind(kind), name
    return normalize_kind(default_kind), value


_DELTA = re.compile(r"^\s*([+-])\s*(\d+)\s*$")


def parse_delta(value):
    """A relative replica change: ``2``, ``-1``, ``"+2"``, ``"-3"`` -> int. Anything else raises."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ScaleError("replicas_delta must be a signed whole number such as +2 or -1, not %r" % (value,))
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value)
    match = _DELTA.match(text)
    if match:
        number = int(match.group(2))
        return -number if match.group(1) == "-" else number
    if text.strip().isdigit():
        return int(text.strip())
    raise ScaleError("replicas_delta must be a signed whole number such as +2 or -1, not %r" % (value,))


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 1024.0, "Mi": 1024.0 ** 2, "Gi": 1024.0 ** 3, "Ti": 1024.0 ** 4, "Pi": 1024.0 ** 5, "Ei": 1024.0 ** 6,
}


def parse_quantity(value):
    """A Kubernetes quantity (``250m``, ``1.5``, ``128Mi``, ``12345n``) as a float; None if absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError("not a Kubernetes quantity: %r" % (value,))
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def millicores(value):
    q = parse_quantity(value)
    return None if q is None else int(round(q * 1000))


def mebibytes(value):
    q = parse_quantity(value)
    return None if q is None else round(q / 1024.0 / 1024.0, 1)


def parse_time(value):
    if not value:
        return None
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:  # microsecond timestamps: trim to 6 digits for fromisoformat on older Pythons
        head, dummy, tail = text.partition(".")
        digits = re.match(r"\d*", tail).group(0)
        text = head + "." + (digits[:6].ljust(6, "0")) + tail[len(digits):]
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def utcnow():
    return datetime.now(UTC)


def age_seconds(stamp, now):
    moment = parse_time(stamp)
    if moment is None or now is None:
        return None
    return max(0, int((now - moment).total_seconds()))


def selector_string(selector):
    """A LabelSelector (matchLabels + matchExpressions) as the query-string form."""
    if not selector:
        return ""
    parts = ["%s=%s" % (k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append("%s in (%s)" % (key, ",".join(values)))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (key, ",".join(values)))
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append("!" + key)
    return ",".join(parts)


def selector_matches(selector, labels):
    """Whether a LabelSelector dict selects an object with these labels."""
    if not selector:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _cond(obj, ctype):
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


# --------------------------------------------------------------------------- summaries


def rollout_state(obj, kind):
    """``(state, message)``: state is complete, progressing, failed or paused (kubectl's rules)."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    desired = spec.get("replicas", 1)
    if desired is None:
        desired = 1
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return "progressing", "waiting for the spec update to be observed"
    updated = status.get("updatedReplicas") or 0
    current = status.get("replicas") or 0
    ready = status.get("readyReplicas") or 0
    if kind == "Deployment":
        if spec.get("paused"):
            return "paused", "the deployment is paused"
        progressing = _cond(obj, "Progressing")
        if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed", "progress deadline exceeded: %s" % (progressing.get("message") or "")
        available = status.get("availableReplicas") or 0
        if updated < desired:
            return "progressing", "%d of %d new replicas have been updated" % (updated, desired)
        if current > updated:
            return "progressing", "%d old replicas are pending termination" % (current - updated)
        if available < updated:
            return "progressing", "%d of %d updated replicas are available" % (available, updated)
        return "complete", "successfully rolled out"
    # StatefulSet
    if ready < desired:
        return "progressing", "%d of %d pods are ready" % (ready, desired)
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate":
        if "updatedReplicas" in status and updated < desired:
            return "progressing", "%d of %d pods have been updated" % (updated, desired)
        if status.get("updateRevision") and status.get("currentRevision") and \
                status["updateRevision"] != status["currentRevision"]:
            return "progressing", "waiting for the update to revision %s" % status["updateRevision"]
    return "complete", "rolled out"


def is_settled(obj, kind, expect_replicas=None):
    """Rolled out, ready == desired, no surplus pods, and (if given) desired == expect_replicas."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = spec.get("replicas", 1)
    if expect_replicas is not None and desired != expect_replicas:
        return False
    state = rollout_state(obj, kind)[0]
    if state != "complete":
        return False
    return (status.get("readyReplicas") or 0) == desired and (status.get("replicas") or 0) == desired


def containers_images(pod_spec):
    return dict((c.get("name"), c.get("image")) for c in (pod_spec or {}).get("containers") or [])


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
    ready_cond = _cond(pod, "Ready")
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
        scheduled = _cond(pod, "PodScheduled")
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


def hpa_cpu_target(hpa):
    for metric in (hpa.get("spec") or {}).get("metrics") or []:
        if metric.get("type") == "Resource" and (metric.get("resource") or {}).get("name") == "cpu":
            return ((metric["resource"].get("target") or {}).get("averageUtilization"))
    return (hpa.get("spec") or {}).get("targetCPUUtilizationPercentage")


def hpa_cpu_current(hpa):
    for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
        if metric.get("type") == "Resource" and (metric.get("resource") or {}).get("name") == "cpu":
            return ((metric["resource"].get("current") or {}).get("averageUtilization"))
    return (hpa.get("status") or {}).get("currentCPUUtilizationPercentage")


def hpa_bounds(hpa):
    spec = hpa.get("spec") or {}
    return dict(min_replicas=spec.get("minReplicas", 1), max_replicas=spec.get("maxReplicas"),
                target_cpu=hpa_cpu_target(hpa))


def hpa_target(hpa):
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return ref.get("kind"), ref.get("name")


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
        conditions=dict((c.get("type"), c.get("status")) for c in status.get("conditions") or []),
    )


def node_summary(node, now=None):
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    conditions = dict((c.get("type"), c.get("status")) for c in status.get("conditions") or [])
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


def usage_summary(item, allocatable_millicores=None, allocatable_mib=None, limit_millicores=None, limit_mib=None):
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
    return out


# --------------------------------------------------------------------------- gather (apex_info)


def _run_parallel(calls, max_workers=8):
    """Run ``{key: callable}`` concurrently; returns ``{key: (value, exception)}``."""
    from concurrent.futures import ThreadPoolExecutor

    results = {}
    if not calls:
        return results
    with ThreadPoolExecutor(max_workers=min(max_workers, len(calls))) as pool:
        futures = dict((key, pool.submit(fn)) for key, fn in calls.items())
        for key, future in futures.items():
            try:
                results[key] = (future.result(), None)
            except Exception as exc:  # reported per call by the caller
                results[key] = (None, exc)
    return results


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
    raw = _run_parallel(calls)
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
        alloc = dict((n["name"], n) for n in node_list)
        metrics = dict(available=available)
        if pod_exc is not None or node_exc is not None:
            exc = pod_exc or node_exc
            metrics["error"] = str(exc) if not isinstance(exc, KubeApiError) or not exc.not_found \
                else "metrics.k8s.io is not served by this cluster"
        metrics["pods"] = sorted(
            (usage_summary(m, limit_millicores=limits[m["metadata"]["name"]][0],
                           limit_mib=limits[m["metadata"]["name"]][1])
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


# --------------------------------------------------------------------------- scale plan (pure)


def target_key(kind, name):
    return "%s/%s" % (kind, name)


class AboveCeiling(ScaleError):
    """A replica count (or HPA maxReplicas) above the replica ceiling, without the confirmation."""


# The replica ceiling: the largest of CEILING_FACTOR x the HPA's maxReplicas (before the call),
# CEILING_FACTOR x the current replicas, the pod capacity of the ready schedulable nodes, and
# MIN_CEILING. A count above it is refused unless confirmed (allow_above_ceiling) or the ceiling
# is set explicitly (max_replicas_ceiling). See docs/scaling.md.
CEILING_FACTOR = 2
MIN_CEILING = 10
_BLOCKING_TAINTS = ("NoSchedule", "NoExecute")


def node_pod_capacity(nodes):
    """``dict(pods, nodes, excluded)`` over Ready, schedulable nodes without a NoSchedule/NoExecute
    taint: the sum of their ``status.allocatable.pods``. Pure."""
    pods, counted, excluded = 0, 0, 0
    for node in nodes or []:
        spec, status = node.get("spec") or {}, node.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        tainted = any(t.get("effect") in _BLOCKING_TAINTS for t in spec.get("taints") or [])
        try:
            allocatable = int(str((status.get("allocatable") or {}).get("pods") or 0))
        except ValueError:
            allocatable = 0
        if not ready or spec.get("unschedulable") or tainted or allocatable <= 0:
            excluded += 1
            continue
        pods += allocatable
        counted += 1
    return dict(pods=pods, nodes=counted, excluded=excluded)


def replica_ceiling(current, hpa_max=None, capacity=None, override=None, factor=CEILING_FACTOR):
    """The replica ceiling of one target and how it was derived: ``dict(value, derivation)``. Pure.

    ``capacity`` is ``node_pod_capacity()`` (or None when the nodes were not read). ``override``
    (max_replicas_ceiling) replaces the derived value.
    """
    if override is not None:
        return dict(value=int(override), derivation="max_replicas_ceiling %d, set explicitly" % int(override))
    terms = []
    if hpa_max:
        terms.append((factor * hpa_max, "%d x HPA maxReplicas %d = %d" % (factor, hpa_max, factor * hpa_max)))
    if capacity and capacity.get("pods"):
        terms.append((capacity["pods"], "pod capacity %d of %d ready schedulable node(s)" % (
            capacity["pods"], capacity["nodes"])))
    terms.append((factor * (current or 0), "%d x current replicas %d = %d" % (factor, current or 0, factor * (current or 0))))
    terms.append((MIN_CEILING, "the minimum ceiling %d" % MIN_CEILING))
    value = max(t[0] for t in terms)
    return dict(value=value, derivation="the largest of " + ", ".join(t[1] for t in terms))


def check_ceiling(key, current, replicas, hpa_before, hpa_after, ceiling, allow_above_ceiling=False):
    """Refuse (AboveCeiling) a replica count or HPA maxReplicas raised above ``ceiling``; returns notes. Pure.

    Lowering, or keeping, a count is never refused: only what this call would raise.
    """
    if ceiling is None:
        return []
    asks = []
    if replicas is not None and replicas > current and replicas > ceiling["value"]:
        asks.append("%d replicas (now %d)" % (replicas, current))
    before_max = (hpa_before or {}).get("max_replicas")
    after_max = (hpa_after or {}).get("max_replicas")
    if after_max is not None and after_max != before_max and after_max > (before_max or 0) \
            and after_max > ceiling["value"]:
        asks.append("HPA maxReplicas %d (now %s)" % (after_max, before_max))
    if not asks:
        return []
    what = " and ".join(asks)
    if allow_above_ceiling:
        return ["%s: above the replica ceiling of %d (%s), confirmed by allow_above_ceiling" % (
            what, ceiling["value"], ceiling["derivation"])]
    raise AboveCeiling(
        "%s: refusing %s: above the replica ceiling of %d (%s). A count that high is more likely a typo than a "
        "plan, and it can overwhelm the cluster. If it is intended, confirm it (allow_above_ceiling: true; in the "
        "roles -e scale_confirm_above_ceiling=scale-above-ceiling, or hpa_confirm_above_ceiling / "
        "scale_event_confirm_above_ceiling) or set max_replicas_ceiling. Nothing was changed." % (
            key, what, ceiling["value"], ceiling["derivation"]))


def plan_target(kind, obj, hpa, request, hpa_adjust=False, allow_zero=False, ceiling=None,
                allow_above_ceiling=False):
    """What to do for one target. Pure: raises ScaleError on refusal, returns a plan dict.

    ``allow_zero``: scaling an HPA-governed target from running to 0 is refused unless set.
    ``ceiling``: ``replica_ceiling()`` of this target (None: no check); a replica count or HPA
    maxReplicas raised above it is refused (AboveCeiling) unless ``allow_above_ceiling``.

    ``request`` keys (all optional): replicas, replicas_delta, current_replicas,
    hpa_min_replicas, hpa_max_replicas, hpa_target_cpu.
    """
    name = (obj.get("metadata") or {}).get("name")
    key = target_key(kind, name)
    current = (obj.get("spec") or {}).get("replicas", 1)
    expected = request.get("current_replicas")
    if expected is not None and expected != current:
        raise ScaleError(
            "%s: precondition failed: it has %d replicas, current_replicas expected %d. Nothing was changed; "
            "re-read the cluster state before scaling." % (key, current, expected))
    replicas = request.get("replicas")
    delta = request.get("replicas_delta")
    if replicas is not None and delta is not None:
        raise ScaleError("%s: give replicas or replicas_delta, not both" % key)
    if delta is not None:
        replicas = current + delta
        if replicas < 0:
            raise ScaleError("%s: replicas_delta %+d would take %d replicas below zero" % (key, delta, current))
    if replicas is not None and replicas < 0:
        raise ScaleError("%s: replicas must be 0 or more, not %d" % (key, replicas))

    hpa_before = hpa_bounds(hpa) if hpa else None
    hpa_after = dict(hpa_before) if hpa else None
    wants_hpa = any(request.get(k) is not None for k in ("hpa_min_replicas", "hpa_max_replicas", "hpa_target_cpu"))
    if wants_hpa and not hpa:
        raise ScaleError("%s: HPA settings were given but no HorizontalPodAutoscaler targets it" % key)
    notes = []
    if hpa:
        hpa_name = (hpa.get("metadata") or {}).get("name")
        for opt, field in (("hpa_min_replicas", "min_replicas"), ("hpa_max_replicas", "max_replicas"),
                           ("hpa_target_cpu", "target_cpu")):
            if request.get(opt) is not None:
                hpa_after[field] = request[opt]
        if replicas is not None and replicas > 0:
            low, high = hpa_after["min_replicas"], hpa_after["max_replicas"]
            if replicas < low or (high is not None and replicas > high):
                if not hpa_adjust:
                    bound = "hpa_min_replicas" if replicas < low else "hpa_max_replicas"
                    raise ScaleError(
                        "%s: refusing to scale to %d replicas: HorizontalPodAutoscaler %s keeps it within [%s, %s] "
                        "and would scale it back to %d. Change the HPA bounds (%s), or set hpa_adjust: true to "
                        "move the bound to %d along with the scale. Nothing was changed."
                        % (key, replicas, hpa_name, low, high, low if replicas < low else high, bound, replicas))
                if replicas < low:
                    hpa_after["min_replicas"] = replicas
                    notes.append("HPA %s minReplicas %d -> %d (hpa_adjust)" % (hpa_name, low, replicas))
                else:
                    hpa_after["max_replicas"] = replicas
                    notes.append("HPA %s maxReplicas %s -> %d (hpa_adjust)" % (hpa_name, high, replicas))
        elif replicas == 0:
            # at 0 the HPA stops autoscaling (ScalingDisabled) and the service is down until someone
            # scales it up again: too much for a typo or a delta, so it takes an explicit opt-in
            if current > 0 and not allow_zero:
                raise ScaleError(
                    "%s: refusing to scale to 0 replicas: HorizontalPodAutoscaler %s governs it, and at 0 the HPA "
                    "stops autoscaling (ScalingDisabled) and the service has no pods until it is scaled up by hand. "
                    "Set allow_zero: true if taking it down is intended. Nothing was changed." % (key, hpa_name))
            notes.append("replicas 0: HPA %s does not autoscale a workload at zero until it is scaled up" % hpa_name)
        if hpa_after["min_replicas"] is not None and hpa_after["max_replicas"] is not None and \
                hpa_after["min_replicas"] > hpa_after["max_replicas"]:
            raise ScaleError("%s: HPA minReplicas %d would exceed maxReplicas %d" % (
                key, hpa_after["min_replicas"], hpa_after["max_replicas"]))
        if hpa_after["min_replicas"] is not None and hpa_after["min_replicas"] < 1:
            raise ScaleError("%s: HPA minReplicas must be at least 1" % key)
        if hpa_after["target_cpu"] is not None and hpa_after["target_cpu"] < 1:
            raise ScaleError("%s: HPA target CPU utilisation must be a positive percentage" % key)
    notes.extend(check_ceiling(key, current, replicas, hpa_before, hpa_after, ceiling, allow_above_ceiling))
    after_replicas = current if replicas is None else replicas
    expect = after_replicas
    if hpa and replicas is None and after_replicas > 0:
        # only the bounds move: the HPA itself will bring the workload inside them
        low, high = hpa_after["min_replicas"], hpa_after["max_replicas"]
        expect = max(low, after_replicas) if high is None else min(high, max(low, after_replicas))
        if expect != after_replicas:
            notes.append("the HPA will move it from %d to %d replicas" % (after_replicas, expect))
    hpa_changed = bool(hpa) and hpa_after != hpa_before
    restart = bool(request.get("restart"))
    if restart:
        notes.append("rolling restart of the pods (pod template annotation kubectl.kubernetes.io/restartedAt)")
    return dict(
        key=key, kind=kind, name=name,
        hpa=(hpa.get("metadata") or {}).get("name") if hpa else None,
        before=dict(replicas=current, hpa=hpa_before),
        after=dict(replicas=expect, hpa=hpa_after),
        set_replicas=replicas if (replicas is not None and replicas != current) else None,
        hpa_changed=hpa_changed,
        changed=hpa_changed or restart or (replicas is not None and replicas != current),
        restart=restart,
        notes=notes,
    )


def hpa_patch(hpa, bounds):
    """A JSON merge patch that sets min/max/target CPU (autoscaling/v2), keeping other metrics."""
    spec = {}
    before = hpa_bounds(hpa)
    if bounds["min_replicas"] != before["min_replicas"]:
        spec["minReplicas"] = bounds["min_replicas"]
    if bounds["max_replicas"] != before["max_replicas"]:
        spec["maxReplicas"] = bounds["max_replicas"]
    if bounds["target_cpu"] != before["target_cpu"] and bounds["target_cpu"] is not None:
        metrics = copy.deepcopy((hpa.get("spec") or {}).get("metrics") or [])
        cpu = dict(type="Resource", resource=dict(name="cpu", target=dict(
            type="Utilization", averageUtilization=bounds["target_cpu"])))
        for index, metric in enumerate(metrics):
            if metric.get("type") == "Resource" and (metric.get("resource") or {}).get("name") == "cpu":
                metrics[index] = cpu
                break
        else:
            metrics.append(cpu)
        spec["metrics"] = metrics
    return {"spec": spec} if spec else None


# --------------------------------------------------------------------------- saved state


class StateStore(object):
    """Saved scale states: one ConfigMap, one JSON record per state name."""

    def __init__(self, client, namespace, name=STATE_CONFIGMAP):
        self.client = client
        self.namespace = namespace
        self.name = name
        self.path = "/api/v1/namespaces/%s/configmaps" % namespace

    def _get(self):
        return get_or_none(self.client, "%s/%s" % (self.path, self.name))

    def read(self, state_name):
        cm = self._get()
        raw = ((cm or {}).get("data") or {}).get(state_name)
        return json.loads(raw) if raw else None

    def write(self, state_name, record, retries=5):
        for dummy in range(retries):
            cm = self._get()
            body = dict(apiVersion="v1", kind="ConfigMap",
                        metadata=dict(name=self.name, namespace=self.namespace,
                                      labels={"app.kubernetes.io/managed-by": "apex.ops"},
                                      annotations={"apex.ops/description": "scale states saved by apex.ops.apex_scale; "
                                                   "one JSON record per state name"}),
                        data={})
            if cm is not None:
                body["metadata"] = cm["metadata"]
                body["data"] = dict(cm.get("data") or {})
            body["data"][state_name] = json.dumps(record, sort_keys=True)
            try:
                if cm is None:
                    return self.client.post(self.path, body)
                return self.client.put("%s/%s" % (self.path, self.name), body)
            except KubeApiError as exc:
                if exc.conflict:
                    continue
                raise
        raise ScaleError("could not update ConfigMap %s/%s: it kept changing (conflicts)" % (self.namespace, self.name))


def state_record(plans, namespace, context, state_name, now=None):
    return dict(
        state_name=state_name,
        namespace=namespace,
        context=context,
        saved_at=(now or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ"),
        restored_at=None,
        targets=[dict(kind=p["kind"], name=p["name"], replicas=p["before"]["replicas"],
                      hpa=p["hpa"], hpa_bounds=p["before"]["hpa"]) for p in plans],
    )


# --------------------------------------------------------------------------- the scaler (I/O)


class Scaler(object):
    """Resolve targets, plan, apply in parallel, wait, save and restore."""

    def __init__(self, client, namespace, context=None, clock=time.monotonic):
        self.client = client
        self.namespace = namespace
        self.context = context
        self.clock = clock

    # -- reading
    def snapshot(self, kinds):
        calls = dict((k, (lambda k=k: self.client.list(workload_path(k, self.namespace)))) for k in kinds)
        calls["hpas"] = lambda: self.client.list(ns_path(HPA_API, self.namespace))
        raw = _run_parallel(calls)
        for key, (dummy, exc) in raw.items():
            if exc is not None:
                if isinstance(exc, KubeApiError) and exc.not_found and key == "hpas":
                    continue
                raise exc
        objects = {}
        for kind in kinds:
            for obj in (raw[kind][0] or {}).get("items") or []:
                objects[(kind, obj["metadata"]["name"])] = obj
        hpas = {}
        for hpa in ((raw.get("hpas") or (None, None))[0] or {}).get("items") or []:
            hpas[hpa_target(hpa)] = hpa
        return objects, hpas

    def resolve(self, specs):
        """``specs``: dicts with kind and name or label_selector, plus the request keys.

        Returns ``[(kind, obj, hpa, request)]``; raises ScaleError for targets that do not exist.
        """
        kinds = sorted(set(normalize_kind(s.get("kind") or "Deployment") for s in specs))
        objects, hpas = self.snapshot(kinds)
        resolved, seen, errors = [], set(), []
        for spec in specs:
            kind = normalize_kind(spec.get("kind") or "Deployment")
            matches = []
            if spec.get("name"):
                obj = objects.get((kind, spec["name"]))
                if obj is None:
                    present = sorted(n for (k, n) in objects if k == kind)
                    errors.append("%s %s not found in namespace %s (%s there: %s)" % (
                        kind, spec["name"], self.namespace, kind, ", ".join(present) or "none"))
                    continue
                matches = [obj]
            elif spec.get("label_selector"):
                matches = [o for (k, dummy), o in sorted(objects.items())
                           if k == kind and labels_match_selector_string(
                               spec["label_selector"], (o.get("metadata") or {}).get("labels"))]
                if not matches:
                    errors.append("no %s in namespace %s matches label selector %r" % (
                        kind, self.namespace, spec["label_selector"]))
                    continue
            for obj in matches:
                ident = (kind, obj["metadata"]["name"])
                if ident in seen:
                    errors.append("%s/%s is targeted twice" % ident)
                    continue
                seen.add(ident)
                resolved.append((kind, obj, hpas.get(ident), spec))
        if errors:
            raise ScaleError("; ".join(errors) + ". Nothing was changed.")
        return resolved

    def node_capacity(self):
        """``node_pod_capacity`` of the cluster, or None when the nodes cannot be read (e.g. RBAC)."""
        try:
            nodes = self.client.list("/api/v1/nodes")
        except KubeApiError as exc:
            if exc.unauthorized or exc.not_found:
                return None
            raise
        return node_pod_capacity((nodes or {}).get("items"))

    def plan(self, resolved, hpa_adjust=False, allow_zero=False, check_ceiling=True, ceiling_override=None,
             allow_above_ceiling=False):
        """Plan every target. The nodes are read only when a request is above the ceiling derived
        without them (the node capacity can only raise it)."""
        capacity = None
        for attempt in (0, 1):
            plans, errors, above = [], [], False
            for kind, obj, hpa, request in resolved:
                ceiling = None
                if check_ceiling:
                    ceiling = replica_ceiling((obj.get("spec") or {}).get("replicas", 1),
                                              hpa_bounds(hpa)["max_replicas"] if hpa else None,
                                              capacity, ceiling_override)
                try:
                    plan = plan_target(kind, obj, hpa, request, hpa_adjust=hpa_adjust, allow_zero=allow_zero,
                                       ceiling=ceiling, allow_above_ceiling=allow_above_ceiling)
                except AboveCeiling as exc:
                    above = True
                    errors.append(str(exc))
                    continue
                except ScaleError as exc:
                    errors.append(str(exc))
                    continue
                plan["_obj"], plan["_hpa"] = obj, hpa
                plans.append(plan)
            if above and attempt == 0 and ceiling_override is None and not allow_above_ceiling:
                capacity = self.node_capacity()
                if capacity is not None:
                    continue
            break
        if errors:
            raise ScaleError(" | ".join(errors))
        return plans

    # -- writing
    def _apply_one(self, plan, request, wait, deadline):
        timings = {}
        started = self.clock()
        timings["start_offset_seconds"] = round(started - deadline.started, 3)
        path = workload_path(plan["kind"], self.namespace, plan["name"])
        if plan["hpa_changed"]:
            patch = hpa_patch(plan["_hpa"], plan["after"]["hpa"])
            if patch:
                self.client.merge_patch(ns_path(HPA_API, self.namespace, plan["hpa"]), patch)
        if plan["set_replicas"] is not None:
            self._scale(plan, request, path)
        if plan.get("restart"):
            dummy, patch = restart_patch()
            self.client.merge_patch(path, patch)
        timings["apply_seconds"] = round(self.clock() - started, 3)
        outcome = dict(ok=True)
        if wait:
            wait_started = self.clock()
            result = self.wait_settled(plan["kind"], plan["name"], plan["after"]["replicas"], deadline,
                                       written=plan["set_replicas"] is not None)
            timings["wait_seconds"] = round(self.clock() - wait_started, 3)
            outcome = dict(ok=result.ok, last=result.last, observations=result.observations,
                           moved_to=result.moved_to)
        if plan["changed"]:
            # what the cluster ended at, read after the wait: another writer may have won
            outcome["final"], outcome["final_hpa"], outcome["final_error"] = self.read_back(plan)
        timings["total_seconds"] = round(self.clock() - started, 3)
        outcome["timings"] = timings
        return outcome

    def read_back(self, plan):
        """``(workload, hpa, error)`` as they are now (one GET each); never raises."""
        try:
            obj = self.client.get(workload_path(plan["kind"], self.namespace, plan["name"]))
            hpa = self.client.get(ns_path(HPA_API, self.namespace, plan["hpa"])) if plan["hpa"] else None
            return obj, hpa, None
        except Exception as exc:  # noqa: BLE001 - reported; the write itself succeeded
            return None, None, str(exc)

    def _scale(self, plan, request, path, retries=5):
        """Scale subresource: merge patch; a PUT with resourceVersion when a precondition is set."""
        if request.get("current_replicas") is None:
            self.client.merge_patch(path + "/scale", {"spec": {"replicas": plan["set_replicas"]}})
            return
        obj = plan["_obj"]
        for dummy in range(retries):
            body = dict(apiVersion="autoscaling/v1", kind="Scale",
                        metadata=dict(name=plan["name"], namespace=self.namespace,
                                      resourceVersion=obj["metadata"]["resourceVersion"]),
                        spec=dict(replicas=plan["set_replicas"]))
            try:
                self.client.put(path + "/scale", body)
                return
            except KubeApiError as exc:
                if not exc.conflict:
                    raise
            obj = self.client.get(path)
            now = (obj.get("spec") or {}).get("replicas", 1)
            if now != request["current_replicas"]:
                raise ScaleError("%s: precondition failed while scaling: it now has %d replicas, current_replicas "
                                 "expected %d" % (plan["key"], now, request["current_replicas"]))
        raise ScaleError("%s: the object kept changing under us (conflicts); try again" % plan["key"])

    def wait_settled(self, kind, name, expect, deadline, written=False):
        """Until the target is rolled out and ready at ``expect`` replicas.

        ``written``: this run set spec.replicas to ``expect`` itself (the API accepted it), so a
        different count seen by the first read already means someone moved it afterwards."""
        relist, watch = object_stream(
            self.client, workload_path(kind, self.namespace), name,
            deleted_error=lambda: ScaleError("%s/%s was deleted while waiting for it" % (kind, name)))

        # Never fight: once the expected count was in place, a later change of spec.replicas (the
        # HPA acting within its bounds, or someone else) is followed, and reported, not undone.
        # moved_to is the latest such count (None when the target is back at ``expect``).
        state = dict(seen=written, moved_to=None)

        def done(obj):
            desired = (obj.get("spec") or {}).get("replicas", 1)
            if expect is not None:
                if desired == expect:
                    state["seen"], state["moved_to"] = True, None
                elif state["seen"]:
                    state["moved_to"] = desired
            want = expect if state["moved_to"] is None else None
            return is_settled(obj, kind, want) or rollout_state(obj, kind)[0] == "failed"

        result = watch_until(relist, watch, done, deadline)
        if result.ok and rollout_state(result.last, kind)[0] == "failed":
            result.ok = False
        result.moved_to = state["moved_to"]
        return result

    def not_ready_pods(self, kind, obj, limit=20):
        """Each pod of the target that is not ready, with why: its state, and its latest Warning event
        (e.g. ``Unhealthy: Readiness probe failed: ...``). Two list calls, made only on failure."""
        selector = selector_string((obj.get("spec") or {}).get("selector"))
        calls = dict(
            pods=lambda: self.client.list("/api/v1/namespaces/%s/pods" % self.namespace, label_selector=selector),
            events=lambda: self.client.list("/api/v1/namespaces/%s/events" % self.namespace,
                                            field_selector="type=Warning,involvedObject.kind=Pod"))
        raw = _run_parallel(calls)
        pods, exc = raw["pods"]
        if exc is not None:
            return ["(could not list pods: %s)" % exc]
        latest = {}
        for event in ((raw["events"][0] or {}).get("items") or []):
            summary = event_summary(event)
            name = summary["object"].split("/", 1)[-1]
            if name not in latest or (summary["last_seen"] or "") >= (latest[name]["last_seen"] or ""):
                latest[name] = summary
        now = utcnow()
        out = []
        for pod in pods.get("items") or []:
            summary = pod_summary(pod, now)
            if not summary["ready"]:
                why = summary["not_ready_reason"]
                event = latest.get(summary["name"])
                if event:
                    why = "%s; last event %s: %s" % (why, event["reason"], event["message"])
                out.append("%s: %s" % (summary["name"], why))
        return out[:limit]

    def apply(self, plans, requests, wait=True, timeout=300):
        """Apply every plan in parallel (one thread each); returns per-target outcomes."""
        deadline = Deadline(timeout, clock=self.clock)
        calls = {}
        for plan in plans:
            if plan["changed"] or wait:
                calls[plan["key"]] = (lambda p=plan: self._apply_one(p, requests[p["key"]], wait, deadline))
        return _run_parallel(calls, max_workers=16)

    def describe_timeout(self, plan, outcome):
        obj = outcome.get("last") or {}
        status = obj.get("status") or {}
        desired = (obj.get("spec") or {}).get("replicas")
        state, message = rollout_state(obj, plan["kind"]) if obj else ("unknown", "never observed")
        pods = self.not_ready_pods(plan["kind"], obj) if obj else []
        return dict(
            target=plan["key"], desired=desired, ready=status.get("readyReplicas") or 0,
            updated=status.get("updatedReplicas") or 0, current=status.get("replicas") or 0,
            rollout=state, message=message, pods_not_ready=pods,
            line="%s: ready %d/%s, rollout %s (%s)%s" % (
                plan["key"], status.get("readyReplicas") or 0, desired, state, message,
                ("; not ready: " + ", ".join(pods)) if pods else ""),
        )


def labels_match_selector_string(selector, labels):
    """Evaluate a label selector string (``a=b,c!=d,e in (x,y),f,!g``) against labels."""
    labels = labels or {}
    for term in _split_selector(selector):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            values = [v.strip() for v in m.group(3).split(",")]
            has = labels.get(m.group(1)) in values
            if (m.group(2) == "in") != has:
                return False
            continue
        if term.startswith("!"):
            if term[1:].strip() in labels:
                return False
            continue
        m = re.match(r"^([^\s!=]+)\s*(==|=|!=)\s*(.*)$", term)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3).strip()
            if op == "!=":
                if labels.get(key) == value:
                    return False
            elif labels.get(key) != value:
                return False
            continue
        if term not in labels:
            return False
    return True


def _split_selector(selector):
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector or "":
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


# --------------------------------------------------------------------------- one call of apex_scale

REQUEST_KEYS = ("replicas", "replicas_delta", "current_replicas", "hpa_min_replicas", "hpa_max_replicas",
                "hpa_target_cpu", "restart")


def build_specs(opts):
    """Target specs from module options: ``targets`` entries, ``names``, ``label_selectors``.

    Top-level request options are defaults that each ``targets`` entry may override.
    """
    defaults = dict((k, opts.get(k)) for k in REQUEST_KEYS)
    defaults["replicas_delta"] = parse_delta(defaults["replicas_delta"])
    kind = opts.get("kind") or "Deployment"
    specs = []
    for entry in opts.get("targets") or []:
        spec = dict(defaults)
        for key in REQUEST_KEYS:
            if entry.get(key) is not None:
                spec[key] = parse_delta(entry[key]) if key == "replicas_delta" else entry[key]
        if entry.get("replicas") is not None and entry.get("replicas_delta") is None:
            spec["replicas_delta"] = None
        if entry.get("replicas_delta") is not None and entry.get("replicas") is None:
            spec["replicas"] = None
        if bool(entry.get("name")) == bool(entry.get("label_selector")):
            raise ScaleError("each targets entry needs exactly one of name or label_selector: %r" % (entry,))
        if entry.get("name"):
            spec["kind"], spec["name"] = parse_target_name(entry["name"], entry.get("kind") or kind)
        else:
            spec["kind"], spec["label_selector"] = normalize_kind(entry.get("kind") or kind), entry["label_selector"]
        specs.append(spec)
    for name in opts.get("names") or []:
        spec = dict(defaults)
        spec["kind"], spec["name"] = parse_target_name(name, kind)
        specs.append(spec)
    for selector in opts.get("label_selectors") or []:
        spec = dict(defaults)
        spec["kind"], spec["label_selector"] = normalize_kind(kind), selector
        specs.append(spec)
    return specs


def specs_from_record(record):
    specs = []
    for target in record.get("targets") or []:
        spec = dict((k, None) for k in REQUEST_KEYS)
        spec.update(kind=target["kind"], name=target["name"], replicas=target["replicas"])
        bounds = target.get("hpa_bounds")
        if bounds:
            spec.update(hpa_min_replicas=bounds.get("min_replicas"), hpa_max_replicas=bounds.get("max_replicas"),
                        hpa_target_cpu=bounds.get("target_cpu"))
        specs.append(spec)
    return specs


def public_plan(plan):
    return dict((k, v) for k, v in plan.items() if not k.startswith("_"))


def run_scale(client, namespace, opts, check_mode=False, context=None, now=None):
    """The whole of one apex_scale call. Returns the result dict; raises ScaleError with last_state.

    ``opts``: the module options (targets/names/label_selectors/kind, request keys, hpa_adjust, allow_zero,
    wait, wait_timeout, save_state, restore_state, state_name, overwrite_saved,
    rollback_on_failure, state_configmap).
    """
    started = time.monotonic()
    scaler = Scaler(client, namespace, context=context)
    store = StateStore(client, namespace, opts.get("state_configmap") or STATE_CONFIGMAP)
    state_name = opts.get("state_name") or "default"
    result = dict(changed=False, targets=[], state=None)
    record = None
    if opts.get("restore_state"):
        record = store.read(state_name)
        if record is None:
            raise ScaleError("no saved scale state %r in ConfigMap %s/%s: nothing to restore (save one first "
                             "with save_state: true). Nothing was changed." % (state_name, namespace, store.name))
        specs = specs_from_record(record)
    else:
        specs = build_specs(opts)
    if not specs:
        raise ScaleError("no targets: give names, label_selectors or targets")
    resolved = scaler.resolve(specs)
    # a restore puts back what was recorded, 0 included (e.g. the secondary region's warm standby)
    # ... and is not checked against the ceiling: those counts were in the cluster before
    plans = scaler.plan(resolved, hpa_adjust=bool(opts.get("hpa_adjust")),
                        allow_zero=bool(opts.get("allow_zero") or opts.get("restore_state")),
                        check_ceiling=not opts.get("restore_state"),
                        ceiling_override=opts.get("max_replicas_ceiling"),
                        allow_above_ceiling=bool(opts.get("allow_above_ceiling")))
    requests = dict((p["key"], item[3]) for p, item in zip(plans, resolved))

    # save before anything changes
    if opts.get("save_state"):
        existing = store.read(state_name)
        if existing and not existing.get("restored_at") and not opts.get("overwrite_saved"):
            result["state"] = dict(name=state_name, action="kept", record=existing,
                                   message="a saved state %r from %s has not been restored yet: kept it "
                                           "(overwrite_saved: true replaces it)" % (state_name, existing.get("saved_at")))
        else:
            new = state_record(plans, namespace, context, state_name, now=now)
            if not check_mode:
                store.write(state_name, new)
            result["state"] = dict(name=state_name, action="saved", record=new)
            result["changed"] = True

    result["targets"] = [public_plan(p) for p in plans]
    result["changed"] = result["changed"] or any(p["changed"] for p in plans)
    if check_mode:
        if record is not None:
            result["state"] = dict(name=state_name, action="would restore", record=record)
        result["elapsed_seconds"] = round(time.monotonic() - started, 3)
        return result

    wait = bool(opts.get("wait"))
    outcomes = scaler.apply(plans, requests, wait=wait, timeout=opts.get("wait_timeout") or 300)
    failures, timeouts, concurrent = [], [], []
    for plan, entry in zip(plans, result["targets"]):
        value, exc = outcomes.get(plan["key"], (dict(ok=True, timings={}), None))
        if exc is not None:
            entry["error"] = str(exc)
            failures.append("%s: %s" % (plan["key"], exc))
            continue
        entry["timings"] = value.get("timings", {})
        last = value.get("final") or value.get("last") or plan["_obj"]
        hpa_now = value.get("final_hpa") if value.get("final") else plan["_hpa"]
        entry["observed"] = observed_state(last, plan["kind"], hpa_now)
        if value.get("final_error"):
            entry["observed"]["read_error"] = value["final_error"]
        concurrent.extend(other_writer_notes(plan, entry["observed"]))
        if value.get("moved_to") is not None:
            entry["notes"].append("replicas were changed to %d during the wait (by the HPA or another actor); "
                                  "waited for that count instead of undoing it" % value["moved_to"])
        if not value.get("ok"):
            detail = scaler.describe_timeout(plan, value)
            entry["wait_failure"] = detail
            timeouts.append(detail["line"])
    if failures or timeouts:
        msg = []
        if failures:
            msg.append("scaling failed: " + " | ".join(failures))
        if timeouts:
            msg.append("not rolled out and ready within %ss: %s" % (opts.get("wait_timeout") or 300, " | ".join(timeouts)))
        rolled_back = []
        if opts.get("rollback_on_failure", True):
            rolled_back = rollback(scaler, plans)
            msg.append("Rolled back to the state before this call: %s" % (", ".join(rolled_back) or "nothing to undo"))
        raise ScaleError(". ".join(msg), last_state=dict(targets=result["targets"], rolled_back=rolled_back))

    for change in concurrent:
        for entry in result["targets"]:
            if entry["key"] == change["target"]:
                entry["notes"].append(change["message"])
    result["concurrent_changes"] = concurrent
    if record is not None:
        if result["changed"] or not record.get("restored_at"):
            record["restored_at"] = (now or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")
            store.write(state_name, record)
            result["changed"] = True
        result["state"] = dict(name=state_name, action="restored", record=record)
    result["elapsed_seconds"] = round(time.monotonic() - started, 3)
    return result


def observed_state(obj, kind, hpa=None):
    """What a target looks like in the cluster: replicas (spec), ready, rollout, HPA bounds. Pure."""
    status = obj.get("status") or {}
    desired = (obj.get("spec") or {}).get("replicas", 1)
    return dict(replicas=desired, desired=desired, ready=status.get("readyReplicas") or 0,
                rollout=rollout_state(obj, kind)[0], hpa=hpa_bounds(hpa) if hpa else None)


def other_writer_notes(plan, observed):
    """Differences between what this call set and what the cluster ended at (another writer won). Pure.

    Returns ``[dict(target, field, set, observed, message)]``. Only what this call wrote is compared:
    replicas it set, HPA bounds it changed.
    """
    out = []
    if observed.get("read_error"):
        return out
    if plan["set_replicas"] is not None and observed["replicas"] != plan["set_replicas"]:
        out.append(dict(target=plan["key"], field="replicas", set=plan["set_replicas"], observed=observed["replicas"],
                        message="%s: this run set %d replicas but the cluster ended at %d: another writer (a concurrent "
                                "run, the HPA or a person) changed it after this run's write; the cluster's value "
                                "is reported" % (plan["key"], plan["set_replicas"], observed["replicas"])))
    if plan["hpa_changed"] and observed.get("hpa"):
        wanted, seen = plan["after"]["hpa"], observed["hpa"]
        for field in ("min_replicas", "max_replicas", "target_cpu"):
            if wanted.get(field) != plan["before"]["hpa"].get(field) and seen.get(field) != wanted.get(field):
                out.append(dict(target=plan["key"], field="hpa." + field, set=wanted.get(field), observed=seen.get(field),
                                message="%s: this run set HPA %s %s %s but the cluster ended at %s: another writer "
                                        "changed it after this run's write" % (
                                            plan["key"], plan["hpa"], field, wanted.get(field), seen.get(field))))
    return out


def rollback(scaler, plans):
    """Put changed targets back to their ``before`` state (HPA first, then replicas); no wait."""
    done = []
    for plan in plans:
        if not plan["changed"]:
            continue
        try:
            if plan["hpa_changed"]:
                current = scaler.client.get(ns_path(HPA_API, scaler.namespace, plan["hpa"]))
                patch = hpa_patch(current, plan["before"]["hpa"])
                if patch:
                    scaler.client.merge_patch(ns_path(HPA_API, scaler.namespace, plan["hpa"]), patch)
            undone = []
            if plan["hpa_changed"]:
                undone.append("HPA bounds as before")
            if plan["set_replicas"] is not None:
                scaler.client.merge_patch(workload_path(plan["kind"], scaler.namespace, plan["name"], "scale"),
                                          {"spec": {"replicas": plan["before"]["replicas"]}})
                undone.append("%d replicas" % plan["before"]["replicas"])
            line = "%s -> %s" % (plan["key"], ", ".join(undone)) if undone else plan["key"]
            if plan["restart"]:
                # the old pods are gone once restartedAt changed: say so rather than claim a rollback
                line += "%sthe rolling restart cannot be undone (its pods were already replaced)" % (
                    "; " if undone else ": ")
            done.append(line)
        except Exception as exc:  # report, keep undoing the others
            done.append("%s: rollback failed (%s)" % (plan["key"], exc))
    return done


def scale_diff(result):
    before, after = {}, {}
    for target in result.get("targets") or []:
        before[target["key"]] = target["before"]
        after[target["key"]] = target["after"]
    return dict(before=before, after=after)
