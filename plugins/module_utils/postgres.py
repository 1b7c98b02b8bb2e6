# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connections from POSTGRES_ARGSPEC options (psycopg 3).

Every connection a module opens is bounded: ``statement_timeout`` and ``lock_timeout`` (the
options of the same name, durations) are sent as session settings in the startup packet, so
no statement the collection runs can wait on a lock, or run, for ever. When a statement is
cancelled by one of them, ``StatementTimeout`` says which bound fired and names the sessions
that were blocking it (observed from a second connection while the statement waited:
``pg_blocking_pids()``, ``pg_locks``, ``pg_stat_activity``), with their query text redacted.

pg_dump and pg_restore (``libpq_environment``) are not given these settings: they set their
own (``SET statement_timeout = 0`` is in every archive), and apex_backup bounds them itself.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import weakref

from ansible_collections.apex.ops.plugins.module_utils.apex_module import import_error_of
from ansible_collections.apex.ops.plugins.module_utils.durations import format_duration, parse_duration

PSYCOPG_IMPORT_ERROR = import_error_of(lambda: __import__("psycopg"))
REQUIREMENT = ("psycopg[binary]>=3.1", PSYCOPG_IMPORT_ERROR)

# Defaults of the statement_timeout / lock_timeout options (see the apex.ops.postgres doc fragment).
DEFAULT_STATEMENT_TIMEOUT = "5m"
DEFAULT_LOCK_TIMEOUT = "10s"
# The application_name of the side connection that watches a waiting statement.
WATCH_APPLICATION = "apex.ops-lockwatch"
QUERY_TEXT_LIMIT = 300


def session_timeouts(params):
    """``(statement_timeout, lock_timeout)`` in seconds from the options; 0 means no bound.

    Raises ``ValueError`` naming the option for a value that is not a duration.
    """
    out = []
    for name, default in (("statement_timeout", DEFAULT_STATEMENT_TIMEOUT), ("lock_timeout", DEFAULT_LOCK_TIMEOUT)):
        value = params.get(name, default)
        seconds = parse_duration(default if value is None else value, name)
        if 0 < seconds < 0.001:
            raise ValueError("%s: %r is below PostgreSQL's resolution of 1ms" % (name, value))
        out.append(seconds)
    return tuple(out)


def session_options(params):
    """libpq ``options`` carrying the session timeouts: ``-c statement_timeout=300000 -c lock_timeout=10000``."""
    statement, lock = session_timeouts(params)
    return "-c statement_timeout=%d -c lock_timeout=%d" % (int(round(statement * 1000)), int(round(lock * 1000)))


def connection_kwargs(params, dbname=None):
    """libpq keyword arguments for psycopg.connect(); the password stays out of any DSN string."""
    kwargs = dict(
        host=params["login_host"],
        port=params["login_port"],
        user=params["login_user"],
        dbname=dbname or params["login_db"],
        sslmode=params["ssl_mode"],
        connect_timeout=params["connect_timeout"],
        application_name="apex.ops",
    )
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    if params.get("ca_cert"):
        kwargs["sslrootcert"] = params["ca_cert"]
    return kwargs


def libpq_environment(params, dbname=None):
    """Environment for libpq programs (pg_dump, pg_restore): credentials never go on argv."""
    mapping = dict(host="PGHOST", port="PGPORT", user="PGUSER", dbname="PGDATABASE", password="PGPASSWORD",
                   sslmode="PGSSLMODE", sslrootcert="PGSSLROOTCERT", connect_timeout="PGCONNECT_TIMEOUT",
                   application_name="PGAPPNAME")
    return dict((mapping[k], str(v)) for k, v in connection_kwargs(params, dbname).items())


def connect(params, dbname=None, autocommit=True):
    """A connection whose every statement is bounded by statement_timeout and lock_timeout."""
    import psycopg  # imported lazily: the module has checked REQUIREMENT already

    kwargs = connection_kwargs(params, dbname)
    kwargs["options"] = session_options(params)
    statement, lock = session_timeouts(params)
    conn = psycopg.connect(autocommit=autocommit, cursor_factory=_bounded_cursor_class(), **kwargs)
    conn._apex_bounds = dict(params=params, statement_timeout=statement, lock_timeout=lock)
    delay = _watch_delay(conn._apex_bounds)
    if delay is not None:
        conn._apex_watch = BlockerWatch(params, conn.info.dbname, conn.info.backend_pid, delay)
        weakref.finalize(conn, conn._apex_watch.close)
    return conn


# --------------------------------------------------------------------------- timeouts, explained

