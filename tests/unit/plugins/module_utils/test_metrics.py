"""apex_metrics, pure: the PromQL templates, a check's limits and verdicts, the interval verdict,
the analysis decision and loop (fake clock), the HTTP client's error kinds (fake opener), the
table and the SVG chart. No services."""
import io
import json
import xml.dom.minidom

import pytest

from ansible.module_utils.six.moves.urllib.error import HTTPError

from ansible_collections.apex.ops.plugins.module_utils import metrics_analysis as ma
from ansible_collections.apex.ops.plugins.module_utils import metrics_runner
from ansible_collections.apex.ops.plugins.module_utils import promql_checks as pc
from ansible_collections.apex.ops.plugins.module_utils.metrics_chart import render_svg
from ansible_collections.apex.ops.plugins.module_utils.prometheus_api import PrometheusClient, PrometheusError

DEFAULTS = dict(track="canary", baseline_track="stable", window=30.0, min_samples=10, selector={})


def check(**raw):
    return pc.normalize_check(raw, DEFAULTS)


# ------------------------------------------------------------------ templates

def test_templates_render_exact_promql():
    assert pc.render("error_rate", "canary", 30) == (
        '(sum(rate(apex_http_requests_total{track="canary",status=~"5.."}[30s])) or vector(0)) / '
        'sum(rate(apex_http_requests_total{track="canary"}[30s]))')
    assert pc.render("p95_latency", "stable", 300, {"namespace": "apex"}) == (
        'histogram_quantile(0.95, sum by (le) (rate(apex_http_request_duration_seconds_bucket'
        '{track="stable",namespace="apex"}[300s])))')
    assert pc.render("request_rate", "canary", 0.5) == 'sum(rate(apex_http_requests_total{track="canary"}[500ms]))'
    assert pc.render_samples("canary", 60) == 'sum(increase(apex_http_requests_total{track="canary"}[60s]))'


def test_label_values_are_escaped_and_names_checked():
    assert pc.matchers('a"b', {"job": "x\\y"}) == 'track="a\\"b",job="x\\\\y"'
    with pytest.raises(pc.CheckError):
        pc.matchers("canary", {"bad-name": "x"})
    with pytest.raises(pc.CheckError):
        pc.render("p50", "canary", 30)


def test_own_query_placeholders_and_default_samples_query():
    c = check(name="5xx", query='sum(rate(http_total{$matchers,code="500"}[$window]))', max=1, selector={"job": "api"})
    value, samples = pc.queries_for(c, "canary")
    assert value == 'sum(rate(http_total{track="canary",job="api",code="500"}[30s]))'
    assert samples == 'sum(increase(apex_http_requests_total{track="canary",job="api"}[30s]))'


@pytest.mark.parametrize("raw,msg", [
    (dict(max=1), "exactly one of template or query"),
    (dict(template="error_rate", query="x", max=1), "exactly one"),
    (dict(template="error_rate"), "give max or min"),
    (dict(template="error_rate", max="lots"), "must be a number"),
    (dict(template="error_rate", max=1, relative_to="canary"), "compared with itself"),
    (dict(template="error_rate", max=1, window="soon"), "cannot parse"),
    (dict(template="error_rate", max=1, min_samples=-1), "negative"),
])
def test_bad_checks_are_refused(raw, msg):
    with pytest.raises(pc.CheckError, match=msg):
        check(**raw)


def test_relative_to_baseline_means_the_baseline_track():
    assert check(template="error_rate", max=2, relative_to="baseline")["relative_to"] == "stable"


# ------------------------------------------------------------------ evaluation

def fetcher(values):
    """fetch(query) from {substring: value}; the first substring found wins; records the queries."""
    asked = []

    def fetch(query):
        asked.append(query)
        for key, value in values.items():
            if key in query:
                return value
        raise AssertionError("unexpected query %s" % query)
    fetch.asked = asked
    return fetch


