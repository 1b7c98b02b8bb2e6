"""Event source: Alertmanager's webhook, one event per alert.

Used by extensions/eda/rulebooks/apex_alerts.yml as ``apex.ops.alertmanager``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

DOCUMENTATION = r"""
---
short_description: Receive Alertmanager webhook notifications, one event per alert.
description:
  - An HTTP server (aiohttp, an ansible-rulebook dependency) that Alertmanager's webhook_config posts
    its notifications to.
  - Each alert of a notification becomes one event, so a rule matches one alert at a time -
    C(event.alert.labels.alertname), C(event.alert.status) (firing or resolved), C(event.alert.annotations.runbook).
  - A notification that is not Alertmanager's JSON (version 4, a list of alerts) is refused with 400 and
    produces no event; a wrong or missing bearer token is refused with 401 when a token is set.
  - GET on the health path answers 200 once the server listens.
options:
  host:
    description: Address to listen on (0.0.0.0 in a container, 127.0.0.1 on a shared machine).
    type: str
    default: 0.0.0.0
  port:
    description: TCP port to listen on.
    type: int
    required: true
  path:
    description: URL path Alertmanager posts to.
    type: str
    default: /alerts
  health_path:
    description: URL path answering GET with 200 while the source runs.
    type: str
    default: /health
  token:
    description:
      - Bearer token Alertmanager must send (its http_config authorization credentials).
      - Empty accepts any caller; set it whenever the port is reachable from more than Alertmanager.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Apex alerts
  hosts: all
  sources:
    - apex.ops.alertmanager:
        host: 0.0.0.0
        port: 5000
        token: "{{ apex_eda_webhook_token }}"
  rules:
    - name: Queue backlog
      condition: event.alert.labels.alertname == "ApexTaskQueueBacklog" and event.alert.status == "firing"
      action:
        run_playbook:
          name: apex.ops.alert_queue_backlog
"""

LOG = logging.getLogger(__name__)

# What an alert event keeps of Alertmanager's alert object (all of it, named as Alertmanager names it).
ALERT_KEYS = ("status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint")
# What every event of one notification shares.
NOTIFICATION_KEYS = ("receiver", "groupKey", "groupLabels", "commonLabels", "commonAnnotations",
                     "externalURL", "truncatedAlerts")


class BadNotification(ValueError):
    """The body is not an Alertmanager webhook notification."""


def alert_events(body: Any) -> list[dict[str, Any]]:
    """The events of one notification: one per alert, each with the alert and the notification's context.

    Raises BadNotification for anything that is not Alertmanager's version 4 JSON, so a stray POST
    never runs a playbook.
    """
    if not isinstance(body, dict):
        raise BadNotification("the body is not a JSON object")
    if str(body.get("version", "")) != "4":
        raise BadNotification("unsupported notification version %r (Alertmanager sends 4)" % body.get("version"))
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise BadNotification("no list of alerts")
    notification = {key: body[key] for key in NOTIFICATION_KEYS if key in body}
    events = []
    for alert in alerts:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict) \
                or "alertname" not in alert["labels"] or alert.get("status") not in ("firing", "resolved"):
            raise BadNotification("an alert without labels.alertname or status firing/resolved")
        event = {key: alert.get(key) for key in ALERT_KEYS}
        event["annotations"] = event["annotations"] or {}
        events.append({"alert": event, "notification": notification})
    return events


def authorized(header: str | None, token: str) -> bool:
    """True when no token is required, or the Authorization header carries it (constant-time compare)."""
    if not token:
        return True
    scheme, _sep, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def make_app(queue: asyncio.Queue, args: dict[str, Any]):
    """The aiohttp application: POST path -> events on the queue, GET health_path -> 200."""
    from aiohttp import web  # ansible-rulebook depends on aiohttp; imported here so the pure parts load without it

    token = str(args.get("token") or "")

    async def receive(request):
        if not authorized(request.headers.get("Authorization"), token):
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        try:
            events = alert_events(json.loads(await request.text()))
        except (ValueError, UnicodeDecodeError) as exc:  # BadNotification is a ValueError, as is bad JSON
            LOG.warning("refused a notification from %s: %s", request.remote, exc)
            return web.json_response({"error": str(exc)}, status=400)
        for event in events:
            await queue.put(event)
        LOG.info("%d alert(s) from %s", len(events), request.remote)
        return web.json_response({"events": len(events)})

    async def health(_request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(args.get("path") or "/alerts", receive)
    app.router.add_get(args.get("health_path") or "/health", health)
    return app


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    """Serve until cancelled (ansible-rulebook cancels the source when the rulebook ends)."""
    from aiohttp import web

    runner = web.AppRunner(make_app(queue, args))
    await runner.setup()
    site = web.TCPSite(runner, args.get("host") or "0.0.0.0", int(args["port"]))
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # By hand: python3 alertmanager.py PORT, then POST a notification; the events are printed.
    import sys

    class PrintQueue(asyncio.Queue):
        """Prints what the rulebook would receive."""

        async def put(self, item):
            print(json.dumps(item))

    asyncio.run(main(PrintQueue(), {"host": "127.0.0.1", "port": int(sys.argv[1])}))
