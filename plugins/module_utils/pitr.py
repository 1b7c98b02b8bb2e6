# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery into a new data directory, on a spare port, verified (``apex_pitr``).

The base backup (``apex_backup state=base_backup``) is streamed from S3 into the new data directory
(sha256 checked on the way; a mismatch removes the directory), ``recovery.signal`` and the recovery
settings (``pitr_plan.recovery_settings``) are written, and the copy is started with ``pg_ctl`` as
the PostgreSQL OS user. It replays the WAL archive up to the target and promotes (or pauses). The
live server is never touched, except for a ``pg_switch_wal()`` so the WAL up to now reaches the
archive. Swapping the copy in for the live database is the role's job (a backup of the copy,
restored over the live database by the restore procedure, safety backup first).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile

from ansible_collections.apex.ops.plugins.module_utils import catalog_store
from ansible_collections.apex.ops.plugins.module_utils import pitr_plan as plan
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils.db_facts import migration_problems, read_migrations
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import count_rows, list_tables
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import find_program
from ansible_collections.apex.ops.plugins.module_utils.stream_reader import ChunkReader
from ansible_collections.apex.ops.plugins.module_utils.timestamps import isoformat, utcnow
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until

KIND = "postgres_base"
LOG_TAIL = 4000


class PitrError(Exception):
    """The recovery failed; ``details`` say where it got to."""

    def __init__(self, msg, **details):
        super(PitrError, self).__init__(msg)
        self.details = details


# ---------------------------------------------------------------------------- the OS side

def free_port():
    """A port nobody listens on now (bound and released: the server takes it a moment later)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def os_identity(os_user):
    """``(uid, gid, popen_kwargs)``: root runs PostgreSQL's programs as ``os_user`` (PostgreSQL refuses root)."""
    import pwd

    if os.geteuid() != 0:
        return os.geteuid(), os.getegid(), {}
    entry = pwd.getpwnam(os_user)
    return entry.pw_uid, entry.pw_gid, {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def server_env():
    """The environment of pg_ctl: without the caller's libpq variables (PGPORT would become the default port)."""
    return dict((k, v) for k, v in os.environ.items() if not k.startswith("PG"))


def log_tail(data_dir):
    path = os.path.join(data_dir, plan.LOG_NAME)
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def postmaster_pid(data_dir):
    """The pid of the copy's postmaster when it runs, else None."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as handle:
            pid = int(handle.readline().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def read_marker(data_dir):
    try:
        with open(os.path.join(data_dir, plan.MARKER)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def pg_ctl(pg_bin_dir, args, run_as, timeout=None):
    argv = [find_program("pg_ctl", pg_bin_dir)] + list(args)
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=server_env(),
                          timeout=timeout, check=False, **run_as)


def extract(store, manifest, data_dir, uid, gid):
    """Stream the base backup's tar into ``data_dir`` (new, mode 0700), sha256 checked; removed on a mismatch."""
    os.makedirs(data_dir, mode=0o700)
    digest = hashlib.sha256()
    reader = ChunkReader(store.iter_object(manifest["key"]), on_chunk=digest.update)
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as archive:
            archive.extractall(data_dir, filter="data")
        reader.drain()
        if reader.size != manifest["size"] or digest.hexdigest() != manifest["sha256"]:
            raise PitrError("base backup %s: size/sha256 differ from its manifest (%d bytes, %s): not used"
                            % (manifest["backup_id"], reader.size, digest.hexdigest()))
        for name in ("standby.signal", "recovery.conf", "postmaster.pid"):
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                os.unlink(path)  # a copy of a standby, or a stale file: this copy recovers on its own
        for root, dirs, files in os.walk(data_dir):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid)
        os.chown(data_dir, uid, gid)
        os.chmod(data_dir, 0o700)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise


def configure(data_dir, settings, uid, gid):
    """``recovery.signal`` (empty) and the recovery settings in ``postgresql.auto.conf``."""
    auto_conf = os.path.join(data_dir, plan.AUTO_CONF)
    existing = ""
    if os.path.exists(auto_conf):
        with open(auto_conf) as handle:
            existing = handle.read()
    for name, text in ((plan.AUTO_CONF, plan.merge_auto_conf(existing, settings)), ("recovery.signal", "")):
        path = os.path.join(data_dir, name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o600)
        os.chown(path, uid, gid)


# ---------------------------------------------------------------------------- the live server

