# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alerts as the on-call sees them: what fires now (Alertmanager's API v2) and what fired in a
window (Prometheus' ``ALERTS`` series, which holds every alert's pending/firing state).

Alertmanager forgets an alert soon after it resolves, so "what fired in the last 24 h" comes from
Prometheus: ``max_over_time(ALERTS{alertstate="firing"}[24h])`` returns one series per alert (and
label set) that was firing at any evaluation in the window, within Prometheus' retention.
``get_json`` does Alertmanager's HTTP (credentials in headers only); Prometheus is asked through
``prometheus_api`` (the collection's one Prometheus client); the rest is pure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json

FIRED_QUERY = 'max_over_time(ALERTS{alertstate="firing"}[%s])'


def auth_headers(token=None, username=None, password=None):
    """A bearer token, else basic auth, else nothing."""
    if token:
        return {"Authorization": "Bearer %s" % token}
    if username:
        raw = ("%s:%s" % (username, password or "")).encode("utf-8")
        return {"Authorization": "Basic %s" % base64.b64encode(raw).decode("ascii")}
    return {}


def get_json(url, headers=None, ca_file=None, timeout=10.0, query=None):
    """GET ``url`` (``query`` url-encoded) and decode the JSON answer; raises on HTTP or decode errors."""
    from ansible.module_utils.urls import open_url
    from ansible.module_utils.six.moves.urllib.parse import urlencode

    if query:
        url = "%s?%s" % (url, urlencode(query))
    response = open_url(url, method="GET", headers=headers or {}, timeout=timeout, ca_path=ca_file or None,
                        follow_redirects="safe")
    return json.loads(response.read().decode("utf-8"))


def window_text(seconds):
    """A PromQL range (``86400s``): whole seconds, at least one."""
    return "%ds" % max(int(seconds), 1)


def fired_alerts(data):
    """Alerts that fired in the window, from the ``data`` of the answer to FIRED_QUERY
    (``prometheus_api.PrometheusClient.query``): name, severity, labels."""
    out = []
    for series in (data or {}).get("result") or []:
        labels = dict(series.get("metric") or {})
        labels.pop("__name__", None)
        labels.pop("alertstate", None)
        out.append(dict(name=labels.get("alertname"), severity=labels.get("severity"), labels=labels))
    out.sort(key=lambda a: (a["name"] or "", json.dumps(a["labels"], sort_keys=True)))
    return out


def firing_now(alerts):
    """Active alerts from Alertmanager's ``GET /api/v2/alerts``: name, severity, since, summary, runbook."""
    out = []
    for alert in alerts or []:
        status = alert.get("status") or {}
        if status.get("state", "active") != "active":
            continue
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        out.append(dict(name=labels.get("alertname"), severity=labels.get("severity"), since=alert.get("startsAt"),
                        summary=annotations.get("summary") or annotations.get("description"),
                        runbook=annotations.get("runbook"), labels=labels))
    out.sort(key=lambda a: (a["since"] or "", a["name"] or ""))
    return out
