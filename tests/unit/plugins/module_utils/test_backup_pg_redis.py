"""pg_programs, pg_verify, pg_admin and redis_backup logic that needs no services: TOC parsing, argv, the stream gate,
and the BGSAVE completion watcher (with a scripted fake Redis)."""
import hashlib

import pytest

from ansible_collections.apex.ops.plugins.module_utils import pg_admin, pg_programs, pg_verify
from ansible_collections.apex.ops.plugins.module_utils import redis_backup

TOC = """;
; Archive created at 2026-11-27 06:42:23 UTC
;     dbname: apex
;     TOC Entries: 26
;     Format: CUSTOM
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;
214; 1259 16385 TABLE public _sqlx_migrations postgres
3369; 0 16385 TABLE DATA public _sqlx_migrations postgres
3370; 0 16393 TABLE DATA public agents postgres
3374; 0 16418 TABLE DATA audit events apex
3383; 0 0 SEQUENCE SET public events_id_seq postgres
"""


def test_parse_toc():
    facts = pg_verify.parse_toc(TOC)
    assert facts["format"] == "CUSTOM" and facts["toc_entries"] == 26
    assert facts["table_data"] == ["public._sqlx_migrations", "public.agents", "audit.events"]
    assert facts["dumped_from"].startswith("15.18")


def test_toc_result_checks_manifest_tables():
    manifest = {"row_counts": {"public.agents": 1, "public.tasks": 2}}
    ok_run = {"returncode": 0, "stdout": TOC, "stderr": ""}
    result = pg_verify.toc_result(manifest, ok_run)
    assert not result["ok"] and "public.tasks" in result["error"]
    assert pg_verify.toc_result({"row_counts": {"public.agents": 1}}, ok_run)["ok"]
    bad = pg_verify.toc_result(manifest, {"returncode": 1, "stdout": "", "stderr": "pg_restore: error: bad magic"})
    assert not bad["ok"] and "status 1" in bad["error"] and "bad magic" in bad["error"]


def test_restore_argv_never_carries_credentials():
    argv = pg_programs.restore_argv("/bin/pg_restore", "apex", clean=True, single_transaction=True)
    assert argv == ["/bin/pg_restore", "--dbname=apex", "--exit-on-error", "--no-password", "--clean", "--if-exists",
                    "--single-transaction"]
    par = pg_programs.restore_argv("/bin/pg_restore", "t", jobs=4, no_owner=True, path="/tmp/x.dump")
    assert "--jobs=4" in par and "--no-owner" in par and par[-1] == "/tmp/x.dump"
    assert "--single-transaction" not in par


def test_exit_description():
    assert pg_programs.exit_description("pg_dump", -9) == "pg_dump was killed by signal SIGKILL"
    assert pg_programs.exit_description("pg_dump", 1) == "pg_dump exited with status 1"


def test_split_and_major():
    assert pg_admin.split_qualified("tasks") == ("public", "tasks")
    assert pg_admin.split_qualified("audit.log") == ("audit", "log")
    assert pg_programs.major_of("pg_dump (PostgreSQL) 15.18 (Debian)") == 15


class FakeStore(object):
    def __init__(self, chunks):
        self.chunks = chunks

    def iter_object(self, key):
        return iter(self.chunks)


class RecordingSink(object):
    def __init__(self):
        self.data = []

    def write(self, chunk):
        self.data.append(chunk)
        return True


def test_stream_gate_holds_the_last_chunk_back():
    chunks = [b"a" * 10, b"b" * 10, b"c" * 5]
    manifest = {"key": "k", "size": 25, "sha256": hashlib.sha256(b"".join(chunks)).hexdigest()}
    sink = RecordingSink()
    seen = {}

    def gate(size, sha):
        seen["fed_before_gate"] = list(sink.data)
        assert pg_verify.checksum_result(manifest, size, sha)["ok"]

    pg_verify.stream_through(FakeStore(chunks), manifest, [sink], hold_last=True, on_complete=gate)
    assert seen["fed_before_gate"] == chunks[:2]  # the end of the stream is withheld until the gate passes
    assert sink.data == chunks