def switch_wal(params, timeout):
    """Close the live server's current WAL segment and wait until the archiver has it.

    Without this, the last commits before the target may sit in a segment that is not archived
    yet, and recovery would end before the target. ``pg_walfile_name`` of the switch position is
    the segment just completed (also when there was nothing to switch). Best effort: an
    unreachable live server (the disaster case) is reported, not fatal.
    """
    try:
        conn = pg.connect(params, autocommit=True)
    except Exception as exc:  # noqa: BLE001 - reported, the recovery goes on from the archive
        return {"switched": False, "error": "live server not reachable: %s" % exc}
    with contextlib.closing(conn):
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]

        def pending():
            return conn.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name = %s",
                                (segment + ".ready",)).fetchone()[0]

        waited = poll_until(pending, lambda count: count == 0, Deadline(timeout), interval=0.05, max_interval=0.5)
        archiver = conn.execute("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
                                ).fetchone()
    return {"switched": True, "segment": segment, "archived": bool(waited.ok),
            "waited_seconds": round(waited.elapsed, 3), "last_archived_wal": archiver[0],
            "archive_failures": archiver[1], "last_failed_wal": archiver[2]}


# ---------------------------------------------------------------------------- the recovered copy

def copy_params(params, port):
    return dict(params, login_host="127.0.0.1", login_port=int(port))


def server_state(params, action):
    """What the copy says about its recovery (None while it does not accept connections)."""
    try:
        conn = pg.connect(params, autocommit=True, dbname="postgres")
    except Exception:  # noqa: BLE001 - not up yet; the postmaster check tells a crash apart
        return None
    with contextlib.closing(conn):
        row = conn.execute("SELECT pg_is_in_recovery(), "
                           "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END, "
                           "pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text, "
                           "(SELECT timeline_id FROM pg_control_checkpoint())").fetchone()
    return {"in_recovery": row[0], "pause_state": row[1], "action": action,
            "last_replay_time": isoformat(row[2]) if row[2] else None, "replay_lsn": row[3], "timeline": row[4]}


def wait_recovered(params, action, data_dir, timeout):
    """Until the copy promoted (or paused at the target); fails at once when its postmaster died."""
    seen = {}

    def fetch():
        seen["alive"] = postmaster_pid(data_dir) is not None
        return server_state(params, action) if seen["alive"] else None

    def done(state):
        if not seen.get("alive"):
            return True  # dead: nothing more to wait for
        if state is None:
            return False
        return not state["in_recovery"] if action == "promote" else state["pause_state"] == "paused"

    waited = poll_until(fetch, done, Deadline(timeout), interval=0.1, max_interval=1.0)
    if not seen.get("alive"):
        facts = plan.read_recovery_log(log_tail(data_dir))
        reason = ("the archive has no WAL past the target (PostgreSQL: recovery ended before the target was "
                  "reached)" if facts["target_not_reached"] else "its server stopped")
        raise PitrError("recovery failed: %s. Log tail: %s" % (reason, log_tail(data_dir)[-LOG_TAIL:]),
                        recovery=facts)
    if not waited.ok:
        raise PitrError("recovery did not %s within %ss; last seen: %s" % (
            "promote" if action == "promote" else "pause at the target", timeout, waited.last),
            server=waited.last)
    return waited.last, round(waited.elapsed, 3)


def database_facts(params, db, tables=None):
    """Row counts and ``_sqlx_migrations`` of ``db`` on a server."""
    with contextlib.closing(pg.connect(params, dbname=db)) as conn:
        with conn.cursor() as cur:
            names = list_tables(cur, tables)
            counts = count_rows(cur, names)
        migrations = read_migrations(conn)
    return {"row_counts": counts, "migrations": migrations}


def verify(params, copy, live_params, target, action, data_dir, db, tables=None):
    """The recovered copy's checks: target reached (log + state), row counts, migrations; the live ones beside."""
    server = server_state(copy, action)
    recovered = database_facts(copy, db, tables)
    log_facts = plan.read_recovery_log(log_tail(data_dir))
    problems_of_migrations = migration_problems(recovered["migrations"])
    reached, problems = plan.judge(target, log_facts, server or {}, problems_of_migrations)
    try:
        live = database_facts(live_params, db, list(recovered["row_counts"]))
    except Exception as exc:  # noqa: BLE001 - the live server may be the thing that is broken
        live = {"error": str(exc)}
    return {"ok": not problems, "target_reached": reached, "problems": problems, "server": server,
            "recovery": log_facts, "database": db, "row_counts": recovered["row_counts"],
            "migrations": recovered["migrations"], "live": live,
            "rows": plan.compare_counts(recovered["row_counts"], live.get("row_counts"))}


# ---------------------------------------------------------------------------- states

