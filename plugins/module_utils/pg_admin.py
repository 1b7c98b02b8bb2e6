# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Database administration for backups and restores: the maintenance database, CREATE/DROP
DATABASE, sessions, tables and their exact row counts.

Administrative statements run from the maintenance database (``maintenance_db``), never from
the database acted on (PostgreSQL cannot drop the database a session is connected to).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib

from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import BackupError


def _sql():
    from psycopg import sql  # lazily: REQUIREMENT checked by the module
    return sql


def qualified(schema, table):
    return "%s.%s" % (schema, table)


def split_qualified(name):
    if "." in name:
        schema, table = name.split(".", 1)
    else:
        schema, table = "public", name
    return schema, table


def list_tables(cur, tables=None):
    """``schema.table`` names to count: the given ones (checked), or every user table.

    Default: ordinary and partitioned tables outside system schemas, not partitions (their
    parent's count includes them) and not owned by an extension.
    """
    cur.execute("""
        SELECT n.nspname, c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1, 2""")
    available = [qualified(s, t) for s, t in cur.fetchall()]
    if not tables:
        return available
    wanted = [qualified(*split_qualified(t)) for t in tables]
    missing = [t for t in wanted if t not in available]
    if missing:
        raise BackupError("tables to count do not exist: %s" % ", ".join(missing), available_tables=available)
    return wanted


def count_rows(cur, tables):
    sql = _sql()
    counts = {}
    for name in tables:
        schema, table = split_qualified(name)
        cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        counts[name] = cur.fetchone()[0]
    return counts


def server_facts(cur):
    cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int")
    version, num = cur.fetchone()
    return {"server_version": version, "server_version_num": num}


DEFAULT_MAINTENANCE_DB = "postgres"


def maintenance_db(params):
    """The database administrative statements (CREATE/DROP DATABASE, pg_stat_activity) run from.

    Never ``login_db``: PostgreSQL refuses ``DROP DATABASE`` of the database the session is
    connected to, and ``login_db`` is usually the production database a restore replaces.
    """
    return params.get("maintenance_db") or DEFAULT_MAINTENANCE_DB


PROTECTED_DATABASES = ("postgres", "template0", "template1")


def protected_target_refusal(params, target):
    """Why ``target`` may never be restored into (or dropped), or None.

    The maintenance database (the module's own foothold for CREATE/DROP DATABASE) and the
    databases PostgreSQL itself needs (``postgres``, ``template0``, ``template1``) are refused
    before anything changes, whatever the confirmation says.
    """
    maintenance = maintenance_db(params)
    if target == maintenance:
        return ("refusing to restore into %s: it is the maintenance database (maintenance_db) the module works from; "
                "nothing was changed. Restore into the application's database" % target)
    if target in PROTECTED_DATABASES:
        return ("refusing to restore into %s: %s is a PostgreSQL system database (postgres, template0 and template1 "
                "are never restore targets); nothing was changed" % (target, target))
    return None


def admin_connect(params, target=None):
    """A connection to the maintenance database, refusing when it is the database acted on."""
    dbname = maintenance_db(params)
    if target is not None and dbname == target:
        raise BackupError("maintenance_db %s is the database to create/drop: set maintenance_db to another database "
                          "(postgres or template1)" % dbname, maintenance_db=dbname)
    return pg.connect(params, dbname=dbname)


def database_exists(params, name):
    with contextlib.closing(admin_connect(params)) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def database_owner(params, name):
    """The owner (``datdba``) of database ``name``, or None when it does not exist."""
    with contextlib.closing(admin_connect(params)) as conn:
        row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row[0] if row else None


def create_database(params, name, owner=None, template="template0"):
    sql = _sql()
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    if owner:
        stmt = stmt + sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    with contextlib.closing(admin_connect(params, name)) as conn:
        conn.execute(stmt)


def drop_database(params, name, force=False):
    sql = _sql()
    stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    if force:
        stmt = stmt + sql.SQL(" WITH (FORCE)")
    with contextlib.closing(admin_connect(params, name)) as conn:
        conn.execute(stmt)


def database_sessions(params, name):
    with contextlib.closing(admin_connect(params)) as conn:
        rows = conn.execute("""SELECT pid, usename, application_name, state FROM pg_stat_activity
                                WHERE datname = %s AND pid <> pg_backend_pid()""", (name,)).fetchall()
    return [{"pid": r[0], "user": r[1], "application_name": r[2], "state": r[3]} for r in rows]


def count_in_database(params, dbname, tables):
    with contextlib.closing(pg.connect(params, dbname=dbname)) as conn:
        with conn.cursor() as cur:
            present = set(list_tables(cur))
            counts = count_rows(cur, [t for t in tables if t in present])
    for table in tables:
        counts.setdefault(table, None)  # a table of the manifest that is not there
    return counts
