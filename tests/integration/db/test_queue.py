"""apex_queue against the lab's Redis. Every test uses its own keys (the twin's worker and other
helpers share the real apex:tasks:* keys) and deletes them afterwards."""
import json

import pytest

from dbq_helpers import unique


@pytest.fixture
def keys(rds):
    prefix = unique("apex-ops-test")
    k = dict(queue_key="%s:tasks:queue" % prefix, dead_letter_key="%s:tasks:dead-letter" % prefix,
             processing_pattern="%s:tasks:processing:*" % prefix, prefix=prefix)
    yield k
    for key in rds.scan_iter(match=prefix + ":*"):
        rds.delete(key)


def args(keys):
    return dict((k, v) for k, v in keys.items() if k != "prefix")


def dead_letter(task_id, error="provider timeout"):
    return json.dumps({"task_id": task_id, "error": error, "attempts": 3, "failed_at": "2026-11-27T06:00:00Z"})


def test_facts(run_module, rds, keys):
    rds.lpush(keys["queue_key"], "tsk_q1", "tsk_q2", "tsk_q3")
    rds.lpush(keys["dead_letter_key"], dead_letter("tsk_d1"), "tsk_d2")
    rds.lpush("%s:tasks:processing:worker-a" % keys["prefix"], "tsk_p1")
    rds.lpush("%s:tasks:processing:worker-b" % keys["prefix"], "tsk_p2", "tsk_p3")
    res = run_module("apex_queue", sample_size=5, memory_limit="4GB", **args(keys))
    assert not res.failed, res
    assert res["changed"] is False
    assert res["queue"]["depth"] == 3 and res["dead_letter"]["depth"] == 2
    assert res["dead_letter"]["sample"] == ["tsk_d2", json.loads(dead_letter("tsk_d1"))]
    assert res["processing"]["lists"] == 2 and res["processing"]["total"] == 3
    mem = res["memory"]
    assert mem["used_bytes"] > 0 and mem["limit_bytes"] == 4 * 1024 ** 3
    assert mem["percent"] == round(100.0 * mem["used_bytes"] / mem["limit_bytes"], 1)
    assert res["clients"]["connected"] >= 1


def test_requeue_oldest_first_with_count(run_module, rds, keys):
    # dead letters are LPUSHed: d1 is the oldest
    for item in (dead_letter("tsk_d1"), "tsk_d2", dead_letter("tsk_d3")):
        rds.lpush(keys["dead_letter_key"], item)
    rds.lpush(keys["queue_key"], "tsk_new")

    check = run_module("apex_queue", check_mode=True, state="requeue", count=2, **args(keys))
    assert not check.failed, check
    assert check["changed"] is True and [i["requeued"] for i in check["requeued"]["items"]] == ["tsk_d1", "tsk_d2"]
    assert rds.llen(keys["dead_letter_key"]) == 3 and rds.lrange(keys["queue_key"], 0, -1) == ["tsk_new"]

    res = run_module("apex_queue", state="requeue", count=2, **args(keys))
    assert not res.failed, res
    assert res["changed"] is True and res["requeued"]["moved"] == 2
    # the worker pops from the right: tsk_new first, then d1, then d2 (requeued at the back)
    assert rds.lrange(keys["queue_key"], 0, -1) == ["tsk_d2", "tsk_d1", "tsk_new"]
    assert rds.lrange(keys["dead_letter_key"], 0, -1) == [dead_letter("tsk_d3")]
    assert res["queue"]["depth"] == 3 and res["dead_letter"]["depth"] == 1

    res = run_module("apex_queue", state="requeue", position="front", **args(keys))
    assert res["requeued"]["moved"] == 1
    assert rds.rpop(keys["queue_key"]) == "tsk_d3"  # front: the next task a worker takes
    assert rds.exists(keys["dead_letter_key"]) == 0

    empty = run_module("apex_queue", state="requeue", **args(keys))
    assert empty["changed"] is False and empty["requeued"]["moved"] == 0


def test_requeue_refuses_items_without_task(run_module, rds, keys):
    rds.lpush(keys["dead_letter_key"], dead_letter("tsk_ok"), json.dumps({"error": "no id"}))
    res = run_module("apex_queue", state="requeue", **args(keys))
    assert res.failed and "nothing was moved" in res["msg"]
    assert res["last_state"]["invalid"][0]["item"] == {"error": "no id"}
    assert rds.llen(keys["dead_letter_key"]) == 2 and rds.llen(keys["queue_key"]) == 0


@pytest.mark.parametrize("confirm", [None, "yes", "purge"])
def test_purge_refused_without_confirmation(run_module, rds, keys, confirm, tmp_path):
    rds.lpush(keys["dead_letter_key"], dead_letter("tsk_1"), dead_letter("tsk_2"))
    before = rds.lrange(keys["dead_letter_key"], 0, -1)
    extra = {"confirm": confirm} if confirm else {}
    res = run_module("apex_queue", state="purge", save_to=str(tmp_path / "dl.json"), **dict(args(keys), **extra))
    assert res.failed and "purge-dead-letter" in res["msg"]
    assert rds.lrange(keys["dead_letter_key"], 0, -1) == before
    assert not (tmp_path / "dl.json").exists()


