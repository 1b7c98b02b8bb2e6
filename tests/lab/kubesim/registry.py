"""The resource registry: one row per (group, version, resource). Drives discovery, URL
routing, storage keys and version conversion."""
import collections

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
RO_VERBS = ["get", "list"]

Resource = collections.namedtuple(
    "Resource",
    "group version plural kind namespaced short subresources storage verbs singular categories")


def _r(group, version, plural, kind, namespaced=True, short=(), subresources=("status",),
       storage=None, verbs=VERBS, categories=()):
    return Resource(group, version, plural, kind, namespaced, list(short), list(subresources),
                    storage or (group, plural), list(verbs), kind.lower(), list(categories))


# subresource -> (group, version, kind, verbs) as discovery reports it
SUBRESOURCE_INFO = {
    "status": (None, None, None, ["get", "patch", "update"]),
    "scale": ("autoscaling", "v1", "Scale", ["get", "patch", "update"]),
    "log": ("", "v1", "Pod", ["get"]),
    "eviction": ("policy", "v1", "Eviction", ["create"]),
}

RESOURCES = [
    _r("", "v1", "namespaces", "Namespace", False, ["ns"], ["status", "finalize"]),
    _r("", "v1", "pods", "Pod", True, ["po"], ["status", "log", "eviction"], categories=["all"]),
    _r("", "v1", "services", "Service", True, ["svc"], categories=["all"]),
    _r("", "v1", "endpoints", "Endpoints", True, ["ep"], []),
    _r("", "v1", "configmaps", "ConfigMap", True, ["cm"], []),
    _r("", "v1", "secrets", "Secret", True, [], []),
    _r("", "v1", "events", "Event", True, ["ev"], []),
    _r("", "v1", "nodes", "Node", False, ["no"], ["status"]),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], []),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], ["status"]),
    _r("", "v1", "limitranges", "LimitRange", True, ["limits"], []),
    _r("", "v1", "resourcequotas", "ResourceQuota", True, ["quota"], ["status"]),
    _r("apps", "v1", "deployments", "Deployment", True, ["deploy"], ["status", "scale"],
       categories=["all"]),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, ["rs"], ["status", "scale"],
       categories=["all"]),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, ["sts"], ["status", "scale"],
       categories=["all"]),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, ["ds"], ["status"], categories=["all"]),
    _r("apps", "v1", "controllerrevisions", "ControllerRevision", True, [], []),
    _r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"],
       categories=["all"]),
    _r("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"],
       storage=("autoscaling", "horizontalpodautoscalers"), categories=["all"]),
    _r("batch", "v1", "jobs", "Job", True, [], categories=["all"]),
    _r("batch", "v1", "cronjobs", "CronJob", True, ["cj"], categories=["all"]),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", True, ["ing"]),
    _r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False, [], []),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"]),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True, [], []),
    _r("events.k8s.io", "v1", "events", "Event", True, ["ev"], [], storage=("", "events")),
    _r("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", True, [], [], verbs=RO_VERBS),
    _r("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", False, [], [], verbs=RO_VERBS),
    _r("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
       False, [], [], verbs=["create"]),
    _r("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview",
       False, [], [], verbs=["create"]),
    _r("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False, [], [],
       verbs=["create"]),
    _r("cert-manager.io", "v1", "certificates", "Certificate", True, ["cert", "certs"],
       categories=["cert-manager"]),
    _r("cert-manager.io", "v1", "certificaterequests", "CertificateRequest", True, ["cr", "crs"],
       categories=["cert-manager"]),
    _r("cert-manager.io", "v1", "issuers", "Issuer", True, [], categories=["cert-manager"]),
    _r("cert-manager.io", "v1", "clusterissuers", "ClusterIssuer", False, [],
       categories=["cert-manager"]),
]

# group -> ordered versions (first = preferred)
GROUPS = collections.OrderedDict()
for _res in RESOURCES:
    if _res.group == "":
        continue
    GROUPS.setdefault(_res.group, [])
    if _res.version not in GROUPS[_res.group]:
        GROUPS[_res.group].append(_res.version)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
# (group, kind) -> storage resource (the preferred version row)
BY_KIND = {}
for _res in RESOURCES:
    BY_KIND.setdefault((_res.group, _res.kind), _res)
STORAGE_VERSION = {}
for _res in RESOURCES:
    STORAGE_VERSION.setdefault(_res.storage, _res)

COMPUTED = {("metrics.k8s.io", "pods"), ("metrics.k8s.io", "nodes")}
# create-only review resources, answered and never stored (the token holder may do anything)
REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
           ("authorization.k8s.io", "selfsubjectrulesreviews"),
           ("authentication.k8s.io", "selfsubjectreviews")}


def lookup(group, version, plural):
    return BY_PATH.get((group, version, plural))


def api_version(res):
    return res.version if res.group == "" else "%s/%s" % (res.group, res.version)


def storage_res(skey):
    return STORAGE_VERSION[skey]


def resource_for_object(obj):
    """The registry row matching an object's apiVersion/kind, or None."""
    av = obj.get("apiVersion", "")
    group, _, version = av.rpartition("/")
    for res in RESOURCES:
        if res.group == group and res.version == version and res.kind == obj.get("kind"):
            return res
    return None
