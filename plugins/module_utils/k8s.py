# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes API access from K8S_ARGSPEC options.

Every Kubernetes module goes through ``KubeClient(params)``: a lean JSON/REST client (urllib3 and
the kubeconfig read with PyYAML, about 0.05 s to import) with thread-safe connection pooling and
the watch API. Importing the official ``kubernetes.client`` models alone costs about 0.25 s, which
every task would pay; objects here are plain dicts as the API serves them. ``object_stream``
turns a watch on one named object into the ``(relist, watch)`` pair ``waiting.watch_until`` follows.

The kubeconfig reader handles what kubeconfigs carry in practice: token, tokenFile,
client certificate/key (paths or inline data), basic auth, CA (path or data),
``insecure-skip-tls-verify``, ``tls-server-name``, ``proxy-url``, several files in ``KUBECONFIG``,
and the in-cluster service account. A user with an ``exec`` or ``auth-provider`` plugin is handed
to the official client's loader (which runs the plugin) and its resulting configuration is used:
only those kubeconfigs need the ``kubernetes`` package (``KUBERNETES_REQUIREMENT``); the lean
client itself needs urllib3 and PyYAML (``REQUIREMENT``).

Proxies (``proxy_for``) are chosen as kubectl chooses them: the cluster's ``proxy-url`` when the
kubeconfig has one, else ``HTTPS_PROXY`` (``HTTP_PROXY`` for an ``http://`` server), lower-case
names too, unless ``NO_PROXY`` covers the server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import threading

from ansible_collections.apex.ops.plugins.module_utils.apex_module import import_error_of
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact_url
from ansible_collections.apex.ops.plugins.module_utils.waiting import StreamExpired


def _find_kubernetes():
    # find_spec of the top-level package does not import it (importing it loads every model).
    import importlib.util

    if importlib.util.find_spec("kubernetes") is None:
        raise ImportError("No module named 'kubernetes'")


def _import_lean_client():
    import urllib3  # noqa: F401  pylint: disable=unused-import
    import yaml  # noqa: F401  pylint: disable=unused-import


KUBERNETES_IMPORT_ERROR = import_error_of(_find_kubernetes)
# What the modules check before any work: the lean client's own dependencies.
REQUIREMENT = ("urllib3", import_error_of(_import_lean_client))
# Only for kubeconfig users with an exec or auth-provider plugin (checked by load_connection).
KUBERNETES_REQUIREMENT = ("kubernetes>=30,<37", KUBERNETES_IMPORT_ERROR)

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


# --------------------------------------------------------------------------- errors


class KubeConfigError(Exception):
    """The connection could not be configured (kubeconfig missing, unknown context...)."""


class KubeApiError(Exception):
    """The API server answered with an error status, or could not be reached (status 0)."""

    def __init__(self, status, reason, message, method=None, path=None, body=None):
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path
        self.body = body
        super(KubeApiError, self).__init__(self.__str__())

    def __str__(self):
        where = ("%s %s: " % (self.method, self.path)) if self.method else ""
        if self.status:
            return "%sHTTP %s %s: %s" % (where, self.status, self.reason, self.message)
        return "%s%s" % (where, self.message)

    @property
    def not_found(self):
        return self.status == 404

    @property
    def conflict(self):
        return self.status == 409

    @property
    def unauthorized(self):
        return self.status in (401, 403)


# --------------------------------------------------------------------------- configuration


def _load_yaml(path):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, "rb") as handle:
        return yaml.load(handle, Loader=loader) or {}


def _kubeconfig_paths(params):
    raw = params.get("kubeconfig") or os.environ.get("KUBECONFIG") or ""
    paths = [os.path.expanduser(p) for p in raw.split(os.pathsep) if p]
    if params.get("kubeconfig"):
        missing = [p for p in paths if not os.path.exists(p)]
        # like kubectl, a list may name files that do not exist; a single file (or none found) must
        if missing and (len(paths) == 1 or len(missing) == len(paths)):
            raise KubeConfigError("kubeconfig %s does not exist" % ", ".join(missing))
    if not paths:
        default = os.path.expanduser("~/.kube/config")
        paths = [default] if os.path.exists(default) else []
    return [p for p in paths if os.path.exists(p)]


