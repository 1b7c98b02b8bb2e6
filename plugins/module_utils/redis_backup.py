# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis backups: BGSAVE, wait for *that* save to finish, upload the RDB with a manifest.

Completion is observed in ``INFO persistence``, not with LASTSAVE (a 1-second clock that
cannot tell two saves in the same second apart): ``rdb_saves`` (Redis >= 7: a counter of
completed snapshots) must grow past its value before our BGSAVE, with
``rdb_bgsave_in_progress:0`` and ``rdb_last_bgsave_status:ok``. On older servers the fallback
is a changed ``rdb_last_save_time`` or an observed in-progress -> done transition. A BGSAVE
already running when we arrive is waited out first (it may predate the request), then ours
starts.

Two ways to get the snapshot (``source``):

* ``network`` (default when no local RDB file is configured/readable): the replication protocol,
  as ``redis-cli --rdb`` does. A raw connection sends ``SYNC``; Redis forks a snapshot for this
  "replica", sends newline keep-alives while it prepares it, then ``$<length>\r\n`` and exactly
  ``<length>`` bytes of RDB, which are streamed into the S3 multipart upload (sha256 on the way,
  nothing on local disk). Works wherever the Redis port is reachable (Redis in Kubernetes,
  Ansible on a control host). Managed services that disable ``SYNC`` need the file mode or their
  own snapshots.
* ``file``: BGSAVE, wait for *that* save (below), read ``CONFIG GET dir`` + ``dbfilename`` (or
  ``rdb_path``): the module must run where that file is readable.

Restore is an offline procedure (see docs/backup.md): stop Redis, put the file in place
(``state: fetch`` downloads and checks it), start Redis.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils.s3_store import MIB
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

RDB_MAGIC = b"REDIS"


class RedisBackupError(Exception):
    def __init__(self, msg, **details):
        super(RedisBackupError, self).__init__(msg)
        self.details = details


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def info_persistence(client):
    info = client.info("persistence")
    return dict((_text(k), _text(v)) for k, v in info.items())


def _summary(info):
    keys = ("rdb_bgsave_in_progress", "rdb_last_bgsave_status", "rdb_last_save_time", "rdb_saves",
            "rdb_changes_since_last_save", "aof_rewrite_in_progress")
    return dict((k, info.get(k)) for k in keys if k in info)


def bgsave_and_wait(client, timeout=300.0, poll=0.05, clock=time.monotonic, sleep=time.sleep):
    """Start a BGSAVE of our own and wait until it completed successfully.

    Returns ``{"before": ..., "after": ..., "waited_seconds": ..., "waited_for_running": bool}``;
    raises :class:`RedisBackupError` (with the last observed state) on failure or timeout.
    """
    from redis.exceptions import ResponseError

    start = clock()
    deadline = start + timeout
    waited_for_running = False
    info = info_persistence(client)
    while True:
        # 1. a save already in progress predates us: let it finish first
        while int(info.get("rdb_bgsave_in_progress", 0)):
            waited_for_running = True
            if clock() > deadline:
                raise RedisBackupError("timed out after %.0fs waiting for a running BGSAVE to finish" % timeout,
                                       last_state=_summary(info))
            sleep(poll)
            info = info_persistence(client)
        before = info
        try:
            client.bgsave()
            break
        except ResponseError as exc:
            message = str(exc).lower()
            if "already in progress" in message:
                info = info_persistence(client)  # raced with another save: wait it out, retry
                continue
            if "another child process" in message:
                # an AOF rewrite (or module fork) is running: let Redis start ours right after it
                client.execute_command("BGSAVE", "SCHEDULE")
                break
            raise RedisBackupError("BGSAVE refused: %s" % exc, last_state=_summary(info))

    saves_before = before.get("rdb_saves")
    seen_running = False
    while True:
        info = info_persistence(client)
        running = int(info.get("rdb_bgsave_in_progress", 0))
        seen_running = seen_running or bool(running)
        if not running:
            if saves_before is not None:
                done = int(info.get("rdb_saves", 0)) > int(saves_before)
            else:
                done = seen_running or info.get("rdb_last_save_time") != before.get("rdb_last_save_time")
            if done:
                break
        if clock() > deadline:
            raise RedisBackupError("timed out after %.0fs waiting for BGSAVE to finish" % timeout,
                                   last_state=_summary(info))
        sleep(poll)
    if info.get("rdb_last_bgsave_status") != "ok":
        raise RedisBackupError("BGSAVE failed: rdb_last_bgsave_status is %r (see the Redis log)"
                               % info.get("rdb_last_bgsave_status"), last_state=_summary(info))
    return {"before": _summary(before), "after": _summary(info), "waited_seconds": round(clock() - start, 3),
            "waited_for_running": waited_for_running}


def rdb_location(client, override=None):
    if override:
        return override
    try:
        directory = _text(list(client.config_get("dir").values())[0])
        filename = _text(list(client.config_get("dbfilename").values())[0])
    except Exception as exc:  # noqa: BLE001 - CONFIG may be renamed/disabled on managed Redis
        raise RedisBackupError("cannot read the RDB location with CONFIG GET (%s); set rdb_path" % exc)
    return os.path.join(directory, filename)


