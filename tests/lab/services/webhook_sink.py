"""The webhook sink: a small HTTP server that records every POST it receives (path, headers minus
authorization, JSON body, the status it answered) as JSON lines in ``<lab>/webhook-sink/received.jsonl``,
and returns them on ``GET /received`` (``?path=<prefix>`` filters). It stands for a Slack incoming
webhook and a status page's JSON webhook in tests and ``make demo``.

To test retries, a path can ask for failures: ``/fail/<n>/<rest>`` answers 503 to the first ``n``
POSTs of that exact path, then 200; ``/status/<code>/<rest>`` always answers ``code``.

Run by the lab as ``python3 -m services.webhook_sink --port P --dir D`` (cwd ``tests/lab``).
"""
import argparse
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MARK = "-m services.webhook_sink"
HIDDEN_HEADERS = ("authorization", "proxy-authorization", "cookie")
FAIL = re.compile(r"^/fail/(\d+)/")
STATUS = re.compile(r"^/status/(\d{3})/")


class Sink:
    """What the server keeps: the JSON lines file, and how many POSTs each path got."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, "received.jsonl")
        self.lock = threading.Lock()
        self.counts = {}
        os.makedirs(directory, exist_ok=True)

    def answer_for(self, path):
        """The status a POST to ``path`` gets (counting it)."""
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            seen = self.counts[path]
        fail = FAIL.match(path)
        if fail and seen <= int(fail.group(1)):
            return 503
        fixed = STATUS.match(path)
        return int(fixed.group(1)) if fixed else 200

    def record(self, entry):
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.lock, open(self.path, "a") as out:
            out.write(line)

    def received(self, prefix=None):
        try:
            with open(self.path) as handle:
                entries = [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            entries = []
        return [e for e in entries if not prefix or e["path"].startswith(prefix)]


def make_handler(sink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request on stderr (the service log)
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            if url.path == "/healthz":
                return self._send(200, {"ok": True})
            if url.path == "/received":
                prefix = (parse_qs(url.query).get("path") or [None])[0]
                return self._send(200, sink.received(prefix))
            return self._send(404, {"error": "not found"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw.decode() or "null")
            except ValueError:
                body = {"_unparsed": raw.decode(errors="replace")}
            path = urlsplit(self.path).path
            status = sink.answer_for(path)
            headers = dict((k, v) for k, v in self.headers.items() if k.lower() not in HIDDEN_HEADERS)
            sink.record({"path": path, "headers": headers, "body": body, "status": status,
                         "authorization_present": "authorization" in (k.lower() for k in self.headers)})
            self._send(status, {"ok": status < 300})

    return Handler


def serve(port, directory):
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(Sink(directory)))
    server.daemon_threads = True
    server.serve_forever()


class WebhookSink:
    """The lab service: ``start`` spawns, ``ensure`` waits until ``/healthz`` answers."""

    def __init__(self, state):
        self.state = state
        self.dir = state.dir / "webhook-sink"

    def port(self):
        return self.state.ports.get("webhook_sink")

    def procs(self):
        return (("webhook-sink", self.dir / "webhook-sink.pid", MARK, self.pid),)

    def pid(self):
        from .procs import find_pid
        return find_pid(self.dir / "webhook-sink.pid", MARK, self.port())

    def url(self):
        return "http://127.0.0.1:%d" % self.port()

    def check(self):
        from .procs import http_get
        return http_get("127.0.0.1", self.port(), "/healthz")[0] == 200

    def ensure(self):
        from .procs import LabError, answers, exited, say, spawn, stop_procs, wait_until
        from .state import LAB_PY_DIR
        self.dir.mkdir(exist_ok=True)
        if self.pid():
            if answers(self.check, 15):
                return False
            say("webhook sink (pid %s) does not answer; restarting it" % self.pid())
            stop_procs(self.procs())
        port = self.state.claim_port("webhook_sink")
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(LAB_PY_DIR), APEX_LAB_DIR=str(self.state.dir))
        proc = spawn([sys.executable, "-m", "services.webhook_sink", "--port", str(port), "--dir", str(self.dir)],
                     self.dir / "webhook-sink.pid", self.dir / "webhook-sink.log", env, LAB_PY_DIR)
        try:
            wait_until(self.check, 20, "webhook sink on %d" % port, log=self.dir / "webhook-sink.log",
                       gone=exited(proc, self.pid))
        except LabError:
            raise
        say("webhook sink up on %s (records in %s)" % (self.url(), self.dir / "received.jsonl"))
        return True

    def status_rows(self):
        from .procs import healthy, status_row
        pid = self.pid()
        ok = bool(pid) and healthy(self.check)
        return [status_row("webhook-sink", self.port(), pid, ok, "records POSTs" if ok else "down")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    serve(args.port, args.dir)


if __name__ == "__main__":
    main()
