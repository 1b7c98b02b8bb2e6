"""The twin's worker: completes tasks, dead-letters failures, never loses a task in flight."""
import json
import time

from twin.testing import wait_for

QUEUE, DEAD = "apex:tasks:queue", "apex:tasks:dead-letter"


def _row(db, task_id):
    return db.execute("SELECT status, attempts, error_message, completed_at, worker, provider FROM tasks "
                      "WHERE task_id = %s", (task_id,)).fetchone()


def _event_kinds(db, task_id):
    rows = db.execute("SELECT kind FROM events WHERE task_id = %s ORDER BY id", (task_id,)).fetchall()
    return [r[0] for r in rows]


def _submit(twin, payload, task_id=None):
    body = {"payload": payload}
    if task_id:
        body["task_id"] = task_id
    status, headers, doc = twin.request("POST", "/api/v1/tasks", body)
    assert status == 202, doc
    assert headers["location"] == "/api/v1/tasks/" + doc["task_id"]
    return doc["task_id"]


def test_submitted_task_is_completed_by_the_worker(fresh_twin, twin_redis, scratch_db, shared_worker):
    fresh_twin.set_state(force_provider="anthropic")
    worker = shared_worker
    task_id = _submit(fresh_twin, {"prompt": "hello"})
    wait_for(lambda: _row(scratch_db, task_id)[0] == "completed", 10, what="task completed")
    status, attempts, error, completed_at, worker_id, provider = _row(scratch_db, task_id)
    assert attempts == 1 and error is None and completed_at is not None and provider == "anthropic"
    kinds = _event_kinds(scratch_db, task_id)
    assert kinds == ["queued", "started", "completed"]
    assert twin_redis.llen(QUEUE) == 0
    # the worker removes the task from its processing list just after the DB commit
    wait_for(lambda: twin_redis.llen("apex:tasks:processing:" + worker_id) == 0, 5, what="processing list empty")
    status, dummy, body = fresh_twin.request("GET", "/api/v1/tasks/" + task_id)
    assert status == 200 and body["status"] == "completed" and body["result"]["provider"] == "anthropic"
    assert "apex_tasks_completed_total 1" in fresh_twin.request("GET", "/metrics")[2]
    assert "task completed" in worker.output()


def test_failing_task_lands_in_the_dead_letter_list(fresh_twin, twin_redis, scratch_db, shared_worker):
    task_id = _submit(fresh_twin, {"fail": True, "error": "tool crashed"})
    wait_for(lambda: twin_redis.llen(DEAD) == 1, 10, what="dead-letter entry")
    entry = json.loads(twin_redis.lindex(DEAD, 0))
    assert entry["task_id"] == task_id and entry["error"] == "tool crashed" and entry["attempts"] == 2
    status, attempts, error, completed_at = _row(scratch_db, task_id)[:4]
    assert (status, attempts, error) == ("failed", 2, "tool crashed") and completed_at is not None
    kinds = _event_kinds(scratch_db, task_id)
    assert kinds == ["queued", "started", "retry", "started", "failed"]
    assert twin_redis.llen(QUEUE) == 0
    metrics = fresh_twin.request("GET", "/metrics")[2]
    assert "apex_tasks_failed_total 1" in metrics and "apex_dead_letter_depth 1" in metrics


def test_no_ready_worker_replicas_means_no_processing(fresh_twin, twin_redis, scratch_db, shared_worker):
    fresh_twin.set_state(worker_ready_replicas=0)
    task_id = _submit(fresh_twin, {"x": 1})
    time.sleep(0.6)
    assert _row(scratch_db, task_id)[0] == "queued" and twin_redis.llen(QUEUE) == 1
    fresh_twin.set_state(worker_ready_replicas=1, worker_concurrency=1)
    wait_for(lambda: _row(scratch_db, task_id)[0] == "completed", 10, what="task completed after scale-up")


def test_processing_rate_follows_replicas_times_concurrency(fresh_twin, twin_redis, scratch_db, shared_worker):
    # 1 replica x 1 slot x 10 tasks/s: 15 tasks need >= ~1.3 s; 4 x 2 slots drain them quickly
    fresh_twin.set_state(worker_ready_replicas=0)
    ids = [_submit(fresh_twin, {"n": i}) for i in range(15)]
    t0 = time.monotonic()  # before the write: the worker can start as soon as the file changes
    fresh_twin.set_state(worker_ready_replicas=1, worker_concurrency=1)
    time.sleep(0.7)
    done_early = scratch_db.execute("SELECT count(*) FROM tasks WHERE status = 'completed' AND task_id = ANY(%s)",
                                    (ids,)).fetchone()[0]
    elapsed = time.monotonic() - t0
    # bounded by the time that really passed (a starved test thread oversleeps), + 2 for the bucket's burst
    assert done_early <= 2 + 10 * elapsed, (done_early, elapsed)
    fresh_twin.set_state(worker_ready_replicas=4, worker_concurrency=2)
    wait_for(lambda: scratch_db.execute("SELECT count(*) FROM tasks WHERE status = 'completed' AND "
                                        "task_id = ANY(%s)", (ids,)).fetchone()[0] == 15, 10, what="all done")
    assert time.monotonic() - t0 < 5


def test_consecutive_failures_open_the_circuit_breaker(fresh_twin, twin_redis, scratch_db, shared_worker,
                                                       twin_base_env):
    fresh_twin.set_state(circuit_breaker_failure_threshold=2)
    worker = shared_worker
    _submit(fresh_twin, {"fail": True, "provider": "google"})
    wait_for(lambda: fresh_twin.request("GET", "/health")[2]["circuit_breaker"]["state"] == "open", 10,
             what="breaker open")
    health = fresh_twin.request("GET", "/health")[2]
    assert health["status"] == "degraded" and health["circuit_breaker"]["provider"] == "google"
    assert "circuit_breaker opened" in worker.output()
    auth = {"Authorization": "Bearer " + twin_base_env["env"]["APEX_ADMIN_TOKEN"]}
    assert fresh_twin.request("POST", "/admin/circuit-breaker/reset", headers=auth)[0] == 200
    assert fresh_twin.request("GET", "/health")[2]["status"] == "healthy"