def test_absolute_max_pass_and_fail():
    c = check(template="error_rate", max=0.1)
    ok = pc.evaluate(c, fetcher({"increase": 50.0, "/": 0.05}))
    assert ok["verdict"] == pc.PASS and ok["value"] == 0.05 and ok["max_limit"] == 0.1 and ok["samples"] == 50
    bad = pc.evaluate(c, fetcher({"increase": 50.0, "/": 0.5}))
    assert bad["verdict"] == pc.FAIL and "0.5 > limit 0.1" in bad["reason"]


def test_min_threshold():
    c = check(template="request_rate", min=1.0, min_samples=0)
    assert pc.evaluate(c, fetcher({"rate": 0.2}))["verdict"] == pc.FAIL
    assert pc.evaluate(c, fetcher({"rate": 3.0}))["verdict"] == pc.PASS


def test_relative_limit_is_baseline_times_ratio_plus_tolerance():
    c = check(template="p95_latency", relative_to="stable", max=1.5, tolerance=0.25)
    values = {'increase(apex_http_requests_total{track="canary"': 40.0,
              'increase(apex_http_requests_total{track="stable"': 400.0,
              'track="canary"}[30s])))': 0.8, 'track="stable"}[30s])))': 0.01}
    res = pc.evaluate(c, fetcher(values))
    assert res["baseline"] == 0.01 and res["max_limit"] == pytest.approx(0.265)
    assert res["verdict"] == pc.FAIL and res["baseline_query"].startswith("histogram_quantile")
    values['track="canary"}[30s])))'] = 0.2
    assert pc.evaluate(c, fetcher(values))["verdict"] == pc.PASS


def test_too_few_samples_is_insufficient_never_a_pass_and_skips_the_value_query():
    c = check(template="error_rate", max=0.1)
    fetch = fetcher({"increase": 3.0, "/": 0.0})
    res = pc.evaluate(c, fetch)
    assert res["verdict"] == pc.INSUFFICIENT and "3 requests" in res["reason"] and res["value"] is None
    assert len(fetch.asked) == 1
    # no series at all (no traffic ever): empty result
    assert pc.evaluate(c, fetcher({"increase": None}))["verdict"] == pc.INSUFFICIENT


def test_baseline_without_samples_or_value_is_insufficient():
    c = check(template="error_rate", relative_to="stable", max=2)
    res = pc.evaluate(c, fetcher({'track="canary"}[30s]))': 50.0, 'track="stable"}[30s]))': 2.0, "/": 0.0}))
    assert res["verdict"] == pc.INSUFFICIENT and "baseline track stable" in res["reason"]


def test_nan_and_empty_values_are_insufficient():
    c = check(template="p95_latency", max=2)
    res = pc.evaluate(c, fetcher({"increase": 50.0, "histogram": float("nan")}))
    assert res["verdict"] == pc.INSUFFICIENT and "NaN" in res["reason"]
    res = pc.evaluate(c, fetcher({"increase": 50.0, "histogram": None}))
    assert res["verdict"] == pc.INSUFFICIENT and "empty result" in res["reason"]


def test_interval_verdict():
    assert pc.interval_verdict([{"verdict": "pass"}, {"verdict": "fail"}, {"verdict": "insufficient_data"}]) == "fail"
    assert pc.interval_verdict([{"verdict": "pass"}, {"verdict": "insufficient_data"}]) == "insufficient_data"
    assert pc.interval_verdict([{"verdict": "pass"}]) == "pass"
    assert pc.interval_verdict([]) == "insufficient_data"


def interval(verdict, reason="r"):
    return {"verdict": verdict, "checks": [{"verdict": verdict, "reason": reason}]}


@pytest.mark.parametrize("verdicts,finished,decision", [
    (["pass", "fail"], False, "continue"),
    (["fail", "pass", "fail"], False, "abort"),
    (["fail", "pass", "pass"], True, "promote"),
    (["pass", "pass", "insufficient_data"], True, "abort"),
    (["insufficient_data", "pass"], True, "promote"),
    ([], True, "abort"),
])
def test_decide(verdicts, finished, decision):
    assert pc.decide([interval(v) for v in verdicts], 2, finished)[0] == decision


