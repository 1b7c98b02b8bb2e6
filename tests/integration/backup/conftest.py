"""Fixtures for apex_backup integration tests.

Everything these tests create is their own and is removed afterwards: databases named
``apex_bk_*`` / ``apex_restore_test_*``, S3 keys under a per-session prefix ``itest-backup-<hex>``.
The shared lab database ``apex`` and the shared Redis keys are only read (Redis: own keys under
``apexbk:itest:<hex>:``, deleted afterwards).
"""
import binascii
import json
import os
import subprocess
import sys
import tempfile
import types

import pytest


SCHEMA = """
CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY, description text NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT now(), success boolean NOT NULL, checksum bytea NOT NULL,
    execution_time bigint NOT NULL);
CREATE TABLE agents (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL UNIQUE,
    config jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE tasks (id bigserial PRIMARY KEY, agent_id uuid REFERENCES agents(id), status text NOT NULL,
    payload jsonb, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX tasks_status ON tasks(status);
CREATE TABLE events (id bigserial PRIMARY KEY, task_id bigint REFERENCES tasks(id), kind text, body text,
    created_at timestamptz NOT NULL DEFAULT now());
"""

SEED = """
INSERT INTO _sqlx_migrations VALUES (1, 'init', now(), true, '\\x01', 10), (2, 'events', now(), true, '\\x02', 5);
INSERT INTO agents(name, config) SELECT 'agent-' || g, jsonb_build_object('n', g) FROM generate_series(1, %(agents)s) g;
INSERT INTO tasks(agent_id, status, payload)
    SELECT (SELECT id FROM agents ORDER BY name OFFSET (g %% %(agents)s) LIMIT 1),
           (ARRAY['queued','running','done','failed'])[1 + g %% 4], jsonb_build_object('n', g, 's', md5(g::text))
      FROM generate_series(1, %(tasks)s) g;
INSERT INTO events(task_id, kind, body) SELECT 1 + (g %% %(tasks)s), 'log', repeat(md5(g::text), 2)
      FROM generate_series(1, %(events)s) g;
"""

KEY_TABLES = ("_sqlx_migrations", "agents", "tasks", "events")


def token():
    return binascii.hexlify(os.urandom(4)).decode()


@pytest.fixture(scope="session")
def pg_admin(lab):
    import psycopg

    def connect(dbname="postgres"):
        return psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=dbname, autocommit=True)

    return connect


def create_db(pg_admin, name, tasks=2000, events=6000, agents=20):
    with pg_admin() as conn:
        conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        conn.execute('CREATE DATABASE "%s"' % name)
    with pg_admin(name) as conn:
        conn.execute(SCHEMA)
        conn.execute(SEED % dict(tasks=tasks, events=events, agents=agents))


def drop_db(pg_admin, name):
    with pg_admin() as conn:
        conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def db_exists(pg_admin, name):
    with pg_admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def table_fingerprint(pg_admin, dbname, tables=KEY_TABLES):
    """Row counts and an md5 over the ordered text of every row, per table."""
    out = {}
    with pg_admin(dbname) as conn:
        for table in tables:
            row = conn.execute('SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) '
                               'FROM public."%s" t' % table).fetchone()
            out[table] = {"rows": row[0], "md5": row[1]}
    return out


@pytest.fixture(scope="session")
def session_token():
    return token()


@pytest.fixture(scope="session")
def prefix(session_token):
    return "itest-backup-%s" % session_token


@pytest.fixture(scope="session")
def s3(lab):
    import boto3

    return boto3.client("s3", endpoint_url=lab["AWS_ENDPOINT_URL"], region_name=lab.get("AWS_DEFAULT_REGION", "us-east-1"),
                        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"], aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"])


def s3_keys(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def s3_uploads(s3, bucket, prefix):
    return s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


@pytest.fixture(scope="session", autouse=True)
def cleanup_s3(lab, s3, prefix):
    yield
    bucket = lab["APEX_S3_BUCKET"]
    for upload in s3_uploads(s3, bucket, prefix):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    keys = s3_keys(s3, bucket, prefix)
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})


@pytest.fixture(scope="session")
def source_db(pg_admin, session_token):
    name = "apex_bk_src_%s" % session_token
    create_db(pg_admin, name)
    yield name
    drop_db(pg_admin, name)


@pytest.fixture(scope="session")
def big_db(pg_admin, session_token):
    """Big enough (~100 MB) that pg_dump --compress=9 runs for seconds: time to kill it mid-stream."""
    name = "apex_bk_big_%s" % session_token
    drop_db(pg_admin, name)
    with pg_admin() as conn:
        conn.execute('CREATE DATABASE "%s"' % name)
    with pg_admin(name) as conn:
        conn.execute("CREATE TABLE blob AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
                     "AS body FROM generate_series(1, 900000) g")
    yield name
    drop_db(pg_admin, name)


@pytest.fixture()
def scratch_name(pg_admin):
    """A restore-target name of our own, dropped after the test."""
    names = []

    def make(stem="apex_restore_test"):
        name = "%s_%s" % (stem, token())
        names.append(name)
        return name

    yield make
    for name in names:
        drop_db(pg_admin, name)


@pytest.fixture(scope="session")
def bk(run_module, prefix):
    """run apex_backup with this session's S3 prefix."""

    def _run(check_mode=False, **args):
        args.setdefault("s3_prefix", prefix)
        return run_module("apex_backup", check_mode=check_mode, **args)

    return _run


@pytest.fixture(scope="session")
def start_module(module_process, prefix):
    """Start apex_backup in the background (for kill/interrupt tests): returns (Popen, cleanup)."""

    def _start(**args):
        args.setdefault("s3_prefix", prefix)
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
        handle.close()
        # a process of its own (the tests signal it): the runner's environment, not its server
        proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.apex.ops.plugins.modules.apex_backup",
                                 handle.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=module_process.env, cwd=module_process.cwd)
        return proc, lambda: os.unlink(handle.name)

    return _start


def children_of(pid, name=None):
    """PIDs whose parent is ``pid`` (and whose command name is ``name``), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and (name is None or comm == name):
            found.append(int(entry))
    return found


@pytest.fixture(scope="session")
def helpers(pg_admin, s3, lab):
    """The helper functions above, bound to the lab (tests cannot import conftest directly)."""
    bucket = lab["APEX_S3_BUCKET"]
    return types.SimpleNamespace(
        create_db=lambda name, **kw: create_db(pg_admin, name, **kw),
        drop_db=lambda name: drop_db(pg_admin, name),
        db_exists=lambda name: db_exists(pg_admin, name),
        fingerprint=lambda name, tables=KEY_TABLES: table_fingerprint(pg_admin, name, tables),
        keys=lambda prefix: s3_keys(s3, bucket, prefix),
        uploads=lambda prefix: s3_uploads(s3, bucket, prefix),
        children_of=children_of,
        bucket=bucket,
        token=token,
    )
