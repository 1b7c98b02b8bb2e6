# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metric checks, pure: PromQL templates per track, a check's limit and verdict, an analysis
interval's verdict and the analysis decision. No I/O: values come from a ``fetch(query)``
callable (``prometheus_api.PrometheusClient.scalar``), so every rule here is unit-tested.

A check is a query (a named template or PromQL of one's own), a threshold (``max``/``min``,
absolute, or relative to a baseline track: ``limit = baseline * max + tolerance``) and a
minimum sample size (requests in the window) below which the verdict is
``insufficient_data``, never a pass.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient_data"
PROMOTE, ABORT, CONTINUE = "promote", "abort", "continue"

# The Apex API's metrics (the twin exports the same names, docs/twin.md)
REQUESTS = "apex_http_requests_total"
DURATION_BUCKETS = "apex_http_request_duration_seconds_bucket"

TEMPLATES = {
    # share of requests answered 5xx
    "error_rate": ('(sum(rate(%(requests)s{%(m)s,status=~"5.."}[%(w)s])) or vector(0)) / '
                   'sum(rate(%(requests)s{%(m)s}[%(w)s]))'),
    # 95th percentile of the request duration, seconds
    "p95_latency": 'histogram_quantile(0.95, sum by (le) (rate(%(buckets)s{%(m)s}[%(w)s])))',
    "p99_latency": 'histogram_quantile(0.99, sum by (le) (rate(%(buckets)s{%(m)s}[%(w)s])))',
    # requests per second
    "request_rate": 'sum(rate(%(requests)s{%(m)s}[%(w)s]))',
}
SAMPLES_TEMPLATE = 'sum(increase(%(requests)s{%(m)s}[%(w)s]))'
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class CheckError(ValueError):
    """A check that cannot be evaluated as written (configuration, not data)."""


def promql_window(seconds):
    """A PromQL range duration: whole seconds (``90s``), milliseconds below one second."""
    if seconds <= 0:
        raise CheckError("a query window must be positive, got %ss" % seconds)
    if seconds < 1 or seconds != int(seconds):
        return "%dms" % int(round(seconds * 1000))
    return "%ds" % int(seconds)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def matchers(track, selector=None):
    """``track="canary",namespace="apex"``: the track first, then the extra labels sorted."""
    labels = dict(selector or {})
    labels["track"] = track
    for name in labels:
        if not LABEL_NAME.match(str(name)):
            raise CheckError("invalid label name %r in selector" % name)
    order = ["track"] + sorted(n for n in labels if n != "track")
    return ",".join('%s="%s"' % (n, _escape(labels[n])) for n in order)


def render(template, track, window, selector=None):
    """The PromQL of a named template for ``track`` over ``window`` seconds."""
    if template not in TEMPLATES:
        raise CheckError("unknown template %r (known: %s)" % (template, ", ".join(sorted(TEMPLATES))))
    return TEMPLATES[template] % dict(requests=REQUESTS, buckets=DURATION_BUCKETS, m=matchers(track, selector),
                                      w=promql_window(window))


def render_samples(track, window, selector=None):
    """Requests of ``track`` in the window: the sample size of the request templates."""
    return SAMPLES_TEMPLATE % dict(requests=REQUESTS, m=matchers(track, selector), w=promql_window(window))


def substitute(query, track, window, selector=None):
    """A query of one's own with ``$track``, ``$window`` and ``$matchers`` filled in."""
    return (query.replace("$matchers", matchers(track, selector)).replace("$window", promql_window(window))
            .replace("$track", _escape(track)))


def _number(value, what):
    if value is None:
        return None
    if isinstance(value, bool):
        raise CheckError("%s must be a number, got %r" % (what, value))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckError("%s must be a number, got %r" % (what, value))


def normalize_check(raw, defaults):
    """One check with every field filled in; raises ``CheckError``. ``defaults`` gives
    ``track``, ``baseline_track``, ``window`` (seconds), ``min_samples`` and ``selector``."""
    if not isinstance(raw, dict):
        raise CheckError("a check must be a dict, got %r" % (raw,))
    template, query = raw.get("template"), raw.get("query")
    if bool(template) == bool(query):
        raise CheckError("check %r: give exactly one of template or query" % (raw.get("name") or raw))
    if template and template not in TEMPLATES:
        raise CheckError("check %r: unknown template %r (known: %s)"
                         % (raw.get("name") or template, template, ", ".join(sorted(TEMPLATES))))
    name = raw.get("name") or template or "check"
    check = dict(name=name, template=template, query=query,
                 max=_number(raw.get("max"), "check %s: max" % name),
                 min=_number(raw.get("min"), "check %s: min" % name),
                 tolerance=_number(raw.get("tolerance"), "check %s: tolerance" % name) or 0.0,
                 relative_to=raw.get("relative_to") or None,
                 track=raw.get("track") or defaults.get("track") or "canary",
                 selector=dict(defaults.get("selector") or {}, **(raw.get("selector") or {})),
                 samples_query=raw.get("samples_query") or None)
    if check["max"] is None and check["min"] is None:
        raise CheckError("check %s: give max or min (or both)" % name)
    if check["relative_to"] == "baseline":
        check["relative_to"] = defaults.get("baseline_track") or "stable"
    if check["relative_to"] == check["track"]:
        raise CheckError("check %s: a track cannot be compared with itself (%s)" % (name, check["track"]))
    try:
        window = parse_duration(raw.get("window"), "check %s: window" % name)
    except ValueError as exc:
        raise CheckError(str(exc))
    check["window"] = window if window is not None else defaults.get("window")
    if not check["window"]:
        raise CheckError("check %s: no window" % name)
    samples = raw.get("min_samples")
    check["min_samples"] = int(defaults.get("min_samples") or 0) if samples is None else int(samples)
    if check["min_samples"] < 0:
        raise CheckError("check %s: min_samples cannot be negative" % name)
    if query and check["min_samples"] and not check["samples_query"]:
        # a query of one's own counts the track's requests unless it says how to count
        check["samples_query"] = SAMPLES_TEMPLATE.replace("%(m)s", "$matchers").replace("%(w)s", "$window") % dict(
            requests=REQUESTS)
    return check