def test_stream_gate_failure_withholds_end():
    chunks = [b"x" * 10, b"y" * 10]
    manifest = {"key": "k", "size": 20, "sha256": "0" * 64}
    sink = RecordingSink()

    def gate(size, sha):
        check = pg_verify.checksum_result(manifest, size, sha)
        if not check["ok"]:
            raise pg_programs.BackupError(check["error"])

    with pytest.raises(pg_programs.BackupError):
        pg_verify.stream_through(FakeStore(chunks), manifest, [sink], hold_last=True, on_complete=gate)
    assert sink.data == chunks[:1]


def test_checksum_result_names_the_difference():
    r = pg_verify.checksum_result({"size": 3, "sha256": "a" * 64}, 4, "b" * 64)
    assert not r["ok"] and "size 4 != manifest 3" in r["error"] and "sha256" in r["error"]


# ------------------------------------------------------------------ redis BGSAVE watcher

class FakeRedis(object):
    """Scripted INFO persistence answers; BGSAVE may be refused while one is running."""

    def __init__(self, infos, bgsave_errors=0, error="Background save already in progress"):
        self.infos = list(infos)
        self.bgsaves = 0
        self.bgsave_errors = bgsave_errors
        self.error = error
        self.commands = []

    def execute_command(self, *args):
        self.commands.append(args)
        return b"Background saving scheduled"

    def info(self, section):
        if len(self.infos) > 1:
            return self.infos.pop(0)
        return self.infos[0]

    def bgsave(self):
        from redis.exceptions import ResponseError

        if self.bgsave_errors:
            self.bgsave_errors -= 1
            raise ResponseError(self.error)
        self.bgsaves += 1
        return True


def info(in_progress=0, saves=5, status="ok", last=1000):
    return {"rdb_bgsave_in_progress": in_progress, "rdb_saves": saves, "rdb_last_bgsave_status": status,
            "rdb_last_save_time": last}


class Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_bgsave_waits_for_its_own_save_by_counter():
    clock = Clock()
    # same-second completion: rdb_last_save_time does not change, rdb_saves does
    fake = FakeRedis([info(), info(1, 5), info(1, 5), info(0, 6, last=1000)])
    result = redis_backup.bgsave_and_wait(fake, timeout=10, clock=clock, sleep=clock.sleep)
    assert fake.bgsaves == 1 and result["after"]["rdb_saves"] == 6 and not result["waited_for_running"]


def test_bgsave_waits_out_a_running_save_first():
    clock = Clock()
    fake = FakeRedis([info(1, 5), info(1, 5), info(0, 6), info(1, 6), info(0, 7)])
    result = redis_backup.bgsave_and_wait(fake, timeout=10, clock=clock, sleep=clock.sleep)
    assert result["waited_for_running"] and result["before"]["rdb_saves"] == 6 and result["after"]["rdb_saves"] == 7


def test_bgsave_race_already_in_progress_is_retried():
    clock = Clock()
    fake = FakeRedis([info(0, 5), info(1, 5), info(0, 6), info(0, 6), info(0, 7)], bgsave_errors=1)
    result = redis_backup.bgsave_and_wait(fake, timeout=10, clock=clock, sleep=clock.sleep)
    assert fake.bgsaves == 1 and result["after"]["rdb_saves"] == 7


def test_bgsave_during_aof_rewrite_is_scheduled():
    clock = Clock()
    refused = "Another child process is active (AOF?): can't BGSAVE right now. Use BGSAVE SCHEDULE"
    fake = FakeRedis([info(0, 5), info(0, 5), info(0, 5), info(1, 5), info(0, 6)], bgsave_errors=1, error=refused)
    result = redis_backup.bgsave_and_wait(fake, timeout=10, clock=clock, sleep=clock.sleep)
    assert fake.commands == [("BGSAVE", "SCHEDULE")] and result["after"]["rdb_saves"] == 6


def test_bgsave_failure_status_fails():
    clock = Clock()
    fake = FakeRedis([info(), info(0, 6, status="err")])
    with pytest.raises(redis_backup.RedisBackupError) as err:
        redis_backup.bgsave_and_wait(fake, timeout=10, clock=clock, sleep=clock.sleep)
    assert "rdb_last_bgsave_status" in str(err.value) and err.value.details["last_state"]["rdb_saves"] == 6


def test_bgsave_timeout_reports_last_state():
    clock = Clock()
    fake = FakeRedis([info(), info(1, 5)])
    with pytest.raises(redis_backup.RedisBackupError) as err:
        redis_backup.bgsave_and_wait(fake, timeout=2, poll=0.5, clock=clock, sleep=clock.sleep)
    assert "timed out" in str(err.value) and err.value.details["last_state"]["rdb_bgsave_in_progress"] == 1