def _merge_kubeconfigs(paths):
    """KUBECONFIG semantics: the first file that defines a name (or current-context) wins."""
    merged = {"clusters": {}, "users": {}, "contexts": {}, "current-context": None, "_dir": {}}
    for path in paths:
        try:
            doc = _load_yaml(path)
        except Exception as exc:  # yaml errors, permissions
            raise KubeConfigError("kubeconfig %s could not be read: %s" % (path, exc))
        if not isinstance(doc, dict):
            raise KubeConfigError("kubeconfig %s is not a kubeconfig mapping" % path)
        base = os.path.dirname(os.path.abspath(path))
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in doc.get(section) or []:
                name = entry.get("name")
                if name is not None and name not in merged[section]:
                    merged[section][name] = entry.get(key) or {}
                    merged["_dir"][(section, name)] = base
        if not merged["current-context"] and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
    return merged


def _abs(path, base):
    if not path:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(base, path)


def _b64(data):
    return base64.b64decode(data)


def load_connection(params):
    """Resolve K8S_ARGSPEC options to a plain connection dict.

    Keys: ``server``, ``token``, ``basic_auth`` ('user:pass'), ``ca_file``, ``ca_data`` (bytes),
    ``cert_file``/``key_file`` or ``cert_data``/``key_data`` (bytes), ``verify`` (bool),
    ``tls_server_name``, ``context``, ``source`` (where it came from, for messages), ``proxy_url``
    (the cluster's ``proxy-url``; the environment's proxy is decided by ``proxy_for``).
    """
    conn = dict(server=None, token=None, basic_auth=None, ca_file=None, ca_data=None, cert_file=None,
                key_file=None, cert_data=None, key_data=None, verify=True, tls_server_name=None,
                context=None, source=None, proxy_url=None)
    host = params.get("host")
    paths = [] if (host and not params.get("kubeconfig") and not params.get("context")) else _kubeconfig_paths(params)
    if paths:
        cfg = _merge_kubeconfigs(paths)
        context_name = params.get("context") or cfg["current-context"]
        if not context_name:
            raise KubeConfigError("no context given and kubeconfig %s has no current-context" % os.pathsep.join(paths))
        context = cfg["contexts"].get(context_name)
        if context is None:
            raise KubeConfigError("context %r is not in kubeconfig %s (available: %s)" % (
                context_name, os.pathsep.join(paths), ", ".join(sorted(cfg["contexts"])) or "none"))
        conn["context"] = context_name
        conn["source"] = "kubeconfig %s, context %s" % (os.pathsep.join(paths), context_name)
        cluster_name, user_name = context.get("cluster"), context.get("user")
        cluster = cfg["clusters"].get(cluster_name)
        if cluster is None:
            raise KubeConfigError("context %r names cluster %r, which the kubeconfig does not define" % (context_name, cluster_name))
        user = cfg["users"].get(user_name, {}) if user_name else {}
        cbase = cfg["_dir"].get(("clusters", cluster_name), ".")
        ubase = cfg["_dir"].get(("users", user_name), ".")
        conn["server"] = cluster.get("server")
        conn["verify"] = not cluster.get("insecure-skip-tls-verify", False)
        conn["tls_server_name"] = cluster.get("tls-server-name")
        conn["proxy_url"] = cluster.get("proxy-url") or None
        if cluster.get("certificate-authority-data"):
            conn["ca_data"] = _b64(cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            conn["ca_file"] = _abs(cluster["certificate-authority"], cbase)
        if user.get("exec") or user.get("auth-provider"):
            if KUBERNETES_IMPORT_ERROR is not None:
                plugin = "exec" if user.get("exec") else "auth-provider"
                raise KubeConfigError(
                    "kubeconfig user %r authenticates with an %s plugin, which needs the Python package %s on "
                    "the host running the module (pip install '%s'); kubeconfigs with a token, client "
                    "certificate or basic auth do not"
                    % (user_name, plugin, KUBERNETES_REQUIREMENT[0], KUBERNETES_REQUIREMENT[0]))
            _from_official_loader(conn, params, paths, context_name)
        else:
            if user.get("token"):
                conn["token"] = user["token"]
            elif user.get("tokenFile"):
                with open(_abs(user["tokenFile"], ubase)) as handle:
                    conn["token"] = handle.read().strip()
            if user.get("client-certificate-data"):
                conn["cert_data"] = _b64(user["client-certificate-data"])
            elif user.get("client-certificate"):
                conn["cert_file"] = _abs(user["client-certificate"], ubase)
            if user.get("client-key-data"):
                conn["key_data"] = _b64(user["client-key-data"])
            elif user.get("client-key"):
                conn["key_file"] = _abs(user["client-key"], ubase)
            if user.get("username") and user.get("password"):
                conn["basic_auth"] = "%s:%s" % (user["username"], user["password"])
    elif not host:
        service_host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not service_host or not os.path.exists(IN_CLUSTER_TOKEN):
            raise KubeConfigError(
                "no kubeconfig found (kubeconfig option, K8S_AUTH_KUBECONFIG, KUBECONFIG, ~/.kube/config) "
                "and not running in a cluster")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in service_host:
            service_host = "[%s]" % service_host
        conn["server"] = "https://%s:%s" % (service_host, port)
        with open(IN_CLUSTER_TOKEN) as handle:
            conn["token"] = handle.read().strip()
        conn["ca_file"] = IN_CLUSTER_CA
        conn["source"] = "in-cluster service account"
    if host:
        conn["server"] = host
        conn["source"] = (conn["source"] + ", host option") if conn["source"] else "host option"
    if params.get("api_key"):
        conn["token"] = params["api_key"]
        conn["basic_auth"] = None
    if params.get("ca_cert"):
        conn["ca_file"], conn["ca_data"] = params["ca_cert"], None
    if params.get("validate_certs") is not None:
        conn["verify"] = bool(params["validate_certs"])
    if not conn["server"]:
        raise KubeConfigError("no API server URL: the kubeconfig cluster has no server and no host option was given")
    conn["server"] = conn["server"].rstrip("/")
    return conn


def _from_official_loader(conn, params, paths, context_name):
    """exec/auth-provider users: let the official client run the plugin (heavier import)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=os.pathsep.join(paths), context=context_name,
                            client_configuration=configuration)
    auth = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if auth:
        conn["token"] = auth[len("Bearer "):] if auth.startswith("Bearer ") else auth
    if configuration.cert_file:
        conn["cert_file"], conn["key_file"] = configuration.cert_file, configuration.key_file


# --------------------------------------------------------------------------- proxies


def _split_host_port(netloc, default_port=None):
    host, port = netloc, default_port
    if netloc.startswith("["):
        host, dummy, rest = netloc[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif netloc.count(":") == 1:
        host, dummy, text = netloc.partition(":")
        if text.isdigit():
            port = int(text)
    return host.lower().rstrip("."), port


def _server_host_port(server):
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, _split_host_port(parts.netloc.rpartition("@")[2], default)


def no_proxy_entry_matches(entry, host, port):
    """One ``NO_PROXY`` entry against the server's host and port (curl and Go semantics):
    ``*`` matches everything; an IP address or CIDR matches addresses; a name matches itself and
    its subdomains (a leading ``.`` or ``*.`` is the same); ``:port`` restricts it to that port."""
    import ipaddress

    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if "/" in entry:
        try:
            return address is not None and address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    name, entry_port = _split_host_port(entry)
    if entry_port is not None and entry_port != port:
        return False
    try:
        entry_address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        entry_address = None
    if entry_address is not None or address is not None:
        return entry_address is not None and entry_address == address
    if name.startswith("*."):
        name = name[1:]
    name = name.lstrip(".")
    return bool(name) and (host == name or host.endswith("." + name))


def proxy_for(server, proxy_url=None, environ=None):
    """The proxy to reach ``server`` through, as kubectl decides it.

    Returns ``(url, source)`` — ``(None, reason)`` when the connection is direct. The kubeconfig
    cluster's ``proxy-url`` wins and ignores ``NO_PROXY`` (as in kubectl); otherwise
    ``HTTPS_PROXY`` for an ``https://`` server (``HTTP_PROXY`` for ``http://``), upper case first,
    unless an entry of ``NO_PROXY`` covers the server's host (and port).
    """
    if proxy_url:
        return proxy_url, "kubeconfig proxy-url"
    environ = os.environ if environ is None else environ
    scheme, (host, port) = _server_host_port(server)
    name = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    source = name if environ.get(name) else name.lower()
    url = environ.get(name) or environ.get(name.lower())
    if not url:
        return None, "no proxy configured"
    no_proxy_name = "NO_PROXY" if environ.get("NO_PROXY") else "no_proxy"
    for entry in (environ.get(no_proxy_name) or "").split(","):
        if no_proxy_entry_matches(entry, host, port):
            return None, "%s entry %r covers %s" % (no_proxy_name, entry.strip(), host)
    return url, source


def _proxy_manager(proxy_url, pool_kwargs):
    """A urllib3 pool manager that tunnels through ``proxy_url`` (http/https: CONNECT; socks5/socks4
    with PySocks). Credentials in the URL become the proxy's Basic authorization."""
    import urllib3
    from urllib.parse import unquote, urlsplit

    if "://" not in proxy_url:
        proxy_url = "http://" + proxy_url  # as Go and curl read a bare host:port
    parts = urlsplit(proxy_url)
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:
            raise KubeConfigError("proxy %s is a SOCKS proxy, which needs the Python package PySocks "
                                  "(pip install 'urllib3[socks]')" % redact_url(proxy_url))
        return SOCKSProxyManager(proxy_url, **pool_kwargs)
    if scheme not in ("http", "https"):
        raise KubeConfigError("proxy %s: unsupported scheme %r (http, https, socks5)" % (redact_url(proxy_url), scheme))
    headers = None
    if parts.username is not None:
        headers = urllib3.make_headers(proxy_basic_auth="%s:%s" % (unquote(parts.username), unquote(parts.password or "")))
    clean = "%s://%s" % (scheme, parts.netloc.rpartition("@")[2])
    return urllib3.ProxyManager(clean, proxy_headers=headers, **pool_kwargs)


# --------------------------------------------------------------------------- the lean client


def _quote(value):
    try:
        from urllib.parse import quote
    except ImportError:  # pragma: no cover - Python 2
        from urllib import quote
    return quote(str(value), safe="")


def encode_query(query):
    if not query:
        return ""
    parts = []
    for key in sorted(query):
        value = query[key]
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        parts.append("%s=%s" % (_quote(key), _quote(value)))
    return ("?" + "&".join(parts)) if parts else ""


class KubeClient(object):
    """JSON over HTTPS to the API server, shareable between threads."""

    def __init__(self, params=None, connection=None, request_timeout=30.0, pool_size=16):
        self.connection = connection if connection is not None else load_connection(params or {})
        self.proxy, self.proxy_source = proxy_for(self.connection["server"], self.connection.get("proxy_url"))
        if self.proxy:
            scheme = self.proxy.partition("://")[0].lower() if "://" in self.proxy else "http"
            if scheme not in ("http", "https", "socks4", "socks4a", "socks5", "socks5h"):
                raise KubeConfigError("proxy %s (%s): unsupported scheme %r (http, https, socks5)"
                                      % (redact_url(self.proxy), self.proxy_source, scheme))
        self.request_timeout = request_timeout
        self._pool_size = pool_size
        self._pool = None
        self._lock = threading.Lock()

    # -- transport
    @property
    def server(self):
        return self.connection["server"]

    def _ssl_context(self):
        import ssl

        conn = self.connection
        ctx = ssl.create_default_context()
        if conn["verify"]:
            if conn["ca_file"] or conn["ca_data"]:
                ctx = ssl.create_default_context(
                    cafile=conn["ca_file"],
                    cadata=conn["ca_data"].decode("ascii") if conn["ca_data"] else None)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if conn["cert_data"] or conn["cert_file"]:
            self._load_client_cert(ctx)
        return ctx

    def _load_client_cert(self, ctx):
        import tempfile

        conn = self.connection
        temps = []
        try:
            cert, key = conn["cert_file"], conn["key_file"]
            for attr in ("cert_data", "key_data"):
                if conn[attr]:
                    fd, path = tempfile.mkstemp(prefix="apex-k8s-", suffix=".pem")  # 0600
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(conn[attr])
                    temps.append(path)
                    if attr == "cert_data":
                        cert = path
                    else:
                        key = path
            ctx.load_cert_chain(cert, key)
        finally:
            for path in temps:
                os.unlink(path)

    def _get_pool(self):
        with self._lock:
            if self._pool is None:
                import urllib3

                kwargs = dict(num_pools=4, maxsize=self._pool_size, block=False, retries=False)
                if self.server.startswith("https"):
                    kwargs["ssl_context"] = self._ssl_context()
                    if not self.connection["verify"]:
                        kwargs["cert_reqs"] = "CERT_NONE"
                        kwargs["assert_hostname"] = False
                        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                    elif self.connection["tls_server_name"]:
                        kwargs["server_hostname"] = self.connection["tls_server_name"]
                        kwargs["assert_hostname"] = self.connection["tls_server_name"]
                if self.proxy:
                    self._pool = _proxy_manager(self.proxy, kwargs)
                else:
                    self._pool = urllib3.PoolManager(**kwargs)
            return self._pool

    def _headers(self, content_type=None):
        headers = {"Accept": "application/json", "User-Agent": "apex.ops"}
        if self.connection["token"]:
            headers["Authorization"] = "Bearer " + self.connection["token"]
        elif self.connection["basic_auth"]:
            headers["Authorization"] = "Basic " + base64.b64encode(
                self.connection["basic_auth"].encode("utf-8")).decode("ascii")
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _raw(self, method, path, query=None, body=None, content_type=None, timeout=None, stream=False):
        import urllib3

        url = self.server + path + encode_query(query)
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            content_type = content_type or "application/json"
        read_timeout = timeout if timeout is not None else self.request_timeout
        try:
            return self._get_pool().request(
                method, url, body=data, headers=self._headers(content_type),
                timeout=urllib3.Timeout(connect=min(10.0, self.request_timeout), read=read_timeout),
                preload_content=not stream, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            via = (" through proxy %s (%s)" % (redact_url(self.proxy), self.proxy_source)) if self.proxy else ""
            raise KubeApiError(0, "Unreachable", "cannot reach the Kubernetes API at %s%s (%s): %s"
                               % (self.server, via, self.connection.get("source") or "configured", reason),
                               method=method, path=path)

    @staticmethod
    def _error(method, path, response, data=None):
        data = response.data if data is None else data
        message, reason = None, response.reason
        try:
            status = json.loads(data.decode("utf-8"))
            message = status.get("message")
            reason = status.get("reason") or reason
        except Exception:
            message = data.decode("utf-8", "replace")[:500] if data else None
        if response.status == 401:
            message = "the API server rejected the credentials (401 Unauthorized): check the token/api_key or kubeconfig user"
        return KubeApiError(response.status, reason, message or reason, method=method, path=path)

    def request(self, method, path, query=None, body=None, content_type=None, timeout=None):
        response = self._raw(method, path, query=query, body=body, content_type=content_type, timeout=timeout)
        if response.status >= 400:
            raise self._error(method, path, response)
        if not response.data:
            return {}
        return json.loads(response.data.decode("utf-8"))

    # -- verbs
    def get(self, path, query=None):
        return self.request("GET", path, query=query)

    def list(self, path, label_selector=None, field_selector=None, query=None):
        query = dict(query or {})
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        return self.request("GET", path, query=query)

    def merge_patch(self, path, patch):
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def put(self, path, body):
        return self.request("PUT", path, body=body)

    def post(self, path, body):
        return self.request("POST", path, body=body)

    def delete(self, path):
        return self.request("DELETE", path)

    # -- text (pod logs, which the API serves as text/plain, not JSON)
    def get_text(self, path, query=None):
        """The body at ``path`` as text (``.../pods/<name>/log``); an error status raises ``KubeApiError``."""
        response = self._raw("GET", path, query=query)
        if response.status >= 400:
            raise self._error("GET", path, response)
        return (response.data or b"").decode("utf-8", "replace")

    def watch(self, path, resource_version=None, timeout_seconds=30, label_selector=None, field_selector=None):
        """Yield ``(type, object)`` for each watch event until the server ends the stream.

        An ``ERROR`` event with code 410 (or an HTTP 410) raises ``KubeApiError`` with
        status 410: the caller lists again.
        """
        query = {"watch": "true", "timeoutSeconds": int(timeout_seconds), "allowWatchBookmarks": "true"}
        if resource_version:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        response = self._raw("GET", path, query=query, timeout=float(timeout_seconds) + 10.0, stream=True)
        finished = False
        try:
            if response.status >= 400:
                raise self._error("GET", path, response, data=response.read())
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = self._event(line, path)
                    if event is not None:
                        yield event
            if buffer.strip():
                event = self._event(buffer, path)
                if event is not None:
                    yield event
            finished = True
        finally:
            if finished:
                response.release_conn()
            else:
                # left early (condition met, deadline, error): the stream is still open on the
                # server; close this connection rather than return it to the pool half-read
                response.close()

    @staticmethod
    def _event(line, path):
        line = line.strip()
        if not line:
            return None
        event = json.loads(line.decode("utf-8"))
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            code = obj.get("code") or 500
            raise KubeApiError(code, obj.get("reason") or "Error", obj.get("message") or "watch error",
                               method="WATCH", path=path)
        return event.get("type"), obj

    def close(self):
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None


def get_or_none(client, path, query=None):
    """The object at ``path``, or None when it does not exist (404); other errors raise.
    Works with any client that has ``get`` (the lean client, the test fakes)."""
    try:
        return client.get(path, query=query) if query else client.get(path)
    except KubeApiError as exc:
        if exc.not_found:
            return None
        raise


def connect(params, **kwargs):
    """A ``KubeClient`` for the module's K8S_ARGSPEC params (raises KubeConfigError)."""
    return KubeClient(params, **kwargs)


def run_parallel(calls, max_workers=8):
    """Run ``{key: callable}`` concurrently (the client's pool is thread-safe); returns
    ``{key: (value, exception)}``: each call's failure is the caller's to report."""
    from concurrent.futures import ThreadPoolExecutor

    results = {}
    if not calls:
        return results
    with ThreadPoolExecutor(max_workers=min(max_workers, len(calls))) as pool:
        futures = dict((key, pool.submit(fn)) for key, fn in calls.items())
        for key, future in futures.items():
            try:
                results[key] = (future.result(), None)
            except Exception as exc:  # reported per call by the caller
                results[key] = (None, exc)
    return results


def object_stream(client, collection_path, name, deleted_error=None):
    """``(relist, watch)`` for ``waiting.watch_until`` over one named object of a collection.

    ``relist`` reads the object (a 404 raises ``KubeApiError``); ``watch`` follows it with a
    field-selected watch from a resourceVersion, turns bookmarks into version-only events and
    410 Gone into ``StreamExpired`` (relist). The object being deleted raises
    ``deleted_error()`` (by default a 404 ``KubeApiError``).
    """
    selector = "metadata.name=%s" % name

    def relist():
        obj = client.get("%s/%s" % (collection_path, name))
        return obj, (obj.get("metadata") or {}).get("resourceVersion")

    def watch(version, seconds):
        try:
            for etype, obj in client.watch(collection_path, resource_version=version, timeout_seconds=seconds,
                                           field_selector=selector):
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if etype == "BOOKMARK":
                    yield None, version
                elif etype == "DELETED":
                    if deleted_error is not None:
                        raise deleted_error()
                    raise KubeApiError(404, "NotFound", "%s was deleted while waiting for it" % name,
                                       method="WATCH", path=collection_path)
                else:
                    yield obj, version
        except KubeApiError as exc:
            # 410 Gone: the version is too old; 0/429/5xx: the stream broke or the server is busy.
            # Either way the wait lists again (a relist that fails too is a real failure).
            if exc.status in (0, 410, 429) or exc.status >= 500:
                raise StreamExpired(str(exc))
            raise
        except Exception as exc:
            if _transport_error(exc):  # connection reset or read timeout in the middle of a stream
                raise StreamExpired("%s: %s" % (type(exc).__name__, exc))
            raise

    return relist, watch


def _transport_error(exc):
    try:
        from urllib3.exceptions import HTTPError
    except ImportError:  # pragma: no cover - urllib3 comes with the kubernetes requirement
        HTTPError = ()
    return isinstance(exc, (HTTPError, OSError, ValueError)) and not isinstance(exc, KubeApiError)
