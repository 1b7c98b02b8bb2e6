"""``worker``: drains ``apex:tasks:queue`` reliably into the ``tasks`` table.

Reliable-queue pattern: ``BLMOVE apex:tasks:queue apex:tasks:processing:<worker-id> RIGHT LEFT``
takes a task *and* parks it in this worker's processing list in one atomic step; the task
leaves that list only after its outcome is committed in PostgreSQL. Every worker publishes a
heartbeat key ``apex:workers:<worker-id>`` (TTL ``$APEX_TWIN_HEARTBEAT_TTL``); at start-up and
then periodically, a worker moves back onto the queue every task parked in the processing list
of a worker that is dead (no heartbeat, or same host and its pid is gone). A task in flight is
therefore never lost when a worker is SIGKILLed; it may run twice (at-least-once), and a
task already ``completed`` is not run again.

Throughput: a token bucket refilled at
``worker_ready_replicas * worker_concurrency * $APEX_TWIN_TASK_RATE`` tasks/s (desired state,
re-read live); ``min(replicas * concurrency, $APEX_TWIN_WORKER_THREADS)`` tasks in flight.
0 ready replicas: nothing is taken, and a slot that no longer exists closes its database
connection (a pod that is gone holds none); it reconnects on its next task.

Outcome: a payload ``{"fail": true}`` or a random draw under ``task_failure_rate`` (default:
``failure_rate``) fails the attempt; the task is retried (back of the queue) until
``$APEX_TWIN_MAX_ATTEMPTS`` attempts, then the row is ``failed`` and a JSON entry
``{"task_id", "error", "attempts", "failed_at", "worker"}`` is pushed onto
``apex:tasks:dead-letter``. ``{"sleep": seconds}`` in the payload sets the simulated work time
(default ``$APEX_TWIN_TASK_SECONDS``).
"""
import argparse
import json
import os
import random
import signal
import socket
import threading
import time

from .common import (pid_alive, CIRCUIT_BREAKER_KEY, DEAD_LETTER_KEY, PROCESSING_PREFIX, QUEUE_KEY,
                     STATS_COMPLETED_KEY, STATS_FAILED_KEY, WORKER_HEARTBEAT_PREFIX, env, env_float,
                     env_int, make_logger, pg_connect, redis_client)
from .state import StateWatcher

MAX_SLEEP = 120.0


class TokenBucket:
    def __init__(self):
        self.lock = threading.Lock()
        self.tokens = 0.0
        self.last = time.monotonic()

    def take(self, rate_fn, stop, max_wait=0.5):
        """Take one token; False when none came within ``max_wait`` (or on stop)."""
        deadline = time.monotonic() + max_wait
        while not stop.is_set():
            rate = rate_fn()
            with self.lock:
                now = time.monotonic()
                capacity = max(1.0, rate * 0.1)
                self.tokens = min(capacity, self.tokens + (now - self.last) * rate)
                self.last = now
                if rate > 0 and self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return True
                wait = (1.0 - self.tokens) / rate if rate > 0 else 0.2
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            stop.wait(min(wait, remaining, 0.2))
        return False

    def refund(self):
        with self.lock:
            self.tokens += 1.0


