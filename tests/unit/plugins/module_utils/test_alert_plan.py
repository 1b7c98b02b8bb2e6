"""The alert responses' judgement and guards (alert_plan), the breaker reset decision, provider status pages,
log grepping, the pg_stat_statements hint and the Redis latency probe - pure, no services."""
import re

import pytest

from ansible_collections.apex.ops.plugins.module_utils import (
    alert_plan, circuit_breaker, db_facts, k8s_logs, provider_status, queue)

HEALTHY = dict(healthy=True, indicator="none", description="All Systems Operational")
OUTAGE = dict(healthy=False, indicator="major", description="Partial System Outage")
UNKNOWN = dict(healthy=None, indicator=None, description=None, error="Status code was -1")


def deployments(api=None, worker=None, api_replicas=3, worker_replicas=5):
    return dict(deployments=[
        dict(name="apex-api", desired=api_replicas, settings=api or {}),
        dict(name="apex-worker", desired=worker_replicas, settings=worker or {})])


def plan(alert, diagnosis, **requested):
    return alert_plan.plan_response(alert, diagnosis, requested)


# ------------------------------------------------------------------ task failure: the root-cause table

def test_task_failure_provider_outage_and_the_safe_fallback():
    info = deployments(worker={"APEX__WORKER__CONCURRENCY": "4"})
    diag = dict(worker=info, providers=dict(openai=OUTAGE, anthropic=HEALTHY),
                failed_tasks=[dict(task_id="t1", provider="openai", error_message="provider openai returned an error")],
                logs=[dict(pod="w-1", lines=["ERROR rate limit exceeded (429)"])])
    out = plan("task_failure", diag, worker_concurrency=2, fallback_provider="anthropic")
    causes = [c["cause"] for c in out["causes"]]
    assert causes[0] == "LLM provider outage" and "Rate limiting from LLM" in causes
    assert out["findings"]["failed_by_provider"] == {"openai": 1}
    env = {"APEX__WORKER__CONCURRENCY": "2", "APEX__ROUTING__FORCE_PROVIDER": "anthropic"}
    assert out["rollout_targets"] == [dict(name="apex-worker", env=env)]
    assert out["refused"] == []


@pytest.mark.parametrize("requested,providers,reason", [
    ("openai", dict(openai=OUTAGE, anthropic=HEALTHY), "is the provider that is failing"),
    ("anthropic", dict(openai=OUTAGE, anthropic=OUTAGE), "anthropic is the provider that is failing"),
    ("anthropic", dict(openai=OUTAGE, anthropic=UNKNOWN), "is not confirmed healthy (Status code was -1)"),
    ("google", dict(openai=OUTAGE), "status page was not checked"),
])
def test_task_failure_fallback_provider_refused(requested, providers, reason):
    out = plan("task_failure", dict(worker=deployments(), providers=providers), fallback_provider=requested)
    assert out["rollout_targets"] == [] and reason in out["refused"][0]


@pytest.mark.parametrize("current,requested,refused,note", [
    ("4", 8, "would raise it (now 4)", None), ("4", 0, "below the minimum 1", None), ("4", 4, None, "already 4")])
def test_worker_concurrency_only_lowers(current, requested, refused, note):
    out = plan("task_failure", dict(worker=deployments(worker={"APEX__WORKER__CONCURRENCY": current})),
               worker_concurrency=requested)
    assert out["rollout_targets"] == []
    assert (refused in out["refused"][0]) if refused else out["refused"] == []
    assert (note in out["notes"][0]) if note else True


def test_task_failure_other_causes():
    diag = dict(worker=dict(pods=[dict(name="w-1", restarts=3, last_termination_reason="OOMKilled", ready=True)]),
                failed_tasks=[dict(provider="openai", error_message="401 Unauthorized: invalid api key"),
                              dict(provider="openai", error_message="FATAL: sorry, too many clients already")])
    causes = [c["cause"] for c in plan("task_failure", diag)["causes"]]
    assert causes == ["Invalid API keys", "Database connection issues", "Worker crashes"]


# ------------------------------------------------------------------ high latency

