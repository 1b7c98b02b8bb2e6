"""StatefulSet: ordered pods ``<name>-<i>`` (OrderedReady or Parallel), ControllerRevisions,
RollingUpdate with a partition, highest ordinal first."""
import copy

from .. import registry
from .common import (CREV, PODS, STS, Controller, controller_uid, create_pod_from, owner_ref, pod_ready,
                     template_hash)


class StatefulSets(Controller):
    name = "statefulsets"

    def reconcile(self):
        for s in self.c.store.list(STS):
            meta, spec = s["metadata"], s["spec"]
            if meta.get("deletionTimestamp"):
                continue
            ns, name = meta["namespace"], meta["name"]
            h = template_hash(spec["template"])
            update_rev = "%s-%s" % (name, h)
            revs = [r for r in self.c.store.list(CREV, ns) if controller_uid(r) == meta["uid"]]
            cur_crev = self.c.store.get(CREV, ns, update_rev)
            top = max([r.get("revision", 0) for r in revs] + [0])
            if cur_crev is not None and cur_crev.get("revision", 0) < top:
                # rolled back to an older template: that revision becomes the newest
                def bump(o, top=top):
                    o["revision"] = top + 1
                self.c.mutate(CREV, ns, update_rev, bump)
            if cur_crev is None:
                self.c.create(registry.lookup("apps", "v1", "controllerrevisions"), {
                    "apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": update_rev, "namespace": ns,
                                 "labels": dict(((spec.get("selector") or {}).get("matchLabels")
                                                 or {}), **{"controller.kubernetes.io/hash": h}),
                                 "ownerReferences": [owner_ref(s)]},
                    "data": {"spec": {"template": dict(copy.deepcopy(spec["template"]),
                                                       **{"$patch": "replace"})}},
                    "revision": max([r.get("revision", 0) for r in revs] + [0]) + 1})
            pods = {}
            for p in self.c.store.list(PODS, ns):
                if controller_uid(p) == meta["uid"]:
                    pods[p["metadata"]["name"]] = p
            replicas = spec.get("replicas", 1)
            acted = False
            for i in range(replicas):
                pname = "%s-%d" % (name, i)
                p = pods.get(pname)
                if p is None:
                    create_pod_from(self.c, s, spec["template"], None, name=pname, extra_labels={
                        "controller-revision-hash": update_rev,
                        "statefulset.kubernetes.io/pod-name": pname,
                        "apps.kubernetes.io/pod-index": str(i)},
                        extra_spec={"hostname": pname, "subdomain": spec.get("serviceName", "")})
                    acted = True
                    break
                if not pod_ready(p) and spec.get("podManagementPolicy") != "Parallel":
                    acted = True
                    break
            if not acted:
                extra = sorted((p for n, p in pods.items()
                                if int(n.rsplit("-", 1)[1]) >= replicas),
                               key=lambda p: -int(p["metadata"]["name"].rsplit("-", 1)[1]))
                if extra:
                    self.c.store.remove(PODS, ns, extra[0]["metadata"]["name"])
                    self.c.event(s, "SuccessfulDelete", "delete Pod %s in StatefulSet %s "
                                 "successful" % (extra[0]["metadata"]["name"], name),
                                 component="statefulset-controller")
                    acted = True
            us = spec.get("updateStrategy") or {}
            if not acted and us.get("type", "RollingUpdate") == "RollingUpdate":
                part = (us.get("rollingUpdate") or {}).get("partition", 0)
                for i in range(replicas - 1, part - 1, -1):
                    p = pods.get("%s-%d" % (name, i))
                    if p and (p["metadata"].get("labels") or {}).get(
                            "controller-revision-hash") != update_rev:
                        self.c.store.remove(PODS, ns, p["metadata"]["name"])
                        self.c.event(s, "SuccessfulDelete", "delete Pod %s in StatefulSet %s "
                                     "successful" % (p["metadata"]["name"], name),
                                     component="statefulset-controller")
                        break
            pods = [p for p in self.c.store.list(PODS, ns) if controller_uid(p) == meta["uid"]]
            updated = sum(1 for p in pods if (p["metadata"].get("labels") or {}).get(
                "controller-revision-hash") == update_rev)
            ready = sum(1 for p in pods if pod_ready(p))
            old = s.get("status") or {}
            cur_rev = old.get("currentRevision") or update_rev
            if updated == replicas == len(pods) and ready == replicas:
                cur_rev = update_rev
            st = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "currentReplicas": updated if cur_rev == update_rev else len(pods) - updated,
                  "updatedReplicas": updated, "currentRevision": cur_rev,
                  "updateRevision": update_rev, "collisionCount": 0}
            st = {k: v for k, v in st.items()
                  if v or k in ("observedGeneration", "replicas", "collisionCount", "availableReplicas")}
            if st != old:
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(STS, ns, name, put, sub="status")
