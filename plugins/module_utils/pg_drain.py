# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draining a database before a restore: wait until the (matching) sessions are gone,
observed in ``pg_stat_activity``; terminate stragglers after a grace period (``pg_signal``'s rule).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils import pg_signal
from ansible_collections.apex.ops.plugins.module_utils import waiting
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import admin_connect
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import BackupError


SESSION_COLUMNS = ("a.pid, a.usename AS user, a.application_name, a.state, a.backend_start::text AS backend_start, "
                   "EXTRACT(EPOCH FROM (now() - a.backend_start))::int AS age_seconds")


def _sessions(conn, db, users=None, applications=None):
    rows = conn.execute("""SELECT """ + SESSION_COLUMNS + """
                             FROM pg_stat_activity a
                            WHERE a.datname = %s AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
                              AND (%s::text[] IS NULL OR a.usename = ANY(%s::text[]))
                              AND (%s::text[] IS NULL OR a.application_name = ANY(%s::text[]))
                            ORDER BY a.pid""", (db, users, users, applications, applications)).fetchall()
    names = ("pid", "user", "application_name", "state", "backend_start", "age_seconds")
    return [dict(zip(names, r)) for r in rows]


def drain_sessions(params, db, users=None, applications=None, grace=30.0, timeout=120.0, terminate=True,
                   check_mode=False, poll=0.2, clock=time.monotonic, sleep=time.sleep):
    """Wait until no matching session is connected to ``db`` (observed in pg_stat_activity).

    After ``grace`` seconds the stragglers are terminated (``pg_signal``: a superuser's session
    only when ``users`` or ``applications`` name it) when ``terminate``; at ``timeout`` the wait
    fails with the sessions last seen.
    """
    from psycopg import sql  # lazily: REQUIREMENT checked by the module

    catalog.check_db_name(db)
    users = list(users) if users else None
    applications = list(applications) if applications else None
    deadline = waiting.Deadline(timeout, clock=clock)
    terminated = []
    with contextlib.closing(admin_connect(params)) as conn:
        initial = _sessions(conn, db, users, applications)
        if check_mode or not initial:
            return {"initial": initial, "terminated": [], "waited_seconds": 0.0, "remaining": initial if check_mode else []}
        sessions = initial
        while sessions:
            if terminate and deadline.elapsed() >= grace:
                # not by pid: the listed pids are not named by the operator (superusers stay protected)
                rows = pg_signal.signal_backends(conn, "terminate", [db], users=users, applications=applications,
                                                 where=sql.SQL("NOT (a.pid = ANY(%(drained)s))"),
                                                 params={"drained": [t["pid"] for t in terminated]},
                                                 columns=SESSION_COLUMNS)
                terminated.extend(dict((k, v) for k, v in r.items() if k != "signalled") for r in rows)
            if deadline.elapsed() > timeout:
                left = [s for s in sessions if s["pid"] not in [t["pid"] for t in terminated]]
                raise BackupError("%d session(s) still connected to %s after %.0fs%s%s" % (
                    len(sessions), db, timeout, " (terminated, not yet gone)" if terminated else "",
                    "; %d not terminated: a superuser's session is only terminated when drain_users or "
                    "drain_applications name it" % len(left) if terminate and left else ""),
                    last_state={"sessions": sessions, "terminated": terminated})
            sleep(poll)
            sessions = _sessions(conn, db, users, applications)
    return {"initial": initial, "terminated": terminated, "waited_seconds": round(deadline.elapsed(), 3),
            "remaining": []}
