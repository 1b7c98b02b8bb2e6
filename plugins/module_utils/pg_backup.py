# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL backup, verification and restore: pg_dump/pg_restore orchestration.

* backup: a REPEATABLE READ transaction exports a snapshot; per-table ``count(*)`` runs in it
  (in a thread, while the dump runs); ``pg_dump -Fc --snapshot=<id>`` streams its stdout
  straight into an S3 multipart upload. pg_dump's exit status decides: the upload is completed
  only after pg_dump exited 0, otherwise aborted. The manifest is written last.
* verify: one streamed pass over the stored object feeds sha256 (checksum), ``pg_restore
  --list`` (toc) and ``pg_restore`` into a scratch database (deep) at the same time.
* restore: streamed into ``pg_restore --single-transaction`` (jobs = 1), holding the last chunk
  back until the checksum is known, so a corrupt object never commits; or downloaded to a temp
  file for ``pg_restore -j N`` (parallel restore needs a seekable file).

Every external program runs as an argv list; credentials go through the environment (libpq's
``PGPASSWORD``), never argv, and error output is redacted before it is returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils import pg_privileges
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils import waiting
from ansible_collections.apex.ops.plugins.module_utils.s3_store import MIB, S3StoreError

STDERR_TAIL = 16 * 1024
_TOC_DATA_RE = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (.+) (\S+)$")


class BackupError(Exception):
    """A backup/verify/restore step failed; ``details`` is returned with the failure."""

    def __init__(self, msg, **details):
        super(BackupError, self).__init__(msg)
        self.details = details


class Interrupted(Exception):
    """The module received SIGTERM/SIGINT/SIGHUP (e.g. an Ansible task timeout)."""


@contextlib.contextmanager
def interruptible():
    """Turn termination signals into :class:`Interrupted` so cleanup (abort, kill) runs."""
    def handler(signum, frame):
        raise Interrupted("interrupted by signal %s" % signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------- programs

def find_program(name, bin_dir=None):
    candidates = []
    if bin_dir:
        candidates.append(os.path.join(bin_dir, name))
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BackupError("%s not found (looked in %s and PATH); set pg_bin_dir" % (name, bin_dir or "-"))


def program_version(path):
    out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=30, check=False)
    return out.stdout.decode("utf-8", "replace").strip()


def major_of(version_text):
    match = re.search(r"(\d+)(?:\.(\d+))?", version_text or "")
    return int(match.group(1)) if match else None


class TailReader(threading.Thread):
    """Drain a pipe in the background; keep the last ``limit`` bytes (stderr) or everything."""

    def __init__(self, pipe, limit=STDERR_TAIL):
        super(TailReader, self).__init__(daemon=True)
        self.pipe = pipe
        self.limit = limit
        self.data = b""
        self.start()

    def run(self):
        try:
            for chunk in iter(lambda: self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536), b""):
                self.data += chunk
                if self.limit and len(self.data) > self.limit:
                    self.data = self.data[-self.limit:]
        except (OSError, ValueError):
            pass

    def text(self, timeout=10):
        self.join(timeout)
        return self.data.decode("utf-8", "replace").strip()


_STDERR_ERROR_RE = re.compile(r"^(?:pg_dump|pg_restore)(?:\[[^\]]*\])?: (?:error|fatal): ", re.IGNORECASE)


def stderr_errors(text):
    """The ``pg_dump: error: ...`` (or ``fatal:``) lines of a program's stderr.

    pg_dump reports every failure this way; an exit status 0 with such a line is a dump that
    cannot be trusted (a wrapper or a future version swallowing the status), so the backup fails.
    ``warning:`` lines are kept in the manifest, not fatal.
    """
    return [line.strip() for line in (text or "").splitlines() if _STDERR_ERROR_RE.match(line.strip())]


def exit_description(program, returncode):
    if returncode is None:
        return "%s did not exit" % program
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return "%s was killed by signal %s" % (program, name)
    return "%s exited with status %d" % (program, returncode)


