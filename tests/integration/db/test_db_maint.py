"""apex_db_maint against the lab's PostgreSQL primary and standby: real state is asserted.

Only backends, tables and settings created here are touched; everything is cleaned up.
"""
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dbq_helpers import SleepingQuery, admin_conn, backends, unique, wait_for


@pytest.fixture
def observer(lab):
    conn = admin_conn(lab, unique("observer"))
    yield conn
    conn.close()


def test_facts_primary(run_module, observer):
    res = run_module("apex_db_maint", state="facts", running_longer_than="0s", idle_longer_than="1h")
    assert not res.failed, res
    assert res["changed"] is False
    max_conn = observer.execute("SELECT current_setting('max_connections')::int").fetchone()[0]
    conns = res["connections"]
    assert conns["max_connections"] == max_conn
    # other sessions come and go while the suite runs; this test's own connection must be counted
    my_app = observer.execute("SELECT current_setting('application_name')").fetchone()[0]
    assert conns["by_application"].get(my_app) == 1
    assert conns["by_application"].get("apex.ops", 0) >= 1  # the module's own session counts too
    assert 2 <= conns["total"] <= max_conn
    assert conns["percent"] == round(100.0 * conns["total"] / max_conn, 1)
    assert sum(conns["by_application"].values()) == conns["total"]
    assert res["server"]["in_recovery"] is False
    assert res["server"]["database"] == "apex" and res["server"]["database_size_bytes"] > 0
    names = [t["relname"] for t in res["tables"]]
    assert "tasks" in names
    migrations = res["migrations"]
    count, latest = observer.execute("SELECT count(*), max(version) FROM _sqlx_migrations").fetchone()
    assert migrations["present"] and migrations["count"] == count and migrations["latest_version"] == latest
    assert migrations["failed"] == []
    repl = res["replication"]
    assert repl["role"] == "primary"
    assert repl["streaming_replicas"] >= 1
    standby = [r for r in repl["replicas"] if r["state"] == "streaming"][0]
    assert standby["replay_lag_bytes"] is not None and standby["replay_lsn"]
    assert res["statements"]["available"] is True
    assert res["statements"]["top"], "pg_stat_statements should list statements of db apex"


def test_facts_long_running_and_idle(lab, run_module, observer):
    app = unique("facts-sleep")
    sleeper = SleepingQuery(lab, app, seconds=30)
    idle_app = unique("facts-idle")
    idle = admin_conn(lab, idle_app)
    idle.execute("SELECT 1")
    try:
        sleeper.start()
        wait_for(lambda: observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND query LIKE '%%pg_sleep%%'",
            (sleeper.pid,)).fetchone(), what="sleeping query")
        time.sleep(1.1)  # age the idle connection and the statement past the 1s thresholds
        res = run_module("apex_db_maint", state="facts", running_longer_than="1s", idle_longer_than=1)
        assert not res.failed, res
        long_pids = dict((q["pid"], q) for q in res["long_running"])
        assert sleeper.pid in long_pids
        entry = long_pids[sleeper.pid]
        assert entry["application_name"] == app and entry["query_seconds"] >= 1
        assert "pg_sleep" in entry["query"] and entry["client_addr"] == "127.0.0.1"
        assert idle.info.backend_pid in [i["pid"] for i in res["idle"]]
    finally:
        sleeper.close()
        idle.close()


def test_facts_standby(lab, run_module):
    res = run_module("apex_db_maint", state="facts", login_port=int(lab["APEX_PG_STANDBY_PORT"]))
    assert not res.failed, res
    assert res["server"]["in_recovery"] is True
    repl = res["replication"]
    assert repl["role"] == "standby"
    assert repl["standby"]["wal_receiver"]["status"] == "streaming"
    assert repl["standby"]["receive_lsn"] and repl["standby"]["replay_lsn"]
    assert repl["standby"]["replay_delay_seconds"] is not None


