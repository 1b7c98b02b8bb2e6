# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL base backups: ``pg_basebackup`` (tar on stdout) streamed into S3, manifest last.

The starting point of a point-in-time recovery (``pitr.py``). pg_basebackup writes the whole
cluster as one tar on its stdout (``--pgdata=- --format=tar --wal-method=fetch``: the WAL needed
to make the copy consistent is inside the tar), which goes straight into an S3 multipart upload
like a dump. Its exit status decides before the upload completes; the manifest records the WAL
start/end of the backup (from ``--verbose``), the timeline and the system identifier.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import subprocess
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils.backup_stream import close_pipes, fail_stream, put_manifest_last
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import MIB, BackupError, TailReader
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import exit_description, find_program, major_of
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import program_version, stderr_errors
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import widen_pipe
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

KIND = "postgres_base"
_START_RE = re.compile(r"write-ahead log start point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) on timeline (\d+)")
_END_RE = re.compile(r"write-ahead log end point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")
# files every base backup of a cluster holds: a tar without them cannot start a server
REQUIRED_MEMBERS = ("PG_VERSION", "backup_label", "global/pg_control")


def basebackup_argv(pg_basebackup, label, compress=None):
    """The command line: the cluster as one tar on stdout, with the WAL that makes it consistent."""
    argv = [pg_basebackup, "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast",
            "--label=%s" % label, "--no-password", "--verbose"]
    if compress:
        argv.append("--compress=%d" % compress)
    return argv


def parse_wal_points(stderr_text):
    """``{"start_lsn", "timeline", "end_lsn"}`` from pg_basebackup's ``--verbose`` lines (None when absent)."""
    start = _START_RE.search(stderr_text or "")
    end = _END_RE.search(stderr_text or "")
    return {"start_lsn": start.group(1) if start else None,
            "timeline": int(start.group(2)) if start else None,
            "end_lsn": end.group(1) if end else None}


def _cluster_facts(cur):
    cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                "(SELECT system_identifier::text FROM pg_control_system()), pg_is_in_recovery(), "
                "current_setting('archive_mode'), current_setting('wal_segment_size')")
    row = cur.fetchone()
    return {"server_version": row[0], "server_version_num": row[1], "system_identifier": row[2],
            "in_recovery": row[3], "archive_mode": row[4], "wal_segment_size": row[5]}


def plan_base_backup(params, store, prefix, cluster, pg_bin_dir=None):
    """What a base backup would do (check mode): versions, archive mode, the key; touches nothing."""
    catalog.check_segment("cluster", cluster)
    program = find_program("pg_basebackup", pg_bin_dir)
    with contextlib.closing(pg.connect(params)) as conn:
        with conn.cursor() as cur:
            facts = _cluster_facts(cur)
    store.check_bucket()
    keys = catalog.backup_keys(prefix, KIND, cluster, catalog.new_backup_id())
    facts.update(cluster=cluster, pg_basebackup_version=program_version(program), key=keys["data"],
                 manifest_key=keys["manifest"])
    return facts


