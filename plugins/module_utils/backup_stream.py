# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The end of a backup streamed from a PostgreSQL program (pg_dump, pg_basebackup) into S3, shared by
both: the manifest is written last (data without one is an orphan, never "complete"), and a failed or
interrupted stream stops the program, aborts the multipart upload and says what was left."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.pg_programs import BackupError, Interrupted, stop_process
from ansible_collections.apex.ops.plugins.module_utils.s3_store import S3StoreError


def put_manifest_last(store, keys, manifest):
    """Write the manifest after the data; when that fails, remove the data if we can, then raise."""
    try:
        store.put_json(keys["manifest"], manifest)
    except S3StoreError:
        try:
            store.delete([keys["data"]])
        except S3StoreError:
            pass
        raise
    return manifest


def fail_stream(exc, proc, writer, state, what):
    """Called from the ``except`` of a stream: stop ``proc``, abort ``writer``'s upload, record both in
    ``state`` and attach it to a BackupError; an Interrupted becomes a BackupError naming ``what``
    and the phase it stopped in. The caller re-raises anything else."""
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
        raise BackupError("%s interrupted (%s) during %s; upload aborted: %s, no manifest written"
                          % (what, exc, state["phase"], state["upload_aborted"]), last_state=state)


def close_pipes(proc):
    """Close a finished program's stdout and stderr (None: nothing was started)."""
    if proc is None:
        return
    for pipe in (proc.stdout, proc.stderr):
        try:
            pipe.close()
        except OSError:
            pass
