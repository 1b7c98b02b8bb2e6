"""Unit tests of the lean Kubernetes REST client (k8s.py) and the waiting helpers, no cluster needed."""
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from ansible_collections.apex.ops.plugins.module_utils import k8s
from ansible_collections.apex.ops.plugins.module_utils.waiting import (
    Deadline, StreamExpired, poll_until, watch_until)

TOKEN = "s3cr3t-token-value"


def write_kubeconfig(tmp_path, server="http://127.0.0.1:1", extra_users=None, current="apex-primary"):
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [
            {"name": "primary", "cluster": {"server": server, "certificate-authority": "ca.pem"}},
            {"name": "secondary", "cluster": {"server": "https://10.0.0.2:6443", "insecure-skip-tls-verify": True,
                                              "certificate-authority-data": base64.b64encode(b"PEM").decode()}},
        ],
        "users": [{"name": "ops", "user": {"token": TOKEN}},
                  {"name": "file", "user": {"tokenFile": "token.txt", "client-certificate-data":
                                            base64.b64encode(b"CERT").decode(), "client-key": "/abs/key.pem"}}]
        + (extra_users or []),
        "contexts": [{"name": "apex-primary", "context": {"cluster": "primary", "user": "ops"}},
                     {"name": "apex-secondary", "context": {"cluster": "secondary", "user": "file"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    (tmp_path / "token.txt").write_text("file-token\n")
    return str(path)


def test_load_connection_current_context(tmp_path):
    conn = k8s.load_connection({"kubeconfig": write_kubeconfig(tmp_path)})
    assert conn["server"] == "http://127.0.0.1:1" and conn["token"] == TOKEN and conn["context"] == "apex-primary"
    assert conn["ca_file"] == str(tmp_path / "ca.pem")  # relative to the kubeconfig's directory
    assert conn["verify"] is True


def test_load_connection_other_context_token_file_and_inline_data(tmp_path):
    conn = k8s.load_connection({"kubeconfig": write_kubeconfig(tmp_path), "context": "apex-secondary"})
    assert conn["server"] == "https://10.0.0.2:6443" and conn["verify"] is False
    assert conn["token"] == "file-token" and conn["ca_data"] == b"PEM" and conn["cert_data"] == b"CERT"
    assert conn["key_file"] == "/abs/key.pem"


def test_load_connection_overrides(tmp_path):
    conn = k8s.load_connection({"kubeconfig": write_kubeconfig(tmp_path), "host": "https://x:1/",
                                "api_key": "other", "validate_certs": False, "ca_cert": "/ca"})
    assert conn["server"] == "https://x:1" and conn["token"] == "other" and conn["verify"] is False
    assert conn["ca_file"] == "/ca"


def test_kubeconfig_merge_first_wins(tmp_path, monkeypatch):
    first = tmp_path / "a"
    first.mkdir()
    second = tmp_path / "b"
    second.mkdir()
    a = write_kubeconfig(first, server="http://first:1")
    b = write_kubeconfig(second, server="http://second:1", current="apex-secondary")
    monkeypatch.setenv("KUBECONFIG", a + ":" + b)
    conn = k8s.load_connection({})
    assert conn["server"] == "http://first:1" and conn["context"] == "apex-primary"


@pytest.mark.parametrize("params,match", [
    ({"kubeconfig": "/nonexistent/kubeconfig"}, "does not exist"),
    ({"context": "apex-tertiary"}, "context 'apex-tertiary' is not in kubeconfig .*available: apex-primary, apex-secondary"),
])
def test_load_connection_errors(tmp_path, params, match):
    if "kubeconfig" not in params:
        params["kubeconfig"] = write_kubeconfig(tmp_path)
    with pytest.raises(k8s.KubeConfigError, match=match):
        k8s.load_connection(params)


def test_requirement_does_not_import_kubernetes():
    import subprocess
    import sys

    code = ("import sys; from ansible_collections.apex.ops.plugins.module_utils import k8s; "
            "print(k8s.REQUIREMENT[1] is None, 'kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(sys.path)}).stdout.split()
    assert out == ["True", "False"]


# --------------------------------------------------------------------------- against a tiny HTTP server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *args):
        pass

    def _send(self, status, body, chunks=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunks is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                data = (json.dumps(chunk) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            return
        data = json.dumps(body).encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        Handler.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self._send(401, {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"})
        if self.path.startswith("/apis/apps/v1/namespaces/apex/deployments?"):
            if "watch=true" in self.path:
                if "resourceVersion=old" in self.path:
                    return self._send(200, None, chunks=[{"type": "ERROR", "object": {
                        "kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}}])
                return self._send(200, None, chunks=[
                    {"type": "MODIFIED", "object": {"metadata": {"name": "apex-api", "resourceVersion": "6"},
                                                    "status": {"readyReplicas": 4}}},
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
                    {"type": "MODIFIED", "object": {"metadata": {"name": "apex-api", "resourceVersion": "8"},
                                                    "status": {"readyReplicas": 5}}}])
            return self._send(200, {"items": [{"metadata": {"name": "apex-api"}}]})
        if self.path == "/api/v1/namespaces/apex/pods/missing":
            return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound",
                                    "message": 'pods "missing" not found'})
        return self._send(200, {"path": self.path})

    def do_PATCH(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length))
        Handler.seen.append((self.command, self.path, self.headers.get("Content-Type"), body))
        return self._send(200, {"patched": body})


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


def client_for(server, token=TOKEN):
    return k8s.KubeClient({"host": server, "api_key": token})


def test_list_with_selectors_and_token(server):
    Handler.seen[:] = []
    data = client_for(server).list("/apis/apps/v1/namespaces/apex/deployments", label_selector="app=apex-api,tier in (a,b)")
    assert data["items"][0]["metadata"]["name"] == "apex-api"
    method, path, auth = Handler.seen[-1]
    assert "labelSelector=app%3Dapex-api%2Ctier%20in%20%28a%2Cb%29" in path and auth == "Bearer " + TOKEN


def test_merge_patch_content_type(server):
    out = client_for(server).merge_patch("/apis/apps/v1/namespaces/apex/deployments/apex-api/scale",
                                         {"spec": {"replicas": 4}})
    assert out == {"patched": {"spec": {"replicas": 4}}}
    assert Handler.seen[-1][2] == "application/merge-patch+json"


def test_errors_are_clear_and_never_carry_the_token(server):
    with pytest.raises(k8s.KubeApiError) as err:
        client_for(server, token="wrong-token").get("/api/v1/namespaces/apex/pods")
    assert err.value.status == 401 and "rejected the credentials" in str(err.value)
    assert "wrong-token" not in str(err.value)
    with pytest.raises(k8s.KubeApiError) as err:
        client_for(server).get("/api/v1/namespaces/apex/pods/missing")
    assert err.value.not_found and 'pods "missing" not found' in str(err.value)


def test_unreachable_server():
    with pytest.raises(k8s.KubeApiError) as err:
        k8s.KubeClient({"host": "http://127.0.0.1:9", "api_key": TOKEN}, request_timeout=2).get("/version")
    assert err.value.status == 0 and "cannot reach the Kubernetes API at http://127.0.0.1:9" in str(err.value)


def test_watch_streams_events_as_they_come(server):
    client = client_for(server)
    got = list(client.watch("/apis/apps/v1/namespaces/apex/deployments", resource_version="5", timeout_seconds=5,
                            field_selector="metadata.name=apex-api"))
    assert [event[0] for event in got] == ["MODIFIED", "BOOKMARK", "MODIFIED"]
    assert got[-1][1]["status"]["readyReplicas"] == 5
    path = Handler.seen[-1][1]
    assert "watch=true" in path and "timeoutSeconds=5" in path and "fieldSelector=metadata.name%3Dapex-api" in path


def test_watch_410_raises(server):
    with pytest.raises(k8s.KubeApiError) as err:
        list(client_for(server).watch("/apis/apps/v1/namespaces/apex/deployments", resource_version="old"))
    assert err.value.status == 410


def test_parallel_requests_share_the_pool(server):
    from concurrent.futures import ThreadPoolExecutor

    client = client_for(server)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.get("/x/%d" % i), range(24)))
    assert [r["path"] for r in results] == ["/x/%d" % i for i in range(24)]


# --------------------------------------------------------------------------- waiting


class FakeClock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_deadline_monotonic():
    clock = FakeClock()
    d = Deadline(5, clock=clock)
    assert d.remaining() == 5 and not d.expired()
    clock.now += 6
    assert d.expired() and d.remaining() == 0 and d.elapsed() == 6
    assert Deadline(None).remaining() is None and not Deadline(None).expired()


def test_poll_until_backoff_and_last_value():
    clock = FakeClock()
    values = iter(range(100))
    result = poll_until(lambda: next(values), lambda v: v >= 3, Deadline(10, clock=clock), interval=0.1,
                        sleep=clock.sleep)
    assert result.ok and result.last == 3 and result.observations == 4
    result = poll_until(lambda: "never", lambda v: False, Deadline(1, clock=clock), interval=0.4, max_interval=0.5,
                        sleep=clock.sleep)
    assert not result.ok and result.last == "never" and result.elapsed == pytest.approx(1.0)


def test_watch_until_relists_on_expiry_and_follows_versions():
    versions = []

    def relist():
        versions.append("relist")
        return {"ready": 0}, "10"

    streams = [StreamExpired("410"), [({"ready": 1}, "11"), (None, "12")], [({"ready": 3}, "13")]]

    def watch(version, seconds):
        versions.append(version)
        item = streams.pop(0)
        if isinstance(item, Exception):
            raise item
        yield from item

    result = watch_until(relist, watch, lambda v: v["ready"] == 3, Deadline(10))
    assert result.ok and result.last == {"ready": 3}
    assert versions == ["relist", "10", "relist", "10", "12"]


def test_watch_until_times_out_with_last_seen_value():
    clock = FakeClock()

    def watch(version, seconds):
        clock.now += seconds  # the server holds the stream open for its timeout
        yield {"ready": 1}, "2"

    result = watch_until(lambda: ({"ready": 0}, "1"), watch, lambda v: v["ready"] == 3, Deadline(3, clock=clock))
    assert not result.ok and result.last == {"ready": 1}


def test_watch_until_closes_a_stream_left_early():
    closed = []

    def watch(version, seconds):
        try:
            yield {"ready": 3}, "2"
            yield {"ready": 4}, "3"
        finally:
            closed.append(version)

    result = watch_until(lambda: ({"ready": 0}, "1"), watch, lambda v: v["ready"] == 3, Deadline(5))
    assert result.ok and closed == ["1"]


def test_watch_left_early_closes_the_connection(server):
    client = client_for(server)
    stream = client.watch("/apis/apps/v1/namespaces/apex/deployments", resource_version="5", timeout_seconds=5)
    assert next(stream)[0] == "MODIFIED"
    stream.close()
    # the pool is still usable afterwards
    assert client.get("/after")["path"] == "/after"


def test_kubeconfig_list_tolerates_a_missing_file(tmp_path):
    good = write_kubeconfig(tmp_path)
    conn = k8s.load_connection({"kubeconfig": str(tmp_path / "missing") + ":" + good})
    assert conn["token"] == TOKEN


def test_exec_credential_plugin_is_run_by_the_official_loader(tmp_path):
    import sys

    script = tmp_path / "cred.py"
    script.write_text('import json; print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", '
                      '"kind": "ExecCredential", "status": {"token": "from-exec-plugin"}}))\n')
    exec_user = {"name": "exec", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                   "command": sys.executable, "args": [str(script)],
                                                   "interactiveMode": "Never"}}}
    path = write_kubeconfig(tmp_path, extra_users=[exec_user])
    doc = yaml.safe_load(open(path))
    doc["contexts"].append({"name": "exec-ctx", "context": {"cluster": "primary", "user": "exec"}})
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(doc))
    conn = k8s.load_connection({"kubeconfig": path, "context": "exec-ctx"})
    assert conn["token"] == "from-exec-plugin" and conn["server"] == "http://127.0.0.1:1"


def test_restart_patch_stamps_differ_within_one_second():
    import datetime

    from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import RESTARTED_AT, restart_patch

    t0 = datetime.datetime(2026, 11, 27, 3, 0, 0, 100, tzinfo=datetime.timezone.utc)
    first = restart_patch(t0)
    second = restart_patch(t0 + datetime.timedelta(microseconds=1))
    assert first[0] == "2026-11-27T03:00:00.000100Z"
    assert first[1]["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == first[0]
    assert first[0] != second[0]


# --------------------------------------------------------------------------- proxy decision (kubectl's rules)

@pytest.mark.parametrize("server,environ,expected", [
    ("https://api.example.com", {}, None),
    ("https://api.example.com", {"HTTPS_PROXY": "http://p:3128"}, ("http://p:3128", "HTTPS_PROXY")),
    ("https://api.example.com", {"https_proxy": "http://p:3128"}, ("http://p:3128", "https_proxy")),
    ("https://api.example.com", {"HTTPS_PROXY": "http://P:1", "https_proxy": "http://p:2"}, ("http://P:1", "HTTPS_PROXY")),
    # an https server never uses HTTP_PROXY, an http server never HTTPS_PROXY (as in Go / kubectl)
    ("https://api.example.com", {"HTTP_PROXY": "http://p:3128"}, None),
    ("http://api.example.com:8080", {"HTTP_PROXY": "http://p:3128"}, ("http://p:3128", "HTTP_PROXY")),
    ("http://api.example.com:8080", {"HTTPS_PROXY": "http://p:3128"}, None),
])
def test_proxy_for_environment(server, environ, expected):
    url, reason = k8s.proxy_for(server, None, environ)
    assert (url, reason) == expected if expected else url is None


@pytest.mark.parametrize("no_proxy,server,bypass", [
    ("*", "https://api.example.com", True),
    ("example.com", "https://api.example.com", True),
    ("example.com", "https://example.com:6443", True),
    (".example.com", "https://api.example.com", True),
    ("*.example.com", "https://api.example.com", True),
    ("example.com", "https://notexample.com", False),
    ("api.example.com:6443", "https://api.example.com:6443", True),
    ("api.example.com:443", "https://api.example.com:6443", False),
    ("api.example.com:443", "https://api.example.com", True),
    ("10.0.0.0/8", "https://10.20.30.40:6443", True),
    ("10.0.0.0/8", "https://11.0.0.1:6443", False),
    ("10.0.0.1", "https://10.0.0.1:6443", True),
    ("10.0.0.1", "https://api.example.com", False),
    ("::1", "https://[::1]:6443", True),
    ("fd00::/8", "https://[fd00::5]:6443", True),
    ("other.test, , api.EXAMPLE.com.", "https://API.example.com", True),
    ("", "https://api.example.com", False),
    ("example.com", "https://10.0.0.1", False),
])
def test_no_proxy_rules(no_proxy, server, bypass):
    url, reason = k8s.proxy_for(server, None, {"HTTPS_PROXY": "http://p:3128", "HTTP_PROXY": "http://p:3128",
                                               "NO_PROXY": no_proxy})
    assert (url is None) == bypass, reason
    if bypass:
        assert "NO_PROXY entry" in reason


def test_kubeconfig_proxy_url_wins_and_ignores_no_proxy():
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "*"}
    assert k8s.proxy_for("https://10.0.0.1:6443", "socks5://jump:1080", env) == ("socks5://jump:1080", "kubeconfig proxy-url")
    assert k8s.proxy_for("https://10.0.0.1:6443", None, {"no_proxy": "10.0.0.1", "HTTPS_PROXY": "http://e:1"})[0] is None


def test_load_connection_reads_proxy_url(tmp_path):
    path = write_kubeconfig(tmp_path)
    doc = yaml.safe_load(open(path))
    doc["clusters"][0]["cluster"]["proxy-url"] = "http://proxy.corp:3128"
    open(path, "w").write(yaml.safe_dump(doc))
    assert k8s.load_connection({"kubeconfig": path})["proxy_url"] == "http://proxy.corp:3128"
    assert k8s.load_connection({"kubeconfig": path, "context": "apex-secondary"})["proxy_url"] is None


def test_redact_url():
    from ansible_collections.apex.ops.plugins.module_utils.redaction import redact_url
    assert redact_url("http://user:pa55@proxy:3128/x") == "http://***@proxy:3128/x"
    assert redact_url("http://proxy:3128") == "http://proxy:3128"
    assert redact_url("user:pw@proxy:1") == "***@proxy:1"


def test_client_rejects_unknown_proxy_scheme(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "ftp://user:secret@p:21")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(k8s.KubeConfigError) as err:
        k8s.KubeClient(connection=dict(server="https://api.example.com", proxy_url=None))
    assert "unsupported scheme 'ftp'" in str(err.value) and "secret" not in str(err.value)


def test_http_server_through_http_proxy_env(server, monkeypatch):
    """An http:// API server through HTTP_PROXY: the request goes to the proxy in absolute form
    (here the tiny server plays the proxy and sees the absolute URL)."""
    base = server
    monkeypatch.setenv("HTTP_PROXY", base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    conn = dict(server="http://apiserver.invalid:8080", token=TOKEN, basic_auth=None, ca_file=None, ca_data=None,
                cert_file=None, key_file=None, cert_data=None, key_data=None, verify=True, tls_server_name=None,
                context=None, source="test", proxy_url=None)
    client = k8s.KubeClient(connection=conn)
    assert client.proxy == base
    Handler.seen[:] = []
    client.get("/api/v1/namespaces/apex")
    assert Handler.seen and Handler.seen[-1][1].startswith("http://apiserver.invalid:8080/api/v1/namespaces/apex")