def widen_pipe(pipe, size=MIB):
    """Linux: a 1 MiB pipe instead of 64 KiB, so pg_dump rarely waits for the reader."""
    try:
        import fcntl
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError, ValueError):
        pass


def stop_process(proc, grace=5.0):
    """Terminate, then kill, a child process; always reap it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except OSError:
        pass


class Sink(object):
    """A child process fed on stdin (pg_restore): stdout/stderr drained in threads."""

    def __init__(self, name, argv, env, capture_stdout=False):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, close_fds=True)
        self.stdout = TailReader(self.proc.stdout, limit=0) if capture_stdout else None
        self.stderr = TailReader(self.proc.stderr)
        self.open = True
        self.bytes_fed = 0

    def write(self, chunk):
        if not self.open:
            return False
        try:
            self.proc.stdin.write(chunk)
            self.bytes_fed += len(chunk)
            return True
        except (BrokenPipeError, ValueError):
            # the program stopped reading (pg_restore --list needs only the header): its exit
            # status tells whether that was fine
            self.open = False
            return False

    def finish(self, timeout=None):
        if self.open:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            self.open = False
        self.proc.wait(timeout=timeout)
        return {
            "returncode": self.proc.returncode,
            "stdout": self.stdout.text() if self.stdout else "",
            "stderr": self.stderr.text(),
        }

    def kill(self):
        self.open = False
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        stop_process(self.proc)


# ---------------------------------------------------------------------------- SQL helpers

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


# ---------------------------------------------------------------------------- backup

def plan_backup(params, store, prefix, db, tables=None, pg_bin_dir=None):
    """What a backup would do (check mode): versions, tables, the key; touches nothing."""
    catalog.check_db_name(db)
    pg_dump = find_program("pg_dump", pg_bin_dir)
    with contextlib.closing(pg.connect(params, dbname=db)) as conn:
        with conn.cursor() as cur:
            facts = server_facts(cur)
            names = list_tables(cur, tables)
    store.check_bucket()
    backup_id = catalog.new_backup_id()
    keys = catalog.backup_keys(prefix, "postgres", db, backup_id)
    facts.update(database=db, tables=names, pg_dump_version=program_version(pg_dump), key=keys["data"],
                 manifest_key=keys["manifest"])
    return facts


def backup_postgres(params, store, prefix, db, tables=None, tags=(), part_size=16 * MIB, concurrency=2,
                    compress=None, pg_bin_dir=None, secrets=(), extra_args=()):
    """Stream ``pg_dump -Fc`` of ``db`` into S3 and write its manifest. Returns the manifest."""
    catalog.check_db_name(db)
    pg_dump = find_program("pg_dump", pg_bin_dir)
    dump_version = program_version(pg_dump)
    started = catalog.utcnow()
    clock_start = time.monotonic()
    backup_id = catalog.new_backup_id(started)
    keys = catalog.backup_keys(prefix, "postgres", db, backup_id)
    state = {"backup_id": backup_id, "key": keys["data"], "phase": "snapshot"}

    conn = pg.connect(params, dbname=db, autocommit=True)
    proc = None
    writer = None
    try:
        with conn.cursor() as cur:
            facts = server_facts(cur)
            if (major_of(dump_version) or 0) < facts["server_version_num"] // 10000:
                raise BackupError("%s is older than the server (%s): it cannot dump it"
                                  % (dump_version, facts["server_version"]))
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            names = list_tables(cur, tables)
            # the database's owner, ACL and default privileges: a restore of this backup into a
            # database of the same name that no longer exists (a rollback, a disaster) gets them back
            privileges = pg_privileges.capture(conn, db)
        state.update(snapshot=snapshot, phase="upload-start")

        writer = store.writer(keys["data"], part_size=part_size, concurrency=concurrency,
                              metadata={"apex-backup-id": backup_id, "apex-kind": "postgres"})
        writer.start()  # S3 problems surface here, before pg_dump runs

        argv = [pg_dump, "--format=custom", "--snapshot=%s" % snapshot, "--no-password"]
        if compress is not None:
            argv.append("--compress=%d" % compress)
        argv.extend(extra_args)
        env = dict(os.environ)
        env.update(pg.libpq_environment(params, dbname=db))
        env["PGAPPNAME"] = "apex.ops-backup"
        state["phase"] = "dump"
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, bufsize=MIB, close_fds=True)
        widen_pipe(proc.stdout)
        stderr = TailReader(proc.stderr)

        # exact row counts in the exported snapshot, while pg_dump streams the same snapshot
        counter = {}

        def count():
            try:
                with conn.cursor() as ccur:
                    counter["counts"] = count_rows(ccur, names)
            except Exception as exc:  # noqa: BLE001 - reported below
                counter["error"] = exc

        count_thread = threading.Thread(target=count, name="row-counts", daemon=True)
        count_thread.start()

        def before_complete():
            # pg_dump's exit status decides; the upload completes only after a clean exit
            proc.wait()
            if proc.returncode != 0:
                raise BackupError("%s; upload aborted, no manifest written. pg_dump said: %s" % (
                    exit_description("pg_dump", proc.returncode),
                    catalog.redact(stderr.text(), secrets) or "(nothing)"),
                    pg_dump_returncode=proc.returncode)
            errors = stderr_errors(stderr.text())
            if errors:
                raise BackupError("pg_dump exited 0 but reported %d error(s); upload aborted, no manifest written. "
                                  "pg_dump said: %s" % (len(errors), catalog.redact("; ".join(errors[:5]), secrets)),
                                  pg_dump_returncode=0, pg_dump_errors=len(errors))
            count_thread.join()
            if "error" in counter:
                raise BackupError("counting rows in the snapshot failed: %s" % counter["error"])

        upload = writer.upload_stream(proc.stdout, before_complete=before_complete)
        state["phase"] = "manifest"
        conn.execute("COMMIT")
        finished = catalog.utcnow()
        manifest = catalog.build_manifest(
            "postgres", db, backup_id, keys, upload, started, finished, tags=tags,
            database=db, format="custom", compression=compress, part_size=part_size, snapshot=snapshot,
            server_version=facts["server_version"], server_version_num=facts["server_version_num"],
            pg_dump_version=dump_version, row_counts=counter["counts"], tables=names, privileges=privileges,
            pg_dump_stderr=catalog.redact(stderr.text(), secrets) or None,
            duration_seconds=round(time.monotonic() - clock_start, 3),
        )
        try:
            store.put_json(keys["manifest"], manifest)
        except S3StoreError:
            # data without a manifest is an orphan (never "complete"); remove it if we can
            try:
                store.delete([keys["data"]])
            except S3StoreError:
                pass
            raise
        return manifest
    except BaseException as exc:
        stop_process(proc)
        if writer is not None and not writer.completed:
            try:
                writer.abort()
            except S3StoreError as abort_exc:
                state["abort_error"] = str(abort_exc)
        state["upload_aborted"] = bool(writer is not None and writer.aborted)
        if isinstance(exc, BackupError):
            exc.details.setdefault("last_state", state)
        elif isinstance(exc, Interrupted):
            raise BackupError("backup %s interrupted (%s) during %s; upload aborted: %s, no manifest written"
                              % (backup_id, exc, state["phase"], state["upload_aborted"]), last_state=state)
        raise
    finally:
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------- reading back

def parse_toc(text):
    """Facts from ``pg_restore --list`` output: format, entry count, TABLE DATA names."""
    facts = {"format": None, "toc_entries": None, "dumped_from": None, "table_data": []}
    for line in text.splitlines():
        if line.startswith(";"):
            body = line[1:].strip()
            if body.startswith("Format:"):
                facts["format"] = body.split(":", 1)[1].strip()
            elif body.startswith("TOC Entries:"):
                facts["toc_entries"] = int(body.split(":", 1)[1].strip())
            elif body.startswith("Dumped from database version:"):
                facts["dumped_from"] = body.split(":", 1)[1].strip()
            continue
        match = _TOC_DATA_RE.match(line.strip())
        if match:
            facts["table_data"].append(qualified(match.group(1), match.group(2)))
    return facts


def stream_through(store, manifest, sinks, hold_last=False, on_complete=None, should_stop=None):
    """Read the object once, feed every sink, hash on the way; returns (size, sha256).

    ``hold_last``: keep the final chunk back and call ``on_complete(size, sha256)`` before
    delivering it; when that raises, the sinks never see the end of the stream.
    ``should_stop()``: checked per chunk; when true, stop reading (sha256 is then None and
    the sinks never see the end).
    """
    digest = hashlib.sha256()
    size = 0
    pending = None
    for chunk in store.iter_object(manifest["key"]):
        if should_stop is not None and should_stop():
            return size, None
        digest.update(chunk)
        size += len(chunk)
        if hold_last:
            if pending is not None:
                for sink in sinks:
                    sink.write(pending)
            pending = chunk
        else:
            for sink in sinks:
                sink.write(chunk)
    if on_complete is not None:
        on_complete(size, digest.hexdigest())
    if pending is not None:
        for sink in sinks:
            sink.write(pending)
    return size, digest.hexdigest()


def checksum_result(manifest, size, sha256):
    ok = size == manifest.get("size") and sha256 == manifest.get("sha256")
    result = {"ok": ok, "size": size, "sha256": sha256, "expected_size": manifest.get("size"),
              "expected_sha256": manifest.get("sha256")}
    if not ok:
        what = []
        if size != manifest.get("size"):
            what.append("size %s != manifest %s" % (size, manifest.get("size")))
        if sha256 != manifest.get("sha256"):
            what.append("sha256 differs from the manifest")
        result["error"] = "; ".join(what)
    return result


def toc_result(manifest, run):
    facts = parse_toc(run["stdout"])
    result = {"ok": False, "format": facts["format"], "toc_entries": facts["toc_entries"],
              "table_data_entries": len(facts["table_data"]), "dumped_from": facts["dumped_from"]}
    if run["returncode"] != 0:
        result["error"] = "%s: %s" % (exit_description("pg_restore --list", run["returncode"]), run["stderr"])
        return result
    missing = sorted(set(manifest.get("row_counts") or {}) - set(facts["table_data"]))
    if facts["format"] != "CUSTOM":
        result["error"] = "archive format is %r, expected CUSTOM" % facts["format"]
    elif missing:
        result["error"] = "tables of the manifest without TABLE DATA in the archive: %s" % ", ".join(missing)
    else:
        result["ok"] = True
    return result


def restore_argv(pg_restore, dbname, clean=False, single_transaction=False, jobs=1, no_owner=False, path=None):
    argv = [pg_restore, "--dbname=%s" % dbname, "--exit-on-error", "--no-password"]
    if clean:
        argv += ["--clean", "--if-exists"]
    if single_transaction:
        argv.append("--single-transaction")
    if jobs and jobs > 1:
        argv.append("--jobs=%d" % jobs)
    if no_owner:
        argv.append("--no-owner")
    if path:
        argv.append(path)
    return argv


def pg_env(params, dbname=None, appname="apex.ops-restore"):
    env = dict(os.environ)
    env.update(pg.libpq_environment(params, dbname=dbname))
    env["PGAPPNAME"] = appname
    return env


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
                    waiting = set()
                    for pid, query_start, query, blockers, names in rows:
                        key = (pid, query_start)
                        waiting.add(key)
                        first = seen.setdefault(key, now)
                        if now - first >= self.lock_timeout and key not in [c["key"] for c in self.cancelled]:
                            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
                            self.cancelled.append({"key": key, "pid": pid, "statement": query,
                                                   "blocking_pids": list(blockers or []),
                                                   "blocking_sessions": list(names or []),
                                                   "waited_seconds": round(now - first, 1)})
                    for key in list(seen):
                        if key not in waiting:
                            del seen[key]
        except Exception as exc:  # noqa: BLE001 - the overall deadline still applies
            self.error = str(exc)

    def stop(self):
        self.stopped.set()
        self.join(5)

    def report(self):
        return [dict((k, v) for k, v in c.items() if k != "key") for c in self.cancelled]


def terminate_backends(params, dbname, appname):
    """Terminate the server sessions of a killed client (a backend waiting on a lock would not notice)."""
    try:
        with contextlib.closing(admin_connect(params)) as conn:
            rows = conn.execute("""SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
                                    WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()""",
                                (dbname, appname)).fetchall()
        return [r[0] for r in rows]
    except Exception:  # noqa: BLE001 - best effort; the disconnect ends them eventually
        return []


def start_lock_watch(params, dbname, appname, lock_timeout):
    if not lock_timeout or lock_timeout <= 0:
        return None
    watch = LockWatch(params, dbname, appname, lock_timeout)
    watch.start()
    return watch


class Deadline(object):
    """An overall deadline for a child process: a timer kills it (and its process group)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.expired = False
        self.timer = None
        self.terminated = []
        self.end = time.monotonic() + seconds if seconds and seconds > 0 else None

    def remaining(self):
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    def check(self):
        if self.end is not None and time.monotonic() >= self.end:
            self.expired = True
        return self.expired

    def watch(self, proc, group=False, before_kill=None):
        """At the deadline: ``before_kill()`` (terminate the server sessions), then SIGKILL the process
        (group). SIGKILL, not SIGTERM: pg_restore's handler first tries to cancel on the server, and a
        module blocked writing into its full stdin pipe must get EPIPE now."""
        if self.end is None:
            return

        def fire():
            if proc.poll() is not None:
                return  # finished just in time
            self.expired = True
            if before_kill is not None:
                self.terminated = before_kill()
            try:
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except OSError:
                pass

        self.timer = threading.Timer(self.remaining(), fire)
        self.timer.daemon = True
        self.timer.start()

    def cancel(self):
        """Stop the timer; if it is already firing, wait until it is done, so ``terminated`` is
        complete before anyone reads it (the main thread sees ``expired`` while the timer is still
        terminating the server sessions)."""
        if self.timer is not None:
            self.timer.cancel()
            if self.timer.is_alive() and self.timer is not threading.current_thread():
                self.timer.join(30)


