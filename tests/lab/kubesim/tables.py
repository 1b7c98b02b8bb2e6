"""Server-side printing (``Accept: application/json;as=Table``), as kube-apiserver's
printers do for the kinds the runbook looks at. Other kinds get Name + Age (or the CRD's
additionalPrinterColumns for cert-manager)."""
import calendar
import time

from .selectors import selector_string


def _ts(value):
    if not value:
        return None
    try:
        return calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def human_duration(seconds):
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return "%ds" % seconds
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return "%dm%ds" % (minutes, s) if s else "%dm" % minutes
    if minutes < 180:
        return "%dm" % minutes
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return "%dh%dm" % (hours, m) if m else "%dh" % hours
    if hours < 48:
        return "%dh" % hours
    days = hours // 24
    if days < 8:
        h = hours % 24
        return "%dd%dh" % (days, h) if h else "%dd" % days
    if days < 365 * 2:
        return "%dd" % days
    return "%dy" % (days // 365)


def age(obj, field=None):
    ts = _ts(field if field is not None else obj.get("metadata", {}).get("creationTimestamp"))
    if ts is None:
        return "<unknown>"
    return human_duration(time.time() - ts)


def _col(name, typ="string", priority=0, fmt="", desc=""):
    return {"name": name, "type": typ, "format": fmt, "description": desc or name,
            "priority": priority}


NAME = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when "
           "this object was created.")


def _cond(obj, ctype):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


# --------------------------------------------------------------------------- pods
def pod_status_reason(pod):
    st = pod.get("status") or {}
    reason = st.get("reason") or st.get("phase") or "Unknown"
    for cs in reversed(st.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = t.get("reason") or ("Signal:%s" % t.get("signal") if t.get("signal")
                                         else "ExitCode:%s" % t.get("exitCode"))
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_row(pod):
    st = pod.get("status") or {}
    spec = pod.get("spec") or {}
    total = len(spec.get("containers") or [])
    ready = sum(1 for cs in st.get("containerStatuses") or [] if cs.get("ready"))
    restarts = sum(cs.get("restartCount", 0) for cs in st.get("containerStatuses") or [])
    last = None
    for cs in st.get("containerStatuses") or []:
        t = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if t and (last is None or t > last):
            last = t
    restarts_cell = restarts if not (restarts and last) else "%d (%s ago)" % (
        restarts, age(None, last))
    gates = spec.get("readinessGates") or []
    return [pod["metadata"]["name"], "%d/%d" % (ready, total), pod_status_reason(pod),
            restarts_cell, age(pod), st.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>",
            "<none>" if not gates else "%d/%d" % (0, len(gates))]


POD_COLS = [NAME, _col("Ready", desc="The aggregate readiness state of this pod for accepting "
                       "traffic."), _col("Status", desc="The aggregate status of the containers "
                                         "in this pod."),
            _col("Restarts", desc="The number of times the containers in this pod have been "
                 "restarted and when the last container in this pod has restarted."), AGE,
            _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1)]


def _containers(tpl_spec):
    cs = tpl_spec.get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _deploy_row(d):
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [d["metadata"]["name"], "%d/%d" % (st.get("readyReplicas", 0), spec.get("replicas", 0)),
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(d), names, images,
            selector_string(spec.get("selector"))]


DEPLOY_COLS = [NAME, _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"),
               AGE, _col("Containers", priority=1), _col("Images", priority=1),
               _col("Selector", priority=1)]


def _rs_row(r):
    spec, st = r.get("spec") or {}, r.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [r["metadata"]["name"], spec.get("replicas", 0), st.get("replicas", 0),
            st.get("readyReplicas", 0), age(r), names, images,
            selector_string(spec.get("selector"))]


RS_COLS = [NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"),
           AGE, _col("Containers", priority=1), _col("Images", priority=1),
           _col("Selector", priority=1)]


def _sts_row(s):
    spec, st = s.get("spec") or {}, s.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [s["metadata"]["name"], "%d/%d" % (st.get("readyReplicas", 0), spec.get("replicas", 0)),
            age(s), names, images]


STS_COLS = [NAME, _col("Ready"), AGE, _col("Containers", priority=1), _col("Images", priority=1)]


def _hpa_targets(h):
    spec, st = h.get("spec") or {}, h.get("status") or {}
    parts = []
    current = st.get("currentMetrics") or []
    for m in spec.get("metrics") or []:
        if m.get("type") == "Resource":
            rname = m["resource"]["name"]
            tgt = m["resource"].get("target") or {}
            cur = "<unknown>"
            for cm in current:
                if cm.get("type") == "Resource" and cm["resource"]["name"] == rname:
                    c = cm["resource"].get("current") or {}
                    if c.get("averageUtilization") is not None:
                        cur = "%d%%" % c["averageUtilization"]
                    elif c.get("averageValue") is not None:
                        cur = c["averageValue"]
            if tgt.get("averageUtilization") is not None:
                parts.append("%s: %s/%d%%" % (rname, cur, tgt["averageUtilization"]))
            else:
                parts.append("%s: %s/%s" % (rname, cur, tgt.get("averageValue", "<unset>")))
        else:
            parts.append("<unknown>/<unset>")
    if not parts:
        return "<none>"
    return ", ".join(parts)


