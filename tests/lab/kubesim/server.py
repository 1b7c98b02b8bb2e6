"""The HTTP(S) front end: routing, authentication, discovery, CRUD verbs, patch, watch,
Table printing and the subresources (status, scale, log, eviction)."""
import base64
import copy
import json
import socket
import ssl
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import convert, metrics, registry, schema, tables
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .selectors import match_fields, match_labels, parse_field_selector, parse_label_selector
from .store import ApiError, Gone, conflict, not_found, now_iso

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4-kubesim",
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.8", "compiler": "gc",
           "platform": "linux/amd64"}
CRD_GROUPS = {"cert-manager.io"}
LIST_KIND_SUFFIX = "List"


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class KubeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, cluster, token, ssl_ctx=None, log=None):
        self.cluster = cluster
        self.token = token
        self.ssl_ctx = ssl_ctx
        self.log = log
        ThreadingHTTPServer.__init__(self, addr, Handler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, socket.timeout, OSError)):
            return  # a probe or a client that went away: not worth a traceback
        ThreadingHTTPServer.handle_error(self, request, client_address)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_ctx is not None:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return sock, addr


def _discovery_resources(group, version):
    out = []
    for res in registry.RESOURCES:
        if res.group != group or res.version != version:
            continue
        entry = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                 "kind": res.kind, "verbs": res.verbs}
        if res.short:
            entry["shortNames"] = res.short
        if res.categories:
            entry["categories"] = res.categories
        entry["storageVersionHash"] = base64.b64encode(
            ("%s/%s" % (res.group, res.plural)).encode()).decode()[:11] + "="
        out.append(entry)
        for sub in res.subresources:
            g, v, kind, verbs = registry.SUBRESOURCE_INFO.get(sub, (None, None, None, ["get"]))
            if sub == "finalize":
                verbs = ["update"]
            se = {"name": "%s/%s" % (res.plural, sub), "singularName": "",
                  "namespaced": res.namespaced, "kind": kind or res.kind, "verbs": verbs}
            if g is not None:
                se["group"] = g
                se["version"] = v
            out.append(se)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": version if not group else "%s/%s" % (group, version),
            "resources": out}


