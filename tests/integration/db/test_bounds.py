"""Every statement of the collection is bounded (issue 15, cause 3): a session holding a lock on
``tasks`` makes apex_db_maint / the db_vacuum playbook fail within the lock timeout, naming the
holder, and the holder's session is left exactly as it was."""
import os
import sys
import time
from pathlib import Path

import pytest

from dbq_helpers import admin_conn, unique


@pytest.fixture
def tasks_locked(lab):
    """A session of its own: BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE, kept open by the test."""
    app = unique("lock-holder")
    holder = admin_conn(lab, app, autocommit=False)
    holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
    holder.app = app
    holder.pid = holder.info.backend_pid
    yield holder
    holder.rollback()
    holder.close()


def assert_holder_untouched(lab, holder):
    """Same backend, still in its transaction, still holding the lock, and it can go on working."""
    with admin_conn(lab, unique("lock-observer")) as conn:
        row = conn.execute("SELECT state, application_name FROM pg_stat_activity WHERE pid = %s", (holder.pid,)).fetchone()
        assert row == ("idle in transaction", holder.app), row
        held = conn.execute("SELECT mode FROM pg_locks WHERE pid = %s AND granted AND relation = 'tasks'::regclass",
                            (holder.pid,)).fetchall()
        assert ("AccessExclusiveLock",) in held, held
    assert holder.execute("SELECT count(*) >= 0 FROM tasks").fetchone()[0] is True
    assert holder.info.backend_pid == holder.pid


def assert_names_holder(text, holder):
    assert "pid %d" % holder.pid in text and holder.app in text, text


def test_vacuum_module_fails_within_lock_timeout_naming_the_holder(lab, run_module, tasks_locked):
    started = time.monotonic()
    res = run_module("apex_db_maint", state="vacuum", tables=["agents", "tasks", "events"], lock_timeout="2s",
                     timeout=120)
    elapsed = time.monotonic() - started
    assert res.failed, res
    assert elapsed < 30, elapsed  # 2 s lock timeout + module start-up; it used to wait for ever
    msg = res["msg"]
    assert msg.startswith("VACUUM of public.tasks: lock_timeout (2s) reached"), msg
    assert_names_holder(msg, tasks_locked)
    assert "AccessExclusiveLock" in msg and "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE" in msg
    last = res["last_state"]
    assert last["timeout"] == "lock_timeout" and last["limit_seconds"] == 2
    assert last["waiting_for"]["relation"] == "tasks"
    blocker = last["blocking_sessions"][0]
    assert (blocker["pid"], blocker["application_name"], blocker["state"]) == (
        tasks_locked.pid, tasks_locked.app, "idle in transaction")
    assert [t["table"] for t in last["tables_done"]] == ["public.agents"]  # done before the locked one
    assert last["tables_not_done"] == ["public.tasks", "public.events"]
    assert_holder_untouched(lab, tasks_locked)


def test_db_vacuum_playbook_ends_with_the_default_lock_timeout(lab, run_playbook, tasks_locked, tmp_path):
    started = time.monotonic()
    proc = run_playbook("playbooks/db_vacuum.yml", extra_vars={"apex_report_dir": str(tmp_path),
                                                               "db_vacuum_tables": ["tasks"]}, timeout=180)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, proc.stdout
    assert elapsed < 60, elapsed  # default db_vacuum_lock_timeout 10s
    assert "lock_timeout (10s) reached" in proc.stdout, proc.stdout[-3000:]
    assert_names_holder(proc.stdout, tasks_locked)
    assert_holder_untouched(lab, tasks_locked)


def test_statement_timeout_names_no_blocker_when_it_was_working(run_module, tasks_locked):
    """The facts statement needs a lock on tasks (its size); with only statement_timeout set low,
    that bound fires and still says who was blocking."""
    res = run_module("apex_db_maint", state="facts", statement_timeout="1500ms", lock_timeout=0, timeout=120)
    assert res.failed, res
    assert "statement_timeout (1.5s) reached: the statement was waiting for AccessShareLock on tasks" in res["msg"], res["msg"]
    assert_names_holder(res["msg"], tasks_locked)
    assert res["last_state"]["timeout"] == "statement_timeout"


def test_task_stats_reads_the_tasks_table(run_module, lab):
    with admin_conn(lab, unique("stats-observer")) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM tasks WHERE created_at > now() - interval '1 hour' "
                                   "GROUP BY status").fetchall())
    res = run_module("apex_db_maint", state="task_stats")
    assert not res.failed and not res["changed"], res
    stats = res["task_stats"]
    assert stats["window_seconds"] == 3600 and stats["rate_window_seconds"] == 300
    # the twin keeps working while this runs: statuses move, but every seen status is counted
    assert set(stats["by_status"]) <= {"queued", "running", "completed", "failed"}
    assert set(counts) - set(stats["by_status"]) <= {"queued", "running"}, (counts, stats)
    assert stats["total"] == sum(stats["by_status"].values())


def test_bad_timeout_is_refused_before_connecting(run_module):
    res = run_module("apex_db_maint", state="facts", lock_timeout="ten seconds")
    assert res.failed and res["msg"].startswith("lock_timeout: cannot parse"), res["msg"]


def test_session_carries_the_timeouts(lab):
    """postgres.connect sends the bounds at connect time: the session runs with them from its first statement."""
    _collection_on_path()
    from ansible_collections.apex.ops.plugins.module_utils import postgres

    params = dict(login_host=lab["PGHOST"], login_port=int(lab["PGPORT"]), login_user=lab["PGUSER"],
                  login_password=lab["PGPASSWORD"], login_db=lab["PGDATABASE"], ssl_mode="disable", ca_cert=None,
                  connect_timeout=5, statement_timeout="90s", lock_timeout="3s")
    with postgres.connect(params) as conn:
        assert conn.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").fetchone() \
            == ("90s", "3s")
    params.update(statement_timeout=0, lock_timeout=None)  # 0: no bound; None: the default
    with postgres.connect(params) as conn:
        assert conn.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").fetchone() \
            == ("0", "10s")


def _collection_on_path():
    root = Path(__file__).resolve().parents[3]
    collections = Path(os.environ.get("APEX_LAB_DIR", root / ".lab")) / "collections"
    if str(collections) not in sys.path:
        sys.path.insert(0, str(collections))
