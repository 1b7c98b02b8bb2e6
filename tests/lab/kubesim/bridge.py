"""The twin bridge: a cluster's state -> its Apex twin's desired state (the primary cluster's
to $APEX_TWIN_STATE, the secondary's to $APEX_TWIN_SECONDARY_STATE), written atomically
whenever it changes.

* version / env / fault tags come from the newest ReplicaSet of a Deployment that has a
  ready pod (what is actually serving), else from the Deployment's template;
* ready replicas from the Deployments' status;
* the TLS pair the "ingress" serves is exported from Secret apex-tls into
  ``<lab>/kube/ingress-tls/`` once at start and again only when the
  ``ingress-nginx-controller`` Deployment completes a rollout of a new revision (as the
  runbook's "restart the ingress controller to pick up the new cert" step)."""
import base64
import json
import os
import tempfile

from .controllers.common import REV_ANN, controller_uid, image_tag

DEPLOY = ("apps", "deployments")
RS = ("apps", "replicasets")
FLAG = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _env(container):
    return {e["name"]: str(e.get("value")) for e in container.get("env") or [] if "value" in e}


def _serving_template(cluster, dep):
    """Template of the newest ReplicaSet with a ready pod, else the Deployment's."""
    best = None
    for rs in cluster.store.list(RS, dep["metadata"]["namespace"]):
        if controller_uid(rs) != dep["metadata"]["uid"]:
            continue
        if not (rs.get("status") or {}).get("readyReplicas"):
            continue
        rev = int((rs["metadata"].get("annotations") or {}).get(REV_ANN, "0") or 0)
        if best is None or rev > best[0]:
            best = (rev, rs)
    return (best[1] if best else dep)["spec"]["template"]


def _fault(tag):
    """(failure_rate, latency_ms) of an image tag: ``errors`` answers half the requests 500; ``slow``
    takes 800 ms (a canary slower than stable, under the 2 s alert); ``stalled`` takes 3 s (over it)."""
    latency = 3000 if "stalled" in tag else 800 if "slow" in tag else 0
    return (0.5 if "errors" in tag else 0.0), latency


class TwinBridge:
    def __init__(self, cluster, state_path, lab_dir, tls_subdir="ingress-tls"):
        self.c = cluster
        self.path = state_path
        # one directory per cluster: the secondary region's twin serves its own cluster's secret
        self.tls_dir = os.path.join(lab_dir, "kube", tls_subdir)
        self.last = None
        self.tls = None            # (cert_file, key_file)
        self.ingress_rev = None    # ingress controller revision the TLS pair belongs to
        self.tls_serial = 0

    def _export_tls(self):
        sec = self.c.store.get(("", "secrets"), "apex", "apex-tls")
        if sec is None or "tls.crt" not in (sec.get("data") or {}):
            return False
        crt = base64.b64decode(sec["data"]["tls.crt"])
        key = base64.b64decode(sec["data"]["tls.key"])
        if self.tls is not None:
            try:
                with open(self.tls[0], "rb") as f1, open(self.tls[1], "rb") as f2:
                    if f1.read() == crt and f2.read() == key:
                        return True
            except OSError:
                pass
        os.makedirs(self.tls_dir, exist_ok=True)
        self.tls_serial += 1
        base = os.path.join(self.tls_dir, "apex-tls-%d-%s" % (
            self.tls_serial, sec["metadata"]["resourceVersion"]))
        for path, data, mode in ((base + ".crt", crt, 0o644), (base + ".key", key, 0o600)):
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(path + ".tmp", path)
        old = self.tls
        self.tls = (base + ".crt", base + ".key")
        if old:
            for p in old:
                try:
                    os.unlink(p)
                except OSError:
                    pass
        return True

    def compute(self):
        store = self.c.store
        state = {}
        api = store.get(DEPLOY, "apex", "apex-api")
        worker = store.get(DEPLOY, "apex", "apex-worker")
        api_env, worker_env = {}, {}
        if api is not None:
            tpl = _serving_template(self.c, api)
            c0 = (tpl["spec"].get("containers") or [{}])[0]
            api_env = _env(c0)
            tag = image_tag(c0.get("image"))
            state["version"] = tag
            state["failure_rate"], state["latency_ms"] = _fault(tag)
            state["api_ready_replicas"] = (api.get("status") or {}).get("readyReplicas", 0)
        else:
            state["api_ready_replicas"] = 0
        if worker is not None:
            tpl = _serving_template(self.c, worker)
            worker_env = _env((tpl["spec"].get("containers") or [{}])[0])
            state["worker_ready_replicas"] = (worker.get("status") or {}).get("readyReplicas", 0)
        else:
            state["worker_ready_replicas"] = 0
        if "APEX__MAINTENANCE_MODE" in api_env:
            state["maintenance_mode"] = FLAG.get(api_env["APEX__MAINTENANCE_MODE"].lower(), False)
        for key, name, envs in (
                ("db_max_connections", "APEX__DATABASE__MAX_CONNECTIONS", (api_env,)),
                ("worker_concurrency", "APEX__WORKER__CONCURRENCY", (worker_env, api_env)),
                ("circuit_breaker_failure_threshold", "APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD",
                 (api_env, worker_env))):
            for env in envs:
                if name in env:
                    try:
                        state[key] = int(env[name])
                    except ValueError:
                        pass
                    break
        for env in (worker_env, api_env):
            if "APEX__ROUTING__FORCE_PROVIDER" in env:
                state["force_provider"] = env["APEX__ROUTING__FORCE_PROVIDER"] or None
                break
        else:
            state["force_provider"] = None
        canary = None
        for d in store.list(DEPLOY, "apex"):
            labels = dict((d["spec"].get("template", {}).get("metadata") or {}).get("labels") or {})
            labels.update(d["metadata"].get("labels") or {})
            if labels.get("track") == "canary" and labels.get("app") == "apex-api":
                tpl = _serving_template(self.c, d)
                tag = image_tag((tpl["spec"].get("containers") or [{}])[0].get("image"))
                fr, lat = _fault(tag)
                canary = {"ready_replicas": (d.get("status") or {}).get("readyReplicas", 0),
                          "version": tag, "failure_rate": fr, "latency_ms": lat}
                break
        state["canary"] = canary
        # TLS: exported at start, then after each completed ingress controller rollout
        ing = store.get(DEPLOY, "ingress-nginx", "ingress-nginx-controller")
        rev = None
        done = False
        if ing is not None:
            rev = (ing["metadata"].get("annotations") or {}).get(REV_ANN)
            st, spec = ing.get("status") or {}, ing["spec"]
            done = st.get("observedGeneration") == ing["metadata"].get("generation") and \
                st.get("updatedReplicas", 0) == spec.get("replicas", 1) and \
                st.get("availableReplicas", 0) == spec.get("replicas", 1) and \
                st.get("replicas", 0) == spec.get("replicas", 1)
        if self.tls is None or (done and rev != self.ingress_rev):
            if self._export_tls():
                self.ingress_rev = rev
        if self.tls:
            state["tls_cert_file"], state["tls_key_file"] = self.tls
        state["_source"] = "kubesim:%s" % self.c.name
        return state

    def sync(self):
        if not self.path:
            return
        with self.c.lock:
            state = self.compute()
        if state == self.last:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".desired-", dir=directory)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        self.last = state