def verify_postgres(params, store, manifest, level="toc", pg_bin_dir=None, secrets=(), scratch_db=None):
    """Run the checks up to ``level`` in one streamed pass. Returns ``{check: result}``."""
    checks = {}
    wanted = catalog.levels_upto(level)
    sinks = []
    toc_sink = restore_sink = None
    scratch = None
    try:
        if "toc" in wanted:
            pg_restore = find_program("pg_restore", pg_bin_dir)
            toc_sink = Sink("toc", [pg_restore, "--list"], pg_env(params), capture_stdout=True)
            sinks.append(toc_sink)
        if "deep" in wanted:
            scratch = catalog.check_db_name(scratch_db or catalog.scratch_db_name(manifest["backup_id"]))
            drop_database(params, scratch, force=True)   # a leftover of a crashed run
            create_database(params, scratch)
            restore_sink = Sink("deep", restore_argv(pg_restore, scratch), pg_env(params, scratch, "apex.ops-verify"))
            sinks.append(restore_sink)
        started = time.monotonic()
        size, sha256 = stream_through(store, manifest, sinks)
        checks["checksum"] = checksum_result(manifest, size, sha256)
        checks["checksum"]["seconds"] = round(time.monotonic() - started, 3)
        if toc_sink is not None:
            checks["toc"] = toc_result(manifest, toc_sink.finish())
            if checks["toc"].get("error"):
                checks["toc"]["error"] = catalog.redact(checks["toc"]["error"], secrets)
        if restore_sink is not None:
            run = restore_sink.finish()
            deep = {"ok": False, "scratch_db": scratch, "seconds": round(time.monotonic() - started, 3)}
            if run["returncode"] != 0:
                deep["error"] = catalog.redact("%s: %s" % (exit_description("pg_restore", run["returncode"]),
                                                           run["stderr"]), secrets)
            else:
                expected = manifest.get("row_counts") or {}
                actual = count_in_database(params, scratch, sorted(expected))
                diffs = catalog.compare_counts(expected, actual)
                deep.update(tables=len(expected), rows=sum(v for v in actual.values() if v), differences=diffs)
                if diffs:
                    deep["error"] = "row counts differ from the manifest in %d table(s): %s" % (
                        len(diffs), ", ".join("%s %s != %s" % (d["table"], d["actual"], d["expected"]) for d in diffs[:5]))
                else:
                    deep["ok"] = True
            checks["deep"] = deep
        return checks
    finally:
        for sink in sinks:
            if sink.proc.poll() is None:
                sink.kill()
        if scratch:
            try:
                drop_database(params, scratch, force=True)
                if "deep" in checks:
                    checks["deep"]["scratch_dropped"] = True
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                if "deep" in checks:
                    checks["deep"]["scratch_dropped"] = False
                    checks["deep"]["drop_error"] = str(exc)