def _hpa_row(h):
    spec, st = h.get("spec") or {}, h.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    return [h["metadata"]["name"], "%s/%s" % (ref.get("kind"), ref.get("name")), _hpa_targets(h),
            spec.get("minReplicas", 1), spec.get("maxReplicas"), st.get("currentReplicas", 0),
            age(h)]


HPA_COLS = [NAME, _col("Reference"), _col("Targets"), _col("MinPods", "integer"),
            _col("MaxPods", "integer"), _col("Replicas", "integer"), AGE]


def _node_row(n):
    spec, st = n.get("spec") or {}, n.get("status") or {}
    ready = _cond(n, "Ready")
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if spec.get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in (n["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    info = st.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    return [n["metadata"]["name"], status, ",".join(roles) or "<none>", age(n),
            info.get("kubeletVersion", ""), addrs.get("InternalIP", "<none>"),
            addrs.get("ExternalIP", "<none>"), info.get("osImage", ""),
            info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


NODE_COLS = [NAME, _col("Status"), _col("Roles"), AGE, _col("Version"),
             _col("Internal-IP", priority=1), _col("External-IP", priority=1),
             _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
             _col("Container-Runtime", priority=1)]


def _event_row(e):
    io = e.get("involvedObject") or {}
    last = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp")
    src = (e.get("source") or {}).get("component", "")
    return [age(None, last), e.get("type", ""), e.get("reason", ""),
            "%s/%s" % ((io.get("kind") or "").lower(), io.get("name", "")), src,
            e.get("message", ""), age(None, e.get("firstTimestamp") or last), e.get("count", 1),
            e["metadata"]["name"]]


EVENT_COLS = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"),
              _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1),
              _col("Count", "integer", 1), _col("Name", priority=1)]


