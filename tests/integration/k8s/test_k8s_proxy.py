"""Kubernetes connections through proxies (issue 9), against the lab's kubesim behind a tiny HTTP
CONNECT proxy that counts its tunnels: the kubeconfig's ``proxy-url``, ``HTTPS_PROXY``, and
``NO_PROXY`` bypassing it. And the ``kubernetes`` package is needed only for exec/auth-provider users.

Before the fix every connection went direct: the tunnel counts below stayed at 0."""
import base64
import os
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ansible_collections.apex.ops.plugins.module_utils import k8s
from k8s_lab import NS

CTX = dict(context="apex-primary", namespace=NS)
ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections"


class ConnectProxy(object):
    """HTTP CONNECT proxy on 127.0.0.1 (a thread); ``tunnels`` lists the targets it opened."""

    def __init__(self, credentials=None):
        self.tunnels = []
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_CONNECT(self):
                if credentials:
                    wanted = "Basic " + base64.b64encode(credentials.encode()).decode()
                    if self.headers.get("Proxy-Authorization") != wanted:
                        proxy.refused += 1
                        self.send_response(407)
                        self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                host, dummy, port = self.path.rpartition(":")
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
                proxy.tunnels.append(self.path)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                sockets = [self.connection, upstream]
                try:
                    while True:
                        readable, dummy1, dummy2 = select.select(sockets, [], [], 60)
                        if not readable:
                            break
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection).sendall(data)
                except OSError:
                    pass
                finally:
                    upstream.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy():
    p = ConnectProxy()
    yield p
    p.close()


@pytest.fixture
def kube_target(kubeconfig):
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    server = [c["cluster"]["server"] for c in doc["clusters"] if c["name"] == "apex-primary"][0]
    return server.split("://", 1)[1]


