"""What the controllers share: resource keys, pod and condition helpers, owner references,
pod creation from a template, and the ``Controller`` base class."""
import copy
import hashlib
import json
import math

from .. import registry
from ..store import now_iso

PODS = ("", "pods")
RS = ("apps", "replicasets")
DEPLOY = ("apps", "deployments")
STS = ("apps", "statefulsets")
CREV = ("apps", "controllerrevisions")
JOBS = ("batch", "jobs")
CRONJOBS = ("batch", "cronjobs")
HPA = ("autoscaling", "horizontalpodautoscalers")
PDB = ("policy", "poddisruptionbudgets")
NODES = ("", "nodes")
SVC = ("", "services")
EP = ("", "endpoints")
HASH_LABEL = "pod-template-hash"
REV_ANN = "deployment.kubernetes.io/revision"

_ALPHA = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(tpl):
    tpl = copy.deepcopy(tpl)
    ((tpl.get("metadata") or {}).get("labels") or {}).pop(HASH_LABEL, None)
    digest = hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).digest()
    return "".join(_ALPHA[b % len(_ALPHA)] for b in digest[:10])


def strip_hash(tpl):
    tpl = copy.deepcopy(tpl)
    labels = (tpl.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
        if not labels:
            tpl["metadata"].pop("labels")
    if "metadata" in tpl and not tpl["metadata"]:
        tpl.pop("metadata")
    return tpl


def image_tag(image):
    last = (image or "").rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def faults(pod_or_spec):
    spec = pod_or_spec.get("spec", pod_or_spec)
    tags = " ".join(image_tag(c.get("image")) for c in spec.get("containers") or [])
    return {"never_ready": "never-ready" in tags, "crashloop": "crashloop" in tags,
            "oom": "oom" in tags, "fail": "fail" in tags}


def owner_ref(obj, controller=True):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def controller_uid(obj):
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def int_or_percent(value, total, round_up):
    if value is None:
        return 0
    if isinstance(value, str) and value.endswith("%"):
        frac = float(value[:-1]) * total / 100.0
        return int(math.ceil(frac)) if round_up else int(math.floor(frac))
    return int(value)


def pod_ready(pod):
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def pod_active(pod):
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def set_condition(conds, ctype, status, reason, message, now=None, update_time=False):
    """Upsert a condition; lastTransitionTime changes only with the status."""
    now = now or now_iso()
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c["status"] = status
            c["reason"] = reason
            c["message"] = message
            if update_time or "lastUpdateTime" in c:
                if update_time:
                    c["lastUpdateTime"] = now
            return conds
    new = {"type": ctype, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": now}
    if update_time:
        new["lastUpdateTime"] = now
    conds.append(new)
    return conds


def get_condition(obj, ctype):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def parse_go_duration(text, default):
    if not text:
        return default
    total, num = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    i = 0
    text = str(text)
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = text[i:i + 2] if text[i:i + 2] == "ms" else ch
        i += len(unit)
        if unit not in units or not num:
            return default
        total += float(num) * units[unit]
        num = ""
    return total if total > 0 else default


def create_pod_from(cluster, owner, template, prefix, name=None, extra_labels=None, extra_spec=None):
    tpl = copy.deepcopy(template)
    tmeta = tpl.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    labels.update(extra_labels or {})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"namespace": owner["metadata"]["namespace"], "labels": labels,
                        "ownerReferences": [owner_ref(owner)]},
           "spec": tpl.get("spec") or {}}
    if tmeta.get("annotations"):
        pod["metadata"]["annotations"] = dict(tmeta["annotations"])
    if name:
        pod["metadata"]["name"] = name
    else:
        pod["metadata"]["generateName"] = prefix
    pod["spec"].update(extra_spec or {})
    created = cluster.create(registry.lookup("", "v1", "pods"), pod)
    comp = {"ReplicaSet": "replicaset-controller", "StatefulSet": "statefulset-controller",
            "Job": "job-controller"}.get(owner["kind"], "controller")
    verb = "create Pod %s in StatefulSet %s successful" % (
        created["metadata"]["name"], owner["metadata"]["name"]) if owner["kind"] == \
        "StatefulSet" else "Created pod: %s" % created["metadata"]["name"]
    cluster.event(owner, "SuccessfulCreate", verb, component=comp)
    return created


class Controller:
    """One controller of a cluster. ``reconcile()`` runs on every pass of the loop, under the
    cluster lock; ``name`` is what a failure is reported as; ``wake_at`` asks the loop for a pass
    at a monotonic time (a timer, e.g. a readiness delay or a progress deadline)."""
    name = None

    def __init__(self, loop):
        self.loop = loop
        self.c = loop.c
        self.cfg = loop.cfg

    def wake_at(self, t):
        self.loop.wake_at(t)

    def reconcile(self):
        raise NotImplementedError
