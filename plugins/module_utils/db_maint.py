# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL maintenance actions for apex_db_maint: VACUUM/ANALYZE, cancel/terminate, ALTER SYSTEM.

Every identifier reaches the server through ``psycopg.sql.Identifier`` and only after it was
found in the catalog; every value is a bound parameter or ``sql.Literal``. Nothing here
formats SQL text from user input.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible_collections.apex.ops.plugins.module_utils import postgres
from ansible_collections.apex.ops.plugins.module_utils.db_facts import BACKEND_COLUMNS
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact_rows
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until


class MaintError(Exception):
    """A refused or failed action; ``last_state`` is what was observed."""

    def __init__(self, msg, last_state=None):
        super(MaintError, self).__init__(msg)
        self.last_state = last_state


# --------------------------------------------------------------------------- tables

def split_table_name(name):
    """``'tasks'`` -> ``(None, 'tasks')``; ``'public.tasks'`` -> ``('public', 'tasks')``.

    Double-quoted parts keep dots and case: ``'"My.Schema"."T"'`` -> ``('My.Schema', 'T')``.
    The parts are only looked up in the catalog; they are never pasted into SQL.
    """
    text = str(name).strip()
    if not text:
        raise ValueError("empty table name")
    parts, current, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    current += '"'
                    i += 1
                else:
                    quoted = False
            else:
                current += ch
        elif ch == '"':
            quoted = True
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if quoted:
        raise ValueError("unterminated quote in table name %r" % name)
    parts.append(current)
    if len(parts) > 2 or not all(parts):
        raise ValueError("table name %r must be 'table' or 'schema.table'" % name)
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


RESOLVE_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND c.relname = %(rel)s
  AND (CASE WHEN %(schema)s::text IS NULL THEN n.nspname = ANY(current_schemas(false))
            ELSE n.nspname = %(schema)s::text END)
ORDER BY array_position(current_schemas(false), n.nspname::name) NULLS LAST
LIMIT 1
"""


def resolve_tables(conn, names):
    """Return ``[(schema, table)]`` for ``names``; raise MaintError listing every missing one."""
    found, missing, invalid = [], [], []
    with conn.cursor() as cur:
        for name in names:
            try:
                schema, rel = split_table_name(name)
            except ValueError as exc:
                invalid.append("%s (%s)" % (name, exc))
                continue
            cur.execute(RESOLVE_SQL, dict(schema=schema, rel=rel))
            row = cur.fetchone()
            if row is None:
                missing.append(name)
            elif tuple(row) not in found:
                found.append(tuple(row))
    if missing or invalid:
        problems = []
        if missing:
            problems.append("tables not found: %s" % ", ".join(repr(m) for m in missing))
        if invalid:
            problems.append("invalid table names: %s" % ", ".join(invalid))
        raise MaintError("%s; nothing was run" % "; ".join(problems),
                         last_state=dict(missing=missing, invalid=invalid, found=["%s.%s" % f for f in found]))
    return found


TABLE_STATS_SQL = """
SELECT schemaname, relname, n_live_tup, n_dead_tup, last_vacuum, last_autovacuum, last_analyze,
       last_autoanalyze, vacuum_count, analyze_count
FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s
"""


def table_stats(conn, schema, table):
    with conn.cursor() as cur:
        cur.execute(TABLE_STATS_SQL, (schema, table))
        row = cur.fetchone()
        if row is None:
            return None
        cols = [d.name for d in cur.description]
    out = dict(zip(cols, row))
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


def maintenance_statement(kind, schema, table, analyze=True, full=False, verbose=False):
    """Compose ``VACUUM (ANALYZE) schema.table`` / ``ANALYZE schema.table`` safely."""
    from psycopg import sql

    target = sql.Identifier(schema, table)
    if kind == "analyze":
        return sql.SQL("ANALYZE {}{}").format(sql.SQL("(VERBOSE) ") if verbose else sql.SQL(""), target)
    options = [name for name, on in (("FULL", full), ("VERBOSE", verbose), ("ANALYZE", analyze)) if on]
    if options:
        return sql.SQL("VACUUM ({}) {}").format(sql.SQL(", ").join(sql.SQL(o) for o in options), target)
    return sql.SQL("VACUUM {}").format(target)


def run_maintenance(conn, kind, names, check_mode, analyze=True, full=False):
    """VACUUM or ANALYZE each table; return per-table before/after statistics."""
    if conn.info.transaction_status != 0 or not conn.autocommit:
        raise MaintError("VACUUM needs an autocommit connection")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        if cur.fetchone()[0]:
            raise MaintError("this server is a standby (in recovery): %s must run on the primary" % kind.upper())
    tables = resolve_tables(conn, names)
    results = []
    for schema, table in tables:
        stmt = maintenance_statement(kind, schema, table, analyze=analyze, full=full)
        entry = dict(table="%s.%s" % (schema, table), statement=stmt.as_string(conn),
                     before=table_stats(conn, schema, table))
        if not check_mode:
            started = time.monotonic()
            try:
                with conn.cursor() as cur:
                    cur.execute(stmt)
            except postgres.StatementTimeout as exc:
                # the tables before this one were done; this one and the rest were not
                raise MaintError("%s of %s: %s" % (kind.upper(), entry["table"], exc), last_state=dict(
                    exc.last_state, table=entry["table"], tables_done=results,
                    tables_not_done=["%s.%s" % t for t in tables[len(results):]]))
            entry["seconds"] = round(time.monotonic() - started, 3)
            entry["after"] = table_stats(conn, schema, table)
        results.append(entry)
    return results


# --------------------------------------------------------------------------- cancel / terminate

FILTER_KEYS = ("application_name", "state", "usename", "datname", "all_databases", "idle_longer_than",
               "running_longer_than")
NARROWING_KEYS = ("application_name", "state", "usename", "idle_longer_than", "running_longer_than")
IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


def backend_selection(pids, flt, action):
    """What cancel/terminate selects, as keyword arguments of ``pg_signal.signal_backends``.

    ``flt`` holds already-parsed values (durations in seconds, lists for names). The databases
    are ``filter.datname``, every database with ``filter.all_databases``, else the one the module
    is connected to. A request with neither pids nor a narrowing criterion is refused:
    ``datname`` alone matches every application's connections.
    """
    from psycopg import sql

    from ansible_collections.apex.ops.plugins.module_utils import pg_signal

    flt = dict((k, v) for k, v in (flt or {}).items() if v not in (None, [], "") and v is not False)
    unknown = set(flt) - set(FILTER_KEYS)
    if unknown:
        raise MaintError("unknown filter keys: %s" % ", ".join(sorted(unknown)))
    if not pids and not any(k in flt for k in NARROWING_KEYS):
        raise MaintError(
            "refusing to %s without pids or a narrowing filter (one of %s): that would match every "
            "connection" % (action, ", ".join(NARROWING_KEYS)))
    if flt.get("all_databases") and flt.get("datname"):
        raise MaintError("filter.datname and filter.all_databases exclude each other")
    if flt.get("all_databases"):
        databases = pg_signal.ALL_DATABASES
    else:
        databases = [str(d) for d in flt["datname"]] if flt.get("datname") else pg_signal.CURRENT_DATABASE
    conds = []
    params = {}
    if "state" in flt:
        conds.append(sql.SQL("a.state = ANY(%(state)s)"))
        params["state"] = [str(v) for v in flt["state"]]
    if "idle_longer_than" in flt:
        conds.append(sql.SQL("a.state = ANY(%(idle_states)s) AND a.state_change < now() - make_interval(secs => %(idle_secs)s)"))
        params["idle_states"] = list(IDLE_STATES)
        params["idle_secs"] = float(flt["idle_longer_than"])
    if "running_longer_than" in flt:
        conds.append(sql.SQL("a.state = 'active' AND a.query_start < now() - make_interval(secs => %(run_secs)s)"))
        params["run_secs"] = float(flt["running_longer_than"])
    return dict(action=action, databases=databases, pids=[int(p) for p in pids or []],
                users=[str(v) for v in flt.get("usename") or []],
                applications=[str(v) for v in flt.get("application_name") or []],
                where=sql.SQL(" AND ").join(conds) if conds else None, params=params)


def build_backend_filter(pids, flt, action):
    """``(sql.Composable where-clause, params)`` for cancel/terminate: the selection with the safety rule."""
    from ansible_collections.apex.ops.plugins.module_utils import pg_signal

    return pg_signal.selection(**backend_selection(pids, flt, action))


def _iso_rows(rows):
    for item in rows:
        for key, value in item.items():
            if hasattr(value, "isoformat"):
                item[key] = value.isoformat()
    return rows


def signal_backends(conn, action, pids, flt, check_mode, query_max_length=200, wait_timeout=10.0):
    """Cancel or terminate matching client backends; return ``(touched, skipped, still_running)``."""
    from ansible_collections.apex.ops.plugins.module_utils import pg_signal

    chosen = backend_selection(pids, flt, action)
    chosen["params"]["query_max_length"] = int(query_max_length)
    touched = redact_rows(_iso_rows(pg_signal.signal_backends(conn, columns=BACKEND_COLUMNS, check_mode=check_mode,
                                                              **chosen)))
    matched = set(t["pid"] for t in touched)
    skipped = pg_signal.skip_reasons(conn, action, [p for p in chosen["pids"] if p not in matched], chosen["databases"])
    still = []
    signalled = [t for t in touched if t["signalled"]]
    if signalled and wait_timeout and wait_timeout > 0:
        still = wait_until_gone(conn, action, signalled, wait_timeout)
    return touched, skipped, still


def wait_until_gone(conn, action, signalled, timeout, clock=time.monotonic, sleep=time.sleep):
    """Observe pg_stat_activity until terminated backends are gone (cancel: the statement ended)."""
    pids = [t["pid"] for t in signalled]
    starts = dict((t["pid"], t["query_start"]) for t in signalled)

    def remaining():
        with conn.cursor() as cur:
            cur.execute("SELECT pid, state, query_start FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            rows = cur.fetchall()
        if action == "terminate":
            return [r[0] for r in rows]
        return [r[0] for r in rows if r[1] == "active" and r[2] is not None and r[2].isoformat() == starts.get(r[0])]

    return poll_until(remaining, lambda left: not left, Deadline(timeout, clock=clock), interval=0.05,
                      max_interval=0.5, backoff=2, sleep=sleep).last


# --------------------------------------------------------------------------- settings

_MEMORY = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}
_TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}
_BOOL_TRUE = ("on", "true", "yes", "1", "t", "y")
_BOOL_FALSE = ("off", "false", "no", "0", "f", "n")
_NUM_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _unit_scale(unit):
    """``'8kB'`` -> ('memory', 8192); ``'ms'`` -> ('time', 1); ``None`` -> (None, 1)."""
    if not unit:
        return None, 1
    match = re.match(r"^(\d*)([a-zA-Z]+)$", unit)
    if not match:
        return None, 1
    factor = int(match.group(1) or 1)
    base = match.group(2).lower()
    if base in _MEMORY:
        return "memory", factor * _MEMORY[base]
    if base in _TIME:
        return "time", factor * _TIME[base]
    return None, 1


def setting_to_text(value):
    """YAML values to the text PostgreSQL expects (booleans become on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def normalize_setting(value, vartype, unit=None):
    """Comparable form of a setting value: numbers in the base unit (bytes/ms), bools 'on'/'off'."""
    if value is None:
        return None
    text = setting_to_text(value).strip()
    if vartype == "bool":
        low = text.lower()
        if low in _BOOL_TRUE:
            return "on"
        if low in _BOOL_FALSE:
            return "off"
        raise ValueError("%r is not a boolean" % value)
    if vartype in ("integer", "real"):
        match = _NUM_UNIT.match(text)
        if not match:
            raise ValueError("%r is not a number (optionally with a unit)" % value)
        number, suffix = float(match.group(1)), match.group(2)
        kind, scale = _unit_scale(unit)
        if suffix:
            low = suffix.lower()
            if kind == "memory" and low in _MEMORY:
                return number * _MEMORY[low]
            if kind == "time" and low in _TIME:
                return number * _TIME[low]
            raise ValueError("unit %r does not fit this setting (unit %s)" % (suffix, unit or "none"))
        return number * scale
    if vartype == "enum":
        return text.lower()
    return text


SETTINGS_SQL = """
SELECT s.name, s.setting, s.unit, s.vartype, s.context, s.pending_restart, s.enumvals,
       (SELECT f.setting FROM pg_file_settings f WHERE f.name = s.name ORDER BY f.seqno DESC LIMIT 1) AS file_setting,
       EXISTS (SELECT 1 FROM pg_file_settings f WHERE f.name = s.name
               AND f.sourcefile LIKE '%%postgresql.auto.conf') AS in_auto_conf
FROM pg_settings s WHERE s.name = ANY(%s)
"""


def read_settings(conn, names):
    with conn.cursor() as cur:
        cur.execute(SETTINGS_SQL, ([n.lower() for n in names],))
        cols = [d.name for d in cur.description]
        return dict((row[0], dict(zip(cols, row))) for row in cur.fetchall())


def _effective(row):
    """The value the server will run with: the pending file value when a restart is pending."""
    if row["pending_restart"] and row["file_setting"] is not None:
        return row["file_setting"]
    return row["setting"]


def _same(row, desired_text):
    current = normalize_setting(_effective(row), row["vartype"], row["unit"])
    wanted = normalize_setting(desired_text, row["vartype"], row["unit"])
    if isinstance(current, float) and isinstance(wanted, float):
        return abs(current - wanted) < 1e-9 * max(1.0, abs(current))
    return current == wanted


def apply_settings(conn, settings, reset, check_mode, wait_timeout=5.0):
    """ALTER SYSTEM SET/RESET, reload, and report per-parameter results (with pending_restart)."""
    from psycopg import sql

    settings = dict((str(k).lower(), v) for k, v in (settings or {}).items())
    reset = [str(n).lower() for n in (reset or [])]
    overlap = set(settings) & set(reset)
    if overlap:
        raise MaintError("parameters both set and reset: %s" % ", ".join(sorted(overlap)))
    names = list(settings) + reset
    rows = read_settings(conn, names)
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise MaintError("unknown parameters (not in pg_settings): %s; nothing was changed" % ", ".join(unknown))
    problems, plan = [], []
    for name, value in settings.items():
        row, text = rows[name], setting_to_text(value)
        if row["context"] == "internal":
            problems.append("%s is read-only (internal)" % name)
            continue
        try:
            same = _same(row, text)
        except ValueError as exc:
            problems.append("%s: %s" % (name, exc))
            continue
        if row["vartype"] == "enum" and row["enumvals"] and text.lower() not in [e.lower() for e in row["enumvals"]]:
            problems.append("%s: %r is not one of %s" % (name, text, ", ".join(row["enumvals"])))
            continue
        plan.append((name, "set", text, not same))
    for name in reset:
        plan.append((name, "reset", None, bool(rows[name]["in_auto_conf"])))
    if problems:
        raise MaintError("invalid settings: %s; nothing was changed" % "; ".join(problems))

    before = dict((n, _effective(rows[n])) for n in names)
    to_change = [p for p in plan if p[3]]
    if to_change and not check_mode:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_conf_load_time()")
            loaded_before = cur.fetchone()[0]
            for name, op, text, _change in to_change:
                if op == "set":
                    cur.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(text)))
                else:
                    cur.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            cur.execute("SELECT pg_reload_conf()")
        _wait_reloaded(conn, loaded_before, wait_timeout)
        rows = read_settings(conn, names)
    results = []
    for name, op, text, change in plan:
        row = rows[name]
        results.append(dict(
            name=name, action=op, requested=text, changed=change, before=before[name],
            after=(text if (check_mode and change and op == "set") else _effective(row)),
            setting=row["setting"], unit=row["unit"], context=row["context"],
            pending_restart=bool(row["pending_restart"]) or bool(
                check_mode and change and row["context"] == "postmaster"),
        ))
    return results


def _wait_reloaded(conn, loaded_before, timeout, clock=time.monotonic, sleep=time.sleep):
    """pg_reload_conf() only signals the postmaster; this session re-reads the files before its
    next statement once the signal arrives. Observe pg_conf_load_time() (this session's last
    reload) until it moves past the time read before the change; return whether it did."""
    def reloaded():
        with conn.cursor() as cur:
            cur.execute("SELECT pg_conf_load_time() > %s", (loaded_before,))
            return cur.fetchone()[0]

    return poll_until(reloaded, bool, Deadline(timeout, clock=clock), interval=0.01, max_interval=0.2, backoff=2,
                      sleep=sleep).ok