def test_terminate_idle_by_filter(lab, run_module, observer):
    stuck_app = unique("stuck-test")
    stuck = admin_conn(lab, stuck_app)
    stuck.execute("SELECT 1")
    survivor = admin_conn(lab, unique("survivor-test"))
    survivor.execute("SELECT 1")
    try:
        time.sleep(2.2)
        flt = dict(application_name=[stuck_app], idle_longer_than="2s")
        # check mode lists exactly what would be touched, and touches nothing
        res = run_module("apex_db_maint", check_mode=True, state="terminate", filter=flt)
        assert not res.failed, res
        assert [b["pid"] for b in res["backends"]] == [stuck.info.backend_pid]
        assert res["changed"] is True and res["backends"][0]["signalled"] is False
        assert backends(observer, stuck_app) == [stuck.info.backend_pid]

        res = run_module("apex_db_maint", state="terminate", filter=flt)
        assert not res.failed, res
        assert res["changed"] is True
        assert [b["pid"] for b in res["backends"]] == [stuck.info.backend_pid]
        assert res["backends"][0]["query"] == "SELECT 1" and res["backends"][0]["signalled"] is True
        assert res["still_present"] == []
        assert backends(observer, stuck_app) == []
        with pytest.raises(psycopg.OperationalError):
            stuck.execute("SELECT 1")
        assert survivor.execute("SELECT 1").fetchone() == (1,)

        # nothing left to match: not changed
        again = run_module("apex_db_maint", state="terminate", filter=flt)
        assert again["changed"] is False and again["backends"] == []
    finally:
        stuck.close()
        survivor.close()


def test_cancel_long_query(lab, run_module, observer):
    app = unique("sleep-test")
    sleeper = SleepingQuery(lab, app, seconds=60)
    try:
        sleeper.start()
        wait_for(lambda: observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND query LIKE '%%pg_sleep%%'"
            " AND clock_timestamp() - query_start > interval '0.5 seconds'",
            (sleeper.pid,)).fetchone(), what="pg_sleep(60) running for longer than the filter's 0.2 s")
        started = time.monotonic()
        res = run_module("apex_db_maint", state="cancel",
                         filter=dict(application_name=app, running_longer_than="0.2s"))
        assert not res.failed, res
        assert [b["pid"] for b in res["backends"]] == [sleeper.pid]
        assert "pg_sleep" in res["backends"][0]["query"] and res["changed"] is True
        sleeper.join(10)
        assert isinstance(sleeper.error, psycopg.errors.QueryCanceled)
        assert sleeper.finished_at - started < 10
        # the connection survives a cancel
        assert backends(observer, app) == [sleeper.pid]
    finally:
        sleeper.close()


def test_terminate_idle_by_pid(lab, run_module, observer):
    app = unique("pid-term-test")
    target = admin_conn(lab, app)
    target.execute("SELECT 1")
    bystander = admin_conn(lab, app)  # same application: only the pid decides
    bystander.execute("SELECT 1")
    pid = target.info.backend_pid
    try:
        res = run_module("apex_db_maint", state="terminate", pids=[pid])
        assert not res.failed, res
        assert res["changed"] is True and [b["pid"] for b in res["backends"]] == [pid]
        assert res["backends"][0]["signalled"] is True and res["still_present"] == [] and res["skipped"] == []
        assert observer.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 0
        assert backends(observer, app) == [bystander.info.backend_pid]
        with pytest.raises(psycopg.OperationalError):
            target.execute("SELECT 1")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    finally:
        target.close()
        bystander.close()


def test_cancel_by_pid(lab, run_module, observer):
    app = unique("pid-cancel-test")
    sleeper = SleepingQuery(lab, app, seconds=60)
    idle = admin_conn(lab, app)
    idle.execute("SELECT 1")
    try:
        sleeper.start()
        wait_for(lambda: observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND query LIKE '%%pg_sleep%%'",
            (sleeper.pid,)).fetchone(), what="pg_sleep(60) active")
        # the idle pid is refused for a cancel (not running a query) and left alone
        res = run_module("apex_db_maint", state="cancel", pids=[sleeper.pid, idle.info.backend_pid])
        assert not res.failed, res
        assert res["changed"] is True and [b["pid"] for b in res["backends"]] == [sleeper.pid]
        assert res["skipped"] == [dict(pid=idle.info.backend_pid, reason="not running a query (state 'idle')")]
        sleeper.join(10)
        assert isinstance(sleeper.error, psycopg.errors.QueryCanceled), repr(sleeper.error)
        row = observer.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (sleeper.pid,)).fetchone()
        assert row == ("idle",)  # the connection survives a cancel
        assert sorted(backends(observer, app)) == sorted([sleeper.pid, idle.info.backend_pid])
    finally:
        sleeper.close()
        idle.close()


