# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a PostgreSQL backup: streamed into ``pg_restore --single-transaction`` (jobs = 1),
holding the last chunk back until the checksum is known, so a corrupt object never commits; or
downloaded to a temp file for ``pg_restore -j N`` (parallel restore needs a seekable file).
Afterwards the target's owner and privileges are put back and read back, and the row counts
compared with the manifest.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import os
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils import pg_privileges
from ansible_collections.apex.ops.plugins.module_utils import pg_signal
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils import waiting
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import admin_connect, count_in_database, create_database
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import database_exists, database_owner, database_sessions
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import drop_database, protected_target_refusal
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import STDERR_TAIL, BackupError, ProcessDeadline, Sink
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import exit_description, find_program, libpq_env, restore_argv
from ansible_collections.apex.ops.plugins.module_utils.pg_verify import checksum_result, stream_through
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact


class LockWatch(threading.Thread):
    """Cancel a statement of ours that waits on a lock longer than ``lock_timeout`` seconds.

    PostgreSQL's own ``lock_timeout`` cannot be used: every archive pg_dump writes starts with
    ``SET lock_timeout = 0``, which overrides PGOPTIONS and role/database settings. So the wait is
    observed from outside (``pg_stat_activity``: our ``application_name``, ``wait_event_type =
    'Lock'``, the same statement for ``lock_timeout``) and the statement is cancelled
    (``pg_cancel_backend``): pg_restore --exit-on-error then fails and its transaction rolls back.
    """

    def __init__(self, params, dbname, appname, lock_timeout, poll=0.25):
        super(LockWatch, self).__init__(name="lock-watch", daemon=True)
        self.params, self.dbname, self.appname = params, dbname, appname
        self.lock_timeout = lock_timeout
        self.poll = poll
        self.stopped = threading.Event()
        self.cancelled = []
        self.error = None

    def run(self):
        seen = {}
        try:
            with contextlib.closing(admin_connect(self.params)) as conn:
                while not self.stopped.wait(self.poll):
                    rows = conn.execute("""
                        SELECT a.pid, a.query_start::text, left(a.query, 200), pg_blocking_pids(a.pid),
                               (SELECT array_agg(coalesce(nullif(b.application_name, ''), b.usename) || '/' || b.pid)
                                  FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid)))
                          FROM pg_stat_activity a
                         WHERE a.datname = %s AND a.application_name = %s AND a.wait_event_type = 'Lock'""",
                                        (self.dbname, self.appname)).fetchall()
                    now = time.monotonic()
                    blocked = set()
                    for pid, query_start, query, blockers, names in rows:
                        key = (pid, query_start)
                        blocked.add(key)
                        first = seen.setdefault(key, now)
                        if now - first >= self.lock_timeout and key not in [c["key"] for c in self.cancelled]:
                            # our own statement, named by pid and application_name (pg_signal's rule)
                            pg_signal.signal_backends(conn, "cancel", [self.dbname], pids=[pid],
                                                      applications=[self.appname])
                            self.cancelled.append({"key": key, "pid": pid, "statement": redact(query),
                                                   "blocking_pids": list(blockers or []),
                                                   "blocking_sessions": list(names or []),
                                                   "waited_seconds": round(now - first, 1)})
                    for key in list(seen):
                        if key not in blocked:
                            del seen[key]
        except Exception as exc:  # noqa: BLE001 - the overall deadline still applies
            self.error = str(exc)

    def stop(self):
        self.stopped.set()
        self.join(5)

    def report(self):
        return [dict((k, v) for k, v in c.items() if k != "key") for c in self.cancelled]


def terminate_backends(params, dbname, appname):
    """Terminate the server sessions of a killed client (a backend waiting on a lock would not notice).

    Ours only: named by their ``application_name`` (``apex.ops-restore-<pid>``), in ``dbname``.
    """
    try:
        with contextlib.closing(admin_connect(params)) as conn:
            rows = pg_signal.signal_backends(conn, "terminate", [dbname], applications=[appname], columns="a.pid")
        return [r["pid"] for r in rows]
    except Exception:  # noqa: BLE001 - best effort; the disconnect ends them eventually
        return []


