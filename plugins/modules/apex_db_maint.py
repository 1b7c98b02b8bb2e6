#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: apex_db_maint
short_description: Health facts and maintenance of the Apex PostgreSQL database
version_added: "0.1.0"
description:
  - Gathers health facts of a PostgreSQL server (primary or standby) in two round trips.
  - Runs C(VACUUM)/C(ANALYZE) on chosen tables, validated against the catalog first.
  - Cancels queries or terminates connections by pid or by filter. It never touches its own
    backend, walsenders, autovacuum or other non-client backends.
  - Changes server parameters with C(ALTER SYSTEM), reloads the configuration and reports
    which parameters wait for a restart.
  - Reads the Apex task statistics from the C(tasks) table (counts by status, completions per minute)
    for the queue backlog diagnosis.
  - Reads C(_sqlx_migrations) (the migrator's record) and says what is wrong with it - a failed row, or a latest
    version other than the one expected.
  - Every statement is bounded by O(statement_timeout) and O(lock_timeout); when one fires, the
    module fails naming the sessions that blocked it.
  - Identifiers are composed with C(psycopg.sql), never by string formatting.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.postgres
options:
  state:
    description:
      - V(facts) reads health facts and changes nothing.
      - V(vacuum) runs C(VACUUM) (with C(ANALYZE) unless O(analyze=false)) on O(tables).
      - V(analyze) runs C(ANALYZE) on O(tables).
      - V(cancel) runs C(pg_cancel_backend) on active backends matching O(pids) and O(filter).
      - V(terminate) runs C(pg_terminate_backend) on backends matching O(pids) and O(filter).
      - V(settings) applies O(settings) and O(reset) with C(ALTER SYSTEM) and reloads.
      - V(task_stats) reads Apex task counts by status (tasks created within O(task_window)) and
        completions per minute (over O(rate_window)) from the C(tasks) table; changes nothing.
      - V(migrations) reads C(_sqlx_migrations) only (one statement) and lists its RV(problems); changes nothing
        and does not fail on a problem (the caller decides).
    type: str
    choices: [facts, vacuum, analyze, cancel, terminate, settings, task_stats, migrations]
    default: facts
  tables:
    description:
      - Tables for O(state=vacuum) or O(state=analyze), as V(table) or V(schema.table).
      - Every table must exist, otherwise the module fails listing the missing ones and runs nothing.
    type: list
    elements: str
    default: []
  analyze:
    description:
      - With O(state=vacuum), run C(VACUUM (ANALYZE)) so planner statistics are refreshed too.
    type: bool
    default: true
  full:
    description:
      - With O(state=vacuum), run C(VACUUM FULL). It takes an exclusive lock and rewrites the table.
    type: bool
    default: false
  pids:
    description:
      - Backend pids for O(state=cancel) or O(state=terminate). Combined with O(filter) (all must match).
    type: list
    elements: int
    default: []
  filter:
    description:
      - Selects backends for O(state=cancel) or O(state=terminate). Criteria are combined with AND.
      - Without O(pids), at least one criterion other than O(filter.datname) is required;
        a request that would match every connection is refused.
      - "The safety rule of every cancel and terminate (module_utils C(pg_signal)): only client backends (never
        walsenders, autovacuum or background workers), never the module's own session, only in the databases of
        O(filter.datname) (default: the database the module connects to, O(login_db)), and a superuser's session only
        when it is selected by name (O(pids), O(filter.usename) or O(filter.application_name))."
      - Cancel only considers backends running a statement.
    type: dict
    default: {}
    suboptions:
      application_name:
        description: Backends whose C(application_name) is one of these.
        type: list
        elements: str
      state:
        description: Backends whose C(state) is one of these (V(idle), V(active), V(idle in transaction)...).
        type: list
        elements: str
      usename:
        description: Backends of these roles.
        type: list
        elements: str
      datname:
        description:
          - Backends connected to these databases. Default is the database the module connects to (O(login_db)).
        type: list
        elements: str
      all_databases:
        description:
          - Backends of every database (instead of O(login_db) or O(filter.datname)).
        type: bool
        default: false
      idle_longer_than:
        description:
          - Backends idle (including idle in transaction) for longer than this, measured from C(state_change).
          - A duration like V(30s), V(10m), V(1h30m), or seconds.
        type: raw
      running_longer_than:
        description:
          - Backends running their current statement for longer than this (C(state=active), from C(query_start)).
          - A duration like V(30s), V(5m), or seconds.
        type: raw
  wait_timeout:
    description:
      - After signalling, how long to observe C(pg_stat_activity) until terminated backends are gone
        (or cancelled statements ended). V(0) does not wait. A duration or seconds.
    type: raw
    default: 10s
  settings:
    description:
      - Parameters for O(state=settings), name to value. Names are validated against C(pg_settings);
        values are compared with the effective value (units understood, e.g. V(128MB)) so an unchanged
        value is not rewritten.
    type: dict
    default: {}
  reset:
    description:
      - Parameters for O(state=settings) to remove from C(postgresql.auto.conf) (C(ALTER SYSTEM RESET)).
    type: list
    elements: str
    default: []
  idle_longer_than:
    description:
      - For O(state=facts), report connections idle (or idle in transaction) for longer than this.
    type: raw
    default: 10m
  running_longer_than:
    description:
      - For O(state=facts), report statements running for longer than this.
    type: raw
    default: 5m
  top_tables:
    description:
      - For O(state=facts), how many tables to list by size and by dead tuples.
    type: int
    default: 10
  top_statements:
    description:
      - For O(state=facts), how many C(pg_stat_statements) entries to list (when the extension exists).
    type: int
    default: 10
  statements_sort:
    description:
      - Order of the C(pg_stat_statements) list.
    type: str
    choices: [mean_exec_time, total_exec_time, calls, rows]
    default: mean_exec_time
  query_max_length:
    description:
      - Query texts in results are truncated to this many characters.
    type: int
    default: 200
  task_window:
    description:
      - For O(state=task_stats), count tasks created within this duration, by status.
    type: raw
    default: 1h
  rate_window:
    description:
      - For O(state=task_stats), the completion rate is measured over this duration.
    type: raw
    default: 5m
  failed_limit:
    description:
      - For O(state=task_stats), also list the newest this many C(failed) tasks created within O(task_window) (the
        runbook's ApexHighTaskFailureRate query - id, task_id, error_message, provider, attempts, worker, created_at;
        error texts redacted). 0 lists none.
    type: int
    default: 0
  expected_version:
    description:
      - For O(state=migrations), the version the latest row of C(_sqlx_migrations) must have (the newest
        migration of the release); another latest version is a problem. Unset checks only that every row succeeded.
    type: str
