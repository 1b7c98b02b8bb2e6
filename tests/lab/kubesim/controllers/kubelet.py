"""The scheduler and the kubelet: pods are bound to the least loaded schedulable node, then
go through ContainerCreating, Running and Ready (readiness delay, readinessProbe, image-tag
faults, env from Secrets/ConfigMaps, container logs); a Job's container runs its command
(``apex-migrate`` runs the twin's migrations for real)."""
import copy
import hashlib
import os
import subprocess
import sys
import threading
import time

from ..store import now_iso
from .common import NODES, PODS, Controller, faults, get_condition, image_tag, pod_active, set_condition

LAB_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/lab
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


class Kubelet(Controller):
    name = "schedule_and_run_pods"

    def __init__(self, loop):
        super().__init__(loop)
        self.pod_t0 = {}          # pod uid -> monotonic time it was scheduled
        self.pod_events = set()   # (uid, what) already reported
        self.pod_stable = {}      # pod uid -> resourceVersion at which the kubelet had no work
        self.pod_names = {}       # pod uid -> (namespace, name)
        self.jobs_running = {}    # pod uid -> thread
        self.job_results = {}     # pod uid -> (exit code, finished iso)

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

    def reconcile(self):
        now = time.monotonic()
        delay = self.cfg.pod_ready_delay
        pods = self.c.store.list(PODS)
        pods_by_node = {}
        for p in pods:
            n = p["spec"].get("nodeName")
            if n and pod_active(p):
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
            ntimers = len(self.loop.timers)
            wrote = self._kubelet(pod, now - t0, delay, t0)
            if not wrote and len(self.loop.timers) == ntimers and uid not in self.jobs_running:
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
                  "imageID": "docker.io/%s@sha256:%s" % (
                      c.get("image", "").split(":")[0], hashlib.sha256(c.get("image", "").encode()).hexdigest()),
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