def start_lock_watch(params, dbname, appname, lock_timeout):
    if not lock_timeout or lock_timeout <= 0:
        return None
    watch = LockWatch(params, dbname, appname, lock_timeout)
    watch.start()
    return watch


def before_privileges(params, manifest, target_db, existed):
    """The privileges a restore must keep (``pg_privileges``), and where they come from.

    ``target``: the existing target, read before anything changes. ``backup``: the target does
    not exist (a failed recreate dropped it, a disaster) and the backup is of a database of the
    same name: its manifest recorded them (only when every role it names exists here).
    """
    out = {"source": None, "before": None, "after": None, "match": None, "differences": [], "applied": [],
           "errors": []}
    if existed:
        with contextlib.closing(pg.connect(params, dbname=target_db)) as conn:
            out["before"] = pg_privileges.capture(conn, target_db)
        out["source"] = "target"
        return out
    kept = manifest.get("privileges")
    if kept and kept.get("database") == target_db:
        with contextlib.closing(admin_connect(params)) as conn:
            missing = pg_privileges.missing_roles(conn, pg_privileges.roles_named(kept))
        if missing:
            out["note"] = "the privileges recorded in the backup are not applied: role(s) %s do not exist" % (
                ", ".join(missing))
        else:
            out["before"] = kept
            out["source"] = "backup"
    return out


def restore_privileges(params, target_db, privileges, want):
    """Re-apply ``want`` to the restored target, read it back and compare (updates ``privileges``)."""
    if want is None:
        return privileges
    with contextlib.closing(pg.connect(params, dbname=target_db)) as conn:
        applied = pg_privileges.apply(conn, target_db, want)
        after = pg_privileges.capture(conn, target_db)
    differences = pg_privileges.compare(want, after)
    privileges.update(after=after, applied=applied["statements"], errors=applied["errors"],
                      differences=differences, match=not differences)
    if want.get("owner") != (privileges["before"] or {}).get("owner"):
        privileges["expected_owner"] = want.get("owner")
    return privileges


