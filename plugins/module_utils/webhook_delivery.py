# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Posting a message to webhooks, with retries, reporting per target what happened.

A webhook URL is a credential (a Slack incoming webhook's path is its secret), so a target is only
ever named by its host and kind (``hooks.slack.com (slack)``), never by its URL. Retried: connection
errors, timeouts, 429 and 5xx (honouring ``Retry-After`` up to the back-off cap); not retried: the
other 4xx (a wrong URL does not get better). The clock and the HTTP call are injected for tests.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible.module_utils.six.moves.urllib.parse import urlsplit

WEBHOOK_KINDS = ("slack", "json")


def target_name(url, kind):
    """How a target is shown: its host (and port) and kind, never the path or credentials."""
    netloc = urlsplit(url or "").netloc.rpartition("@")[2] or "?"
    return "%s (%s)" % (netloc, kind)


def retryable(status):
    return status is None or status == 429 or status >= 500


def post_json(url, body, timeout, validate_certs=True, ca_file=None, headers=None):
    """POST ``body`` as JSON; returns ``(status, retry_after_seconds or None)``. Transport errors
    raise (``OSError`` and friends); HTTP errors return their status."""
    from ansible.module_utils.six.moves.urllib.error import HTTPError
    from ansible.module_utils.urls import open_url

    all_headers = {"Content-Type": "application/json", "User-Agent": "apex.ops apex_notify"}
    all_headers.update(headers or {})
    try:
        response = open_url(url, data=json.dumps(body).encode("utf-8"), headers=all_headers, method="POST",
                            timeout=timeout, validate_certs=validate_certs, ca_path=ca_file or None,
                            follow_redirects="none")
        try:
            return response.getcode(), None
        finally:
            response.close()
    except HTTPError as exc:
        after = exc.headers.get("Retry-After") if exc.headers else None
        try:
            after = float(after) if after is not None else None
        except ValueError:
            after = None
        return exc.code, after


def deliver(url, kind, body, attempts=3, delay=1.0, max_delay=10.0, timeout=10.0, post=post_json, sleep=time.sleep,
            **post_kwargs):
    """Post ``body`` to one target, up to ``attempts`` times with a doubling delay. Returns a dict:
    ``target``, ``kind``, ``delivered``, ``status`` (last HTTP status), ``attempts``, ``error``."""
    outcome = dict(target=target_name(url, kind), kind=kind, delivered=False, status=None, attempts=0, error=None)
    wait = float(delay)
    for attempt in range(1, max(1, int(attempts)) + 1):
        outcome["attempts"] = attempt
        retry_after = None
        try:
            status, retry_after = post(url, body, timeout, **post_kwargs)
        except Exception as exc:  # noqa: BLE001 - any transport failure is reported, never raised
            status = None
            # the exception text may carry the URL: say only its type and reason
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            outcome["error"] = "%s: %s" % (exc.__class__.__name__, str(reason).replace(url, "<webhook url>"))
        outcome["status"] = status
        if status is not None and 200 <= status < 300:
            outcome.update(delivered=True, error=None)
            return outcome
        if status is not None:
            outcome["error"] = "HTTP %s" % status
        if not retryable(status) or attempt >= attempts:
            return outcome
        sleep(min(max(wait, retry_after or 0), max_delay))
        wait = min(wait * 2, max_delay)
    return outcome
