"""One simulated cluster: API semantics on top of the store (defaults, validation,
generation, status subresource, optimistic concurrency, finalizers, deletion propagation,
events)."""
import base64
import copy
import itertools
import json
import random
import re
import time

from . import registry
from .selectors import match_fields, match_labels, parse_field_selector, parse_label_selector
from .store import (ApiError, Store, already_exists, conflict, invalid, not_found, now_iso,
                    now_micro)

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
WITH_SPEC_GENERATION = {
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
    ("apps", "daemonsets"), ("autoscaling", "horizontalpodautoscalers"), ("batch", "jobs"),
    ("batch", "cronjobs"), ("policy", "poddisruptionbudgets"), ("cert-manager.io", "certificates"),
    ("cert-manager.io", "certificaterequests"), ("cert-manager.io", "issuers"),
    ("cert-manager.io", "clusterissuers"), ("networking.k8s.io", "ingresses"),
}
SKEY = {
    "Pod": ("", "pods"), "Namespace": ("", "namespaces"), "Service": ("", "services"),
    "Endpoints": ("", "endpoints"), "Secret": ("", "secrets"), "ConfigMap": ("", "configmaps"),
    "Event": ("", "events"), "Node": ("", "nodes"), "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"), "StatefulSet": ("apps", "statefulsets"),
    "ControllerRevision": ("apps", "controllerrevisions"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "Certificate": ("cert-manager.io", "certificates"),
    "CertificateRequest": ("cert-manager.io", "certificaterequests"),
    "Issuer": ("cert-manager.io", "issuers"), "ClusterIssuer": ("cert-manager.io", "clusterissuers"),
    "Ingress": ("networking.k8s.io", "ingresses"), "Lease": ("coordination.k8s.io", "leases"),
}
_suffix_chars = "bcdfghjklmnpqrstvwxz2456789"


def rand_suffix(n=5):
    return "".join(random.choice(_suffix_chars) for _ in range(n))