def _svc_row(s):
    spec = s.get("spec") or {}
    ports = ",".join("%s%s/%s" % (p.get("port"), ":%s" % p["nodePort"] if p.get("nodePort") else "",
                                  p.get("protocol", "TCP")) for p in spec.get("ports") or [])
    lb = ",".join(i.get("ip") or i.get("hostname", "") for i in
                  ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
    return [s["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"),
            lb or ("<pending>" if spec.get("type") == "LoadBalancer" else "<none>"),
            ports or "<none>", age(s),
            selector_string({"matchLabels": spec.get("selector")}) or "<none>"]


SVC_COLS = [NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE,
            _col("Selector", priority=1)]


def _secret_row(s):
    return [s["metadata"]["name"], s.get("type", "Opaque"), len(s.get("data") or {}), age(s)]


def _cm_row(c):
    return [c["metadata"]["name"], len(c.get("data") or {}) + len(c.get("binaryData") or {}),
            age(c)]


def _job_row(j):
    spec, st = j.get("spec") or {}, j.get("status") or {}
    status = "Running"
    if _cond(j, "Complete") and _cond(j, "Complete").get("status") == "True":
        status = "Complete"
    elif _cond(j, "Failed") and _cond(j, "Failed").get("status") == "True":
        status = "Failed"
    dur = ""
    start, end = _ts(st.get("startTime")), _ts(st.get("completionTime"))
    if start:
        dur = human_duration((end or time.time()) - start)
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [j["metadata"]["name"], status, "%d/%d" % (st.get("succeeded", 0),
                                                      spec.get("completions", 1)),
            dur, age(j), names, images, selector_string(spec.get("selector"))]


JOB_COLS = [NAME, _col("Status"), _col("Completions"), _col("Duration"), AGE,
            _col("Containers", priority=1), _col("Images", priority=1),
            _col("Selector", priority=1)]


def _cj_row(c):
    spec, st = c.get("spec") or {}, c.get("status") or {}
    last = st.get("lastScheduleTime")
    return [c["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            "True" if spec.get("suspend") else "False", len(st.get("active") or []),
            age(None, last) if last else "<none>", age(c)]


CJ_COLS = [NAME, _col("Schedule"), _col("Timezone"), _col("Suspend", "boolean"),
           _col("Active", "integer"), _col("Last Schedule"), AGE]


def _ing_row(i):
    spec = i.get("spec") or {}
    hosts = ",".join(r.get("host", "*") for r in spec.get("rules") or []) or "*"
    addr = ",".join(x.get("ip") or x.get("hostname", "") for x in
                    ((i.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
    ports = "80, 443" if spec.get("tls") else "80"
    return [i["metadata"]["name"], spec.get("ingressClassName") or "<none>", hosts, addr, ports,
            age(i)]


ING_COLS = [NAME, _col("Class"), _col("Hosts"), _col("Address"), _col("Ports"), AGE]


def _pdb_row(p):
    spec, st = p.get("spec") or {}, p.get("status") or {}
    return [p["metadata"]["name"], spec.get("minAvailable", "N/A"),
            spec.get("maxUnavailable", "N/A"), st.get("disruptionsAllowed", 0), age(p)]


PDB_COLS = [NAME, _col("Min Available"), _col("Max Unavailable"),
            _col("Allowed Disruptions", "integer"), AGE]


def _ns_row(n):
    return [n["metadata"]["name"], (n.get("status") or {}).get("phase", "Active"), age(n)]


def _ep_row(e):
    addrs = []
    for s in e.get("subsets") or []:
        for a in s.get("addresses") or []:
            for p in s.get("ports") or [{}]:
                addrs.append("%s:%s" % (a.get("ip"), p.get("port", "")))
    return [e["metadata"]["name"], ",".join(addrs[:3]) + (" + %d more..." % (len(addrs) - 3)
                                                        if len(addrs) > 3 else "") or "<none>",
            age(e)]


def _lease_row(l):
    return [l["metadata"]["name"], (l.get("spec") or {}).get("holderIdentity") or "", age(l)]


def _cert_row(c):
    ready = _cond(c, "Ready") or {}
    spec = c.get("spec") or {}
    return [c["metadata"]["name"], ready.get("status", ""), spec.get("secretName", ""),
            (spec.get("issuerRef") or {}).get("name", ""), ready.get("message", ""),
            age(c)]


def _cr_row(c):
    g = lambda t: (_cond(c, t) or {}).get("status", "")
    spec = c.get("spec") or {}
    return [c["metadata"]["name"], g("Approved"), g("Denied"), g("Ready"),
            (spec.get("issuerRef") or {}).get("name", ""), spec.get("username", ""),
            (_cond(c, "Ready") or {}).get("message", ""), age(c)]


def _issuer_row(c):
    ready = _cond(c, "Ready") or {}
    return [c["metadata"]["name"], ready.get("status", ""), ready.get("message", ""),
            age(c)]


CRD_AGE = AGE

TABLES = {
    ("", "pods"): (POD_COLS, _pod_row),
    ("apps", "deployments"): (DEPLOY_COLS, _deploy_row),
    ("apps", "replicasets"): (RS_COLS, _rs_row),
    ("apps", "statefulsets"): (STS_COLS, _sts_row),
    ("autoscaling", "horizontalpodautoscalers"): (HPA_COLS, _hpa_row),
    ("", "nodes"): (NODE_COLS, _node_row),
    ("", "events"): (EVENT_COLS, _event_row),
    ("", "services"): (SVC_COLS, _svc_row),
    ("", "secrets"): ([NAME, _col("Type"), _col("Data", "integer"), AGE], _secret_row),
    ("", "configmaps"): ([NAME, _col("Data", "integer"), AGE], _cm_row),
    ("", "namespaces"): ([NAME, _col("Status"), AGE], _ns_row),
    ("", "endpoints"): ([NAME, _col("Endpoints"), AGE], _ep_row),
    ("batch", "jobs"): (JOB_COLS, _job_row),
    ("batch", "cronjobs"): (CJ_COLS, _cj_row),
    ("networking.k8s.io", "ingresses"): (ING_COLS, _ing_row),
    ("policy", "poddisruptionbudgets"): (PDB_COLS, _pdb_row),
    ("coordination.k8s.io", "leases"): ([NAME, _col("Holder"), AGE], _lease_row),
    ("cert-manager.io", "certificates"): (
        [NAME, _col("Ready"), _col("Secret"), _col("Issuer", priority=1),
         _col("Status", priority=1), CRD_AGE], _cert_row),
    ("cert-manager.io", "certificaterequests"): (
        [NAME, _col("Approved"), _col("Denied"), _col("Ready"), _col("Issuer"),
         _col("Requester"), _col("Status", priority=1), CRD_AGE], _cr_row),
    ("cert-manager.io", "issuers"): ([NAME, _col("Ready"), _col("Status", priority=1), CRD_AGE],
                                     _issuer_row),
    ("cert-manager.io", "clusterissuers"): (
        [NAME, _col("Ready"), _col("Status", priority=1), CRD_AGE], _issuer_row),
}


def _partial(obj):
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def table(skey, items, rv, include="Metadata", version="v1", cont=None):
    cols, rowfn = TABLES.get(skey, ([NAME, AGE], lambda o: [o["metadata"]["name"], age(o)]))
    rows = []
    for obj in items:
        row = {"cells": rowfn(obj)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    meta = {"resourceVersion": str(rv)}
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": "meta.k8s.io/%s" % version, "metadata": meta,
            "columnDefinitions": cols, "rows": rows}
