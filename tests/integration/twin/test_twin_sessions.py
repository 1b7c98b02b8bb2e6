"""A component whose pods are all gone holds no database session.

The twin plays apex-api (a connection pool) and apex-worker (one connection per task slot) in
two processes; its desired state says how many pods of each are ready. When a component has 0
ready replicas its sessions must leave ``pg_stat_activity`` (the restore's drain waits for
exactly that), and come back by themselves once replicas are back. Observed in PostgreSQL, on
the session's scratch database, by ``application_name``.
"""
import time

from twin.testing import Proc, wait_for

APPS = ("apex-api", "apex-worker")


def _sessions(admin_dsn, db):
    """{application_name: number of sessions} of the twin's components on ``db``."""
    import psycopg
    with psycopg.connect(admin_dsn, dbname="postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT application_name, count(*) FROM pg_stat_activity "
                            "WHERE datname = %s AND application_name = ANY(%s) GROUP BY 1",
                            (db, list(APPS))).fetchall()
    counts = dict.fromkeys(APPS, 0)
    counts.update(dict(rows))
    return counts


def _submit_and_complete(twin, scratch_db, n=4):
    ids = []
    for dummy in range(n):
        status, _headers, doc = twin.request("POST", "/api/v1/tasks", body={"payload": {"sleep": 0}})
        assert status == 202, (status, doc)
        ids.append(doc["task_id"])
    wait_for(lambda: scratch_db.execute("SELECT count(*) FROM tasks WHERE task_id = ANY(%s) AND status = 'completed'",
                                        (ids,)).fetchone()[0] == n, 20, what="%d tasks completed" % n)


def test_sessions_end_with_the_replicas_and_come_back(twin_base_env, make_twin, twin_redis, scratch_db):
    env = twin_base_env["env"]
    admin, db = twin_base_env["admin_dsn"], scratch_db.info.dbname
    twin = make_twin("sessions")
    worker = Proc(["worker"], dict(env, APEX_TWIN_STATE=twin.state_path),
                  str(twin_base_env["tmp"] / "worker-sessions.log"))
    try:
        wait_for(lambda: "worker started" in worker.output() or not worker.alive(), 10, what="worker start")
        assert worker.alive(), worker.output()
        # both components connected: the API pool (health + submissions), the worker's slots (tasks)
        assert twin.request("GET", "/health")[0] == 200
        _submit_and_complete(twin, scratch_db)
        before = _sessions(admin, db)
        assert before["apex-api"] >= 1 and before["apex-worker"] >= 1, before

        # apex-api has no pod left: its pool's sessions end; the worker's stay (it still runs)
        twin.set_state(api_ready_replicas=0)
        wait_for(lambda: _sessions(admin, db)["apex-api"] == 0, 10, what="apex-api sessions gone")
        assert _sessions(admin, db)["apex-worker"] >= 1
        assert twin.request("GET", "/health")[0] == 503  # no ready replicas: nothing reconnects
        # apex-worker too: every session of the application is gone, and stays gone
        twin.set_state(api_ready_replicas=0, worker_ready_replicas=0)
        wait_for(lambda: _sessions(admin, db) == {"apex-api": 0, "apex-worker": 0}, 10,
                 what="every twin session gone")
        time.sleep(1.0)
        assert _sessions(admin, db) == {"apex-api": 0, "apex-worker": 0}

        # pods back: the twin serves and reconnects by itself
        twin.set_state()
        status, _headers, doc = twin.request("GET", "/health")
        assert status == 200 and doc["database"]["ok"] is True, (status, doc)
        _submit_and_complete(twin, scratch_db)
        after = _sessions(admin, db)
        assert after["apex-api"] >= 1 and after["apex-worker"] >= 1, after
        assert '"db_pool_closed"' in twin.proc.output() and '"db_pool_reopened"' in twin.proc.output()
    finally:
        worker.stop()