class StatementTimeout(Exception):
    """A statement cancelled by ``lock_timeout`` or ``statement_timeout``, with who was blocking it."""

    def __init__(self, kind, limit, statement, blocking=None, waiting_for=None, error=None, sqlstate=None):
        self.kind = kind                  # "lock_timeout" or "statement_timeout"
        self.limit = limit                # seconds
        self.statement = statement        # redacted, truncated
        self.blocking = blocking or []    # sessions that blocked it when last observed
        self.waiting_for = waiting_for    # the lock it waited for, when observed
        self.error = error
        self.sqlstate = sqlstate
        super(StatementTimeout, self).__init__(timeout_message(kind, limit, statement, self.blocking, waiting_for))

    @property
    def last_state(self):
        return dict(timeout=self.kind, limit_seconds=self.limit, statement=self.statement,
                    waiting_for=self.waiting_for, blocking_sessions=self.blocking,
                    server_error=self.error, sqlstate=self.sqlstate)


def describe_session(session):
    """``pid 4242 (user apex, application 'psql', idle in transaction, transaction open since ..., holds
    AccessExclusiveLock), last query: <query>``."""
    details = ["user %s" % session.get("user"), "application %r" % (session.get("application_name") or "")]
    if session.get("client_addr"):
        details.append("client %s" % session["client_addr"])
    details.append(session.get("state") or "unknown state")
    if session.get("xact_start"):
        details.append("transaction open since %s" % session["xact_start"])
    elif session.get("query_start"):
        details.append("last query started %s" % session["query_start"])
    if session.get("held_modes"):
        details.append("holds %s" % ", ".join(session["held_modes"]))
    text = "pid %s (%s)" % (session.get("pid"), ", ".join(details))
    if session.get("query"):
        text += ", last query: %s" % session["query"]
    return text


def timeout_message(kind, limit, statement, blocking, waiting_for=None):
    """The one message for a statement cancelled by a timeout (pure, unit-tested)."""
    limit_text = format_duration(limit) if limit else "?"
    what = ""
    if waiting_for and waiting_for.get("mode"):
        what = " for %s on %s" % (waiting_for["mode"], waiting_for.get("relation") or waiting_for.get("locktype"))
    if kind == "lock_timeout":
        head = "lock_timeout (%s) reached: the statement waited%s" % (limit_text, what or " for a lock")
    else:
        head = "statement_timeout (%s) reached" % limit_text
        if blocking:
            head += ": the statement was waiting%s" % (what or " for a lock")
    if blocking:
        head += " held by " + "; ".join(describe_session(s) for s in blocking)
        advice = "End or wait for the blocking session (apex_db_maint state=cancel/terminate with its pid), or raise %s" % kind
    elif kind == "lock_timeout":
        head += " (the session holding it was not observed)"
        advice = "Raise lock_timeout or retry later"
    else:
        head += " (no session was blocking it: it was still working)"
        advice = "Raise statement_timeout (0 disables it) if this statement needs longer"
    return "%s. It was cancelled; a cancelled statement changes nothing. %s. Statement: %s" % (head, advice, statement)


def classify_timeout(exc):
    """``'lock_timeout'``, ``'statement_timeout'`` or ``None`` for a psycopg error (by SQLSTATE and text)."""
    sqlstate = getattr(exc, "sqlstate", None)
    text = str(exc).lower()
    if sqlstate == "55P03" and "lock timeout" in text:
        return "lock_timeout"
    if sqlstate == "57014" and "statement timeout" in text:
        return "statement_timeout"
    return None


def statement_text(query, conn=None, limit=QUERY_TEXT_LIMIT):
    """A statement (str, bytes or psycopg.sql object) as short, redacted text."""
    from ansible_collections.apex.ops.plugins.module_utils.redaction import redact

    text = query
    if not isinstance(text, (str, bytes)):
        try:
            text = query.as_string(conn)
        except Exception:  # noqa: BLE001 - best effort, for a message
            text = repr(query)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return redact(text)


BLOCKERS_SQL = """
WITH w AS (SELECT locktype, relation, mode FROM pg_locks WHERE pid = %(pid)s AND NOT granted LIMIT 1)
SELECT (SELECT json_build_object('locktype', w.locktype, 'mode', w.mode,
                                 'relation', CASE WHEN w.relation IS NULL THEN NULL ELSE w.relation::regclass::text END)
          FROM w),
       coalesce((SELECT json_agg(json_build_object(
            'pid', b.pid, 'user', b.usename, 'application_name', b.application_name,
            'client_addr', host(b.client_addr), 'state', b.state, 'backend_type', b.backend_type,
            'xact_start', b.xact_start, 'query_start', b.query_start, 'wait_event_type', b.wait_event_type,
            'held_modes', (SELECT array_agg(DISTINCT l.mode ORDER BY l.mode) FROM pg_locks l
                            WHERE l.pid = b.pid AND l.granted
                              AND (NOT EXISTS (SELECT 1 FROM w) OR EXISTS (
                                   SELECT 1 FROM w WHERE w.locktype = l.locktype
                                                     AND w.relation IS NOT DISTINCT FROM l.relation))),
            'query', left(b.query, %(qlen)s)) ORDER BY b.pid)
          FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(%(pid)s))), '[]'::json)
"""