def test_purge_saves_then_deletes(run_module, rds, keys, tmp_path):
    items = [dead_letter("tsk_1"), "tsk_2", "not json {"]
    for item in items:
        rds.lpush(keys["dead_letter_key"], item)
    rds.lpush(keys["queue_key"], "tsk_keep")
    target = tmp_path / "saved" / "dead-letter.json"

    check = run_module("apex_queue", check_mode=True, state="purge", confirm="purge-dead-letter",
                       save_to=str(target), **args(keys))
    assert check["changed"] is True and check["purged"]["purged"] == 3
    assert rds.llen(keys["dead_letter_key"]) == 3 and not target.exists()

    res = run_module("apex_queue", state="purge", confirm="purge-dead-letter", save_to=str(target), **args(keys))
    assert not res.failed, res
    assert res["changed"] is True and res["purged"]["purged"] == 3
    assert rds.exists(keys["dead_letter_key"]) == 0
    assert rds.lrange(keys["queue_key"], 0, -1) == ["tsk_keep"]  # only the dead-letter list is purged
    saved = json.loads(target.read_text())
    assert saved["count"] == 3 and saved["key"] == keys["dead_letter_key"]
    assert saved["items"] == ["not json {", "tsk_2", json.loads(items[0])]
    assert oct(target.stat().st_mode & 0o777) == "0o600"

    again = run_module("apex_queue", state="purge", confirm="purge-dead-letter", **args(keys))
    assert again["changed"] is False


def test_purge_never_overwrites_an_earlier_save_file(run_module, rds, keys, tmp_path):
    target = tmp_path / "dead-letter.json"
    target.write_text('{"items": ["saved earlier"]}')
    rds.lpush(keys["dead_letter_key"], dead_letter("tsk_1"))
    for check_mode in (True, False):
        res = run_module("apex_queue", check_mode=check_mode, state="purge", confirm="purge-dead-letter",
                         save_to=str(target), **args(keys))
        assert res.failed and "already exists" in res["msg"] and "nothing was purged" in res["msg"]
    assert rds.llen(keys["dead_letter_key"]) == 1
    assert json.loads(target.read_text()) == {"items": ["saved earlier"]}


def test_bad_input(run_module, keys):
    res = run_module("apex_queue", memory_limit="lots", **args(keys))
    assert res.failed and "memory_limit" in res["msg"]
    res = run_module("apex_queue", state="requeue", count=-1, **args(keys))
    assert res.failed and "count" in res["msg"]
    same = dict(args(keys), dead_letter_key=keys["queue_key"])
    res = run_module("apex_queue", state="requeue", **same)
    assert res.failed and "must differ" in res["msg"]


def test_wrong_password_is_not_echoed(run_module, keys):
    secret = unique("wrong-redis-password")
    res = run_module("apex_queue", redis_password=secret, **args(keys))
    assert res.failed and "cannot connect" in res["msg"]
    assert secret not in res["_stdout"] and secret not in res["_stderr"]


def test_requeue_a_real_dead_letter_until_completed(lab, run_module, tmp_path):
    """The twin's worker dead-letters a task (payload fail: true, $APEX_TWIN_MAX_ATTEMPTS=2); the
    cause is fixed (the flag removed from the row, as an operator would fix a provider); apex_queue
    requeues the dead letter and the worker completes the task: tasks.status = 'completed'.

    A private twin (API + worker on a Redis db of its own, see private_twin.py) keeps the lab
    worker and the shared apex:tasks:* keys out of it; the row lives in the lab's tasks table."""
    import psycopg

    from private_twin import PrivateTwin, wait_for

    task_id = unique("tsk-requeue")
    with PrivateTwin(lab, tmp_path, "requeue", worker=True) as twin, \
            psycopg.connect(lab["APEX_PG_DSN"], autocommit=True) as db:
        def row():
            return db.execute("SELECT status, attempts, error_message FROM tasks WHERE task_id = %s",
                              (task_id,)).fetchone()
        try:
            status, _h, body = twin.request("POST", "/api/v1/tasks", body={
                "task_id": task_id, "payload": {"fail": True, "error": "provider timeout (test)"}})
            assert status == 202, body
            dead = wait_for(lambda: twin.redis.lrange("apex:tasks:dead-letter", 0, -1), 30, what="the dead letter")
            assert [json.loads(d)["task_id"] for d in dead] == [task_id]
            assert row() == ("failed", 2, "provider timeout (test)")

            db.execute("UPDATE tasks SET payload = payload - 'fail' WHERE task_id = %s", (task_id,))
            res = run_module("apex_queue", state="requeue", redis_db=twin.redis_db)
            assert not res.failed, res
            assert res["changed"] is True and res["requeued"]["moved"] == 1, res
            assert [i["requeued"] for i in res["requeued"]["items"]] == [task_id]
            assert twin.redis.llen("apex:tasks:dead-letter") == 0
            wait_for(lambda: row()[0] == "completed", 30, what="the requeued task completed")
            assert row()[1] == 3  # a third attempt ran, after the requeue
            events = [k for (k,) in db.execute("SELECT kind FROM events WHERE task_id = %s ORDER BY id",
                                               (task_id,)).fetchall()]
            assert events[-1] == "completed" and "failed" in events
            assert twin.redis.llen("apex:tasks:dead-letter") == 0 and twin.redis.llen("apex:tasks:queue") == 0
        finally:
            db.execute("DELETE FROM events WHERE task_id = %s", (task_id,))
            db.execute("DELETE FROM tasks WHERE task_id = %s", (task_id,))
