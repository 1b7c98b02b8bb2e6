"""Pure parts of the region failover: the gates and plan, the timings, the promotion refusal,
the data-loss window, the Route53 change plan and the INSYNC wait (no services)."""
import os

import pytest

from ansible_collections.apex.ops.plugins.module_utils import failover_plan, pg_replica, route53_records as r53
from ansible_collections.apex.ops.plugins.modules import apex_dns

NODES = [{"name": "node-1", "ready": True, "cordoned": False}]
DEPLOYS = [{"name": "apex-api", "desired": 0}, {"name": "apex-worker", "desired": 0}]
HPAS = [{"name": "apex-api", "min_replicas": 3}, {"name": "apex-worker", "min_replicas": 5}]
SECONDARY = {"nodes": NODES, "deployments": DEPLOYS, "hpas": HPAS}
STANDBY = {"replication": {"in_recovery": True, "timeline": 1, "replay_lsn": "0/5000", "receive_lsn": "0/5000",
                           "last_replayed_at": "2026-01-01T00:00:00+00:00", "seconds_since_last_replay": 3.0,
                           "streaming": True}}
PRIMARY = {"replication": {"in_recovery": False, "standbys": [
    {"application_name": "apex-standby", "state": "streaming", "lag_bytes": 10}]}}
PRIMARY_INFO = {"deployments": [{"name": "apex-api", "desired": 4}, {"name": "apex-worker", "desired": 7}]}
DOWN = {"failed": True, "msg": "connection refused"}
OPTS = {"max_lag_bytes": 1000, "confirm": failover_plan.CONFIRM_FAILOVER}


def plan(**kw):
    inputs = [kw.pop(k, default) for k, default in (("secondary", SECONDARY), ("standby", STANDBY),
                                                    ("primary", PRIMARY), ("primary_info", PRIMARY_INFO))]
    return failover_plan.plan_failover(*inputs, options=dict(OPTS, **kw))


def test_planned_failover_passes_and_records_the_primary_counts():
    p = plan()
    assert p["refusals"] == [] and p["mode"] == "planned" and p["data_loss_window"] is None
    assert p["steps"][:2] == ["fence the primary", "wait for zero lag"]
    assert p["scale_targets"] == [{"name": "apex-api", "replicas": 4}, {"name": "apex-worker", "replicas": 7}]
    assert p["scale"]["apex-api"]["source"] == "recorded on the primary cluster"


def test_unplanned_failover_states_the_data_loss_window_and_uses_hpa_minimums():
    p = plan(primary=DOWN, primary_info=DOWN)
    assert p["mode"] == "unplanned" and p["refusals"] == []
    assert p["data_loss_window"]["last_replayed_lsn"] == "0/5000"
    assert p["data_loss_window"]["last_replayed_transaction_at"] == "2026-01-01T00:00:00+00:00"
    assert "fence the primary" not in p["steps"]
    assert [t["replicas"] for t in p["scale_targets"]] == [3, 5]


def test_given_counts_win():
    p = plan(replicas={"apex-api": 2, "apex-worker": None})
    assert p["scale"]["apex-api"] == {"replicas": 2, "source": "given"}
    assert p["scale"]["apex-worker"]["replicas"] == 7


def test_without_confirmation_refused_but_check_mode_plans():
    assert any("confirmation missing" in r for r in plan(confirm="")["refusals"])
    p = plan(confirm="", check_mode=True)
    assert p["refusals"] == [] and p["needs_confirmation"] is True


@pytest.mark.parametrize("kwargs, words", [
    (dict(secondary=DOWN), "secondary cluster cannot be read"),
    (dict(secondary=dict(SECONDARY, nodes=[{"name": "n", "ready": True, "cordoned": True}])), "no Ready"),
    (dict(secondary=dict(SECONDARY, deployments=DEPLOYS[:1])), "lacks Deployment(s) apex-worker"),
    (dict(standby=DOWN), "standby database cannot be reached"),
    (dict(standby={"replication": {"in_recovery": False}}), "already a primary"),
    (dict(primary={"replication": {"in_recovery": False, "standbys": []}}), "not streaming"),
    (dict(primary={"replication": {"in_recovery": False, "standbys": [
        {"application_name": "apex-standby", "state": "streaming", "lag_bytes": 5000}]}}), "lags 5000 bytes"),
])
def test_each_gate_refuses_with_its_reason(kwargs, words):
    refusals = plan(**kwargs)["refusals"]
    assert any(words in r for r in refusals), refusals


def test_every_refusal_is_listed_at_once():
    assert len(plan(secondary=DOWN, standby=DOWN, confirm="")["refusals"]) == 3