class TwinLogBridge:
    """Tails the Apex twin's logs (``<lab>/twin/serve.log`` and ``worker.log``) and hands each
    new line to a running pod of ``apex-api`` / ``apex-worker`` on the primary cluster (round
    robin), so ``kubectl logs deployment/apex-worker | grep "task completed"`` or
    ``... apex-api | grep circuit_breaker`` show what the twin really does."""

    SOURCES = (("serve.log", "apex-api"), ("worker.log", "apex-worker"))

    def __init__(self, cluster, lab_dir, interval=0.5):
        self.c = cluster
        self.dir = os.path.join(lab_dir, "twin")
        self.interval = interval
        self.offsets = {}
        self.rr = {}
        self.stopped = False
        for name, _ in self.SOURCES:
            path = os.path.join(self.dir, name)
            try:
                self.offsets[name] = os.path.getsize(path)  # only what happens from now on
            except OSError:
                self.offsets[name] = 0

    def start(self):
        import threading
        threading.Thread(target=self.run, daemon=True, name="twin-log-bridge").start()

    def run(self):
        import time
        while not self.stopped:
            try:
                self.poll()
            except Exception:  # pragma: no cover - never let the tail kill the process
                pass
            time.sleep(self.interval)

    def _pods(self, deployment):
        dep = self.c.store.get(DEPLOY, "apex", deployment)
        if dep is None:
            return []
        rs_uids = {rs["metadata"]["uid"] for rs in self.c.store.list(RS, "apex")
                   if controller_uid(rs) == dep["metadata"]["uid"]}
        pods = [p for p in self.c.store.list(("", "pods"), "apex")
                if controller_uid(p) in rs_uids and (p.get("status") or {}).get("phase") ==
                "Running"]
        pods.sort(key=lambda p: p["metadata"]["name"])
        return pods

    def poll(self):
        for name, deployment in self.SOURCES:
            path = os.path.join(self.dir, name)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            off = self.offsets.get(name, 0)
            if size < off:  # rotated
                off = 0
            if size == off:
                continue
            with open(path, "rb") as fh:
                fh.seek(off)
                data = fh.read(size - off)
            cut = data.rfind(b"\n")
            if cut < 0:
                continue
            self.offsets[name] = off + cut + 1
            lines = [l for l in data[:cut].decode("utf-8", "replace").splitlines() if l.strip()]
            with self.c.lock:
                pods = self._pods(deployment)
                if not pods:
                    continue
                for line in lines:
                    i = self.rr.get(name, 0) % len(pods)
                    self.rr[name] = i + 1
                    pod = pods[i]
                    container = pod["spec"]["containers"][0]["name"]
                    self.c.add_log("apex", pod["metadata"]["name"], container, line)
                self.c.store.cond.notify_all()  # wake `kubectl logs -f` followers
