# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pod logs, grepped: the runbook's ``kubectl logs deployment/X --since=10m | grep -i error | tail -50``.

One log request per pod (``sinceSeconds`` on the server), all pods concurrently; the lines that
match a regular expression are kept, newest last, redacted. A pod whose log cannot be read is
reported with why, never fails the gather (a diagnosis must not fail for want of one log).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, run_parallel
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact

PODS_PATH = "/api/v1/namespaces/%s/pods/%s/log"


def compile_pattern(pattern):
    """The regex of ``logs_pattern``; a bad one raises ``ValueError`` naming it."""
    try:
        return re.compile(pattern or ".")
    except re.error as exc:
        raise ValueError("logs_pattern %r is not a valid regular expression: %s" % (pattern, exc))


def match_lines(text, regex, limit, secrets=()):
    """``(kept, matched)``: the last ``limit`` non-empty lines of ``text`` matching ``regex``
    (redacted), and how many matched in all."""
    hits = [line.rstrip() for line in (text or "").splitlines() if line.strip() and regex.search(line)]
    kept = hits[-limit:] if limit > 0 else []
    return [redact(line, secrets) for line in kept], len(hits)


def grep_pods(client, namespace, pods, pattern, since_seconds, limit=50, secrets=()):
    """``{pod, lines, matched, error?}`` per pod (``pods``: pod summaries or names), in pod order."""
    regex = compile_pattern(pattern)
    names = [p["name"] if isinstance(p, dict) else p for p in pods]
    query = {"sinceSeconds": max(1, int(since_seconds))} if since_seconds else {}
    calls = dict((name, (lambda n=name: client.get_text(PODS_PATH % (namespace, n), query=query))) for name in names)
    raw = run_parallel(calls)
    out = []
    for name in names:
        text, exc = raw[name]
        if exc is not None:
            reason = str(exc) if isinstance(exc, KubeApiError) else "%s: %s" % (type(exc).__name__, exc)
            out.append(dict(pod=name, lines=[], matched=0, error=redact(reason, secrets)))
            continue
        lines, matched = match_lines(text, regex, limit, secrets)
        out.append(dict(pod=name, lines=lines, matched=matched))
    return out