def test_timings_between_consecutive_stamps():
    stamps = {"started": "2026-01-01T00:00:00+00:00", "promoted": "2026-01-01T00:00:02.5+00:00",
              "verified": "2026-01-01T00:00:10+00:00"}
    t = failover_plan.timings(stamps, ["started", "fenced", "promoted", "verified"])
    assert t == {"steps": {"promoted": 2.5, "verified": 7.5}, "total_seconds": 10.0}
    assert failover_plan.timings({}, ["started"]) == {"steps": {}, "total_seconds": 0.0}


def test_promotion_refusal():
    facts = dict(STANDBY["replication"], receive_replay_lag_bytes=0, replay_paused=False)
    assert pg_replica.promotion_refusal(facts, True, 100, False) is None
    assert pg_replica.promotion_refusal(dict(facts, in_recovery=False), True, 100, False) is None
    assert "paused" in pg_replica.promotion_refusal(dict(facts, replay_paused=True), True, 100, False)
    lost = dict(facts, streaming=False, wal_receiver=None)
    assert "not streaming" in pg_replica.promotion_refusal(lost, True, 100, False)
    assert pg_replica.promotion_refusal(lost, True, 100, True) is None
    assert "not yet replayed" in pg_replica.promotion_refusal(dict(facts, receive_replay_lag_bytes=500), True, 100,
                                                              False)


def test_data_loss_window():
    w = pg_replica.data_loss_window(STANDBY["replication"])
    assert w["last_replayed_lsn"] == "0/5000" and w["seconds_since_last_replay"] == 3.0


def test_route53_plan_is_idempotent_and_exact():
    want = dict(name="apex.example.com.", type="CNAME", ttl=60, values=["secondary.example.com."])
    assert r53.plan(dict(want), want) is None
    change = r53.plan(dict(want, values=["primary.example.com."]), want)
    assert change == {"Name": "apex.example.com.", "Type": "CNAME", "TTL": 60,
                      "ResourceRecords": [{"Value": "secondary.example.com."}]}
    assert r53.plan(None, dict(want, set_identifier="a", failover="PRIMARY"))["Failover"] == "PRIMARY"
    assert r53.plan(dict(want, ttl=300), want)["TTL"] == 60


def test_wanted_records_of_a_failover_pair():
    params = dict(record="apex.example.com", type="CNAME", ttl=60, value=None, failover_pair=dict(
        primary="secondary.example.com", secondary="primary.example.com", primary_set_identifier="p",
        secondary_set_identifier="s", primary_health_check_id=None))
    primary, secondary = apex_dns.wanted_records(params)
    assert primary["failover"] == "PRIMARY" and primary["values"] == ["secondary.example.com."]
    assert secondary["set_identifier"] == "s" and secondary["values"] == ["primary.example.com."]


class FakeRoute53(object):
    def __init__(self, statuses):
        self.statuses = list(statuses)

    def get_change(self, Id):  # noqa: N803 (boto3's spelling)
        return {"ChangeInfo": {"Id": Id, "Status": self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]}}


class Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_insync_polls_until_insync_and_times_out_naming_the_status():
    clock = Clock()
    assert r53.wait_insync(FakeRoute53(["PENDING", "PENDING", "INSYNC"]), "C1", 60, clock, clock.sleep) > 0
    clock = Clock()
    with pytest.raises(r53.DnsError) as err:
        r53.wait_insync(FakeRoute53(["PENDING"]), "C2", 5, clock, clock.sleep)
    assert "still PENDING" in str(err.value) and err.value.last_state["change_id"] == "C2"


# ------------------------------------------------------------------ failback

SECONDARY_AS_PRIMARY = {"replication": {"in_recovery": False, "timeline": 2, "role": "primary"}}
DNS_ON_SECONDARY = {"resolves_to": {"chain": ["apex.example.com.", "secondary.example.com."]}}
FAILBACK_OPTS = {"secondary_name": "secondary.example.com.", "confirm": failover_plan.CONFIRM_FAILBACK,
                 "secondary_info": {"deployments": [{"name": "apex-api", "desired": 4},
                                                    {"name": "apex-worker", "desired": 0}]}}
PRIMARY_CLUSTER = dict(SECONDARY, deployments=[{"name": "apex-api", "desired": 3}, {"name": "apex-worker", "desired": 5}])


def failback(**kw):
    inputs = [kw.pop(k, default) for k, default in (("secondary_db", SECONDARY_AS_PRIMARY), ("primary_db", DOWN),
                                                    ("dns", DNS_ON_SECONDARY), ("primary_info", PRIMARY_CLUSTER))]
    return failover_plan.plan_failback(*inputs, options=dict(FAILBACK_OPTS, **kw))