def prune_nulls(value):
    """Drop null members, as decoding into Go structs (and re-encoding) does."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def _spec_part(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


# ------------------------------------------------------------------------------ defaults
def _default_container(c):
    image = c.get("image", "")
    c.setdefault("imagePullPolicy", "Always" if (image.endswith(":latest") or ":" not in
                                                 image.rsplit("/", 1)[-1]) else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")


def default_pod_spec(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("containers") or []:
        _default_container(c)
    for c in spec.get("initContainers") or []:
        _default_container(c)


def _default_template(tpl):
    tpl.setdefault("metadata", {})
    spec = tpl.setdefault("spec", {})
    default_pod_spec(spec)


def apply_defaults(skey, obj):
    spec = obj.get("spec")
    if skey == ("apps", "deployments") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strat = spec.setdefault("strategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxSurge", "25%")
            ru.setdefault("maxUnavailable", "25%")
        _default_template(spec.setdefault("template", {}))
    elif skey == ("apps", "replicasets") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_template(spec.setdefault("template", {}))
    elif skey == ("apps", "statefulsets") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("revisionHistoryLimit", 10)
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type") == "RollingUpdate":
            us.setdefault("rollingUpdate", {"partition": 0})
        _default_template(spec.setdefault("template", {}))
    elif skey == ("batch", "jobs") and isinstance(spec, dict):
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        tpl = spec.setdefault("template", {})
        _default_template(tpl)
        uid = obj["metadata"].get("uid")
        if uid and not spec.get("manualSelector"):
            labels = {"batch.kubernetes.io/controller-uid": uid,
                      "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                      "controller-uid": uid, "job-name": obj["metadata"]["name"]}
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
            tl = tpl.setdefault("metadata", {}).setdefault("labels", {})
            for k, v in labels.items():
                tl.setdefault(k, v)
            ol = obj["metadata"].setdefault("labels", {})
            for k in ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name",
                      "controller-uid", "job-name"):
                ol.setdefault(k, labels[k])
    elif skey == ("batch", "cronjobs") and isinstance(spec, dict):
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        jt = spec.setdefault("jobTemplate", {}).setdefault("spec", {})
        _default_template(jt.setdefault("template", {}))
    elif skey == ("", "pods") and isinstance(spec, dict):
        default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300}])
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", _qos(spec))
    elif skey == ("", "services") and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    elif skey == ("", "secrets"):
        obj.setdefault("type", "Opaque")
        sd = obj.pop("stringData", None)
        if sd:
            data = obj.setdefault("data", {})
            for k, v in sd.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
    elif skey == ("", "namespaces"):
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            obj["metadata"]["name"]
    elif skey == ("autoscaling", "horizontalpodautoscalers") and isinstance(spec, dict):
        spec.setdefault("minReplicas", 1)
        # desiredReplicas has no omitempty in the API types: a new HPA reads back with 0 (the typed
        # Python client refuses a status without it)
        if isinstance(obj.get("status"), dict) or obj.get("status") is None:
            obj["status"] = obj.get("status") or {}
            obj["status"].setdefault("desiredReplicas", 0)
    elif skey == ("", "serviceaccounts"):
        pass
    # status fields without omitempty in the API types read back as 0 from the start (the typed
    # Python client refuses a StatefulSet/ReplicaSet status without `replicas`)
    zero = {("apps", "statefulsets"): ("replicas", "availableReplicas"),
            ("apps", "replicasets"): ("replicas",)}.get(skey)
    if zero and (isinstance(obj.get("status"), dict) or obj.get("status") is None):
        obj["status"] = obj.get("status") or {}
        for field in zero:
            obj["status"].setdefault(field, 0)


def _qos(spec):
    cs = spec.get("containers") or []
    if not cs:
        return "BestEffort"
    any_res = False
    guaranteed = True
    for c in cs:
        res = c.get("resources") or {}
        if res.get("requests") or res.get("limits"):
            any_res = True
        lim = res.get("limits") or {}
        if not (lim.get("cpu") and lim.get("memory")):
            guaranteed = False
    if not any_res:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# ------------------------------------------------------------------------------ validation
def _containers_causes(spec, prefix):
    causes = []
    cs = spec.get("containers")
    if not cs:
        causes.append({"field": prefix + ".containers", "message": "Required value"})
        return causes
    names = set()
    for i, c in enumerate(cs):
        if not c.get("name"):
            causes.append({"field": "%s.containers[%d].name" % (prefix, i),
                           "message": "Required value"})
        elif c["name"] in names:
            causes.append({"field": "%s.containers[%d].name" % (prefix, i),
                           "message": 'Duplicate value: "%s"' % c["name"]})
        names.add(c.get("name"))
        if not c.get("image"):
            causes.append({"field": "%s.containers[%d].image" % (prefix, i),
                           "message": "Required value"})
        for j, e in enumerate(c.get("env") or []):
            if not isinstance(e, dict) or not e.get("name"):
                causes.append({"field": "%s.containers[%d].env[%d].name" % (prefix, i, j),
                               "message": "Required value"})
    return causes


def validate(res, obj, old=None):
    skey = res.storage
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    causes = []
    if not name:
        causes.append({"field": "metadata.name", "message": "Required value"})
    elif len(name) > 253 or not NAME_RE.match(name):
        causes.append({"field": "metadata.name", "message":
                       "Invalid value: %r: a lowercase RFC 1123 subdomain must consist of lower "
                       "case alphanumeric characters, '-' or '.', and must start and end with "
                       "an alphanumeric character" % name})
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE_RE.match(v):
            causes.append({"field": "metadata.labels", "message": "Invalid value: %r" % (v,)})
    spec = obj.get("spec") or {}
    if skey in (("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
                ("apps", "daemonsets")):
        sel = spec.get("selector")
        tpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not sel:
            causes.append({"field": "spec.selector", "message": "Required value"})
        elif not match_labels(_sel_reqs(sel), tpl_labels):
            causes.append({"field": "spec.template.metadata.labels", "message":
                           "Invalid value: %s: `selector` does not match template `labels`"
                           % json.dumps(tpl_labels)})
        if old is not None and sel != (old.get("spec") or {}).get("selector"):
            causes.append({"field": "spec.selector", "message": "field is immutable"})
        if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
            causes.append({"field": "spec.replicas", "message":
                           "Invalid value: %d: must be greater than or equal to 0"
                           % spec["replicas"]})
        causes += _containers_causes((spec.get("template") or {}).get("spec") or {},
                                     "spec.template.spec")
    elif skey == ("", "pods"):
        causes += _containers_causes(spec, "spec")
    elif skey == ("batch", "jobs"):
        causes += _containers_causes((spec.get("template") or {}).get("spec") or {},
                                     "spec.template.spec")
        rp = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if rp not in ("Never", "OnFailure"):
            causes.append({"field": "spec.template.spec.restartPolicy", "message":
                           'Unsupported value: "%s": supported values: "OnFailure", "Never"'
                           % rp})
    elif skey == ("autoscaling", "horizontalpodautoscalers"):
        mx, mn = spec.get("maxReplicas"), spec.get("minReplicas", 1)
        if not isinstance(mx, int) or mx < 1:
            causes.append({"field": "spec.maxReplicas", "message":
                           "Invalid value: %r: must be greater than or equal to 1" % (mx,)})
        elif isinstance(mn, int) and mn > mx:
            causes.append({"field": "spec.maxReplicas", "message":
                           "Invalid value: %d: must be greater than or equal to `minReplicas`"
                           % mx})
        if isinstance(mn, int) and mn < 1:
            causes.append({"field": "spec.minReplicas", "message":
                           "Invalid value: %d: must be greater than or equal to 1" % mn})
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            causes.append({"field": "spec.scaleTargetRef.name", "message": "Required value"})
    elif skey == ("", "secrets"):
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v or "", validate=True)
            except Exception:
                causes.append({"field": "data[%s]" % k, "message": "illegal base64 data"})
        if old is not None and old.get("immutable") and obj.get("data") != old.get("data"):
            causes.append({"field": "data", "message":
                           "Forbidden: field is immutable when `immutable` is set"})
        if obj.get("type") == "kubernetes.io/tls":
            for k in ("tls.crt", "tls.key"):
                if k not in (obj.get("data") or {}):
                    causes.append({"field": "data[%s]" % k, "message": "Required value"})
    elif skey == ("cert-manager.io", "certificates"):
        if not spec.get("secretName"):
            causes.append({"field": "spec.secretName", "message": "Required value"})
        if not (spec.get("issuerRef") or {}).get("name"):
            causes.append({"field": "spec.issuerRef.name", "message": "Required value"})
    if causes:
        raise invalid(res, name, causes)


def _sel_reqs(sel):
    from .selectors import selector_to_reqs
    return selector_to_reqs(sel)


# ------------------------------------------------------------------------------ cluster
class Cluster:
    def __init__(self, name, config):
        self.name = name
        self.config = config
        self.store = Store(name)
        self.lock = self.store.lock
        self.logs = {}          # (ns, pod, container) -> list of lines
        self.prev_logs = {}     # (ns, pod, container) -> list of lines of the previous run
        self._ip = itertools.count(10)
        self._svc_ip = itertools.count(10)
        self.started = time.time()

    # ---------------------------------------------------------------- reads
    def get(self, skey, ns, name):
        return self.store.get(skey, ns, name)

    def list(self, skey, ns=None, labels=None, fields=None):
        items = self.store.list(skey, ns)
        if labels:
            reqs = parse_label_selector(labels) if isinstance(labels, str) else labels
            items = [o for o in items if match_labels(reqs, o["metadata"].get("labels"))]
        if fields:
            reqs = parse_field_selector(fields) if isinstance(fields, str) else fields
            items = [o for o in items if match_fields(reqs, o)]
        return items

    def must_get(self, res, ns, name):
        obj = self.store.get(res.storage, ns if res.namespaced else "", name)
        if obj is None:
            raise not_found(res, name)
        return obj

    # ---------------------------------------------------------------- writes
    def create(self, res, obj, dry_run=False):
        with self.lock:
            obj = prune_nulls(obj)
            skey = res.storage
            sres = registry.storage_res(skey)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(20):
                    cand = meta["generateName"] + rand_suffix()
                    if self.store.get(skey, meta.get("namespace", ""), cand) is None:
                        meta["name"] = cand
                        break
            if res.namespaced:
                ns = meta.get("namespace") or "default"
                meta["namespace"] = ns
                if self.store.get(("", "namespaces"), "", ns) is None:
                    raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                                   {"name": ns, "kind": "namespaces"})
                nsobj = self.store.get(("", "namespaces"), "", ns)
                if nsobj["metadata"].get("deletionTimestamp"):
                    raise ApiError(403, "Forbidden",
                                   '%s "%s" is forbidden: unable to create new content in '
                                   'namespace %s because it is being terminated'
                                   % (res.plural, meta.get("name"), ns))
            else:
                meta.pop("namespace", None)
            obj["apiVersion"] = registry.api_version(sres)
            obj["kind"] = sres.kind
            for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                      "generation", "managedFields", "selfLink"):
                meta.pop(k, None)
            import uuid
            meta["uid"] = str(uuid.uuid4())
            apply_defaults(skey, obj)
            if "status" in sres.subresources and skey != ("", "namespaces"):
                obj.setdefault("status", {})
            validate(sres, obj)
            if self.store.get(skey, meta.get("namespace", ""), meta["name"]) is not None:
                raise already_exists(res, meta["name"])
            self._admit(skey, obj, None)
            if dry_run:
                meta["creationTimestamp"] = now_iso()
                return obj
            stored = self.store.create(skey, obj)
            if stored is None:
                raise already_exists(res, meta["name"])
            return stored

    def _admit(self, skey, obj, old):
        """Server-side allocation on create/update (cluster IPs...)."""
        if skey == ("", "services") and old is None:
            spec = obj.setdefault("spec", {})
            if spec.get("clusterIP") != "None" and not spec.get("clusterIP"):
                n = next(self._svc_ip)
                spec["clusterIP"] = "10.96.%d.%d" % (n // 250, n % 250 + 1)
                spec["clusterIPs"] = [spec["clusterIP"]]
        if skey == ("", "services") and old is not None:
            spec = obj.setdefault("spec", {})
            ospec = old.get("spec") or {}
            if ospec.get("clusterIP") and not spec.get("clusterIP"):
                spec["clusterIP"] = ospec["clusterIP"]
                spec["clusterIPs"] = ospec.get("clusterIPs", [ospec["clusterIP"]])

    def update(self, res, obj, sub=None, dry_run=False, force=False):
        """PUT semantics. ``force`` skips the resourceVersion precondition (controllers)."""
        with self.lock:
            skey = res.storage
            sres = registry.storage_res(skey)
            obj = prune_nulls(obj)
            meta = obj.setdefault("metadata", {})
            ns = meta.get("namespace", "") if res.namespaced else ""
            name = meta.get("name", "")
            old = self.store.get(skey, ns, name)
            if old is None:
                raise not_found(res, name)
            want_rv = meta.get("resourceVersion")
            if not force and want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if sub == "status":
                new = copy.deepcopy(old)
                new["status"] = obj.get("status")
                if new["status"] is None:
                    new.pop("status")
            else:
                new = obj
                new["apiVersion"] = registry.api_version(sres)
                new["kind"] = sres.kind
                nm = new["metadata"]
                om = old["metadata"]
                for k in ("uid", "creationTimestamp", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "generation"):
                    if k in om:
                        nm[k] = om[k]
                    else:
                        nm.pop(k, None)
                if res.namespaced:
                    nm["namespace"] = ns
                nm.pop("managedFields", None)
                if "status" in res.subresources or skey == ("", "pods"):
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                apply_defaults(skey, new)
                validate(sres, new, old)
                self._admit(skey, new, old)
                if skey in WITH_SPEC_GENERATION and _spec_part(new) != _spec_part(old):
                    nm["generation"] = om.get("generation", 1) + 1
            if new == old:
                return old
            if dry_run:
                return new
            md = new["metadata"]
            if md.get("deletionTimestamp") and not md.get("finalizers"):
                return self.store.remove(skey, ns, name)
            stored = self.store.replace(skey, new)
            return stored

    def write(self, skey, obj, sub=None):
        """Controller write (no precondition)."""
        res = registry.storage_res(skey)
        return self.update(res, obj, sub=sub, force=True)

    def mutate(self, skey, ns, name, fn, sub=None):
        with self.lock:
            cur = self.store.get(skey, ns, name)
            if cur is None:
                return None
            new = copy.deepcopy(cur)
            fn(new)
            if new == cur:
                return cur
            return self.write(skey, new, sub=sub)

    def delete(self, res, ns, name, propagation=None, preconditions=None, dry_run=False,
               grace=None):
        with self.lock:
            skey = res.storage
            ns = ns if res.namespaced else ""
            old = self.store.get(skey, ns, name)
            if old is None:
                raise not_found(res, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Conflict", "Precondition failed: UID in precondition: %s, "
                               "UID in object meta: %s" % (pre["uid"], old["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != \
                    old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if dry_run:
                return old
            uid = old["metadata"]["uid"]
            if propagation is None:
                propagation = "Background"
            if propagation == "Orphan":
                for dep in self.dependents(uid):
                    def _drop(o, uid=uid):
                        o["metadata"]["ownerReferences"] = [
                            r for r in o["metadata"].get("ownerReferences", [])
                            if r.get("uid") != uid]
                        if not o["metadata"]["ownerReferences"]:
                            del o["metadata"]["ownerReferences"]
                    dm = dep["metadata"]
                    self.mutate(SKEY.get(dep["kind"], _skey_of(dep)), dm.get("namespace", ""),
                                dm["name"], _drop)
            if skey == ("", "namespaces"):
                self._delete_namespace_content(name)
            if old["metadata"].get("finalizers") or propagation == "Foreground":
                new = copy.deepcopy(old)
                if not new["metadata"].get("deletionTimestamp"):
                    new["metadata"]["deletionTimestamp"] = now_iso()
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                if propagation == "Foreground":
                    fins = new["metadata"].setdefault("finalizers", [])
                    if "foregroundDeletion" not in fins:
                        fins.append("foregroundDeletion")
                if skey == ("", "namespaces"):
                    new["status"] = {"phase": "Terminating"}
                    if not new["metadata"].get("finalizers"):
                        return self.store.remove(skey, ns, name)
                return self.store.replace(skey, new)
            return self.store.remove(skey, ns, name)

    def _delete_namespace_content(self, ns):
        for skey in list(self.store.objs):
            sres = registry.storage_res(skey)
            if not sres.namespaced:
                continue
            for obj in self.store.list(skey, ns):
                self.store.remove(skey, ns, obj["metadata"]["name"])

    def dependents(self, uid):
        out = []
        for _skey, obj in self.store.all_objects():
            for ref in obj["metadata"].get("ownerReferences") or ():
                if ref.get("uid") == uid:
                    out.append(obj)
                    break
        return out

    # ---------------------------------------------------------------- events
    def event(self, obj, reason, message, etype="Normal", component="kubesim"):
        meta = obj.get("metadata", {})
        ns = meta.get("namespace") or "default"
        if self.store.get(("", "namespaces"), "", ns) is None:
            return
        involved = {"kind": obj.get("kind"), "namespace": meta.get("namespace"),
                    "name": meta.get("name"), "uid": meta.get("uid"),
                    "apiVersion": obj.get("apiVersion"),
                    "resourceVersion": meta.get("resourceVersion")}
        involved = {k: v for k, v in involved.items() if v}
        ts = now_iso()
        with self.lock:
            for ev in self.store.list(("", "events"), ns):
                io = ev.get("involvedObject", {})
                if (io.get("uid") == meta.get("uid") and ev.get("reason") == reason
                        and ev.get("message") == message):
                    def _bump(e):
                        e["count"] = e.get("count", 1) + 1
                        e["lastTimestamp"] = ts
                    self.mutate(("", "events"), ns, ev["metadata"]["name"], _bump)
                    return
            name = "%s.%x" % (meta.get("name"), int(time.time() * 1e9) + random.randint(0, 999))
            ev = {"apiVersion": "v1", "kind": "Event",
                  "metadata": {"name": name, "namespace": ns},
                  "involvedObject": involved, "reason": reason, "message": message,
                  "type": etype, "count": 1, "firstTimestamp": ts, "lastTimestamp": ts,
                  "source": {"component": component}, "reportingComponent": component,
                  "reportingInstance": component + "-" + self.name, "eventTime": None}
            ev.pop("eventTime")
            self.store.create(("", "events"), ev)
            events = self.store.list(("", "events"))
            if len(events) > 2000:
                events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
                for old in events[:len(events) - 1500]:
                    self.store.remove(("", "events"), old["metadata"]["namespace"],
                                      old["metadata"]["name"])

    # ---------------------------------------------------------------- logs
    def add_log(self, ns, pod, container, line):
        ts = now_micro()
        with self.lock:
            self.logs.setdefault((ns, pod, container), []).append((ts, line))


def _skey_of(obj):
    av = obj.get("apiVersion", "")
    group = av.rpartition("/")[0]
    for r in registry.RESOURCES:
        if r.group == group and r.kind == obj.get("kind"):
            return r.storage
    raise KeyError(obj.get("kind"))