def queries_for(check, track):
    """(value query, samples query or None) of ``check`` for ``track``."""
    if check["template"]:
        value = render(check["template"], track, check["window"], check["selector"])
        samples = render_samples(track, check["window"], check["selector"]) if check["min_samples"] else None
    else:
        value = substitute(check["query"], track, check["window"], check["selector"])
        samples = (substitute(check["samples_query"], track, check["window"], check["selector"])
                   if check["samples_query"] and check["min_samples"] else None)
    return value, samples


def limits(check, baseline):
    """(max limit, min limit) of ``check``: absolute, or ``baseline * ratio +/- tolerance``."""
    hi, lo = check["max"], check["min"]
    if check["relative_to"]:
        hi = None if hi is None else baseline * hi + check["tolerance"]
        lo = None if lo is None else baseline * lo - check["tolerance"]
    return hi, lo


def _usable(value):
    return value is not None and not math.isnan(value)


def evaluate(check, fetch):
    """Run ``check`` with ``fetch(query) -> float or None`` (None: an empty result). Returns
    the check's result: verdict, value, baseline, limits, samples and the queries used."""
    query, samples_query = queries_for(check, check["track"])
    result = dict(name=check["name"], track=check["track"], query=query, value=None, samples=None,
                  min_samples=check["min_samples"], relative_to=check["relative_to"], baseline=None,
                  max_limit=None, min_limit=None, verdict=INSUFFICIENT, reason=None)
    if samples_query:
        result["samples_query"] = samples_query
        result["samples"] = fetch(samples_query)
        if not _usable(result["samples"]) or result["samples"] < check["min_samples"]:
            result["reason"] = "%s requests of track %s in %s, fewer than min_samples %d" % (
                _fmt(result["samples"]), check["track"], promql_window(check["window"]), check["min_samples"])
            return result
    result["value"] = fetch(query)
    if not _usable(result["value"]):
        result["reason"] = ("the query returned an empty result" if result["value"] is None
                            else "the query returned NaN (no data in the window)")
        return result
    baseline = None
    if check["relative_to"]:
        base_query, base_samples_query = queries_for(check, check["relative_to"])
        result["baseline_query"] = base_query
        if base_samples_query:
            result["baseline_samples"] = fetch(base_samples_query)
            if not _usable(result["baseline_samples"]) or result["baseline_samples"] < check["min_samples"]:
                result["reason"] = "%s requests of baseline track %s, fewer than min_samples %d" % (
                    _fmt(result["baseline_samples"]), check["relative_to"], check["min_samples"])
                return result
        baseline = fetch(base_query)
        result["baseline"] = baseline
        if not _usable(baseline):
            result["reason"] = "no baseline value for track %s" % check["relative_to"]
            return result
    hi, lo = limits(check, baseline)
    result["max_limit"], result["min_limit"] = hi, lo
    if hi is not None and result["value"] > hi:
        result.update(verdict=FAIL, reason="%s %s > limit %s" % (check["name"], _fmt(result["value"]), _fmt(hi)))
    elif lo is not None and result["value"] < lo:
        result.update(verdict=FAIL, reason="%s %s < limit %s" % (check["name"], _fmt(result["value"]), _fmt(lo)))
    else:
        result["verdict"] = PASS
    return result


def _fmt(value):
    if value is None:
        return "no"
    return "%.4g" % value


def interval_verdict(results):
    """One interval: ``fail`` if any check failed, else ``insufficient_data`` if any check had
    too little data, else ``pass`` (an interval without checks is insufficient)."""
    verdicts = [r["verdict"] for r in results]
    if FAIL in verdicts:
        return FAIL
    if INSUFFICIENT in verdicts or not verdicts:
        return INSUFFICIENT
    return PASS


def decide(intervals, max_failures, finished):
    """The analysis decision after ``intervals`` (each with a ``verdict``): (decision, reason).

    ``abort`` as soon as ``max_failures`` intervals failed; at the end (``finished``)
    ``promote`` only when the last interval passed, ``abort`` with insufficient data when it
    had too little data; ``continue`` otherwise."""
    failed = sum(1 for i in intervals if i["verdict"] == FAIL)
    if failed >= max_failures:
        return ABORT, "%d of %d analysis intervals failed (max_failures %d)" % (failed, len(intervals), max_failures)
    if not finished:
        return CONTINUE, None
    if not intervals:
        return ABORT, "insufficient data: no analysis interval ran"
    last = intervals[-1]
    if last["verdict"] == PASS:
        return PROMOTE, "%d intervals, %d failed (max_failures %d), the last passed" % (
            len(intervals), failed, max_failures)
    return ABORT, "insufficient data at the end of the analysis: %s" % "; ".join(
        r["reason"] for r in last["checks"] if r["verdict"] == INSUFFICIENT)
