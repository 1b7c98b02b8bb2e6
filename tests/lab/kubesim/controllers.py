"""The controllers of one cluster, run by a single loop woken by store changes and timers:
scheduler + kubelet (pods), ReplicaSet, Deployment, StatefulSet, Job, CronJob (status only),
HPA, PDB, Endpoints, garbage collector, node cordon events, cert-manager."""
import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import traceback

from . import metrics
from .cluster import SKEY
from .selectors import match_labels, selector_to_reqs
from .store import now_iso

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
LAB_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/lab
SHELL_SEPARATORS = ("&&", "||", ";", "|", "&")


def migration_args(cmd):
    """The arguments given to ``apex-migrate`` in a container's command + args, or None when
    it does not run apex-migrate: ``["./apex-migrate", "up"]`` -> ``["up"]``,
    ``command: [apex-migrate], args: [status]`` -> ``["status"]``, ``["sh", "-c",
    "apex-migrate up --source /m && echo ok"]`` -> ``["up", "--source", "/m"]``."""
    import shlex
    tokens = []
    for arg in cmd:
        if "apex-migrate" in arg and any(ch.isspace() for ch in arg):
            try:
                tokens.extend(shlex.split(arg))
            except ValueError:
                tokens.extend(arg.split())
        else:
            tokens.append(arg)
    for i, tok in enumerate(tokens):
        if tok.rsplit("/", 1)[-1] == "apex-migrate":
            rest = []
            for t in tokens[i + 1:]:
                if t in SHELL_SEPARATORS:
                    break
                rest.append(t)
            return rest
    return None
_ALPHA = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(tpl):
    tpl = copy.deepcopy(tpl)
    ((tpl.get("metadata") or {}).get("labels") or {}).pop(HASH_LABEL, None)
    digest = hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).digest()
    return "".join(_ALPHA[b % len(_ALPHA)] for b in digest[:10])


def _strip_hash(tpl):
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


def _active(pod):
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


# ------------------------------------------------------------------------------ cron
_CRON_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                 "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
                 "@annually": "0 0 1 1 *"}


def _cron_field(text, lo, hi):
    values = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
        if part in ("*", "?"):
            a, b = lo, hi
        elif "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
        else:
            a = b = int(part)
            if step != 1:
                b = hi
        if a < lo or b > hi or a > b:
            raise ValueError("cron field out of range: %s" % text)
        values.update(range(a, b + 1, step))
    return values