def test_facts_redact_password_literals(lab, run_module, observer):
    """A running statement carrying a password literal is reported without the literal."""
    secret = "s3cret-%s" % unique("pw")
    app = unique("redact-test")
    conn = admin_conn(lab, app)
    pid = conn.info.backend_pid
    statement = ("DO $do$ BEGIN PERFORM pg_sleep(30); IF false THEN "
                 "ALTER ROLE apex_ops_nobody ENCRYPTED PASSWORD '%s'; END IF; END $do$" % secret)
    errors = []
    worker = threading.Thread(target=lambda: _run_catching(conn, statement, errors), daemon=True)
    worker.start()
    try:
        wait_for(lambda: observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND query LIKE %s",
            (pid, "%" + secret + "%")).fetchone(), what="the statement with the password literal, active")
        time.sleep(1.1)
        res = run_module("apex_db_maint", state="facts", running_longer_than="1s", query_max_length=1000)
        assert not res.failed, res
        entry = [q for q in res["long_running"] if q["pid"] == pid]
        assert entry, res["long_running"]
        assert "ENCRYPTED PASSWORD '********'" in entry[0]["query"] and "pg_sleep(30)" in entry[0]["query"]
        assert secret not in res["_stdout"] and secret not in res["_stderr"]
        # the same for cancel/terminate output (check mode: nothing signalled)
        res = run_module("apex_db_maint", check_mode=True, state="cancel", pids=[pid])
        assert [b["pid"] for b in res["backends"]] == [pid] and secret not in res["_stdout"]
        assert "PASSWORD '********'" in res["backends"][0]["query"]
    finally:
        conn.cancel()
        worker.join(10)
        conn.close()


def _run_catching(conn, statement, errors):
    try:
        conn.execute(statement)
    except Exception as exc:  # QueryCanceled at cleanup
        errors.append(exc)


def test_never_signals_walsender_or_itself(lab, run_module, observer):
    walsender = observer.execute("SELECT pid FROM pg_stat_replication LIMIT 1").fetchone()[0]
    res = run_module("apex_db_maint", state="terminate", pids=[walsender, 999999])
    assert not res.failed, res
    assert res["changed"] is False and res["backends"] == []
    reasons = dict((s["pid"], s["reason"]) for s in res["skipped"])
    assert "walsender" in reasons[walsender]
    assert reasons[999999] == "no such backend"
    assert observer.execute("SELECT state FROM pg_stat_replication WHERE pid = %s", (walsender,)).fetchone()[0] == "streaming"
    # autovacuum launcher / background processes are never client backends either
    res = run_module("apex_db_maint", state="terminate", filter=dict(usename=["postgres"], idle_longer_than="100d"))
    assert res["backends"] == []


@pytest.mark.parametrize("flt", [{}, {"datname": ["apex"]}])
def test_terminate_without_filter_refused(lab, run_module, observer, flt):
    bystander = admin_conn(lab, unique("bystander"))
    bystander.execute("SELECT 1")
    try:
        res = run_module("apex_db_maint", state="terminate", filter=flt)
        assert res.failed and "refusing" in res["msg"]
        # an idle connection that a match-everything terminate would have killed is still there
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    finally:
        bystander.close()


def test_bad_duration_is_a_clear_error(run_module):
    res = run_module("apex_db_maint", state="terminate", filter=dict(application_name="x", idle_longer_than="ten minutes"))
    assert res.failed and "filter.idle_longer_than" in res["msg"]


def _stats(conn, table):
    return conn.execute("SELECT last_vacuum, last_analyze, vacuum_count, analyze_count FROM pg_stat_user_tables "
                        "WHERE relname = %s", (table,)).fetchone()


