# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cancelling and terminating PostgreSQL backends, with one safety rule.

Every ``pg_cancel_backend`` / ``pg_terminate_backend`` the collection sends (apex_db_maint
cancel/terminate, the restore's drain, its lock watch and deadline) goes through
:func:`signal_backends`, which adds the rule to whatever the caller selected:

1. only client backends: never walsenders (replication), autovacuum, background workers;
2. never this session (``pg_backend_pid()``);
3. only in the databases the caller names (``databases``); every database only when the caller
   passes :data:`ALL_DATABASES` explicitly;
4. a superuser's session only when the caller selected it by name: its ``pids``, its role
   (``users``) or its ``application_name`` (``applications``). Broad criteria (state, idle
   time, a database alone) never reach the DBA's superuser ``psql``;
5. ``cancel`` only a backend running a statement (``state = 'active'``): it does nothing else.

The selection and the signal are one statement, so a backend is signalled only if it matched
when the statement ran. :func:`skip_reasons` says why named pids were left alone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

ALL_DATABASES = "*all databases*"
CURRENT_DATABASE = "*current database*"
FUNCTIONS = {"cancel": "pg_cancel_backend", "terminate": "pg_terminate_backend"}
SUPERUSER_SQL = "coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)"
DEFAULT_COLUMNS = ("a.pid, a.datname, a.usename, a.application_name, a.state, a.backend_start::text AS backend_start, "
                   "EXTRACT(EPOCH FROM (now() - a.backend_start))::int AS age_seconds")


def selection(action, databases, pids=None, users=None, applications=None, where=None, params=None):
    """``(sql.Composable, params)``: the safety rule above, the named selectors and ``where``.

    ``databases``: a list of names, :data:`CURRENT_DATABASE` (the one the connection is in) or
    :data:`ALL_DATABASES`; there is no default. ``where``/``params``: further narrowing over
    ``pg_stat_activity a``. Raises ``ValueError`` for an unknown action or no databases.
    """
    from psycopg import sql

    if action not in FUNCTIONS:
        raise ValueError("unknown signal %r (cancel or terminate)" % (action,))
    if not databases:
        raise ValueError("signalling backends needs the databases to act in (or ALL_DATABASES)")
    conds = [sql.SQL("a.backend_type = 'client backend'"), sql.SQL("a.pid <> pg_backend_pid()")]
    bound = dict(params or {})
    if databases == CURRENT_DATABASE:
        conds.append(sql.SQL("a.datname = current_database()"))
    elif databases != ALL_DATABASES:
        conds.append(sql.SQL("a.datname = ANY(%(datname)s)"))
        bound["datname"] = [str(d) for d in databases]
    named = False
    for key, values, cast in (("pids", pids, int), ("usename", users, str), ("application_name", applications, str)):
        if values:
            column = sql.SQL("a.pid") if key == "pids" else sql.SQL("a.{}").format(sql.Identifier(key))
            conds.append(sql.SQL("{} = ANY(%({})s)").format(column, sql.SQL(key)))
            bound[key] = [cast(v) for v in values]
            named = True
    if not named:
        conds.append(sql.SQL("NOT " + SUPERUSER_SQL))
    if where is not None:
        conds.append(where)
    if action == "cancel":
        # pg_cancel_backend only does something to a backend running a statement
        conds.append(sql.SQL("a.state = 'active'"))
    return sql.SQL(" AND ").join(conds), bound


def signal_backends(conn, action, databases, pids=None, users=None, applications=None, where=None, params=None,
                    columns=DEFAULT_COLUMNS, check_mode=False):
    """Cancel or terminate the backends selected (:func:`selection`): one statement selects and signals.

    Returns the matching rows (``columns`` plus ``signalled``: what the server function
    returned; ``False`` for all in check mode), ordered by pid.
    """
    from psycopg import sql

    rule, bound = selection(action, databases, pids, users, applications, where, params)
    signal = sql.SQL("false") if check_mode else sql.SQL("{}(a.pid)").format(sql.Identifier(FUNCTIONS[action]))
    stmt = sql.SQL("SELECT {cols}, {signal} AS signalled FROM pg_stat_activity a WHERE {where} ORDER BY a.pid").format(
        cols=sql.SQL(columns), signal=signal, where=rule)
    with conn.cursor() as cur:
        cur.execute(stmt, bound)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def skip_reasons(conn, action, pids, databases):
    """``[{pid, reason}]`` for named ``pids`` that :func:`signal_backends` left alone."""
    if not pids:
        return []
    with conn.cursor() as cur:
        cur.execute("SELECT a.pid, a.backend_type, a.state, a.pid = pg_backend_pid(), a.datname, current_database() "
                    "FROM pg_stat_activity a WHERE a.pid = ANY(%s)", ([int(p) for p in pids],))
        seen = dict((r[0], r[1:]) for r in cur.fetchall())
    out = []
    for pid in [int(p) for p in pids]:
        if pid not in seen:
            reason = "no such backend"
        else:
            backend_type, state, own, datname, current = seen[pid]
            allowed = [current] if databases == CURRENT_DATABASE else databases
            if own:
                reason = "this module's own backend"
            elif backend_type != "client backend":
                reason = "protected backend type %r" % backend_type
            elif databases != ALL_DATABASES and datname not in allowed:
                reason = "in database %r, not in %s (name it in filter.datname)" % (datname, ", ".join(allowed))
            elif action == "cancel" and state != "active":
                reason = "not running a query (state %r)" % state
            else:
                reason = "does not match the filter"
        out.append(dict(pid=pid, reason=reason))
    return out