# ---------------------------------------------------------------------------- restore

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
    env = pg_env(params, target_db, appname=appname)
    started = time.monotonic()
    temp_path = None
    deadline = Deadline(timeout)
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
                                      catalog.redact(run["stderr"], secrets) or "(no output)"),
                                  lock_waits=waits, single_transaction=jobs <= 1, target_unchanged=atomic)
            raise BackupError("%s restoring into %s: %s" % (
                exit_description("pg_restore", run["returncode"]), target_db,
                catalog.redact(run["stderr"], secrets) or "(no output)"),
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


# ---------------------------------------------------------------------------- draining sessions

def _sessions(conn, db, users=None, applications=None):
    rows = conn.execute("""SELECT pid, usename, application_name, state, backend_start::text,
                                  EXTRACT(EPOCH FROM (now() - backend_start))::int
                             FROM pg_stat_activity
                            WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                              AND (%s::text[] IS NULL OR usename = ANY(%s::text[]))
                              AND (%s::text[] IS NULL OR application_name = ANY(%s::text[]))
                            ORDER BY pid""", (db, users, users, applications, applications)).fetchall()
    return [{"pid": r[0], "user": r[1], "application_name": r[2], "state": r[3], "backend_start": r[4],
             "age_seconds": r[5]} for r in rows]


def drain_sessions(params, db, users=None, applications=None, grace=30.0, timeout=120.0, terminate=True,
                   check_mode=False, poll=0.2, clock=time.monotonic, sleep=time.sleep):
    """Wait until no matching session is connected to ``db`` (observed in pg_stat_activity).

    After ``grace`` seconds the stragglers are terminated (``pg_terminate_backend``) when
    ``terminate``; at ``timeout`` the wait fails with the sessions last seen.
    """
    catalog.check_db_name(db)
    users = list(users) if users else None
    applications = list(applications) if applications else None
    start = clock()
    terminated = []
    with contextlib.closing(admin_connect(params)) as conn:
        initial = _sessions(conn, db, users, applications)
        if check_mode or not initial:
            return {"initial": initial, "terminated": [], "waited_seconds": 0.0, "remaining": initial if check_mode else []}
        sessions = initial
        while sessions:
            elapsed = clock() - start
            if terminate and elapsed >= grace:
                for session in sessions:
                    if session["pid"] not in [t["pid"] for t in terminated]:
                        conn.execute("SELECT pg_terminate_backend(%s)", (session["pid"],))
                        terminated.append(session)
            if elapsed > timeout:
                raise BackupError("%d session(s) still connected to %s after %.0fs%s" % (
                    len(sessions), db, timeout, " (terminated, not yet gone)" if terminated else ""),
                    last_state={"sessions": sessions, "terminated": terminated})
            sleep(poll)
            sessions = _sessions(conn, db, users, applications)
    return {"initial": initial, "terminated": terminated, "waited_seconds": round(clock() - start, 3),
            "remaining": []}
