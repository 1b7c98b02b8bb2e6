"""HTTP: GET /metrics/postgres, /metrics/kubernetes (one scrape job each, as in production), /live."""
import base64
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from .render import CpuCounters, kubernetes_text, postgres_text

ACTIVITY_SQL = """SELECT datname, state, usename, application_name, count(*)
  FROM pg_stat_activity WHERE backend_type = 'client backend'
  GROUP BY datname, state, usename, application_name"""


class Postgres:
    """One connection, reopened after a failure (postgres_exporter keeps its own too), to the
    maintenance database ``postgres``: pg_stat_activity is server-wide, and a session in ``apex`` would
    stand in the way of the drains and restores that empty that database."""

    def __init__(self, dsn):
        from psycopg.conninfo import make_conninfo
        self.dsn = make_conninfo(dsn, dbname="postgres")
        self.conn = None

    def text(self):
        import psycopg
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.dsn, autocommit=True, application_name="apex-lab-exporter",
                                            connect_timeout=3)
            with self.conn.cursor() as cur:
                cur.execute("SELECT setting::int FROM pg_settings WHERE name = 'max_connections'")
                max_connections = cur.fetchone()[0]
                cur.execute(ACTIVITY_SQL)
                rows = cur.fetchall()
            return postgres_text(True, max_connections, rows)
        except psycopg.Error as exc:
            print(json.dumps({"msg": "postgres scrape failed", "error": str(exc)}), file=sys.stderr, flush=True)
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return postgres_text(False)


class Kubernetes:
    """The current context of $KUBECONFIG (the primary cluster): pods and metrics.k8s.io, all namespaces.
    The kubeconfig is read at the first scrape (the simulator writes it when it starts). One kept-alive
    connection, as a real scraper keeps: a TLS handshake per scrape, twice a second, was most of the
    exporter's and a good part of the simulator's CPU while the lab sat idle."""

    def __init__(self, kubeconfig):
        self.kubeconfig = kubeconfig
        self.server = None
        self.conn = None
        self.lock = threading.Lock()  # one request at a time on the one connection
        self.counters = CpuCounters()

    def _connect(self):
        with open(self.kubeconfig) as fh:
            cfg = yaml.safe_load(fh)
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = urllib.parse.urlsplit(cluster["server"])
        self.token = user.get("token")
        self.ssl = None
        if self.server.scheme == "https":
            self.ssl = ssl.create_default_context(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())

    def _open(self):
        if self.server.scheme == "https":
            return http.client.HTTPSConnection(self.server.hostname, self.server.port, timeout=5, context=self.ssl)
        return http.client.HTTPConnection(self.server.hostname, self.server.port, timeout=5)

    def _get(self, path):
        if self.conn is None:
            self.conn = self._open()
        self.conn.request("GET", self.server.path.rstrip("/") + path,
                          headers={"Authorization": "Bearer %s" % self.token, "Accept": "application/json"})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.will_close:
            self.conn.close()
            self.conn = None
        if resp.status != 200:
            raise RuntimeError("GET %s: HTTP %d" % (path, resp.status))  # an answer, not a stale connection
        return json.loads(body)["items"]

    def _list(self, path):
        try:
            return self._get(path)
        except (http.client.HTTPException, OSError):
            # the kept connection went stale (the simulator restarted, or closed it): one fresh try
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return self._get(path)

    def text(self):
        with self.lock:
            if self.server is None:
                self._connect()
            pods = self._list("/api/v1/pods")
            usage = self._list("/apis/metrics.k8s.io/v1beta1/pods")
            return kubernetes_text(pods, usage, self.counters, time.monotonic())


def make_handler(sources):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/live":
                body, status = b"ok\n", 200
            elif self.path in sources:
                try:
                    body, status = sources[self.path]().encode(), 200
                except Exception as exc:  # a scrape error is Prometheus' `up 0`, never a dead exporter
                    body, status = ("scrape failed: %s\n" % exc).encode(), 500
            else:
                body, status = b"not found\n", 404
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def serve(host, port):
    sources = {"/metrics/postgres": Postgres(os.environ["APEX_PG_ADMIN_DSN"]).text}
    if os.environ.get("KUBECONFIG"):
        sources["/metrics/kubernetes"] = Kubernetes(os.environ["KUBECONFIG"]).text
    server = ThreadingHTTPServer((host, port), make_handler(sources))
    print(json.dumps({"msg": "exporter listening", "port": port, "paths": sorted(sources)}), file=sys.stderr, flush=True)
    server.serve_forever()
    return 0