def latency_diag(api_pool="10", replicas=3, max_connections=100):
    return dict(api=dict(deployments=deployments(api={"APEX__DATABASE__MAX_CONNECTIONS": api_pool},
                                                 worker={"APEX__DATABASE__MAX_CONNECTIONS": "10"},
                                                 api_replicas=replicas)["deployments"],
                         metrics=dict(pods=[dict(name="apex-api-1", cpu_percent_of_limit=95)])),
                worker=deployments(worker={"APEX__DATABASE__MAX_CONNECTIONS": "10"}),
                database=dict(connections=dict(max_connections=max_connections, superuser_reserved_connections=3),
                              statements=dict(available=False, how_to_enable=db_facts.STATEMENTS_HOW_TO),
                              long_running=[dict(pid=7, application_name="apex-api", query_seconds=3.2,
                                                 query="SELECT pg_sleep(60)")]),
                redis_latency=dict(samples=10, avg_ms=25.0, max_ms=40.0))


def test_high_latency_causes_and_the_how_to_enable_note():
    out = plan("high_latency", latency_diag())
    assert [c["cause"] for c in out["causes"]] == ["High CPU utilization", "Slow database queries", "Redis latency"]
    assert "pid 7 (apex-api) running 3.2s" in out["causes"][1]["evidence"][0]
    assert "CREATE EXTENSION pg_stat_statements" in out["notes"][0]


def test_high_latency_pool_must_fit_max_connections():
    ok = plan("high_latency", latency_diag(), api_replicas=4, api_max_connections=11)   # 44 + 50 = 94 <= 97
    assert ok["scale"] == dict(name="apex-api", replicas=4, current_replicas=3)
    assert ok["rollout_targets"] == [dict(name="apex-api", env={"APEX__DATABASE__MAX_CONNECTIONS": "11"})]
    too_many = plan("high_latency", latency_diag(), api_replicas=10, api_max_connections=50)  # 500 + 50 > 97
    assert too_many["rollout_targets"] == [] and "more than the 97 the server accepts" in too_many["refused"][0]
    assert too_many["scale"]["replicas"] == 10  # the scale alone is fine (apex_scale guards the HPA)


def test_high_latency_never_scales_down():
    out = plan("high_latency", latency_diag(replicas=5), api_replicas=3)
    assert out["scale"] is None and "only scales up" in out["refused"][0]


# ------------------------------------------------------------------ database connections

def test_db_connections_causes_pools_and_max_connections():
    diag = dict(database=dict(connections=dict(total=90, max_connections=100, percent=90.0,
                                               by_application={"leaky": 70, "apex-api": 20}),
                              idle=[dict(pid=1, application_name="leaky")],
                              idle_in_transaction=[dict(pid=2, application_name="leaky", state_seconds=700,
                                                        query="UPDATE tasks")]),
                api=deployments(api={"APEX__DATABASE__MAX_CONNECTIONS": "10"}),
                worker=deployments(worker={"APEX__DATABASE__MAX_CONNECTIONS": "10"}))
    out = plan("db_connections", diag, pool_sizes={"api": 8, "worker": 12}, max_connections=200)
    assert [c["cause"] for c in out["causes"]] == [
        "Connections above 80% of max_connections", "Sessions idle in transaction", "Idle connections",
        "One application holds most connections"]
    assert out["rollout_targets"] == [dict(name="apex-api", env={"APEX__DATABASE__MAX_CONNECTIONS": "8"})]
    assert "worker pool size 12 would raise it (now 10)" in out["refused"][0]
    assert out["server_settings"] == {"max_connections": 200}
    over = plan("db_connections", diag, max_connections=5000)
    assert over["server_settings"] == {} and "above the ceiling 1000" in over["refused"][0]


# ------------------------------------------------------------------ circuit breaker

def breaker_diag(provider_status):
    return dict(breaker=dict(circuit_breaker=dict(state="open", provider="openai", failures=5),
                             providers=dict(openai=provider_status, anthropic=HEALTHY), force_provider=None),
                api=deployments(api={"APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD": "5"}), worker=deployments())


def test_circuit_breaker_plan():
    out = plan("circuit_breaker", breaker_diag(OUTAGE), switch_provider="anthropic", failure_threshold=10)
    assert out["causes"][0]["cause"] == "LLM provider outage"
    assert out["rollout_targets"] == [
        dict(name="apex-api", env={"APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD": "10"}),
        dict(name="apex-worker", env={"APEX__ROUTING__FORCE_PROVIDER": "anthropic"})]
    refused = plan("circuit_breaker", breaker_diag(HEALTHY), switch_provider="openai", failure_threshold=3)
    assert refused["rollout_targets"] == [] and len(refused["refused"]) == 2
    assert plan("circuit_breaker", breaker_diag(HEALTHY))["causes"][0]["cause"].startswith("Provider openai recovered")


