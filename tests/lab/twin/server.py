"""``serve``: the Apex API as the runbook sees it, over HTTPS.

Endpoints: ``GET /health``, ``/ready``, ``/live``, ``/metrics``;
``POST /admin/circuit-breaker/reset`` (and the twin-only ``/admin/circuit-breaker/trip``),
``POST /api/v1/tasks``, ``GET /api/v1/tasks/<task_id>``; the lab's fake LLM provider status
pages ``GET /status/<provider>`` (and, with the admin token, ``POST`` to set one). Behaviour is driven by the desired
state file (see :mod:`twin.state`). docs/twin.md has the full contract.
"""
import argparse
import contextlib
import hmac
import json
import os
import random
import re
import signal
import socket
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from . import TWIN_VERSION
from .common import (CIRCUIT_BREAKER_KEY, DEAD_LETTER_KEY, PROVIDER_STATUS_KEY, QUEUE_KEY, STATS_COMPLETED_KEY, env_float,
                     STATS_FAILED_KEY, env, make_logger, pg_connect, redis_client)
from .state import StateWatcher

MAX_BODY = 1024 * 1024
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)
NON_ROUTED = ("/live", "/metrics")
PROVIDER_RE = re.compile(r"^[a-z0-9_-]{1,40}$")
# Statuspage (status.openai.com/api/v2/status.json) indicators and their usual descriptions.
INDICATORS = {"none": "All Systems Operational", "minor": "Minor Service Outage",
              "major": "Partial System Outage", "critical": "Major System Outage"}
HEALTH_PATHS = ("/health", "/ready", "/live", "/metrics")


class PoolExhausted(Exception):
    pass


