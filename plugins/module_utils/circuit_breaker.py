# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Apex circuit breaker: its state from ``/health``, and the runbook's manual reset
(``POST /admin/circuit-breaker/reset`` with the admin bearer token), done only after the provider
that opened it is confirmed healthy.

``plan_reset`` is the decision, pure: it returns what to do or raises ``ResetRefused`` with the
reason. The token goes in the ``Authorization`` header only; no result or error carries it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.apex.ops.plugins.module_utils.redaction import redact

RESET_PATH = "/admin/circuit-breaker/reset"


class ResetRefused(Exception):
    """The reset is not safe: the message says why and what to check."""


def breaker_from_health(probe):
    """``(breaker, health)`` from a ``probe_api`` result of ``/health``: the breaker dict
    (state, failures, provider, opened_at, reset_at) or ``{"state": "unknown", "error": ...}``."""
    body = probe.get("json") if isinstance(probe.get("json"), dict) else None
    if body is None:
        return dict(state="unknown", error=probe.get("msg") or "no JSON body from /health"), None
    breaker = body.get("circuit_breaker")
    if not isinstance(breaker, dict) or not breaker.get("state"):
        return dict(state="unknown", error="/health carries no circuit_breaker"), body
    return dict(breaker), body


def plan_reset(breaker, providers):
    """``"reset"`` or ``"noop"`` for ``breaker`` given the providers' judged status pages.

    Refuses (``ResetRefused``) unless the provider the breaker names is known to be healthy:
    resetting into an outage only reopens it after the next failures, with failed tasks meanwhile.
    """
    state = breaker.get("state")
    if state == "closed":
        return "noop"
    if state != "open":
        raise ResetRefused("the breaker's state is %s (%s): nothing is reset blind"
                           % (state, breaker.get("error") or "not open or closed"))
    provider = breaker.get("provider")
    if not provider:
        raise ResetRefused("the open breaker names no provider, so no status page can confirm it is healthy; "
                           "check the provider by hand and reset with the admin endpoint")
    status = providers.get(provider)
    if status is None:
        raise ResetRefused("provider %s opened the breaker but its status page was not checked "
                           "(add it to providers)" % provider)
    if status.get("healthy") is None:
        raise ResetRefused("the status of provider %s is unknown (%s): the breaker stays open"
                           % (provider, status.get("error") or "no answer"))
    if not status["healthy"]:
        raise ResetRefused("provider %s is not healthy (%s: %s): the breaker stays open; switch provider instead"
                           % (provider, status.get("indicator"), status.get("description")))
    return "reset"


def post_reset(api_url, token, timeout=10.0, ca_file=None, validate_certs=True):
    """POST the reset; returns the JSON answer. Raises ``RuntimeError`` (token-free) on any non-200."""
    from ansible.module_utils.urls import open_url
    from ansible.module_utils.six.moves.urllib.error import HTTPError

    if not token:
        raise RuntimeError("no admin token: set admin_token (APEX_ADMIN_TOKEN)")
    url = api_url.rstrip("/") + RESET_PATH
    try:
        response = open_url(url, method="POST", data=b"{}", timeout=timeout, validate_certs=validate_certs,
                            ca_path=ca_file or None, follow_redirects="none",
                            headers={"Authorization": "Bearer %s" % token, "Content-Type": "application/json"})
        body = response.read()
    except HTTPError as exc:
        hint = " (the admin token was rejected)" if exc.code == 401 else ""
        raise RuntimeError(redact("POST %s answered %s %s%s" % (url, exc.code, exc.reason, hint), (token,)))
    except Exception as exc:  # connection refused, TLS, timeout
        raise RuntimeError(redact("POST %s failed: %s: %s" % (url, type(exc).__name__, exc), (token,)))
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
