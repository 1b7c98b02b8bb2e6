# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming replication: facts of either end, promotion, fencing (``apex_replica``).

Everything goes over SQL: ``pg_promote()`` instead of ``pg_ctl promote`` through an exec, and
the fence is ``ALTER ROLE ... NOLOGIN`` + ``ALTER SYSTEM SET default_transaction_read_only``.
The decisions (is this standby fit to be promoted, what would be lost) are pure functions
below, unit-tested without a server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils import pg_signal
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until

# a primary's timeline is the one it writes WAL on (the WAL file name's first 8 hex digits):
# pg_control_checkpoint() still says the old one until the first checkpoint after a promotion
PRIMARY_SQL = (
    "SELECT pg_current_wal_lsn()::text AS current_lsn,"
    " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS wal_timeline,"
    " current_setting('default_transaction_read_only') = 'on' AS read_only")
SENDERS_SQL = (
    "SELECT application_name, host(client_addr) AS client_addr, state, sync_state,"
    " sent_lsn::text AS sent_lsn, replay_lsn::text AS replay_lsn,"
    " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint AS lag_bytes,"
    " extract(epoch FROM replay_lag)::float8 AS lag_seconds"
    " FROM pg_stat_replication ORDER BY application_name")
STANDBY_SQL = (
    "SELECT pg_last_wal_receive_lsn()::text AS receive_lsn, pg_last_wal_replay_lsn()::text AS replay_lsn,"
    " coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint"
    "   AS receive_replay_lag_bytes,"
    " pg_last_xact_replay_timestamp() AS last_replayed_at,"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS seconds_since_last_replay,"
    " pg_is_wal_replay_paused() AS replay_paused")
RECEIVER_SQL = (
    "SELECT status, received_tli, sender_host, sender_port, slot_name,"
    " written_lsn::text AS written_lsn, flushed_lsn::text AS flushed_lsn,"
    " latest_end_lsn::text AS latest_end_lsn, last_msg_receipt_time FROM pg_stat_wal_receiver")


class ReplicaRefused(Exception):
    """A safety rule refused the action; ``facts`` is what was observed."""

    def __init__(self, msg, facts=None):
        super(ReplicaRefused, self).__init__(msg)
        self.facts = facts


def _rows(conn, stmt, args=None):
    with conn.cursor() as cur:
        cur.execute(stmt, args)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def _iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def gather(conn):
    """Facts of the server ``conn`` is on, whichever end it is.

    ``role`` is ``primary`` or ``standby``; a primary lists its ``standbys`` (pg_stat_replication:
    state, sent/replay LSN, lag in bytes and seconds), a standby its ``wal_receiver`` (status,
    sender, timeline) and what it has received and replayed. ``timeline`` is the server's
    current timeline (the WAL receiver's on a streaming standby, else the last checkpoint's).
    """
    in_recovery = _rows(conn, "SELECT pg_is_in_recovery() AS r, current_setting('server_version_num')::int AS v")[0]
    facts = dict(in_recovery=in_recovery["r"], role="standby" if in_recovery["r"] else "primary",
                 server_version_num=in_recovery["v"])
    timeline = _rows(conn, "SELECT timeline_id FROM pg_control_checkpoint()")[0]["timeline_id"]
    if facts["in_recovery"]:
        standby = _rows(conn, STANDBY_SQL)[0]
        standby["last_replayed_at"] = _iso(standby["last_replayed_at"])
        receiver = _rows(conn, RECEIVER_SQL)
        receiver = receiver[0] if receiver else None
        if receiver:
            receiver["last_msg_receipt_time"] = _iso(receiver["last_msg_receipt_time"])
            timeline = receiver["received_tli"] or timeline
        facts.update(standby, wal_receiver=receiver, streaming=bool(receiver and receiver["status"] == "streaming"))
    else:
        facts.update(_rows(conn, PRIMARY_SQL)[0])
        timeline = facts.pop("wal_timeline")
        facts["standbys"] = _rows(conn, SENDERS_SQL)
    facts["timeline"] = timeline
    return facts


def data_loss_window(standby_facts):
    """What a promotion without the primary would keep: the last WAL replayed and the time of
    the last transaction replayed. Anything the primary committed after it is lost."""
    return dict(last_replayed_lsn=standby_facts.get("replay_lsn"),
                last_received_lsn=standby_facts.get("receive_lsn"),
                last_replayed_transaction_at=standby_facts.get("last_replayed_at"),
                seconds_since_last_replay=standby_facts.get("seconds_since_last_replay"))


def promotion_refusal(facts, require_streaming, max_replay_lag_bytes, allow_data_loss):
    """Why this standby must not be promoted, or None. Pure.

    ``require_streaming``: the WAL receiver must be streaming (a planned failover); without it
    (the primary is gone) only ``allow_data_loss`` lets the promotion go ahead. Received but not
    yet replayed WAL above ``max_replay_lag_bytes`` is refused too: pg_promote replays it first,
    but a large backlog means a long, silent promotion."""
    if not facts.get("in_recovery"):
        return None  # already a primary: nothing to refuse, nothing to do
    if facts.get("replay_paused"):
        return "WAL replay is paused on the standby (pg_wal_replay_resume() first, or it promotes behind)"
    if require_streaming and not facts.get("streaming"):
        status = (facts.get("wal_receiver") or {}).get("status") or "no WAL receiver"
        if not allow_data_loss:
            return ("the standby is not streaming from the primary (%s); promoting it may lose what the primary "
                    "committed after %s (last replayed transaction at %s). Confirm the data loss to go ahead"
                    % (status, facts.get("replay_lsn"), facts.get("last_replayed_at")))
    lag = facts.get("receive_replay_lag_bytes") or 0
    if max_replay_lag_bytes is not None and lag > max_replay_lag_bytes:
        return ("the standby has %d bytes of received WAL not yet replayed (bound %d)" % (lag, max_replay_lag_bytes))
    return None