def test_bgsave_fallback_without_counter():
    clock = Clock()
    old = {"rdb_bgsave_in_progress": 0, "rdb_last_bgsave_status": "ok", "rdb_last_save_time": 1000}
    new = dict(old, rdb_last_save_time=1001)
    fake = FakeRedis([old, old, new])
    result = redis_backup.bgsave_and_wait(fake, timeout=10, clock=clock, sleep=clock.sleep)
    assert result["after"]["rdb_last_save_time"] == 1001


def test_rdb_header():
    assert redis_backup.check_rdb_header(b"REDIS0010") == "0010"
    with pytest.raises(redis_backup.RedisBackupError):
        redis_backup.check_rdb_header(b"PGDMP\x01")


# ---------------------------------------------------------------------------- SYNC (network snapshot)

def _reader(data):
    import io
    return io.BufferedReader(io.BytesIO(data))


def test_sync_header_skips_keepalives():
    reader = _reader(b"\n\n\n$12\r\nREDIS0010abc+PING\r\n")
    assert redis_backup.read_sync_header(reader, deadline=float("inf")) == 12
    snap = redis_backup.SyncSnapshot(reader, 12)
    body = b""
    while True:
        chunk = snap.read(5)
        if not chunk:
            break
        body += chunk
    assert body == b"REDIS0010abc"  # exactly <length> bytes, never the replication stream after it
    assert snap.header == b"REDIS0010"


@pytest.mark.parametrize("reply, message", [
    (b"-ERR unknown command 'SYNC'\r\n", "refused SYNC"),
    (b"-NOPERM this user has no permissions\r\n", "rdb_source=file"),
    (b"$EOF:" + b"x" * 40 + b"\r\n", "diskless"),
    (b"+OK\r\n", "unexpected reply"),
    (b"\n\n", "closed the connection"),
])
def test_sync_header_failures(reply, message):
    with pytest.raises(redis_backup.RedisBackupError, match=message):
        redis_backup.read_sync_header(_reader(reply), deadline=float("inf"))


def test_sync_snapshot_short_stream_raises_instead_of_eof():
    snap = redis_backup.SyncSnapshot(_reader(b"REDIS0010ab"), 100)
    assert snap.read(11) == b"REDIS0010ab"
    with pytest.raises(redis_backup.RedisBackupError, match="after 11 of 100"):
        snap.read(10)


def test_sync_snapshot_checks_the_rdb_header():
    snap = redis_backup.SyncSnapshot(_reader(b"PGDMP-not-an-rdb"), 16)
    with pytest.raises(redis_backup.RedisBackupError, match="not an RDB"):
        snap.read(16)


# ---------------------------------------------------------------------------- pg_dump stderr

def test_stderr_errors_finds_error_lines_only():
    text = ("pg_dump: warning: there are circular foreign-key constraints on this table:\n"
            "pg_dump: detail: events\n"
            "pg_dump: error: query failed: ERROR:  permission denied for table secrets\n"
            "pg_dump: fatal: could not write to output file\n"
            "some other line with error: inside\n")
    assert pg_programs.stderr_errors(text) == [
        "pg_dump: error: query failed: ERROR:  permission denied for table secrets",
        "pg_dump: fatal: could not write to output file"]
    assert pg_programs.stderr_errors("pg_dump: warning: x\n") == []
    assert pg_programs.stderr_errors("") == [] and pg_programs.stderr_errors(None) == []
    assert pg_programs.stderr_errors("pg_restore: error: could not execute query") != []


def test_written_by_save_needs_the_file_redis_just_wrote(tmp_path):
    import os
    import time

    from ansible_collections.apex.ops.plugins.module_utils.redis_backup import written_by_save

    path = tmp_path / "dump.rdb"
    started = time.time()
    assert not written_by_save(str(path), started)  # missing
    path.write_bytes(b"REDIS0011")
    os.utime(str(path), (started + 3, started + 3))  # written by our save (seconds later: slow fsync)
    assert written_by_save(str(path), started)
    os.utime(str(path), (started - 600, started - 600))  # another Redis' old file at the same path
    assert not written_by_save(str(path), started)
