"""PodDisruptionBudget status, and the eviction check the API server's ``pods/eviction``
subresource asks before deleting a pod."""
import copy

from .. import metrics
from ..selectors import match_labels, selector_to_reqs
from ..store import now_iso
from .common import PDB, PODS, Controller, int_or_percent, pod_active, pod_ready, set_condition


def _pdbs_for(cluster, pod):
    ns = pod["metadata"]["namespace"]
    out = []
    for pdb in cluster.store.list(PDB, ns):
        sel = (pdb.get("spec") or {}).get("selector")
        if sel and match_labels(selector_to_reqs(sel), pod["metadata"].get("labels")):
            out.append(pdb)
    return out


def check_eviction(cluster, pod):
    """None when the pod may be evicted, else the DisruptionBudget message."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Pending"):
        return None
    for pdb in _pdbs_for(cluster, pod):
        st = pdb.get("status") or {}
        if not pod_ready(pod) and st.get("currentHealthy", 0) >= st.get("desiredHealthy", 0):
            continue
        if st.get("disruptionsAllowed", 0) <= 0:
            return "The disruption budget %s needs %d healthy pods and has %d currently" % (
                pdb["metadata"]["name"], st.get("desiredHealthy", 0), st.get("currentHealthy", 0))
    return None


def record_eviction(cluster, pod):
    for pdb in _pdbs_for(cluster, pod):
        def dec(p):
            st = p.setdefault("status", {})
            st["disruptionsAllowed"] = max(0, st.get("disruptionsAllowed", 0) - 1)
            st.setdefault("disruptedPods", {})[pod["metadata"]["name"]] = now_iso()
        cluster.mutate(PDB, pdb["metadata"]["namespace"], pdb["metadata"]["name"], dec,
                       sub="status")
    cluster.event(pod, "Killing", "Stopping container %s" % ",".join(
        c["name"] for c in pod["spec"].get("containers") or []), component="kubelet")


class PodDisruptionBudgets(Controller):
    name = "pdbs"

    def reconcile(self):
        for pdb in self.c.store.list(PDB):
            ns = pdb["metadata"]["namespace"]
            spec = pdb.get("spec") or {}
            reqs = selector_to_reqs(spec.get("selector"))
            pods = [p for p in self.c.store.list(PODS, ns) if pod_active(p)
                    and match_labels(reqs, p["metadata"].get("labels"))]
            expected = len(pods)
            owners = {}
            for p in pods:
                w = metrics.owner_workload(self.c, p)
                if w is not None:
                    owners[w["metadata"]["uid"]] = w
            if owners:
                expected = sum((w.get("spec") or {}).get("replicas", 0) for w in owners.values())
            healthy = sum(1 for p in pods if pod_ready(p))
            if "minAvailable" in spec:
                desired = int_or_percent(spec["minAvailable"], expected, True)
            elif "maxUnavailable" in spec:
                desired = expected - int_or_percent(spec["maxUnavailable"], expected, True)
            else:
                desired = expected
            allowed = max(0, healthy - desired)
            old = pdb.get("status") or {}
            st = copy.deepcopy(old)
            # keep a just-recorded eviction's decrement until the pod is really gone
            st.update({"observedGeneration": pdb["metadata"].get("generation", 1),
                       "expectedPods": expected, "currentHealthy": healthy,
                       "desiredHealthy": desired, "disruptionsAllowed": allowed})
            st.pop("disruptedPods", None)
            conds = st.setdefault("conditions", [])
            if allowed > 0:
                set_condition(conds, "DisruptionAllowed", "True", "SufficientPods", "")
            else:
                set_condition(conds, "DisruptionAllowed", "False", "InsufficientPods", "")
            for c in conds:
                c["observedGeneration"] = st["observedGeneration"]
            if st != old:
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(PDB, ns, pdb["metadata"]["name"], put, sub="status")
