"""``apex-migrate``: apply the Apex schema the way sqlx's migrator does (PostgreSQL).

Behaviour copied from sqlx-core/sqlx-postgres (``Migrator::run``):

* migrations are files ``<VERSION>_<description>.sql`` (description = name with ``_`` → space);
* ``_sqlx_migrations(version BIGINT PK, description TEXT, installed_on TIMESTAMPTZ DEFAULT now(),
  success BOOLEAN, checksum BYTEA, execution_time BIGINT)``; checksum = SHA-384 of the file's
  bytes; execution_time in nanoseconds;
* a session advisory lock ``pg_advisory_lock(0x3d32ad9e * crc32(current_database()))`` so two
  migrators never interleave;
* refuse when a row has ``success = false`` (a "dirty", partially applied migration), when an
  applied migration's checksum differs from the file ("was previously applied but has been
  modified"), or when an applied version has no file ("was previously applied but is missing");
* each pending migration runs in its own transaction together with its
  ``INSERT ... execution_time = -1`` row; after COMMIT, ``execution_time`` is updated.
"""
import hashlib
import os
import re
import time
import zlib

from .common import make_logger, pg_connect, pg_dsn

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
FILENAME_RE = re.compile(r"^(\d+)_(.+)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);
"""


class MigrateError(Exception):
    pass


class Migration:
    def __init__(self, version, description, sql):
        self.version = version
        self.description = description
        self.sql = sql
        self.checksum = hashlib.sha384(sql.encode("utf-8")).digest()

    def __repr__(self):
        return "Migration(%d, %r)" % (self.version, self.description)


def load_migrations(directory=MIGRATIONS_DIR):
    migrations = []
    for name in sorted(os.listdir(directory)):
        match = FILENAME_RE.match(name)
        if not match:
            continue
        with open(os.path.join(directory, name), "rb") as handle:
            sql = handle.read().decode("utf-8")
        migrations.append(Migration(int(match.group(1)), match.group(2).replace("_", " "), sql))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise MigrateError("duplicate migration versions in %s" % directory)
    return migrations


def lock_id(database_name):
    """sqlx: ``0x3d32ad9e * crc32(database_name)`` (fits in i64 without overflow)."""
    return 0x3D32AD9E * (zlib.crc32(database_name.encode("utf-8")) & 0xFFFFFFFF)


def _applied(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT version, description, installed_on, success, checksum, execution_time "
                    "FROM _sqlx_migrations ORDER BY version")
        return {row[0]: row for row in cur.fetchall()}


def status(dsn=None, directory=MIGRATIONS_DIR):
    """List every known migration with ``applied``/``pending``/``dirty``/``modified``/``missing``."""
    migrations = load_migrations(directory)
    with pg_connect(dsn or pg_dsn(), "apex-migrate") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            exists = cur.fetchone()[0]
        applied = _applied(conn) if exists else {}
    rows = []
    by_version = {m.version: m for m in migrations}
    for version in sorted(set(by_version) | set(applied)):
        mig, row = by_version.get(version), applied.get(version)
        if row is None:
            state = "pending"
        elif not row[3]:
            state = "dirty"
        elif mig is None:
            state = "missing"
        elif bytes(row[4]) != mig.checksum:
            state = "modified"
        else:
            state = "applied"
        rows.append({"version": version, "description": (mig.description if mig else row[1]),
                     "state": state, "installed_on": row[2].isoformat() if row else None,
                     "execution_time_ns": row[5] if row else None})
    return rows


def up(dsn=None, directory=MIGRATIONS_DIR, log=None):
    """Apply pending migrations; returns the list of versions applied (empty: nothing to do)."""
    log = log or make_logger("apex-migrate")
    migrations = load_migrations(directory)
    applied_now = []
    with pg_connect(dsn or pg_dsn(), "apex-migrate") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            key = lock_id(cur.fetchone()[0])
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            with conn.cursor() as cur:
                cur.execute(CREATE_TABLE)
                cur.execute("SELECT version FROM _sqlx_migrations WHERE success = false "
                            "ORDER BY version LIMIT 1")
                dirty = cur.fetchone()
            if dirty:
                raise MigrateError("migration %d is partially applied; fix and remove row from "
                                   "`_sqlx_migrations` table" % dirty[0])
            applied = _applied(conn)
            known = {m.version for m in migrations}
            for version in sorted(applied):
                if version not in known:
                    raise MigrateError("migration %d was previously applied but is missing in the "
                                       "resolved migrations" % version)
            for mig in migrations:
                row = applied.get(mig.version)
                if row is not None:
                    if bytes(row[4]) != mig.checksum:
                        raise MigrateError("migration %d was previously applied but has been "
                                           "modified" % mig.version)
                    continue
                start = time.perf_counter_ns()
                with conn.transaction():
                    with conn.cursor() as cur:
                        cur.execute(mig.sql)
                        cur.execute(
                            "INSERT INTO _sqlx_migrations "
                            "(version, description, success, checksum, execution_time) "
                            "VALUES (%s, %s, TRUE, %s, -1)",
                            (mig.version, mig.description, mig.checksum))
                elapsed = time.perf_counter_ns() - start
                with conn.cursor() as cur:
                    cur.execute("UPDATE _sqlx_migrations SET execution_time = %s WHERE version = %s",
                                (elapsed, mig.version))
                applied_now.append(mig.version)
                log("migration applied", version=mig.version, description=mig.description,
                    execution_time_ns=elapsed)
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return applied_now


def main(argv):
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="apex-migrate", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "status"])
    parser.add_argument("--dsn", help="libpq DSN (default $APEX_PG_DSN)")
    parser.add_argument("--source", default=MIGRATIONS_DIR, help="migrations directory")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            done = up(args.dsn, args.source)
            print(json.dumps({"applied": done, "changed": bool(done)}))
        else:
            rows = status(args.dsn, args.source)
            print(json.dumps({"migrations": rows}, indent=2))
            if any(r["state"] != "applied" for r in rows):
                return 3
    except MigrateError as exc:
        print("apex-migrate: error: %s" % exc)
        return 1
    return 0
