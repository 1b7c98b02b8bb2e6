"""A worker SIGKILLed mid-task loses nothing: the next worker reclaims the task at start-up.

Its own module: no other worker may run on the queue while the victim holds the task.
"""
import signal

from twin.testing import wait_for

QUEUE = "apex:tasks:queue"


def _row(db, task_id):
    return db.execute("SELECT status, attempts, error_message, completed_at, worker, provider FROM tasks "
                      "WHERE task_id = %s", (task_id,)).fetchone()


def _submit(twin, payload):
    status, dummy, doc = twin.request("POST", "/api/v1/tasks", {"payload": payload})
    assert status == 202, doc
    return doc["task_id"]


def test_task_in_flight_survives_a_sigkilled_worker(fresh_twin, twin_redis, scratch_db, start_worker):
    first = start_worker("victim")
    task_id = _submit(fresh_twin, {"sleep": 5})
    wait_for(lambda: _row(scratch_db, task_id)[0] == "running", 10, what="task running")
    victim_id = _row(scratch_db, task_id)[4]
    assert twin_redis.lrange("apex:tasks:processing:" + victim_id, 0, -1) == [task_id]
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(5)
    # dead worker: the task is parked in its processing list, not lost, not in the queue
    assert twin_redis.lrange("apex:tasks:processing:" + victim_id, 0, -1) == [task_id]
    assert twin_redis.llen(QUEUE) == 0
    scratch_db.execute("UPDATE tasks SET payload = '{\"sleep\": 0}' WHERE task_id = %s", (task_id,))
    second = start_worker("successor")
    assert '"reclaimed": 1' in second.output()
    wait_for(lambda: _row(scratch_db, task_id)[0] == "completed", 10, what="reclaimed task completed")
    row = _row(scratch_db, task_id)
    status, attempts, worker_id = row[0], row[1], row[4]
    assert attempts == 2 and worker_id != victim_id
    assert not twin_redis.exists("apex:tasks:processing:" + victim_id)