notes:
  - Check mode is supported for every state. It lists exactly the backends, tables or
    parameters that would be touched.
  - Runs on the controller or any host that reaches the database; needs C(psycopg) 3.
  - C(VACUUM) of a large table may need more than the default O(statement_timeout) of 5 minutes;
    set it (the C(db_vacuum) role uses 1 hour). A cancelled C(VACUUM) leaves the table as it was.
  - The role used must be allowed to signal the backends (superuser or C(pg_signal_backend))
    and to run C(ALTER SYSTEM) (superuser, or a C(GRANT ALTER SYSTEM) on PostgreSQL 15+).
"""

EXAMPLES = r"""
- name: Health facts of the primary
  apex.ops.apex_db_maint:
    state: facts
    idle_longer_than: 10m
    running_longer_than: 5m
  register: db

- name: Replication state of the standby (secondary region)
  apex.ops.apex_db_maint:
    login_port: "{{ apex_pg_standby_port }}"
  register: standby

- name: VACUUM ANALYZE the busy tables
  apex.ops.apex_db_maint:
    state: vacuum
    tables: [tasks, agents, events]

- name: Terminate connections idle for more than 10 minutes (ApexDatabaseConnectionsHigh)
  apex.ops.apex_db_maint:
    state: terminate
    filter:
      datname: apex
      idle_longer_than: 10m

- name: Cancel statements of the worker running longer than 5 minutes
  apex.ops.apex_db_maint:
    state: cancel
    filter:
      application_name: apex-worker
      running_longer_than: 5m

- name: Task counts by status (last hour) and completions per minute (last 5 minutes)
  apex.ops.apex_db_maint:
    state: task_stats
    lock_timeout: 5s
  register: task_stats

- name: The migrator's record after a migration, with the version the release expects
  apex.ops.apex_db_maint:
    state: migrations
    expected_version: "20240101000003"
  register: migrations

- name: Raise max_connections (needs a restart, reported as pending_restart)
  apex.ops.apex_db_maint:
    state: settings
    settings:
      max_connections: 200
  register: pg_settings
"""

RETURN = r"""
server:
  description: Server identity and size (O(state=facts)).
  returned: state is facts
  type: dict
  sample: {version: "15.8", in_recovery: false, database: apex, database_size_bytes: 8011311, database_size: "7823 kB"}
connections:
  description:
    - Client connections against C(max_connections), C(percent) of it, and counts by application, by
      state, and grouped by database/application/state.
  returned: state is facts
  type: dict
  sample: {total: 12, max_connections: 100, percent: 12.0, by_application: {apex-api: 8}, by_state: {idle: 9}}
idle:
  description: Backends idle for longer than O(idle_longer_than) (pid, application, client, seconds, last query).
  returned: state is facts
  type: list
  elements: dict
