# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL health facts for apex_db_maint, gathered in (at most) two round trips.

The first statement builds one JSON document on the server: server identity, connections
against ``max_connections`` (by database, application and state), idle and long-running
backends, database and table sizes, dead tuples with the last (auto)vacuum/analyze, and
replication state for both roles (``pg_stat_replication`` on a primary; receive/replay LSN
and replay delay on a standby). Objects that may not exist (``_sqlx_migrations``,
``pg_stat_statements``) cannot be named in a static statement, so the first statement also
says whether they exist, and a second one reads them only when they do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.redaction import redact, redact_rows

# Columns describing one backend, shared by the facts and by cancel/terminate.
BACKEND_COLUMNS = """
    a.pid, a.datname, a.usename, a.application_name, host(a.client_addr) AS client_addr,
    a.backend_type, a.state, a.wait_event_type, a.wait_event,
    a.backend_start, a.xact_start, a.query_start, a.state_change,
    round(EXTRACT(EPOCH FROM now() - a.query_start)::numeric, 3)::float8 AS query_seconds,
    round(EXTRACT(EPOCH FROM now() - a.state_change)::numeric, 3)::float8 AS state_seconds,
    left(a.query, %(query_max_length)s) AS query
"""

FACTS_SQL = """
WITH act AS (
  SELECT """ + BACKEND_COLUMNS + """
  FROM pg_stat_activity a
  WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
),
tbl AS (
  SELECT s.schemaname, s.relname,
         pg_total_relation_size(s.relid) AS total_bytes,
         pg_relation_size(s.relid) AS table_bytes,
         s.n_live_tup, s.n_dead_tup,
         CASE WHEN s.n_live_tup + s.n_dead_tup > 0
              THEN round(100.0 * s.n_dead_tup / (s.n_live_tup + s.n_dead_tup), 2)::float8 ELSE 0 END AS dead_percent,
         s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
         s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
         s.n_mod_since_analyze
  FROM pg_stat_user_tables s
)
SELECT json_build_object(
  'server', json_build_object(
     'version', current_setting('server_version'),
     'version_num', current_setting('server_version_num')::int,
     'in_recovery', pg_is_in_recovery(),
     'database', current_database(),
     'database_size_bytes', pg_database_size(current_database()),
     'database_size', pg_size_pretty(pg_database_size(current_database())),
     'started_at', pg_postmaster_start_time(),
     'now', now()),
  'connections', json_build_object(
     'max_connections', current_setting('max_connections')::int,
     'superuser_reserved_connections', current_setting('superuser_reserved_connections')::int,
     'total', (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
     'database', (SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = 'client backend' AND datname = current_database()),
     'groups', (SELECT coalesce(json_agg(g ORDER BY g.count DESC, g.application_name), '[]'::json)
                FROM (SELECT datname, application_name, coalesce(state, 'unknown') AS state, count(*) AS count
                      FROM pg_stat_activity WHERE backend_type = 'client backend'
                      GROUP BY 1, 2, 3) g)),
  'idle', (SELECT coalesce(json_agg(act ORDER BY state_seconds DESC), '[]'::json) FROM act
           WHERE state = 'idle' AND state_seconds > %(idle_seconds)s),
  'idle_in_transaction', (SELECT coalesce(json_agg(act ORDER BY state_seconds DESC), '[]'::json) FROM act
           WHERE state LIKE 'idle in transaction%%' AND state_seconds > %(idle_seconds)s),
  'long_running', (SELECT coalesce(json_agg(act ORDER BY query_seconds DESC), '[]'::json) FROM act
           WHERE state = 'active' AND query_seconds > %(running_seconds)s),
  'tables', (SELECT coalesce(json_agg(t ORDER BY t.total_bytes DESC), '[]'::json)
             FROM (SELECT * FROM tbl ORDER BY total_bytes DESC LIMIT %(top_tables)s) t),
  'dead_tuples', (SELECT coalesce(json_agg(t ORDER BY t.n_dead_tup DESC), '[]'::json)
             FROM (SELECT * FROM tbl WHERE n_dead_tup > 0 ORDER BY n_dead_tup DESC LIMIT %(top_tables)s) t),
  'replication', json_build_object(
     'role', CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END,
     'current_lsn', CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
     'replicas', (SELECT coalesce(json_agg(json_build_object(
          'application_name', r.application_name, 'client_addr', host(r.client_addr),
          'state', r.state, 'sync_state', r.sync_state,
          'sent_lsn', r.sent_lsn::text, 'write_lsn', r.write_lsn::text,
          'flush_lsn', r.flush_lsn::text, 'replay_lsn', r.replay_lsn::text,
          'replay_lag_bytes', CASE WHEN pg_is_in_recovery() THEN NULL
                                   ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint END,
          'write_lag_seconds', EXTRACT(EPOCH FROM r.write_lag)::float8,
          'flush_lag_seconds', EXTRACT(EPOCH FROM r.flush_lag)::float8,
          'replay_lag_seconds', coalesce(EXTRACT(EPOCH FROM r.replay_lag)::float8, 0),
          'reply_time', r.reply_time) ORDER BY r.application_name), '[]'::json)
        FROM pg_stat_replication r),
     'slots', (SELECT coalesce(json_agg(json_build_object(
          'slot_name', s.slot_name, 'slot_type', s.slot_type, 'active', s.active,
          'wal_status', s.wal_status,
          'retained_bytes', CASE WHEN pg_is_in_recovery() OR s.restart_lsn IS NULL THEN NULL
                                 ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint END)
          ORDER BY s.slot_name), '[]'::json) FROM pg_replication_slots s),
     'standby', CASE WHEN pg_is_in_recovery() THEN json_build_object(
          'receive_lsn', pg_last_wal_receive_lsn()::text,
          'replay_lsn', pg_last_wal_replay_lsn()::text,
          'replay_lag_bytes', pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint,
          'last_replay_at', pg_last_xact_replay_timestamp(),
          'replay_delay_seconds', CASE
               WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
               ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END,
          'replay_paused', pg_is_wal_replay_paused(),
          'wal_receiver', (SELECT json_build_object(
               'status', w.status, 'sender_host', w.sender_host, 'sender_port', w.sender_port,
               'slot_name', w.slot_name, 'last_msg_receipt_time', w.last_msg_receipt_time,
               'latest_end_lsn', w.latest_end_lsn::text) FROM pg_stat_wal_receiver w LIMIT 1))
        ELSE NULL END),
  'has_sqlx_migrations', to_regclass('_sqlx_migrations') IS NOT NULL,
  'has_pg_stat_statements', EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
)
"""

