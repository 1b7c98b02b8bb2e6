"""The EDA event source apex.ops.alertmanager: Alertmanager's notification -> one event per alert,
refusals for anything else, the bearer token; and the real HTTP server on a local port."""
import asyncio
import importlib.util
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "extensions" / "eda" / "plugins" / "event_source" / "alertmanager.py"


def _load():
    spec = importlib.util.spec_from_file_location("apex_alertmanager_source", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SRC = _load()


def notification(*alerts, **extra):
    body = {"version": "4", "status": "firing", "receiver": "apex-eda", "groupKey": "{}:{alertname=\"X\"}",
            "groupLabels": {"alertname": "X"}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am:9093", "truncatedAlerts": 0, "alerts": list(alerts)}
    body.update(extra)
    return body


def alert(name="ApexTaskQueueBacklog", status="firing", **labels):
    return {"status": status, "labels": {"alertname": name, "severity": "P3", **labels},
            "annotations": {"runbook": "apex.ops.alert_queue_backlog"},
            "startsAt": "2026-12-02T15:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom/graph", "fingerprint": "f%s" % name}


def test_one_event_per_alert_with_the_notification_context():
    events = SRC.alert_events(notification(alert(), alert("ApexResourceExhaustion", component="api")))
    assert [e["alert"]["labels"]["alertname"] for e in events] == ["ApexTaskQueueBacklog", "ApexResourceExhaustion"]
    first = events[0]
    assert first["alert"]["status"] == "firing"
    assert first["alert"]["annotations"]["runbook"] == "apex.ops.alert_queue_backlog"
    assert first["alert"]["fingerprint"] == "fApexTaskQueueBacklog"
    assert first["notification"]["receiver"] == "apex-eda"
    assert "alerts" not in first["notification"]
    assert events[1]["alert"]["labels"]["component"] == "api"


def test_missing_annotations_become_an_empty_mapping():
    bare = alert()
    del bare["annotations"]
    assert SRC.alert_events(notification(bare))[0]["alert"]["annotations"] == {}


@pytest.mark.parametrize("body, why", [
    ([], "not a JSON object"),
    ({"alerts": []}, "version"),
    (notification(version="3"), "version"),
    (notification(alerts="x"), "list of alerts"),
    (notification({"status": "firing", "labels": {}}), "alertname"),
    (notification(alert(status="pending")), "status"),
], ids=["list", "no-version", "v3", "alerts-not-list", "no-alertname", "bad-status"])
def test_anything_else_is_refused(body, why):
    with pytest.raises(SRC.BadNotification, match=why):
        SRC.alert_events(body)


def test_token():
    assert SRC.authorized(None, "")
    assert SRC.authorized("Bearer s3cret", "s3cret")
    assert SRC.authorized("bearer s3cret", "s3cret")
    assert not SRC.authorized(None, "s3cret")
    assert not SRC.authorized("Bearer wrong", "s3cret")
    assert not SRC.authorized("Basic s3cret", "s3cret")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """The source's main() in an event loop of its own thread, as ansible-rulebook runs it."""

    def __init__(self, **args):
        self.port = _free_port()
        self.args = {"host": "127.0.0.1", "port": self.port, **args}
        self.loop = asyncio.new_event_loop()
        self.queue = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.task = self.loop.create_task(SRC.main(self.queue, self.args))
        self.loop.call_soon(self.ready.set)
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        self.wait_listening()
        return self

    def wait_listening(self, timeout=10.0):
        # the site binds inside main(); the health path answers once it does
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                status, _body = self.request("GET", "/health")
                if status == 200:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.02)
        raise AssertionError("source not listening on %d: %s" % (self.port, last))

    def request(self, method, path, body=None, headers=None):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def events(self):
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)
        self.loop.close()


def test_http_post_puts_one_event_per_alert_on_the_queue():
    with Served(path="/alerts") as src:
        status, body = src.request("POST", "/alerts", notification(alert(), alert("ApexCircuitBreakerOpen")))
        assert (status, body) == (200, {"events": 2})
        names = [e["alert"]["labels"]["alertname"] for e in src.events()]
        assert names == ["ApexTaskQueueBacklog", "ApexCircuitBreakerOpen"]
        status, body = src.request("POST", "/alerts", b"not json")
        assert status == 400 and "error" in body
        status, _body = src.request("POST", "/alerts", {"version": "4"})
        assert status == 400
        assert src.events() == []


def test_http_token_required_when_set():
    with Served(token="s3cret") as src:
        status, body = src.request("POST", "/alerts", notification(alert()))
        assert (status, body) == (401, {"error": "unauthorized"})
        status, _body = src.request("POST", "/alerts", notification(alert()), {"Authorization": "Bearer nope"})
        assert status == 401
        assert src.events() == []
        status, body = src.request("POST", "/alerts", notification(alert()), {"Authorization": "Bearer s3cret"})
        assert (status, body) == (200, {"events": 1})
        assert len(src.events()) == 1