idle_in_transaction:
  description: Backends idle in transaction for longer than O(idle_longer_than).
  returned: state is facts
  type: list
  elements: dict
long_running:
  description: Statements running longer than O(running_longer_than), with C(query_seconds) and the query (truncated).
  returned: state is facts
  type: list
  elements: dict
tables:
  description: Largest tables (total bytes) with live/dead tuples and last (auto)vacuum/(auto)analyze.
  returned: state is facts
  type: list
  elements: dict
dead_tuples:
  description: Tables with the most dead tuples.
  returned: state is facts
  type: list
  elements: dict
migrations:
  description: C(_sqlx_migrations) status (present, count, latest_version, latest, failed).
  returned: state is facts or migrations
  type: dict
  sample: {present: true, count: 3, latest_version: 20240101000003, failed: [],
           latest: {version: 20240101000003, description: create events, success: true}}
problems:
  description:
    - For O(state=migrations), what is wrong with C(_sqlx_migrations), one line each (table missing or empty, a row
      with C(success = false), the latest version not O(expected_version)); empty when all is well.
  returned: state is migrations
  type: list
  elements: str
replication:
  description:
    - C(role) (primary or standby); on a primary, C(replicas) from C(pg_stat_replication) with replay lag
      in bytes and seconds; on a standby, C(standby) with receive/replay LSN and replay delay.
  returned: state is facts
  type: dict
statements:
  description:
    - Top C(pg_stat_statements) entries when the extension exists in the database (C(available), C(sort), C(top)).
    - When it does not (or cannot be read, C(error)), C(how_to_enable) says how to enable it.
  returned: state is facts
  type: dict
tables_done:
  description: Per table, the statement run (or that would run), statistics before and after, seconds.
  returned: state is vacuum or analyze
  type: list
  elements: dict
backends:
  description:
    - Backends signalled (or, in check mode, that would be), with the query they were running and
      C(signalled). C(still_present) lists pids still running when O(wait_timeout) expired.
  returned: state is cancel or terminate
  type: list
  elements: dict
skipped:
  description: Requested O(pids) that were not signalled, with the reason.
  returned: state is cancel or terminate
  type: list
  elements: dict
still_present:
  description: Pids signalled that had not gone (terminate) or not finished their statement (cancel) within O(wait_timeout).
  returned: state is cancel or terminate
  type: list
  elements: int
parameters:
  description: Per parameter, before/after, C(changed), C(context) and C(pending_restart).
  returned: state is settings
  type: list
  elements: dict
pending_restart:
  description: Names of parameters that wait for a server restart.
  returned: state is settings
  type: list
  elements: str
task_stats:
  description:
    - Tasks created within O(task_window) by status (C(by_status), C(total)), tasks completed within
      O(rate_window) (C(completed_in_rate_window)) and C(completed_per_minute); C(failed) lists the newest
      O(failed_limit) failed tasks.
  returned: state is task_stats
  type: dict
  sample: {window_seconds: 3600.0, rate_window_seconds: 300.0, by_status: {completed: 120, queued: 4},
           total: 124, completed_in_rate_window: 10, completed_per_minute: 2.0,
           failed: [{id: 42, task_id: t-42, status: failed, error_message: provider openai returned an error,
                     provider: openai, attempts: 3, worker: w-1, created_at: "2026-12-02T16:00:00+00:00"}]}
last_state:
  description:
    - On failure, what was observed. When O(statement_timeout) or O(lock_timeout) fired, C(timeout),
      C(limit_seconds), C(statement), C(waiting_for) (lock mode and relation) and C(blocking_sessions)
      (pid, user, application_name, client_addr, state, xact_start, query_start, held_modes, query redacted);
      for vacuum/analyze also C(tables_done) and C(tables_not_done); for unknown tables C(missing), C(invalid)
      and C(found).
  returned: failure
  type: dict
