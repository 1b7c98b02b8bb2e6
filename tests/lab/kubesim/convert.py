"""Version conversion between the storage version and other served versions.

autoscaling/v1 <-> v2 HorizontalPodAutoscaler (stored as v2), events.k8s.io/v1 <-> core/v1
Event (stored as core/v1)."""
import copy


def _hpa_v2_to_v1(obj):
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.get("spec", {})
    metrics = spec.pop("metrics", None) or []
    spec.pop("behavior", None)
    for m in metrics:
        if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu":
            util = m["resource"].get("target", {}).get("averageUtilization")
            if util is not None:
                spec["targetCPUUtilizationPercentage"] = util
    status = out.get("status")
    if isinstance(status, dict):
        for m in status.pop("currentMetrics", None) or []:
            if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu":
                util = m["resource"].get("current", {}).get("averageUtilization")
                if util is not None:
                    status["currentCPUUtilizationPercentage"] = util
        status.pop("conditions", None)
    return out


def _hpa_v1_to_v2(obj, old=None):
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v2"
    spec = out.setdefault("spec", {})
    target = spec.pop("targetCPUUtilizationPercentage", None)
    old_spec = (old or {}).get("spec", {})
    metrics = copy.deepcopy(old_spec.get("metrics") or [])
    if target is not None:
        metrics = [m for m in metrics if not (m.get("type") == "Resource"
                                              and m.get("resource", {}).get("name") == "cpu")]
        metrics.insert(0, {"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}})
    if metrics:
        spec["metrics"] = metrics
    if old_spec.get("behavior"):
        spec["behavior"] = copy.deepcopy(old_spec["behavior"])
    status = out.get("status")
    if isinstance(status, dict):
        status.pop("currentCPUUtilizationPercentage", None)
        if old and old.get("status", {}).get("currentMetrics"):
            status["currentMetrics"] = copy.deepcopy(old["status"]["currentMetrics"])
        if old and old.get("status", {}).get("conditions"):
            status["conditions"] = copy.deepcopy(old["status"]["conditions"])
    return out


def _event_core_to_v1(obj):
    o = obj
    out = {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": copy.deepcopy(o.get("metadata", {})),
        "eventTime": o.get("eventTime") or o.get("firstTimestamp") or
        o["metadata"].get("creationTimestamp"),
        "reason": o.get("reason"), "note": o.get("message"), "type": o.get("type"),
        "regarding": copy.deepcopy(o.get("involvedObject", {})),
        "reportingController": o.get("reportingComponent") or
        o.get("source", {}).get("component", ""),
        "reportingInstance": o.get("reportingInstance") or o.get("source", {}).get("host", ""),
        "action": o.get("action", o.get("reason")),
        "deprecatedCount": o.get("count", 1),
        "deprecatedFirstTimestamp": o.get("firstTimestamp"),
        "deprecatedLastTimestamp": o.get("lastTimestamp"),
        "deprecatedSource": copy.deepcopy(o.get("source", {})),
    }
    return {k: v for k, v in out.items() if v is not None}


def _event_v1_to_core(obj, old=None):
    o = obj
    out = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": copy.deepcopy(o.get("metadata", {})),
        "involvedObject": copy.deepcopy(o.get("regarding", {})),
        "reason": o.get("reason"), "message": o.get("note"), "type": o.get("type"),
        "eventTime": o.get("eventTime"),
        "firstTimestamp": o.get("deprecatedFirstTimestamp"),
        "lastTimestamp": o.get("deprecatedLastTimestamp"),
        "count": o.get("deprecatedCount"),
        "source": o.get("deprecatedSource") or {"component": o.get("reportingController", "")},
        "reportingComponent": o.get("reportingController"),
        "reportingInstance": o.get("reportingInstance"),
        "action": o.get("action"),
    }
    return {k: v for k, v in out.items() if v is not None}


def to_version(res, obj):
    """Storage object -> the object as served at ``res`` (a registry row)."""
    if res.group == "autoscaling" and res.version == "v1":
        return _hpa_v2_to_v1(obj)
    if res.group == "events.k8s.io":
        return _event_core_to_v1(obj)
    return obj


def to_storage(res, obj, old=None):
    """An object received at ``res`` -> storage version."""
    if res.group == "autoscaling" and res.version == "v1":
        return _hpa_v1_to_v2(obj, old)
    if res.group == "events.k8s.io":
        return _event_v1_to_core(obj, old)
    return obj


def needs_conversion(res):
    return (res.group == "autoscaling" and res.version == "v1") or res.group == "events.k8s.io"
