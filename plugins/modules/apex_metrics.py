#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: apex_metrics
short_description: Query Prometheus and judge metric checks (canary analysis)
version_added: "0.3.0"
description:
  - V(query) runs one PromQL query against the Prometheus HTTP API, instant (optionally at O(time)) or over a
    range (O(range)), and returns Prometheus' result.
  - V(check) evaluates O(checks) once. A check is a named template (error rate, p95/p99 latency, request rate of a
    track) or PromQL of one's own, a threshold (O(checks[].max), O(checks[].min)), absolute or relative to another
    track (V(stable)), and a minimum sample size (requests in the window) below which its verdict is
    V(insufficient_data), never V(pass).
  - V(analyze) runs the whole canary analysis in one call - the checks every O(interval) for O(duration) under one
    monotonic deadline, stopping early once O(max_failures) intervals failed - and returns the decision
    (V(promote) or V(abort)), each interval's values, a table and an SVG chart of canary against stable.
  - Errors are clear and distinct, never a pass - Prometheus unreachable, a query Prometheus refused (its own error
    text), a query of a check that returns several series. An empty result is V(insufficient_data) in a check and
    fails V(query) unless O(allow_empty).
  - Reads only; never changes anything.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.prometheus
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: No diff.
options:
  state:
    description:
      - What to do.
    type: str
    choices: [query, check, analyze]
    default: query
  query:
    description:
      - With O(state=query), the PromQL to run.
    type: str
  time:
    description:
      - With O(state=query), evaluate the instant query at this Unix time (default now).
    type: float
  range:
    description:
      - With O(state=query), run a range query over the last O(range.duration) every O(range.step).
    type: dict
    suboptions:
      duration:
        description: How far back (V(15m), V(1h), seconds).
        type: raw
        required: true
      step:
        description: Resolution (V(15s), seconds).
        type: raw
        default: 15s
  allow_empty:
    description:
      - With O(state=query), return an empty result instead of failing.
    type: bool
    default: false
  checks:
    description:
      - With O(state=check) or O(state=analyze), the checks.
      - Without it, V(check) and V(analyze) use the canary defaults - error rate at most O(max_error_rate) and at most twice
        stable's plus 2 points, p95 latency at most O(max_p95_latency) and at most 1.5 times stable's plus 0.25 s.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name in results and reports (default the template).
        type: str
      template:
        description:
          - A named query of the track's C(apex_http_requests_total) / C(apex_http_request_duration_seconds) series.
        type: str
        choices: [error_rate, p95_latency, p99_latency, request_rate]
      query:
        description:
          - PromQL of one's own returning one series; C($track), C($window) and C($matchers) (the track and
            O(selector) label matchers) are filled in.
        type: str
      samples_query:
        description:
          - With O(checks[].query), how to count the samples (default the track's requests in the window).
        type: str
      max:
        description: Fail above this value; with O(checks[].relative_to), a ratio of the baseline's value.
        type: float
      min:
        description: Fail below this value; with O(checks[].relative_to), a ratio of the baseline's value.
        type: float
      relative_to:
        description:
          - Compare with this track (V(stable), or V(baseline) for O(baseline_track)) - the limit is
            C(baseline * max + tolerance) (C(baseline * min - tolerance)).
        type: str
      tolerance:
        description: Absolute allowance added to a relative limit, so a near-zero baseline does not fail on noise.
        type: float
        default: 0.0
      min_samples:
        description: Requests needed in the window (and in the baseline's) for a verdict. Default O(min_samples).
        type: int
      window:
        description: The rate window (default O(window), else O(interval)).
        type: raw
      track:
        description: The track judged (default O(track)).
        type: str
      selector:
        description: Extra label matchers (for example C(namespace=apex) as a dict), merged over O(selector).
        type: dict
  track:
    description: The track judged (label C(track)).
    type: str
    default: canary
  baseline_track:
    description: The track relative checks compare with.
    type: str
    default: stable
  selector:
    description: Label matchers added to every template query (a dict, for example C(namespace) V(apex)).
    type: dict
    default: {}
  window:
    description: The rate window of the checks. Default O(interval) (V(analyze)) or V(1m).
    type: raw
  min_samples:
    description: Default minimum number of requests per window for a check's verdict.
    type: int
    default: 20
  max_error_rate:
    description: With the default checks, the absolute error-rate limit (the runbook's alert, 10 %).
    type: float
    default: 0.10
  max_p95_latency:
    description: With the default checks, the absolute p95 latency limit in seconds (the runbook's alert, 2 s).
    type: float
    default: 2.0
  interval:
    description: With O(state=analyze), time between evaluations.
    type: raw
    default: 1m
  duration:
    description: With O(state=analyze), the length of the analysis (the runbook says 15 to 30 minutes).
    type: raw
    default: 15m
  max_failures:
    description: With O(state=analyze), failed intervals that abort the analysis.
    type: int
    default: 2
  chart:
    description: With O(state=analyze), return the SVG chart in RV(chart_svg).
    type: bool
    default: true
notes:
  - The module waits for the whole analysis; give the task no async timeout shorter than O(duration).
"""

EXAMPLES = r"""
- name: Error rate of the canary against stable, once
  apex.ops.apex_metrics:
    state: check
    window: 5m
    checks:
      - template: error_rate
        max: 0.05
      - name: error_rate_vs_stable
        template: error_rate
        relative_to: stable
        max: 2.0
        tolerance: 0.01

- name: Canary analysis, 15 minutes, a check a minute, abort after 2 failed minutes
  apex.ops.apex_metrics:
    state: analyze
    prometheus_url: https://prometheus.example.com
    prometheus_token: "{{ vault_prometheus_token }}"
    interval: 1m
    duration: 15m
    max_failures: 2
    selector:
      namespace: apex
  register: analysis

- name: Requests per second of the last hour, every minute
  apex.ops.apex_metrics:
    query: sum(rate(apex_http_requests_total[5m]))
    range:
      duration: 1h
      step: 1m
"""

RETURN = r"""
result_type:
  description: With O(state=query), Prometheus' C(resultType).
  returned: state=query
  type: str
  sample: vector
result:
  description: With O(state=query), Prometheus' C(result) as it answered.
  returned: state=query
  type: list
  sample: [{"metric": {"track": "canary"}, "value": [1796227200.0, "0.02"]}]
checks:
  description:
    - With O(state=check), each check's result - C(name), C(track), C(verdict) (V(pass), V(fail), V(insufficient_data)),
      C(reason), C(value), C(samples), C(min_samples), C(relative_to), C(baseline), C(baseline_samples), C(max_limit),
      C(min_limit), C(query), C(samples_query), C(baseline_query).
  returned: state=check
  type: list
  elements: dict
verdict:
  description: With O(state=check), the overall verdict (V(fail) if any check failed, else V(insufficient_data) if any
    had too little data, else V(pass)).
  returned: state=check
  type: str
  sample: pass
decision:
  description: With O(state=analyze), V(promote) or V(abort).
  returned: state=analyze
  type: str
  sample: promote
reason:
  description: With O(state=analyze), why.
  returned: state=analyze
  type: str
  sample: "2 of 3 analysis intervals failed (max_failures 2)"
intervals:
  description:
    - With O(state=analyze), one entry per evaluation - C(index), C(at), C(elapsed) seconds, C(verdict), C(checks)
      (as RV(checks)), C(series) (error rate and p95 latency per track, for the chart).
    - On failure it is in RV(details).
  returned: state=analyze
  type: list
  elements: dict
failed_intervals:
  description: With O(state=analyze), the number of failed intervals.
  returned: state=analyze
  type: int
planned_intervals:
  description: With O(state=analyze), how many intervals the duration holds.
  returned: state=analyze
  type: int
elapsed:
  description: With O(state=analyze), seconds the analysis took.
  returned: state=analyze
  type: float
table:
  description: With O(state=analyze), the analysis as text lines, one per interval and check.
  returned: state=analyze
  type: list
  elements: str
rows:
  description: With O(state=analyze), the same table as dicts (C(interval), C(elapsed), C(check), C(value),
    C(baseline), C(limit), C(samples), C(verdict), C(interval_verdict)).
  returned: state=analyze
  type: list
  elements: dict
chart_svg:
  description: With O(state=analyze) and O(chart), an SVG chart of canary and stable error rate and p95 latency.
  returned: state=analyze and chart
  type: str
queries:
  description: Prometheus API calls made.
  returned: always
  type: int
error_kind:
  description: On failure, what went wrong - V(unreachable), V(query) (refused by Prometheus, or not one series),
    V(response) (not the Prometheus API), V(empty) (an empty result without O(allow_empty)), V(config).
  returned: failure
  type: str
details:
  description: On failure, the intervals recorded before it (V(analyze)) and the query that failed.
  returned: failure
  type: dict
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import PROMETHEUS_ARGSPEC

CHECK_SPEC = dict(
    name=dict(type="str"),
    template=dict(type="str", choices=["error_rate", "p95_latency", "p99_latency", "request_rate"]),
    query=dict(type="str"),
    samples_query=dict(type="str"),
    max=dict(type="float"),
    min=dict(type="float"),
    relative_to=dict(type="str"),
    tolerance=dict(type="float", default=0.0),
    min_samples=dict(type="int"),
    window=dict(type="raw"),
    track=dict(type="str"),
    selector=dict(type="dict"),
)

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["query", "check", "analyze"], default="query"),
    query=dict(type="str"),
    time=dict(type="float"),
    range=dict(type="dict", options=dict(duration=dict(type="raw", required=True),
                                         step=dict(type="raw", default="15s"))),
    allow_empty=dict(type="bool", default=False),
    checks=dict(type="list", elements="dict", options=CHECK_SPEC),
    track=dict(type="str", default="canary"),
    baseline_track=dict(type="str", default="stable"),
    selector=dict(type="dict", default={}),
    window=dict(type="raw"),
    min_samples=dict(type="int", default=20),
    max_error_rate=dict(type="float", default=0.10),
    max_p95_latency=dict(type="float", default=2.0),
    interval=dict(type="raw", default="1m"),
    duration=dict(type="raw", default="15m"),
    max_failures=dict(type="int", default=2),
    chart=dict(type="bool", default=True),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(PROMETHEUS_ARGSPEC,),
        required_if=[("state", "query", ("query",)), ("state", "check", ("checks",))],
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import metrics_runner
    from ansible_collections.apex.ops.plugins.module_utils.prometheus_api import PrometheusError

    try:
        result = metrics_runner.run(module.params)
    except metrics_runner.MetricsFailure as exc:
        module.fail(str(exc), error_kind=exc.kind, details=exc.details, queries=exc.queries)
    except PrometheusError as exc:
        module.fail(str(exc), error_kind=exc.kind, details=dict(query=exc.query))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