class Worker:
    def __init__(self, args, log):
        self.log = log
        self.host = socket.gethostname()
        self.id = args.worker_id or "%s-%d-%04x" % (self.host, os.getpid(), random.getrandbits(16))
        self.proc_key = PROCESSING_PREFIX + self.id
        self.hb_key = WORKER_HEARTBEAT_PREFIX + self.id
        self.dsn = args.dsn
        self.watcher = StateWatcher(args.state, interval=env_float("APEX_TWIN_STATE_INTERVAL", 0.2), log=log)
        self.redis = redis_client(args.redis_url, timeout=5.0)
        self.rate_per_slot = env_float("APEX_TWIN_TASK_RATE", 1.0)
        self.task_seconds = env_float("APEX_TWIN_TASK_SECONDS", 0.05)
        self.max_attempts = max(1, env_int("APEX_TWIN_MAX_ATTEMPTS", 3))
        self.hb_ttl = max(1.0, env_float("APEX_TWIN_HEARTBEAT_TTL", 10.0))
        self.max_threads = max(1, env_int("APEX_TWIN_WORKER_THREADS", 8))
        self.bucket = TokenBucket()
        self.stop = threading.Event()
        self.debug = bool(env("APEX_TWIN_DEBUG"))

    # -- capacity -------------------------------------------------------------------------------
    def slots(self, fresh=False):
        state = self.watcher.get(fresh)
        return min(state["worker_ready_replicas"] * state["worker_concurrency"], self.max_threads)

    def rate(self):
        state = self.watcher.get()
        return state["worker_ready_replicas"] * state["worker_concurrency"] * self.rate_per_slot

    # -- liveness and reclaim -------------------------------------------------------------------
    def heartbeat(self):
        value = json.dumps({"host": self.host, "pid": os.getpid(), "ts": time.time()})
        self.redis.set(self.hb_key, value, px=int(self.hb_ttl * 1000))

    def worker_dead(self, worker_id):
        raw = self.redis.get(WORKER_HEARTBEAT_PREFIX + worker_id)
        if raw is None:
            return True
        try:
            info = json.loads(raw)
        except ValueError:
            return False
        return info.get("host") == self.host and not pid_alive(int(info.get("pid", 0)))

    def reclaim(self):
        moved = 0
        for key in self.redis.scan_iter(match=PROCESSING_PREFIX + "*", count=100):
            owner = key[len(PROCESSING_PREFIX):]
            if owner == self.id or not self.worker_dead(owner):
                continue
            while True:
                item = self.redis.lmove(key, QUEUE_KEY, "RIGHT", "RIGHT")
                if item is None:
                    break
                moved += 1
                self.log("task reclaimed", task=item, from_worker=owner)
        return moved

    def housekeeping(self):
        interval = max(0.2, self.hb_ttl / 4.0)
        while not self.stop.wait(interval):
            try:
                self.heartbeat()
                self.reclaim()
            except Exception as exc:
                self.log("housekeeping_failed", error=str(exc))

    # -- task processing ------------------------------------------------------------------------
    @staticmethod
    def task_id_of(item):
        if item.startswith("{"):  # a dead-letter entry pushed back as is
            try:
                return str(json.loads(item)["task_id"])
            except (ValueError, KeyError, TypeError):
                return item
        return item

    def process(self, conn, item):
        from psycopg.types.json import Jsonb
        task_id = self.task_id_of(item)
        state = self.watcher.get()
        with conn.transaction():
            row = conn.execute(
                "UPDATE tasks SET status = 'running', started_at = now(), attempts = attempts + 1, "
                "worker = %s, error_message = NULL, "
                "provider = COALESCE(%s, payload->>'provider', "
                "  (SELECT a.provider FROM agents a WHERE a.id = tasks.agent_id), 'openai') "
                "WHERE task_id = %s AND status <> 'completed' RETURNING payload, attempts, provider",
                (self.id, state["force_provider"], task_id)).fetchone()
            if row is not None:
                conn.execute("INSERT INTO events (task_id, kind, data) VALUES (%s, 'started', %s)",
                             (task_id, Jsonb({"worker": self.id, "attempt": row[1], "provider": row[2]})))
        if row is None:
            exists = conn.execute("SELECT status FROM tasks WHERE task_id = %s", (task_id,)).fetchone()
            if exists is not None:  # already completed (a duplicate after a reclaim): drop it
                self.redis.lrem(self.proc_key, 1, item)
                self.log("task skipped", task_id=task_id, reason="already completed")
                return
            entry = {"task_id": task_id, "error": "unknown task (no row in tasks)", "attempts": 0,
                     "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "worker": self.id}
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(self.proc_key, 1, item).lpush(DEAD_LETTER_KEY, json.dumps(entry)).incr(STATS_FAILED_KEY)
            pipe.execute()
            self.log("task failed", task_id=task_id, error=entry["error"])
            return
        payload, attempts, provider = row
        payload = payload if isinstance(payload, dict) else {}
        started = time.perf_counter()
        try:
            duration = float(payload.get("sleep", self.task_seconds))
        except (TypeError, ValueError):
            duration = self.task_seconds
        if duration > 0:
            time.sleep(min(duration, MAX_SLEEP))
        rate = state["task_failure_rate"] if state["task_failure_rate"] is not None else state["failure_rate"]
        error = None
        if payload.get("fail"):
            error = str(payload.get("error") or "task failed: payload requested failure")
        elif rate and random.random() < rate:
            error = "provider %s returned an error (simulated, failure rate %s)" % (provider, rate)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        if error is None:
            result = {"output": "ok", "provider": provider, "duration_ms": elapsed_ms}
            with conn.transaction():
                conn.execute("UPDATE tasks SET status = 'completed', result = %s, completed_at = now() "
                             "WHERE task_id = %s", (Jsonb(result), task_id))
                conn.execute("INSERT INTO events (task_id, kind, data) VALUES (%s, 'completed', %s)",
                             (task_id, Jsonb({"worker": self.id, "duration_ms": elapsed_ms})))
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(self.proc_key, 1, item).incr(STATS_COMPLETED_KEY).hset(CIRCUIT_BREAKER_KEY, "failures", 0)
            pipe.execute()
            self.log("task completed", task_id=task_id, attempt=attempts, provider=provider,
                     duration_ms=elapsed_ms)
            return
        final = attempts >= self.max_attempts
        with conn.transaction():
            if final:
                conn.execute("UPDATE tasks SET status = 'failed', error_message = %s, completed_at = now() "
                             "WHERE task_id = %s", (error, task_id))
            else:
                conn.execute("UPDATE tasks SET status = 'queued', error_message = %s WHERE task_id = %s",
                             (error, task_id))
            conn.execute("INSERT INTO events (task_id, kind, data) VALUES (%s, %s, %s)",
                         (task_id, "failed" if final else "retry",
                          Jsonb({"worker": self.id, "attempt": attempts, "error": error})))
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrem(self.proc_key, 1, item)
        if final:
            entry = {"task_id": task_id, "error": error, "attempts": attempts, "worker": self.id,
                     "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            pipe.lpush(DEAD_LETTER_KEY, json.dumps(entry)).incr(STATS_FAILED_KEY)
        else:
            pipe.lpush(QUEUE_KEY, task_id)
        pipe.hincrby(CIRCUIT_BREAKER_KEY, "failures", 1)
        failures = pipe.execute()[-1]
        self.log("task failed" if final else "task retry", task_id=task_id, attempt=attempts,
                 error=error, dead_lettered=final)
        if failures >= state["circuit_breaker_failure_threshold"]:
            if self.redis.hget(CIRCUIT_BREAKER_KEY, "state") != "open":
                self.redis.hset(CIRCUIT_BREAKER_KEY, mapping={
                    "state": "open", "provider": provider or "",
                    "opened_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                self.log("circuit_breaker opened", provider=provider, consecutive_failures=failures)

    def give_back(self, item):
        """Put a taken task back at the head of the queue (next to be taken), atomically."""
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(self.proc_key, 1, item).rpush(QUEUE_KEY, item)
            pipe.execute()
        except Exception:
            pass  # it stays in our processing list; a successor reclaims it

    def slot(self, index):
        conn = None
        while not self.stop.is_set():
            if index >= self.slots():
                # this slot's pod is gone (scaled down, 0 ready replicas): so is its session
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                self.stop.wait(0.5)  # a slot comes back within this and the state file's interval
                continue
            if not self.bucket.take(self.rate, self.stop):
                continue
            try:
                # Blocks up to 1 s: a task pushed meanwhile is taken at once; the timeout only bounds how
                # late a slot notices a scale-down (a task taken after one is handed back, below).
                item = self.redis.blmove(QUEUE_KEY, self.proc_key, 1.0, "RIGHT", "LEFT")
            except Exception as exc:
                self.bucket.refund()
                self.log("redis_error", error=str(exc))
                self.stop.wait(1.0)
                continue
            if item is None:
                self.bucket.refund()
                continue
            slots = self.slots(fresh=True)
            if index >= slots:  # scaled down while we were blocked: hand it back untouched
                self.give_back(item)
                self.bucket.refund()
                continue
            if self.debug:
                self.log("task taken", task=item, slot=index, slots=slots)
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = pg_connect(self.dsn, "apex-worker")
                self.process(conn, item)
            except Exception as exc:
                self.log("task_error", task=item, error=str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                self.give_back(item)
                self.stop.wait(1.0)
        if conn is not None:
            conn.close()

    def run(self):
        self.heartbeat()
        moved = self.reclaim()
        self.log("worker started", worker_id=self.id, reclaimed=moved, rate_per_slot=self.rate_per_slot,
                 max_attempts=self.max_attempts, pid=os.getpid())
        threads = [threading.Thread(target=self.housekeeping, name="housekeeping", daemon=True)]
        threads += [threading.Thread(target=self.slot, args=(i,), name="slot-%d" % i, daemon=True)
                    for i in range(self.max_threads)]
        for thread in threads:
            thread.start()
        while not self.stop.wait(0.5):
            pass
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self.redis.delete(self.hb_key)
        except Exception:
            pass
        self.log("worker stopped", worker_id=self.id)


def main(argv):
    parser = argparse.ArgumentParser(prog="twin worker", description="The Apex twin task worker.")
    parser.add_argument("--worker-id", default=env("APEX_TWIN_WORKER_ID"))
    parser.add_argument("--state", default=env("APEX_TWIN_STATE"))
    parser.add_argument("--dsn", default=env("APEX_PG_DSN"))
    parser.add_argument("--redis-url", default=env("APEX_REDIS_URL"))
    args = parser.parse_args(argv)
    if not args.dsn or not args.redis_url:
        parser.error("APEX_PG_DSN and APEX_REDIS_URL (or --dsn/--redis-url) are required")
    log = make_logger("apex-worker")
    worker = Worker(args, log)

    def stop(signum, frame):
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            worker.run()
            return 0
        except Exception as exc:  # Redis down at start: retry like a crash-looping pod, slower
            if worker.stop.is_set():
                return 0
            log("worker_start_failed", error=str(exc))
            if worker.stop.wait(2.0):
                return 0
