"""Region failover and failback in a private lab (both PostgreSQL servers, the simulator's two
clusters, both twins, moto's Route53): a planned failover (the primary fenced, zero lag, no data
loss) and the failback to the original layout (the old primary rebuilt with pg_rewind, a planned
switchover back, the secondary rebuilt as the standby); an unplanned failover (the primary
stopped: refused without the confirmation, then failed over with the data-loss window). Each
asserts the databases, the clusters, DNS and the twins. A test that finds the layout changed puts
it back first (``lab.py up`` + ``rebuild-standby``). The shared lab is never touched."""
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB_PY = ROOT / "tests" / "lab" / "lab.py"
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from lab import private_lab  # noqa: E402

CONFIRM = {"region_failover_confirm": "failover-to-secondary"}


@pytest.fixture(scope="module")
def region_lab():
    with private_lab(skip=()) as env:
        yield env


@pytest.fixture
def original_layout(region_lab):
    """The lab as a failover starts from: the primary up and writable, the standby in recovery."""
    env = region_lab
    try:
        with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT"), autocommit=True) as conn:
            standby_ok = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        with psycopg.connect(dsn(env, "PGPORT"), autocommit=True) as conn:
            primary_ok = not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError:
        standby_ok = primary_ok = False
    if not (standby_ok and primary_ok):
        lab_cmd(env, "up")
        lab_cmd(env, "rebuild-standby")
    return env


