# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``apex_metrics``: one call of each state (query, check, analyze) from the module's
parameters, and the canary's default checks. Failures are ``MetricsFailure`` with a kind
(unreachable, query, response, empty, config) and what was recorded before them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils import promql_checks as pc
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils.prometheus_api import (
    PrometheusClient, PrometheusError, connection_params)


class MetricsFailure(Exception):
    def __init__(self, msg, kind, details=None, queries=0):
        super(MetricsFailure, self).__init__(msg)
        self.kind = kind
        self.details = details or {}
        self.queries = queries


def default_checks(max_error_rate=0.10, max_p95_latency=2.0):
    """The canary's checks: the runbook's alert thresholds as absolute limits (failure rate 10 %,
    P95 2 s), and the canary against stable, with an allowance so a near-zero stable value does
    not fail a canary on noise (2 points of error rate, 0.25 s of p95)."""
    return [
        dict(name="error_rate", template="error_rate", max=max_error_rate),
        dict(name="error_rate_vs_stable", template="error_rate", relative_to="baseline", max=2.0, tolerance=0.02),
        dict(name="p95_latency", template="p95_latency", max=max_p95_latency),
        dict(name="p95_latency_vs_stable", template="p95_latency", relative_to="baseline", max=1.5, tolerance=0.25),
    ]


def _seconds(value, name):
    try:
        return parse_duration(value, name)
    except ValueError as exc:
        raise MetricsFailure(str(exc), "config")


def prepare_checks(params, window):
    defaults = dict(track=params["track"], baseline_track=params["baseline_track"], window=window,
                    min_samples=params["min_samples"], selector=params["selector"])
    raw = params.get("checks") or default_checks(params["max_error_rate"], params["max_p95_latency"])
    try:
        checks = [pc.normalize_check(dict((k, v) for k, v in c.items() if v is not None), defaults) for c in raw]
        names = [c["name"] for c in checks]
        duplicates = sorted(set(n for n in names if names.count(n) > 1))
        if duplicates:
            raise pc.CheckError("check names must be unique; repeated: %s (give each a name)" % ", ".join(duplicates))
    except pc.CheckError as exc:
        raise MetricsFailure(str(exc), "config")
    return checks


def run(params, client=None, clock=time.monotonic, sleep=time.sleep, wall=time.time):
    if client is None:
        try:
            client = PrometheusClient(**connection_params(params))
        except PrometheusError as exc:
            raise MetricsFailure(str(exc), "config")
    state = params["state"]
    if state == "query":
        return run_query(client, params, wall)
    if state == "check":
        return run_check(client, params)
    return run_analyze(client, params, clock, sleep)


def run_query(client, params, wall):
    promql = params["query"]
    if params.get("range"):
        duration = _seconds(params["range"]["duration"], "range.duration")
        step = _seconds(params["range"]["step"], "range.step")
        if not duration or not step:
            raise MetricsFailure("range.duration and range.step must be positive", "config")
        end = wall()
        data = client.query_range(promql, end - duration, end, step)
    else:
        data = client.query(promql, params.get("time"))
    result = data.get("result")
    if not result and data.get("resultType") in ("vector", "matrix") and not params.get("allow_empty"):
        raise MetricsFailure("the query returned an empty result (no series match; check the metric name and "
                             "labels, or set allow_empty): %s" % promql, "empty",
                             details=dict(query=promql), queries=client.requests)
    return dict(result_type=data.get("resultType"), result=result, queries=client.requests)


def run_check(client, params):
    window = _seconds(params.get("window") or "1m", "window")
    checks = prepare_checks(params, window)
    results = [pc.evaluate(check, client.scalar) for check in checks]
    return dict(checks=results, verdict=pc.interval_verdict(results), queries=client.requests)


def run_analyze(client, params, clock, sleep):
    from ansible_collections.apex.ops.plugins.module_utils import metrics_analysis as ma
    from ansible_collections.apex.ops.plugins.module_utils.metrics_chart import render_svg

    interval = _seconds(params["interval"], "interval")
    duration = _seconds(params["duration"], "duration")
    if not interval or not duration:
        raise MetricsFailure("interval and duration must be positive", "config")
    if params["max_failures"] < 1:
        raise MetricsFailure("max_failures must be at least 1", "config")
    window = _seconds(params.get("window"), "window") or interval
    checks = prepare_checks(params, window)
    tracks = (params["track"], params["baseline_track"])
    try:
        outcome = ma.run_analysis(client.scalar, checks, interval, duration, params["max_failures"], tracks=tracks,
                                  window=window, selector=params["selector"], clock=clock, sleep=sleep)
    except ma.AnalysisError as exc:
        kind = getattr(exc.cause, "kind", "unreachable")
        raise MetricsFailure(str(exc), kind, details=dict(intervals=exc.intervals, table=ma.table_text(exc.intervals),
                                                          query=getattr(exc.cause, "query", None)),
                             queries=client.requests)
    outcome.update(table=ma.table_text(outcome["intervals"]), rows=ma.table(outcome["intervals"]),
                   queries=client.requests)
    if params.get("chart", True):
        outcome["chart_svg"] = render_svg(outcome["intervals"], tracks,
                                          title="canary analysis: %s (%s)" % (outcome["decision"], outcome["reason"]))
    return outcome
