"""A private Apex twin (API and, optionally, a worker) for tests that must change its state.

The lab's own twin is shared (other suites probe it concurrently, and the Kubernetes
simulator's bridge owns its desired-state file), so tests that put Apex into maintenance
mode, open its circuit breaker or make its worker dead-letter a task start their own: an API
process on a free port with its own desired-state file and admin token, a worker, and a Redis
database of their own among 9-15, claimed with the same key as tests/integration/twin
(``apex-twin-test:claimed-by``, SET NX EX) so the two never share one. It uses the lab's
PostgreSQL database ``apex`` (rows with the test's own task ids) and the lab certificate.
"""
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[3]
LAB_PY_DIR = ROOT / "tests" / "lab"
if str(LAB_PY_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_PY_DIR))

from twin.testing import (  # noqa: E402  pylint: disable=wrong-import-position
    REDIS_CLAIM_KEY, Proc, Twin, claim_redis_db, clear_apex_keys, wait_for)

ADMIN_TOKEN = "apex-ops-private-twin-token"


class PrivateTwin:
    """``with PrivateTwin(lab, tmp_path, "name", worker=True) as t:`` -> t.url, t.redis, t.set_state(...)."""

    def __init__(self, lab, tmp, name, worker=False, **env_over):
        self.lab, self.tmp, self.name, self.want_worker = lab, Path(tmp), name, worker
        self.env_over = dict((k, str(v)) for k, v in env_over.items())
        self.twin = self.worker = self.redis = self.redis_url = self.redis_db = None

    def __enter__(self):
        self.redis_db, self.redis_url, self.redis = claim_redis_db(self.lab["APEX_REDIS_URL"])
        clear_apex_keys(self.redis)
        env = dict(os.environ)
        env.update(self.lab)
        env.update({
            "PYTHONPATH": os.pathsep.join([str(LAB_PY_DIR), env.get("PYTHONPATH", "")]),
            "APEX_REDIS_URL": self.redis_url, "APEX_ADMIN_TOKEN": ADMIN_TOKEN,
            "APEX_TWIN_STATE_INTERVAL": "0.02", "APEX_TWIN_TASK_RATE": "100", "APEX_TWIN_TASK_SECONDS": "0.01",
            "APEX_TWIN_MAX_ATTEMPTS": "2", "APEX_TWIN_HEARTBEAT_TTL": "2",
        })
        env.pop("APEX_TWIN_WORKER_ID", None)
        env.update(self.env_over)
        self.env = env
        try:
            self.twin = Twin(env, self.tmp, self.name, self.lab["APEX_CA_FILE"]).start()
            if self.want_worker:
                wenv = dict(env, APEX_TWIN_STATE=self.twin.state_path)
                self.worker = Proc(["worker"], wenv, str(self.tmp / ("%s-worker.log" % self.name)))
                wait_for(lambda: "worker started" in self.worker.output() or not self.worker.alive(), 10,
                         what="worker start")
                assert self.worker.alive(), self.worker.output()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def url(self):
        return "https://localhost:%d" % self.twin.port

    def set_state(self, **state):
        self.twin.set_state(**state)

    def request(self, method, path, body=None, admin=False):
        headers = {"Authorization": "Bearer " + ADMIN_TOKEN} if admin else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.twin.request(method, path, body=body, headers=headers)

    def __exit__(self, *exc):
        for proc in (self.worker, self.twin):
            if proc is not None:
                proc.stop()
        if self.redis is not None:
            clear_apex_keys(self.redis)
            if self.redis.get(REDIS_CLAIM_KEY) == str(os.getpid()):
                self.redis.delete(REDIS_CLAIM_KEY)
            self.redis.close()
        return False