def test_insufficient_at_the_end_names_the_reason():
    decision, reason = pc.decide([interval("insufficient_data", "0 requests of track canary")], 2, True)
    assert decision == "abort" and reason.startswith("insufficient data") and "0 requests" in reason


# ------------------------------------------------------------------ the analysis loop (fake clock)

class FakeClock(object):
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def run(values_per_interval, duration=50, interval=10, max_failures=2):
    clock = FakeClock()
    checks = [check(template="error_rate", max=0.1)]
    calls = {"n": 0}

    def fetch(query):
        if "increase" in query:
            calls["n"] += 1
            return 100.0
        idx = min(calls["n"], len(values_per_interval)) - 1
        return values_per_interval[idx]
    return clock, ma.run_analysis(fetch, checks, interval, duration, max_failures, clock=clock, sleep=clock.sleep)


def test_analysis_runs_every_interval_and_promotes():
    clock, out = run([0.0, 0.01, 0.0, 0.02, 0.0])
    assert out["decision"] == "promote" and len(out["intervals"]) == 5 and out["planned_intervals"] == 5
    assert [i["elapsed"] for i in out["intervals"]] == [10, 20, 30, 40, 50]
    assert clock.sleeps == [10, 10, 10, 10, 10]


def test_analysis_aborts_early_at_max_failures():
    clock, out = run([0.0, 0.5, 0.5, 0.0, 0.0])
    assert out["decision"] == "abort" and len(out["intervals"]) == 3 and out["failed_intervals"] == 2
    assert clock.now == 130.0


def test_analysis_raises_with_the_intervals_so_far():
    clock = FakeClock()
    n = {"calls": 0}

    def fetch(query):
        n["calls"] += 1
        if n["calls"] > 6:
            raise PrometheusError("unreachable", "Prometheus at http://x is unreachable: refused")
        return 100.0 if "increase" in query else 0.0
    with pytest.raises(ma.AnalysisError) as info:
        ma.run_analysis(fetch, [check(template="error_rate", max=0.1)], 10, 50, 2, clock=clock, sleep=clock.sleep)
    assert "interval 2 of 5" in str(info.value) and "unreachable" in str(info.value)
    assert len(info.value.intervals) == 1


def test_interval_count():
    assert ma.interval_count(60, 10) == 6 and ma.interval_count(5, 10) == 1 and ma.interval_count(0.3, 0.1) == 3


def test_table_rows_and_text():
    out = run([0.0, 0.5], duration=20)[1]
    rows = ma.table(out["intervals"])
    assert [(r["interval"], r["check"], r["verdict"]) for r in rows] == [(1, "error_rate", "pass"),
                                                                         (2, "error_rate", "fail")]
    text = ma.table_text(out["intervals"])
    assert text[0].split() == ["interval", "elapsed_s", "check", "value", "baseline", "limit", "samples", "verdict"]
    assert text[2].split()[-1] == "fail" and "0.5" in text[2]


def test_chart_is_valid_svg_with_both_tracks():
    intervals = [dict(index=i, elapsed=10.0 * i, verdict="fail" if i == 2 else "pass",
                      series={"error_rate": {"canary": 0.1 * i, "stable": 0.0},
                              "p95_latency": {"canary": 0.8, "stable": None}}) for i in (1, 2, 3)]
    svg = render_svg(intervals, title="canary <abort>")
    doc = xml.dom.minidom.parseString(svg.encode())
    assert doc.documentElement.tagName == "svg"
    assert len(doc.getElementsByTagName("polyline")) == 3  # canary x2, stable error rate
    assert "canary &lt;abort&gt;" in svg and "failed interval" in svg
    xml.dom.minidom.parseString(render_svg([]).encode())


# ------------------------------------------------------------------ the HTTP client (fake opener)

class Response(object):
    def __init__(self, doc):
        self.body = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc

    def read(self):
        return self.body


def opener_answering(doc=None, error=None):
    seen = []

    def opener(url, **kwargs):
        seen.append(dict(kwargs, url=url))
        if error is not None:
            raise error
        return Response(doc)
    opener.seen = seen
    return opener


