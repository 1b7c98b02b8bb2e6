# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL backup: ``pg_dump -Fc`` streamed into S3, row counts from the same snapshot.

A REPEATABLE READ transaction exports a snapshot; per-table ``count(*)`` runs in it (in a
thread, while the dump runs); ``pg_dump -Fc --snapshot=<id>`` streams its stdout straight into an
S3 multipart upload. pg_dump's exit status decides: the upload is completed only after pg_dump
exited 0, otherwise aborted. The manifest is written last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import subprocess
import threading
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils.backup_stream import close_pipes, fail_stream, put_manifest_last
from ansible_collections.apex.ops.plugins.module_utils import pg_privileges
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import count_rows, list_tables, server_facts
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import MIB, BackupError, TailReader, exit_description
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import find_program, major_of, program_version, stderr_errors
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import widen_pipe
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow


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
    started = utcnow()
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
                    redact(stderr.text(), secrets) or "(nothing)"),
                    pg_dump_returncode=proc.returncode)
            errors = stderr_errors(stderr.text())
            if errors:
                raise BackupError("pg_dump exited 0 but reported %d error(s); upload aborted, no manifest written. "
                                  "pg_dump said: %s" % (len(errors), redact("; ".join(errors[:5]), secrets)),
                                  pg_dump_returncode=0, pg_dump_errors=len(errors))
            count_thread.join()
            if "error" in counter:
                raise BackupError("counting rows in the snapshot failed: %s" % counter["error"])

        upload = writer.upload_stream(proc.stdout, before_complete=before_complete)
        state["phase"] = "manifest"
        conn.execute("COMMIT")
        finished = utcnow()
        manifest = catalog.build_manifest(
            "postgres", db, backup_id, keys, upload, started, finished, tags=tags,
            database=db, format="custom", compression=compress, part_size=part_size, snapshot=snapshot,
            server_version=facts["server_version"], server_version_num=facts["server_version_num"],
            pg_dump_version=dump_version, row_counts=counter["counts"], tables=names, privileges=privileges,
            pg_dump_stderr=redact(stderr.text(), secrets) or None,
            duration_seconds=round(time.monotonic() - clock_start, 3),
        )
        return put_manifest_last(store, keys, manifest)
    except BaseException as exc:
        fail_stream(exc, proc, writer, state, "backup %s" % backup_id)
        raise
    finally:
        close_pipes(proc)
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
