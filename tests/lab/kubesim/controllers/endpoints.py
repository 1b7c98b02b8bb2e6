"""Endpoints of every Service with a selector: ready and not-ready pod addresses."""
from .. import registry
from ..selectors import match_labels
from .common import EP, PODS, SVC, Controller, pod_active, pod_ready


class Endpoints(Controller):
    name = "endpoints"

    def reconcile(self):
        for svc in self.c.store.list(SVC):
            spec = svc.get("spec") or {}
            sel = spec.get("selector")
            if not sel:
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            reqs = [(k, "=", [v]) for k, v in sel.items()]
            ready, notready = [], []
            for p in self.c.store.list(PODS, ns):
                if not pod_active(p) or not match_labels(reqs, p["metadata"].get("labels")):
                    continue
                ip = (p.get("status") or {}).get("podIP")
                if not ip:
                    continue
                addr = {"ip": ip, "nodeName": p["spec"].get("nodeName"),
                        "targetRef": {"kind": "Pod", "namespace": ns,
                                      "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}
                (ready if pod_ready(p) else notready).append(addr)
            ready.sort(key=lambda a: a["ip"])
            notready.sort(key=lambda a: a["ip"])
            ports = [{"name": pt.get("name"),
                      "port": pt.get("targetPort") if isinstance(pt.get("targetPort"), int) else pt.get("port"),
                      "protocol": pt.get("protocol", "TCP")}
                     for pt in spec.get("ports") or []]
            ports = [{k: v for k, v in pt.items() if v is not None} for pt in ports]
            subset = {}
            if ready:
                subset["addresses"] = ready
            if notready:
                subset["notReadyAddresses"] = notready
            subsets = []
            if subset:
                subset["ports"] = ports
                subsets = [subset]
            ep = self.c.store.get(EP, ns, name)
            if ep is None:
                obj = {"apiVersion": "v1", "kind": "Endpoints",
                       "metadata": {"name": name, "namespace": ns,
                                    "labels": dict(svc["metadata"].get("labels") or {})}}
                if subsets:
                    obj["subsets"] = subsets
                self.c.create(registry.lookup("", "v1", "endpoints"), obj)
            elif (ep.get("subsets") or []) != subsets:
                def put(o, subsets=subsets):
                    if subsets:
                        o["subsets"] = subsets
                    else:
                        o.pop("subsets", None)
                self.c.mutate(EP, ns, name, put)
