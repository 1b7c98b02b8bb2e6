"""apex-migrate: sqlx-compatible _sqlx_migrations rows, idempotence, refusal on drift."""
import hashlib
import json
import shutil
import subprocess
import sys

import psycopg

from pathlib import Path

from twin.migrate import MIGRATIONS_DIR, load_migrations

ROOT = Path(__file__).resolve().parents[3]


def _migrate(env, *args):
    return subprocess.run([sys.executable, "-m", "twin", "migrate"] + list(args), env=env, cwd=str(ROOT),
                          capture_output=True, text=True, check=False, timeout=60)


def test_fresh_database_gets_sqlx_rows(twin_base_env, migrated, scratch_db):
    files = load_migrations()
    assert migrated == {"applied": [m.version for m in files], "changed": True}
    rows = scratch_db.execute("SELECT version, description, success, checksum, execution_time, installed_on "
                              "FROM _sqlx_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in files]
    for row, mig in zip(rows, files):
        with open("%s/%d_%s.sql" % (MIGRATIONS_DIR, mig.version, mig.description.replace(" ", "_")), "rb") as fh:
            assert bytes(row[3]) == hashlib.sha384(fh.read()).digest()
        assert row[1] == mig.description and row[2] is True
        assert row[4] > 0 and row[5] is not None  # nanoseconds, updated after commit (sqlx: -1 first)
    column_types = dict(scratch_db.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '_sqlx_migrations'"
    ).fetchall())
    assert column_types == {"version": "bigint", "description": "text", "installed_on": "timestamp with time zone",
                            "success": "boolean", "checksum": "bytea", "execution_time": "bigint"}
    owners = dict(scratch_db.execute(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall())
    assert {owners[t] for t in ("agents", "tasks", "events", "_sqlx_migrations")} == {"apex"}


def test_second_run_is_a_noop(twin_base_env, migrated, scratch_db):
    before = scratch_db.execute("SELECT version, installed_on FROM _sqlx_migrations ORDER BY 1").fetchall()
    proc = _migrate(twin_base_env["env"], "up")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"applied": [], "changed": False}
    after = scratch_db.execute("SELECT version, installed_on FROM _sqlx_migrations ORDER BY 1").fetchall()
    assert before == after
    status = _migrate(twin_base_env["env"], "status")
    assert status.returncode == 0
    assert {m["state"] for m in json.loads(status.stdout)["migrations"]} == {"applied"}


def test_lab_database_is_migrated_and_idempotent(lab):
    env = dict(twin_env_for_lab(lab))
    proc = _migrate(env, "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["changed"] is False
    with psycopg.connect(lab["APEX_PG_DSN"]) as conn:
        rows = conn.execute("SELECT version, success FROM _sqlx_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in load_migrations()] and all(r[1] for r in rows)


def twin_env_for_lab(lab):
    import os
    env = dict(os.environ)
    env.update(lab)
    env["PYTHONPATH"] = str(ROOT / "tests" / "lab")
    return env


def test_modified_migration_is_refused_and_nothing_changes(twin_base_env, migrated, scratch_db, tmp_path):
    src = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, src)
    target = sorted(src.glob("*.sql"))[1]
    target.write_text(target.read_text() + "\n-- edited after release\n")
    (src / "20990101000001_add_something.sql").write_text("CREATE TABLE twin_should_not_exist (id int);\n")
    proc = _migrate(twin_base_env["env"], "up", "--source", str(src))
    assert proc.returncode == 1
    assert "was previously applied but has been modified" in proc.stdout
    assert scratch_db.execute("SELECT to_regclass('twin_should_not_exist')").fetchone()[0] is None
    assert scratch_db.execute("SELECT count(*) FROM _sqlx_migrations").fetchone()[0] == len(load_migrations())


def test_dirty_migration_is_refused(twin_base_env, migrated, scratch_db):
    scratch_db.execute("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
                       "VALUES (20000101000000, 'half applied', false, '\\x00', -1)")
    try:
        proc = _migrate(twin_base_env["env"], "up")
        assert proc.returncode == 1
        assert "migration 20000101000000 is partially applied" in proc.stdout
    finally:
        scratch_db.execute("DELETE FROM _sqlx_migrations WHERE version = 20000101000000")
