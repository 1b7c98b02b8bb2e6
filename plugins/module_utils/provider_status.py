# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LLM provider status pages (Statuspage ``/api/v2/status.json``), read and judged.

The runbook checks ``status.openai.com`` and ``status.anthropic.com`` by hand before resetting
the circuit breaker or blaming a provider for failed tasks. Which URL each provider has is a
pure decision (``status_urls``); the pages are read concurrently; a page that cannot be read
is ``healthy: None`` (unknown), never "healthy".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DEFAULT_STATUS_URLS = {
    "openai": "https://status.openai.com/api/v2/status.json",
    "anthropic": "https://status.anthropic.com/api/v2/status.json",
}
# Statuspage indicators: none = all systems operational; anything else is an incident.
INDICATORS = ("none", "minor", "major", "critical")


def status_urls(providers, urls=None, base_url=None):
    """``{provider: url or None}``: an explicit URL wins, then ``<base_url>/<provider>``, then the
    provider's public Statuspage; a provider with none of them has no URL (reported unknown)."""
    urls = urls or {}
    out = {}
    for provider in providers:
        if urls.get(provider):
            out[provider] = urls[provider]
        elif base_url:
            out[provider] = "%s/%s" % (base_url.rstrip("/"), provider)
        else:
            out[provider] = DEFAULT_STATUS_URLS.get(provider)
    return out


def judge(url, probe):
    """``{url, indicator, description, healthy, error?}`` from a ``probe_api`` result."""
    out = dict(url=url, indicator=None, description=None, healthy=None)
    if probe.get("status") != 200:
        out["error"] = probe.get("msg") or "no answer"
        return out
    status = (probe.get("json") or {}).get("status") if isinstance(probe.get("json"), dict) else None
    indicator = (status or {}).get("indicator") if isinstance(status, dict) else None
    if indicator not in INDICATORS:
        out["error"] = "not a Statuspage status document (status.indicator is %r)" % (indicator,)
        return out
    out.update(indicator=indicator, description=status.get("description"), healthy=indicator == "none")
    return out


def read_all(urls, timeout=10.0, ca_file=None, validate_certs=True):
    """``{provider: judge(...)}`` for ``status_urls``' result, the pages read concurrently."""
    from ansible_collections.apex.ops.plugins.module_utils.health_gather import probe_api
    from ansible_collections.apex.ops.plugins.module_utils.k8s import run_parallel

    calls = dict((p, (lambda u=u: probe_api(u, timeout=timeout, ca_file=ca_file, validate_certs=validate_certs)))
                 for p, u in urls.items() if u)
    raw = run_parallel(calls)
    out = {}
    for provider, url in urls.items():
        if not url:
            out[provider] = dict(url=None, indicator=None, description=None, healthy=None,
                                 error="no status page known for %s: set its URL" % provider)
            continue
        probe, exc = raw[provider]
        out[provider] = judge(url, probe if exc is None else dict(status=-1, msg="%s: %s" % (type(exc).__name__, exc)))
    return out