def base_backup(params, store, prefix, cluster, tags=(), part_size=16 * MIB, concurrency=2, compress=None,
                pg_bin_dir=None, secrets=()):
    """Stream a ``pg_basebackup`` tar of the cluster into S3 and write its manifest. Returns the manifest."""
    catalog.check_segment("cluster", cluster)
    program = find_program("pg_basebackup", pg_bin_dir)
    tool_version = program_version(program)
    started = utcnow()
    clock_start = time.monotonic()
    backup_id = catalog.new_backup_id(started)
    keys = catalog.backup_keys(prefix, KIND, cluster, backup_id)
    state = {"backup_id": backup_id, "key": keys["data"], "phase": "connect"}
    proc = None
    writer = None
    try:
        with contextlib.closing(pg.connect(params)) as conn:
            with conn.cursor() as cur:
                facts = _cluster_facts(cur)
        if (major_of(tool_version) or 0) < facts["server_version_num"] // 10000:
            raise BackupError("%s is older than the server (%s): it cannot copy it"
                              % (tool_version, facts["server_version"]))
        if facts["archive_mode"] == "off":
            # a base backup without an archive restores only to its own end, never to a later time
            state["warning"] = "archive_mode is off: this base backup cannot be rolled forward"
        state["phase"] = "upload-start"
        writer = store.writer(keys["data"], part_size=part_size, concurrency=concurrency,
                              metadata={"apex-backup-id": backup_id, "apex-kind": KIND})
        writer.start()  # S3 problems surface here, before pg_basebackup runs

        label = "apex.ops %s" % backup_id
        env = dict(os.environ)
        env.update(pg.libpq_environment(params))
        env["PGAPPNAME"] = "apex.ops-basebackup"
        state["phase"] = "basebackup"
        proc = subprocess.Popen(basebackup_argv(program, label, compress), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=MIB, close_fds=True)
        widen_pipe(proc.stdout)
        stderr = TailReader(proc.stderr)

        def before_complete():
            # pg_basebackup's exit status decides; the upload completes only after a clean exit
            proc.wait()
            said = redact(stderr.text(), secrets) or "(nothing)"
            if proc.returncode != 0:
                raise BackupError("%s; upload aborted, no manifest written. pg_basebackup said: %s" % (
                    exit_description("pg_basebackup", proc.returncode), said), pg_dump_returncode=proc.returncode)
            errors = stderr_errors(stderr.text())
            if errors:
                raise BackupError("pg_basebackup exited 0 but reported %d error(s); upload aborted, no manifest "
                                  "written. pg_basebackup said: %s" % (len(errors), said), pg_dump_errors=len(errors))

        upload = writer.upload_stream(proc.stdout, before_complete=before_complete)
        points = parse_wal_points(stderr.text())
        if not points["start_lsn"] or not points["end_lsn"]:
            raise BackupError("pg_basebackup did not report its WAL start/end point; no manifest written")
        state["phase"] = "manifest"
        finished = utcnow()
        manifest = catalog.build_manifest(
            KIND, cluster, backup_id, keys, upload, started, finished, tags=tags,
            format="tar", compression=compress or None, wal_method="fetch", label=label,
            start_lsn=points["start_lsn"], end_lsn=points["end_lsn"], timeline=points["timeline"],
            system_identifier=facts["system_identifier"], server_version=facts["server_version"],
            server_version_num=facts["server_version_num"], pg_basebackup_version=tool_version,
            from_standby=facts["in_recovery"], archive_mode=facts["archive_mode"],
            warning=state.get("warning"), duration_seconds=round(time.monotonic() - clock_start, 3),
        )
        return put_manifest_last(store, keys, manifest)
    except BaseException as exc:
        fail_stream(exc, proc, writer, state, "base backup %s" % backup_id)
        raise
    finally:
        close_pipes(proc)


def verify_base_backup(store, manifest):
    """The checksum level for a base backup: size and sha256 of the object, and the files a cluster needs."""
    import hashlib
    import tarfile

    from ansible_collections.apex.ops.plugins.module_utils.stream_reader import ChunkReader

    digest = hashlib.sha256()
    reader = ChunkReader(store.iter_object(manifest["key"]), on_chunk=digest.update)
    names = set()
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as archive:
            for member in archive:
                names.add(member.name)
        reader.drain()
    except (tarfile.TarError, EOFError) as exc:
        return {"checksum": {"ok": False, "error": "not a readable tar: %s" % exc, "size": reader.size}}
    result = {"ok": True, "size": reader.size, "sha256": digest.hexdigest(), "expected_size": manifest.get("size"),
              "expected_sha256": manifest.get("sha256"), "members": len(names)}
    missing = [name for name in REQUIRED_MEMBERS if name not in names]
    if reader.size != manifest.get("size") or digest.hexdigest() != manifest.get("sha256"):
        result.update(ok=False, error="size/sha256 differ from the manifest")
    elif missing:
        result.update(ok=False, error="the tar lacks %s" % ", ".join(missing))
    return {"checksum": result}