def test_vacuum_moves_last_vacuum(run_module, observer):
    before = _stats(observer, "tasks")
    check = run_module("apex_db_maint", check_mode=True, state="vacuum", tables=["tasks", "public.agents"])
    assert not check.failed, check
    assert [t["statement"] for t in check["tables_done"]] == [
        'VACUUM (ANALYZE) "public"."tasks"', 'VACUUM (ANALYZE) "public"."agents"']
    assert _stats(observer, "tasks") == before
    res = run_module("apex_db_maint", state="vacuum", tables=["tasks", "public.agents"])
    assert not res.failed, res
    after = _stats(observer, "tasks")
    assert after[2] == before[2] + 1 and after[3] == before[3] + 1
    assert before[0] is None or after[0] > before[0]
    assert before[1] is None or after[1] > before[1]
    assert res["tables_done"][0]["after"]["last_vacuum"] == after[0].isoformat()


def test_analyze_only(run_module, observer):
    before = _stats(observer, "events")
    res = run_module("apex_db_maint", state="analyze", tables=["events"])
    assert not res.failed, res
    after = _stats(observer, "events")
    assert after[3] == before[3] + 1 and after[2] == before[2]


def test_vacuum_refuses_missing_and_injection(run_module, observer):
    before = _stats(observer, "tasks")
    res = run_module("apex_db_maint", state="vacuum", tables=["tasks", "tasks; DROP TABLE agents", "no_such_table"])
    assert res.failed
    assert "tasks; DROP TABLE agents" in res["msg"] and "no_such_table" in res["msg"] and "nothing was run" in res["msg"]
    assert res["last_state"]["missing"] == ["tasks; DROP TABLE agents", "no_such_table"]
    assert observer.execute("SELECT to_regclass('public.agents') IS NOT NULL").fetchone()[0]
    assert _stats(observer, "tasks") == before  # tasks was valid but nothing ran


def test_injection_name_is_quoted_when_it_exists(run_module, observer):
    """A table really named 'tasks; DROP TABLE agents' is vacuumed as that table, nothing else."""
    schema = unique("apex_ops_test").replace("-", "_")
    observer.execute('CREATE SCHEMA "%s"' % schema)
    try:
        observer.execute('CREATE TABLE "%s"."tasks; DROP TABLE agents" (id int)' % schema)
        res = run_module("apex_db_maint", state="vacuum", tables=["%s.tasks; DROP TABLE agents" % schema])
        assert not res.failed, res
        assert res["tables_done"][0]["statement"] == 'VACUUM (ANALYZE) "%s"."tasks; DROP TABLE agents"' % schema
        assert observer.execute("SELECT to_regclass('public.agents') IS NOT NULL").fetchone()[0]
        assert observer.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = %s",
                                (schema,)).fetchone()[0] == 1
    finally:
        observer.execute('DROP SCHEMA "%s" CASCADE' % schema)


def test_vacuum_on_standby_refused(lab, run_module):
    res = run_module("apex_db_maint", state="vacuum", tables=["tasks"], login_port=int(lab["APEX_PG_STANDBY_PORT"]))
    assert res.failed and "standby" in res["msg"]


def _show(lab, name):
    with admin_conn(lab, unique("show")) as conn:
        return conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()[0]


def test_settings_alter_system_and_revert(lab, run_module):
    original = _show(lab, "log_min_duration_statement")
    auto_before = run_module("apex_db_maint", check_mode=True, state="settings", reset=["log_min_duration_statement"])
    was_in_auto_conf = auto_before["changed"]
    target = "2500ms" if original != "2500" else "3s"
    try:
        check = run_module("apex_db_maint", check_mode=True, state="settings",
                           settings={"log_min_duration_statement": target})
        assert check["changed"] is True and _show(lab, "log_min_duration_statement") == original

        res = run_module("apex_db_maint", state="settings", settings={"log_min_duration_statement": target}, diff=True)
        assert not res.failed, res
        assert res["changed"] is True and res["pending_restart"] == []
        expected = "2500" if target == "2500ms" else "3000"
        assert res["parameters"][0]["after"] == expected
        assert _show(lab, "log_min_duration_statement") == expected  # visible in a new session
        assert "log_min_duration_statement" in res["diff"]["after"]

        again = run_module("apex_db_maint", state="settings", settings={"log_min_duration_statement": int(expected)})
        assert again["changed"] is False  # same value, other spelling: idempotent
    finally:
        if not was_in_auto_conf:
            run_module("apex_db_maint", state="settings", reset=["log_min_duration_statement"])
        else:
            run_module("apex_db_maint", state="settings", settings={"log_min_duration_statement": original})
    wait_for(lambda: _show(lab, "log_min_duration_statement") == original, what="setting reverted")