def test_client_sends_bearer_token_and_form():
    op = opener_answering({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1, "0.25"]}]}})
    client = PrometheusClient("https://prom.example/", token="s3cret", ca_file="/ca.pem", opener=op)
    assert client.scalar("up") == 0.25
    call = op.seen[0]
    assert call["url"] == "https://prom.example/api/v1/query" and call["data"] == "query=up"
    assert call["headers"]["Authorization"] == "Bearer s3cret" and call["ca_path"] == "/ca.pem"
    assert call["force_basic_auth"] is False


def test_client_basic_auth_and_not_both():
    op = opener_answering({"status": "success", "data": {"resultType": "vector", "result": []}})
    client = PrometheusClient("http://p", username="u", password="pw", opener=op)
    assert client.scalar("up") is None
    assert op.seen[0]["url_username"] == "u" and op.seen[0]["force_basic_auth"] is True
    assert "Authorization" not in op.seen[0]["headers"]
    with pytest.raises(PrometheusError):
        PrometheusClient("http://p", token="t", username="u")


def test_client_surfaces_prometheus_error_text():
    body = json.dumps({"status": "error", "errorType": "bad_data",
                       "error": 'invalid parameter "query": 1:5: parse error: unexpected "}"'}).encode()
    err = HTTPError("http://p/api/v1/query", 400, "Bad Request", {}, io.BytesIO(body))
    client = PrometheusClient("http://p", opener=opener_answering(error=err))
    with pytest.raises(PrometheusError) as info:
        client.query("sum(}")
    assert info.value.kind == "query" and "bad_data" in str(info.value) and "parse error" in str(info.value)


def test_client_unreachable_redacts_user_info():
    client = PrometheusClient("http://admin:hunter2@p:9090", opener=opener_answering(error=OSError("refused")))
    with pytest.raises(PrometheusError) as info:
        client.query("up")
    assert info.value.kind == "unreachable" and "hunter2" not in str(info.value) and "refused" in str(info.value)


def test_client_not_json_and_several_series():
    client = PrometheusClient("http://p", opener=opener_answering(b"<html>login</html>"))
    with pytest.raises(PrometheusError, match="not JSON"):
        client.query("up")
    two = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"track": "a"}, "value": [1, "1"]}, {"metric": {"track": "b"}, "value": [1, "2"]}]}}
    with pytest.raises(PrometheusError, match="one series, the query returned 2"):
        PrometheusClient("http://p", opener=opener_answering(two)).scalar("x")


# ------------------------------------------------------------------ the runner

def params(**kw):
    base = dict(state="query", query=None, time=None, range=None, allow_empty=False, checks=None, track="canary",
                baseline_track="stable", selector={}, window=None, min_samples=20, max_error_rate=0.1,
                max_p95_latency=2.0, interval="10s", duration="30s", max_failures=2, chart=True)
    base.update(kw)
    return base


def test_query_empty_result_is_an_error_unless_allowed():
    op = opener_answering({"status": "success", "data": {"resultType": "vector", "result": []}})
    client = PrometheusClient("http://p", opener=op)
    with pytest.raises(metrics_runner.MetricsFailure) as info:
        metrics_runner.run(params(query="nope"), client=client)
    assert info.value.kind == "empty"
    assert metrics_runner.run(params(query="nope", allow_empty=True), client=client)["result"] == []


def test_default_checks_are_the_runbook_thresholds():
    checks = metrics_runner.prepare_checks(params(), 10.0)
    assert [(c["name"], c["max"], c["relative_to"]) for c in checks] == [
        ("error_rate", 0.1, None), ("error_rate_vs_stable", 2.0, "stable"),
        ("p95_latency", 2.0, None), ("p95_latency_vs_stable", 1.5, "stable")]
    with pytest.raises(metrics_runner.MetricsFailure, match="unique"):
        metrics_runner.prepare_checks(params(checks=[dict(template="error_rate", max=1)] * 2), 10.0)
