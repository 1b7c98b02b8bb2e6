"""Process wiring: PKI, tokens, kubeconfig, both clusters, controllers, servers, twin bridge."""
import base64
import json
import os
import secrets
import signal
import ssl
import sys
import threading
import time

from .bridge import TwinBridge, TwinLogBridge
from .cluster import Cluster
from .controllers import Controllers
from .pki import CA
from .seed import seed
from .server import KubeServer


class Config:
    def __init__(self, **kw):
        self.pod_ready_delay = 0.2
        self.time_factor = 1.0
        self.hpa_sync = 1.0
        self.crash_interval = 1.0
        self.job_duration = 0.5
        self.__dict__.update(kw)


def _envf(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def add_serve_args(p):
    p.add_argument("--lab-dir", required=True)
    p.add_argument("--primary-port", type=int, required=True)
    p.add_argument("--secondary-port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pod-ready-delay", type=float,
                   default=_envf("KUBESIM_POD_READY_DELAY", 0.2),
                   help="seconds from scheduling to Ready (env KUBESIM_POD_READY_DELAY)")
    p.add_argument("--time-factor", type=float, default=_envf("KUBESIM_TIME_FACTOR", 1.0),
                   help="multiplies progressDeadlineSeconds (env KUBESIM_TIME_FACTOR)")
    p.add_argument("--hpa-sync", type=float, default=_envf("KUBESIM_HPA_SYNC", 1.0),
                   help="HPA sync period in seconds (env KUBESIM_HPA_SYNC; real: 15)")
    p.add_argument("--crash-interval", type=float, default=_envf("KUBESIM_CRASH_INTERVAL", 1.0),
                   help="seconds between restarts of a crash-looping container")
    p.add_argument("--job-duration", type=float, default=_envf("KUBESIM_JOB_DURATION", 0.5),
                   help="run time of a Job pod whose image is not a known lab command")
    p.add_argument("--twin-state", default=os.environ.get("APEX_TWIN_STATE"),
                   help="desired-state file of the Apex twin (default $APEX_TWIN_STATE)")
    p.add_argument("--twin-secondary-state", default=os.environ.get("APEX_TWIN_SECONDARY_STATE"),
                   help="desired-state file of the secondary region's Apex twin "
                        "(default $APEX_TWIN_SECONDARY_STATE)")
    p.add_argument("--plain-http", action="store_true", help="serve HTTP instead of HTTPS")
    p.add_argument("--access-log", action="store_true")


def _tokens(kube_dir):
    path = os.path.join(kube_dir, "tokens.json")
    try:
        with open(path) as fh:
            tokens = json.load(fh)
        if tokens.get("primary") and tokens.get("secondary"):
            return tokens
    except (OSError, ValueError):
        pass
    tokens = {"primary": "kubesim-primary-" + secrets.token_hex(16),
              "secondary": "kubesim-secondary-" + secrets.token_hex(16)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(tokens, fh)
    return tokens


def write_kubeconfig(path, ca_pem, endpoints, scheme="https"):
    """endpoints: list of (context, port, token)."""
    import yaml
    cfg = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "current-context": endpoints[0][0], "clusters": [], "users": [], "contexts": []}
    for ctx, port, token in endpoints:
        cluster = {"server": "%s://127.0.0.1:%d" % (scheme, port)}
        if scheme == "https":
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        cfg["clusters"].append({"name": ctx, "cluster": cluster})
        cfg["users"].append({"name": ctx + "-admin", "user": {"token": token}})
        cfg["contexts"].append({"name": ctx, "context": {"cluster": ctx, "user": ctx + "-admin",
                                                         "namespace": "apex"}})
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(cfg, fh, default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)


class App:
    def __init__(self, lab_dir, ports, config, twin_state=None, tls=True, access_log=False,
                 host="127.0.0.1", twin_secondary_state=None):
        self.lab_dir = os.path.abspath(lab_dir)
        self.kube_dir = os.path.join(self.lab_dir, "kube")
        os.makedirs(self.kube_dir, exist_ok=True)
        self.config = config
        self.pki = CA.load_or_create(os.environ.get("APEX_CA_FILE"), os.environ.get("APEX_CA_KEY"),
                                     self.kube_dir)
        self.tokens = _tokens(self.kube_dir)
        self.ready = threading.Event()
        self.clusters = {}
        self.controllers = {}
        self.servers = []
        self.ports = ports
        self.host = host
        self.tls = tls
        self.bridge = None
        self.log_bridge = None
        self.twin_state = twin_state
        self.twin_secondary_state = twin_secondary_state
        self.secondary_bridge = None
        self.access_log = access_log

    def _ssl_context(self):
        crt = os.path.join(self.kube_dir, "apiserver.crt")
        key = os.path.join(self.kube_dir, "apiserver.key")
        _, _, cpem, kpem = self.pki.issue(["localhost", "kubernetes", "kubernetes.default"],
                                          ["127.0.0.1"], "kube-apiserver", 365 * 86400, "ECDSA",
                                          256)
        with open(crt, "wb") as fh:
            fh.write(cpem + self.pki.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(kpem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def start(self):
        ctx = self._ssl_context() if self.tls else None
        endpoints = []
        for name, port in (("primary", self.ports[0]), ("secondary", self.ports[1])):
            cluster = Cluster(name, self.config)
            cluster.lab_dir = self.lab_dir
            self.clusters[name] = cluster
            seed(cluster, self.pki, secondary=(name == "secondary"))
            after = None
            if name == "primary" and self.twin_state:
                self.bridge = TwinBridge(cluster, self.twin_state, self.lab_dir)
                after = self.bridge.sync
                self.log_bridge = TwinLogBridge(cluster, self.lab_dir)
            if name == "secondary" and self.twin_secondary_state:
                self.secondary_bridge = TwinBridge(cluster, self.twin_secondary_state, self.lab_dir,
                                                   tls_subdir="ingress-tls-secondary")
                after = self.secondary_bridge.sync
            ctl = Controllers(cluster, self.config, after_pass=after, pki=self.pki)
            self.controllers[name] = ctl
            server = KubeServer((self.host, port), cluster, self.tokens[name], ctx,
                                log=sys.stderr if self.access_log else None)
            server.app = self
            self.servers.append(server)
            endpoints.append(("apex-" + name, server.server_address[1], self.tokens[name]))
        write_kubeconfig(os.path.join(self.kube_dir, "kubeconfig"), self.pki.cert_pem,
                         endpoints, "https" if self.tls else "http")
        for server in self.servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                             daemon=True, name="http-" + server.cluster.name).start()
        for ctl in self.controllers.values():
            ctl.start()
        if self.log_bridge is not None:
            self.log_bridge.start()
        self._wait_settled(15.0)
        self.ready.set()

    def _wait_settled(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for cluster in self.clusters.values():
                with cluster.lock:
                    for d in cluster.store.list(("apps", "deployments")):
                        st = d.get("status") or {}
                        if st.get("availableReplicas", 0) != d["spec"].get("replicas", 1):
                            ok = False
                    cert = cluster.store.get(("cert-manager.io", "certificates"), "apex",
                                             "apex-tls")
                    if cert is not None and not (cert.get("status") or {}).get("notAfter"):
                        ok = False
            if ok and all(b is None or b.last is not None for b in (self.bridge, self.secondary_bridge)):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        if self.log_bridge is not None:
            self.log_bridge.stopped = True
        for ctl in self.controllers.values():
            ctl.stopped = True
        for server in self.servers:
            server.shutdown()
            server.server_close()


def serve(args):
    config = Config(pod_ready_delay=args.pod_ready_delay, time_factor=args.time_factor,
                    hpa_sync=args.hpa_sync, crash_interval=args.crash_interval,
                    job_duration=args.job_duration)
    app = App(args.lab_dir, (args.primary_port, args.secondary_port), config,
              twin_state=args.twin_state, tls=not args.plain_http, access_log=args.access_log,
              host=args.host, twin_secondary_state=args.twin_secondary_state)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t0 = time.monotonic()
    app.start()
    print("kubesim: primary https://127.0.0.1:%d secondary https://127.0.0.1:%d ready in %.2fs "
          "(kubeconfig %s)" % (app.servers[0].server_address[1], app.servers[1].server_address[1],
                               time.monotonic() - t0, os.path.join(app.kube_dir, "kubeconfig")),
          flush=True)
    while not stop.is_set():
        stop.wait(1.0)
    app.stop()
    return 0