MIGRATIONS_SQL = """
SELECT json_build_object(
  'count', count(*),
  'latest_version', max(version),
  'latest', (SELECT json_build_object('version', m.version, 'description', m.description,
                                      'installed_on', m.installed_on, 'success', m.success)
             FROM _sqlx_migrations m ORDER BY m.version DESC LIMIT 1),
  'failed', coalesce(json_agg(json_build_object('version', version, 'description', description))
                     FILTER (WHERE NOT success), '[]'::json))
FROM _sqlx_migrations
"""

STATEMENTS_SORT = ("mean_exec_time", "total_exec_time", "calls", "rows")

STATEMENTS_SQL = """
SELECT coalesce(json_agg(s), '[]'::json) FROM (
  SELECT queryid::text AS queryid, calls,
         round(total_exec_time::numeric, 3)::float8 AS total_exec_time_ms,
         round(mean_exec_time::numeric, 3)::float8 AS mean_exec_time_ms,
         rows, left(query, %(query_max_length)s) AS query
  FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  ORDER BY {sort} DESC LIMIT %(top_statements)s) s
"""


def percent(part, whole):
    if not whole:
        return None
    return round(100.0 * part / whole, 1)


def read_migrations(conn, exists=None):
    """``_sqlx_migrations`` summarised: present, count, latest_version, latest, failed (version, description).

    ``exists`` when the caller already knows whether the table exists (the facts statement says)."""
    if exists is None:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            exists = cur.fetchone()[0]
    if not exists:
        return dict(present=False, count=0, latest_version=None, latest=None, failed=[])
    with conn.cursor() as cur:
        cur.execute(MIGRATIONS_SQL)
        return dict(cur.fetchone()[0], present=True)


def migration_problems(migrations, expected_version=None):
    """What is wrong with ``_sqlx_migrations`` (``read_migrations``) after a migration, one line each;
    empty when every row succeeded and the latest version is the one expected (when given).
    Raises ``ValueError`` for an expected version that is not a number."""
    if expected_version not in (None, ""):
        try:
            expected_version = int(expected_version)
        except (TypeError, ValueError):
            raise ValueError("expected_version must be a migration version number, not %r" % (expected_version,))
    else:
        expected_version = None
    if not migrations.get("present"):
        return ["_sqlx_migrations does not exist: no migration has run against this database"]
    problems = []
    for row in migrations.get("failed") or []:
        problems.append("migration %s (%s) is recorded as failed (success = false): the migrator refuses to run "
                        "until it is fixed and its row removed" % (row.get("version"), row.get("description")))
    if not migrations.get("count"):
        problems.append("_sqlx_migrations is empty")
    latest = migrations.get("latest_version")
    if expected_version is not None and (latest is None or int(latest) != expected_version):
        problems.append("latest migration is %s, expected %s" % (latest, expected_version))
    return problems


# What the on-call engineer does when the slowest statements cannot be listed (ApexHighLatency).
STATEMENTS_HOW_TO = (
    "pg_stat_statements is not enabled in this database: add it to shared_preload_libraries "
    "(ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', keeping any library already "
    "listed; on RDS, the DB parameter group), restart PostgreSQL, then run CREATE EXTENSION "
    "pg_stat_statements in the application database as a superuser (RDS: the rds_superuser role)")