def _kubeconfig_with_proxy(kubeconfig, tmp_path, proxy_url):
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in doc["clusters"]:
        if cluster["name"] == "apex-primary":
            cluster["cluster"]["proxy-url"] = proxy_url
    path = tmp_path / "kubeconfig-proxy"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _no_proxy_env(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_kubeconfig_proxy_url_is_used(run_module, kubeconfig, tmp_path, proxy, kube, kube_target):
    path = _kubeconfig_with_proxy(kubeconfig, tmp_path, proxy.url)
    env = {"NO_PROXY": "127.0.0.1,localhost", "HTTPS_PROXY": ""}  # proxy-url wins over NO_PROXY, as in kubectl
    info = run_module("apex_info", kubeconfig=path, gather=["workloads"], env=env, **CTX)
    assert not info.failed, info.get("msg")
    deployments = dict((d["name"], d) for d in info["deployments"])
    assert deployments["apex-api"]["desired"] == kube.deployment("apex-api").spec.replicas
    assert proxy.tunnels and set(proxy.tunnels) == {kube_target}


def test_https_proxy_environment_is_used_by_modules_and_watches(run_module, kubeconfig, proxy, kube, kube_target,
                                                                monkeypatch):
    info = run_module("apex_info", kubeconfig=kubeconfig, gather=["workloads"],
                      env={"HTTPS_PROXY": proxy.url, "NO_PROXY": ""}, **CTX)
    assert not info.failed, info.get("msg")
    assert [d for d in info["deployments"] if d["name"] == "apex-worker"][0]["desired"] == \
        kube.deployment("apex-worker").spec.replicas
    assert proxy.tunnels and set(proxy.tunnels) == {kube_target}
    # lower-case name, in process, and a watch stream through the tunnel
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("https_proxy", proxy.url)
    before = len(proxy.tunnels)
    client = k8s.KubeClient({"kubeconfig": kubeconfig, "context": "apex-primary"})
    assert (client.proxy, client.proxy_source) == (proxy.url, "https_proxy")
    listed = client.list("/apis/apps/v1/namespaces/%s/deployments" % NS)
    version = listed["metadata"]["resourceVersion"]
    events = list(client.watch("/apis/apps/v1/namespaces/%s/deployments" % NS, resource_version=version, timeout_seconds=1))
    assert isinstance(events, list)
    client.close()
    assert len(proxy.tunnels) > before


def test_no_proxy_bypasses_the_proxy(run_module, kubeconfig, proxy, kube, monkeypatch):
    info = run_module("apex_info", kubeconfig=kubeconfig, gather=["workloads"],
                      env={"HTTPS_PROXY": proxy.url, "NO_PROXY": "example.invalid, 127.0.0.0/8"}, **CTX)
    assert not info.failed, info.get("msg")
    assert info["deployments"]
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = k8s.KubeClient({"kubeconfig": kubeconfig, "context": "apex-primary"})
    assert client.proxy is None and "NO_PROXY entry '127.0.0.1'" in client.proxy_source
    assert client.get("/api/v1/namespaces/%s" % NS)["metadata"]["name"] == NS
    client.close()
    assert proxy.tunnels == []


def test_proxy_credentials_sent_and_never_shown(kubeconfig, tmp_path, kube_target, monkeypatch):
    _no_proxy_env(monkeypatch)
    guarded = ConnectProxy(credentials="ops:pr0xy-s3cret")
    try:
        good = _kubeconfig_with_proxy(kubeconfig, tmp_path, "http://ops:pr0xy-s3cret@127.0.0.1:%d" % guarded.port)
        client = k8s.KubeClient({"kubeconfig": good, "context": "apex-primary"})
        assert client.get("/api/v1/namespaces/%s" % NS)["metadata"]["name"] == NS
        client.close()
        assert guarded.tunnels == [kube_target]
        bad = _kubeconfig_with_proxy(kubeconfig, tmp_path, "http://ops:wrong-s3cret@127.0.0.1:%d" % guarded.port)
        client = k8s.KubeClient({"kubeconfig": bad, "context": "apex-primary"})
        with pytest.raises(k8s.KubeApiError) as err:
            client.get("/api/v1/namespaces/%s" % NS)
        text = str(err.value)
        assert "through proxy http://***@127.0.0.1:%d (kubeconfig proxy-url)" % guarded.port in text
        assert "s3cret" not in text and guarded.refused >= 1
    finally:
        guarded.close()


def test_unreachable_proxy_is_named(run_module, kubeconfig):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    info = run_module("apex_info", kubeconfig=kubeconfig, gather=["workloads"],
                      env={"HTTPS_PROXY": "http://127.0.0.1:%d" % port, "NO_PROXY": ""}, **CTX)
    assert info.failed
    assert "through proxy http://127.0.0.1:%d (HTTPS_PROXY)" % port in info["msg"]


# ------------------------------------------------------------------ the kubernetes package, only where needed

BLOCK_KUBERNETES = '''
import sys


class _Block(object):
    def find_spec(self, name, path=None, target=None):
        if name == "kubernetes" or name.startswith("kubernetes."):
            raise ModuleNotFoundError("No module named %r (hidden by the test)" % name, name=name)
        return None


sys.meta_path.insert(0, _Block())
'''


@pytest.fixture
def without_kubernetes(tmp_path):
    site = tmp_path / "no-kubernetes"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_KUBERNETES)
    return str(site)


def test_token_kubeconfig_needs_no_kubernetes_package(run_module, kubeconfig, kube, without_kubernetes, lab):
    """Before: every Kubernetes module failed 'Failed to import the required Python library
    (kubernetes>=30,<37)' although the lean client never uses it."""
    env = {"PYTHONPATH": os.pathsep.join([without_kubernetes, str(COLLECTIONS)])}
    info = run_module("apex_info", kubeconfig=kubeconfig, gather=["workloads"], env=env, **CTX)
    assert not info.failed, info.get("msg")
    assert [d for d in info["deployments"] if d["name"] == "apex-api"][0]["desired"] == \
        kube.deployment("apex-api").spec.replicas
    facts = run_module("apex_cert", state="facts", name="apex-tls", env=env, **CTX)
    assert not facts.failed, facts.get("msg")


def test_exec_kubeconfig_without_kubernetes_package_names_it(run_module, kubeconfig, tmp_path, without_kubernetes):
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    for user in doc["users"]:
        user["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "true"}}
    path = tmp_path / "kubeconfig-exec"
    path.write_text(yaml.safe_dump(doc))
    env = {"PYTHONPATH": os.pathsep.join([without_kubernetes, str(COLLECTIONS)])}
    info = run_module("apex_info", kubeconfig=str(path), gather=["workloads"], env=env, **CTX)
    assert info.failed
    assert "exec plugin" in info["msg"] and "kubernetes>=30,<37" in info["msg"], info["msg"]