def _api_group(group):
    versions = registry.GROUPS[group]
    vs = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in versions]
    return {"name": group, "versions": vs, "preferredVersion": vs[0]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubesim"
    sys_version = ""

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                raise

    def handle(self):
        try:
            BaseHTTPRequestHandler.handle(self)
        except (ConnectionError, ssl.SSLError, socket.timeout, OSError):
            pass

    def log_message(self, fmt, *args):
        if self.server.log:
            self.server.log.write("%s %s\n" % (self.server.cluster.name, fmt % args))
            self.server.log.flush()

    do_GET = lambda self: self.dispatch("GET")
    do_POST = lambda self: self.dispatch("POST")
    do_PUT = lambda self: self.dispatch("PUT")
    do_PATCH = lambda self: self.dispatch("PATCH")
    do_DELETE = lambda self: self.dispatch("DELETE")
    do_HEAD = lambda self: self.dispatch("HEAD")

    # ------------------------------------------------------------------ plumbing
    def read_body(self):
        if getattr(self, "_body", None) is not None:
            return self._body
        length = self.headers.get("Content-Length")
        if length:
            data = self.rfile.read(int(length))
        elif "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(chunks)
        else:
            data = b""
        self._body = data
        return data

    def body_json(self):
        data = self.read_body()
        if not data:
            raise ApiError(400, "BadRequest", "the request body is empty")
        ctype = (self.headers.get("Content-Type") or "").lower()
        if "protobuf" in ctype:
            from . import protobuf
            try:
                return protobuf.decode_object(data)
            except protobuf.ProtobufError as exc:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request could "
                               "not be decoded as protobuf (%s) - send application/json" % exc)
        if "cbor" in ctype:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           "unknown format - accepted media types include: application/json, "
                           "application/yaml, application/vnd.kubernetes.protobuf")
        try:
            if "yaml" in ctype:
                import yaml
                return yaml.safe_load(data)
            return json.loads(data)
        except Exception as exc:
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown "
                           "format - accepted media types include: application/json, "
                           "application/yaml (%s)" % exc)

    def send(self, code, obj, ctype="application/json"):
        data = obj if isinstance(obj, bytes) else dumps(obj)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", "kubesim")
        if getattr(self, "_warnings", None):
            for w in self._warnings:
                self.send_header("Warning", '299 - "%s"' % w.replace("\\", "\\\\").replace(
                    '"', '\\"'))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, code, text):
        self.send(code, text.encode(), "text/plain; charset=utf-8")

    def dispatch(self, method):
        self._body = None
        self._warnings = []
        try:
            url = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            path = url.path.rstrip("/") or "/"
            if path in ("/healthz", "/readyz", "/livez") or path.startswith(
                    ("/healthz/", "/readyz/", "/livez/")):
                app = getattr(self.server, "app", None)
                if path.startswith("/readyz") and app is not None and not app.ready.is_set():
                    return self.send_text(503, "[-]kubesim-seed failed: not settled yet\n"
                                          "readyz check failed")
                return self.send_text(200, "ok")
            if path == "/version":
                return self.send(200, VERSION)
            auth = self.headers.get("Authorization") or ""
            if auth != "Bearer " + self.server.token:
                self.read_body()
                return self.send(401, ApiError(401, "Unauthorized", "Unauthorized").status())
            self.route(method, path)
        except ApiError as exc:
            self.read_body()
            self.send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - reported to the client
            traceback.print_exc(file=sys.stderr)
            try:
                self.send(500, ApiError(500, "InternalError",
                                        "Internal error occurred: %s" % exc).status())
            except Exception:
                self.close_connection = True

    # ------------------------------------------------------------------ routing
    def route(self, method, path):
        segs = [s for s in path.split("/") if s]
        if path == "/api":
            port = self.server.server_address[1]
            return self.send(200, {"kind": "APIVersions", "versions": ["v1"],
                                   "serverAddressByClientCIDRs": [
                                       {"clientCIDR": "0.0.0.0/0",
                                        "serverAddress": "127.0.0.1:%d" % port}]})
        if path == "/apis":
            return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                   "groups": [_api_group(g) for g in registry.GROUPS]})
        if path == "/openapi/v2":
            accept = self.headers.get("Accept") or ""
            if "protobuf" in accept:
                # An empty protobuf message is a valid (empty) openapi_v2.Document: kubectl
                # then finds no schema for any kind and skips client-side validation.
                return self.send(200, b"", "application/com.github.proto-openapi.spec.v2.v1.0"
                                 "+protobuf")
            return self.send(200, {"swagger": "2.0", "info": {"title": "Kubernetes (kubesim)",
                                                              "version": "v1.32.4"},
                                   "paths": {}, "definitions": {}})
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) >= 2:
            group = segs[1]
            if len(segs) == 2:
                if group not in registry.GROUPS:
                    raise ApiError(404, "NotFound", "the server could not find the requested "
                                   "resource")
                return self.send(200, dict(_api_group(group), kind="APIGroup", apiVersion="v1"))
            version, rest = segs[2], segs[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (group == "" and version != "v1") or (group and version not in
                                                 registry.GROUPS.get(group, [])):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "method not allowed")
            return self.send(200, _discovery_resources(group, version))
        if rest[0] == "watch":
            self.query["watch"] = "true"
            rest = rest[1:]
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
                group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns = rest[1]
            rest = rest[2:]
        res = registry.lookup(group, version, rest[0])
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if ns is not None and not res.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self.handle_resource(method, res, ns, name, sub)

    # ------------------------------------------------------------------ verbs
    def handle_resource(self, method, res, ns, name, sub):
        cluster = self.server.cluster
        skey = (res.group, res.plural) if (res.group, res.plural) in registry.COMPUTED else \
            res.storage
        dry = self.query.get("dryRun") == "All"
        if (res.group, res.plural) in registry.REVIEWS:
            if method != "POST" or name is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            body = self.body_json()
            body.setdefault("metadata", {})["creationTimestamp"] = now_iso()
            if res.plural == "selfsubjectaccessreviews":
                body["status"] = {"allowed": True, "reason": "kubesim: the lab token may do "
                                  "anything"}
            elif res.plural == "selfsubjectrulesreviews":
                body["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                                     "resources": ["*"]}],
                                  "nonResourceRules": [{"verbs": ["*"],
                                                        "nonResourceURLs": ["*"]}],
                                  "incomplete": False}
            else:
                body["status"] = {"userInfo": {"username": "kubesim-admin-%s" % cluster.name,
                                               "groups": ["system:masters",
                                                          "system:authenticated"]}}
            body["apiVersion"], body["kind"] = registry.api_version(res), res.kind
            return self.send(201, body)
        if (res.group, res.plural) in registry.COMPUTED:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            items = metrics.compute(cluster, res.plural, ns)
            if name:
                for it in items:
                    if it["metadata"]["name"] == name:
                        return self.send(200, it)
                raise not_found(res, name)
            items = self.filter(items)
            return self.send(200, {"kind": res.kind + "List", "apiVersion":
                                   registry.api_version(res), "metadata": {}, "items": items})
        if name is None:
            if method == "GET":
                if str(self.query.get("watch")).lower() in ("true", "1"):
                    return self.watch(res, ns)
                return self.list(res, ns)
            if method == "POST":
                body = self.body_json()
                self.check_kind(res, body)
                self.validate_fields(res, body)
                if res.namespaced:
                    meta = body.setdefault("metadata", {})
                    if meta.get("namespace") and ns and meta["namespace"] != ns:
                        raise ApiError(400, "BadRequest", "the namespace of the provided object "
                                       "does not match the namespace sent on the request")
                    meta["namespace"] = ns or meta.get("namespace") or "default"
                obj = convert.to_storage(res, body)
                created = cluster.create(res, obj, dry_run=dry)
                return self.send(201, self.out(res, created))
            if method == "DELETE":
                return self.delete_collection(res, ns)
            raise ApiError(405, "MethodNotAllowed", "method not allowed")
        if sub == "log":
            return self.pod_log(ns, name)
        if sub == "eviction":
            return self.evict(ns, name)
        if sub == "scale":
            return self.scale(method, res, ns, name)
        if method == "GET":
            obj = cluster.must_get(res, ns, name)
            if str(self.query.get("watch")).lower() in ("true", "1"):
                self.query["fieldSelector"] = "metadata.name=" + name
                return self.watch(res, ns)
            return self.send_object(res, obj)
        if method == "PUT":
            body = self.body_json()
            self.check_kind(res, body)
            self.validate_fields(res, body)
            meta = body.setdefault("metadata", {})
            if meta.get("name") and meta["name"] != name:
                raise ApiError(400, "BadRequest", "the name of the object (%s) does not match "
                               "the name on the URL (%s)" % (meta["name"], name))
            meta["name"] = name
            if res.namespaced:
                meta["namespace"] = ns
            with cluster.lock:
                old = cluster.get(res.storage, ns if res.namespaced else "", name)
                if old is None:
                    if res.storage == ("coordination.k8s.io", "leases") or sub is None and \
                            res.group in ("",) and res.plural in ("events",):
                        created = cluster.create(res, convert.to_storage(res, body), dry_run=dry)
                        return self.send(201, self.out(res, created))
                    raise not_found(res, name)
                obj = convert.to_storage(res, body, old)
                updated = cluster.update(res, obj, sub=sub, dry_run=dry)
            return self.send(200, self.out(res, updated))
        if method == "PATCH":
            return self.patch(res, ns, name, sub, dry)
        if method == "DELETE":
            opts = {}
            if self.read_body():
                try:
                    opts = json.loads(self.read_body())
                except ValueError:
                    opts = {}
            prop = self.query.get("propagationPolicy") or opts.get("propagationPolicy")
            if opts.get("orphanDependents") is True:
                prop = "Orphan"
            if opts.get("dryRun") == ["All"]:
                dry = True
            gone = cluster.delete(res, ns, name, propagation=prop,
                                  preconditions=opts.get("preconditions"), dry_run=dry)
            if gone["metadata"].get("deletionTimestamp") or res.plural in ("pods", "namespaces"):
                return self.send(200, self.out(res, gone))
            return self.send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                   "status": "Success",
                                   "details": {"name": name, "group": res.group,
                                               "kind": res.plural,
                                               "uid": gone["metadata"].get("uid")}})
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    def validate_fields(self, res, obj, patch=None, apply=False):
        """Server-side field validation of a request object (``schema.py``): Strict refuses
        unknown fields (create/update: 400, patch: 422), Warn (the default) and Ignore drop
        them, Warn with a warning header. ``patch``: the patch body (for the message);
        ``apply``: server-side apply, which refuses unknown fields whatever the directive.
        Protobuf bodies cannot carry unknown fields and are not checked."""
        if not isinstance(obj, dict) or "protobuf" in (self.headers.get("Content-Type") or ""):
            return
        model = schema.model_for(registry.api_version(res), res.kind)
        if model is None:
            return
        paths = schema.unknown_fields(obj, model)
        if not paths:
            return
        directive = self.query.get("fieldValidation") or "Warn"
        if apply:
            meta = obj.get("metadata") or {}
            raise ApiError(500, "InternalError", "failed to create typed patch object (%s/%s; "
                           "%s, Kind=%s): %s" % (
                               meta.get("namespace", ""), meta.get("name", ""),
                               registry.api_version(res), res.kind,
                               "; ".join(".%s: field not declared in schema" % p
                                         for p in paths)))
        if directive == "Strict":
            msg = schema.strict_message(paths)
            if patch is None:
                raise ApiError(400, "BadRequest", "%s in version \"%s\" cannot be handled as a "
                               "%s: %s" % (res.kind, res.version, res.kind, msg))
            raise ApiError(422, "Invalid", ' "" is invalid: patch: Invalid value: "%s": %s' % (
                patch, msg), {"causes": [{"reason": "FieldValueInvalid",
                                          "message": 'Invalid value: "%s": %s' % (patch, msg),
                                          "field": "patch"}]})
        if directive == "Warn":
            self._warnings.extend('unknown field "%s"' % p for p in paths)
        schema.prune(obj, paths)

    def check_kind(self, res, body):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        kind = body.get("kind")
        av = body.get("apiVersion")
        if kind and kind != res.kind:
            raise ApiError(400, "BadRequest", "the API version in the data (%s) does not match "
                           "the expected API version (%s)" % (av, registry.api_version(res)))

    def out(self, res, obj):
        if convert.needs_conversion(res):
            return convert.to_version(res, obj)
        return obj

    def wants_table(self):
        accept = self.headers.get("Accept") or ""
        if "as=Table" in accept:
            return "v1beta1" if "v=v1beta1" in accept.split("as=Table")[1][:20] and \
                "v=v1;" not in accept else "v1"
        return None

    def send_object(self, res, obj):
        tv = self.wants_table()
        if tv:
            return self.send(200, tables.table(res.storage, [obj], obj["metadata"]
                                               ["resourceVersion"],
                                               self.query.get("includeObject", "Metadata"), tv))
        return self.send(200, self.out(res, obj))

    def filter(self, items):
        ls = self.query.get("labelSelector")
        fs = self.query.get("fieldSelector")
        if ls:
            reqs = parse_label_selector(ls)
            items = [o for o in items if match_labels(reqs, o["metadata"].get("labels"))]
        if fs:
            reqs = parse_field_selector(fs)
            items = [o for o in items if match_fields(reqs, o)]
        return items

    def list(self, res, ns):
        cluster = self.server.cluster
        with cluster.lock:
            items = cluster.store.list(res.storage, ns if res.namespaced else None)
            rv = cluster.store.rv
        items = self.filter(items)
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        cont = None
        limit = int(self.query.get("limit") or 0)
        token = self.query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()).decode())["start"]
            except Exception:
                raise ApiError(400, "BadRequest", "continue key is not valid")
            items = [o for o in items
                     if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > tuple(start)]
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            cont = base64.urlsafe_b64encode(json.dumps(
                {"start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            items = items[:limit]
        tv = self.wants_table()
        if tv:
            return self.send(200, tables.table(res.storage, items, rv,
                                               self.query.get("includeObject", "Metadata"), tv,
                                               cont))
        if convert.needs_conversion(res):
            items = [convert.to_version(res, o) for o in items]
        meta = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
        body = {"kind": res.kind + LIST_KIND_SUFFIX, "apiVersion": registry.api_version(res),
                "metadata": meta, "items": items}
        return self.send(200, body)

    # ------------------------------------------------------------------ watch
    def watch(self, res, ns):
        cluster = self.server.cluster
        store = cluster.store
        skey = res.storage
        ns = ns if res.namespaced else None
        lreqs = parse_label_selector(self.query.get("labelSelector") or "")
        freqs = parse_field_selector(self.query.get("fieldSelector") or "")
        timeout = float(self.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv_param = self.query.get("resourceVersion") or ""
        table_version = self.wants_table()
        include = self.query.get("includeObject", "Metadata")

        def matches(obj):
            if obj is None:
                return False
            if ns is not None and obj["metadata"].get("namespace") != ns:
                return False
            return match_labels(lreqs, obj["metadata"].get("labels")) and \
                match_fields(freqs, obj)

        def encode(etype, obj):
            if table_version and etype != "ERROR":
                obj = tables.table(skey, [obj], obj["metadata"]["resourceVersion"], include,
                                   table_version)
            elif etype != "ERROR" and etype != "BOOKMARK":
                obj = self.out(res, obj)
            return dumps({"type": etype, "object": obj}) + b"\n"

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

        def chunk(data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        with cluster.lock:
            if rv_param in ("", "0"):
                initial = [o for o in store.list(skey, ns) if matches(o)]
                last = store.rv
            else:
                initial = []
                try:
                    last = int(rv_param)
                except ValueError:
                    raise ApiError(400, "BadRequest", "invalid resourceVersion")
        send_initial = str(self.query.get("sendInitialEvents")).lower() in ("true", "1")
        if send_initial and rv_param not in ("", "0"):
            with cluster.lock:
                initial = [o for o in store.list(skey, ns) if matches(o)]
                last = store.rv
        try:
            if initial:
                chunk(b"".join(encode("ADDED", o) for o in initial))
            if send_initial:
                # WatchList (client-go >= 1.27 reflectors, kstatus): mark the end of the
                # initial events with a bookmark annotated k8s.io/initial-events-end
                chunk(dumps({"type": "BOOKMARK", "object": {
                    "kind": res.kind, "apiVersion": registry.api_version(res),
                    "metadata": {"resourceVersion": str(last), "annotations": {
                        "k8s.io/initial-events-end": "true"}}}}) + b"\n")
            bookmark_every = 10.0 if str(self.query.get("allowWatchBookmarks")).lower() in ("true", "1") \
                else None
            next_bookmark = time.monotonic() + (bookmark_every or 1e9)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                with cluster.lock:
                    try:
                        evs = store.events_since(skey, last)
                    except Gone:
                        evs = None
                    if evs == []:
                        store.cond.wait(min(deadline, next_bookmark) - now)
                        evs = store.events_since(skey, last)
                if evs is None:
                    chunk(encode("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                           "status": "Failure", "reason": "Expired",
                                           "code": 410, "message": "too old resource version: "
                                           "%s (%d)" % (rv_param, store.hist_start.get(skey, 0))}))
                    break
                out = []
                for rv, etype, obj, old in evs:
                    last = rv
                    if etype == "MODIFIED":
                        new_m, old_m = matches(obj), matches(old)
                        if new_m and old_m:
                            out.append(encode("MODIFIED", obj))
                        elif new_m:
                            out.append(encode("ADDED", obj))
                        elif old_m:
                            out.append(encode("DELETED", obj))
                    elif matches(obj):
                        out.append(encode(etype, obj))
                if out:
                    chunk(b"".join(out))
                if bookmark_every and time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + bookmark_every
                    chunk(dumps({"type": "BOOKMARK", "object": {
                        "kind": res.kind, "apiVersion": registry.api_version(res),
                        "metadata": {"resourceVersion": str(last)}}}) + b"\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    # ------------------------------------------------------------------ patch
    def patch(self, res, ns, name, sub, dry):
        cluster = self.server.cluster
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        raw = self.read_body()
        if ctype == "application/apply-patch+yaml":
            import yaml
            try:
                body = yaml.safe_load(raw)
            except Exception as exc:
                raise ApiError(400, "BadRequest", "error decoding YAML: %s" % exc)
        else:
            try:
                body = json.loads(raw or b"null")
            except ValueError as exc:
                raise ApiError(400, "BadRequest", "error decoding patch: %s" % exc)
        if ctype == "application/apply-patch+yaml" and isinstance(body, dict):
            ident = {"name": name, "namespace": ns or ""}
            self.validate_fields(res, dict(body, metadata=dict(body.get("metadata") or {},
                                                                  **ident)), apply=True)
        with cluster.lock:
            old = cluster.get(res.storage, ns if res.namespaced else "", name)
            if old is None:
                if ctype == "application/apply-patch+yaml":
                    self.check_kind(res, body)
                    meta = body.setdefault("metadata", {})
                    meta["name"] = name
                    if res.namespaced:
                        meta["namespace"] = ns
                    created = cluster.create(res, convert.to_storage(res, body), dry_run=dry)
                    return self.send(201, self.out(res, created))
                raise not_found(res, name)
            cur = self.out(res, old)
            try:
                if ctype == "application/json-patch+json":
                    new = json_patch(cur, body)
                elif ctype == "application/merge-patch+json":
                    new = merge_patch(cur, body)
                elif ctype in ("application/strategic-merge-patch+json",
                               "application/apply-patch+yaml"):
                    if res.group in CRD_GROUPS:
                        if ctype == "application/apply-patch+yaml":
                            new = merge_patch(cur, body)
                        else:
                            raise ApiError(415, "UnsupportedMediaType",
                                           "the body of the request was in an unknown format - "
                                           "accepted media types include: "
                                           "application/json-patch+json, "
                                           "application/merge-patch+json, "
                                           "application/apply-patch+yaml")
                    else:
                        new = strategic_merge_patch(cur, body)
                else:
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in "
                                   "an unknown format - accepted media types include: "
                                   "application/json-patch+json, application/merge-patch+json, "
                                   "application/apply-patch+yaml, "
                                   "application/strategic-merge-patch+json")
            except PatchError as exc:
                raise ApiError(422, "Invalid", str(exc))
            if not isinstance(new, dict):
                raise ApiError(422, "Invalid", "the patch did not produce an object")
            new.setdefault("metadata", {})
            new["metadata"]["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = ns
            want_rv = new["metadata"].get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            # e.g. the runbook's HPA patch of `spec.targetCPUUtilizationPercentage`, a field
            # autoscaling/v2 does not have: accepted, dropped, with a warning (kubectl patch
            # sends no fieldValidation: Warn); refused with Strict
            if ctype != "application/apply-patch+yaml":
                self.validate_fields(res, new, patch=(
                    schema.go_format(body) if ctype == "application/strategic-merge-patch+json"
                    else json.dumps(new, separators=(",", ":"), sort_keys=True)))
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            obj = convert.to_storage(res, new, old)
            updated = cluster.update(res, obj, sub=sub, dry_run=dry)
        return self.send(200, self.out(res, updated))

    def delete_collection(self, res, ns):
        cluster = self.server.cluster
        with cluster.lock:
            items = self.filter(cluster.store.list(res.storage, ns if res.namespaced else None))
            deleted = []
            for obj in items:
                try:
                    deleted.append(cluster.delete(res, obj["metadata"].get("namespace", ""),
                                                  obj["metadata"]["name"],
                                                  propagation=self.query.get(
                                                      "propagationPolicy")))
                except ApiError:
                    pass
        return self.send(200, {"kind": res.kind + "List", "apiVersion": registry.api_version(res),
                               "metadata": {"resourceVersion": str(cluster.store.rv)},
                               "items": [self.out(res, o) for o in deleted]})

    # ------------------------------------------------------------------ subresources
    def scale(self, method, res, ns, name):
        cluster = self.server.cluster
        with cluster.lock:
            obj = cluster.must_get(res, ns, name)

            def as_scale(o):
                sel = (o.get("spec") or {}).get("selector") or {}
                from .selectors import selector_string
                return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                        "metadata": {"name": name, "namespace": ns,
                                     "uid": o["metadata"]["uid"],
                                     "resourceVersion": o["metadata"]["resourceVersion"],
                                     "creationTimestamp": o["metadata"]["creationTimestamp"]},
                        "spec": {"replicas": (o.get("spec") or {}).get("replicas", 0)},
                        "status": {"replicas": (o.get("status") or {}).get("replicas", 0),
                                   "selector": selector_string(sel)}}
            if method == "GET":
                return self.send(200, as_scale(obj))
            cur = as_scale(obj)
            if method == "PUT":
                new = self.body_json()
            elif method == "PATCH":
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                body = json.loads(self.read_body() or b"null")
                try:
                    if ctype == "application/json-patch+json":
                        new = json_patch(cur, body)
                    elif ctype == "application/strategic-merge-patch+json":
                        new = strategic_merge_patch(cur, body)
                    else:
                        new = merge_patch(cur, body)
                except PatchError as exc:
                    raise ApiError(422, "Invalid", str(exc))
            else:
                raise ApiError(405, "MethodNotAllowed", "method not allowed")
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != obj["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", 'Scale.autoscaling "%s" is invalid: '
                               'spec.replicas: Invalid value: %r: must be greater than or equal '
                               'to 0' % (name, replicas))
            upd = copy.deepcopy(obj)
            upd["spec"]["replicas"] = replicas
            stored = cluster.update(res, upd, force=True,
                                    dry_run=self.query.get("dryRun") == "All")
            return self.send(200, as_scale(stored))

    def evict(self, ns, name):
        from .controllers import disruption_budgets
        cluster = self.server.cluster
        body = self.body_json()
        pres = registry.lookup("", "v1", "pods")
        with cluster.lock:
            pod = cluster.must_get(pres, ns, name)
            err = disruption_budgets.check_eviction(cluster, pod)
            if err:
                raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate "
                               "the pod's disruption budget.",
                               {"causes": [{"reason": "DisruptionBudget", "message": err}]})
            if self.query.get("dryRun") == "All" or (body.get("deleteOptions") or {}).get(
                    "dryRun") == ["All"]:
                return self.send(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                       "status": "Success", "code": 201})
            disruption_budgets.record_eviction(cluster, pod)
            cluster.delete(pres, ns, name)
        return self.send(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Success", "code": 201})

    def pod_log(self, ns, name):
        cluster = self.server.cluster
        pres = registry.lookup("", "v1", "pods")
        pod = cluster.must_get(pres, ns, name)
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = self.query.get("container")
        if not container:
            if len(containers) != 1:
                raise ApiError(400, "BadRequest", "a container name must be specified for pod "
                               "%s, choose one of: [%s]" % (name, " ".join(containers)))
            container = containers[0]
        if container not in containers:
            raise ApiError(400, "BadRequest", "container %s is not valid for pod %s"
                           % (container, name))
        previous = str(self.query.get("previous")).lower() in ("true", "1")
        key = (ns, name, container)
        source = cluster.prev_logs if previous else cluster.logs
        if previous and key not in source:
            raise ApiError(400, "BadRequest", 'previous terminated container "%s" in pod "%s" '
                           "not found" % (container, name))
        tail = self.query.get("tailLines")
        since = self.query.get("sinceSeconds")
        stamps = str(self.query.get("timestamps")).lower() in ("true", "1")

        def render(lines):
            if since:
                import calendar
                cut = time.time() - int(since)
                lines = [l for l in lines if calendar.timegm(time.strptime(
                    l[0][:19], "%Y-%m-%dT%H:%M:%S")) >= cut]
            return "".join("%s%s\n" % (l[0] + " " if stamps else "", l[1]) for l in lines)

        lines = list(source.get(key, []))
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) > 0 else []
        if str(self.query.get("follow")).lower() not in ("true", "1") or previous:
            return self.send_text(200, render(lines))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = len(source.get(key, []))
        try:
            data = render(lines).encode()
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                with cluster.lock:
                    cur = cluster.logs.get(key, [])
                    new = cur[sent:]
                    sent = len(cur)
                    pod = cluster.get(("", "pods"), ns, name)
                    if not new:
                        if pod is None or (pod.get("status") or {}).get("phase") in (
                                "Succeeded", "Failed"):
                            break
                        cluster.store.cond.wait(0.5)
                        continue
                data = render(new).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
