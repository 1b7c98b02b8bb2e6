# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary analysis as one call: every ``interval`` for ``duration`` (one monotonic
deadline), evaluate the checks (``promql_checks``), record the interval, stop early once
``max_failures`` intervals failed, decide at the end. The clock and the sleep are injected so
the loop is unit-tested without waiting; the values come from ``fetch(query)``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import time

from ansible_collections.apex.ops.plugins.module_utils import promql_checks as pc
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

CHART_TEMPLATES = ("error_rate", "p95_latency")


class AnalysisError(Exception):
    """The analysis could not go on (Prometheus unreachable, a query refused); ``intervals``
    holds what was recorded before."""

    def __init__(self, msg, intervals, cause=None):
        super(AnalysisError, self).__init__(msg)
        self.intervals = intervals
        self.cause = cause


def interval_count(duration, interval):
    """How many evaluations fit in ``duration`` (at least one)."""
    if interval <= 0:
        raise pc.CheckError("interval must be positive")
    return max(1, int(math.floor(duration / interval + 1e-9)))


def observe(fetch, template, tracks, window, selector):
    """{track: value} of a template, for the chart (None where there is no data)."""
    values = {}
    for track in tracks:
        value = fetch(pc.render(template, track, window, selector))
        values[track] = None if value is None or math.isnan(value) else value
    return values


def evaluate_interval(fetch, checks, tracks, window, selector, index, elapsed):
    """One interval: every check, plus the canary and stable series the chart draws. Queries
    repeated within the interval (a track's request count) are asked once."""
    cache = {}

    def cached(query):
        if query not in cache:
            cache[query] = fetch(query)
        return cache[query]
    results = [pc.evaluate(check, cached) for check in checks]
    series = dict((t, observe(cached, t, tracks, window, selector)) for t in CHART_TEMPLATES)
    return dict(index=index, at=utcnow().isoformat(), elapsed=round(elapsed, 3),
                verdict=pc.interval_verdict(results), checks=results, series=series, queries=len(cache))


def run_analysis(fetch, checks, interval, duration, max_failures, tracks=("canary", "stable"), window=None,
                 selector=None, clock=time.monotonic, sleep=time.sleep):
    """Evaluate every ``interval`` seconds until ``duration`` or ``max_failures`` failed
    intervals. Returns ``{decision, reason, intervals, failed_intervals, elapsed}`` (not ``failed``: Ansible
    reads that key as the task's failure); raises
    ``AnalysisError`` (with the intervals so far) when Prometheus fails."""
    from ansible_collections.apex.ops.plugins.module_utils.prometheus_api import PrometheusError

    count = interval_count(duration, interval)
    deadline = Deadline(count * interval, clock)
    intervals = []
    for index in range(1, count + 1):
        # evaluate at the end of each interval: the window then covers what happened in it
        wait = index * interval - deadline.elapsed()
        if wait > 0:
            sleep(wait)
        try:
            entry = evaluate_interval(fetch, checks, tracks, window or interval, selector, index, deadline.elapsed())
        except PrometheusError as exc:
            raise AnalysisError("analysis interval %d of %d: %s" % (index, count, exc), intervals, exc)
        intervals.append(entry)
        decision, reason = pc.decide(intervals, max_failures, finished=index == count)
        if decision != pc.CONTINUE:
            break
    return dict(decision=decision, reason=reason, intervals=intervals, planned_intervals=count,
                failed_intervals=sum(1 for i in intervals if i["verdict"] == pc.FAIL), elapsed=round(deadline.elapsed(), 3))


def table(intervals):
    """The analysis as rows, one per interval and check (for reports and AWX artifacts)."""
    rows = []
    for entry in intervals:
        for check in entry["checks"]:
            limit = check["max_limit"] if check["max_limit"] is not None else check["min_limit"]
            rows.append(dict(interval=entry["index"], elapsed=entry["elapsed"], check=check["name"],
                             value=check["value"], baseline=check["baseline"], limit=limit,
                             samples=check["samples"], verdict=check["verdict"], interval_verdict=entry["verdict"]))
    return rows


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.4g" % value
    return str(value)


def table_text(intervals):
    """The same table as aligned text lines (what a person reads in the log or the report)."""
    header = ("interval", "elapsed_s", "check", "value", "baseline", "limit", "samples", "verdict")
    rows = [header] + [tuple(_cell(r[k]) for k in ("interval", "elapsed", "check", "value", "baseline", "limit",
                                                   "samples", "verdict")) for r in table(intervals)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