def restore_postgres(params, store, manifest, target_db, jobs=1, temp_dir=None, mode="clean", owner=None,
                     no_owner=False, analyze=True, pg_bin_dir=None, secrets=(), progress=None, timeout=None,
                     lock_timeout=None):
    """Restore a backup into ``target_db``; count rows afterwards and compare with the manifest.

    ``mode``: ``clean`` restores into the existing database with ``--clean --if-exists``
    (objects of the dump are dropped and recreated; with jobs=1 all in one transaction);
    ``recreate`` drops and creates the database first (same owner as before unless ``owner``).
    A missing target is created.
    Preconditions (confirmation, verification, safety backup) are the caller's.

    ``progress`` (a dict, updated in place) tells the caller how far it got: ``stage``
    (``restore`` then ``verify``) and ``restore_started`` (the target was touched: dropped,
    created or fed to pg_restore). A failure's details say whether the target is unchanged
    (``target_unchanged``: a rolled-back single transaction over the existing database).

    ``timeout``: overall deadline (seconds) of the download and pg_restore; at the deadline
    pg_restore is killed, its server session terminated, and the restore fails (the single
    transaction rolls back). ``lock_timeout``: a statement of pg_restore waiting that long for a
    lock held by someone else is cancelled (:class:`LockWatch`), so the restore fails instead of
    hanging.
    """
    progress = progress if progress is not None else {}
    progress.setdefault("restore_started", False)
    progress["stage"] = "restore"
    catalog.check_db_name(target_db, "target_db")
    refusal = protected_target_refusal(params, target_db)
    if refusal:
        raise BackupError(refusal, refused=True, target_unchanged=True)
    pg_restore = find_program("pg_restore", pg_bin_dir)
    result = {"target_db": target_db, "backup_id": manifest["backup_id"], "jobs": jobs, "mode": mode}
    existed = database_exists(params, target_db)
    result["target_existed"] = existed
    privileges = result["privileges"] = before_privileges(params, manifest, target_db, existed)
    # what the target must look like afterwards: as before, with target_owner when it creates the database
    want = pg_privileges.expected(privileges["before"], owner if (mode == "recreate" or not existed) else None)
    if not existed and owner is None and privileges["before"]:
        owner = privileges["before"]["owner"]
    created = False
    dropped = False
    if existed and mode == "recreate":
        # a session whose client just closed (our own row count, the safety backup) leaves
        # pg_stat_activity a moment later: look again briefly before refusing
        sessions = waiting.poll_until(lambda: database_sessions(params, target_db), lambda found: not found,
                                      waiting.Deadline(3.0), interval=0.1, max_interval=0.5).last
        if sessions:
            raise BackupError("cannot recreate %s: %d session(s) still connected; %s unchanged" % (
                target_db, len(sessions), target_db), sessions=sessions, target_unchanged=True)
        owner = owner or database_owner(params, target_db)
        result["owner"] = owner
        progress["restore_started"] = True
        drop_database(params, target_db)
        dropped = True
        existed = False
    if not existed:
        progress["restore_started"] = True
        try:
            create_database(params, target_db, owner=owner)
        except Exception as exc:  # noqa: BLE001 - say what state the target is in
            raise BackupError("creating %s failed: %s: %s; %s" % (
                target_db, type(exc).__name__, str(exc).strip(),
                "%s was dropped for the recreate and is gone" % target_db if dropped else "nothing was restored"),
                target_unchanged=not dropped, target_dropped=dropped, privileges=privileges)
        created = True
    result["created"] = created
    appname = "apex.ops-restore-%d" % os.getpid()
    env = libpq_env(params, target_db, appname=appname)
    started = time.monotonic()
    temp_path = None
    deadline = ProcessDeadline(timeout)
    watch = None
    result["timeout_seconds"] = timeout or None
    result["lock_timeout_seconds"] = lock_timeout or None

    def kill_sessions():
        return terminate_backends(params, target_db, appname)

    def timed_out():
        terminated = deadline.terminated + kill_sessions()
        atomic = jobs <= 1 and not dropped
        return BackupError("restore into %s did not finish within restore_timeout (%ss): pg_restore killed, its "
                           "session(s) terminated; %s" % (
                               target_db, timeout, ("the single transaction rolled back: %s unchanged" % target_db)
                               if atomic else "the target is PARTIALLY RESTORED"),
                           timed_out=True, terminated_backends=terminated, single_transaction=jobs <= 1,
                           target_unchanged=atomic)
    try:
        if jobs > 1:
            # pg_restore -j needs to seek in the archive: a temp file, checksum-verified before use
            handle, temp_path = tempfile.mkstemp(prefix="apex-restore-", suffix=".dump", dir=temp_dir)
            with os.fdopen(handle, "wb") as out:
                digest = hashlib.sha256()
                size = 0
                for chunk in store.iter_object(manifest["key"]):
                    if deadline.check():
                        raise BackupError("restore_timeout (%ss) reached while downloading the backup; nothing "
                                          "restored" % timeout, timed_out=True, target_unchanged=not dropped)
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            check = checksum_result(manifest, size, digest.hexdigest())
            result["temp_file"] = {"path": temp_path, "bytes": size}
            if not check["ok"]:
                raise BackupError("downloaded backup does not match its manifest (%s); nothing restored"
                                  % check["error"], checksum=check, target_unchanged=not dropped)
            progress["restore_started"] = True
            # own process group: at the deadline the workers of pg_restore -j go too
            proc = subprocess.Popen(restore_argv(pg_restore, target_db, clean=existed, jobs=jobs, no_owner=no_owner,
                                                 path=temp_path),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env, start_new_session=True)
            deadline.watch(proc, group=True, before_kill=kill_sessions)
            watch = start_lock_watch(params, target_db, appname, lock_timeout)
            try:
                err = proc.communicate()[1]
            finally:
                deadline.cancel()
                if watch is not None:
                    watch.stop()
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if deadline.expired:
                raise timed_out()
            run = {"returncode": proc.returncode, "stderr": err.decode("utf-8", "replace")[-STDERR_TAIL:]}
        else:
            progress["restore_started"] = True
            sink = Sink("restore", restore_argv(pg_restore, target_db, clean=existed, single_transaction=True,
                                                no_owner=no_owner), env)
            state = ("%s unchanged" % target_db) if not dropped else (
                "%s was dropped for the recreate and is gone" % target_db)

            def gate(size, sha256):
                check = checksum_result(manifest, size, sha256)
                if not check["ok"]:
                    sink.kill()  # before the last chunk: the single transaction never commits
                    raise BackupError("backup stream does not match its manifest (%s); pg_restore stopped before "
                                      "the end, its transaction rolled back: %s" % (check["error"], state),
                                      checksum=check, target_unchanged=not dropped)

            deadline.watch(sink.proc, before_kill=kill_sessions)
            watch = start_lock_watch(params, target_db, appname, lock_timeout)
            try:
                stream_through(store, manifest, [sink], hold_last=True, on_complete=gate,
                               should_stop=lambda: deadline.expired)
                run = sink.finish()  # the deadline's timer kills pg_restore, so this returns
            finally:
                deadline.cancel()
                if watch is not None:
                    watch.stop()
                if sink.proc.poll() is None:
                    sink.kill()
            if deadline.expired:
                raise timed_out()
        result["restore_seconds"] = round(time.monotonic() - started, 3)
        if run["returncode"] != 0:
            atomic = jobs <= 1 and not dropped
            if watch is not None and watch.cancelled:
                waits = watch.report()
                raise BackupError("pg_restore waited more than restore_lock_timeout (%ss) for a lock held by %s; its "
                                  "statement was cancelled and %s (%s): %s" % (
                                      lock_timeout, ", ".join(waits[0]["blocking_sessions"] or ["another session"]),
                                      "the single transaction rolled back: %s unchanged" % target_db if atomic
                                      else "the restore failed part-way",
                                      exit_description("pg_restore", run["returncode"]),
                                      redact(run["stderr"], secrets) or "(no output)"),
                                  lock_waits=waits, single_transaction=jobs <= 1, target_unchanged=atomic)
            raise BackupError("%s restoring into %s: %s" % (
                exit_description("pg_restore", run["returncode"]), target_db,
                redact(run["stderr"], secrets) or "(no output)"),
                single_transaction=jobs <= 1, target_unchanged=atomic)
    except BaseException as exc:
        if isinstance(exc, BackupError):
            exc.details.setdefault("target_unchanged", False)
            exc.details["target_dropped"] = dropped
            exc.details.setdefault("privileges", privileges)
        if created:
            try:
                drop_database(params, target_db, force=True)
                result["dropped_created_target"] = True
                if isinstance(exc, BackupError):
                    exc.details["dropped_created_target"] = True
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        if temp_path and os.path.exists(temp_path):
            os.unlink(temp_path)
    progress["stage"] = "verify"
    # privileges first: whatever the row counts say, the database is left with the owner and grants it had
    restore_privileges(params, target_db, privileges, want)
    expected = manifest.get("row_counts") or {}
    actual = count_in_database(params, target_db, sorted(expected))
    diffs = catalog.compare_counts(expected, actual)
    result.update(row_counts=actual, differences=diffs)
    if diffs:
        raise BackupError("restored %s but row counts differ from the manifest in %d table(s): %s" % (
            target_db, len(diffs), ", ".join("%s %s != %s" % (d["table"], d["actual"], d["expected"]) for d in diffs[:5])),
            restore=result, privileges=privileges, target_unchanged=False)
    if privileges["match"] is False:
        raise BackupError("restored %s (row counts match the manifest) but its privileges are not what they were: %s" % (
            target_db, "; ".join(privileges["differences"])), restore=result, privileges=privileges,
            target_unchanged=False)
    if analyze:
        with contextlib.closing(pg.connect(params, dbname=target_db)) as conn:
            conn.execute("ANALYZE")
        result["analyzed"] = True
    return result