def read_blockers(conn, pid, query_length=QUERY_TEXT_LIMIT):
    """``(waiting_for, blocking_sessions)`` of backend ``pid``, read on ``conn`` (another session)."""
    from ansible_collections.apex.ops.plugins.module_utils.redaction import redact_rows

    with conn.cursor() as cur:
        cur.execute(BLOCKERS_SQL, dict(pid=int(pid), qlen=int(query_length)))
        waiting_for, blocking = cur.fetchone()
    return waiting_for, redact_rows(blocking or [])


class BlockerWatch(object):
    """Observes, from a side connection, what blocks the statement its connection is running.

    One per connection, with one idle thread. ``arm()`` before a statement and ``disarm()``
    after it cost two Event operations; only a statement still running after ``delay`` makes
    the thread open a side connection and sample ``read_blockers`` every ``interval`` until it
    ends, keeping the last non-empty observation for the error message.
    """

    def __init__(self, params, dbname, pid, delay, interval=0.2):
        self.params, self.dbname, self.pid = params, dbname, pid
        self.delay, self.interval = delay, interval
        self.armed, self.done = threading.Event(), threading.Event()
        self.generation = 0
        self.waiting_for, self.blocking = None, []
        self.error = None
        self.closed = False
        self.thread = None

    def arm(self):
        self.generation += 1
        self.waiting_for, self.blocking = None, []
        self.done.clear()
        self.armed.set()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="apex-lockwatch", daemon=True)
            self.thread.start()

    def disarm(self):
        self.armed.clear()
        self.done.set()

    def close(self):
        self.closed = True
        self.done.set()
        self.armed.set()

    def _run(self):
        while True:
            self.armed.wait()
            if self.closed:
                return
            if self.done.wait(self.delay):
                continue  # the statement ended quickly: nothing to observe
            self._observe(self.generation)

    def _observe(self, generation):
        try:
            import psycopg

            kwargs = connection_kwargs(self.params, self.dbname)
            kwargs.update(application_name=WATCH_APPLICATION, options="-c statement_timeout=5000 -c lock_timeout=1000",
                          connect_timeout=min(int(self.params.get("connect_timeout") or 10), 5))
            conn = psycopg.connect(autocommit=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the message then says the holder was not observed
            self.error = str(exc)
            self.done.wait()
            return
        try:
            while not self.done.is_set():
                waiting_for, blocking = read_blockers(conn, self.pid)
                if (blocking or waiting_for) and generation == self.generation and not self.done.is_set():
                    self.waiting_for, self.blocking = waiting_for, blocking
                self.done.wait(self.interval)
        except Exception as exc:  # noqa: BLE001
            self.error = str(exc)
        finally:
            conn.close()


def _watch_delay(bounds):
    limits = [t for t in (bounds["statement_timeout"], bounds["lock_timeout"]) if t]
    if not limits:
        return None
    return min(0.5, min(limits) / 2.0)


_CURSOR_CLASS = []


def _bounded_cursor_class():
    """psycopg.Cursor whose ``execute`` turns a timeout into ``StatementTimeout`` (built lazily)."""
    if _CURSOR_CLASS:
        return _CURSOR_CLASS[0]
    import psycopg

    class BoundedCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            conn = self.connection
            watch = getattr(conn, "_apex_watch", None)
            if watch is not None:
                watch.arm()
            try:
                return super(BoundedCursor, self).execute(query, params, **kwargs)
            except psycopg.Error as exc:
                bounds = getattr(conn, "_apex_bounds", None)
                kind = classify_timeout(exc)
                if kind is None or bounds is None:
                    raise
                raise StatementTimeout(
                    kind, bounds[kind], statement_text(query, conn),
                    blocking=watch.blocking if watch else [], waiting_for=watch.waiting_for if watch else None,
                    error=str(exc).strip(), sqlstate=getattr(exc, "sqlstate", None))
            finally:
                if watch is not None:
                    watch.disarm()

    _CURSOR_CLASS.append(BoundedCursor)
    return BoundedCursor