def promote(conn, timeout, clock=None, sleep=None):
    """``pg_promote(wait => true)`` and then wait until a write commits (an XID is assigned and
    committed in a READ WRITE transaction). Returns ``(promoted_in_seconds, writable_after_seconds)``."""
    import time
    deadline = Deadline(timeout, clock or time.monotonic)
    seconds = max(1, int(round(deadline.remaining())))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_promote(true, %s)", (seconds,))
        ok = cur.fetchone()[0]
    promoted = deadline.elapsed()
    if not ok:
        raise ReplicaRefused("pg_promote() did not finish within %ss" % seconds)

    def try_write():
        try:
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION READ WRITE")
                    cur.execute("SELECT pg_current_xact_id()::text")
                    return cur.fetchone()[0]
        except Exception as exc:  # pylint: disable=broad-except
            return exc

    result = poll_until(try_write, lambda v: not isinstance(v, Exception), deadline,
                        **({"sleep": sleep} if sleep else {}))
    if not result:
        raise ReplicaRefused("the promoted server did not accept a write within %ss (last: %s)" % (timeout, result.last))
    return promoted, deadline.elapsed()


def allow_app_role(conn, app_role, check_mode=False):
    """Let the application role log in on this server; True if it could not before.

    Needed on a promoted standby after a planned failover: the fence's ``ALTER ROLE ... NOLOGIN``
    ran on the old primary and was replicated (roles are cluster-wide catalog rows) before the
    standby caught up, so the new primary starts with the application role refused too."""
    from psycopg import sql
    state = fence_state(conn, app_role)
    if state["app_role_can_login"]:
        return False
    if not check_mode:
        with conn.transaction():
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ WRITE")  # a leftover read-only default must not stop it
                cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(app_role)))
    return True


def clear_read_only_default(conn, check_mode=False):
    """A promoted server must take writes: reset a ``default_transaction_read_only = on`` it
    carries (a fence's setting copied by a clone or a rewind from the fenced primary). True if it did."""
    ro = _rows(conn, "SELECT setting = 'on' AS ro FROM pg_settings WHERE name = 'default_transaction_read_only'")
    if not ro[0]["ro"]:
        return False
    if not check_mode:
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM RESET default_transaction_read_only")
            cur.execute("SELECT pg_reload_conf()")
    return True


def fence_state(conn, app_role):
    rows = _rows(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (app_role,))
    if not rows:
        raise ReplicaRefused("role %r does not exist on this server" % app_role)
    ro = _rows(conn, "SELECT setting = 'on' AS ro FROM pg_settings WHERE name = 'default_transaction_read_only'")
    sessions = _rows(conn, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = %s"
                           " AND backend_type = 'client backend'", (app_role,))[0]["n"]
    return dict(app_role=app_role, app_role_can_login=rows[0]["rolcanlogin"], read_only=ro[0]["ro"],
                app_sessions=sessions)


def fence(conn, app_role, check_mode=False):
    """Make the old primary take no more writes: the application role may no longer log in,
    its sessions are terminated, and every new transaction defaults to read-only (ALTER SYSTEM
    + reload). Returns ``(before, after, terminated)``."""
    from psycopg import sql
    before = fence_state(conn, app_role)
    if check_mode:
        return before, dict(before, app_role_can_login=False, read_only=True, app_sessions=0), []
    with conn.cursor() as cur:
        if before["app_role_can_login"]:
            cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(app_role)))
        if not before["read_only"]:
            cur.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            cur.execute("SELECT pg_reload_conf()")
    terminated = pg_signal.signal_backends(conn, "terminate", pg_signal.ALL_DATABASES, users=[app_role])

    def observe():
        return fence_state(conn, app_role)

    # the reload is asynchronous: wait until the server reports it, and the sessions gone
    result = poll_until(observe, lambda s: s["read_only"] and not s["app_sessions"], Deadline(10))
    return before, result.last, terminated


def wait_caught_up(conn, application_name, timeout, clock=None, sleep=None):  # noqa: D401
    """On the primary: wait until the standby ``application_name`` has replayed everything the
    primary has written (lag 0 bytes). Returns the WaitResult (``last``: the standby's row or None)."""
    import time

    def observe():
        rows = [r for r in _rows(conn, SENDERS_SQL) if r["application_name"] == application_name]
        return rows[0] if rows else None

    return poll_until(observe, lambda r: r is not None and r["lag_bytes"] == 0 and r["state"] == "streaming",
                      Deadline(timeout, clock or time.monotonic), **({"sleep": sleep} if sleep else {}))