def test_settings_pending_restart_reported_in_check_mode(run_module):
    res = run_module("apex_db_maint", check_mode=True, state="settings", settings={"max_connections": 345})
    assert not res.failed, res
    assert res["changed"] is True and res["pending_restart"] == ["max_connections"]
    assert res["parameters"][0]["context"] == "postmaster"


def test_settings_pending_restart_for_real(run_module):
    """ALTER SYSTEM of a postmaster parameter on a private PostgreSQL (tests/lab/lab.py
    private_lab): the module reports pending_restart and so does the server; the shared lab's
    max_connections is never touched."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
    from lab import private_lab
    with private_lab() as env:
        login = dict(login_host=env["PGHOST"], login_port=int(env["PGPORT"]), login_user=env["PGUSER"],
                     login_password=env["PGPASSWORD"], login_db=env["PGDATABASE"])
        with psycopg.connect(env["APEX_PG_ADMIN_DSN"], autocommit=True) as conn:
            current = int(conn.execute("SHOW max_connections").fetchone()[0])
        res = run_module("apex_db_maint", state="settings", settings={"max_connections": current + 7}, **login)
        assert not res.failed, res
        assert res["changed"] is True and res["pending_restart"] == ["max_connections"]
        assert res["parameters"][0]["context"] == "postmaster"
        with psycopg.connect(env["APEX_PG_ADMIN_DSN"], autocommit=True) as conn:
            row = conn.execute("SELECT setting::int, pending_restart FROM pg_settings WHERE name = 'max_connections'"
                               ).fetchone()
            auto = conn.execute("SELECT setting FROM pg_file_settings WHERE name = 'max_connections' "
                                "AND sourcefile LIKE '%%postgresql.auto.conf'").fetchone()
        assert row == (current, True)  # still the old value until a restart, and the server says so
        assert auto == (str(current + 7),)
        again = run_module("apex_db_maint", state="settings", settings={"max_connections": current + 7}, **login)
        assert again["changed"] is False and again["pending_restart"] == ["max_connections"]


def test_settings_bad_input_changes_nothing(lab, run_module):
    before = _show(lab, "work_mem")
    res = run_module("apex_db_maint", state="settings", settings={"work_mem": "64MB", "no_such_parameter": 1})
    assert res.failed and "no_such_parameter" in res["msg"] and "nothing was changed" in res["msg"]
    res = run_module("apex_db_maint", state="settings", settings={"work_mem": "64MB", "log_min_duration_statement": "5MB"})
    assert res.failed and "log_min_duration_statement" in res["msg"]
    assert _show(lab, "work_mem") == before


def test_wrong_password_is_not_echoed(run_module):
    secret = "not-the-password-%s" % unique("x")
    res = run_module("apex_db_maint", state="facts", login_password=secret, login_user="apex")
    assert res.failed and "cannot connect" in res["msg"]
    assert secret not in res["_stdout"] and secret not in res["_stderr"]


def test_settings_reset_reports_the_reloaded_value(lab, run_module):
    original = _show(lab, "log_min_messages")
    probe = run_module("apex_db_maint", check_mode=True, state="settings", reset=["log_min_messages"])
    if probe["changed"]:
        pytest.fail("log_min_messages is already in postgresql.auto.conf; refusing to touch someone else's setting")
    target = "notice" if original != "notice" else "info"
    try:
        res = run_module("apex_db_maint", state="settings", settings={"log_min_messages": target.upper()})
        assert res["changed"] is True and res["parameters"][0]["after"] == target
    finally:
        res = run_module("apex_db_maint", state="settings", reset=["log_min_messages"])
    assert res["changed"] is True and res["parameters"][0]["after"] == original
    assert _show(lab, "log_min_messages") == original
    again = run_module("apex_db_maint", state="settings", reset=["log_min_messages"])
    assert again["changed"] is False