def check_rdb_header(header):
    if not header.startswith(RDB_MAGIC):
        raise RedisBackupError("not an RDB file (header %r, expected it to start with REDIS)" % header[:9])
    return _text(header[5:9])


SOURCES = ("auto", "network", "file")


def choose_source(client, source="auto", rdb_path=None):
    """``(source, path)``: ``file`` when asked, or (auto) when the RDB's directory is readable here;
    else ``network``. The file that BGSAVE writes may not exist yet (a fresh Redis), so auto looks
    at the directory; ``backup_redis`` then checks the file really is the one Redis just wrote."""
    if source == "network":
        return "network", None
    if source == "file":
        return "file", rdb_location(client, rdb_path)
    try:
        path = rdb_location(client, rdb_path)
    except RedisBackupError:
        return "network", None  # CONFIG disabled (managed Redis) and no rdb_path
    directory = os.path.dirname(path) or "."
    if os.path.isdir(directory) and os.access(directory, os.R_OK | os.X_OK):
        return "file", path
    return "network", None


def written_by_save(path, started_at, slack=1.0):
    """The local file at ``path`` is the RDB our BGSAVE (started at ``started_at``, epoch seconds)
    just wrote: it exists, is readable and was modified after that start (minus ``slack`` for
    clock granularity). Guards against a same-named directory on this host that belongs to
    another Redis. Compared with the start, not with ``rdb_last_save_time``: that whole second is
    recorded after the child's fsyncs, which take seconds on a busy disk."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return False
    return os.access(path, os.R_OK) and mtime >= started_at - slack


# ---------------------------------------------------------------------------- network (SYNC)

def _resp(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if not isinstance(part, bytes):
            part = str(part).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _line(reader):
    line = reader.readline(65536)
    if not line:
        raise RedisBackupError("Redis closed the connection")
    return line.rstrip(b"\r\n")


class SyncSnapshot(object):
    """A file-like ``read()`` over exactly ``length`` RDB bytes of a ``SYNC`` reply.

    A short stream (connection closed early) raises instead of returning EOF, so the upload is
    aborted rather than completed with a truncated snapshot.
    """

    def __init__(self, reader, length):
        self.reader = reader
        self.length = length
        self.remaining = length
        self.header = b""

    def read(self, size=-1):
        if self.remaining <= 0:
            return b""
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        try:
            chunk = self.reader.read1(min(size, 1024 * 1024)) if hasattr(self.reader, "read1") else self.reader.read(size)
        except (socket.timeout, OSError) as exc:
            raise RedisBackupError("reading the snapshot from Redis failed after %d of %d bytes: %s" % (
                self.length - self.remaining, self.length, exc))
        if not chunk:
            raise RedisBackupError("Redis closed the connection after %d of %d snapshot bytes" % (
                self.length - self.remaining, self.length))
        if len(self.header) < 9:
            self.header += chunk[:9 - len(self.header)]
            if len(self.header) >= 9 or self.remaining == len(chunk):
                check_rdb_header(self.header)
        self.remaining -= len(chunk)
        return chunk


def read_sync_header(reader, deadline, clock=time.monotonic):
    """Skip the newline keep-alives and return the payload length of ``$<length>``.

    Redis sends ``\n`` about once a second while it forks and writes the snapshot for a new
    replica; the payload header follows. ``-ERR ...`` (SYNC disabled or not permitted) fails.
    """
    while True:
        if clock() > deadline:
            raise RedisBackupError("timed out waiting for Redis to start sending the snapshot after SYNC")
        try:
            first = reader.read(1)
        except (socket.timeout, OSError) as exc:
            # Redis sends a keep-alive about every second while it prepares the snapshot
            raise RedisBackupError("no reply or keep-alive from Redis after SYNC (%s)" % exc)
        if not first:
            raise RedisBackupError("Redis closed the connection after SYNC (replication disabled for this user?)")
        if first in (b"\n", b"\r"):
            continue
        line = (first + _line(reader)).decode("utf-8", "replace")
        if line.startswith("-"):
            raise RedisBackupError("Redis refused SYNC: %s. Managed Redis services that disable SYNC need "
                                   "rdb_source=file (where the RDB file is readable) or their own snapshots" % line[1:])
        if line.startswith("$EOF:"):
            raise RedisBackupError("Redis answered SYNC with a diskless (EOF-marked) payload, which this module "
                                   "did not ask for")
        if not line.startswith("$"):
            raise RedisBackupError("unexpected reply to SYNC: %r" % line[:80])
        try:
            length = int(line[1:])
        except ValueError:
            raise RedisBackupError("unexpected reply to SYNC: %r" % line[:80])
        if length < 9:
            raise RedisBackupError("snapshot of %d bytes is too short to be an RDB file" % length)
        return length


def open_sync(params, timeout=300.0):
    """Connect (TLS, AUTH), send SYNC, read the header. Returns ``(sock, reader, length, seconds)``."""
    import ssl

    start = time.monotonic()
    host, port = params["redis_host"], params["redis_port"]
    sock_timeout = params.get("redis_timeout") or 10.0
    sock = socket.create_connection((host, port), timeout=sock_timeout)
    try:
        if params.get("redis_tls"):
            context = ssl.create_default_context(cafile=params.get("redis_ca_file") or None)
            sock = context.wrap_socket(sock, server_hostname=host)
        reader = sock.makefile("rb")
        if params.get("redis_password"):
            sock.sendall(_resp("AUTH", params["redis_password"]))
            reply = _line(reader)
            if not reply.startswith(b"+"):
                raise RedisBackupError("AUTH for SYNC failed: %s" % reply.decode("utf-8", "replace")[:200])
        sock.sendall(_resp("SYNC"))
        length = read_sync_header(reader, start + timeout)
        return sock, reader, length, round(time.monotonic() - start, 3)
    except BaseException:
        sock.close()
        raise


# ---------------------------------------------------------------------------- backup

def backup_redis(client, store, prefix, instance, timeout=300.0, part_size=16 * MIB, concurrency=2, tags=(),
                 rdb_path=None, source="auto", params=None):
    """Snapshot Redis into S3 and write the manifest last. ``source`` (see ``choose_source``):
    ``file``, ``network``, or ``auto`` (the file when it proves to be the RDB this Redis just
    wrote, else ``network``). The manifest's ``source`` says which was used."""
    catalog.check_segment("redis_instance", instance)
    started = utcnow()
    clock_start = time.monotonic()
    backup_id = catalog.new_backup_id(started)
    keys = catalog.backup_keys(prefix, "redis", instance, backup_id)
    store.check_bucket()
    server = dict((_text(k), _text(v)) for k, v in client.info("server").items())
    keys_count = client.dbsize()
    writer = store.writer(keys["data"], part_size=part_size, concurrency=concurrency,
                          metadata={"apex-backup-id": backup_id, "apex-kind": "redis"})
    save = None
    requested = source
    source, rdb_path = choose_source(client, requested, rdb_path)
    if requested == "auto" and source == "file":
        # keep the file only if it is the RDB this Redis just wrote, else use SYNC
        bgsave_started = time.time()
        save = bgsave_and_wait(client, timeout=timeout)
        source = "file" if written_by_save(rdb_path, bgsave_started) else "network"
    if source == "network":
        sock, reader, length, waited = open_sync(params, timeout=timeout)
        try:
            stream = SyncSnapshot(reader, length)
            upload = writer.upload_stream(stream)
        finally:
            sock.close()
        if upload["size"] != length:
            raise RedisBackupError("uploaded %d bytes, Redis announced %d" % (upload["size"], length))
        rdb_version = check_rdb_header(stream.header)
        extra = dict(source="network", rdb_path=None, sync_length=length, sync_waited_seconds=waited)
    else:
        save = save or bgsave_and_wait(client, timeout=timeout)
        path = rdb_path
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise RedisBackupError("cannot read the RDB file %s (%s): run the module where Redis' data directory "
                                   "is readable, set rdb_path, or use rdb_source=network" % (path, exc.strerror),
                                   last_state=save["after"])
        with handle:
            rdb_version = check_rdb_header(handle.read(9))
            handle.seek(0)
            upload = writer.upload_stream(handle)
        extra = dict(source="file", rdb_path=path, rdb_saves=save["after"].get("rdb_saves"),
                     rdb_last_save_time=save["after"].get("rdb_last_save_time"),
                     bgsave_waited_seconds=save["waited_seconds"])
    finished = utcnow()
    manifest = catalog.build_manifest(
        "redis", instance, backup_id, keys, upload, started, finished, tags=tags,
        format="rdb", rdb_version=rdb_version, redis_version=server.get("redis_version"),
        keys_at_start=keys_count, duration_seconds=round(time.monotonic() - clock_start, 3), **extra
    )
    try:
        store.put_json(keys["manifest"], manifest)
    except Exception:
        try:
            store.delete([keys["data"]])
        except Exception:  # noqa: BLE001
            pass
        raise
    return manifest


def verify_redis(store, manifest):
    """Checksum of the stored RDB and its header: the checks that make sense for a Redis snapshot."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    header = b""
    for chunk in store.iter_object(manifest["key"]):
        if len(header) < 9:
            header += chunk[:9 - len(header)]
        digest.update(chunk)
        size += len(chunk)
    ok = size == manifest.get("size") and digest.hexdigest() == manifest.get("sha256")
    result = {"ok": ok, "size": size, "sha256": digest.hexdigest(), "expected_size": manifest.get("size"),
              "expected_sha256": manifest.get("sha256"), "header": _text(header[:9])}
    if not ok:
        result["error"] = "size/sha256 differ from the manifest"
    elif not header.startswith(RDB_MAGIC):
        result.update(ok=False, error="object is not an RDB file (bad header)")
    return {"checksum": result}