@pytest.mark.parametrize("breaker,providers,expected", [
    (dict(state="closed"), {}, "noop"),
    (dict(state="open", provider="openai"), dict(openai=HEALTHY), "reset"),
    (dict(state="open", provider="openai"), dict(openai=OUTAGE), "not healthy (major: Partial System Outage)"),
    (dict(state="open", provider="openai"), dict(openai=UNKNOWN), "is unknown"),
    (dict(state="open", provider="openai"), {}, "was not checked"),
    (dict(state="open"), dict(openai=HEALTHY), "names no provider"),
    (dict(state="unknown", error="no JSON"), {}, "nothing is reset blind"),
])
def test_breaker_reset_only_when_the_provider_is_healthy(breaker, providers, expected):
    if expected in ("noop", "reset"):
        assert circuit_breaker.plan_reset(breaker, providers) == expected
    else:
        with pytest.raises(circuit_breaker.ResetRefused, match=re.escape(expected)):
            circuit_breaker.plan_reset(breaker, providers)


def test_breaker_from_health():
    assert circuit_breaker.breaker_from_health(dict(status=200, json={"circuit_breaker": {"state": "open"}}))[0] == \
        {"state": "open"}
    assert circuit_breaker.breaker_from_health(dict(status=-1, msg="refused"))[0] == dict(state="unknown", error="refused")


# ------------------------------------------------------------------ provider pages, logs, statements, Redis

def test_provider_status_urls_and_judge():
    urls = provider_status.status_urls(["openai", "anthropic", "google"], {"google": "https://g/s.json"}, None)
    assert urls == {"openai": provider_status.DEFAULT_STATUS_URLS["openai"],
                    "anthropic": provider_status.DEFAULT_STATUS_URLS["anthropic"], "google": "https://g/s.json"}
    assert provider_status.status_urls(["openai"], None, "https://lab/status/") == {"openai": "https://lab/status/openai"}
    assert provider_status.status_urls(["mistral"])["mistral"] is None
    good = provider_status.judge("u", dict(status=200, json={"status": {"indicator": "none", "description": "ok"}}))
    assert good["healthy"] is True
    assert provider_status.judge("u", dict(status=200, json={"status": {"indicator": "major"}}))["healthy"] is False
    assert provider_status.judge("u", dict(status=200, json={"page": {}}))["healthy"] is None
    assert provider_status.judge("u", dict(status=503, msg="down"))["error"] == "down"


def test_log_lines_matching_newest_kept_and_redacted():
    text = "ok\nERROR one password=hunter22\nfine\nerror two\nERROR three\n"
    lines, matched = k8s_logs.match_lines(text, k8s_logs.compile_pattern("(?i)error"), 2)
    assert matched == 3 and lines == ["error two", "ERROR three"]
    redacted, dummy = k8s_logs.match_lines(text, k8s_logs.compile_pattern("one"), 5)
    assert "hunter22" not in redacted[0]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        k8s_logs.compile_pattern("(")


class FakeCursor(object):
    def __init__(self, rows):
        self.rows = rows

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, *args):
        pass

    def fetchone(self):
        return self.rows.pop(0)


class FakeConn(object):
    def __init__(self, rows):
        self.rows = rows

    def cursor(self):
        return FakeCursor(self.rows)


def test_statements_missing_says_how_to_enable():
    facts = {"connections": {"max_connections": 100, "superuser_reserved_connections": 3, "total": 5, "groups": []},
             "replication": {"replicas": []}, "has_sqlx_migrations": False, "has_pg_stat_statements": False}
    out = db_facts.gather(FakeConn([(facts,)]), 600, 300)
    assert out["statements"]["available"] is False
    assert "shared_preload_libraries" in out["statements"]["how_to_enable"]
    assert "CREATE EXTENSION pg_stat_statements" in out["statements"]["how_to_enable"]


def test_ping_latency():
    ticks = iter([0.0, 0.001, 1.0, 1.003])

    class Redis(object):
        def ping(self):
            return True

    assert queue.ping_latency(Redis(), 2, clock=lambda: next(ticks)) == dict(samples=2, min_ms=1.0, avg_ms=2.0,
                                                                             max_ms=3.0)