def test_failback_plan_passes_and_takes_the_secondary_counts_back():
    p = failback()
    assert p["refusals"] == []
    assert p["scale_targets"] == [{"name": "apex-api", "replicas": 4}, {"name": "apex-worker", "replicas": 5}]
    assert p["scale_down"] == [{"name": "apex-api", "replicas": 0}, {"name": "apex-worker", "replicas": 0}]
    assert "unreachable" in [g for g in p["gates"] if g["name"] == "old primary"][0]["detail"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(secondary_db={"replication": {"in_recovery": True}}), "nothing to fail back"),
    (dict(secondary_db=DOWN), "cannot be reached"),
    (dict(dns={"resolves_to": {"chain": ["apex.example.com.", "primary.example.com."]}}), "resolves to primary"),
    (dict(primary_info=DOWN), "primary cluster cannot be read"),
    (dict(confirm=""), "failback-to-primary"),
])
def test_failback_gates_refuse(kwargs, words):
    refusals = failback(**kwargs)["refusals"]
    assert any(words in r for r in refusals), refusals


class FakeRun(object):
    """Records argv and answers by program name."""

    def __init__(self, codes):
        self.codes = codes
        self.calls = []

    def __call__(self, argv, **kwargs):
        import subprocess
        self.calls.append((argv, kwargs))
        name = argv[0].rsplit("/", 1)[-1]
        if name == "pg_basebackup":
            os.makedirs(argv[argv.index("-D") + 1])
            with open(os.path.join(argv[argv.index("-D") + 1], "postgresql.auto.conf"), "w") as fh:
                fh.write("primary_conninfo = 'host=elsewhere'\ndefault_transaction_read_only = 'on'\nwork_mem = '8MB'\n")
        code = self.codes.get(" ".join([name] + argv[1:2]), self.codes.get(name, 0))
        return subprocess.CompletedProcess(argv, code, "", "boom" if code else "")


def test_rebuild_falls_back_to_a_base_backup_keeping_config_and_the_diverged_copy(tmp_path):
    from ansible_collections.apex.ops.plugins.module_utils import pg_rebuild
    data = tmp_path / "primary"
    data.mkdir()
    (data / "postgresql.conf").write_text("port = 5432\n")
    (data / "PG_VERSION").write_text("15\n")
    run = FakeRun({"pg_ctl status": 0, "pg_rewind": 1})
    builder = pg_rebuild.Rebuilder(str(data), "/pg/bin", None, run=run, clock=lambda: 0)
    done = builder.rebuild(dict(host="h", port=5433, user="postgres"), "superpw",
                           dict(host="h", port=5433, user="replicator", application_name="apex-primary"), "replpw")
    assert done["method"] == "pg_basebackup" and done["rewind_error"] == "boom" and done["stopped"] is True
    assert (tmp_path / "primary.diverged-19700101T000000" / "PG_VERSION").exists()
    assert (data / "postgresql.conf").read_text() == "port = 5432\n"  # the target's own, not the copy's
    auto = (data / "postgresql.auto.conf").read_text()
    assert "elsewhere" not in auto and "default_transaction_read_only" not in auto and "work_mem" in auto
    assert "user=''replicator''" in auto and "application_name=''apex-primary''" in auto  # quoted for the file
    assert (data / "standby.signal").exists()
    # passwords never in argv, only in the environment of the program that needs them
    assert all("superpw" not in " ".join(argv) and "replpw" not in " ".join(argv) for argv, _kw in run.calls)
    rewind_env = [kw["env"] for argv, kw in run.calls if argv[0].endswith("pg_rewind")][0]
    assert rewind_env["PGPASSWORD"] == "superpw" and "PGUSER" not in rewind_env
    assert [argv[1] for argv, _kw in run.calls if argv[0].endswith("pg_ctl")] == ["status", "stop", "start"]


def test_rebuild_rewind_only_fails_without_fallback(tmp_path):
    from ansible_collections.apex.ops.plugins.module_utils import pg_rebuild
    (tmp_path / "d").mkdir()
    builder = pg_rebuild.Rebuilder(str(tmp_path / "d"), None, None, run=FakeRun({"pg_ctl status": 3, "pg_rewind": 1}))
    with pytest.raises(pg_rebuild.RebuildError, match="pg_rewind failed"):
        builder.rebuild(dict(host="h", port=1, user="u"), "p", dict(host="h", port=1, user="r"), "q", method="rewind")
