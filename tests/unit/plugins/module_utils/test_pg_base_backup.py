"""Base backups (pure parts): the pg_basebackup command line, its WAL points, the catalog kind, the chunk reader."""
import datetime
import hashlib
import io
import tarfile

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as cat
from ansible_collections.apex.ops.plugins.module_utils import pg_base_backup as base
from ansible_collections.apex.ops.plugins.module_utils.stream_reader import ChunkReader

UTC = datetime.timezone.utc


def test_argv_is_a_list_with_the_tar_on_stdout_and_the_wal_inside():
    argv = base.basebackup_argv("/usr/bin/pg_basebackup", "apex.ops X", compress=None)
    assert argv[0] == "/usr/bin/pg_basebackup"
    assert "--pgdata=-" in argv and "--format=tar" in argv and "--wal-method=fetch" in argv
    assert "--label=apex.ops X" in argv and "--no-password" in argv
    assert not [a for a in argv if a.startswith("--compress")]
    assert "--compress=5" in base.basebackup_argv("pg_basebackup", "l", compress=5)


def test_wal_points_from_verbose_output():
    text = ("pg_basebackup: initiating base backup, waiting for checkpoint to complete\n"
            "pg_basebackup: write-ahead log start point: 0/4000028 on timeline 3\n"
            "pg_basebackup: write-ahead log end point: 0/4000100\n")
    assert base.parse_wal_points(text) == {"start_lsn": "0/4000028", "timeline": 3, "end_lsn": "0/4000100"}
    assert base.parse_wal_points("") == {"start_lsn": None, "timeline": None, "end_lsn": None}


def test_catalog_kind_postgres_base_keys_and_checksum_only():
    backup_id = cat.new_backup_id(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "deadbeef")
    keys = cat.backup_keys("p", "postgres_base", "apex", backup_id)
    assert keys["data"] == "p/postgres_base/apex/2026/01/02/20260102T030405Z-deadbeef.tar"
    assert cat.parse_key("p", keys["data"]) == ("postgres_base", "apex", backup_id, "data")
    assert cat.parse_key("p", keys["manifest"]) == ("postgres_base", "apex", backup_id, "manifest")
    assert cat.levels_upto("deep", "postgres_base") == ["checksum"]
    assert cat.is_verified({"kind": "postgres_base", "verification": "verified"}, "deep")


def _tar(names):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name in names:
            data = b"x" * 10
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class FakeStore(object):
    def __init__(self, blob):
        self.blob = blob

    def iter_object(self, key):
        for i in range(0, len(self.blob), 777):
            yield self.blob[i:i + 777]


def test_verify_base_backup_checks_sha_and_required_files():
    blob = _tar(["PG_VERSION", "backup_label", "global/pg_control", "base/1/1"])
    manifest = {"key": "k", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    assert base.verify_base_backup(FakeStore(blob), manifest)["checksum"]["ok"]
    bad = dict(manifest, sha256="0" * 64)
    assert "differ" in base.verify_base_backup(FakeStore(blob), bad)["checksum"]["error"]
    partial = _tar(["PG_VERSION", "base/1/1"])
    manifest = {"key": "k", "size": len(partial), "sha256": hashlib.sha256(partial).hexdigest()}
    check = base.verify_base_backup(FakeStore(partial), manifest)["checksum"]
    assert not check["ok"] and "backup_label" in check["error"]


def test_chunk_reader_sees_every_byte_once():
    seen = []
    reader = ChunkReader([b"ab", b"", b"cde", b"f"], on_chunk=seen.append)
    assert reader.read(4) == b"abcd"
    reader.drain()
    assert reader.size == 6 and b"".join(seen) == b"abcdef"