def gather(conn, idle_seconds, running_seconds, top_tables=10, top_statements=10,
           query_max_length=200, statements_sort="mean_exec_time"):
    """Return the facts dict (see apex_db_maint RETURN)."""
    from psycopg import sql

    params = dict(idle_seconds=float(idle_seconds), running_seconds=float(running_seconds),
                  top_tables=int(top_tables), top_statements=int(top_statements),
                  query_max_length=int(query_max_length))
    with conn.cursor() as cur:
        cur.execute(FACTS_SQL, params)
        facts = cur.fetchone()[0]
    for key in ("idle", "idle_in_transaction", "long_running"):
        redact_rows(facts.get(key))
    has_migrations = facts.pop("has_sqlx_migrations")
    has_statements = facts.pop("has_pg_stat_statements")

    conns = facts["connections"]
    conns["percent"] = percent(conns["total"], conns["max_connections"])
    conns["available"] = conns["max_connections"] - conns["superuser_reserved_connections"] - conns["total"]
    by_app, by_state = {}, {}
    for group in conns["groups"]:
        app = group["application_name"] or "(none)"
        by_app[app] = by_app.get(app, 0) + group["count"]
        by_state[group["state"]] = by_state.get(group["state"], 0) + group["count"]
    conns["by_application"] = by_app
    conns["by_state"] = by_state

    facts["migrations"] = read_migrations(conn, has_migrations)

    facts["statements"] = dict(available=False, sort=statements_sort, top=[])
    if not has_statements:
        facts["statements"]["how_to_enable"] = STATEMENTS_HOW_TO
    if has_statements and int(top_statements) > 0:
        if statements_sort not in STATEMENTS_SORT:
            raise ValueError("statements_sort must be one of %s" % ", ".join(STATEMENTS_SORT))
        query = sql.SQL(STATEMENTS_SQL).format(sort=sql.Identifier(statements_sort))
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                facts["statements"].update(available=True, top=redact_rows(cur.fetchone()[0]))
        except Exception as exc:  # e.g. extension created but library not preloaded
            facts["statements"]["error"] = str(exc).strip()
            facts["statements"]["how_to_enable"] = STATEMENTS_HOW_TO
    repl = facts["replication"]
    repl["streaming_replicas"] = len([r for r in repl["replicas"] if r["state"] == "streaming"])
    lags = [r["replay_lag_bytes"] for r in repl["replicas"] if r.get("replay_lag_bytes") is not None]
    repl["max_replay_lag_bytes"] = max(lags) if lags else None
    secs = [r["replay_lag_seconds"] for r in repl["replicas"] if r.get("replay_lag_seconds") is not None]
    repl["max_replay_lag_seconds"] = max(secs) if secs else None
    return facts


# --------------------------------------------------------------------------- task statistics

TASK_STATS_SQL = """
SELECT json_build_object(
  'by_status', (SELECT coalesce(json_object_agg(status, n), '{}'::json) FROM
                (SELECT status, count(*) AS n FROM tasks
                  WHERE created_at > now() - make_interval(secs => %(window)s) GROUP BY status) s),
  'completed_in_rate_window', (SELECT count(*) FROM tasks
                               WHERE status = 'completed' AND completed_at > now() - make_interval(secs => %(rate)s)))
"""


FAILED_TASKS_SQL = """
SELECT coalesce(json_agg(t), '[]'::json) FROM (
  SELECT id, task_id, status, error_message, provider, attempts, worker, created_at
    FROM tasks
   WHERE status = 'failed' AND created_at > now() - make_interval(secs => %(window)s)
   ORDER BY created_at DESC LIMIT %(limit)s) t
"""


def task_stats(conn, window_seconds=3600.0, rate_window_seconds=300.0, failed_limit=0):
    """Apex task counts by status created in the window, and completions per minute over the rate window.

    The runbook's ApexTaskQueueBacklog diagnosis (it ran this with psql): one statement on the
    ``tasks`` table, bounded by the connection's statement and lock timeouts.
    """
    window, rate = float(window_seconds), float(rate_window_seconds)
    if window <= 0 or rate <= 0:
        raise ValueError("task_window and rate_window must be longer than 0")
    with conn.cursor() as cur:
        cur.execute(TASK_STATS_SQL, dict(window=window, rate=rate))
        stats = cur.fetchone()[0]
    completed = stats["completed_in_rate_window"]
    failed = []
    if int(failed_limit) > 0:  # the runbook's ApexHighTaskFailureRate query, plus provider and attempts
        with conn.cursor() as cur:
            cur.execute(FAILED_TASKS_SQL, dict(window=window, limit=int(failed_limit)))
            failed = cur.fetchone()[0]
        for row in failed:
            row["error_message"] = redact(row.get("error_message"))
    return dict(
        failed=failed,
        window_seconds=window,
        rate_window_seconds=rate,
        by_status=stats["by_status"],
        total=sum(stats["by_status"].values()),
        completed_in_rate_window=completed,
        completed_per_minute=round(completed / (rate / 60.0), 1),
    )