class PgPool:
    """A tiny bounded pool; the bound follows ``db_max_connections`` live.

    ``open_fn`` says whether the component has a pod at all: while it is false, no connection
    goes back to the pool (a pod that is gone holds none); :meth:`close` drops the idle ones.
    Connections are opened lazily, so the pool reconnects by itself once it is true again.
    """

    def __init__(self, dsn, size_fn, application_name="apex-api", open_fn=None):
        self.dsn = dsn
        self.size_fn = size_fn
        self.open_fn = open_fn or (lambda: True)
        self.application_name = application_name
        self.cond = threading.Condition()
        self.idle = []
        self.in_use = 0

    def stats(self):
        with self.cond:
            return {"max": self.size_fn(), "in_use": self.in_use, "idle": len(self.idle)}

    def exhausted(self):
        with self.cond:
            return self.in_use >= self.size_fn()

    @contextlib.contextmanager
    def connection(self, timeout=2.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.in_use >= self.size_fn():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolExhausted("all %d database connections are in use" % self.size_fn())
                self.cond.wait(remaining)
            self.in_use += 1
            conn = self.idle.pop() if self.idle else None
        ok = False
        try:
            if conn is None or conn.closed or conn.broken:
                conn = pg_connect(self.dsn, self.application_name, connect_timeout=2)
            yield conn
            ok = True
        finally:
            with self.cond:
                self.in_use -= 1
                keep = (ok and conn is not None and not conn.closed and not conn.broken
                        and len(self.idle) + self.in_use < self.size_fn() and self.open_fn())
                if keep:
                    self.idle.append(conn)
                self.cond.notify()
            if not keep and conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def close(self):
        """Close the idle connections; returns how many."""
        with self.cond:
            idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()
        return len(idle)


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.hist = {}

    def observe(self, track, status, seconds):
        with self.lock:
            key = (str(status), track)
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.hist.get(track)
            if h is None:
                h = self.hist[track] = {"buckets": [0] * len(BUCKETS), "sum": 0.0, "count": 0}
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h["buckets"][i] += 1
            h["sum"] += seconds
            h["count"] += 1

    def render(self):
        out = []
        with self.lock:
            out.append("# HELP apex_http_requests_total HTTP requests routed to an API track, by status.")
            out.append("# TYPE apex_http_requests_total counter")
            for (status, track), n in sorted(self.requests.items()):
                out.append('apex_http_requests_total{status="%s",track="%s"} %d' % (status, track, n))
            out.append("# HELP apex_http_request_duration_seconds HTTP request latency by API track.")
            out.append("# TYPE apex_http_request_duration_seconds histogram")
            for track, h in sorted(self.hist.items()):
                for bound, n in zip(BUCKETS, h["buckets"]):
                    out.append('apex_http_request_duration_seconds_bucket{track="%s",le="%s"} %d'
                               % (track, repr(float(bound)), n))
                out.append('apex_http_request_duration_seconds_bucket{track="%s",le="+Inf"} %d'
                           % (track, h["count"]))
                out.append('apex_http_request_duration_seconds_sum{track="%s"} %.6f' % (track, h["sum"]))
                out.append('apex_http_request_duration_seconds_count{track="%s"} %d' % (track, h["count"]))
        return out


class TlsManager:
    """Serves the certificate named by the state (or the defaults); reloads on change."""

    RETRY_FAILED_LOAD = 1.0  # seconds

    def __init__(self, watcher, default_cert, default_key, log):
        self.watcher = watcher
        self.default_cert = default_cert
        self.default_key = default_key
        self.log = log
        self.lock = threading.Lock()
        self.sig = None
        self.failed_at = None  # monotonic time of the last failed load of self.sig
        self.ctx = None
        self.context()
        if self.ctx is None and (default_cert, default_key) != self.paths():
            # the state names a pair that does not load: start with the configured default
            self.sig, self.ctx = None, None
            try:
                self.ctx = self._build(default_cert, default_key)
                log("tls_loaded", cert=default_cert, key=default_key, note="fallback to the default pair")
            except (OSError, ssl.SSLError, TypeError) as exc:
                log("tls_reload_failed", cert=default_cert, key=default_key, error=str(exc))
        if self.ctx is None:
            raise SystemExit("cannot load the TLS certificate/key (%s, %s)" % self.paths())

    @staticmethod
    def _build(cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        return ctx

    def paths(self):
        state = self.watcher.get()
        return (state["tls_cert_file"] or self.default_cert, state["tls_key_file"] or self.default_key)

    @staticmethod
    def _signature(cert, key):
        try:
            return (cert, key) + tuple((st.st_mtime_ns, st.st_size, st.st_ino)
                                       for st in (os.stat(cert), os.stat(key)))
        except (OSError, TypeError):
            return (cert, key, None, None)

    def _unchanged(self, sig):
        # a failed load is retried after RETRY_FAILED_LOAD even with the same signature: it may
        # have read a pair in mid-rewrite that stat cannot tell from the finished one (same
        # mtime tick, size and inode); never on every connection
        return sig == self.sig and (self.failed_at is None or
                                    time.monotonic() - self.failed_at < self.RETRY_FAILED_LOAD)

    def context(self):
        cert, key = self.paths()
        sig = self._signature(cert, key)
        if self._unchanged(sig):
            return self.ctx
        with self.lock:
            if self._unchanged(sig):
                return self.ctx
            try:
                ctx = self._build(cert, key)
            except (OSError, ssl.SSLError, TypeError) as exc:
                self.log("tls_reload_failed", cert=cert, key=key, error=str(exc))
                self.sig, self.failed_at = sig, time.monotonic()
                return self.ctx
            self.ctx, self.sig, self.failed_at = ctx, sig, None
            self.log("tls_loaded", cert=cert, key=key)
            return ctx


class TwinServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, app):
        self.app = app
        super().__init__(address, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.app.tls.context()
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):  # quiet: clients hang up all the time
        pass


class App:
    def __init__(self, args, log):
        self.log = log
        self.watcher = StateWatcher(args.state, interval=env_float("APEX_TWIN_STATE_INTERVAL", 0.2), log=log)
        self.tls = TlsManager(self.watcher, args.cert, args.key, log)
        self.metrics = Metrics()
        self.dsn = args.dsn
        self.pool = PgPool(args.dsn, lambda: self.watcher.get()["db_max_connections"],
                           open_fn=lambda: self.api_replicas(self.watcher.get()) > 0)
        self.redis_url = args.redis_url
        self._redis = None
        self.admin_token = env("APEX_ADMIN_TOKEN")
        self.started = time.time()

    @staticmethod
    def api_replicas(state):
        """Ready apex-api pods, stable and canary: the pods that would hold database sessions."""
        return state["api_ready_replicas"] + (state["canary"]["ready_replicas"] if state["canary"] else 0)

    def follow_replicas(self, stop, interval):
        """Close the pool when apex-api has no ready pod (its pods are gone, and so are their
        sessions); it reconnects lazily on the first request once pods are back."""
        had_pods = True
        while not stop.wait(interval):
            has_pods = self.api_replicas(self.watcher.get()) > 0
            if not has_pods:
                closed = self.pool.close()
                if had_pods or closed:
                    self.log("db_pool_closed", reason="apex-api has no ready replicas", closed=closed)
            elif not had_pods:
                self.log("db_pool_reopened", note="connections open again on demand")
            had_pods = has_pods

    @property
    def redis(self):
        if self._redis is None:
            self._redis = redis_client(self.redis_url, timeout=1.0)
        return self._redis

    # -- checks -----------------------------------------------------------------------------
    def check_db(self):
        t0 = time.perf_counter()
        for attempt in (1, 2):  # a pooled connection may have died with a PG restart
            try:
                with self.pool.connection(timeout=1.0) as conn:
                    conn.execute("SELECT 1").fetchone()
                return {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
            except PoolExhausted as exc:
                return {"ok": True, "latency_ms": None, "note": str(exc)}
            except Exception as exc:  # psycopg.Error, OSError
                if attempt == 2:
                    return {"ok": False, "latency_ms": None, "error": str(exc).strip().splitlines()[0]}

    def check_redis(self):
        t0 = time.perf_counter()
        try:
            self.redis.ping()
            return {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
        except Exception as exc:
            return {"ok": False, "latency_ms": None, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}

    def circuit_breaker(self):
        try:
            data = self.redis.hgetall(CIRCUIT_BREAKER_KEY)
        except Exception:
            return {"state": "unknown"}
        return {"state": data.get("state", "closed"), "failures": int(data.get("failures", 0) or 0),
                "provider": data.get("provider") or None, "opened_at": data.get("opened_at") or None,
                "reset_at": data.get("reset_at") or None}

    def track_profile(self, state):
        stable = state["api_ready_replicas"]
        canary = state["canary"]["ready_replicas"] if state["canary"] else 0
        if stable + canary == 0:
            return None
        if canary and random.random() * (stable + canary) < canary:
            c = state["canary"]
            return {"track": "canary", "version": c["version"], "failure_rate": c["failure_rate"],
                    "latency_ms": c["latency_ms"]}
        return {"track": "stable", "version": state["version"], "failure_rate": state["failure_rate"],
                "latency_ms": state["latency_ms"]}

    def render_metrics(self, state):
        lines = self.metrics.render()
        gauges = []
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(STATS_COMPLETED_KEY).get(STATS_FAILED_KEY).llen(QUEUE_KEY).llen(DEAD_LETTER_KEY)
            pipe.hget(CIRCUIT_BREAKER_KEY, "state")
            completed, failed, depth, dead, cb = pipe.execute()
            lines += ["# HELP apex_tasks_completed_total Tasks completed by the workers.",
                      "# TYPE apex_tasks_completed_total counter",
                      "apex_tasks_completed_total %d" % int(completed or 0),
                      "# HELP apex_tasks_failed_total Tasks that failed for good (dead-lettered).",
                      "# TYPE apex_tasks_failed_total counter",
                      "apex_tasks_failed_total %d" % int(failed or 0)]
            gauges += [("apex_queue_depth", "Tasks waiting in apex:tasks:queue.", "", depth),
                       ("apex_dead_letter_depth", "Entries in apex:tasks:dead-letter.", "", dead),
                       ("apex_circuit_breaker_open", "1 when the circuit breaker is open.", "",
                        1 if cb == "open" else 0)]
            redis_up = 1
        except Exception:
            redis_up = 0
        pool = self.pool.stats()
        canary = state["canary"]
        lines += ["# HELP apex_build_info Version served by each API track.",
                  "# TYPE apex_build_info gauge",
                  'apex_build_info{version="%s",track="stable"} 1' % state["version"]]
        if canary and canary["ready_replicas"]:
            lines.append('apex_build_info{version="%s",track="canary"} 1' % canary["version"])
        lines += ["# HELP apex_ready_replicas Ready replicas the twin simulates.",
                  "# TYPE apex_ready_replicas gauge",
                  'apex_ready_replicas{deployment="apex-api",track="stable"} %d' % state["api_ready_replicas"],
                  'apex_ready_replicas{deployment="apex-api",track="canary"} %d'
                  % (canary["ready_replicas"] if canary else 0),
                  'apex_ready_replicas{deployment="apex-worker",track="stable"} %d' % state["worker_ready_replicas"]]
        gauges += [("apex_redis_up", "1 when Redis answered this scrape.", "", redis_up),
                   ("apex_maintenance_mode", "1 in maintenance mode.", "", int(state["maintenance_mode"])),
                   ("apex_worker_concurrency", "APEX__WORKER__CONCURRENCY.", "", state["worker_concurrency"]),
                   ("apex_db_pool_max_connections", "APEX__DATABASE__MAX_CONNECTIONS.", "", pool["max"]),
                   ("apex_db_pool_in_use", "Pooled connections in use.", "", pool["in_use"])]
        for name, help_text, labels, value in gauges:
            lines += ["# HELP %s %s" % (name, help_text), "# TYPE %s gauge" % name,
                      "%s%s %d" % (name, labels, int(value or 0))]
        return "\n".join(lines) + "\n"


def slow_query(conn, state):
    """The ``db_latency_ms`` fault: a slow query holding this pooled connection."""
    if state["db_latency_ms"]:
        conn.execute("SELECT pg_sleep(%s) /* apex-api slow query */", (state["db_latency_ms"] / 1000.0,))


def _json_default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "apex-twin/" + TWIN_VERSION
    sys_version = ""

    def version_string(self):
        return self.server_version

    def setup(self):
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            with contextlib.suppress(OSError):
                self.request.close()
            raise
        super().setup()

    def log_message(self, fmt, *args):  # access log only on demand
        if env("APEX_TWIN_ACCESS_LOG"):
            self.server.app.log("access", client=self.client_address[0], line=fmt % args)

    # -- plumbing -----------------------------------------------------------------------------
    def send(self, status, body, content_type="application/json", headers=None):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body, default=_json_default, sort_keys=True) + "\n"
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        # headers and body in ONE write: two small TLS records trip Nagle + delayed ACK (40 ms)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()
        self._status = status

    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            length = int(length)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def do_GET(self):
        self.dispatch(b"")

    def do_HEAD(self):
        self.dispatch(b"")

    def do_POST(self):
        body = self.read_body()
        if body is None:
            self._status = 413
            return self.send(413, {"error": "request body too large (max %d bytes)" % MAX_BODY})
        self.dispatch(body)

    def do_PUT(self):
        self.read_body()
        self.send(405, {"error": "method not allowed"})

    do_DELETE = do_PATCH = do_PUT

    # -- routing ------------------------------------------------------------------------------
    def dispatch(self, body):
        app = self.server.app
        start = time.perf_counter()
        path = urlsplit(self.path).path.rstrip("/") or "/"
        state = app.watcher.get()
        if path == "/live":
            return self.send(200, {"status": "alive", "uptime_seconds": round(time.time() - app.started, 1)})
        if path.startswith("/status/"):  # another service (the provider's status page): never routed
            return self.provider_status(path[len("/status/"):], body)
        profile = app.track_profile(state)
        if profile is None:
            return self.send(503, {"error": "no ready replicas",
                                   "message": "apex-api has no ready endpoints"})
        if path == "/metrics":
            return self.send(200, app.render_metrics(state), "text/plain; version=0.0.4; charset=utf-8")
        self._status = 500
        headers = {"X-Apex-Track": profile["track"], "X-Apex-Version": profile["version"]}
        try:
            if profile["latency_ms"]:
                time.sleep(profile["latency_ms"] / 1000.0)
            if state["maintenance_mode"] and path not in HEALTH_PATHS:
                return self.send(503, {"error": "maintenance",
                                       "message": "Apex is under maintenance; please retry later."},
                                 headers=dict(headers, **{"Retry-After": "60"}))
            if profile["failure_rate"] and random.random() < profile["failure_rate"]:
                return self.send(500, {"error": "internal server error",
                                       "detail": "injected failure (failure_rate=%s, track=%s)"
                                       % (profile["failure_rate"], profile["track"])}, headers=headers)
            self.route(path, body, state, profile, headers)
        except Exception as exc:  # an unexpected bug must still count as a 500
            app.log("request_failed", path=path, error=repr(exc))
            with contextlib.suppress(Exception):
                self.send(500, {"error": "internal server error"}, headers=headers)
            self.close_connection = True
        finally:
            app.metrics.observe(profile["track"], getattr(self, "_status", 500), time.perf_counter() - start)

    def route(self, path, body, state, profile, headers):
        method = self.command
        if path == "/health" and method in ("GET", "HEAD"):
            return self.health(state, profile, headers)
        if path == "/ready" and method in ("GET", "HEAD"):
            return self.ready(state, headers)
        if path.startswith("/admin/circuit-breaker/"):
            if method != "POST":
                return self.send(405, {"error": "method not allowed"}, headers=headers)
            return self.admin(path.rsplit("/", 1)[1], body, headers)
        if path == "/api/v1/tasks":
            if method != "POST":
                return self.send(405, {"error": "method not allowed"}, headers=headers)
            return self.submit(body, state, profile, headers)
        if path.startswith("/api/v1/tasks/") and method in ("GET", "HEAD"):
            return self.get_task(path[len("/api/v1/tasks/"):], state, headers)
        return self.send(404, {"error": "not found", "path": path}, headers=headers)

    def health(self, state, profile, headers):
        app = self.server.app
        db, rds = app.check_db(), app.check_redis()
        healthy = db["ok"] and rds["ok"]
        db["pool"] = app.pool.stats()
        cb = app.circuit_breaker() if rds["ok"] else {"state": "unknown"}
        if not healthy:
            status = "unhealthy"
        elif state["maintenance_mode"]:
            status = "maintenance"
        elif cb.get("state") == "open":
            status = "degraded"
        else:
            status = "healthy"
        body = {"status": status, "version": profile["version"], "track": profile["track"],
                "database": db, "redis": rds, "maintenance_mode": state["maintenance_mode"],
                "circuit_breaker": cb, "force_provider": state["force_provider"],
                "worker": {"ready_replicas": state["worker_ready_replicas"],
                           "concurrency": state["worker_concurrency"]},
                "uptime_seconds": round(time.time() - app.started, 1)}
        self.send(200 if healthy else 503, body, headers=headers)

    def ready(self, state, headers):
        app = self.server.app
        reasons = []
        if state["maintenance_mode"]:
            reasons.append("maintenance_mode")
        if app.pool.exhausted():
            reasons.append("no capacity: all %d database connections in use" % state["db_max_connections"])
        elif not app.check_db()["ok"]:
            reasons.append("database unavailable")
        if not app.check_redis()["ok"]:
            reasons.append("redis unavailable")
        if reasons:
            return self.send(503, {"ready": False, "reasons": reasons}, headers=headers)
        self.send(200, {"ready": True}, headers=headers)

    def authorized(self):
        token = self.server.app.admin_token
        header = self.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        if not token or scheme.lower() != "bearer":
            hmac.compare_digest(b"x", b"y")
            return False
        return hmac.compare_digest(supplied.strip().encode("utf-8"), token.encode("utf-8"))

    def admin(self, action, body, headers):
        app = self.server.app
        if not self.authorized():
            return self.send(401, {"error": "unauthorized", "message": "a valid bearer token is required"},
                             headers=dict(headers, **{"WWW-Authenticate": 'Bearer realm="apex-admin"'}))
        if action not in ("reset", "trip"):
            return self.send(404, {"error": "not found"}, headers=headers)
        try:
            previous = app.circuit_breaker()
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if action == "reset":
                app.redis.hset(CIRCUIT_BREAKER_KEY, mapping={"state": "closed", "failures": 0,
                                                             "reset_at": now, "opened_at": ""})
                app.log("circuit_breaker reset", previous_state=previous.get("state"), by="admin")
            else:
                try:
                    provider = (json.loads(body or b"{}") or {}).get("provider") or "openai"
                except (ValueError, AttributeError):
                    provider = "openai"
                app.redis.hset(CIRCUIT_BREAKER_KEY, mapping={"state": "open", "opened_at": now,
                                                             "provider": str(provider)})
                app.log("circuit_breaker opened", provider=provider, by="admin")
        except Exception as exc:
            return self.send(503, {"error": "redis unavailable", "detail": str(exc)}, headers=headers)
        self.send(200, {"circuit_breaker": app.circuit_breaker(), "previous": previous}, headers=headers)

    def provider_status(self, provider, body):
        """A Statuspage ``/api/v2/status.json`` per provider, kept in Redis; POST (admin token) sets
        ``{"indicator": none|minor|major|critical, "description"?}`` - the lab's provider-outage knob."""
        app = self.server.app
        provider = provider.strip("/")
        if not PROVIDER_RE.match(provider):
            return self.send(404, {"error": "not found"})
        try:
            if self.command == "POST":
                if not self.authorized():
                    return self.send(401, {"error": "unauthorized"},
                                     headers={"WWW-Authenticate": 'Bearer realm="apex-admin"'})
                try:
                    doc = json.loads(body or b"{}")
                    indicator = doc.get("indicator", "none")
                except (ValueError, AttributeError):
                    indicator = None
                if indicator not in INDICATORS:
                    return self.send(400, {"error": "indicator must be one of %s" % ", ".join(INDICATORS)})
                description = str(doc.get("description") or INDICATORS[indicator])
                app.redis.hset(PROVIDER_STATUS_KEY, provider, json.dumps([indicator, description]))
                app.log("provider status set", provider=provider, indicator=indicator)
            elif self.command not in ("GET", "HEAD"):
                return self.send(405, {"error": "method not allowed"})
            raw = app.redis.hget(PROVIDER_STATUS_KEY, provider)
        except Exception as exc:
            return self.send(503, {"error": "redis unavailable", "detail": str(exc)})
        indicator, description = json.loads(raw) if raw else ("none", INDICATORS["none"])
        self.send(200, {"page": {"id": provider, "name": provider.capitalize(),
                                 "url": "https://status.%s.example" % provider},
                        "status": {"indicator": indicator, "description": description}})

    def submit(self, body, state, profile, headers):
        app = self.server.app
        try:
            doc = json.loads(body or b"{}")
        except ValueError as exc:
            return self.send(400, {"error": "invalid JSON body: %s" % exc}, headers=headers)
        if not isinstance(doc, dict):
            return self.send(400, {"error": "the body must be a JSON object"}, headers=headers)
        payload = doc["payload"] if "payload" in doc else doc
        if not isinstance(payload, dict):
            return self.send(400, {"error": "payload must be a JSON object"}, headers=headers)
        task_id = doc.get("task_id") or "tsk_" + uuid.uuid4().hex
        if not isinstance(task_id, str) or not TASK_ID_RE.match(task_id):
            return self.send(400, {"error": "task_id must match %s" % TASK_ID_RE.pattern}, headers=headers)
        agent_id = doc.get("agent_id")
        if agent_id is not None and (isinstance(agent_id, bool) or not isinstance(agent_id, int)):
            return self.send(400, {"error": "agent_id must be an integer"}, headers=headers)
        import psycopg
        from psycopg.types.json import Jsonb
        try:
            with app.pool.connection(timeout=2.0) as conn:
                slow_query(conn, state)
                with conn.transaction():
                    row = conn.execute(
                        "INSERT INTO tasks (task_id, agent_id, status, payload) VALUES (%s, %s, 'queued', %s) "
                        "ON CONFLICT (task_id) DO NOTHING RETURNING id", (task_id, agent_id, Jsonb(payload))
                    ).fetchone()
                    if row is None:
                        return self.send(409, {"error": "task %s already exists" % task_id}, headers=headers)
                    conn.execute("INSERT INTO events (task_id, kind, data) VALUES (%s, 'queued', %s)",
                                 (task_id, Jsonb({"track": profile["track"], "version": profile["version"]})))
        except PoolExhausted as exc:
            return self.send(503, {"error": str(exc)}, headers=headers)
        except psycopg.errors.ForeignKeyViolation:
            return self.send(400, {"error": "agent %s does not exist" % agent_id}, headers=headers)
        except psycopg.Error as exc:
            return self.send(503, {"error": "database unavailable", "detail": str(exc).splitlines()[0]},
                             headers=headers)
        try:
            app.redis.lpush(QUEUE_KEY, task_id)
        except Exception as exc:
            with contextlib.suppress(Exception), app.pool.connection(timeout=1.0) as conn:
                conn.execute("UPDATE tasks SET status='failed', error_message=%s, completed_at=now() "
                             "WHERE task_id=%s", ("enqueue failed: %s" % exc, task_id))
            return self.send(503, {"error": "redis unavailable", "task_id": task_id}, headers=headers)
        self.send(202, {"task_id": task_id, "status": "queued"},
                  headers=dict(headers, Location="/api/v1/tasks/%s" % task_id))

    def get_task(self, task_id, state, headers):
        app = self.server.app
        if not TASK_ID_RE.match(task_id):
            return self.send(404, {"error": "not found"}, headers=headers)
        import psycopg
        try:
            with app.pool.connection(timeout=2.0) as conn:
                slow_query(conn, state)
                cur = conn.execute(
                    "SELECT task_id, agent_id, status, payload, result, error_message, attempts, provider, "
                    "worker, created_at, started_at, completed_at FROM tasks WHERE task_id = %s", (task_id,))
                row = cur.fetchone()
                names = [d.name for d in cur.description]
        except PoolExhausted as exc:
            return self.send(503, {"error": str(exc)}, headers=headers)
        except psycopg.Error as exc:
            return self.send(503, {"error": "database unavailable", "detail": str(exc).splitlines()[0]},
                             headers=headers)
        if row is None:
            return self.send(404, {"error": "task %s not found" % task_id}, headers=headers)
        self.send(200, dict(zip(names, row)), headers=headers)


def main(argv):
    parser = argparse.ArgumentParser(prog="twin serve", description="The Apex twin API (HTTPS).")
    parser.add_argument("--host", default=env("APEX_TWIN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("APEX_TWIN_PORT", "8443")))
    parser.add_argument("--cert", default=env("APEX_TWIN_CERT"))
    parser.add_argument("--key", default=env("APEX_TWIN_KEY"))
    parser.add_argument("--state", default=env("APEX_TWIN_STATE"))
    parser.add_argument("--dsn", default=env("APEX_PG_DSN"))
    parser.add_argument("--redis-url", default=env("APEX_REDIS_URL"))
    args = parser.parse_args(argv)
    log = make_logger("apex-api")
    if not args.cert or not args.key:
        parser.error("a certificate and key are required (APEX_TWIN_CERT/APEX_TWIN_KEY or --cert/--key)")
    if not args.dsn or not args.redis_url:
        parser.error("APEX_PG_DSN and APEX_REDIS_URL (or --dsn/--redis-url) are required")
    app = App(args, log)
    try:
        server = TwinServer((args.host, args.port), app)
    except OSError as exc:
        log("listen_failed", host=args.host, port=args.port, error=str(exc))
        return 1

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped = threading.Event()
    threading.Thread(target=app.follow_replicas, args=(stopped, app.watcher.interval), name="replicas",
                     daemon=True).start()
    log("listening", url="https://%s:%d" % (args.host, args.port), version=app.watcher.get()["version"],
        state_file=args.state, pid=os.getpid())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stopped.set()
        server.server_close()
        app.pool.close()
        log("stopped")
    return 0