"""

from ansible_collections.apex.ops.plugins.module_utils import postgres
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import POSTGRES_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

FILTER_SPEC = dict(
    application_name=dict(type="list", elements="str"),
    state=dict(type="list", elements="str"),
    usename=dict(type="list", elements="str"),
    datname=dict(type="list", elements="str"),
    all_databases=dict(type="bool", default=False),
    idle_longer_than=dict(type="raw"),
    running_longer_than=dict(type="raw"),
)

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="facts",
               choices=["facts", "vacuum", "analyze", "cancel", "terminate", "settings", "task_stats",
                        "migrations"]),
    tables=dict(type="list", elements="str", default=[]),
    analyze=dict(type="bool", default=True),
    full=dict(type="bool", default=False),
    pids=dict(type="list", elements="int", default=[]),
    filter=dict(type="dict", default={}, options=FILTER_SPEC),
    wait_timeout=dict(type="raw", default="10s"),
    settings=dict(type="dict", default={}),
    reset=dict(type="list", elements="str", default=[]),
    idle_longer_than=dict(type="raw", default="10m"),
    running_longer_than=dict(type="raw", default="5m"),
    top_tables=dict(type="int", default=10),
    top_statements=dict(type="int", default=10),
    statements_sort=dict(type="str", default="mean_exec_time",
                         choices=["mean_exec_time", "total_exec_time", "calls", "rows"]),
    query_max_length=dict(type="int", default=200),
    task_window=dict(type="raw", default="1h"),
    rate_window=dict(type="raw", default="5m"),
    failed_limit=dict(type="int", default=0),
    expected_version=dict(type="str"),
)


def durations(module, pairs):
    out = {}
    for name, value in pairs:
        try:
            out[name] = parse_duration(value, name)
        except ValueError as exc:
            module.fail(str(exc))
    return out


def main():
    module = ApexModule(
        ARGUMENT_SPEC,
        fragments=(POSTGRES_ARGSPEC,),
        requirements=(postgres.REQUIREMENT,),
        supports_check_mode=True,
        required_if=[("state", "vacuum", ("tables",)), ("state", "analyze", ("tables",))],
    )
    from ansible_collections.apex.ops.plugins.module_utils import db_facts, db_maint

    p = module.params
    state = p["state"]
    flt = dict(p["filter"] or {})
    parsed = durations(module, [
        ("idle_longer_than", p["idle_longer_than"]), ("running_longer_than", p["running_longer_than"]),
        ("wait_timeout", p["wait_timeout"]),
        ("filter.idle_longer_than", flt.get("idle_longer_than")),
        ("filter.running_longer_than", flt.get("running_longer_than")),
        ("task_window", p["task_window"]), ("rate_window", p["rate_window"]),
    ])
    try:
        postgres.session_timeouts(p)
    except ValueError as exc:
        module.fail(str(exc))
    flt["idle_longer_than"] = parsed["filter.idle_longer_than"]
    flt["running_longer_than"] = parsed["filter.running_longer_than"]
    if state == "settings" and not (p["settings"] or p["reset"]):
        module.fail("state=settings needs settings or reset")
    if state not in ("cancel", "terminate") and (p["pids"] or any(v for v in (p["filter"] or {}).values())):
        module.fail("pids and filter only apply to state=cancel or state=terminate")

    try:
        conn = postgres.connect(p)
    except Exception as exc:
        module.fail("cannot connect to PostgreSQL at %s:%s as %s" % (p["login_host"], p["login_port"], p["login_user"]),
                    exception=exc)
    result = dict(changed=False, state=state)
    try:
        if state == "facts":
            result.update(db_facts.gather(
                conn, parsed["idle_longer_than"], parsed["running_longer_than"], p["top_tables"],
                p["top_statements"], p["query_max_length"], p["statements_sort"]))
        elif state in ("vacuum", "analyze"):
            done = db_maint.run_maintenance(conn, state, p["tables"], module.check_mode,
                                            analyze=p["analyze"], full=p["full"])
            result.update(changed=True, tables_done=done)
        elif state in ("cancel", "terminate"):
            touched, skipped, still = db_maint.signal_backends(
                conn, state, p["pids"], flt, module.check_mode, p["query_max_length"], parsed["wait_timeout"])
            result.update(
                changed=(len(touched) > 0 if module.check_mode else any(t["signalled"] for t in touched)),
                backends=touched, skipped=skipped, still_present=still)
            if module._diff:
                result["diff"] = dict(before=dict(backends=sorted(t["pid"] for t in touched)),
                                      after=dict(backends=sorted(still)))
        elif state == "task_stats":
            result["task_stats"] = db_facts.task_stats(conn, parsed["task_window"], parsed["rate_window"],
                                                       p["failed_limit"])
        elif state == "migrations":
            result["migrations"] = db_facts.read_migrations(conn)
            try:
                result["problems"] = db_facts.migration_problems(result["migrations"], p["expected_version"])
            except ValueError as exc:
                module.fail(str(exc))
        else:
            params = db_maint.apply_settings(conn, p["settings"], p["reset"], module.check_mode)
            result.update(changed=any(x["changed"] for x in params), parameters=params,
                          pending_restart=[x["name"] for x in params if x["pending_restart"]])
            if module._diff:
                result["diff"] = dict(
                    before="".join("%s = %s\n" % (x["name"], x["before"]) for x in params),
                    after="".join("%s = %s\n" % (x["name"], x["after"]) for x in params))
    except db_maint.MaintError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except postgres.StatementTimeout as exc:
        module.fail("%s: %s" % (state, exc), last_state=exc.last_state)
    except Exception as exc:
        module.fail("%s failed" % state, exception=exc)
    finally:
        conn.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