def cron_latest(schedule, after, until, first=False):
    """The latest (or, with first, the earliest) schedule time t with after < t <= until
    (epoch seconds, UTC, minute resolution); None if there is none. Scans at most 8 days."""
    sched = _CRON_ALIASES.get(schedule.strip(), schedule)
    parts = sched.split()
    if len(parts) != 5:
        raise ValueError("invalid schedule %r" % schedule)
    minute, hour = _cron_field(parts[0], 0, 59), _cron_field(parts[1], 0, 23)
    dom, month = _cron_field(parts[2], 1, 31), _cron_field(parts[3], 1, 12)
    dow = {d % 7 for d in _cron_field(parts[4], 0, 7)}
    dom_any, dow_any = parts[2] in ("*", "?"), parts[4] in ("*", "?")
    start = int(after // 60) * 60 + 60
    end = min(until, after + 8 * 86400)
    found = None
    t = start
    while t <= end:
        tm = time.gmtime(t)
        day_ok = (tm.tm_mday in dom) if dow_any else (
            ((tm.tm_wday + 1) % 7 in dow) if dom_any else
            (tm.tm_mday in dom or (tm.tm_wday + 1) % 7 in dow))
        if tm.tm_mon in month and day_ok and tm.tm_hour in hour and tm.tm_min in minute:
            if first:
                return t
            found = t
        t += 60
    return found


# ------------------------------------------------------------------------------ eviction
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


# ------------------------------------------------------------------------------ loop
class Controllers:
    def __init__(self, cluster, config, after_pass=None, pki=None):
        self.c = cluster
        self.cfg = config
        self.after_pass = after_pass
        self.pki = pki
        self.stopped = False
        self.pod_t0 = {}          # pod uid -> monotonic time it was scheduled
        self.pod_events = set()   # (uid, what) already reported
        self.pod_stable = {}      # pod uid -> resourceVersion at which the kubelet had no work
        self.pod_names = {}       # pod uid -> (namespace, name)
        self.progress = {}        # deployment uid -> (signature, monotonic)
        self.hpa_last = {}        # hpa uid -> monotonic of last evaluation
        self.hpa_recs = {}        # hpa uid -> [(monotonic, recommendation)]
        self.cron_next = {}       # (cronjob uid, schedule, last schedule) -> next run (epoch)
        self.errors_seen = set()
        self.jobs_running = {}    # pod uid -> thread
        self.job_results = {}     # pod uid -> (exit code, finished iso)
        self.timers = []
        self.thread = threading.Thread(target=self.run, name="controllers-" + cluster.name,
                                       daemon=True)
        self.passes = 0

    # -------------------------------------------------------------- driver
    def start(self):
        self.thread.start()

    def wake_at(self, t):
        self.timers.append(t)

    def run(self):
        store = self.c.store
        seen = -1
        while not self.stopped:
            with self.c.lock:
                now = time.monotonic()
                nxt = min(self.timers) if self.timers else now + 1.0
                if store.rv == seen and nxt > now:
                    store.cond.wait(min(nxt - now, 1.0))
                seen = store.rv
            self.timers = [t for t in self.timers if t > time.monotonic()]
            try:
                self.reconcile()
                self.passes += 1
            except Exception as exc:
                if str(exc) not in self.errors_seen:
                    self.errors_seen.add(str(exc))
                    traceback.print_exc(file=sys.stderr)
                time.sleep(0.2)
            if self.after_pass:
                try:
                    self.after_pass()
                except Exception:
                    traceback.print_exc(file=sys.stderr)

    def reconcile(self):
        steps = (self.gc, self.nodes, self.schedule_and_run_pods, self.deployments,
                 self.replicasets, self.statefulsets, self.jobs, self.cronjobs, self.hpas,
                 self.pdbs, self.endpoints)
        failed = []
        with self.c.lock:
            for step in steps:
                try:  # one controller tripping over an odd object must not stop the others
                    step()
                except Exception:
                    failed.append(step.__name__)
                    text = traceback.format_exc()
                    if text not in self.errors_seen:  # each distinct failure logged once
                        if len(self.errors_seen) > 100:
                            self.errors_seen.clear()
                        self.errors_seen.add(text)
                        sys.stderr.write(text)
        if self.pki is not None:
            from . import certmanager
            certmanager.reconcile(self)
        if failed:
            raise RuntimeError("controllers failed: %s" % ", ".join(failed))

    # -------------------------------------------------------------- garbage collector
    def gc(self):
        store = self.c.store
        for skey, obj in store.all_objects():
            if True:
                meta = obj["metadata"]
                refs = meta.get("ownerReferences")
                if refs and all(store.by_uid(r.get("uid")) is None for r in refs):
                    store.remove(skey, meta.get("namespace", ""), meta["name"])
                    continue
                if meta.get("deletionTimestamp") and "foregroundDeletion" in (
                        meta.get("finalizers") or []):
                    deps = self.c.dependents(meta["uid"])
                    for d in deps:
                        dm = d["metadata"]
                        dskey = SKEY.get(d["kind"])
                        if dskey and not dm.get("deletionTimestamp"):
                            store.remove(dskey, dm.get("namespace", ""), dm["name"])
                    if not self.c.dependents(meta["uid"]):
                        def drop(o):
                            o["metadata"]["finalizers"] = [
                                f for f in o["metadata"]["finalizers"] if f != "foregroundDeletion"]
                        self.c.mutate(skey, meta.get("namespace", ""), meta["name"], drop)

    # -------------------------------------------------------------- nodes
    def nodes(self):
        for node in self.c.store.list(NODES):
            uid = node["metadata"]["uid"]
            cordoned = bool((node.get("spec") or {}).get("unschedulable"))
            key = (uid, "cordoned")
            if cordoned and key not in self.pod_events:
                self.pod_events.add(key)
                self.c.event(node, "NodeNotSchedulable", "Node %s status is now: "
                             "NodeNotSchedulable" % node["metadata"]["name"], component="kubelet")
            elif not cordoned and key in self.pod_events:
                self.pod_events.discard(key)
                self.c.event(node, "NodeSchedulable", "Node %s status is now: NodeSchedulable"
                             % node["metadata"]["name"], component="kubelet")

    # -------------------------------------------------------------- scheduler + kubelet
    def _pick_node(self, pods_by_node):
        best = None
        for node in self.c.store.list(NODES):
            if (node.get("spec") or {}).get("unschedulable"):
                continue
            ready = get_condition(node, "Ready")
            if not ready or ready.get("status") != "True":
                continue
            name = node["metadata"]["name"]
            load = pods_by_node.get(name, 0)
            if best is None or (load, name) < best[0]:
                best = ((load, name), node)
        return best[1] if best else None

    def schedule_and_run_pods(self):
        now = time.monotonic()
        delay = self.cfg.pod_ready_delay
        pods = self.c.store.list(PODS)
        pods_by_node = {}
        for p in pods:
            n = p["spec"].get("nodeName")
            if n and _active(p):
                pods_by_node[n] = pods_by_node.get(n, 0) + 1
        live = {p["metadata"]["uid"] for p in pods}
        for uid in list(self.pod_t0):
            if uid not in live:
                self.pod_t0.pop(uid, None)
                self.pod_stable.pop(uid, None)
                self.job_results.pop(uid, None)
                self.jobs_running.pop(uid, None)
                where = self.pod_names.pop(uid, None)
                if where:  # a pod's logs go with the pod (a new pod of the same name starts empty)
                    for key in [k for k in self.c.logs if k[:2] == where]:
                        self.c.logs.pop(key, None)
                        self.c.prev_logs.pop(key, None)
        for pod in pods:
            meta = pod["metadata"]
            uid = meta["uid"]
            if meta.get("deletionTimestamp"):
                continue
            spec = pod["spec"]
            st = pod.get("status") or {}
            if not spec.get("nodeName"):
                node = self._pick_node(pods_by_node)
                if node is None:
                    if (uid, "unsched") not in self.pod_events:
                        self.pod_events.add((uid, "unsched"))
                        nn = len(self.c.store.list(NODES))
                        msg = "0/%d nodes are available: %d node(s) were unschedulable." % (nn, nn)
                        self.c.event(pod, "FailedScheduling", msg, "Warning", "default-scheduler")

                        def unsched(p, msg=msg):
                            p["status"]["phase"] = "Pending"
                            set_condition(p["status"].setdefault("conditions", []),
                                          "PodScheduled", "False", "Unschedulable", msg)
                        self.c.mutate(PODS, meta["namespace"], meta["name"], unsched)
                    continue
                nname = node["metadata"]["name"]
                pods_by_node[nname] = pods_by_node.get(nname, 0) + 1
                host_ip = next((a["address"] for a in (node.get("status") or {}).get(
                    "addresses") or [] if a.get("type") == "InternalIP"), "10.0.0.1")

                def bind(p, nname=nname, host_ip=host_ip):
                    p["spec"]["nodeName"] = nname
                    s = p.setdefault("status", {})
                    s["phase"] = "Pending"
                    s["hostIP"] = host_ip
                    s["hostIPs"] = [{"ip": host_ip}]
                    conds = s.setdefault("conditions", [])
                    set_condition(conds, "PodScheduled", "True", None, None)
                    for c in conds:
                        if c["type"] == "PodScheduled":
                            c.pop("reason", None)
                            c.pop("message", None)
                pod = self.c.mutate(PODS, meta["namespace"], meta["name"], bind)
                self.c.event(pod, "Scheduled", "Successfully assigned %s/%s to %s" % (
                    meta["namespace"], meta["name"], nname), component="default-scheduler")
                self.pod_t0[uid] = now
            t0 = self.pod_t0.setdefault(uid, now)
            self.pod_names[uid] = (meta["namespace"], meta["name"])
            if st.get("phase") in ("Succeeded", "Failed"):
                continue
            if self.pod_stable.get(uid) == meta["resourceVersion"]:
                continue
            ntimers = len(self.timers)
            wrote = self._kubelet(pod, now - t0, delay, t0)
            if not wrote and len(self.timers) == ntimers and uid not in self.jobs_running:
                self.pod_stable[uid] = meta["resourceVersion"]


    def _resolve_env(self, pod, container):
        """Container env with secretKeyRef/configMapKeyRef resolved; raises LookupError."""
        import base64
        env = {}
        ns = pod["metadata"]["namespace"]
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e.get("value", ""))
                continue
            vf = e.get("valueFrom") or {}
            for kind, skey in (("secretKeyRef", ("", "secrets")),
                               ("configMapKeyRef", ("", "configmaps"))):
                ref = vf.get(kind)
                if not ref:
                    continue
                obj = self.c.store.get(skey, ns, ref.get("name"))
                word = "secret" if kind == "secretKeyRef" else "configmap"
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise LookupError('%s "%s" not found' % (word, ref.get("name")))
                data = obj.get("data") or {}
                if ref.get("key") not in data:
                    if ref.get("optional"):
                        continue
                    raise LookupError("couldn't find key %s in %s %s/%s" % (
                        ref.get("key"), word.capitalize(), ns, ref.get("name")))
                val = data[ref["key"]]
                env[e["name"]] = base64.b64decode(val).decode("utf-8", "replace") \
                    if kind == "secretKeyRef" else val
        return env

    def _start_lines(self, pod, container):
        image = container.get("image", "")
        name = pod["metadata"]["name"]
        tag = image_tag(image)
        lines = ["starting %s (image %s)" % (container.get("name"), image)]
        if "apex/api" in image:
            lines += ["INFO apex-api version=%s listening on 0.0.0.0:8080" % tag,
                      "INFO database pool ready (max_connections=%s)" % next(
                          (e.get("value") for e in container.get("env") or []
                           if e.get("name") == "APEX__DATABASE__MAX_CONNECTIONS"), "10"),
                      "INFO circuit_breaker state=closed provider=openai",
                      "INFO circuit_breaker state=closed provider=anthropic"]
        elif "apex/worker" in image:
            lines += ["INFO apex-worker version=%s concurrency=%s" % (tag, next(
                (e.get("value") for e in container.get("env") or []
                 if e.get("name") == "APEX__WORKER__CONCURRENCY"), "2")),
                "INFO apex-worker consuming apex:tasks:queue"]
        elif "postgres" in image:
            lines += ["LOG:  database system is ready to accept connections"]
        elif "redis" in image:
            lines += ["* Ready to accept connections tcp"]
        elif "ingress-nginx" in image:
            lines += ["I0000 controller started, syncing ingress apex/apex"]
        else:
            lines += ["%s started" % name]
        return lines

    def _probe_delay(self, container):
        probe = container.get("readinessProbe") or {}
        try:
            return float(probe.get("initialDelaySeconds") or 0) * self.cfg.time_factor
        except (TypeError, ValueError):
            return 0.0

    def _kubelet(self, pod, elapsed, delay, t0):
        meta = pod["metadata"]
        uid = meta["uid"]
        ns, name = meta["namespace"], meta["name"]
        f = faults(pod)
        is_job = any(r.get("kind") == "Job" for r in meta.get("ownerReferences") or [])
        containers = pod["spec"].get("containers") or []
        st = copy.deepcopy(pod.get("status") or {})
        st.setdefault("conditions", [])
        if elapsed < delay:
            self.wake_at(t0 + delay)
            if not st.get("containerStatuses"):
                st["phase"] = "Pending"
                st["startTime"] = st.get("startTime") or now_iso()
                st["containerStatuses"] = [{
                    "name": c["name"], "image": c.get("image"), "imageID": "", "ready": False,
                    "restartCount": 0, "started": False,
                    "state": {"waiting": {"reason": "ContainerCreating"}}} for c in containers]
                for ctype in ("Initialized", "PodReadyToStartContainers"):
                    set_condition(st["conditions"], ctype, "True", None, None)
                set_condition(st["conditions"], "ContainersReady", "False", "ContainersNotReady",
                              "containers with unready status: [%s]" % " ".join(
                                  c["name"] for c in containers))
                set_condition(st["conditions"], "Ready", "False", "ContainersNotReady",
                              "containers with unready status: [%s]" % " ".join(
                                  c["name"] for c in containers))
                return self._write_status(pod, st)
            return
        # container configuration (env from secrets)
        try:
            envs = [self._resolve_env(pod, c) for c in containers]
        except LookupError as exc:
            if (uid, "cfgerr") not in self.pod_events:
                self.pod_events.add((uid, "cfgerr"))
                self.c.event(pod, "Failed", "Error: %s" % exc, "Warning", "kubelet")
            st["phase"] = "Pending"
            st["containerStatuses"] = [{
                "name": c["name"], "image": c.get("image"), "imageID": "", "ready": False,
                "restartCount": 0, "started": False,
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": str(exc)}}} for c in containers]
            self.wake_at(time.monotonic() + max(delay, 0.5))  # retry: the secret may appear
            return self._write_status(pod, st)
        if (uid, "started") not in self.pod_events:
            self.pod_events.add((uid, "started"))
            for c in containers:
                self.c.event(pod, "Pulled", 'Container image "%s" already present on machine'
                             % c.get("image"), component="kubelet")
                self.c.event(pod, "Created", "Created container %s" % c["name"],
                             component="kubelet")
                self.c.event(pod, "Started", "Started container %s" % c["name"],
                             component="kubelet")
                if not is_job:  # a Job's log is what its command prints
                    for line in self._start_lines(pod, c):
                        self.c.add_log(ns, name, c["name"], line)
        ip_n = int(hashlib.md5(uid.encode()).hexdigest()[:4], 16)
        st["podIP"] = st.get("podIP") or "10.244.%d.%d" % (ip_n % 250, ip_n // 250 % 250 + 2)
        st["podIPs"] = [{"ip": st["podIP"]}]
        st["phase"] = "Running"
        ready_all = True
        cstats = []
        for c, env in zip(containers, envs):
            old = next((cs for cs in st.get("containerStatuses") or []
                        if cs.get("name") == c["name"]), {})
            running_since = ((old.get("state") or {}).get("running") or {}).get("startedAt") \
                or now_iso()
            cs = {"name": c["name"], "image": c.get("image"),
                  "imageID": "docker.io/%s@sha256:%s" % (c.get("image", "").split(":")[0],
                                                        hashlib.sha256(c.get("image", "").encode())
                                                        .hexdigest()),
                  "containerID": "containerd://" + hashlib.sha256(
                      (uid + c["name"]).encode()).hexdigest(),
                  "restartCount": 0, "started": True, "ready": True,
                  "state": {"running": {"startedAt": running_since}}}
            if is_job:
                res = self.job_results.get(uid)
                if res is None:
                    self._start_job_container(pod, c, env)
                    cs["ready"] = True
                else:
                    code, finished = res
                    cs["ready"] = False
                    cs["started"] = False
                    cs["state"] = {"terminated": {
                        "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                        "startedAt": running_since, "finishedAt": finished,
                        "containerID": cs["containerID"]}}
            elif f["crashloop"] or f["oom"]:
                interval = self.cfg.crash_interval
                restarts = 1 + int((elapsed - delay) / interval)
                self.wake_at(t0 + delay + (restarts) * interval)
                reason = "OOMKilled" if f["oom"] else "Error"
                code = 137 if f["oom"] else 1
                cs.update({"ready": False, "started": False, "restartCount": restarts,
                           "state": {"waiting": {"reason": "CrashLoopBackOff", "message":
                                                 "back-off %ds restarting failed container=%s "
                                                 "pod=%s_%s(%s)" % (min(10 * 2 ** restarts, 300),
                                                                    c["name"], name, ns, uid)}},
                           "lastState": {"terminated": {"exitCode": code, "reason": reason,
                                                        "startedAt": running_since,
                                                        "finishedAt": now_iso(),
                                                        "containerID": cs["containerID"]}}})
                if old.get("restartCount") != restarts:
                    key = (ns, name, c["name"])
                    with self.c.lock:
                        self.c.prev_logs[key] = list(self.c.logs.get(key, [])) + [
                            (now_iso(), "fatal: out of memory: allocation failed" if f["oom"]
                             else "ERROR panic: failed to initialise: exit status 1")]
                    self.c.add_log(ns, name, c["name"], "starting %s (restart %d)" % (
                        c["name"], restarts))
                    self.c.event(pod, "BackOff", "Back-off restarting failed container %s in "
                                 "pod %s_%s(%s)" % (c["name"], name, ns, uid), "Warning",
                                 "kubelet")
                else:
                    cs["lastState"]["terminated"]["finishedAt"] = \
                        old["lastState"]["terminated"]["finishedAt"]
            elif self._probe_delay(c) > elapsed - delay:
                # readinessProbe.initialDelaySeconds: running, not ready yet (as the kubelet does)
                cs["ready"] = False
                self.wake_at(t0 + delay + self._probe_delay(c))
            elif f["never_ready"]:
                cs["ready"] = False
                if (uid, "unhealthy") not in self.pod_events:
                    self.pod_events.add((uid, "unhealthy"))
                    self.c.event(pod, "Unhealthy", "Readiness probe failed: HTTP probe failed "
                                 "with statuscode: 503", "Warning", "kubelet")
            ready_all = ready_all and cs["ready"]
            cstats.append(cs)
        st["containerStatuses"] = cstats
        if is_job and all("terminated" in cs["state"] for cs in cstats):
            ok = all(cs["state"]["terminated"]["exitCode"] == 0 for cs in cstats)
            st["phase"] = "Succeeded" if ok else "Failed"
            ready_all = False
            set_condition(st["conditions"], "Ready", "False", "PodCompleted", "")
            set_condition(st["conditions"], "ContainersReady", "False", "PodCompleted", "")
            return self._write_status(pod, st)
        unready = [cs["name"] for cs in cstats if not cs["ready"]]
        if ready_all:
            set_condition(st["conditions"], "ContainersReady", "True", None, None)
            set_condition(st["conditions"], "Ready", "True", None, None)
            for c in st["conditions"]:
                if c["type"] in ("Ready", "ContainersReady"):
                    c.pop("reason", None)
                    c.pop("message", None)
        else:
            msg = "containers with unready status: [%s]" % " ".join(unready)
            set_condition(st["conditions"], "ContainersReady", "False", "ContainersNotReady", msg)
            set_condition(st["conditions"], "Ready", "False", "ContainersNotReady", msg)
        return self._write_status(pod, st)

    def _write_status(self, pod, st):
        if st != pod.get("status"):
            def put(p, st=st):
                p["status"] = st
            self.c.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], put,
                          sub="status")
            return True
        return False

    # -------------------------------------------------------------- job pods
    def _start_job_container(self, pod, container, env):
        uid = pod["metadata"]["uid"]
        if uid in self.jobs_running:
            return
        cmd = list(container.get("command") or []) + list(container.get("args") or [])
        image = container.get("image", "")
        ns, name, cname = pod["metadata"]["namespace"], pod["metadata"]["name"], container["name"]
        f = faults(pod)
        cluster = self.c

        def finish(code):
            with cluster.lock:
                self.job_results[uid] = (code, now_iso())
                cluster.store.rv += 0
                cluster.store.cond.notify_all()
            self.wake_at(time.monotonic())

        def run_migration():
            penv = dict(os.environ)
            penv.update(env)
            penv["PYTHONPATH"] = LAB_ROOT + os.pathsep + penv.get("PYTHONPATH", "")
            # the container's own arguments (up, status, --source ...); DATABASE_URL from the
            # container's env is the database, as for the real apex-migrate (sqlx)
            argv = [sys.executable, "-m", "twin", "migrate"] + migrate_args
            if env.get("DATABASE_URL") and not any(a.startswith("--dsn") for a in migrate_args):
                argv += ["--dsn", env["DATABASE_URL"]]
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=penv, cwd=LAB_ROOT)
                for raw in proc.stdout:
                    cluster.add_log(ns, name, cname, raw.decode("utf-8", "replace").rstrip("\n"))
                    with cluster.lock:
                        cluster.store.cond.notify_all()
                code = proc.wait()
            except OSError as exc:
                cluster.add_log(ns, name, cname, "error: %s" % exc)
                code = 127
            finish(code)

        def run_generic():
            time.sleep(self.cfg.job_duration)
            if f["fail"]:
                cluster.add_log(ns, name, cname, "error: job failed (fault image tag)")
                finish(1)
            else:
                cluster.add_log(ns, name, cname, "%s: done" % " ".join(cmd) if cmd else "done")
                finish(0)

        migrate_args = migration_args(cmd) if image.startswith("apex/api") else None
        is_migration = migrate_args is not None
        target = run_migration if is_migration else run_generic
        t = threading.Thread(target=target, daemon=True, name="job-" + name)
        self.jobs_running[uid] = t
        t.start()

    # -------------------------------------------------------------- replicasets
    def replicasets(self):
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
            pods = [p for p in pods_by_owner.get(meta["uid"], []) if _active(p)]
            if len(pods) < want:
                for _ in range(want - len(pods)):
                    self._create_pod_from(rs, spec["template"], meta["name"] + "-")
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
            pods = [p for p in pods_by_owner.get(meta["uid"], []) if _active(p)
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

    def _create_pod_from(self, owner, template, prefix, name=None, extra_labels=None,
                         extra_spec=None):
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
        from . import registry
        created = self.c.create(registry.lookup("", "v1", "pods"), pod)
        comp = {"ReplicaSet": "replicaset-controller", "StatefulSet": "statefulset-controller",
                "Job": "job-controller"}.get(owner["kind"], "controller")
        verb = "create Pod %s in StatefulSet %s successful" % (
            created["metadata"]["name"], owner["metadata"]["name"]) if owner["kind"] == \
            "StatefulSet" else "Created pod: %s" % created["metadata"]["name"]
        self.c.event(owner, "SuccessfulCreate", verb, component=comp)
        return created

    # -------------------------------------------------------------- deployments
    def deployments(self):
        rs_by_owner = {}
        for rs in self.c.store.list(RS):
            cu = controller_uid(rs)
            if cu:
                rs_by_owner.setdefault(cu, []).append(rs)
        for d in self.c.store.list(DEPLOY):
            if d["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._deployment(d, rs_by_owner.get(d["metadata"]["uid"], []))
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def _scale_rs(self, d, rs, n, why=None):
        old = rs["spec"].get("replicas", 0)
        if old == n:
            return rs
        verb = "up" if n > old else "down"

        def put(o):
            o["spec"]["replicas"] = n
            ann = o["metadata"].setdefault("annotations", {})
            ann["deployment.kubernetes.io/desired-replicas"] = str(d["spec"].get("replicas", 1))
            ann["deployment.kubernetes.io/max-replicas"] = str(
                d["spec"].get("replicas", 1) + self._surge(d))
        new = self.c.mutate(RS, rs["metadata"]["namespace"], rs["metadata"]["name"], put)
        self.c.event(d, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d" % (
            verb, rs["metadata"]["name"], old, n), component="deployment-controller")
        return new

    def _surge(self, d):
        strat = d["spec"].get("strategy") or {}
        if strat.get("type") == "Recreate":
            return 0
        ru = strat.get("rollingUpdate") or {}
        return int_or_percent(ru.get("maxSurge", "25%"), d["spec"].get("replicas", 1), True)

    def _unavail(self, d):
        strat = d["spec"].get("strategy") or {}
        if strat.get("type") == "Recreate":
            return 0
        ru = strat.get("rollingUpdate") or {}
        replicas = d["spec"].get("replicas", 1)
        mu = int_or_percent(ru.get("maxUnavailable", "25%"), replicas, False)
        if mu == 0 and self._surge(d) == 0:
            mu = 1
        return min(mu, replicas)

    def _deployment(self, d, owned):
        meta, spec = d["metadata"], d["spec"]
        ns = meta["namespace"]
        replicas = spec.get("replicas", 1)
        tpl = spec["template"]
        want_tpl = _strip_hash(tpl)
        new_rs = None
        for rs in owned:
            if _strip_hash(rs["spec"]["template"]) == want_tpl:
                new_rs = rs
                break
        revs = [int((rs["metadata"].get("annotations") or {}).get(REV_ANN, "0") or 0)
                for rs in owned]
        max_rev = max(revs) if revs else 0
        olds = [rs for rs in owned if rs is not new_rs]
        created_new = False
        copy_ann = {k: v for k, v in (meta.get("annotations") or {}).items()
                    if k not in (REV_ANN, "kubectl.kubernetes.io/last-applied-configuration",
                                 "deployment.kubernetes.io/revision-history")
                    and not k.startswith("kubesim.apex.dev/")}
        if new_rs is None and not spec.get("paused"):
            h = template_hash(tpl)
            rs_tpl = copy.deepcopy(tpl)
            rs_tpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            sel = copy.deepcopy(spec["selector"])
            sel.setdefault("matchLabels", {})[HASH_LABEL] = h
            labels = dict((tpl.get("metadata") or {}).get("labels") or {})
            labels[HASH_LABEL] = h
            ann = dict(copy_ann)
            ann.update({REV_ANN: str(max_rev + 1),
                        "deployment.kubernetes.io/desired-replicas": str(replicas),
                        "deployment.kubernetes.io/max-replicas": str(replicas + self._surge(d))})
            # the first RS of a deployment starts at full size (nothing to roll from)
            start = 0 if any(rs["spec"].get("replicas", 0) for rs in olds) else replicas
            rs_obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                      "metadata": {"name": "%s-%s" % (meta["name"], h), "namespace": ns,
                                   "labels": labels, "annotations": ann,
                                   "ownerReferences": [owner_ref(d)]},
                      "spec": {"replicas": start, "selector": sel, "template": rs_tpl,
                               "minReadySeconds": spec.get("minReadySeconds", 0)}}
            if not rs_obj["spec"]["minReadySeconds"]:
                rs_obj["spec"].pop("minReadySeconds")
            from . import registry
            existing = self.c.store.get(RS, ns, rs_obj["metadata"]["name"])
            if existing is not None:
                return
            new_rs = self.c.create(registry.lookup("apps", "v1", "replicasets"), rs_obj)
            created_new = True
            if start:
                self.c.event(d, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d" % (
                new_rs["metadata"]["name"], start), component="deployment-controller")
        elif new_rs is not None:
            cur_rev = int((new_rs["metadata"].get("annotations") or {}).get(REV_ANN, "0") or 0)
            need = {}
            if cur_rev < max_rev:
                need[REV_ANN] = str(max_rev + 1)
                hist = (new_rs["metadata"].get("annotations") or {}).get(
                    "deployment.kubernetes.io/revision-history")
                need["deployment.kubernetes.io/revision-history"] = \
                    (hist + "," if hist else "") + str(cur_rev)
            for k, v in copy_ann.items():
                if (new_rs["metadata"].get("annotations") or {}).get(k) != v:
                    need[k] = v
            if need:
                def annot(o, need=need):
                    o["metadata"].setdefault("annotations", {}).update(need)
                new_rs = self.c.mutate(RS, ns, new_rs["metadata"]["name"], annot)
        # ---- scaling / rollout
        if new_rs is not None and not spec.get("paused"):
            strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
            active_olds = [rs for rs in olds if rs["spec"].get("replicas", 0) > 0]
            if strategy == "Recreate":
                if active_olds:
                    for rs in active_olds:
                        self._scale_rs(d, rs, 0)
                else:
                    pods_left = [p for p in self.c.store.list(PODS, ns)
                                 if controller_uid(p) in {r["metadata"]["uid"] for r in olds}]
                    if not pods_left:
                        new_rs = self._scale_rs(d, new_rs, replicas)
            elif not active_olds:
                new_rs = self._scale_rs(d, new_rs, replicas)
            else:
                surge, unavail = self._surge(d), self._unavail(d)
                all_rs = [new_rs] + active_olds
                total = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
                cur_new = new_rs["spec"].get("replicas", 0)
                if cur_new < replicas:
                    room = replicas + surge - total
                    if room > 0:
                        new_rs = self._scale_rs(d, new_rs, min(replicas, cur_new + room))
                elif cur_new > replicas:
                    new_rs = self._scale_rs(d, new_rs, replicas)
                # scale down old replica sets
                min_avail = replicas - unavail
                new_avail = (new_rs.get("status") or {}).get("availableReplicas", 0)
                all_rs = [new_rs] + active_olds
                all_pods = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
                new_unavail = new_rs["spec"].get("replicas", 0) - new_avail
                max_down = all_pods - min_avail - new_unavail
                if max_down > 0:
                    # first unhealthy replicas of old sets
                    for rs in sorted(active_olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                        if max_down <= 0:
                            break
                        have = rs["spec"].get("replicas", 0)
                        unhealthy = have - (rs.get("status") or {}).get("availableReplicas", 0)
                        cut = min(max_down, max(unhealthy, 0))
                        if cut > 0:
                            self._scale_rs(d, rs, have - cut)
                            max_down -= cut
                active_olds = [self.c.store.get(RS, ns, r["metadata"]["name"]) for r in active_olds]
                active_olds = [r for r in active_olds if r and r["spec"].get("replicas", 0) > 0]
                avail_total = sum((rs.get("status") or {}).get("availableReplicas", 0)
                                  for rs in [new_rs] + active_olds)
                down = avail_total - min_avail
                for rs in sorted(active_olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                    if down <= 0:
                        break
                    have = rs["spec"].get("replicas", 0)
                    cut = min(have, down)
                    self._scale_rs(d, rs, have - cut)
                    down -= cut
        elif spec.get("paused") and new_rs is not None:
            if new_rs["spec"].get("replicas", 0) != replicas and not any(
                    rs["spec"].get("replicas", 0) for rs in olds):
                new_rs = self._scale_rs(d, new_rs, replicas)
        # ---- history cleanup
        limit = spec.get("revisionHistoryLimit", 10)
        dead = [rs for rs in olds if rs["spec"].get("replicas", 0) == 0 and
                (rs.get("status") or {}).get("replicas", 0) == 0]
        if len(dead) > limit:
            dead.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(REV_ANN, 0)))
            for rs in dead[:len(dead) - limit]:
                self.c.store.remove(RS, ns, rs["metadata"]["name"])
        self._deployment_status(d, new_rs, created_new)

    def _deployment_status(self, d, new_rs, created_new):
        meta, spec = d["metadata"], d["spec"]
        ns = meta["namespace"]
        owned = [rs for rs in self.c.store.list(RS, ns) if controller_uid(rs) == meta["uid"]]
        if new_rs is not None:
            new_rs = self.c.store.get(RS, ns, new_rs["metadata"]["name"]) or new_rs
        replicas = spec.get("replicas", 1)
        tot = lambda f: sum((rs.get("status") or {}).get(f, 0) for rs in owned)
        st = {"observedGeneration": meta.get("generation", 1), "replicas": tot("replicas"),
              "updatedReplicas": (new_rs.get("status") or {}).get("replicas", 0) if new_rs else 0,
              "readyReplicas": tot("readyReplicas"), "availableReplicas": tot("availableReplicas")}
        st["unavailableReplicas"] = max(replicas - st["availableReplicas"], 0)
        st = {k: v for k, v in st.items() if v or k == "observedGeneration"}
        old_st = d.get("status") or {}
        conds = copy.deepcopy(old_st.get("conditions") or [])
        now = now_iso()
        min_avail = replicas - self._unavail(d)
        if st.get("availableReplicas", 0) >= min_avail:
            set_condition(conds, "Available", "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.", now,
                          update_time=get_condition({"status": {"conditions": conds}},
                                                    "Available") is None or
                          get_condition({"status": {"conditions": conds}},
                                        "Available")["status"] != "True")
        else:
            set_condition(conds, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", now,
                          update_time=(get_condition({"status": {"conditions": conds}},
                                                     "Available") or {}).get("status") != "False")
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        complete = new_rs is not None and st.get("updatedReplicas", 0) == replicas and \
            st.get("replicas", 0) == replicas and st.get("availableReplicas", 0) == replicas and \
            new_rs["spec"].get("replicas", 0) == replicas
        sig = (rs_name, st.get("updatedReplicas", 0), st.get("readyReplicas", 0),
               st.get("availableReplicas", 0), st.get("replicas", 0), replicas)
        mono = time.monotonic()
        prev = self.progress.get(meta["uid"])
        progressed = prev is None or prev[0] != sig
        if progressed:
            self.progress[meta["uid"]] = (sig, mono)
        last_progress = self.progress[meta["uid"]][1]
        pcond = get_condition({"status": {"conditions": conds}}, "Progressing")
        pds = spec.get("progressDeadlineSeconds", 600)
        if spec.get("paused"):
            set_condition(conds, "Progressing", "Unknown", "DeploymentPaused",
                          "Deployment is paused", now, update_time=True)
        elif complete:
            if not pcond or pcond.get("reason") != "NewReplicaSetAvailable":
                set_condition(conds, "Progressing", "True", "NewReplicaSetAvailable",
                              'ReplicaSet "%s" has successfully progressed.' % rs_name, now,
                              update_time=True)
        elif pcond and pcond.get("reason") == "ProgressDeadlineExceeded" and not progressed:
            pass
        elif mono - last_progress > pds * self.cfg.time_factor:
            set_condition(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                          'ReplicaSet "%s" has timed out progressing.' % rs_name, now,
                          update_time=True)
            self.c.event(d, "DeploymentRollback" if False else "ProgressDeadlineExceeded",
                         'Deployment "%s" has timed out progressing.' % meta["name"], "Warning",
                         "deployment-controller")
        else:
            if created_new:
                set_condition(conds, "Progressing", "True", "NewReplicaSetCreated",
                              'Created new replica set "%s"' % rs_name, now, update_time=True)
            elif progressed or not pcond or pcond.get("reason") not in (
                    "ReplicaSetUpdated", "NewReplicaSetCreated"):
                set_condition(conds, "Progressing", "True", "ReplicaSetUpdated",
                              'ReplicaSet "%s" is progressing.' % rs_name, now, update_time=True)
            self.wake_at(last_progress + pds * self.cfg.time_factor + 0.01)
        conds.sort(key=lambda c: {"Available": 0, "Progressing": 1}.get(c["type"], 2))
        st["conditions"] = conds
        rev = (new_rs["metadata"].get("annotations") or {}).get(REV_ANN) if new_rs else None
        if rev and (meta.get("annotations") or {}).get(REV_ANN) != rev:
            def annot(o, rev=rev):
                o["metadata"].setdefault("annotations", {})[REV_ANN] = rev
            d = self.c.mutate(DEPLOY, ns, meta["name"], annot)
        if st != (d.get("status") or {}):
            def put(o, st=st):
                o["status"] = st
            self.c.mutate(DEPLOY, ns, meta["name"], put, sub="status")

    # -------------------------------------------------------------- statefulsets
    def statefulsets(self):
        from . import registry
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
                    self._create_pod_from(s, spec["template"], None, name=pname, extra_labels={
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
            st = {k: v for k, v in st.items() if v or k in ("observedGeneration", "replicas",
                                                           "collisionCount", "availableReplicas")}
            if st != old:
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(STS, ns, name, put, sub="status")

    # -------------------------------------------------------------- jobs
    def jobs(self):
        for j in self.c.store.list(JOBS):
            meta, spec = j["metadata"], j["spec"]
            if meta.get("deletionTimestamp"):
                continue
            ns = meta["namespace"]
            st = copy.deepcopy(j.get("status") or {})
            finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                           for c in st.get("conditions") or [])
            pods = [p for p in self.c.store.list(PODS, ns) if controller_uid(p) == meta["uid"]]
            succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
            failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
            active = [p for p in pods if _active(p)]
            completions = spec.get("completions", 1)
            if not finished and not spec.get("suspend"):
                if succeeded >= completions:
                    now = now_iso()
                    conds = st.setdefault("conditions", [])
                    set_condition(conds, "SuccessCriteriaMet", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", now)
                    set_condition(conds, "Complete", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", now)
                    for c in conds:
                        c["lastProbeTime"] = now
                    st["completionTime"] = now
                    self.c.event(j, "Completed", "Job completed", component="job-controller")
                elif failed > spec.get("backoffLimit", 6):
                    now = now_iso()
                    conds = st.setdefault("conditions", [])
                    set_condition(conds, "FailureTarget", "True", "BackoffLimitExceeded",
                                  "Job has reached the specified backoff limit", now)
                    set_condition(conds, "Failed", "True", "BackoffLimitExceeded",
                                  "Job has reached the specified backoff limit", now)
                    for c in conds:
                        c["lastProbeTime"] = now
                    self.c.event(j, "BackoffLimitExceeded", "Job has reached the specified "
                                 "backoff limit", "Warning", "job-controller")
                elif len(active) < min(spec.get("parallelism", 1), completions - succeeded):
                    self._create_pod_from(j, spec["template"], meta["name"] + "-")
                    active = [p for p in self.c.store.list(PODS, ns)
                              if controller_uid(p) == meta["uid"] and _active(p)]
            st["startTime"] = st.get("startTime") or now_iso()
            st["active"] = len(active) if not finished else 0
            st["ready"] = sum(1 for p in active if pod_ready(p))
            st["succeeded"] = succeeded
            st["failed"] = failed
            st["terminating"] = 0
            st["uncountedTerminatedPods"] = {}
            for k in ("active", "succeeded", "failed"):
                if not st[k]:
                    st.pop(k)
            if st != (j.get("status") or {}):
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(JOBS, ns, meta["name"], put, sub="status")

    def cronjobs(self):
        for cj in self.c.store.list(CRONJOBS):
            try:
                self._cron_schedule(cj)
            except ValueError:
                pass
        for cj in self.c.store.list(CRONJOBS):
            ns = cj["metadata"]["namespace"]
            active = [{"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"],
                       "namespace": ns, "uid": j["metadata"]["uid"],
                       "resourceVersion": j["metadata"]["resourceVersion"]}
                      for j in self.c.store.list(JOBS, ns) if controller_uid(j) ==
                      cj["metadata"]["uid"] and not get_condition(j, "Complete")
                      and not get_condition(j, "Failed")]
            st = copy.deepcopy(cj.get("status") or {})
            if active:
                st["active"] = active
            else:
                st.pop("active", None)
            done = [j for j in self.c.store.list(JOBS, ns) if controller_uid(j) ==
                    cj["metadata"]["uid"] and get_condition(j, "Complete")]
            if done:
                st["lastSuccessfulTime"] = max(j["status"].get("completionTime", "") for j in done)
            if st != (cj.get("status") or {}):
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(CRONJOBS, ns, cj["metadata"]["name"], put, sub="status")

    def _cron_schedule(self, cj):
        """Create the Job of the latest missed schedule time (minute resolution, UTC)."""
        import calendar
        spec = cj.get("spec") or {}
        if spec.get("suspend"):
            return
        meta = cj["metadata"]
        st = cj.get("status") or {}
        since = st.get("lastScheduleTime") or meta["creationTimestamp"]
        start = calendar.timegm(time.strptime(since[:19], "%Y-%m-%dT%H:%M:%S"))
        now = time.time()
        key = (meta["uid"], spec.get("schedule", ""), since)
        nxt = self.cron_next.get(key)
        if nxt is None:
            nxt = cron_latest(spec.get("schedule", ""), start, start + 8 * 86400,
                              first=True) or float("inf")
            if len(self.cron_next) > 1000:
                self.cron_next.clear()
            self.cron_next[key] = nxt
        if nxt > now:
            if nxt != float("inf"):
                self.wake_at(time.monotonic() + max(nxt - now, 0.5))
            return
        due = cron_latest(spec.get("schedule", ""), start, now)
        if due is None:
            return
        ns = meta["namespace"]
        jobs = [j for j in self.c.store.list(JOBS, ns) if controller_uid(j) == meta["uid"]]
        active = [j for j in jobs if not get_condition(j, "Complete") and
                  not get_condition(j, "Failed")]
        policy = spec.get("concurrencyPolicy", "Allow")
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
        if active and policy == "Forbid":
            return
        if active and policy == "Replace":
            from . import registry
            for j in active:
                self.c.delete(registry.lookup("batch", "v1", "jobs"), ns, j["metadata"]["name"])
        from . import registry
        jt = copy.deepcopy(spec.get("jobTemplate") or {})
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "%s-%d" % (meta["name"], int(due // 60)), "namespace": ns,
                            "labels": dict((jt.get("metadata") or {}).get("labels") or {}),
                            "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp":
                                            iso},
                            "ownerReferences": [owner_ref(cj)]},
               "spec": jt.get("spec") or {}}
        if self.c.store.get(JOBS, ns, job["metadata"]["name"]) is None:
            self.c.create(registry.lookup("batch", "v1", "jobs"), job)
            self.c.event(cj, "SuccessfulCreate", "Created job %s" % job["metadata"]["name"],
                         component="cronjob-controller")

        def put(o, iso=iso):
            o.setdefault("status", {})["lastScheduleTime"] = iso
        self.c.mutate(CRONJOBS, ns, meta["name"], put, sub="status")
        # history limits
        for limit_key, cond in (("successfulJobsHistoryLimit", "Complete"),
                                ("failedJobsHistoryLimit", "Failed")):
            done = sorted((j for j in self.c.store.list(JOBS, ns)
                           if controller_uid(j) == meta["uid"] and get_condition(j, cond)),
                          key=lambda j: j["metadata"]["creationTimestamp"])
            limit = spec.get(limit_key, 3 if cond == "Complete" else 1)
            for j in done[:max(len(done) - limit, 0)]:
                self.c.delete(registry.lookup("batch", "v1", "jobs"), ns, j["metadata"]["name"],
                              propagation="Background")

    # -------------------------------------------------------------- HPA
    def hpas(self):
        now = time.monotonic()
        for h in self.c.store.list(HPA):
            uid = h["metadata"]["uid"]
            last = self.hpa_last.get(uid)
            gen_changed = (h.get("status") or {}).get("observedGeneration") != \
                h["metadata"].get("generation")
            if last is not None and now - last < self.cfg.hpa_sync and not gen_changed:
                self.wake_at(last + self.cfg.hpa_sync)
                continue
            self.hpa_last[uid] = now
            self.wake_at(now + self.cfg.hpa_sync)
            self._hpa(h)

    def _hpa(self, h):
        meta, spec = h["metadata"], h["spec"]
        ns = meta["namespace"]
        ref = spec.get("scaleTargetRef") or {}
        skey = {"Deployment": DEPLOY, "StatefulSet": STS, "ReplicaSet": RS}.get(ref.get("kind"))
        target = self.c.store.get(skey, ns, ref.get("name")) if skey else None
        st = copy.deepcopy(h.get("status") or {})
        conds = st.setdefault("conditions", [])
        now = now_iso()
        mn, mx = spec.get("minReplicas", 1), spec.get("maxReplicas", 1)
        target_util = None
        for m in spec.get("metrics") or []:
            if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu":
                target_util = (m["resource"].get("target") or {}).get("averageUtilization")
        if not spec.get("metrics"):
            target_util = 80
        if target is None:
            set_condition(conds, "AbleToScale", "False", "FailedGetScale",
                          'the HPA controller was unable to get the target\'s current scale: '
                          '%s "%s" not found' % ((ref.get("kind") or "").lower() + "s",
                                                 ref.get("name")), now)
            st.update({"currentReplicas": 0, "desiredReplicas": 0})
            self._hpa_status(h, st)
            return
        current = target["spec"].get("replicas", 1)
        util = metrics.effective_utilization(self.c, target)
        st["currentReplicas"] = (target.get("status") or {}).get("replicas", 0)
        if current == 0 and mn > 0:
            set_condition(conds, "AbleToScale", "True", "SucceededGetScale",
                          "the HPA controller was able to get the target's current scale", now)
            set_condition(conds, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero",
                          now)
            st["desiredReplicas"] = 0
            st.pop("currentMetrics", None)
            self._hpa_status(h, st)
            return
        desired = current
        reason = None
        if target_util:
            ratio = float(util) / float(target_util)
            if abs(ratio - 1.0) > 0.1:
                desired = int(math.ceil(current * ratio))
                reason = "cpu resource utilization (percentage of request) %s target" % (
                    "above" if ratio > 1 else "below")
                if ratio < 1:
                    reason = "All metrics below target"
        # scale-down stabilisation (behavior.scaleDown.stabilizationWindowSeconds, default
        # 300 s, scaled by the lab's time factor): use the highest recommendation in the window
        window = (((spec.get("behavior") or {}).get("scaleDown") or {}).get(
            "stabilizationWindowSeconds", 300)) * self.cfg.time_factor
        mono = time.monotonic()
        recs = [r for r in self.hpa_recs.get(meta["uid"], []) if mono - r[0] <= window]
        recs.append((mono, desired))
        self.hpa_recs[meta["uid"]] = recs
        if desired < current:
            stabilized = max(r[1] for r in recs)
            if stabilized > desired:
                desired = min(stabilized, current)
                if desired == current:
                    reason = None
        limited = None
        if desired > mx:
            desired, limited = mx, ("TooManyReplicas", "the desired replica count is more than "
                                    "the maximum replica count")
            if current > mx:
                reason = "Current number of replicas above Spec.MaxReplicas"
        elif desired < mn:
            desired, limited = mn, ("TooFewReplicas", "the desired replica count is less than "
                                    "the minimum replica count")
            if current < mn:
                reason = "Current number of replicas below Spec.MinReplicas"
        set_condition(conds, "ScalingActive", "True", "ValidMetricFound",
                      "the HPA was able to successfully calculate a replica count from cpu "
                      "resource utilization (percentage of request)", now)
        if limited:
            set_condition(conds, "ScalingLimited", "True", limited[0], limited[1], now)
        else:
            set_condition(conds, "ScalingLimited", "False", "DesiredWithinRange",
                          "the desired count is within the acceptable range", now)
        if desired != current:
            def scale(o, desired=desired):
                o["spec"]["replicas"] = desired
            self.c.mutate(skey, ns, ref["name"], scale)
            st["lastScaleTime"] = now
            set_condition(conds, "AbleToScale", "True", "SucceededRescale",
                          "the HPA controller was able to update the target scale to %d"
                          % desired, now)
            self.c.event(h, "SuccessfulRescale", "New size: %d; reason: %s" % (
                desired, reason or "All metrics below target"),
                component="horizontal-pod-autoscaler")
        else:
            set_condition(conds, "AbleToScale", "True", "ReadyForNewScale",
                          "recommended size matches current size", now)
        st["desiredReplicas"] = desired
        cpu_req = 0.0
        for c in (target["spec"].get("template") or {}).get("spec", {}).get("containers") or []:
            cpu_req += metrics.parse_cpu(((c.get("resources") or {}).get("requests") or {})
                                         .get("cpu")) or 0.1
        st["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": int(util),
            "averageValue": "%dm" % int(cpu_req * 1000 * util / 100.0)}}}]
        self._hpa_status(h, st)

    def _hpa_status(self, h, st):
        st["observedGeneration"] = h["metadata"].get("generation", 1)
        order = {"AbleToScale": 0, "ScalingActive": 1, "ScalingLimited": 2}
        st["conditions"].sort(key=lambda c: order.get(c["type"], 3))
        if st != (h.get("status") or {}):
            def put(o, st=st):
                o["status"] = st
            self.c.mutate(HPA, h["metadata"]["namespace"], h["metadata"]["name"], put,
                          sub="status")

    # -------------------------------------------------------------- PDB
    def pdbs(self):
        for pdb in self.c.store.list(PDB):
            ns = pdb["metadata"]["namespace"]
            spec = pdb.get("spec") or {}
            reqs = selector_to_reqs(spec.get("selector"))
            pods = [p for p in self.c.store.list(PODS, ns) if _active(p)
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

    # -------------------------------------------------------------- endpoints
    def endpoints(self):
        from . import registry
        for svc in self.c.store.list(SVC):
            spec = svc.get("spec") or {}
            sel = spec.get("selector")
            if not sel:
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            reqs = [(k, "=", [v]) for k, v in sel.items()]
            ready, notready = [], []
            for p in self.c.store.list(PODS, ns):
                if not _active(p) or not match_labels(reqs, p["metadata"].get("labels")):
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
            ports = [{"name": pt.get("name"), "port": pt.get("targetPort") if isinstance(
                pt.get("targetPort"), int) else pt.get("port"), "protocol": pt.get("protocol",
                                                                                    "TCP")}
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