def lab_cmd(env, *args):
    proc = subprocess.run([sys.executable, str(LAB_PY)] + list(args), env=dict(os.environ, APEX_LAB_DIR=env["APEX_LAB_DIR"]),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def failover(run_playbook, env, report_dir, extra=None, procedure="region_failover"):
    report_dir.mkdir(exist_ok=True)
    proc = run_playbook("playbooks/%s.yml" % procedure, dict(extra or {}, **{procedure + "_report_dir": str(report_dir)}),
                        env=env)
    reports = sorted(report_dir.glob("%s-*.json" % procedure))
    assert reports, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, json.loads(reports[-1].read_text())


def dsn(env, port_key, user="postgres"):
    password = env["PGPASSWORD"] if user == "postgres" else env["APEX_PG_APP_PASSWORD"]
    return "host=127.0.0.1 port=%s user=%s password=%s dbname=apex connect_timeout=3" % (env[port_key], user, password)


def public_name_target(env):
    """Resolve the public name through Route53 (moto), following the CNAME: the regional name."""
    r53 = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    sets = r53.list_resource_record_sets(HostedZoneId=env["APEX_ROUTE53_ZONE_ID"])["ResourceRecordSets"]
    cname = [s for s in sets if s["Name"] == env["APEX_ROUTE53_RECORD"] and s["Type"] == "CNAME"]
    return cname[0]["ResourceRecords"][0]["Value"]


def call_public_name(env, path, body=None):
    """Call what the public name points at (the lab serves each regional name on its own port)."""
    base = {"primary.apex.lab.test.": env["APEX_API_URL"],
            "secondary.apex.lab.test.": env["APEX_TWIN_SECONDARY_URL"]}[public_name_target(env)]
    ctx = ssl.create_default_context(cafile=env["APEX_CA_FILE"])
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return base, resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return base, exc.code, json.loads(exc.read() or b"{}")


def secondary_ready(run_module, env):
    info = run_module("apex_info", env=env, context="apex-secondary", names=["apex-api", "apex-worker"],
                      gather=["workloads", "hpas"])
    assert not info.failed, info
    return ({d["name"]: d["ready"] for d in info["deployments"]},
            {h["name"]: h["conditions"].get("ScalingActive") for h in info["hpas"]})


def test_planned_failover_then_failback(original_layout, run_playbook, run_module, tmp_path):
    env = original_layout
    marker = "failover-%s" % uuid.uuid4().hex[:8]
    with psycopg.connect(dsn(env, "PGPORT", "apex"), autocommit=True) as conn:
        conn.execute("INSERT INTO agents (name, provider, model) VALUES (%s, 'openai', 'gpt')", (marker,))

    proc, report = failover(run_playbook, env, tmp_path / "planned", CONFIRM)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert report["status"] == "ok" and report["mode"] == "planned" and report["data_loss_window"] is None
    assert report["fence"]["after"] == {"app_role": "apex", "app_role_can_login": False, "read_only": True,
                                        "app_sessions": 0}
    steps = report["timings"]["steps"]
    assert set(steps) == {"gated", "fenced", "promoted", "dns", "scaled", "verified"}
    assert report["timings"]["total_seconds"] >= report["pod_readiness_seconds"] > 0

    # the old primary is fenced: read-only for everyone, the application role refused
    with psycopg.connect(dsn(env, "PGPORT"), autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(dsn(env, "PGPORT", "apex"))
    # the new primary: out of recovery on a new timeline, has the row written before, takes writes as apex
    with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT", "apex"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM agents WHERE name = %s", (marker,)).fetchone()[0] == 1
        conn.execute("INSERT INTO agents (name, provider, model) VALUES (%s, 'openai', 'gpt')", (marker + "-after",))
    assert report["timeline_after"] == 2
    # the secondary cluster runs what the primary ran, its HPAs active
    ready, scaling = secondary_ready(run_module, env)
    assert ready == {"apex-api": 3, "apex-worker": 5}
    assert report["scale"]["apex-api"]["source"] == "recorded on the primary cluster"
    # DNS and the twins: the public name leads to the secondary twin, which is healthy and writes
    assert public_name_target(env) == "secondary.apex.lab.test."
    base, status, health = call_public_name(env, "/health")
    assert base == env["APEX_TWIN_SECONDARY_URL"] and status == 200 and health["status"] == "healthy"
    _base, status, task = call_public_name(env, "/api/v1/tasks", {"payload": {"from": marker}})
    assert status == 202, task
    with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE task_id = %s", (task["task_id"],)).fetchone()[0] == 1

    # failback: the old primary rebuilt (pg_rewind: the lab runs wal_log_hints), a planned switchover
    # back (nothing written on the secondary is lost), DNS and scales back, the secondary the standby again
    proc, back = failover(run_playbook, env, tmp_path / "failback", {"region_failback_confirm": "failback-to-primary"},
                          procedure="region_failback")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert back["status"] == "ok" and back["rebuild_primary"]["method"] == "pg_rewind"
    assert back["rebuild_standby"]["method"] == "pg_rewind" and back["timeline_after"] == 3
    with psycopg.connect(dsn(env, "PGPORT", "apex"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
                            ).fetchone() == (False, "off")
        assert conn.execute("SELECT count(*) FROM agents WHERE name LIKE %s", (marker + "%",)).fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM tasks WHERE task_id = %s", (task["task_id"],)).fetchone()[0] == 1
    with psycopg.connect(dsn(env, "PGPORT"), autocommit=True) as conn:  # the replication view needs a superuser
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
    assert rows == [("apex-standby", "streaming")]
    with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
    assert public_name_target(env) == "primary.apex.lab.test."
    assert secondary_ready(run_module, env)[0] == {"apex-api": 0, "apex-worker": 0}
    base, status, health = call_public_name(env, "/health")
    assert base == env["APEX_API_URL"] and status == 200 and health["status"] == "healthy"


def test_unplanned_failover_refuses_without_confirmation_then_reports_the_data_loss_window(
        original_layout, run_playbook, run_module, tmp_path):
    env = original_layout
    marker = "unplanned-%s" % uuid.uuid4().hex[:8]
    with psycopg.connect(dsn(env, "PGPORT", "apex"), autocommit=True) as conn:
        conn.execute("INSERT INTO agents (name, provider, model) VALUES (%s, 'openai', 'gpt')", (marker,))
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT"), autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) < 0", (lsn,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the standby did not replay the marker row"
            time.sleep(0.05)
    subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(env["APEX_PG_BIN"], "pg_ctl"), "-D",
                    env["APEX_PG_PRIMARY_DATA"], "-m", "immediate", "-w", "stop"], check=True, capture_output=True)
    # the next test (or a rerun) finds the layout changed and puts it back (original_layout)
    proc, refused = failover(run_playbook, env, tmp_path / "refused")
    assert proc.returncode != 0 and refused["status"] == "refused"
    assert "confirmation missing" in refused["error"] and "data after the standby" in refused["error"]
    assert refused["plan"]["mode"] == "unplanned"
    with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True  # nothing changed

    proc, report = failover(run_playbook, env, tmp_path / "unplanned", CONFIRM)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert report["status"] == "ok" and report["mode"] == "unplanned" and report["fence"] is None
    window = report["data_loss_window"]
    assert window["last_replayed_lsn"] and window["last_replayed_transaction_at"]
    with psycopg.connect(dsn(env, "APEX_PG_STANDBY_PORT", "apex"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM agents WHERE name = %s", (marker,)).fetchone()[0] == 1
        replayed = window["last_replayed_lsn"]
        assert conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn) >= 0", (replayed, lsn)).fetchone()[0]
    assert secondary_ready(run_module, env)[0] == {"apex-api": 3, "apex-worker": 5}
    assert public_name_target(env) == "secondary.apex.lab.test."
    base, status, health = call_public_name(env, "/health")
    assert base == env["APEX_TWIN_SECONDARY_URL"] and status == 200 and health["status"] == "healthy"
