"""ReplicaSet: creates and deletes pods to match spec.replicas (unscheduled, pending and
unready pods go first), and reports their readiness in the status."""
from .common import PODS, RS, Controller, controller_uid, create_pod_from, pod_active, pod_ready


class ReplicaSets(Controller):
    name = "replicasets"

    def reconcile(self):
        pods_by_owner = {}
        for p in self.c.store.list(PODS):
            cu = controller_uid(p)
            if cu:
                pods_by_owner.setdefault(cu, []).append(p)
        for rs in self.c.store.list(RS):
            meta = rs["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            spec = rs["spec"]
            want = spec.get("replicas", 1)
            pods = [p for p in pods_by_owner.get(meta["uid"], []) if pod_active(p)]
            if len(pods) < want:
                for _ in range(want - len(pods)):
                    create_pod_from(self.c, rs, spec["template"], meta["name"] + "-")
            elif len(pods) > want:
                def rank(p):
                    st = p.get("status") or {}
                    return (0 if not p["spec"].get("nodeName") else 1,
                            0 if st.get("phase") == "Pending" else 1,
                            1 if pod_ready(p) else 0,
                            -int(p["metadata"]["resourceVersion"]))
                for p in sorted(pods, key=rank)[:len(pods) - want]:
                    self.c.store.remove(PODS, p["metadata"]["namespace"], p["metadata"]["name"])
                    self.c.event(rs, "SuccessfulDelete", "Deleted pod: %s" % p["metadata"]["name"],
                                 component="replicaset-controller")
            pods = [p for p in pods_by_owner.get(meta["uid"], []) if pod_active(p)
                    and self.c.store.get(PODS, meta["namespace"], p["metadata"]["name"])]
            ready = sum(1 for p in pods if pod_ready(p))
            status = {"replicas": min(len(pods), max(len(pods), 0)),
                      "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                      "availableReplicas": ready, "observedGeneration": meta.get("generation", 1)}
            status = {k: v for k, v in status.items() if v or k in ("replicas",
                                                                    "observedGeneration")}
            if status != rs.get("status"):
                def put(o, status=status):
                    o["status"] = status
                self.c.mutate(RS, meta["namespace"], meta["name"], put, sub="status")
