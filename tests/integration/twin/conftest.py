"""Fixtures for the Apex twin's own tests.

They run against the lab's real PostgreSQL and Redis, but isolated from everything else the
lab serves: a scratch database ``apex_twin_test`` (created with the admin DSN, owned by the
application role ``apex``, migrated by ``twin migrate up`` as ``apex``), Redis database 9
(flushed between tests), and twin processes started here on free ports with their own
desired-state files and certificates signed by the lab CA. The lab's own twin is only read
(``/health``, ``/live``) and the lab database is only checked by an idempotent ``migrate up``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB_PY_DIR = ROOT / "tests" / "lab"
if str(LAB_PY_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_PY_DIR))

from twin import certs  # noqa: E402
from twin.testing import (  # noqa: E402
    REDIS_CLAIM_KEY, Proc, Twin, claim_redis_db, clear_apex_keys, dsn_with, pid_alive, wait_for)

SCRATCH_DB = "apex_twin_test_%d" % os.getpid()  # one per pytest session: sessions may overlap


def _drop_stale_scratch_dbs(conn):
    """Scratch databases of pytest sessions that died without cleaning up."""
    for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'apex\\_twin\\_test\\_%'"
                                ).fetchall():
        suffix = name.rsplit("_", 1)[-1]
        if suffix.isdigit() and not pid_alive(int(suffix)):
            conn.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)


@pytest.fixture(scope="session")
def twin_base_env(lab, tmp_path_factory):
    """Environment for twin processes: the lab's PG (scratch db) and Redis (db 9)."""
    import psycopg
    tmp = tmp_path_factory.mktemp("twin")
    admin = lab["APEX_PG_ADMIN_DSN"]
    with psycopg.connect(admin, autocommit=True) as conn:
        _drop_stale_scratch_dbs(conn)
        conn.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % SCRATCH_DB)
        conn.execute("CREATE DATABASE %s OWNER apex" % SCRATCH_DB)
    dummy, redis_url, claim = claim_redis_db(lab["APEX_REDIS_URL"])
    ca_pem = Path(lab["APEX_CA_FILE"]).read_bytes()
    ca_key = Path(lab["APEX_CA_KEY"]).read_bytes()
    cert_pem, key_pem, serial = certs.issue(ca_pem, ca_key)
    cert, key = certs.write_pair(str(tmp), "twin-test", cert_pem, key_pem)
    env = dict(os.environ)
    env.update(lab)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(LAB_PY_DIR), env.get("PYTHONPATH", "")]),
        "APEX_PG_DSN": dsn_with(lab["APEX_PG_DSN"], dbname=SCRATCH_DB),
        "APEX_REDIS_URL": redis_url,
        "APEX_TWIN_CERT": cert, "APEX_TWIN_KEY": key,
        "APEX_ADMIN_TOKEN": "twin-test-admin-token",
        # fast, deterministic workers for tests
        "APEX_TWIN_TASK_RATE": "100", "APEX_TWIN_TASK_SECONDS": "0.01",
        "APEX_TWIN_MAX_ATTEMPTS": "2", "APEX_TWIN_HEARTBEAT_TTL": "2", "APEX_TWIN_STATE_INTERVAL": "0.02",
        "APEX_TWIN_DEBUG": "1",
    })
    env.pop("APEX_TWIN_WORKER_ID", None)
    yield {"env": env, "tmp": tmp, "serial": serial, "ca_pem": ca_pem, "ca_key": ca_key, "admin_dsn": admin}
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % SCRATCH_DB)
    clear_apex_keys(claim)
    claim.delete(REDIS_CLAIM_KEY)
    claim.close()


@pytest.fixture(scope="session")
def migrated(twin_base_env):
    """Run ``migrate up`` on the fresh scratch database once; return its parsed output."""
    proc = subprocess.run([sys.executable, "-m", "twin", "migrate", "up"], env=twin_base_env["env"],
                          cwd=str(ROOT), capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def twin_redis(twin_base_env):
    import redis
    client = redis.Redis.from_url(twin_base_env["env"]["APEX_REDIS_URL"], decode_responses=True)
    clear_apex_keys(client)
    yield client
    clear_apex_keys(client)
    client.close()


@pytest.fixture
def scratch_db(twin_base_env, migrated):
    import psycopg
    conn = psycopg.connect(twin_base_env["env"]["APEX_PG_DSN"], autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def twin(twin_base_env, migrated, lab):
    t = Twin(twin_base_env["env"], twin_base_env["tmp"], "main", lab["APEX_CA_FILE"]).start()
    yield t
    t.stop()


@pytest.fixture
def fresh_twin(twin, twin_redis):
    """The module's twin with default desired state and an empty Redis db."""
    twin.set_state()
    yield twin


@pytest.fixture(scope="module")
def shared_worker(twin_base_env, twin):
    """One worker for a whole module (10 tasks/s per replica x slot; the state decides the rest)."""
    env = dict(twin_base_env["env"], APEX_TWIN_STATE=twin.state_path, APEX_TWIN_TASK_RATE="10")
    proc = Proc(["worker"], env, str(twin_base_env["tmp"] / "worker-shared.log"))
    wait_for(lambda: "worker started" in proc.output() or not proc.alive(), 10, what="worker start")
    assert proc.alive(), proc.output()
    yield proc
    proc.stop()


@pytest.fixture
def start_worker(twin_base_env, twin):
    procs = []

    def _start(name="w", **env_over):
        env = dict(twin_base_env["env"], APEX_TWIN_STATE=twin.state_path)
        env.update({k: str(v) for k, v in env_over.items()})
        proc = Proc(["worker"], env, str(twin_base_env["tmp"] / ("worker-%s-%d.log" % (name, len(procs)))))
        procs.append(proc)
        wait_for(lambda: "worker started" in proc.output() or not proc.alive(), 10, what="worker start")
        assert proc.alive(), proc.output()
        return proc

    yield _start
    for proc in procs:
        proc.stop()


@pytest.fixture
def make_twin(twin_base_env, migrated, lab):
    """Start an extra twin API process: ``make_twin("name", APEX_REDIS_URL=...)``."""
    started = []

    def _make(name, **env_over):
        env = dict(twin_base_env["env"])
        env.update({k: str(v) for k, v in env_over.items()})
        t = Twin(env, twin_base_env["tmp"], name, lab["APEX_CA_FILE"]).start()
        started.append(t)
        return t

    yield _make
    for t in started:
        t.stop()