def recover(params, store, prefix, cluster, data_dir, target_time, action="promote", timeline="latest",
            wal_archive=None, command=None, port=0, os_user="postgres", pg_bin_dir=None, backup_id=None,
            switch=True, archive_timeout=60.0, recovery_timeout=600.0, db="apex", tables=None, check_mode=False):
    """``state=present``: the copy recovered to ``target_time``, running on a spare port, verified."""
    target = plan.parse_target(target_time, utcnow())
    restore_cmd = plan.restore_command(wal_archive, command)
    data_dir = os.path.abspath(data_dir)
    existing = read_marker(data_dir)
    entries, dummy, manifests, dummy = catalog_store.load_catalog(store, prefix, KIND, cluster)
    chosen = plan.choose_base_backup(entries, target, backup_id or (existing or {}).get("backup_id"))
    if existing is None and os.path.exists(data_dir) and os.listdir(data_dir):
        raise plan.PitrRefused("data_dir %s exists and is not a recovered copy of apex_pitr: refusing to touch it"
                               % data_dir)
    wanted = plan.marker(chosen["backup_id"], target, action, port or 0, data_dir)
    if existing is not None:
        mismatch = plan.marker_mismatch(existing, wanted)
        if mismatch:
            raise plan.PitrRefused("data_dir %s holds another recovery (%s): remove it first (state=absent)"
                                   % (data_dir, mismatch))
        port = existing["port"]
    result = {"backup_id": chosen["backup_id"], "base_backup": chosen, "target_time": plan.target_text(target),
              "action": action, "data_dir": data_dir, "restore_command": restore_cmd,
              "port": port or None, "host": "127.0.0.1"}
    if check_mode:
        result["plan"] = "reuse the running copy" if existing else "restore %s into %s and recover to %s" % (
            chosen["backup_id"], data_dir, result["target_time"])
        return dict(changed=existing is None, pitr=result, msg=result["plan"])

    uid, gid, run_as = os_identity(os_user)
    changed = False
    timings = {}
    clock = Deadline(None)
    if existing is None:
        result["wal_switch"] = switch_wal(params, archive_timeout) if switch else {"switched": False}
        extract(store, manifests[chosen["backup_id"]], data_dir, uid, gid)
        timings["extract_seconds"] = round(clock.elapsed(), 3)
        port = port or free_port()
        wanted["port"] = port
        configure(data_dir, plan.recovery_settings(target, action, restore_cmd, port, data_dir, timeline), uid, gid)
        with open(os.path.join(data_dir, plan.MARKER), "w") as handle:
            json.dump(dict(wanted, created_at=isoformat(utcnow())), handle)
        changed = True
    result["port"] = port
    if postmaster_pid(data_dir) is None:
        started = pg_ctl(pg_bin_dir, ["start", "-D", data_dir, "-l", os.path.join(data_dir, plan.LOG_NAME), "-s"],
                         run_as, timeout=60)
        if started.returncode != 0:
            raise PitrError("pg_ctl start of the recovered copy failed (%s): %s. Log tail: %s" % (
                started.returncode, (started.stderr or started.stdout).strip(), log_tail(data_dir)[-LOG_TAIL:]))
        changed = True
    copy = copy_params(params, port)
    state, waited = wait_recovered(copy, action, data_dir, recovery_timeout)
    timings["recovery_seconds"] = waited
    result["server"] = state
    result["verification"] = verify(params, copy, params, target, action, data_dir, db, tables)
    timings["total_seconds"] = round(clock.elapsed(), 3)
    result["timings"] = timings
    outcome = dict(changed=changed, pitr=result)
    if not result["verification"]["ok"]:
        outcome.update(failed=True, msg="recovered copy on port %s FAILED verification: %s" % (
            port, "; ".join(result["verification"]["problems"])))
    else:
        outcome["msg"] = "recovered %s to %s on port %s (%s): %s" % (
            chosen["backup_id"], result["target_time"], port, data_dir,
            ", ".join("%s=%s" % kv for kv in sorted(result["verification"]["row_counts"].items())))
    return outcome


def remove(data_dir, os_user="postgres", pg_bin_dir=None, check_mode=False):
    """``state=absent``: stop the recovered copy and remove its directory (only one apex_pitr made)."""
    data_dir = os.path.abspath(data_dir)
    if not os.path.exists(data_dir):
        return dict(changed=False, pitr={"data_dir": data_dir}, msg="%s does not exist" % data_dir)
    marker = read_marker(data_dir)
    if marker is None:
        raise plan.PitrRefused("%s has no %s: not a recovered copy of apex_pitr, refusing to remove it"
                               % (data_dir, plan.MARKER))
    running = postmaster_pid(data_dir) is not None
    if check_mode:
        return dict(changed=True, pitr=dict(marker, running=running), msg="would stop and remove %s" % data_dir)
    if running:
        dummy, dummy, run_as = os_identity(os_user)
        stopped = pg_ctl(pg_bin_dir, ["stop", "-D", data_dir, "-m", "fast", "-s", "-w"], run_as, timeout=120)
        if stopped.returncode != 0 and postmaster_pid(data_dir) is not None:
            raise PitrError("pg_ctl stop of the recovered copy failed: %s" % (stopped.stderr or stopped.stdout))
    shutil.rmtree(data_dir)
    return dict(changed=True, pitr=dict(marker, running=False, removed=True),
                msg="stopped and removed the recovered copy in %s" % data_dir)
