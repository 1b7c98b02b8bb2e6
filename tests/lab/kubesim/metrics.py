"""metrics.k8s.io/v1beta1: synthetic PodMetrics/NodeMetrics (what `kubectl top` reads).

CPU usage = utilisation x CPU request, where the utilisation is the one the HPA controller
uses (annotation ``kubesim.apex.dev/cpu-utilization`` on the HPA or the workload, else a
steady value below target); memory is a stable per-pod figure (higher for ``oom`` images), or
the percentage of the memory request that annotation ``kubesim.apex.dev/memory-utilization`` on the
workload says (a memory leak: ``190`` on apex-api = 95 % of its limit, what ApexResourceExhaustion
fires on)."""
import zlib

from .store import now_iso

UTIL_ANNOTATION = "kubesim.apex.dev/cpu-utilization"
MEMORY_ANNOTATION = "kubesim.apex.dev/memory-utilization"


def parse_cpu(q):
    if q is None:
        return 0.0
    q = str(q)
    if q.endswith("m"):
        return float(q[:-1]) / 1000.0
    if q.endswith("n"):
        return float(q[:-1]) / 1e9
    return float(q)


_MEM = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 1000, "M": 10 ** 6,
        "G": 10 ** 9, "k": 1000}


def parse_mem(q):
    if q is None:
        return 0
    q = str(q)
    for suf in ("Ki", "Mi", "Gi", "Ti", "K", "M", "G", "k"):
        if q.endswith(suf):
            return int(float(q[:-len(suf)]) * _MEM[suf])
    return int(float(q))


def owner_workload(cluster, pod):
    """The Deployment/StatefulSet/Job owning a pod (via its ReplicaSet), or None."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        owner = cluster.store.by_uid(ref.get("uid"))
        if owner is None:
            return None
        if owner.get("kind") == "ReplicaSet":
            for r2 in owner["metadata"].get("ownerReferences") or []:
                if r2.get("controller"):
                    return cluster.store.by_uid(r2.get("uid")) or owner
        return owner
    return None


def utilization_for(cluster, workload):
    """CPU utilisation (percent of request) of a workload: annotation on the workload or on an
    HPA targeting it; None when nothing says."""
    if workload is None:
        return None
    ann = workload["metadata"].get("annotations") or {}
    if UTIL_ANNOTATION in ann:
        try:
            return int(float(ann[UTIL_ANNOTATION]))
        except ValueError:
            return None
    ns = workload["metadata"].get("namespace", "")
    for hpa in cluster.store.list(("autoscaling", "horizontalpodautoscalers"), ns):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("name") == workload["metadata"]["name"] and ref.get("kind") == workload["kind"]:
            a = hpa["metadata"].get("annotations") or {}
            if UTIL_ANNOTATION in a:
                try:
                    return int(float(a[UTIL_ANNOTATION]))
                except ValueError:
                    return None
    return None


def hpa_target_utilization(cluster, workload):
    if workload is None:
        return None
    ns = workload["metadata"].get("namespace", "")
    for hpa in cluster.store.list(("autoscaling", "horizontalpodautoscalers"), ns):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("name") == workload["metadata"]["name"] and ref.get("kind") == workload["kind"]:
            for m in (hpa.get("spec") or {}).get("metrics") or []:
                if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu":
                    return (m["resource"].get("target") or {}).get("averageUtilization")
            return 80
    return None


def effective_utilization(cluster, workload):
    """Annotation if any; else the HPA's target (a workload in steady state); else 35 %."""
    util = utilization_for(cluster, workload)
    if util is None:
        util = hpa_target_utilization(cluster, workload)
    return 35 if util is None else util


def memory_utilization_for(workload):
    """Memory use in percent of the request the workload's annotation asks for; None when unset."""
    ann = (workload or {}).get("metadata", {}).get("annotations") or {}
    try:
        return float(ann[MEMORY_ANNOTATION])
    except (KeyError, ValueError):
        return None


def _pod_usage(cluster, pod):
    workload = owner_workload(cluster, pod)
    util = effective_utilization(cluster, workload)
    mem_util = memory_utilization_for(workload)
    out = []
    for c in pod["spec"].get("containers") or []:
        req = ((c.get("resources") or {}).get("requests") or {})
        cpu_req = parse_cpu(req.get("cpu")) or 0.1
        mem_req = parse_mem(req.get("memory")) or (128 << 20)
        seed = zlib.crc32(("%s/%s" % (pod["metadata"]["name"], c.get("name"))).encode())
        jitter = (seed % 21 - 10) / 100.0
        cpu = max(cpu_req * util / 100.0 * (1 + jitter), 0.001)
        mem_factor = 0.55 + (seed % 30) / 100.0
        if "oom" in c.get("image", ""):
            mem_factor = 0.98
        if mem_util is not None:
            mem_factor = mem_util / 100.0
        mem = int(mem_req * mem_factor)
        out.append({"name": c.get("name"),
                    "usage": {"cpu": "%dn" % int(cpu * 1e9), "memory": "%dKi" % (mem // 1024)}})
    return out


def compute(cluster, plural, ns):
    ts = now_iso()
    with cluster.lock:
        pods = [p for p in cluster.store.list(("", "pods"), ns if plural == "pods" else None)
                if (p.get("status") or {}).get("phase") == "Running"]
        if plural == "pods":
            return [{"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                     "metadata": {"name": p["metadata"]["name"],
                                  "namespace": p["metadata"]["namespace"],
                                  "creationTimestamp": ts,
                                  "labels": p["metadata"].get("labels") or {}},
                     "timestamp": ts, "window": "15s", "containers": _pod_usage(cluster, p)}
                    for p in pods]
        out = []
        for node in cluster.store.list(("", "nodes")):
            name = node["metadata"]["name"]
            cpu, mem = 0.25, 1200 << 20
            for p in pods:
                if p["spec"].get("nodeName") != name:
                    continue
                for c in _pod_usage(cluster, p):
                    cpu += parse_cpu(c["usage"]["cpu"])
                    mem += parse_mem(c["usage"]["memory"])
            out.append({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {"name": name, "creationTimestamp": ts,
                                     "labels": node["metadata"].get("labels") or {}},
                        "timestamp": ts, "window": "20s",
                        "usage": {"cpu": "%dn" % int(cpu * 1e9), "memory": "%dKi" % (mem // 1024)}})
        return out
